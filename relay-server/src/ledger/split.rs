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
    /// The host site's share (zero without a site), carved out of the platform's fee.
    pub site: MicroCredits,
    /// The platform's fee less the site's share, plus every rounding remainder.
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
    /// The platform's fee exceeds the whole price.
    #[error("platform fee {fee_ppm} ppm exceeds 1 000 000 ppm")]
    Fee {
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
/// `platform_fee_ppm`, the volunteers share the rest equally, and the site (if any) is
/// paid `site_share_ppm` out of the platform's fee, never out of the volunteers' pool: a
/// site share above the fee is capped at the fee. Naming a site therefore never lowers
/// what the volunteers get, so a volunteer gains nothing from its co-workers by naming a
/// wallet of its own as the site. Each share is rounded down and every remainder goes to
/// the platform, so the parts sum to the price exactly.
///
/// A unit of a priced job costs at least one micro-credit, however small: rounded down
/// it would be free and its volunteers paid nothing for work they did. The fee rounds
/// down, so while it is less than the whole price, that micro-credit goes to the
/// volunteers. Escrow prices a job's units with this function too, so the floor is set
/// aside when the job is submitted; the price does not depend on the site.
pub fn split_unit_price(
    flops: u64,
    price_per_gflop: MicroCredits,
    site_share_ppm: u32,
    platform_fee_ppm: u32,
    volunteers: usize,
    has_site: bool,
) -> Result<Split, SplitError> {
    if platform_fee_ppm > PPM {
        return Err(SplitError::Fee {
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
    // Out of the fee: at most the fee's ppm, and at most the fee itself after rounding.
    let site = if has_site {
        part(site_share_ppm.min(platform_fee_ppm)).min(fee)
    } else {
        0
    };
    // fee ≤ price because its ppm is at most 10⁶ and it rounds down.
    let pool = price - fee;
    let each = pool / count;
    let remainder = pool % count;
    Ok(Split {
        price: MicroCredits(price),
        volunteers: vec![MicroCredits(each); volunteers],
        site: MicroCredits(site),
        platform: MicroCredits(fee - site + remainder),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_typical_unit_splits_with_remainders_to_the_platform() -> Result<(), SplitError> {
        // 10 GFLOP at 1 credit/GFLOP = 10 credits; 3 % site out of a 5 % fee, 3 volunteers.
        let split = split_unit_price(
            10_000_000_000,
            MicroCredits(1_000_000),
            30_000,
            50_000,
            3,
            true,
        )?;
        assert_eq!(split.price, MicroCredits(10_000_000));
        assert_eq!(split.site, MicroCredits(300_000));
        assert_eq!(split.volunteers, vec![MicroCredits(3_166_666); 3]);
        assert_eq!(split.platform, MicroCredits(200_000 + 2));
        assert_eq!(split.total()?, split.price);

        let no_site = split_unit_price(3, MicroCredits(1_000_000_000), 100_000, 0, 1, false)?;
        assert_eq!(no_site.site, MicroCredits::ZERO);
        assert_eq!(no_site.volunteers, vec![MicroCredits(3)]);
        Ok(())
    }

    #[test]
    fn naming_a_site_never_lowers_the_volunteers_shares() -> Result<(), SplitError> {
        // The attack this rule stops: a volunteer names a second wallet of its own as the
        // site, and the site's share used to come out of every co-worker's pay.
        for (site_ppm, fee_ppm) in [(100_000, 50_000), (30_000, 50_000), (0, 0), (500_000, 0)] {
            let with = split_unit_price(
                10_000_000_000,
                MicroCredits(1_000_000),
                site_ppm,
                fee_ppm,
                2,
                true,
            )?;
            let without = split_unit_price(
                10_000_000_000,
                MicroCredits(1_000_000),
                site_ppm,
                fee_ppm,
                2,
                false,
            )?;
            assert_eq!(with.price, without.price, "escrow prices a unit the same");
            assert_eq!(
                with.volunteers, without.volunteers,
                "{site_ppm} of {fee_ppm}"
            );
            assert_eq!(with.site.0 + with.platform.0, without.platform.0);
        }
        Ok(())
    }

    #[test]
    fn a_site_share_above_the_fee_is_capped_at_the_fee() -> Result<(), SplitError> {
        // 10 % asked, 5 % fee: the site gets the whole fee, the platform only remainders.
        let split = split_unit_price(
            10_000_000_000,
            MicroCredits(1_000_000),
            100_000,
            50_000,
            3,
            true,
        )?;
        assert_eq!(split.site, MicroCredits(500_000));
        assert_eq!(split.volunteers, vec![MicroCredits(3_166_666); 3]);
        assert_eq!(split.platform, MicroCredits(2));
        // No fee, no site share.
        let free = split_unit_price(1_000, MicroCredits(1_000_000), 100_000, 0, 1, true)?;
        assert_eq!(free.site, MicroCredits::ZERO);
        assert_eq!(free.total()?, free.price);
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
            split_unit_price(1, MicroCredits(1), 0, PPM + 1, 1, true),
            Err(SplitError::Fee { .. })
        ));
        // A site share and a fee that once added up to more than the price are fine: the
        // site's share comes out of the fee.
        assert!(split_unit_price(1, MicroCredits(1), 600_000, 500_000, 1, true).is_ok());
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
                    // The site never takes more than the fee, nor more than it asked.
                    let fee = u128::from(split.price.0) * u128::from(fee_ppm) / u128::from(PPM);
                    prop_assert!(u128::from(split.site.0) <= fee);
                    prop_assert!(
                        u128::from(split.site.0)
                            <= u128::from(split.price.0) * u128::from(site_ppm) / u128::from(PPM)
                    );
                    // The volunteers' shares do not depend on the site.
                    let other = split_unit_price(flops, MicroCredits(price_per_gflop), site_ppm, fee_ppm, volunteers, !has_site);
                    prop_assert_eq!(other.map(|o| o.volunteers), Ok(split.volunteers.clone()));
                    // A priced unit pays a lone volunteer something unless the fee takes
                    // the whole price.
                    if price_per_gflop > 0 && volunteers == 1 && fee_ppm < PPM {
                        prop_assert!(split.volunteers[0].0 >= 1, "{:?}", split);
                    }
                }
                Err(SplitError::Money(MoneyError::Overflow)) => {
                    prop_assert!(u128::from(flops) * u128::from(price_per_gflop) / FLOPS_PER_GFLOP > u128::from(u64::MAX));
                }
                Err(other) => prop_assert!(false, "unexpected {other:?}"),
            }
        }
    }
}
