//! The credit ledger in SQLite: signed, hash-chained entries (`ledger`), a balances cache
//! kept in step with them (`balances`), submitter accounts and transfer nonces.
//!
//! Every append runs inside the caller's `BEGIN IMMEDIATE` transaction and reads the
//! previous hash there, so two appends can never both follow the same entry: the chain
//! cannot fork, and a rolled-back transaction leaves neither entry nor balance behind.
//! The `pub(crate)` functions take that transaction, so settling a unit can pay in the
//! same transaction that judges it; the `Storage` methods are one transaction each.

use super::{now_ms, Storage, StorageError, Tx};
use crate::ledger::{
    Account, AccountId, AuditError, ChainVerifier, Entry, EntryFields, MicroCredits, MoneyError,
    Reason, Split, Summary, GENESIS_PREV_HASH,
};
use sha2::{Digest, Sha256};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;
use starling_protocol::{JobId, Signature, WalletAddress, WalletKey};
use std::collections::BTreeMap;

/// Longest `reference` an entry may carry (ids are 36 characters; this leaves room).
const MAX_REFERENCE: usize = 256;

/// Entries the audit reads per query.
const AUDIT_PAGE: i64 = 4096;

const ENTRY_COLUMNS: &str =
    "seq, time_ms, debit, credit, amount, reason, reference, prev_hash, hash, signature";

/// Why credit could not move. Nothing was written when one of these is returned.
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

