//! Wallet reliability, kept next to the results that shape it so both change in one
//! transaction.

use super::sql::{params, Db, Row};
use super::{now_ms, Storage, StorageError};
use crate::lifecycle::settle::WalletStanding;
use crate::validation::trust::Reliability;
use serde::Serialize;
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
    /// Units it handed back (failed, dropped, let expire).
    pub handbacks: u64,
}

impl WalletRecord {
    fn from_row(r: &dyn Row) -> Result<Self, StorageError> {
        Ok(Self {
            address: r.named("address")?,
            reliability: Reliability {
                error_rate: r.named("error_rate")?,
                valid: u32::try_from(r.named::<i64>("valid")?).unwrap_or(u32::MAX),
                invalid: u32::try_from(r.named::<i64>("invalid")?).unwrap_or(u32::MAX),
            },
            quarantined: r.named::<i64>("quarantined")? != 0,
            handbacks: u64::try_from(r.named::<i64>("handbacks")?).unwrap_or(0),
        })
    }
}

const WALLET_COLUMNS: &str = "address, error_rate, valid, invalid, quarantined, handbacks";

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
pub(super) fn reliability(db: &dyn Db, wallet: &str) -> Result<Reliability, StorageError> {
    let row = db.query_opt(
        "SELECT error_rate, valid, invalid FROM wallets WHERE address = ?1",
        params![wallet],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    Ok(row.map_or_else(Reliability::default, |(e, v, i)| {
        reliability_of(Some(e), Some(v), Some(i))
    }))
}

/// The wallet's record on `kernel` inside a transaction (a new wallet's if none).
fn kernel_reliability(
    db: &dyn Db,
    wallet: &str,
    kernel: &str,
) -> Result<Reliability, StorageError> {
    let row = db.query_opt(
        "SELECT error_rate, valid, invalid FROM wallet_kernels WHERE wallet = ?1 AND kernel = ?2",
        params![wallet, kernel],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    Ok(row.map_or_else(Reliability::default, |(e, v, i)| {
        reliability_of(Some(e), Some(v), Some(i))
    }))
}

/// Records one judged result of `kernel` against `wallet`, in its totals and in its
/// record on that kernel; quarantine, once reached, stays. `before` is its record where
/// the caller read it in this transaction already. Returns the new totals, for
/// [`Standings`].
pub(super) fn judge(
    db: &dyn Db,
    wallet: &str,
    kernel: &str,
    valid: bool,
    before: Option<WalletStanding>,
) -> Result<Reliability, StorageError> {
    let WalletStanding {
        total: mut reliability,
        kernel: mut on_kernel,
    } = match before {
        Some(before) => before,
        None => WalletStanding {
            total: reliability(db, wallet)?,
            kernel: kernel_reliability(db, wallet, kernel)?,
        },
    };
    for r in [&mut reliability, &mut on_kernel] {
        if valid {
            r.record_valid();
        } else {
            r.record_invalid();
        }
    }
    db.write(&format!("INSERT INTO wallets (address, error_rate, valid, invalid, quarantined, first_seen_ms, updated_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
         ON CONFLICT (address) DO UPDATE SET error_rate = ?2, valid = ?3, invalid = ?4,
             quarantined = CASE WHEN wallets.quarantined > ?5 THEN wallets.quarantined ELSE ?5 END, {}", super::others::touch("wallets", "?6")), params![
        wallet,
        reliability.error_rate,
        i64::from(reliability.valid),
        i64::from(reliability.invalid),
        i64::from(reliability.quarantined()),
        now_ms(),
    ])?;
    // A wallet caught lying is trusted on no relay from now on, not from the next read.
    if !valid {
        super::others::tell_other_relays(db)?;
    }
    db.write(
        "INSERT INTO wallet_kernels (wallet, kernel, error_rate, valid, invalid)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (wallet, kernel) DO UPDATE SET error_rate = ?3, valid = ?4, invalid = ?5",
        params![
            wallet,
            kernel,
            on_kernel.error_rate,
            i64::from(on_kernel.valid),
            i64::from(on_kernel.invalid),
        ],
    )?;
    Ok(reliability)
}

/// Most wallets whose standing [`Standings`] keeps; past this it starts over.
const STANDINGS_CAP: usize = 1 << 16;

/// One wallet in [`Standings`]: its standing once read, and the sequence number of the
/// last committed judgment of it that this process heard of.
#[derive(Default, Clone, Copy)]
struct Standing {
    known: Option<(Reliability, bool)>,
    last_judged: u64,
}

#[derive(Default)]
struct StandingsMap {
    wallets: std::collections::HashMap<WalletAddress, Standing>,
    /// Judgments heard of, numbered from 1.
    judgments: u64,
    /// `judgments` when the map last started over: what it forgot is unknown.
    cleared_at: u64,
}

impl StandingsMap {
    fn entry(&mut self, wallet: WalletAddress) -> &mut Standing {
        if self.wallets.len() >= STANDINGS_CAP {
            self.wallets.clear();
            self.cleared_at = self.judgments;
        }
        self.wallets.entry(wallet).or_default()
    }
}

/// Wallets' standing (reliability, and whether quarantined) as last committed, in
/// memory: every lease asks for its wallet's, and a pool query per lease cost more CPU
/// than the lease's own writes. Read from the database on a miss and updated after each
/// commit that judged a wallet. An update only replaces an older reliability (fewer
/// judged results), so commits finishing out of order cannot leave a stale one behind,
/// quarantine stays once reached as in the database, and a read that raced a judgment
/// is used once but not kept.
#[derive(Default)]
pub(crate) struct Standings(std::sync::Mutex<StandingsMap>);

impl Standings {
    fn map(&self) -> std::sync::MutexGuard<'_, StandingsMap> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The wallet's standing, or the judgments heard of so far, to pass to
    /// [`Standings::remember`] with what the database says.
    fn lookup(&self, wallet: &WalletAddress) -> Result<(Reliability, bool), u64> {
        let map = self.map();
        match map.wallets.get(wallet).and_then(|s| s.known) {
            Some(known) => Ok(known),
            None => Err(map.judgments),
        }
    }

    /// Keeps a standing read from the database, unless a judgment of the wallet was
    /// committed after [`Standings::lookup`] said `judgments` (the read may predate it),
    /// or the map started over since and may have forgotten one.
    fn remember(&self, wallet: WalletAddress, judgments: u64, read: (Reliability, bool)) {
        let mut map = self.map();
        let forgot = map.cleared_at > judgments;
        let entry = map.entry(wallet);
        if entry.last_judged <= judgments && !forgot {
            entry.known = Some(read);
        }
    }

    /// Records that `wallet` was quarantined by a commit that judged no result of it (it
    /// handed back too many units): any standing read before is stale.
    pub(crate) fn quarantined(&self, wallet: WalletAddress) {
        let mut map = self.map();
        map.judgments += 1;
        let judgments = map.judgments;
        let entry = map.entry(wallet);
        entry.last_judged = judgments;
        if let Some((_, quarantined)) = &mut entry.known {
            *quarantined = true;
        }
    }

    /// Records a committed judgment of `wallet`.
    pub(crate) fn judged(&self, wallet: WalletAddress, reliability: Reliability) {
        let mut map = self.map();
        map.judgments += 1;
        let judgments = map.judgments;
        let entry = map.entry(wallet);
        entry.last_judged = judgments;
        if let Some((known, quarantined)) = &mut entry.known {
            let count = |r: &Reliability| u64::from(r.valid) + u64::from(r.invalid);
            if count(&reliability) >= count(known) {
                *known = reliability;
            }
            *quarantined |= reliability.quarantined();
        }
    }
}

impl Storage {
    /// A wallet's record, registering it with a new wallet's defaults on first sight.
    pub async fn touch_wallet(&self, wallet: &WalletAddress) -> Result<WalletRecord, StorageError> {
        let wallet = wallet.to_string();
        self.writer
            .exec(move |db| {
                let record = db.query_one(
                    "INSERT INTO wallets (address, error_rate, first_seen_ms, updated_ms)
                         VALUES (?1, ?2, ?3, ?3)
                         ON CONFLICT (address) DO UPDATE SET address = excluded.address
                         RETURNING address, error_rate, valid, invalid, quarantined, handbacks",
                    params![wallet, Reliability::default().error_rate, now_ms()],
                    |r| {
                        Ok(WalletRecord {
                            address: r.get(0)?,
                            reliability: reliability_of(r.get(1)?, r.get(2)?, r.get(3)?),
                            quarantined: r.get::<i64>(4)? != 0,
                            handbacks: u64::try_from(r.get::<i64>(5)?).unwrap_or(0),
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
        let wallet = wallet.to_string();
        self.reads
            .read(move |db| {
                db.query_opt(
                    &format!("SELECT {WALLET_COLUMNS} FROM wallets WHERE address = ?1"),
                    params![wallet],
                    WalletRecord::from_row,
                )
            })
            .await
    }

    /// A wallet's reliability and whether it is quarantined, from memory where this
    /// process has it (see [`Standings`]); a wallet never seen has a new wallet's
    /// standing.
    pub async fn standing(
        &self,
        wallet: &WalletAddress,
    ) -> Result<(Reliability, bool), StorageError> {
        let judgments = match self.standings.lookup(wallet) {
            Ok(known) => return Ok(known),
            Err(judgments) => judgments,
        };
        let read = self
            .wallet(wallet)
            .await?
            .map_or((Reliability::default(), false), |r| {
                (r.reliability, r.quarantined)
            });
        self.standings.remember(*wallet, judgments, read);
        Ok(read)
    }

    /// Every wallet, most valid results first.
    pub async fn wallets(&self) -> Result<Vec<WalletRecord>, StorageError> {
        self.reads
            .read(|db| {
                db.query_all(
                    &format!("SELECT {WALLET_COLUMNS} FROM wallets ORDER BY valid DESC, address"),
                    params![],
                    WalletRecord::from_row,
                )
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(valid: u32, invalid: u32) -> Reliability {
        let mut r = Reliability::default();
        for _ in 0..valid {
            r.record_valid();
        }
        for _ in 0..invalid {
            r.record_invalid();
        }
        r
    }

    #[test]
    fn standings_keep_the_newest_judgment_and_quarantine_sticks() {
        let standings = Standings::default();
        let w = WalletAddress::from_bytes([0; 32]);
        assert_eq!(standings.lookup(&w), Err(0), "unknown at first");
        standings.remember(w, 0, (after(5, 0), false));
        // Commits can report out of order: the older judgment must not win.
        standings.judged(w, after(7, 0));
        standings.judged(w, after(6, 0));
        assert_eq!(standings.lookup(&w), Ok((after(7, 0), false)));
        standings.judged(w, after(7, 3));
        assert_eq!(standings.lookup(&w).map(|(_, q)| q), Ok(true));
        // A later valid result lowers the rate, but quarantine stays, as in the database.
        standings.judged(w, after(20, 3));
        assert_eq!(standings.lookup(&w), Ok((after(20, 3), true)));
    }

    #[test]
    fn a_read_that_raced_a_judgment_is_not_kept() {
        let standings = Standings::default();
        let w = WalletAddress::from_bytes([0; 32]);
        let Err(seen) = standings.lookup(&w) else {
            panic!("unknown wallet found");
        };
        // The database read runs; meanwhile a judgment of the wallet commits.
        standings.judged(w, after(1, 1));
        standings.remember(w, seen, (Reliability::default(), false));
        assert!(standings.lookup(&w).is_err(), "a stale read was kept");
        // The next read, after that judgment, is kept.
        let Err(seen) = standings.lookup(&w) else {
            panic!("unknown wallet found");
        };
        standings.remember(w, seen, (after(1, 1), false));
        assert_eq!(standings.lookup(&w), Ok((after(1, 1), false)));
    }

    #[test]
    fn a_read_is_not_kept_when_the_map_forgot_a_judgment_made_during_it() {
        let standings = Standings::default();
        let w = WalletAddress::from_bytes([0; 32]);
        let Err(seen) = standings.lookup(&w) else {
            panic!("unknown wallet found");
        };
        standings.judged(w, after(1, 1));
        // Enough other wallets that the map starts over, forgetting that judgment.
        for i in 0..STANDINGS_CAP {
            let other = WalletAddress::from_bytes(
                u32::try_from(i + 1)
                    .expect("small")
                    .to_le_bytes()
                    .repeat(8)
                    .try_into()
                    .expect("32 bytes"),
            );
            standings.remember(other, seen, (Reliability::default(), false));
        }
        standings.remember(w, seen, (Reliability::default(), false));
        assert!(standings.lookup(&w).is_err(), "a stale read was kept");
    }
}
