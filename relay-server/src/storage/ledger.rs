//! The credit ledger in SQLite: signed, hash-chained entries (`ledger`), a balances cache
//! kept in step with them (`balances`), submitter accounts and transfer nonces.
//!
//! Every append runs inside the caller's transaction on the writer's connection (which
//! holds SQLite's write lock) and reads the previous hash there, so two appends can never
//! both follow the same entry: the chain cannot fork, and a rolled-back transaction
//! leaves neither entry nor balance behind. The `pub(crate)` functions take that
//! connection, so settling a unit can pay in the same transaction that judges it; the
//! `Storage` methods are one transaction each.

use super::sql::{params, Db, Dialect, Row, ToParam};
use super::{now_ms, Storage, StorageError};
use crate::ledger::{
    Account, AccountId, AuditError, ChainVerifier, Entry, EntryFields, EscrowRef, MicroCredits,
    MoneyError, Reason, Split, Summary, GENESIS_PREV_HASH,
};
use crate::lifecycle::billing::{decide_accrual, refund_due, AccrualRefused, EscrowStanding};
use sha2::{Digest, Sha256};
use starling_protocol::{JobId, Signature, WalletAddress, WalletKey, MAX_TRANSFER_VALIDITY_MS};
use std::collections::{BTreeMap, BTreeSet};

/// A wallet's signed order to move credit to another wallet (what
/// `POST /api/v1/transfers` carries), as [`WalletKey::sign_transfer`] signed it.
#[derive(Debug, Clone)]
pub struct SignedTransfer {
    /// The sending wallet, whose key signed.
    pub from: WalletAddress,
    /// The receiving wallet.
    pub to: WalletAddress,
    /// What moves.
    pub amount: MicroCredits,
    /// New for the sender: a nonce runs (or is refused for an overdraft) once.
    pub nonce: u64,
    /// Unix milliseconds after which the relay refuses it.
    pub expires_ms: u64,
    /// The sender's signature over all of the above and the relay's key.
    pub signature: Signature,
}

/// Credit owed to one payee for one job's verified units, not yet paid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accrual {
    /// The job whose escrow owes it.
    pub job: JobId,
    /// Who is owed.
    pub account: Account,
    /// Why ([`Reason::Pay`], [`Reason::SiteShare`] or [`Reason::PlatformFee`]).
    pub reason: Reason,
    /// How much.
    pub amount: MicroCredits,
    /// Units it is for.
    pub units: u64,
}

/// Longest `reference` an entry may carry (ids are 36 characters; this leaves room).
const MAX_REFERENCE: usize = 256;

/// Entries the audit reads per query.
const AUDIT_PAGE: i64 = 4096;

const ENTRY_COLUMNS: &str =
    "seq, time_ms, debit, credit, amount, reason, reference, prev_hash, hash, signature";

/// Why credit could not move. Nothing was written when one of these is returned, but for
/// a transfer's nonce, which an overdraft spends (see [`Storage::transfer`]).
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The debited account holds less than the amount.
    #[error("{account} holds {balance} credits, less than the {amount} requested")]
    Overdraft {
        /// The account that would go negative.
        account: Account,
        /// What it holds.
        balance: MicroCredits,
        /// What was asked of it.
        amount: MicroCredits,
    },
    /// An entry must move something.
    #[error("an entry must move a positive amount of credit")]
    ZeroAmount,
    /// Moving credit from an account to itself.
    #[error("an entry cannot move credit from {0} to itself")]
    SameAccount(Account),
    /// Amounts are stored as SQLite integers (i64).
    #[error("{0} credits is more than one entry can hold")]
    TooLarge(MicroCredits),
    /// References are ids, not documents.
    #[error("an entry's reference is at most {MAX_REFERENCE} bytes")]
    ReferenceTooLong,
    /// The transfer was not signed by the sending wallet (or names other fields).
    #[error(
        "the transfer's signature is not {from}'s over this recipient, amount, nonce and relay"
    )]
    ForgedTransfer {
        /// The claimed sender.
        from: WalletAddress,
    },
    /// The transfer's expiry has passed.
    #[error("the transfer expired at {expires_ms} (Unix ms; it is now {now_ms}): sign it again with a later expiry and a new nonce")]
    TransferExpired {
        /// When it stopped being valid.
        expires_ms: u64,
        /// The relay's clock.
        now_ms: u64,
    },
    /// The transfer would stay valid longer than a relay accepts.
    #[error("the transfer's expiry {expires_ms} (Unix ms) is more than {} hours after now ({now_ms}): sign it with an earlier expiry", MAX_TRANSFER_VALIDITY_MS / 3_600_000)]
    ExpiryTooFar {
        /// The expiry asked for.
        expires_ms: u64,
        /// The relay's clock.
        now_ms: u64,
    },
    /// The nonce was already used: the transfer was replayed.
    #[error("nonce {nonce} was already used by {wallet}: a signed transfer runs only once")]
    NonceReused {
        /// The sender.
        wallet: WalletAddress,
        /// The nonce.
        nonce: u64,
    },
    /// The split does not fit the wallets and site given to pay it.
    #[error("the split does not match who is paid: {0}")]
    SplitMismatch(String),
    /// A balance would overflow.
    #[error(transparent)]
    Money(#[from] MoneyError),
    /// The database failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<sqlx::Error> for LedgerError {
    fn from(e: sqlx::Error) -> Self {
        Self::Storage(StorageError::Db(e))
    }
}

impl From<StorageError> for AuditError {
    fn from(e: StorageError) -> Self {
        Self::Unreachable(Box::new(e))
    }
}

impl From<rusqlite::Error> for LedgerError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Storage(StorageError::Sqlite(e))
    }
}