/// Reads one stored entry; the error says which part does not parse.
fn entry_from_row(row: &SqliteRow) -> Result<Entry, String> {
    let text = |col: &str| row.try_get::<String, _>(col).map_err(|e| e.to_string());
    let blob = |col: &str| row.try_get::<Vec<u8>, _>(col).map_err(|e| e.to_string());
    let hash32 = |col: &str| -> Result<[u8; 32], String> {
        blob(col)?
            .try_into()
            .map_err(|_| format!("{col} is not 32 bytes"))
    };
    let seq: i64 = row.try_get("seq").map_err(|e| e.to_string())?;
    let amount: i64 = row.try_get("amount").map_err(|e| e.to_string())?;
    let signature: [u8; 64] = blob("signature")?
        .try_into()
        .map_err(|_| "signature is not 64 bytes".to_string())?;
    Ok(Entry {
        seq: u64::try_from(seq).map_err(|_| format!("seq {seq} is negative"))?,
        time_ms: row.try_get("time_ms").map_err(|e| e.to_string())?,
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

fn corrupt_entry(row: &SqliteRow, why: String) -> StorageError {
    let seq: i64 = row.try_get("seq").unwrap_or(-1);
    StorageError::Corrupt(format!("ledger entry {seq}: {why}"))
}

/// An account's cached balance in micro-credits (0 if it never moved credit).
async fn cached_balance(tx: &mut Tx<'_>, account: &Account) -> Result<i64, StorageError> {
    let micro: Option<i64> = sqlx::query_scalar("SELECT micro FROM balances WHERE account = ?")
        .bind(account.to_string())
        .fetch_optional(&mut **tx)
        .await?;
    Ok(micro.unwrap_or(0))
}

async fn set_balance(tx: &mut Tx<'_>, account: &Account, micro: i64) -> Result<(), StorageError> {
    sqlx::query(
        "INSERT INTO balances (account, micro) VALUES (?1, ?2)
         ON CONFLICT (account) DO UPDATE SET micro = ?2",
    )
    .bind(account.to_string())
    .bind(micro)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Appends one entry moving `amount` from `debit` to `credit`, signed with the relay's
/// `key`, and updates both cached balances, all inside `tx`. Refuses to take any account
/// but [`Account::Issuance`] below zero.
pub(crate) async fn append(
    tx: &mut Tx<'_>,
    key: &WalletKey,
    debit: &Account,
    credit: &Account,
    amount: MicroCredits,
    reason: Reason,
    reference: &str,
) -> Result<Entry, LedgerError> {
    if amount.is_zero() {
        return Err(LedgerError::ZeroAmount);
    }
    if debit == credit {
        return Err(LedgerError::SameAccount(*debit));
    }
    if reference.len() > MAX_REFERENCE {
        return Err(LedgerError::ReferenceTooLong);
    }
    let micro = i64::try_from(amount.0).map_err(|_| LedgerError::TooLarge(amount))?;
    let debit_before = cached_balance(tx, debit).await?;
    if !debit.may_go_negative() && debit_before < micro {
        return Err(LedgerError::Overdraft {
            account: *debit,
            // A negative cached balance is corruption; report it as empty.
            balance: MicroCredits(u64::try_from(debit_before).unwrap_or(0)),
            amount,
        });
    }
    let debit_after = debit_before
        .checked_sub(micro)
        .ok_or(MoneyError::Overflow)?;
    let credit_after = cached_balance(tx, credit)
        .await?
        .checked_add(micro)
        .ok_or(MoneyError::Overflow)?;

    let last = sqlx::query("SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1")
        .fetch_optional(&mut **tx)
        .await?;
    let (seq, prev_hash) = match last {
        None => (1, GENESIS_PREV_HASH),
        Some(row) => {
            let seq: i64 = row.try_get("seq")?;
            let hash: Vec<u8> = row.try_get("hash")?;
            let hash: [u8; 32] = hash.try_into().map_err(|_| {
                StorageError::Corrupt(format!("ledger entry {seq}: hash is not 32 bytes"))
            })?;
            let next = u64::try_from(seq)
                .ok()
                .and_then(|s| s.checked_add(1))
                .ok_or_else(|| StorageError::Corrupt(format!("ledger seq {seq}")))?;
            (next, hash)
        }
    };
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
    sqlx::query(&format!(
        "INSERT INTO ledger ({ENTRY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ))
    .bind(i64::try_from(entry.seq).map_err(|_| MoneyError::Overflow)?)
    .bind(entry.time_ms)
    .bind(entry.debit.to_string())
    .bind(entry.credit.to_string())
    .bind(micro)
    .bind(entry.reason.as_str())
    .bind(&entry.reference)
    .bind(&entry.prev_hash[..])
    .bind(&entry.hash[..])
    .bind(&entry.signature.0[..])
    .execute(&mut **tx)
    .await?;
    set_balance(tx, debit, debit_after).await?;
    set_balance(tx, credit, credit_after).await?;
    Ok(entry)
}

/// Sets `amount` of a submitter's credit aside for `job` (submitter → escrow). Fails with
/// [`LedgerError::Overdraft`] when the submitter cannot cover it.
pub(crate) async fn escrow_job(
    tx: &mut Tx<'_>,
    key: &WalletKey,
    submitter: AccountId,
    job: JobId,
    amount: MicroCredits,
) -> Result<Entry, LedgerError> {
    append(
        tx,
        key,
        &Account::Submitter(submitter),
        &Account::Escrow(job),
        amount,
        Reason::Escrow,
        &job.to_string(),
    )
    .await
}

/// Pays one settled unit out of its job's escrow: each of `wallets` its share, the `site`
/// its share, the platform the rest, as [`split_unit_price`](crate::ledger::split_unit_price)
/// computed. Zero parts write no entry. Fails with [`LedgerError::Overdraft`] (on the
/// escrow) when the job's escrow cannot cover the price.
pub(crate) async fn pay_unit(
    tx: &mut Tx<'_>,
    key: &WalletKey,
    job: JobId,
    unit_ref: &str,
    split: &Split,
    wallets: &[WalletAddress],
    site: Option<&WalletAddress>,
) -> Result<Vec<Entry>, LedgerError> {
    if split.volunteers.len() != wallets.len() {
        return Err(LedgerError::SplitMismatch(format!(
            "{} volunteer shares for {} wallets",
            split.volunteers.len(),
            wallets.len()
        )));
    }
    let site_part = match site {
        Some(site) => Some((Account::Wallet(*site), split.site, Reason::SiteShare)),
        None if split.site.is_zero() => None,
        None => {
            return Err(LedgerError::SplitMismatch(format!(
                "a site share of {} but no site",
                split.site
            )))
        }
    };
    let parts = wallets
        .iter()
        .zip(&split.volunteers)
        .map(|(wallet, share)| (Account::Wallet(*wallet), *share, Reason::Pay))
        .chain(site_part)
        .chain([(Account::Platform, split.platform, Reason::PlatformFee)]);
    let escrow = Account::Escrow(job);
    let mut entries = Vec::new();
    for (account, amount, reason) in parts {
        if !amount.is_zero() {
            entries.push(append(tx, key, &escrow, &account, amount, reason, unit_ref).await?);
        }
    }
    Ok(entries)
}

/// Returns whatever is left in `job`'s escrow to the submitter (escrow → submitter);
/// `None` when nothing is left.
pub(crate) async fn refund_job(
    tx: &mut Tx<'_>,
    key: &WalletKey,
    job: JobId,
    submitter: AccountId,
) -> Result<Option<Entry>, LedgerError> {
    let escrow = Account::Escrow(job);
    let left = cached_balance(tx, &escrow).await?;
    if left <= 0 {
        return Ok(None);
    }
    let amount = MicroCredits(u64::try_from(left).map_err(|_| MoneyError::Overflow)?);
    let entry = append(
        tx,
        key,
        &escrow,
        &Account::Submitter(submitter),
        amount,
        Reason::Refund,
        &job.to_string(),
    )
    .await?;
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
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO accounts (id, api_key_hash, created_ms, label) VALUES (?, ?, ?, ?)",
        )
        .bind(id.to_string())
        .bind(&api_key_hash(&api_key)[..])
        .bind(now_ms())
        .bind(label)
        .execute(&mut *tx)
        .await?;
        if !balance.is_zero() {
            append(
                &mut tx,
                key,
                &Account::Issuance,
                &Account::Submitter(id),
                balance,
                Reason::Issue,
                &id.to_string(),
            )
            .await?;
        }
        tx.commit().await?;
        Ok((id, api_key))
    }

    /// The account an API key belongs to, if any. Looking up by hash leaks nothing useful
    /// through timing: matching a prefix of a SHA-256 says nothing about the key.
    pub async fn account_by_api_key(
        &self,
        api_key: &str,
    ) -> Result<Option<AccountId>, StorageError> {
        let id: Option<String> =
            sqlx::query_scalar("SELECT id FROM accounts WHERE api_key_hash = ?")
                .bind(&api_key_hash(api_key)[..])
                .fetch_optional(&self.pool)
                .await?;
        id.map(|id| super::parse_id(&id)).transpose()
    }

    /// An account's balance from the cache. [`Account::Issuance`], the one account that is
    /// never positive, gives the credit issued so far (minus its balance).
    pub async fn balance(&self, account: &Account) -> Result<MicroCredits, StorageError> {
        let micro: Option<i64> = sqlx::query_scalar("SELECT micro FROM balances WHERE account = ?")
            .bind(account.to_string())
            .fetch_optional(&self.pool)
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
        let rows = sqlx::query("SELECT account, micro FROM balances")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let account: String = row.try_get("account")?;
                let micro: i64 = row.try_get("micro")?;
                let account = account
                    .parse()
                    .map_err(|e| StorageError::Corrupt(format!("balances: {e}")))?;
                Ok((account, i128::from(micro)))
            })
            .collect()
    }

    /// Up to `limit` entries after `after_seq` (0 for the first page), oldest first.
    pub async fn ledger_page(
        &self,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<Entry>, StorageError> {
        let rows = sqlx::query(&format!(
            "SELECT {ENTRY_COLUMNS} FROM ledger WHERE seq > ? ORDER BY seq LIMIT ?"
        ))
        .bind(i64::try_from(after_seq).unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| entry_from_row(row).map_err(|why| corrupt_entry(row, why)))
            .collect()
    }

    /// Up to `limit` entries after `after_seq` that debit or credit `account`, oldest
    /// first.
    pub async fn account_history(
        &self,
        account: &Account,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<Entry>, StorageError> {
        let rows = sqlx::query(&format!(
            "SELECT {ENTRY_COLUMNS} FROM ledger WHERE (debit = ?1 OR credit = ?1) AND seq > ?2
             ORDER BY seq LIMIT ?3"
        ))
        .bind(account.to_string())
        .bind(i64::try_from(after_seq).unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| entry_from_row(row).map_err(|why| corrupt_entry(row, why)))
            .collect()
    }

    /// Moves `amount` from wallet `from` to wallet `to` on `from`'s signature (see
    /// [`WalletKey::sign_transfer`]; `key` is the relay's ledger key, whose address the
    /// signature names). A forged signature, a reused nonce or an overdraft is refused
    /// and changes nothing.
    pub async fn transfer(
        &self,
        key: &WalletKey,
        from: WalletAddress,
        to: WalletAddress,
        amount: MicroCredits,
        nonce: u64,
        signature: &Signature,
    ) -> Result<Entry, LedgerError> {
        from.verify_transfer(&key.address(), &to, amount.0, nonce, signature)
            .map_err(|_| LedgerError::ForgedTransfer { from })?;
        let mut tx = self.write().await?;
        // The same 64 bits as an i64: SQLite integers are signed.
        let stored_nonce = i64::from_be_bytes(nonce.to_be_bytes());
        let fresh = sqlx::query(
            "INSERT INTO transfer_nonces (wallet, nonce) VALUES (?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(from.to_string())
        .bind(stored_nonce)
        .execute(&mut *tx)
        .await?;
        if fresh.rows_affected() == 0 {
            return Err(LedgerError::NonceReused {
                wallet: from,
                nonce,
            });
        }
        let entry = append(
            &mut tx,
            key,
            &Account::Wallet(from),
            &Account::Wallet(to),
            amount,
            Reason::Transfer,
            &format!("nonce:{nonce}"),
        )
        .await?;
        tx.commit().await?;
        Ok(entry)
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
        let mut tx = self.pool.begin().await.map_err(StorageError::from)?;
        let mut verifier = ChainVerifier::new(*relay);
        // Pages keyed by the stored seq; the verifier checks that they are contiguous.
        let mut after: i64 = 0;
        loop {
            let rows = sqlx::query(&format!(
                "SELECT {ENTRY_COLUMNS} FROM ledger WHERE seq > ? ORDER BY seq LIMIT ?"
            ))
            .bind(after)
            .bind(page)
            .fetch_all(&mut *tx)
            .await
            .map_err(StorageError::from)?;
            for row in &rows {
                after = row.try_get("seq").map_err(StorageError::from)?;
                let entry = entry_from_row(row)
                    .map_err(|why| AuditError::Unreadable { seq: after, why })?;
                verifier.push(&entry)?;
            }
            if i64::try_from(rows.len()).unwrap_or(i64::MAX) < page {
                break;
            }
        }
        let cache = sqlx::query("SELECT account, micro FROM balances ORDER BY account")
            .fetch_all(&mut *tx)
            .await
            .map_err(StorageError::from)?;
        tx.commit().await.map_err(StorageError::from)?;

        let summary = verifier.finish()?;
        let mut cached = BTreeMap::new();
        for row in &cache {
            let text: String = row.try_get("account").map_err(StorageError::from)?;
            let micro: i64 = row.try_get("micro").map_err(StorageError::from)?;
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

    /// [`escrow_job`] in a transaction of its own.
    pub async fn escrow_job(
        &self,
        key: &WalletKey,
        submitter: AccountId,
        job: JobId,
        amount: MicroCredits,
    ) -> Result<Entry, LedgerError> {
        let mut tx = self.write().await?;
        let entry = escrow_job(&mut tx, key, submitter, job, amount).await?;
        tx.commit().await?;
        Ok(entry)
    }

    /// [`pay_unit`] in a transaction of its own.
    pub async fn pay_unit(
        &self,
        key: &WalletKey,
        job: JobId,
        unit_ref: &str,
        split: &Split,
        wallets: &[WalletAddress],
        site: Option<&WalletAddress>,
    ) -> Result<Vec<Entry>, LedgerError> {
        let mut tx = self.write().await?;
        let entries = pay_unit(&mut tx, key, job, unit_ref, split, wallets, site).await?;
        tx.commit().await?;
        Ok(entries)
    }

    /// [`refund_job`] in a transaction of its own.
    pub async fn refund_job(
        &self,
        key: &WalletKey,
        job: JobId,
        submitter: AccountId,
    ) -> Result<Option<Entry>, LedgerError> {
        let mut tx = self.write().await?;
        let entry = refund_job(&mut tx, key, job, submitter).await?;
        tx.commit().await?;
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Appends `n` issues to one submitter inside one caller-held transaction, as
    /// settling code does.
    async fn fill(storage: &Storage, key: &WalletKey, n: u64) -> Result<(), LedgerError> {
        let mut tx = storage.write().await?;
        let submitter = Account::Submitter(AccountId(uuid::Uuid::from_u128(1)));
        for i in 0..n {
            let entry = append(
                &mut tx,
                key,
                &Account::Issuance,
                &submitter,
                MicroCredits(i + 1),
                Reason::Issue,
                "fill",
            )
            .await?;
            assert_eq!(entry.seq, i + 1);
        }
        tx.commit().await?;
        Ok(())
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
        sqlx::query("DELETE FROM ledger WHERE seq = 4")
            .execute(&storage.pool)
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
        {
            let mut tx = storage.write().await?;
            append(
                &mut tx,
                &key,
                &Account::Issuance,
                &Account::Platform,
                MicroCredits(5),
                Reason::Issue,
                "dropped",
            )
            .await?;
            // Dropped without commit, as when later work in the caller's transaction fails.
        }
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
