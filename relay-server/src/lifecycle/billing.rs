//! Paying for a job: its price set aside in escrow at submission ([`job_budget`]), each
//! settled unit's price shared out of that escrow as accruals ([`unit_payment`],
//! [`decide_accrual`]), and what is left handed back at the end ([`refund_due`]).
//!
//! Every function here decides from numbers already read; storage writes what they say
//! as ledger entries and accrual rows. A job's escrow always covers its units: the budget
//! is the sum of the units' prices, a unit's price does not depend on who shares it, and
//! an accrual that the escrow, less what it already owes, cannot cover is refused.

use super::Inconsistent;
use crate::ledger::{
    split_unit_price, Account, AccountId, MicroCredits, MoneyError, Reason, Split, SplitError,
};
use starling_protocol::WalletAddress;

/// What a unit of work costs and how its price is shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pricing {
    /// Price of one GFLOP of verified work.
    pub price_per_gflop: MicroCredits,
    /// The embedding site's share of a unit's price, parts per million.
    pub site_share_ppm: u32,
    /// The platform's fee, parts per million.
    pub platform_fee_ppm: u32,
}

/// A job's bill: who pays and at what price per GFLOP (fixed when it was submitted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobBill {
    /// The submitter's account, debited at submission.
    pub submitter: AccountId,
    /// The price per GFLOP the job was submitted at.
    pub price_per_gflop: MicroCredits,
}

/// A job's bill from its stored submitter and price per GFLOP: `None` for a job nobody
/// pays for (no submitter, or free).
pub fn bill_of(submitter: Option<&str>, price: i64) -> Result<Option<JobBill>, Inconsistent> {
    Ok(match submitter {
        Some(s) if price > 0 => Some(JobBill {
            submitter: s
                .parse()
                .map_err(|_| Inconsistent(format!("submitter {s:?}")))?,
            price_per_gflop: MicroCredits(u64::try_from(price).unwrap_or(0)),
        }),
        _ => None,
    })
}

/// Why a job's price cannot be set aside.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// A unit's price cannot be computed.
    #[error("unit price: {0}")]
    UnitPrice(SplitError),
    /// The units' prices add up to more than 64 bits of micro-credits.
    #[error(transparent)]
    Total(MoneyError),
}

/// What a job of units of `unit_flops` costs at `price_per_gflop`: the sum of its units'
/// prices, which is exactly what they will pay out (a unit's price does not depend on how
/// it is shared).
pub fn job_budget(
    unit_flops: impl IntoIterator<Item = u64>,
    price_per_gflop: MicroCredits,
) -> Result<MicroCredits, BudgetError> {
    let mut budget = MicroCredits::ZERO;
    for flops in unit_flops {
        let unit = split_unit_price(flops, price_per_gflop, 0, 0, 1, false)
            .map_err(BudgetError::UnitPrice)?;
        budget = budget.checked_add(unit.price).map_err(BudgetError::Total)?;
    }
    Ok(budget)
}

/// How a settled unit's price is shared: who is paid and how much each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitPayment {
    /// The price and its parts.
    pub split: Split,
    /// The wallets whose results agreed, one equal share each (in `split.volunteers`).
    pub wallets: Vec<WalletAddress>,
    /// The site the canonical result's volunteer came through.
    pub site: Option<WalletAddress>,
}

impl UnitPayment {
    /// What each agreeing wallet earns (the shares are equal).
    pub fn share_micro(&self) -> i64 {
        self.split
            .volunteers
            .first()
            .map_or(0, |m| i64::try_from(m.0).unwrap_or(i64::MAX))
    }
}

/// The price of a settled unit of `flops` under `bill`, split between the `wallets` whose
/// results agreed (equal shares), the `site` the canonical result's volunteer came
/// through, and the platform; `None` where the relay bills nothing (`pricing` is `None`),
/// the job is not billed or the unit is free. `answering` is the wallet whose result is
/// being recorded, already parsed: parsing an address checks its key, which costs as much
/// as the rest of a payment.
pub fn unit_payment(
    pricing: Option<&Pricing>,
    bill: Option<JobBill>,
    flops: i64,
    wallets: &[&str],
    site: Option<&str>,
    answering: (&str, WalletAddress),
) -> Result<Option<UnitPayment>, Inconsistent> {
    let (Some(pricing), Some(bill)) = (pricing, bill) else {
        return Ok(None);
    };
    let parse = |s: &str| {
        if s == answering.0 {
            return Ok(answering.1);
        }
        s.parse::<WalletAddress>()
            .map_err(|_| Inconsistent(format!("wallet {s:?}")))
    };
    let site = site.map(parse).transpose()?;
    let wallets: Vec<WalletAddress> = wallets.iter().map(|w| parse(w)).collect::<Result<_, _>>()?;
    let split = split_unit_price(
        u64::try_from(flops).unwrap_or(0),
        bill.price_per_gflop,
        pricing.site_share_ppm,
        pricing.platform_fee_ppm,
        wallets.len(),
        site.is_some(),
    )
    .map_err(|e| Inconsistent(format!("unit price: {e}")))?;
    if split.price.is_zero() {
        return Ok(None);
    }
    Ok(Some(UnitPayment {
        split,
        wallets,
        site,
    }))
}

