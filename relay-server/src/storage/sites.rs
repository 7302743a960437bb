//! Registered embedding sites: the origin, and the wallet its owner proved it pays.

use super::sql::params;
use super::{now_ms, Storage, StorageError};
use starling_protocol::{SiteOrigin, WalletAddress};

impl Storage {
    /// Records `wallet` as the wallet of the site at `origin`, replacing an earlier one;
    /// returns when, Unix milliseconds. The caller has checked both proofs.
    pub async fn register_site(
        &self,
        origin: &SiteOrigin,
        wallet: &WalletAddress,
    ) -> Result<i64, StorageError> {
        let (origin, wallet, now) = (origin.to_string(), wallet.to_string(), now_ms());
        self.writer
            .exec(move |db| {
                db.write(
                    "INSERT INTO sites (origin, wallet, registered_ms) VALUES (?1, ?2, ?3)
                     ON CONFLICT (origin) DO UPDATE SET wallet = ?2, registered_ms = ?3",
                    params![origin, wallet, now],
                )?;
                Ok(now)
            })
            .await
    }

    /// Whether `wallet` is the registered wallet of the site at `origin`.
    pub async fn site_registered(
        &self,
        wallet: &WalletAddress,
        origin: &SiteOrigin,
    ) -> Result<bool, StorageError> {
        self.reads
            .read({
                let p0 = origin.to_string();
                let p1 = wallet.to_string();
                move |db| {
                    db.query_one(
                        "SELECT EXISTS (SELECT 1 FROM sites WHERE origin = ? AND wallet = ?)",
                        params![p0, p1],
                        |r| r.get(0),
                    )
                }
            })
            .await
    }
}
