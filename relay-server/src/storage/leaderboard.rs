//! What the network page reads about everyone: the wallets that earned the most.

use super::{Storage, StorageError};
use crate::ledger::MicroCredits;
use sqlx::Row;

/// One wallet on the leaderboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Earner {
    /// The wallet's address (`st1…`).
    pub address: String,
    /// Credit paid to it for validated work: its shares of units and, for a site's
    /// wallet, the site's shares. Transfers do not count.
    pub earned: MicroCredits,
    /// Results of its judged valid (none for a wallet that only earns site shares).
    pub valid_results: u64,
}

impl Storage {
    /// The `limit` wallets paid the most for validated work, most first (ties by address).
    ///
    /// It sums the ledger's payments per wallet each time: fine for the page's refresh
    /// rate on ledgers of millions of entries, and it cannot drift from the ledger.
    pub async fn leaderboard(&self, limit: u32) -> Result<Vec<Earner>, StorageError> {
        let rows = sqlx::query(
            "SELECT substr(ledger.credit, 8) AS address, SUM(ledger.amount) AS earned,
                    COALESCE(wallets.valid, 0) AS valid
             FROM ledger LEFT JOIN wallets ON wallets.address = substr(ledger.credit, 8)
             WHERE ledger.credit LIKE 'wallet:%' AND ledger.reason IN ('pay', 'site_share')
             GROUP BY ledger.credit ORDER BY earned DESC, address LIMIT ?",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Earner {
                    address: r.try_get("address")?,
                    earned: MicroCredits(
                        u64::try_from(r.try_get::<i64, _>("earned")?).map_err(|_| {
                            StorageError::Corrupt("a negative sum of payments".into())
                        })?,
                    ),
                    valid_results: u64::try_from(r.try_get::<i64, _>("valid")?).unwrap_or(0),
                })
            })
            .collect()
    }

    /// The ledger's last sequence number (0 while it is empty).
    pub async fn ledger_tip(&self) -> Result<u64, StorageError> {
        let seq: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM ledger")
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(seq).unwrap_or(0))
    }
}
