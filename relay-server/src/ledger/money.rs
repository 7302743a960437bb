//! Money as whole micro-credits: integers only, so sums are exact and every overflow is
//! an error rather than a silent wrap or a rounding.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Micro-credits in one credit.
pub const MICRO_PER_CREDIT: u64 = 1_000_000;

/// Why an amount of money was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// The result does not fit in 64 bits of micro-credits.
    #[error("amount overflows: more than {} credits", u64::MAX / MICRO_PER_CREDIT)]
    Overflow,
    /// A subtraction would go below zero.
    #[error("amount would go negative: {left} minus {right}")]
    Negative {
        /// What was subtracted from.
        left: MicroCredits,
        /// What was subtracted.
        right: MicroCredits,
    },
    /// Text that is not a decimal number of credits.
    #[error("{0:?} is not an amount of credits (a non-negative decimal with at most 6 places, like 2.5)")]
    Parse(String),
}

/// An amount of credit in micro-credits (1 credit = 1 000 000 micro-credits).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct MicroCredits(pub u64);

impl MicroCredits {
    /// No money.
    pub const ZERO: Self = Self(0);

    /// Whole credits.
    pub fn from_credits(credits: u64) -> Result<Self, MoneyError> {
        credits
            .checked_mul(MICRO_PER_CREDIT)
            .map(Self)
            .ok_or(MoneyError::Overflow)
    }

    /// `self + other`, or an error on overflow.
    pub fn checked_add(self, other: Self) -> Result<Self, MoneyError> {
        self.0
            .checked_add(other.0)
            .map(Self)
            .ok_or(MoneyError::Overflow)
    }

    /// `self - other`, or an error when it would go negative.
    pub fn checked_sub(self, other: Self) -> Result<Self, MoneyError> {
        self.0
            .checked_sub(other.0)
            .map(Self)
            .ok_or(MoneyError::Negative {
                left: self,
                right: other,
            })
    }

    /// Whether this is zero.
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for MicroCredits {
    /// Decimal credits, without trailing zeros: `2.5`, `3`, `0.000001`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / MICRO_PER_CREDIT;
        let frac = self.0 % MICRO_PER_CREDIT;
        if frac == 0 {
            write!(f, "{whole}")
        } else {
            let digits = format!("{frac:06}");
            write!(f, "{whole}.{}", digits.trim_end_matches('0'))
        }
    }
}

impl FromStr for MicroCredits {
    type Err = MoneyError;

    /// Parses decimal credits (`2`, `2.5`, `0.000001`) exactly; more than six decimal
    /// places would need a fraction of a micro-credit and is refused.
    fn from_str(text: &str) -> Result<Self, MoneyError> {
        let bad = || MoneyError::Parse(text.to_string());
        let trimmed = text.trim();
        let (whole, frac) = trimmed.split_once('.').unwrap_or((trimmed, ""));
        let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if (whole.is_empty() && frac.is_empty())
            || !digits_only(whole)
            || !digits_only(frac)
            || frac.len() > 6
            || (trimmed.contains('.') && frac.is_empty())
        {
            return Err(bad());
        }
        let whole: u64 = if whole.is_empty() {
            0
        } else {
            // Digits only, so the one failure left is overflow.
            whole.parse().map_err(|_| MoneyError::Overflow)?
        };
        let frac_micro: u64 = if frac.is_empty() {
            0
        } else {
            let padded = format!("{frac:0<6}");
            padded.parse().map_err(|_| bad())?
        };
        Self::from_credits(whole)?.checked_add(Self(frac_micro))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credits_print_and_parse_as_exact_decimals() {
        for (text, micro) in [
            ("0", 0),
            ("3", 3_000_000),
            ("2.5", 2_500_000),
            ("0.000001", 1),
            ("12.345678", 12_345_678),
        ] {
            assert_eq!(text.parse::<MicroCredits>(), Ok(MicroCredits(micro)));
            assert_eq!(MicroCredits(micro).to_string(), text);
        }
        assert_eq!(".5".parse::<MicroCredits>(), Ok(MicroCredits(500_000)));
        for bad in ["", ".", "1.", "-1", "1.0000001", "1e3", "one", "1.2.3", " "] {
            assert!(bad.parse::<MicroCredits>().is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            "18446744073710".parse::<MicroCredits>(),
            Err(MoneyError::Overflow)
        );
        assert_eq!(
            "99999999999999999999999".parse::<MicroCredits>(),
            Err(MoneyError::Overflow)
        );
    }

    #[test]
    fn arithmetic_refuses_overflow_and_negatives() {
        assert_eq!(
            MicroCredits(u64::MAX).checked_add(MicroCredits(1)),
            Err(MoneyError::Overflow)
        );
        assert!(MicroCredits(1).checked_sub(MicroCredits(2)).is_err());
        assert_eq!(
            MicroCredits(5).checked_sub(MicroCredits(2)),
            Ok(MicroCredits(3))
        );
    }
}
