//! Who holds credit, and why it moved: the ledger's two vocabularies, each with a stable
//! text form that storage keeps and the hash covers.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use starling_protocol::{JobId, WalletAddress};
use std::fmt;
use std::str::FromStr;

/// A submitter's account (one per API key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AccountId(pub uuid::Uuid);

impl AccountId {
    /// A fresh random id.
    pub fn new() -> Self {
        Self(uuid::Uuid::new_v4())
    }
}

impl Default for AccountId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for AccountId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s).map(Self)
    }
}

/// The public name of a job's escrow. The ledger is public, so it must not tie a
/// submitter to their jobs: a job's escrow is named by a digest of the job's id and a
/// random salt that only the job's owner is shown ([`EscrowRef::for_job`]), and the owner
/// proves the link by showing both. Escrows opened before jobs had a salt keep their job
/// id as their name ([`EscrowRef::Job`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EscrowRef {
    /// An escrow named by its job's id (opened before salted names).
    Job(JobId),
    /// The first 16 bytes of `SHA-256("starling escrow v1\0" ‖ job id ‖ salt)`, the job
    /// id in its hyphenated text form and the salt as the text the owner is shown.
    Digest([u8; 16]),
}

impl EscrowRef {
    /// The name of `job`'s escrow given its salt.
    pub fn for_job(job: JobId, salt: &str) -> Self {
        use sha2::Digest as _;
        let mut hash = sha2::Sha256::new();
        hash.update(b"starling escrow v1\0");
        hash.update(job.to_string().as_bytes());
        hash.update(salt.as_bytes());
        let digest = hash.finalize();
        let mut name = [0u8; 16];
        name.copy_from_slice(&digest[..16]);
        Self::Digest(name)
    }

    /// A fresh random salt (32 hex characters) for a new job's escrow.
    pub fn new_salt() -> String {
        hex::encode(rand::random::<[u8; 16]>())
    }
}

impl fmt::Display for EscrowRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Job(job) => job.fmt(f),
            Self::Digest(name) => f.write_str(&hex::encode(name)),
        }
    }
}

impl FromStr for EscrowRef {
    type Err = ParseError;
    fn from_str(text: &str) -> Result<Self, ParseError> {
        let mut name = [0u8; 16];
        if hex::decode_to_slice(text, &mut name).is_ok() {
            return Ok(Self::Digest(name));
        }
        text.parse().map(Self::Job).map_err(|_| ParseError {
            kind: "escrow",
            text: text.to_string(),
        })
    }
}

/// A text that names no account or reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {text:?} is not recognised")]
pub struct ParseError {
    kind: &'static str,
    text: String,
}

/// Where credit sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Account {
    /// A volunteer's or site owner's wallet.
    Wallet(WalletAddress),
    /// A submitter's prepaid account.
    Submitter(AccountId),
    /// Credit held for one job until its units are paid or the rest is refunded.
    Escrow(EscrowRef),
    /// The platform's fees and rounding remainders.
    Platform,
    /// Where issued credit comes from: the only account that may go negative, so the
    /// balances of all accounts always sum to exactly zero.
    Issuance,
}

impl Account {
    /// Whether this account may hold a negative balance (only [`Account::Issuance`]).
    pub fn may_go_negative(&self) -> bool {
        matches!(self, Self::Issuance)
    }
}

impl fmt::Display for Account {
    /// The stable text form: `wallet:st1…`, `submitter:<uuid>`, `escrow:<32 hex>` (or
    /// `escrow:<uuid>` for escrows opened before salted names),
    /// `platform`, `issuance`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Wallet(address) => write!(f, "wallet:{address}"),
            Self::Submitter(id) => write!(f, "submitter:{id}"),
            Self::Escrow(job) => write!(f, "escrow:{job}"),
            Self::Platform => f.write_str("platform"),
            Self::Issuance => f.write_str("issuance"),
        }
    }
}

