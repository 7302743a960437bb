//! Splitting one unit's price between its volunteers, the host site and the platform, in
//! integer parts per million so the parts always add up to the price exactly.

use super::{MicroCredits, MoneyError};

/// Parts per million in a whole.
pub const PPM: u32 = 1_000_000;

/// FLOPs in one GFLOP, the unit prices are quoted in.
const FLOPS_PER_GFLOP: u128 = 1_000_000_000;

/// One unit's price and who gets which part of it. The parts sum to `price` exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// What the unit costs: `flops × price_per_gflop / 10⁹`, rounded down, and at least
    /// one micro-credit when the price per GFLOP is not zero.
    pub price: MicroCredits,
    /// One equal share per volunteer whose result counted, in the order given.
    pub volunteers: Vec<MicroCredits>,
    /// The host site's share (zero without a site).
    pub site: MicroCredits,
    /// The platform's fee plus every rounding remainder.
    pub platform: MicroCredits,
}

impl Split {
    /// The sum of every part (equal to `price`).
    pub fn total(&self) -> Result<MicroCredits, MoneyError> {
        self.volunteers
            .iter()
            .try_fold(self.site.checked_add(self.platform)?, |sum, v| {
                sum.checked_add(*v)
            })
    }
}

/// Why a price could not be split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    /// The site's share and the platform's fee together exceed the whole price.
    #[error("site share {site_ppm} ppm plus platform fee {fee_ppm} ppm exceed 1 000 000 ppm")]
    Shares {
        /// The site's share.
        site_ppm: u32,
        /// The platform's fee.
        fee_ppm: u32,
    },
    /// Nobody did the work.
    #[error("a unit's price is split between at least one volunteer")]
    NoVolunteers,
    /// The price does not fit in 64 bits of micro-credits.
    #[error(transparent)]
    Money(#[from] MoneyError),
}