/// What a job's escrow holds and what the job already owes its payees (accrued, not yet
/// paid out), in micro-credits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EscrowStanding {
    /// The escrow account's balance.
    pub held: i64,
    /// Accrued for the job and not yet paid out of the escrow.
    pub owed: i64,
}

/// One payee's part of a settled unit's price, owed until the job's payout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccrualPart {
    /// Who is owed.
    pub account: Account,
    /// Why ([`Reason::Pay`], [`Reason::SiteShare`] or [`Reason::PlatformFee`]).
    pub reason: Reason,
    /// How much (never zero).
    pub amount: MicroCredits,
}

/// What a settled unit's price adds to its job's accruals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitAccrual {
    /// The unit's price, added to what the job's escrow owes.
    pub price: MicroCredits,
    /// Its non-zero parts, volunteers first, then the site, then the platform.
    pub parts: Vec<AccrualPart>,
}

/// Why a unit's price cannot accrue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccrualRefused {
    /// The split does not fit the wallets and site given to pay it.
    #[error("the split does not match who is paid: {0}")]
    SplitMismatch(String),
    /// The job's escrow, less what it already owes, holds less than the price.
    #[error("the escrow holds {free} credits not yet owed, less than the {price} asked")]
    Overdraft {
        /// What the escrow holds beyond what it owes.
        free: MicroCredits,
        /// The unit's price.
        price: MicroCredits,
    },
    /// An amount does not fit a stored integer (i64).
    #[error("{0} credits is more than one entry can hold")]
    TooLarge(MicroCredits),
}

/// Whether `split` can accrue against a job's escrow `standing`, paid to `wallets` (one
/// share each, in order), the `site` and the platform, and if so the parts it adds; `None`
/// for a free unit, which adds nothing.
pub fn decide_accrual(
    split: &Split,
    wallets: &[WalletAddress],
    site: Option<&WalletAddress>,
    standing: EscrowStanding,
) -> Result<Option<UnitAccrual>, AccrualRefused> {
    if split.volunteers.len() != wallets.len() {
        return Err(AccrualRefused::SplitMismatch(format!(
            "{} volunteer shares for {} wallets",
            split.volunteers.len(),
            wallets.len()
        )));
    }
    let site_part = match site {
        Some(site) => Some((Account::Wallet(*site), split.site, Reason::SiteShare)),
        None if split.site.is_zero() => None,
        None => {
            return Err(AccrualRefused::SplitMismatch(format!(
                "a site share of {} but no site",
                split.site
            )))
        }
    };
    if split.price.is_zero() {
        return Ok(None);
    }
    let price = i64::try_from(split.price.0).map_err(|_| AccrualRefused::TooLarge(split.price))?;
    if standing.owed.saturating_add(price) > standing.held {
        return Err(AccrualRefused::Overdraft {
            free: MicroCredits(
                u64::try_from(standing.held.saturating_sub(standing.owed)).unwrap_or(0),
            ),
            price: split.price,
        });
    }
    let parts = wallets
        .iter()
        .zip(&split.volunteers)
        .map(|(wallet, share)| (Account::Wallet(*wallet), *share, Reason::Pay))
        .chain(site_part)
        .chain([(Account::Platform, split.platform, Reason::PlatformFee)])
        .filter(|(_, amount, _)| !amount.is_zero())
        .map(|(account, amount, reason)| {
            i64::try_from(amount.0)
                .map(|_| AccrualPart {
                    account,
                    reason,
                    amount,
                })
                .map_err(|_| AccrualRefused::TooLarge(amount))
        })
        .collect::<Result<_, _>>()?;
    Ok(Some(UnitAccrual {
        price: split.price,
        parts,
    }))
}