impl FromStr for Account {
    type Err = ParseError;
    fn from_str(text: &str) -> Result<Self, ParseError> {
        let bad = || ParseError {
            kind: "account",
            text: text.to_string(),
        };
        // Parsed strictly: an account must have one spelling, or the balances cache and
        // the ledger could disagree about which account a row means.
        let parsed = match text.split_once(':') {
            None if text == "platform" => Self::Platform,
            None if text == "issuance" => Self::Issuance,
            Some(("wallet", rest)) => Self::Wallet(rest.parse().map_err(|_| bad())?),
            Some(("submitter", rest)) => Self::Submitter(rest.parse().map_err(|_| bad())?),
            Some(("escrow", rest)) => Self::Escrow(rest.parse().map_err(|_| bad())?),
            _ => return Err(bad()),
        };
        if parsed.to_string() == text {
            Ok(parsed)
        } else {
            Err(bad())
        }
    }
}

/// Serialized as its text form (`"wallet:st1…"`, `"platform"`, …), for the HTTP API.
impl Serialize for Account {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Account {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Why an entry moved credit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// New credit from [`Account::Issuance`] (`keys create --balance`).
    Issue,
    /// A submitter's credit set aside for a job.
    Escrow,
    /// A volunteer's share of a unit's price.
    Pay,
    /// The host site's share of a unit's price.
    SiteShare,
    /// The platform's fee (and rounding remainders) on a unit.
    PlatformFee,
    /// Escrow returned to the submitter.
    Refund,
    /// A wallet-signed transfer between wallets.
    Transfer,
}

impl Reason {
    /// Every reason, for tests and reports.
    pub const ALL: [Self; 7] = [
        Self::Issue,
        Self::Escrow,
        Self::Pay,
        Self::SiteShare,
        Self::PlatformFee,
        Self::Refund,
        Self::Transfer,
    ];

    /// The stable text form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Issue => "issue",
            Self::Escrow => "escrow",
            Self::Pay => "pay",
            Self::SiteShare => "site_share",
            Self::PlatformFee => "platform_fee",
            Self::Refund => "refund",
            Self::Transfer => "transfer",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Reason {
    type Err = ParseError;
    fn from_str(text: &str) -> Result<Self, ParseError> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == text)
            .ok_or_else(|| ParseError {
                kind: "reason",
                text: text.to_string(),
            })
    }
}

/// Serialized as its text form (`"site_share"`, …).
impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Reason {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use starling_protocol::WalletKey;

    #[test]
    fn accounts_and_reasons_round_trip_through_text() {
        let accounts = [
            Account::Wallet(WalletKey::from_seed([1; 32]).address()),
            Account::Submitter(AccountId(uuid::Uuid::from_u128(7))),
            Account::Escrow(EscrowRef::Job(JobId::from_uuid(uuid::Uuid::from_u128(9)))),
            Account::Escrow(EscrowRef::for_job(
                JobId::from_uuid(uuid::Uuid::from_u128(9)),
                "s",
            )),
            Account::Platform,
            Account::Issuance,
        ];
        for account in accounts {
            let text = account.to_string();
            assert_eq!(text.parse::<Account>(), Ok(account), "{text}");
        }
        assert_eq!(
            "submitter:00000000-0000-0000-0000-000000000007",
            accounts[1].to_string()
        );
        for reason in Reason::ALL {
            assert_eq!(reason.as_str().parse::<Reason>(), Ok(reason));
        }
        for bad in [
            "",
            "platform:",
            "wallet:",
            "wallet:st1xyz",
            "escrow:not-a-uuid",
            "escrow:ABCDEF00000000000000000000000000",
            "escrow:abcdef0000000000000000000000000",
            "Platform",
            "submitter:00000000000000000000000000000007",
        ] {
            assert!(bad.parse::<Account>().is_err(), "{bad:?} accepted");
        }
        assert!("paid".parse::<Reason>().is_err());
    }

    #[test]
    fn accounts_and_reasons_serialize_as_their_text() -> Result<(), serde_json::Error> {
        let account = Account::Wallet(WalletKey::from_seed([2; 32]).address());
        let json = serde_json::to_string(&(account, Reason::SiteShare))?;
        assert_eq!(json, format!("[\"{account}\",\"site_share\"]"));
        assert_eq!(
            serde_json::from_str::<(Account, Reason)>(&json)?,
            (account, Reason::SiteShare)
        );
        assert!(serde_json::from_str::<Account>("\"wallet:nope\"").is_err());
        Ok(())
    }
}