/// Reads one stored entry; the error says which part does not parse.
fn entry_from_row(row: &dyn Row) -> Result<Entry, String> {
    let text = |col: &str| row.named::<String>(col).map_err(|e| e.to_string());
    let blob = |col: &str| row.named::<Vec<u8>>(col).map_err(|e| e.to_string());
    let hash32 = |col: &str| -> Result<[u8; 32], String> {
        blob(col)?
            .try_into()
            .map_err(|_| format!("{col} is not 32 bytes"))
    };
    let seq: i64 = row.named("seq").map_err(|e| e.to_string())?;
    let amount: i64 = row.named("amount").map_err(|e| e.to_string())?;
    let signature: [u8; 64] = blob("signature")?
        .try_into()
        .map_err(|_| "signature is not 64 bytes".to_string())?;
    Ok(Entry {
        seq: u64::try_from(seq).map_err(|_| format!("seq {seq} is negative"))?,
        time_ms: row.named("time_ms").map_err(|e| e.to_string())?,
        debit: text("debit")?.parse().map_err(|e| format!("debit: {e}"))?,
        credit: text("credit")?
            .parse()
            .map_err(|e| format!("credit: {e}"))?,
        amount: MicroCredits(
            u64::try_from(amount).map_err(|_| format!("amount {amount} is negative"))?,
        ),
        reason: text("reason")?
            .parse()
            .map_err(|e| format!("reason: {e}"))?,
        reference: text("reference")?,
        prev_hash: hash32("prev_hash")?,
        hash: hash32("hash")?,
        signature: Signature(signature),
    })
}

fn corrupt_entry(row: &dyn Row, why: String) -> StorageError {
    let seq: i64 = row.named("seq").unwrap_or(-1);
    StorageError::Corrupt(format!("ledger entry {seq}: {why}"))
}

/// An account's cached balance in micro-credits (0 if it never moved credit).
fn cached_balance(db: &dyn Db, account: &Account) -> Result<i64, StorageError> {
    let micro: Option<i64> = db.query_opt(
        "SELECT micro FROM balances WHERE account = ?1",
        params![account.to_string()],
        |r| r.get(0),
    )?;
    Ok(micro.unwrap_or(0))
}

fn set_balance(db: &dyn Db, account: &Account, micro: i64) -> Result<(), StorageError> {
    db.write(
        "INSERT INTO balances (account, micro) VALUES (?1, ?2)
         ON CONFLICT (account) DO UPDATE SET micro = ?2",
        params![account.to_string(), micro],
    )?;
    Ok(())
}

/// How often a relay sharing a PostgreSQL database reads the ledger's new entries (for
/// receipts): at most this late after the payout that made them.
const LEDGER_FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Most entries read from the ledger's tail at a time.
const LEDGER_FOLLOW_PAGE: i64 = 1_000;

/// The advisory lock that makes one relay at a time the ledger's writer ("LDGR").
const LEDGER_LOCK: i64 = 0x4C44_4752;

/// Holds the ledger for the rest of the caller's transaction, so that relays sharing a
/// PostgreSQL database append one chain (no two entries with one seq or one previous
/// hash), pay each accrual once and move balances read before they are written. SQLite's
/// one writer holds it already. Re-entrant: a transaction may ask again.
pub(super) fn lock_ledger(db: &dyn Db) -> Result<(), StorageError> {
    if db.dialect() == Dialect::Postgres {
        db.query_one(
            "SELECT pg_advisory_xact_lock(?1)",
            params![LEDGER_LOCK],
            |_| Ok(()),
        )?;
    }
    Ok(())
}

/// The next entry's seq and previous hash, from the chain's last entry.
fn chain_head(db: &dyn Db) -> Result<(u64, [u8; 32]), StorageError> {
    let last = db.query_opt(
        "SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1",
        params![],
        |r| Ok((r.get::<i64>(0)?, r.get::<Vec<u8>>(1)?)),
    )?;
    let Some((seq, hash)) = last else {
        return Ok((1, GENESIS_PREV_HASH));
    };
    let hash: [u8; 32] = hash
        .try_into()
        .map_err(|_| StorageError::Corrupt(format!("ledger entry {seq}: hash is not 32 bytes")))?;
    let next = u64::try_from(seq)
        .ok()
        .and_then(|s| s.checked_add(1))
        .ok_or_else(|| StorageError::Corrupt(format!("ledger seq {seq}")))?;
    Ok((next, hash))
}

/// Checks what any entry must be; returns the amount as stored (i64).
fn check_entry(
    debit: &Account,
    credit: &Account,
    amount: MicroCredits,
    reference: &str,
) -> Result<i64, LedgerError> {
    if amount.is_zero() {
        return Err(LedgerError::ZeroAmount);
    }
    if debit == credit {
        return Err(LedgerError::SameAccount(*debit));
    }
    if reference.len() > MAX_REFERENCE {
        return Err(LedgerError::ReferenceTooLong);
    }
    i64::try_from(amount.0).map_err(|_| LedgerError::TooLarge(amount))
}

/// `debit`'s balance once `micro` leaves it, refusing to take any account but
/// [`Account::Issuance`] below zero.
fn debited(
    debit: &Account,
    before: i64,
    micro: i64,
    amount: MicroCredits,
) -> Result<i64, LedgerError> {
    if !debit.may_go_negative() && before < micro {
        return Err(LedgerError::Overdraft {
            account: *debit,
            // A negative cached balance is corruption; report it as empty.
            balance: MicroCredits(u64::try_from(before).unwrap_or(0)),
            amount,
        });
    }
    Ok(before.checked_sub(micro).ok_or(MoneyError::Overflow)?)
}

/// An entry sealed, and what it leaves its two accounts holding.
struct Sealed {
    entry: Entry,
    debit_after: i64,
    credit_after: i64,
}

/// The entry at `head` (the next seq and the previous hash) moving `amount` from `debit`
/// (holding `debit_before`) to `credit` (holding `credit_before`), sealed with `key`:
/// decided without the database. Refuses what [`check_entry`] and [`debited`] refuse.
#[allow(clippy::too_many_arguments)]
fn seal_entry(
    key: &WalletKey,
    head: (u64, [u8; 32]),
    debit: &Account,
    debit_before: i64,
    credit: &Account,
    credit_before: i64,
    amount: MicroCredits,
    reason: Reason,
    reference: &str,
) -> Result<Sealed, LedgerError> {
    let micro = check_entry(debit, credit, amount, reference)?;
    let debit_after = debited(debit, debit_before, micro, amount)?;
    let credit_after = credit_before
        .checked_add(micro)
        .ok_or(MoneyError::Overflow)?;
    let (seq, prev_hash) = head;
    let entry = EntryFields {
        seq,
        time_ms: now_ms(),
        debit,
        credit,
        amount,
        reason,
        reference,
        prev_hash: &prev_hash,
    }
    .seal(key);
    Ok(Sealed {
        entry,
        debit_after,
        credit_after,
    })
}

