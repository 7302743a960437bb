//! Wallet reliability, kept next to the results that shape it so both change in one
//! transaction.

use super::{now_ms, Storage, StorageError};
use crate::validation::trust::Reliability;
use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;
use starling_protocol::WalletAddress;

/// What the relay believes about one wallet.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WalletRecord {
    /// The wallet's address.
    pub address: String,
    /// Its error rate and result counts.
    pub reliability: Reliability,
    /// Whether it gets no more work.
    pub quarantined: bool,
}

impl WalletRecord {
    fn from_row(r: &SqliteRow) -> Result<Self, StorageError> {
        Ok(Self {
            address: r.try_get("address")?,
            reliability: Reliability {
                error_rate: r.try_get("error_rate")?,
                valid: u32::try_from(r.try_get::<i64, _>("valid")?).unwrap_or(u32::MAX),
                invalid: u32::try_from(r.try_get::<i64, _>("invalid")?).unwrap_or(u32::MAX),
            },
            quarantined: r.try_get::<i64, _>("quarantined")? != 0,
        })
    }
}

const WALLET_COLUMNS: &str = "address, error_rate, valid, invalid, quarantined";

/// A reliability from its `error_rate`, `valid` and `invalid` columns (a new wallet's
/// default where the wallet has no row: all three NULL).
pub(super) fn reliability_of(
    error_rate: Option<f64>,
    valid: Option<i64>,
    invalid: Option<i64>,
) -> Reliability {
    match (error_rate, valid, invalid) {
        (Some(error_rate), Some(valid), Some(invalid)) => Reliability {
            error_rate,
            valid: u32::try_from(valid).unwrap_or(u32::MAX),
            invalid: u32::try_from(invalid).unwrap_or(u32::MAX),
        },
        _ => Reliability::default(),
    }
}

/// The wallet's reliability inside a transaction (a new wallet's default if unseen).
pub(super) fn reliability(db: &Connection, wallet: &str) -> Result<Reliability, StorageError> {
    let row = db
        .prepare_cached("SELECT error_rate, valid, invalid FROM wallets WHERE address = ?1")?
        .query_row([wallet], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    Ok(row.map_or_else(Reliability::default, |(e, v, i)| {
        reliability_of(Some(e), Some(v), Some(i))
    }))
}

/// Records one judged result against `wallet`; quarantine, once reached, stays. `before`
/// is its reliability where the caller read it in this transaction already.
pub(super) fn judge(
    db: &Connection,
    wallet: &str,
    valid: bool,
    before: Option<Reliability>,
) -> Result<(), StorageError> {
    let mut reliability = match before {
        Some(before) => before,
        None => reliability(db, wallet)?,
    };
    if valid {
        reliability.record_valid();
    } else {
        reliability.record_invalid();
    }
    db.prepare_cached(
        "INSERT INTO wallets (address, error_rate, valid, invalid, quarantined, first_seen_ms, updated_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
         ON CONFLICT (address) DO UPDATE SET error_rate = ?2, valid = ?3, invalid = ?4,
             quarantined = MAX(quarantined, ?5), updated_ms = ?6",
    )?
    .execute(rusqlite::params![
        wallet,
        reliability.error_rate,
        i64::from(reliability.valid),
        i64::from(reliability.invalid),
        i64::from(reliability.quarantined()),
        now_ms(),
    ])?;
    Ok(())
}

impl Storage {
    /// A wallet's record, registering it with a new wallet's defaults on first sight.
    pub async fn touch_wallet(&self, wallet: &WalletAddress) -> Result<WalletRecord, StorageError> {
        let wallet = wallet.to_string();
        self.writer
            .exec(move |db| {
                let record = db
                    .prepare_cached(
                        "INSERT INTO wallets (address, error_rate, first_seen_ms, updated_ms)
                         VALUES (?1, ?2, ?3, ?3)
                         ON CONFLICT (address) DO UPDATE SET address = address
                         RETURNING address, error_rate, valid, invalid, quarantined",
                    )?
                    .query_row(
                        rusqlite::params![wallet, Reliability::default().error_rate, now_ms()],
                        |r| {
                            Ok(WalletRecord {
                                address: r.get(0)?,
                                reliability: reliability_of(r.get(1)?, r.get(2)?, r.get(3)?),
                                quarantined: r.get::<_, i64>(4)? != 0,
                            })
                        },
                    )?;
                Ok(record)
            })
            .await
    }

    /// A wallet's record, if the relay has seen it.
    pub async fn wallet(
        &self,
        wallet: &WalletAddress,
    ) -> Result<Option<WalletRecord>, StorageError> {
        let row = sqlx::query(&format!(
            "SELECT {WALLET_COLUMNS} FROM wallets WHERE address = ?"
        ))
        .bind(wallet.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| WalletRecord::from_row(&r)).transpose()
    }

    /// Every wallet, most valid results first.
    pub async fn wallets(&self) -> Result<Vec<WalletRecord>, StorageError> {
        let rows = sqlx::query(&format!(
            "SELECT {WALLET_COLUMNS} FROM wallets ORDER BY valid DESC, address"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(WalletRecord::from_row).collect()
    }
}
