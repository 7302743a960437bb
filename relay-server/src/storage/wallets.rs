//! Wallet reliability, kept next to the results that shape it so both change in one
//! transaction.

use super::{now_ms, Storage, StorageError, Tx};
use crate::validation::trust::Reliability;
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

/// The wallet's reliability inside a transaction (a new wallet's default if unseen).
pub(super) async fn reliability(
    tx: &mut Tx<'_>,
    wallet: &str,
) -> Result<Reliability, StorageError> {
    let row = sqlx::query(&format!(
        "SELECT {WALLET_COLUMNS} FROM wallets WHERE address = ?"
    ))
    .bind(wallet)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(match row {
        Some(row) => WalletRecord::from_row(&row)?.reliability,
        None => Reliability::default(),
    })
}

/// Records one judged result against `wallet`; quarantine, once reached, stays.
pub(super) async fn judge(tx: &mut Tx<'_>, wallet: &str, valid: bool) -> Result<(), StorageError> {
    let mut reliability = reliability(tx, wallet).await?;
    if valid {
        reliability.record_valid();
    } else {
        reliability.record_invalid();
    }
    let now = now_ms();
    sqlx::query(
        "INSERT INTO wallets (address, error_rate, valid, invalid, quarantined, first_seen_ms, updated_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
         ON CONFLICT (address) DO UPDATE SET error_rate = ?2, valid = ?3, invalid = ?4,
             quarantined = MAX(quarantined, ?5), updated_ms = ?6",
    )
    .bind(wallet)
    .bind(reliability.error_rate)
    .bind(i64::from(reliability.valid))
    .bind(i64::from(reliability.invalid))
    .bind(i64::from(reliability.quarantined()))
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Storage {
    /// A wallet's record, registering it with a new wallet's defaults on first sight.
    pub async fn touch_wallet(&self, wallet: &WalletAddress) -> Result<WalletRecord, StorageError> {
        let now = now_ms();
        let row = sqlx::query(&format!(
            "INSERT INTO wallets (address, error_rate, first_seen_ms, updated_ms) VALUES (?1, ?2, ?3, ?3)
             ON CONFLICT (address) DO UPDATE SET address = address
             RETURNING {WALLET_COLUMNS}"
        ))
        .bind(wallet.to_string())
        .bind(Reliability::default().error_rate)
        .bind(now)
        .fetch_one(&self.writer)
        .await?;
        WalletRecord::from_row(&row)
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