/// The seq and previous hash of the entry after `entry`.
fn head_after(entry: &Entry) -> Result<(u64, [u8; 32]), MoneyError> {
    Ok((
        entry.seq.checked_add(1).ok_or(MoneyError::Overflow)?,
        entry.hash,
    ))
}

/// Stores a sealed entry (its balances are the caller's to write).
fn insert_entry(db: &dyn Db, entry: &Entry) -> Result<(), LedgerError> {
    let micro = i64::try_from(entry.amount.0).map_err(|_| LedgerError::TooLarge(entry.amount))?;
    db.write("INSERT INTO ledger (seq, time_ms, debit, credit, amount, reason, reference, prev_hash, hash, signature)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)", params![
        i64::try_from(entry.seq).map_err(|_| MoneyError::Overflow)?,
        entry.time_ms,
        entry.debit.to_string(),
        entry.credit.to_string(),
        micro,
        entry.reason.as_str(),
        entry.reference,
        &entry.prev_hash[..],
        &entry.hash[..],
        &entry.signature.0[..],
    ])?;
    Ok(())
}

/// Appends one entry moving `amount` from `debit` to `credit`, signed with the relay's
/// `key`, and updates both cached balances, all inside the caller's transaction. Refuses
/// to take any account but [`Account::Issuance`] below zero.
pub(crate) fn append(
    db: &dyn Db,
    key: &WalletKey,
    debit: &Account,
    credit: &Account,
    amount: MicroCredits,
    reason: Reason,
    reference: &str,
) -> Result<Entry, LedgerError> {
    lock_ledger(db)?;
    let sealed = seal_entry(
        key,
        chain_head(db)?,
        debit,
        cached_balance(db, debit)?,
        credit,
        cached_balance(db, credit)?,
        amount,
        reason,
        reference,
    )?;
    insert_entry(db, &sealed.entry)?;
    set_balance(db, credit, sealed.credit_after)?;
    set_balance(db, debit, sealed.debit_after)?;
    Ok(sealed.entry)
}

/// The account holding `job`'s escrow, and its name (what the job's entries give as
/// their reference): the public name the job was given at submission, or the job's id for
/// a job from before names (or none on record).
fn escrow_of(db: &dyn Db, job: JobId) -> Result<(Account, String), LedgerError> {
    let stored: Option<Option<String>> = db.query_opt(
        "SELECT escrow_account FROM jobs WHERE id = ?1",
        params![job.to_string()],
        |r| r.get(0),
    )?;
    let account = match stored.flatten() {
        Some(text) => text.parse().map_err(|_| {
            LedgerError::Storage(StorageError::Corrupt(format!("escrow account {text:?}")))
        })?,
        None => Account::Escrow(EscrowRef::Job(job)),
    };
    let name = match account {
        Account::Escrow(name) => name.to_string(),
        other => {
            return Err(LedgerError::Storage(StorageError::Corrupt(format!(
                "job {job} keeps its escrow in {other}"
            ))))
        }
    };
    Ok((account, name))
}

/// Sets `amount` of a submitter's credit aside for `job` (submitter → escrow). Fails with
/// [`LedgerError::Overdraft`] when the submitter cannot cover it.
pub(crate) fn escrow_job(
    db: &dyn Db,
    key: &WalletKey,
    submitter: AccountId,
    job: JobId,
    amount: MicroCredits,
) -> Result<Entry, LedgerError> {
    let (escrow, name) = escrow_of(db, job)?;
    append(
        db,
        key,
        &Account::Submitter(submitter),
        &escrow,
        amount,
        Reason::Escrow,
        &name,
    )
}

/// SQL for a job's escrow standing, as two columns (`held`, `owed`), given the text
/// expressions of its escrow account and of its id; [`read_escrow_standing`] and the
/// result lookup share it.
pub(crate) fn escrow_standing_columns(escrow: &str, job: &str) -> String {
    format!(
        "COALESCE((SELECT micro FROM balances WHERE account = {escrow}), 0),
         COALESCE((SELECT micro FROM accrued_jobs WHERE accrued_jobs.job_id = {job}), 0)"
    )
}

/// What `job`'s escrow holds and owes.
fn read_escrow_standing(db: &dyn Db, job: JobId) -> Result<EscrowStanding, LedgerError> {
    // `'escrow:' || id` is [`EscrowRef::Job`]'s account, as `escrow_of` falls back to.
    let sql = format!(
        "SELECT {}",
        escrow_standing_columns(
            "COALESCE((SELECT escrow_account FROM jobs WHERE id = ?1), 'escrow:' || ?1)",
            "?1"
        )
    );
    Ok(db.query_one(&sql, params![job.to_string()], |r| {
        Ok(EscrowStanding {
            held: r.get(0)?,
            owed: r.get(1)?,
        })
    })?)
}