/// Splits the price of a unit of `flops` at `price_per_gflop`: the platform takes
/// `platform_fee_ppm`, the site (if any) `site_share_ppm`, and the volunteers share the
/// rest equally. Each share is rounded down and every remainder goes to the platform, so
/// the parts sum to the price exactly.
///
/// A unit of a priced job costs at least one micro-credit, however small: rounded down
/// it would be free and its volunteers paid nothing for work they did. The fee and the
/// site's share round down, so while they are less than the whole price together, that
/// micro-credit goes to the volunteers. Escrow prices a job's units with this function
/// too, so the floor is set aside when the job is submitted.
pub fn split_unit_price(
    flops: u64,
    price_per_gflop: MicroCredits,
    site_share_ppm: u32,
    platform_fee_ppm: u32,
    volunteers: usize,
    has_site: bool,
) -> Result<Split, SplitError> {
    let site_ppm = if has_site { site_share_ppm } else { 0 };
    if u64::from(site_ppm) + u64::from(platform_fee_ppm) > u64::from(PPM) {
        return Err(SplitError::Shares {
            site_ppm,
            fee_ppm: platform_fee_ppm,
        });
    }
    let count = u64::try_from(volunteers)
        .ok()
        .filter(|&n| n > 0)
        .ok_or(SplitError::NoVolunteers)?;
    // u64 × u64 always fits in u128; only the final price can be too large.
    let price = u128::from(flops) * u128::from(price_per_gflop.0) / FLOPS_PER_GFLOP;
    let floor = u128::from(!price_per_gflop.is_zero());
    let price = u64::try_from(price.max(floor)).map_err(|_| MoneyError::Overflow)?;
    let part = |ppm: u32| -> u64 {
        // ppm ≤ 10⁶, so the product fits in u128 and the quotient is ≤ price.
        let share = u128::from(price) * u128::from(ppm) / u128::from(PPM);
        u64::try_from(share).unwrap_or(price)
    };
    let fee = part(platform_fee_ppm);
    let site = part(site_ppm);
    // fee + site ≤ price because their ppm sum to at most 10⁶ and each rounds down.
    let pool = price - fee - site;
    let each = pool / count;
    let remainder = pool % count;
    Ok(Split {
        price: MicroCredits(price),
        volunteers: vec![MicroCredits(each); volunteers],
        site: MicroCredits(site),
        platform: MicroCredits(fee + remainder),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_typical_unit_splits_with_remainders_to_the_platform() -> Result<(), SplitError> {
        // 10 GFLOP at 1 credit/GFLOP = 10 credits; 10 % site, 5 % fee, 3 volunteers.
        let split = split_unit_price(
            10_000_000_000,
            MicroCredits(1_000_000),
            100_000,
            50_000,
            3,
            true,
        )?;
        assert_eq!(split.price, MicroCredits(10_000_000));
        assert_eq!(split.site, MicroCredits(1_000_000));
        assert_eq!(split.volunteers, vec![MicroCredits(2_833_333); 3]);
        assert_eq!(split.platform, MicroCredits(500_000 + 1));
        assert_eq!(split.total()?, split.price);

        let no_site = split_unit_price(3, MicroCredits(1_000_000_000), 100_000, 0, 1, false)?;
        assert_eq!(no_site.site, MicroCredits::ZERO);
        assert_eq!(no_site.volunteers, vec![MicroCredits(3)]);
        Ok(())
    }

    #[test]
    fn a_tiny_priced_unit_still_pays_its_volunteer() -> Result<(), SplitError> {
        // 1 000 FLOP at 1 micro-credit per GFLOP is 10⁻⁶ of a micro-credit: rounded down it
        // would be free, and whoever computed it paid nothing.
        for (site_ppm, fee_ppm, has_site) in [(0, 0, false), (100_000, 50_000, true)] {
            let split = split_unit_price(1_000, MicroCredits(1), site_ppm, fee_ppm, 1, has_site)?;
            assert_eq!(split.price, MicroCredits(1));
            assert_eq!(split.volunteers, vec![MicroCredits(1)]);
            assert_eq!(split.total()?, split.price);
        }
        // Zero FLOP on a priced job is still work done.
        let empty = split_unit_price(0, MicroCredits(1), 0, 0, 1, false)?;
        assert_eq!(empty.price, MicroCredits(1));
        // A free job stays free.
        let free = split_unit_price(1_000_000_000_000, MicroCredits(0), 0, 0, 1, false)?;
        assert_eq!(free.price, MicroCredits::ZERO);
        Ok(())
    }

    #[test]
    fn impossible_splits_are_refused() {
        assert!(matches!(
            split_unit_price(1, MicroCredits(1), 600_000, 500_000, 1, true),
            Err(SplitError::Shares { .. })
        ));
        // Without a site its share does not count.
        assert!(split_unit_price(1, MicroCredits(1), 600_000, 500_000, 1, false).is_ok());
        assert_eq!(
            split_unit_price(1, MicroCredits(1), 0, 0, 0, false),
            Err(SplitError::NoVolunteers)
        );
        assert_eq!(
            split_unit_price(u64::MAX, MicroCredits(u64::MAX), 0, 0, 1, false),
            Err(SplitError::Money(MoneyError::Overflow))
        );
    }

    proptest! {
        #[test]
        fn parts_always_sum_to_the_price(
            flops in any::<u64>(),
            price_per_gflop in any::<u64>(),
            site_ppm in 0..=PPM,
            fee_ppm in 0..=PPM,
            volunteers in 1usize..16,
            has_site in any::<bool>(),
        ) {
            match split_unit_price(flops, MicroCredits(price_per_gflop), site_ppm, fee_ppm, volunteers, has_site) {
                Ok(split) => {
                    prop_assert_eq!(split.total(), Ok(split.price));
                    prop_assert_eq!(split.volunteers.len(), volunteers);
                    prop_assert!(has_site || split.site.is_zero());
                    let exact = u128::from(flops) * u128::from(price_per_gflop) / FLOPS_PER_GFLOP;
                    let floor = u128::from(price_per_gflop > 0);
                    prop_assert_eq!(u128::from(split.price.0), exact.max(floor));
                    // A priced unit pays a lone volunteer something unless the fee and the
                    // site take the whole price between them.
                    let site = if has_site { site_ppm } else { 0 };
                    if price_per_gflop > 0
                        && volunteers == 1
                        && u64::from(fee_ppm) + u64::from(site) < u64::from(PPM)
                    {
                        prop_assert!(split.volunteers[0].0 >= 1, "{:?}", split);
                    }
                }
                Err(SplitError::Shares { .. }) => {
                    let site = if has_site { site_ppm } else { 0 };
                    prop_assert!(u64::from(fee_ppm) + u64::from(site) > u64::from(PPM));
                }
                Err(SplitError::Money(MoneyError::Overflow)) => {
                    prop_assert!(u128::from(flops) * u128::from(price_per_gflop) / FLOPS_PER_GFLOP > u128::from(u64::MAX));
                }
                Err(other) => prop_assert!(false, "unexpected {other:?}"),
            }
        }
    }
}
