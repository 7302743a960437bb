//! What the network page reads about everyone: the wallets that earned the most.

use super::sql::params;
use super::{Storage, StorageError};
use crate::ledger::MicroCredits;

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
        self.reads
            .read(move |db| {
                db.query_all(
                    // PostgreSQL sums BIGINTs as NUMERIC: cast back.
                    "SELECT substr(ledger.credit, 8) AS address,
                            CAST(SUM(ledger.amount) AS BIGINT) AS earned,
                            MAX(COALESCE(wallets.valid, 0)) AS valid
                     FROM ledger LEFT JOIN wallets ON wallets.address = substr(ledger.credit, 8)
                     WHERE ledger.credit LIKE 'wallet:%' AND ledger.reason IN ('pay', 'site_share')
                     GROUP BY ledger.credit ORDER BY earned DESC, address LIMIT ?1",
                    params![i64::from(limit)],
                    |r| {
                        Ok(Earner {
                            address: r.get(0)?,
                            earned: MicroCredits(u64::try_from(r.get::<i64>(1)?).map_err(
                                |_| StorageError::Corrupt("a negative sum of payments".into()),
                            )?),
                            valid_results: u64::try_from(r.get::<i64>(2)?).unwrap_or(0),
                        })
                    },
                )
            })
            .await
    }

    /// The ledger's last sequence number (0 while it is empty).
    pub async fn ledger_tip(&self) -> Result<u64, StorageError> {
        let seq: i64 = self
            .reads
            .read({
                move |db| {
                    db.query_one("SELECT COALESCE(MAX(seq), 0) FROM ledger", params![], |r| {
                        r.get(0)
                    })
                }
            })
            .await?;
        Ok(u64::try_from(seq).unwrap_or(0))
    }
}