/// Credits one settled unit's price to its payees without writing the ledger: each of
/// `wallets` its share, the `site` its share, the platform the rest, as
/// [`split_unit_price`](crate::ledger::split_unit_price) computed, added to their
/// [accruals](pay_out) for `job`, as [`decide_accrual`] decides. Zero parts add nothing.
/// Fails with [`LedgerError::Overdraft`] (on the escrow) when the job's escrow, less what
/// it already owes, cannot cover the price; the caller's transaction then rolls back.
///
/// `escrow` is what the job's escrow holds and already owes, read in the same transaction
/// (a settling result reads it with everything else it needs); `None` reads it here.
///
/// Appending signed entries per unit cost two signatures and nine statements a unit and
/// grew the ledger with every unit; accruals cost two statements and are paid out in
/// one entry per payee and job.
pub(crate) fn accrue_unit(
    db: &dyn Db,
    job: JobId,
    split: &Split,
    wallets: &[WalletAddress],
    site: Option<&WalletAddress>,
    escrow: Option<EscrowStanding>,
) -> Result<(), LedgerError> {
    let standing = match escrow {
        Some(standing) => standing,
        None => read_escrow_standing(db, job)?,
    };
    let accrual = match decide_accrual(split, wallets, site, standing) {
        Ok(Some(accrual)) => accrual,
        Ok(None) => return Ok(()),
        Err(AccrualRefused::Overdraft { free, price }) => {
            return Err(LedgerError::Overdraft {
                account: escrow_of(db, job)?.0,
                balance: free,
                amount: price,
            })
        }
        Err(AccrualRefused::SplitMismatch(why)) => return Err(LedgerError::SplitMismatch(why)),
        Err(AccrualRefused::TooLarge(amount)) => return Err(LedgerError::TooLarge(amount)),
    };
    let price = i64::try_from(accrual.price.0).map_err(|_| LedgerError::TooLarge(accrual.price))?;
    let job_id = job.to_string();
    // No `RETURNING` here: SQLite buffers returned rows in a temporary b-tree, which cost
    // more than the statement's own write.
    db.write(
        "INSERT INTO accrued_jobs (job_id, micro) VALUES (?1, ?2)
         ON CONFLICT (job_id) DO UPDATE SET micro = accrued_jobs.micro + excluded.micro",
        params![job_id, price],
    )?;
    let mut parts: Vec<(String, &'static str, i64)> = Vec::with_capacity(accrual.parts.len());
    for part in &accrual.parts {
        let micro = i64::try_from(part.amount.0).map_err(|_| LedgerError::TooLarge(part.amount))?;
        parts.push((part.account.to_string(), part.reason.as_str(), micro));
    }
    if parts.is_empty() {
        return Ok(());
    }
    // All of a unit's parts in one statement (a unit has at most 5 volunteers, a site and
    // the platform, so there are few variants of it to cache).
    let rows: Vec<String> = (0..parts.len())
        .map(|i| format!("(?1, ?{}, ?{}, ?{}, 1)", 3 * i + 2, 3 * i + 3, 3 * i + 4))
        .collect();
    let sql = format!(
        "INSERT INTO accruals (job_id, account, reason, micro, units) VALUES {}
         ON CONFLICT (job_id, account, reason)
         DO UPDATE SET micro = accruals.micro + excluded.micro, units = accruals.units + 1",
        rows.join(", ")
    );
    let mut values: Vec<&dyn ToParam> = Vec::with_capacity(1 + 3 * parts.len());
    values.push(&job_id);
    for (account, reason, micro) in &parts {
        values.push(account);
        values.push(reason);
        values.push(micro);
    }
    db.write(&sql, &values)?;
    Ok(())
}

/// Most accrual rows one periodic payout transaction pays. Each row is one entry signed
/// on the writer thread (about 20 µs), and a bounded batch bounds how long a payout holds
/// up everyone else's writes; [`Storage::pay_out_all`] runs batches until none is full.
pub(crate) const PAYOUT_BATCH: i64 = 256;

/// The accruals [`pay_out`] pays (`?1`: the job or NULL for all, `?2`: how many rows).
const PAYABLE: &str = "SELECT job_id, account, reason, micro FROM accruals
     WHERE job_id = ?1 OR ?1 IS NULL ORDER BY job_id, reason, account LIMIT ?2";

/// One accrual row a payout pays, as stored (its text keys the row's deletion) and read.
struct Payable {
    job_id: String,
    account_text: String,
    reason_text: String,
    job: JobId,
    account: Account,
    reason: Reason,
    micro: i64,
}

/// Pays out what verified work earned and the ledger does not hold yet: one signed entry
/// per accrual row (escrow → payee, the escrow's name as reference), for `job` or for every
/// job, at most `limit` rows (all of them without one), and forgets what it paid.
/// Returns the entries, for receipts.
///
/// Loads every row, escrow, balance and the chain's head first, decides and seals every
/// entry in memory, then writes: a payout to thousands of wallets reads the database a
/// fixed number of times per [`BALANCES_AT_ONCE`] accounts, where reading each entry's
/// balances and head as [`append`] does made it five round trips an entry on PostgreSQL,
/// all inside the writer's turn.
pub(crate) fn pay_out(
    db: &dyn Db,
    key: &WalletKey,
    job: Option<JobId>,
    limit: Option<i64>,
) -> Result<Vec<Entry>, LedgerError> {
    // Load.
    lock_ledger(db)?;
    let rows = payable(db, job, limit)?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let mut escrows: BTreeMap<JobId, (Account, String)> = BTreeMap::new();
    for row in &rows {
        if let std::collections::btree_map::Entry::Vacant(escrow) = escrows.entry(row.job) {
            escrow.insert(escrow_of(db, row.job)?);
        }
    }
    let accounts: Vec<Account> = rows
        .iter()
        .map(|row| row.account)
        .chain(escrows.values().map(|(escrow, _)| *escrow))
        .collect();
    let mut balances = cached_balances(db, &accounts)?;
    let mut head = chain_head(db)?;
    // Decide: the entries in the rows' order, each from the balances the ones before it
    // left, as one `append` after another would.
    let mut entries: Vec<Entry> = Vec::with_capacity(rows.len());
    let mut owed_less: BTreeMap<&str, i64> = BTreeMap::new();
    let mut moved: BTreeSet<Account> = BTreeSet::new();
    for row in &rows {
        let amount = MicroCredits(u64::try_from(row.micro).map_err(|_| MoneyError::Overflow)?);
        if !amount.is_zero() {
            let (escrow, name) = &escrows[&row.job];
            let sealed = seal_entry(
                key,
                head,
                escrow,
                balances.get(escrow).copied().unwrap_or(0),
                &row.account,
                balances.get(&row.account).copied().unwrap_or(0),
                amount,
                row.reason,
                name,
            )?;
            balances.insert(*escrow, sealed.debit_after);
            balances.insert(row.account, sealed.credit_after);
            moved.insert(*escrow);
            moved.insert(row.account);
            head = head_after(&sealed.entry)?;
            entries.push(sealed.entry);
        }
        let owed = owed_less.entry(&row.job_id).or_default();
        *owed = owed.checked_add(row.micro).ok_or(MoneyError::Overflow)?;
    }
    // Apply: writes only, which PostgreSQL's writer sends together.
    for entry in &entries {
        insert_entry(db, entry)?;
    }
    for account in &moved {
        set_balance(db, account, balances.get(account).copied().unwrap_or(0))?;
    }
    for row in &rows {
        db.write(
            "DELETE FROM accruals WHERE job_id = ?1 AND account = ?2 AND reason = ?3",
            params![&row.job_id, &row.account_text, &row.reason_text],
        )?;
    }
    for (job_id, micro) in owed_less {
        db.write(
            "UPDATE accrued_jobs SET micro = micro - ?2 WHERE job_id = ?1",
            params![job_id, micro],
        )?;
    }
    db.write(
        "DELETE FROM accrued_jobs WHERE micro <= 0 AND (job_id = ?1 OR ?1 IS NULL)",
        params![job.map(|j| j.to_string())],
    )?;
    Ok(entries)
}

/// The accrual rows [`pay_out`] pays, locked on PostgreSQL.
fn payable(
    db: &dyn Db,
    job: Option<JobId>,
    limit: Option<i64>,
) -> Result<Vec<Payable>, LedgerError> {
    let filter = job.map(|j| j.to_string());
    // SQLite reads a negative LIMIT as none; PostgreSQL a NULL one.
    let limit = match (db.dialect(), limit) {
        (_, Some(limit)) => Some(limit),
        (Dialect::Sqlite, None) => Some(-1),
        (Dialect::Postgres, None) => None,
    };
    // Locked on PostgreSQL: another relay settling a unit of the job adds to these rows,
    // and an addition between this read and the rows' deletion would be deleted unpaid;
    // it waits instead, and then starts a new row.
    // In bytes' order (as a group of results adds to them, `Counters`), whatever the
    // database's collation: both lock them, and then what jobs owe.
    let select = match db.dialect() {
        Dialect::Sqlite => PAYABLE,
        Dialect::Postgres => {
            "SELECT job_id, account, reason, micro FROM accruals
             WHERE job_id = ?1 OR ?1 IS NULL
             ORDER BY job_id COLLATE \"C\", reason COLLATE \"C\", account COLLATE \"C\"
             LIMIT ?2 FOR UPDATE"
        }
    };
    let stored: Vec<(String, String, String, i64)> =
        db.query_all(select, params![filter, limit], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?;
    let corrupt = |what: String| LedgerError::Storage(StorageError::Corrupt(what));
    stored
        .into_iter()
        .map(|(job_id, account_text, reason_text, micro)| {
            Ok(Payable {
                job: job_id
                    .parse()
                    .map_err(|_| corrupt(format!("accrual for job {job_id:?}")))?,
                account: account_text
                    .parse()
                    .map_err(|_| corrupt(format!("accrual to {account_text:?}")))?,
                reason: reason_text
                    .parse()
                    .map_err(|_| corrupt(format!("accrual for {reason_text:?}")))?,
                job_id,
                account_text,
                reason_text,
                micro,
            })
        })
        .collect()
}

/// Accounts whose balances one query reads: a fixed shape (unused places repeat an
/// account), so there is one statement to prepare however many accounts a payout pays.
const BALANCES_AT_ONCE: usize = 64;

/// The cached balances of `accounts`; an account that never moved credit has none.
fn cached_balances(
    db: &dyn Db,
    accounts: &[Account],
) -> Result<BTreeMap<Account, i64>, StorageError> {
    let texts: Vec<String> = accounts
        .iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(Account::to_string)
        .collect();
    let places: Vec<String> = (1..=BALANCES_AT_ONCE).map(|i| format!("?{i}")).collect();
    let sql = format!(
        "SELECT account, micro FROM balances WHERE account IN ({})",
        places.join(", ")
    );
    let mut balances = BTreeMap::new();
    for chunk in texts.chunks(BALANCES_AT_ONCE) {
        let Some(last) = chunk.last() else {
            continue;
        };
        let bound: Vec<&dyn ToParam> = (0..BALANCES_AT_ONCE)
            .map(|i| chunk.get(i).unwrap_or(last) as &dyn ToParam)
            .collect();
        for (text, micro) in db.query_all(&sql, &bound, |r| {
            Ok((r.get::<String>(0)?, r.get::<i64>(1)?))
        })? {
            let account: Account = text
                .parse()
                .map_err(|_| StorageError::Corrupt(format!("balance of {text:?}")))?;
            balances.insert(account, micro);
        }
    }
    Ok(balances)
}

/// What `job`'s escrow owes in accruals not paid out yet.
fn owed(db: &dyn Db, job: JobId) -> Result<i64, StorageError> {
    let micro: Option<i64> = db.query_opt(
        "SELECT micro FROM accrued_jobs WHERE job_id = ?1",
        params![job.to_string()],
        |r| r.get(0),
    )?;
    Ok(micro.unwrap_or(0))
}

/// Returns whatever is left in `job`'s escrow, less what it owes in accruals, to the
/// submitter (escrow → submitter); `None` when nothing is left.
pub(crate) fn refund_job(
    db: &dyn Db,
    key: &WalletKey,
    job: JobId,
    submitter: AccountId,
) -> Result<Option<Entry>, LedgerError> {
    lock_ledger(db)?;
    let (escrow, name) = escrow_of(db, job)?;
    // What settled units accrued stays for their payout: only the rest goes back.
    let Some(amount) = refund_due(cached_balance(db, &escrow)?, owed(db, job)?)? else {
        return Ok(None);
    };
    let entry = append(
        db,
        key,
        &escrow,
        &Account::Submitter(submitter),
        amount,
        Reason::Refund,
        &name,
    )?;
    Ok(Some(entry))
}

/// The text of a new API key: `stk_` and 32 random bytes in hex.
fn new_api_key() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("stk_{}", hex::encode(bytes))
}

/// What the database keeps of an API key: its SHA-256, so a copy of the database does not
/// hand out working keys.
fn api_key_hash(api_key: &str) -> [u8; 32] {
    Sha256::digest(api_key.as_bytes()).into()
}

impl Storage {
    /// Creates a submitter account with `balance` credits issued to it (issuance →
    /// submitter) and returns its id and its API key, the only time the key is shown.
    pub async fn create_account(
        &self,
        key: &WalletKey,
        balance: MicroCredits,
        label: Option<&str>,
    ) -> Result<(AccountId, String), LedgerError> {
        let id = AccountId::new();
        let api_key = new_api_key();
        let hash = api_key_hash(&api_key);
        let label = label.map(str::to_owned);
        let key = key.clone();
        self.writer
            .exec(move |db| -> Result<(), LedgerError> {
                db.write(
                    "INSERT INTO accounts (id, api_key_hash, created_ms, label)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![id.to_string(), &hash[..], now_ms(), label],
                )?;
                if !balance.is_zero() {
                    append(
                        db,
                        &key,
                        &Account::Issuance,
                        &Account::Submitter(id),
                        balance,
                        Reason::Issue,
                        &id.to_string(),
                    )?;
                }
                Ok(())
            })
            .await?;
        Ok((id, api_key))
    }

    /// The account an API key belongs to, if any. Looking up by hash leaks nothing useful
    /// through timing: matching a prefix of a SHA-256 says nothing about the key.
    pub async fn account_by_api_key(
        &self,
        api_key: &str,
    ) -> Result<Option<AccountId>, StorageError> {
        let id: Option<String> = self
            .reads
            .read({
                let p0 = api_key_hash(api_key).to_vec();
                move |db| {
                    db.query_opt(
                        "SELECT id FROM accounts WHERE api_key_hash = ?",
                        params![p0],
                        |r| r.get(0),
                    )
                }
            })
            .await?;
        id.map(|id| super::parse_id(&id)).transpose()
    }

    /// An account's balance from the cache. [`Account::Issuance`], the one account that is
    /// never positive, gives the credit issued so far (minus its balance).
    pub async fn balance(&self, account: &Account) -> Result<MicroCredits, StorageError> {
        let micro: Option<i64> = self
            .reads
            .read({
                let p0 = account.to_string();
                move |db| {
                    db.query_opt(
                        "SELECT micro FROM balances WHERE account = ?",
                        params![p0],
                        |r| r.get(0),
                    )
                }
            })
            .await?;
        let micro = micro.unwrap_or(0);
        let magnitude = if account.may_go_negative() {
            micro.checked_neg()
        } else {
            Some(micro)
        };
        magnitude
            .and_then(|m| u64::try_from(m).ok())
            .map(MicroCredits)
            .ok_or_else(|| StorageError::Corrupt(format!("balance of {account} is {micro}")))
    }

    /// Every cached balance in micro-credits, signed (issuance is negative).
    pub async fn balances(&self) -> Result<BTreeMap<Account, i128>, StorageError> {
        self.reads
            .read(|db| {
                db.query_all("SELECT account, micro FROM balances", params![], |row| {
                    let account: String = row.get(0)?;
                    let micro: i64 = row.get(1)?;
                    let account = account
                        .parse()
                        .map_err(|e| StorageError::Corrupt(format!("balances: {e}")))?;
                    Ok((account, i128::from(micro)))
                })
            })
            .await
            .map(|rows| rows.into_iter().collect())
    }

    /// Announces, on [`Storage::ledger_feed`], every entry appended to the ledger from now
    /// on by any relay sharing the database, read from its tail every
    /// [`LEDGER_FOLLOW_EVERY`]: a volunteer's receipt comes from whichever relay paid it.
    /// Ends when the last clone of this storage is dropped.
    pub(super) async fn follow_ledger(&self) -> Result<(), StorageError> {
        let mut after = self.ledger_tip().await?;
        let reads = self.reads.clone();
        let feed = self.feed.clone();
        let alive = std::sync::Arc::downgrade(&self.alive);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(LEDGER_FOLLOW_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if alive.strong_count() == 0 {
                    return;
                }
                let from = i64::try_from(after).unwrap_or(i64::MAX);
                let page = reads
                    .read(move |db| {
                        db.query_all(
                            &format!(
                                "SELECT {ENTRY_COLUMNS} FROM ledger WHERE seq > ?1 ORDER BY seq LIMIT ?2"
                            ),
                            params![from, LEDGER_FOLLOW_PAGE],
                            |row| entry_from_row(row).map_err(|why| corrupt_entry(row, why)),
                        )
                    })
                    .await;
                match page {
                    Ok(entries) => {
                        for entry in entries {
                            after = after.max(entry.seq);
                            // Nobody listening is fine: receipts are a courtesy.
                            let _ = feed.send(entry);
                        }
                    }
                    Err(e) => tracing::warn!("reading the ledger's tail failed: {e}"),
                }
            }
        });
        Ok(())
    }

    /// Up to `limit` entries after `after_seq` (0 for the first page), oldest first.
    pub async fn ledger_page(
        &self,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<Entry>, StorageError> {
        let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
        self.reads
            .read(move |db| {
                db.query_all(
                    &format!(
                        "SELECT {ENTRY_COLUMNS} FROM ledger WHERE seq > ?1 ORDER BY seq LIMIT ?2"
                    ),
                    params![after, i64::from(limit)],
                    |row| entry_from_row(row).map_err(|why| corrupt_entry(row, why)),
                )
            })
            .await
    }

    /// Up to `limit` entries after `after_seq` that debit or credit `account`, oldest
    /// first.
    pub async fn account_history(
        &self,
        account: &Account,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<Entry>, StorageError> {
        let account = account.to_string();
        let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
        self.reads
            .read(move |db| {
                db.query_all(
                    &format!(
                        "SELECT {ENTRY_COLUMNS} FROM ledger WHERE (debit = ?1 OR credit = ?1) AND seq > ?2
                         ORDER BY seq LIMIT ?3"
                    ),
                    params![account, after, i64::from(limit)],
                    |row| entry_from_row(row).map_err(|why| corrupt_entry(row, why)),
                )
            })
            .await
    }

    /// Runs `transfer` on its sender's signature (see [`WalletKey::sign_transfer`]; `key`
    /// is the relay's ledger key, whose address the signature names). An expired
    /// transfer, one valid for longer than [`MAX_TRANSFER_VALIDITY_MS`], a forged
    /// signature or a reused nonce is refused and changes nothing. An overdraft is
    /// refused too, but spends the nonce: the same signed transfer can never run later,
    /// once the wallet holds enough (whoever saw it refused could replay it then).
    pub async fn transfer(
        &self,
        key: &WalletKey,
        transfer: &SignedTransfer,
    ) -> Result<Entry, LedgerError> {
        let SignedTransfer {
            from,
            to,
            amount,
            nonce,
            expires_ms,
            ref signature,
        } = *transfer;
        // The clock is never before 1970; if it were, every transfer looks expired.
        let now_ms = u64::try_from(now_ms()).unwrap_or(0);
        if expires_ms <= now_ms {
            return Err(LedgerError::TransferExpired { expires_ms, now_ms });
        }
        if expires_ms - now_ms > MAX_TRANSFER_VALIDITY_MS {
            return Err(LedgerError::ExpiryTooFar { expires_ms, now_ms });
        }
        from.verify_transfer(&key.address(), &to, amount.0, nonce, expires_ms, signature)
            .map_err(|_| LedgerError::ForgedTransfer { from })?;
        let key = key.clone();
        self.writer
            .exec(move |db| {
                // The same 64 bits as an i64: SQLite integers are signed.
                let stored_nonce = i64::from_be_bytes(nonce.to_be_bytes());
                let fresh = db.execute(
                    "INSERT INTO transfer_nonces (wallet, nonce) VALUES (?1, ?2)
                         ON CONFLICT DO NOTHING",
                    params![from.to_string(), stored_nonce],
                )?;
                if fresh == 0 {
                    return Err(LedgerError::NonceReused {
                        wallet: from,
                        nonce,
                    });
                }
                match append(
                    db,
                    &key,
                    &Account::Wallet(from),
                    &Account::Wallet(to),
                    amount,
                    Reason::Transfer,
                    &format!("nonce:{nonce}"),
                ) {
                    // `Ok` outside so the nonce's row commits; `append` wrote nothing
                    // else (it checks the balance before it writes).
                    Err(overdraft @ LedgerError::Overdraft { .. }) => Ok(Err(overdraft)),
                    done => done.map(Ok),
                }
            })
            .await?
    }

    /// Checks the whole ledger against the relay key `relay` (as
    /// [`verify_chain`](crate::ledger::verify_chain) does, page by page) and the
    /// balances cache against what the entries sum to, in one consistent read.
    pub async fn audit(&self, relay: &WalletAddress) -> Result<Summary, AuditError> {
        self.audit_in_pages(relay, AUDIT_PAGE).await
    }

    /// [`Self::audit`], reading `page` entries per query.
    async fn audit_in_pages(
        &self,
        relay: &WalletAddress,
        page: i64,
    ) -> Result<Summary, AuditError> {
        // One read transaction: the entries and the cache are the same snapshot even
        // while the relay keeps appending.
        let relay = *relay;
        self.reads
            .read(move |db| {
                let begin = match db.dialect() {
                    Dialect::Sqlite => "BEGIN",
                    Dialect::Postgres => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
                };
                db.write(begin, params![])?;
                let audited = audit_snapshot(db, relay, page);
                db.write("COMMIT", params![])?;
                audited
            })
            .await
    }
}

/// [`Storage::audit`] inside a read transaction.
fn audit_snapshot(db: &dyn Db, relay: WalletAddress, page: i64) -> Result<Summary, AuditError> {
    {
        let mut verifier = ChainVerifier::new(relay);
        // Pages keyed by the stored seq; the verifier checks that they are contiguous.
        let mut after: i64 = 0;
        loop {
            let mut read = 0;
            let mut failed = None;
            let from = after;
            db.for_each_row(
                &format!("SELECT {ENTRY_COLUMNS} FROM ledger WHERE seq > ?1 ORDER BY seq LIMIT ?2"),
                params![from, page],
                &mut |row| {
                    read += 1;
                    after = row.named("seq")?;
                    let pushed = entry_from_row(row)
                        .map_err(|why| AuditError::Unreadable { seq: after, why })
                        .and_then(|entry| verifier.push(&entry));
                    if let Err(e) = pushed {
                        failed.get_or_insert(e);
                    }
                    Ok(())
                },
            )?;
            if let Some(e) = failed {
                return Err(e);
            }
            if read < page {
                break;
            }
        }
        let cache = db.query_all(
            "SELECT account, micro FROM balances ORDER BY account",
            params![],
            |row| Ok((row.get::<String>(0)?, row.get::<i64>(1)?)),
        )?;
        let summary = verifier.finish()?;
        let mut cached = BTreeMap::new();
        for (text, micro) in cache {
            let account: Account = text.parse().map_err(|e| {
                AuditError::from(StorageError::Corrupt(format!("balances cache: {e}")))
            })?;
            cached.insert(account, i128::from(micro));
        }
        // Every account either side knows must agree; one missing on a side counts as 0.
        for account in cached.keys().chain(summary.balances.keys()) {
            let (cached, ledger) = (
                cached.get(account).copied().unwrap_or(0),
                summary.balance(account),
            );
            if cached != ledger {
                return Err(AuditError::CacheMismatch {
                    account: *account,
                    cached,
                    ledger,
                });
            }
        }
        Ok(summary)
    }
}

impl Storage {
    /// [`escrow_job`] in a transaction of its own.
    pub async fn escrow_job(
        &self,
        key: &WalletKey,
        submitter: AccountId,
        job: JobId,
        amount: MicroCredits,
    ) -> Result<Entry, LedgerError> {
        let key = key.clone();
        self.writer
            .exec(move |db| escrow_job(db, &key, submitter, job, amount))
            .await
    }

    /// [`accrue_unit`] in a transaction of its own.
    pub async fn accrue_unit(
        &self,
        job: JobId,
        split: &Split,
        wallets: &[WalletAddress],
        site: Option<&WalletAddress>,
    ) -> Result<(), LedgerError> {
        let split = split.clone();
        let wallets = wallets.to_vec();
        let site = site.copied();
        self.writer
            .exec(move |db| accrue_unit(db, job, &split, &wallets, site.as_ref(), None))
            .await
    }

    /// [`pay_out`] of one job's accruals, signed with `key`, in a transaction of its own.
    pub async fn pay_out_job(
        &self,
        key: &WalletKey,
        job: JobId,
    ) -> Result<Vec<Entry>, LedgerError> {
        let key = key.clone();
        let entries = self
            .writer
            .exec(move |db| pay_out(db, &key, Some(job), None))
            .await?;
        self.announce(&entries);
        Ok(entries)
    }

    /// Pays out every job's accruals (see [`pay_out`]), [`PAYOUT_BATCH`] rows per
    /// transaction, and sends the entries to [`Storage::ledger_feed`]. Without billing
    /// there is nothing to pay.
    pub async fn pay_out_all(&self) -> Result<Vec<Entry>, LedgerError> {
        let Some(billing) = self.billing.clone() else {
            return Ok(Vec::new());
        };
        let mut paid = Vec::new();
        loop {
            let key = billing.key.clone();
            // Relays pay out while others judge and draw: the rows it shares with them
            // (accruals, what jobs owe) are locked in their order.
            let batch = self
                .writer
                .exec_sharing_turn(move |db| pay_out(db, &key, None, Some(PAYOUT_BATCH)))
                .await?;
            self.announce(&batch);
            let full = batch.len() as i64 >= PAYOUT_BATCH;
            paid.extend(batch);
            if !full {
                return Ok(paid);
            }
        }
    }

    /// What verified work has earned and no payout has paid yet, per job, payee and
    /// reason.
    pub async fn accruals(&self) -> Result<Vec<Accrual>, StorageError> {
        self.reads
            .read(|db| {
                db.query_all(
                    "SELECT job_id, account, reason, micro, units FROM accruals ORDER BY job_id, account",
                    params![],
                    |r| {
                        let corrupt = |what: &str| StorageError::Corrupt(format!("accrual {what}"));
                        Ok(Accrual {
                            job: r.get::<String>(0)?.parse().map_err(|_| corrupt("job"))?,
                            account: r.get::<String>(1)?.parse().map_err(|_| corrupt("account"))?,
                            reason: r.get::<String>(2)?.parse().map_err(|_| corrupt("reason"))?,
                            amount: MicroCredits(
                                u64::try_from(r.get::<i64>(3)?).map_err(|_| corrupt("amount"))?,
                            ),
                            units: u64::try_from(r.get::<i64>(4)?).map_err(|_| corrupt("units"))?,
                        })
                    },
                )
            })
            .await
    }

    /// [`refund_job`] in a transaction of its own.
    pub async fn refund_job(
        &self,
        key: &WalletKey,
        job: JobId,
        submitter: AccountId,
    ) -> Result<Option<Entry>, LedgerError> {
        let key = key.clone();
        self.writer
            .exec(move |db| refund_job(db, &key, job, submitter))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Appends `n` issues to one submitter inside one transaction, as settling code does.
    async fn fill(storage: &Storage, key: &WalletKey, n: u64) -> Result<(), LedgerError> {
        let key = key.clone();
        storage
            .writer
            .exec(move |db| {
                let submitter = Account::Submitter(AccountId(uuid::Uuid::from_u128(1)));
                for i in 0..n {
                    let entry = append(
                        db,
                        &key,
                        &Account::Issuance,
                        &submitter,
                        MicroCredits(i + 1),
                        Reason::Issue,
                        "fill",
                    )?;
                    assert_eq!(entry.seq, i + 1);
                }
                Ok(())
            })
            .await
    }

    #[tokio::test]
    async fn the_audit_reads_the_ledger_in_pages() -> Result<(), Box<dyn std::error::Error>> {
        let dir = std::env::temp_dir().join(format!("starling-audit-{}", uuid::Uuid::new_v4()));
        let storage = Storage::open(&dir).await?;
        let key = WalletKey::from_seed([4; 32]);
        fill(&storage, &key, 10).await?;
        // 10 entries in pages of 3 (a short last page) and of 5 (an empty last page).
        for page in [1, 3, 5, 10, 4096] {
            let summary = storage.audit_in_pages(&key.address(), page).await?;
            assert_eq!(summary.entries, 10, "page {page}");
            assert_eq!(summary.issued, MicroCredits(55));
        }
        storage
            .writer
            .exec(|db| db.execute("DELETE FROM ledger WHERE seq = 4", params![]))
            .await?;
        let err = storage.audit_in_pages(&key.address(), 3).await.err();
        assert!(
            matches!(
                err,
                Some(AuditError::Sequence {
                    expected: 4,
                    found: 5
                })
            ),
            "{err:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }

    #[tokio::test]
    async fn a_rolled_back_transaction_leaves_no_entry() -> Result<(), Box<dyn std::error::Error>> {
        let dir = std::env::temp_dir().join(format!("starling-rollback-{}", uuid::Uuid::new_v4()));
        let storage = Storage::open(&dir).await?;
        let key = WalletKey::from_seed([4; 32]);
        let dropping = key.clone();
        let failed = storage
            .writer
            .exec(move |db| {
                append(
                    db,
                    &dropping,
                    &Account::Issuance,
                    &Account::Platform,
                    MicroCredits(5),
                    Reason::Issue,
                    "dropped",
                )?;
                // Later work in the same transaction fails, so the append goes too.
                Err::<(), _>(LedgerError::ZeroAmount)
            })
            .await;
        assert!(matches!(failed, Err(LedgerError::ZeroAmount)), "{failed:?}");
        assert_eq!(storage.audit(&key.address()).await?.entries, 0);
        assert_eq!(
            storage.balance(&Account::Platform).await?,
            MicroCredits::ZERO
        );
        fill(&storage, &key, 1).await?;
        assert_eq!(storage.ledger_page(0, 10).await?.len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