/// What goes back to the submitter when a job's escrow closes: what it `held`, less what
/// its settled units are `owed` (that stays for their payout); `None` when nothing is left.
pub fn refund_due(held: i64, owed: i64) -> Result<Option<MicroCredits>, MoneyError> {
    let left = held.saturating_sub(owed);
    if left <= 0 {
        return Ok(None);
    }
    Ok(Some(MicroCredits(
        u64::try_from(left).map_err(|_| MoneyError::Overflow)?,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use starling_protocol::WalletKey;

    fn wallet(seed: u8) -> WalletAddress {
        WalletKey::from_seed([seed; 32]).address()
    }

    /// One settled unit: its FLOPs, how many wallets agreed, whether a site is paid.
    fn unit() -> impl Strategy<Value = (u64, usize, bool)> {
        (0u64..50_000_000_000, 1usize..=5, any::<bool>())
    }

    proptest! {
        /// Escrow in = payouts + fees + site shares + refund, whichever units settle and
        /// however they are shared; and no settled unit is ever refused for want of
        /// escrow.
        #[test]
        fn a_jobs_escrow_is_paid_out_or_refunded_to_the_micro_credit(
            units in proptest::collection::vec((unit(), any::<bool>()), 1..12),
            price in 0u64..5_000_000,
            site_ppm in 0u32..=1_000_000,
            fee_ppm in 0u32..=1_000_000,
        ) {
            let price = MicroCredits(price);
            let pricing = Pricing { price_per_gflop: price, site_share_ppm: site_ppm, platform_fee_ppm: fee_ppm };
            let budget = job_budget(units.iter().map(|((flops, _, _), _)| *flops), price)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let held = i64::try_from(budget.0).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let bill = bill_of(Some(&AccountId::new().to_string()), i64::try_from(price.0).unwrap_or(0))
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut standing = EscrowStanding { held, owed: 0 };
            let mut paid: u128 = 0;
            for ((flops, agreeing, has_site), settled) in &units {
                if !settled {
                    continue;
                }
                let names: Vec<String> = (0..*agreeing).map(|i| wallet(i as u8 + 1).to_string()).collect();
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                let site = has_site.then(|| wallet(9).to_string());
                let answering = (names[0], wallet(1));
                let payment = unit_payment(Some(&pricing), bill, i64::try_from(*flops).unwrap_or(i64::MAX), &names, site.as_deref(), answering)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let Some(payment) = payment else {
                    prop_assert!(bill.is_none() || price.is_zero(), "a billed unit of a priced job is never free");
                    continue;
                };
                let accrual = decide_accrual(&payment.split, &payment.wallets, payment.site.as_ref(), standing)
                    .map_err(|e| TestCaseError::fail(format!("refused a covered unit: {e}")))?;
                let Some(accrual) = accrual else { continue };
                let parts: u128 = accrual.parts.iter().map(|p| u128::from(p.amount.0)).sum();
                prop_assert_eq!(parts, u128::from(accrual.price.0), "the parts are the price");
                for part in &accrual.parts {
                    if let Account::Wallet(w) = part.account {
                        prop_assert!(payment.wallets.contains(&w) || payment.site == Some(w), "paid a wallet that did not agree");
                    }
                }
                standing.owed += i64::try_from(accrual.price.0).unwrap_or(i64::MAX);
                paid += parts;
            }
            prop_assert!(standing.owed <= standing.held, "the escrow owes more than it holds");
            // The payout moves what is owed out of the escrow; the refund takes the rest.
            let after_payout = standing.held - standing.owed;
            let refund = refund_due(after_payout, 0).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let refunded = refund.map_or(0, |r| u128::from(r.0));
            prop_assert_eq!(u128::from(budget.0), paid + refunded);
            // Refunding before the payout leaves what is owed in the escrow.
            let early = refund_due(standing.held, standing.owed).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(early.map_or(0, |r| u128::from(r.0)), refunded);
        }

        /// An accrual the escrow cannot cover is refused, never cut short.
        #[test]
        fn a_unit_the_escrow_cannot_cover_is_refused(
            price in 1u64..1_000_000,
            held in 0i64..2_000_000,
            owed in 0i64..2_000_000,
        ) {
            let split = split_unit_price(1_000_000_000, MicroCredits(price), 0, 0, 1, false)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let decided = decide_accrual(&split, &[wallet(1)], None, EscrowStanding { held, owed });
            let fits = owed.saturating_add(i64::try_from(split.price.0).unwrap_or(i64::MAX)) <= held;
            match decided {
                Ok(Some(accrual)) => prop_assert!(fits && accrual.price == split.price),
                Ok(None) => prop_assert!(false, "a priced unit accrued nothing"),
                Err(AccrualRefused::Overdraft { .. }) => prop_assert!(!fits),
                Err(other) => prop_assert!(false, "unexpected refusal {other}"),
            }
        }
    }

    #[test]
    fn a_split_that_names_a_site_share_without_a_site_is_refused() {
        let split = Split {
            price: MicroCredits(10),
            volunteers: vec![MicroCredits(8)],
            site: MicroCredits(1),
            platform: MicroCredits(1),
        };
        let standing = EscrowStanding { held: 10, owed: 0 };
        assert!(matches!(
            decide_accrual(&split, &[wallet(1)], None, standing),
            Err(AccrualRefused::SplitMismatch(_))
        ));
        assert!(matches!(
            decide_accrual(&split, &[], Some(&wallet(2)), standing),
            Err(AccrualRefused::SplitMismatch(_))
        ));
    }
}
