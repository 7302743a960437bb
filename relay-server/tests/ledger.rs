//! The credit ledger against a real SQLite file: each kind of tampering is caught by the
//! audit and named; transfers refuse forgeries, replays, expired or too distant expiries
//! and overdrafts without moving credit (an overdraft spends its nonce); escrow, payment
//! and refund move exactly what they say; a property test drives random operations
//! (reopening the database between steps) and checks that credit is conserved and the
//! audit passes; and the `keys create` / `audit` commands work end to end.

mod common;

use common::TempDir;
use proptest::prelude::*;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::SqlitePool;
use starling_protocol::{JobId, WalletAddress, WalletKey};
use starling_relay::ledger::{
    load_or_create_relay_key, split_unit_price, Account, AccountId, AuditError, EscrowRef,
    MicroCredits, Split,
};
use starling_relay::storage::{Billing, LedgerError, Pricing, SignedTransfer, Storage};
use std::collections::BTreeMap;
use std::path::Path;

fn temp_dir(name: &str) -> TempDir {
    TempDir::new(&format!("ledger-{name}"))
}

fn credits(c: u64) -> MicroCredits {
    MicroCredits(c * 1_000_000)
}

fn wallet(seed: u8) -> WalletKey {
    WalletKey::from_seed([seed; 32])
}

fn job(n: u128) -> JobId {
    JobId::from_uuid(uuid::Uuid::from_u128(n))
}

/// The escrow of a job the jobs table does not hold: named by the job's id.
fn escrow(job: JobId) -> Account {
    Account::Escrow(EscrowRef::Job(job))
}

/// A second connection to the database file, as an attacker with file access has.
async fn raw(dir: &Path) -> anyhow::Result<SqlitePool> {
    Ok(
        SqlitePool::connect_with(
            SqliteConnectOptions::new().filename(dir.join("starling.sqlite3")),
        )
        .await?,
    )
}

/// The relay's storage and key over a fresh directory.
struct Relay {
    storage: Storage,
    key: WalletKey,
    /// Last: removed after the storage is dropped.
    dir: TempDir,
}

impl Relay {
    async fn new(name: &str) -> anyhow::Result<Self> {
        let dir = temp_dir(name);
        let storage = Storage::open(&dir).await?;
        let key = load_or_create_relay_key(&dir)?;
        Ok(Self { storage, key, dir })
    }

    async fn audit(&self) -> Result<starling_relay::ledger::Summary, AuditError> {
        self.storage.audit(&self.key.address()).await
    }

    /// A submitter with 10 credits, 6 escrowed for job 1, one unit's price accrued to
    /// wallets 1 and 2 with wallet 3 as the site, the rest refunded, then the accruals
    /// paid out: entries 1 (issue), 2 (escrow), 3 (refund), 4..=7 (pay, pay, site share,
    /// platform fee). A 15 % fee with 10 % of the price to the site out of it:
    /// 1.7 credits to each wallet, 0.4 to the site, 0.2 to the platform.
    async fn sample(&self) -> anyhow::Result<AccountId> {
        let (submitter, _) = self
            .storage
            .create_account(&self.key, credits(10), Some("sample"))
            .await?;
        self.storage
            .escrow_job(&self.key, submitter, job(1), credits(6))
            .await?;
        let split = split_unit_price(4_000_000_000, credits(1), 100_000, 150_000, 2, true)?;
        let site = wallet(3).address();
        self.storage
            .accrue_unit(
                job(1),
                &split,
                &[wallet(1).address(), wallet(2).address()],
                Some(&site),
            )
            .await?;
        // Owed credit stays in escrow until paid out: a refund now leaves it there.
        let early = self
            .storage
            .refund_job(&self.key, job(1), submitter)
            .await?;
        assert_eq!(early.map(|e| e.amount), Some(credits(2)));
        let paid = self.storage.pay_out_job(&self.key, job(1)).await?;
        assert_eq!(paid.len(), 4);
        assert!(paid.iter().all(|e| e.reference == job(1).to_string()));
        assert!(self.storage.accruals().await?.is_empty());
        self.storage
            .refund_job(&self.key, job(1), submitter)
            .await?;
        Ok(submitter)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn escrow_pay_and_refund_move_exactly_the_split() -> anyhow::Result<()> {
    let relay = Relay::new("flow").await?;
    let submitter = relay.sample().await?;
    let s = &relay.storage;
    // 4 GFLOP at 1 credit: 4 credits; site 10 % = 0.4, fee 5 % = 0.2, volunteers 1.7 each.
    assert_eq!(
        s.balance(&Account::Wallet(wallet(1).address())).await?,
        MicroCredits(1_700_000)
    );
    assert_eq!(
        s.balance(&Account::Wallet(wallet(2).address())).await?,
        MicroCredits(1_700_000)
    );
    assert_eq!(
        s.balance(&Account::Wallet(wallet(3).address())).await?,
        MicroCredits(400_000)
    );
    assert_eq!(s.balance(&Account::Platform).await?, MicroCredits(200_000));
    assert_eq!(s.balance(&escrow(job(1))).await?, MicroCredits::ZERO);
    assert_eq!(s.balance(&Account::Submitter(submitter)).await?, credits(6));
    assert_eq!(s.balance(&Account::Issuance).await?, credits(10));
    let summary = relay.audit().await?;
    assert_eq!(summary.entries, 7);
    assert_eq!(summary.issued, credits(10));
    assert_eq!(summary.escrowed, credits(6));
    assert_eq!(summary.paid, MicroCredits(3_800_000));
    assert_eq!(summary.fees, MicroCredits(200_000));
    assert_eq!(summary.refunded, credits(2));
    // Nothing left to refund: no entry.
    assert!(s.refund_job(&relay.key, job(1), submitter).await?.is_none());
    Ok(())
}

#[tokio::test]
async fn periodic_payouts_pay_every_accrual_in_bounded_batches() -> anyhow::Result<()> {
    let relay = Relay::new("payouts").await?;
    let storage = relay.storage.clone().with_billing(Billing {
        key: relay.key.clone(),
        pricing: Pricing {
            price_per_gflop: credits(1),
            site_share_ppm: 0,
            platform_fee_ppm: 50_000,
        },
    });
    let (submitter, _) = storage
        .create_account(&relay.key, credits(1_000), None)
        .await?;
    storage
        .escrow_job(&relay.key, submitter, job(1), credits(400))
        .await?;
    // 300 units of 1 GFLOP, each settled by another wallet: 301 payees, more than one
    // payout transaction holds.
    let split = split_unit_price(1_000_000_000, credits(1), 0, 50_000, 1, false)?;
    let wallets: Vec<WalletAddress> = (0..300u16)
        .map(|i| {
            let mut seed = [7u8; 32];
            seed[..2].copy_from_slice(&i.to_le_bytes());
            WalletKey::from_seed(seed).address()
        })
        .collect();
    for w in &wallets {
        storage.accrue_unit(job(1), &split, &[*w], None).await?;
    }
    assert_eq!(storage.accruals().await?.len(), 301);
    let paid = storage.pay_out_all().await?;
    assert_eq!(paid.len(), 301, "every accrual paid once");
    assert!(storage.accruals().await?.is_empty());
    assert!(
        storage.pay_out_all().await?.is_empty(),
        "nothing paid twice"
    );
    for w in &wallets {
        assert_eq!(
            storage.balance(&Account::Wallet(*w)).await?,
            split.volunteers[0]
        );
    }
    assert_eq!(
        storage.balance(&Account::Platform).await?,
        MicroCredits(split.platform.0 * 300)
    );
    // What is left in escrow goes back whole: nothing is owed any more.
    let refund = storage.refund_job(&relay.key, job(1), submitter).await?;
    assert_eq!(refund.map(|e| e.amount), Some(credits(100)));
    relay.audit().await?;
    Ok(())
}

#[tokio::test]
async fn escrow_and_payment_refuse_to_overdraw_and_write_nothing() -> anyhow::Result<()> {
    let relay = Relay::new("overdraw").await?;
    let s = &relay.storage;
    let (submitter, _) = s.create_account(&relay.key, credits(1), None).await?;
    let err = s
        .escrow_job(&relay.key, submitter, job(1), credits(2))
        .await
        .err();
    assert!(
        matches!(err, Some(LedgerError::Overdraft { account: Account::Submitter(id), .. }) if id == submitter),
        "{err:?}"
    );
    s.escrow_job(&relay.key, submitter, job(1), credits(1))
        .await?;
    // A 2-credit unit against 1 credit of escrow: the first volunteer's share would fit,
    // the second's would not, and neither may be paid.
    let split = split_unit_price(2_000_000_000, credits(1), 0, 0, 2, false)?;
    let volunteers = [wallet(1).address(), wallet(2).address()];
    let err = s.accrue_unit(job(1), &split, &volunteers, None).await.err();
    assert!(
        matches!(err, Some(LedgerError::Overdraft { account, .. }) if account == escrow(job(1))),
        "{err:?}"
    );
    assert!(s.accruals().await?.is_empty(), "a refused unit accrued");
    assert!(s.pay_out_job(&relay.key, job(1)).await?.is_empty());
    assert_eq!(
        s.balance(&Account::Wallet(volunteers[0])).await?,
        MicroCredits::ZERO
    );
    assert_eq!(s.balance(&escrow(job(1))).await?, credits(1));
    assert_eq!(relay.audit().await?.entries, 2);
    // Half a credit fits once; the second half-credit unit would overdraw what is left.
    let half = split_unit_price(500_000_000, credits(1), 0, 0, 1, false)?;
    s.accrue_unit(job(1), &half, &volunteers[..1], None).await?;
    s.accrue_unit(job(1), &half, &volunteers[..1], None).await?;
    let err = s
        .accrue_unit(job(1), &half, &volunteers[..1], None)
        .await
        .err();
    assert!(
        matches!(err, Some(LedgerError::Overdraft { .. })),
        "{err:?}"
    );

    let err = s
        .accrue_unit(job(1), &split, &volunteers[..1], None)
        .await
        .err();
    assert!(
        matches!(err, Some(LedgerError::SplitMismatch(_))),
        "{err:?}"
    );
    let with_site = Split {
        site: MicroCredits(1),
        ..split.clone()
    };
    let err = s
        .accrue_unit(job(1), &with_site, &volunteers, None)
        .await
        .err();
    assert!(
        matches!(err, Some(LedgerError::SplitMismatch(_))),
        "{err:?}"
    );
    Ok(())
}

#[tokio::test]
async fn api_keys_are_random_stored_hashed_and_found() -> anyhow::Result<()> {
    let relay = Relay::new("keys").await?;
    let s = &relay.storage;
    let (id, api_key) = s.create_account(&relay.key, credits(3), None).await?;
    let (other, other_key) = s
        .create_account(&relay.key, MicroCredits::ZERO, None)
        .await?;
    assert!(
        api_key.starts_with("stk_") && api_key.len() == 68,
        "{api_key}"
    );
    assert!(api_key[4..].bytes().all(|b| b.is_ascii_hexdigit()));
    assert_ne!(api_key, other_key);
    assert_eq!(s.account_by_api_key(&api_key).await?, Some(id));
    assert_eq!(s.account_by_api_key(&other_key).await?, Some(other));
    assert_eq!(s.account_by_api_key("stk_00").await?, None);
    // The key itself is nowhere in the database.
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM accounts WHERE api_key_hash = ?")
        .bind(api_key.as_bytes())
        .fetch_one(&raw(&relay.dir).await?)
        .await?;
    assert_eq!(stored, 0);
    // A zero balance issues nothing.
    assert_eq!(relay.audit().await?.entries, 1);
    assert_eq!(
        s.balance(&Account::Submitter(other)).await?,
        MicroCredits::ZERO
    );
    Ok(())
}

#[tokio::test]
async fn pages_and_account_history_walk_the_ledger_in_order() -> anyhow::Result<()> {
    let relay = Relay::new("pages").await?;
    let submitter = relay.sample().await?;
    let s = &relay.storage;
    let first = s.ledger_page(0, 3).await?;
    let rest = s.ledger_page(3, 100).await?;
    let seqs: Vec<u64> = first.iter().chain(&rest).map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=7).collect::<Vec<_>>());
    let history = s
        .account_history(&Account::Submitter(submitter), 0, 100)
        .await?;
    let seqs: Vec<u64> = history.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
    let later = s
        .account_history(&Account::Submitter(submitter), 2, 100)
        .await?;
    assert_eq!(later.len(), 1);
    Ok(())
}

#[tokio::test]
async fn concurrent_appends_never_fork_the_chain() -> anyhow::Result<()> {
    let relay = Relay::new("concurrent").await?;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (storage, key) = (relay.storage.clone(), relay.key.clone());
            tokio::spawn(async move { storage.create_account(&key, credits(1), None).await })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let summary = relay.audit().await?;
    assert_eq!(summary.entries, 8);
    assert_eq!(summary.issued, credits(8));
    Ok(())
}

// --- Tampering: each edit an attacker with the database file could make. ---

/// Runs the audit after `tamper` and returns its error, which must exist.
async fn tampered(
    name: &str,
    tamper: impl AsyncFnOnce(&SqlitePool, &Relay) -> anyhow::Result<()>,
) -> anyhow::Result<AuditError> {
    let relay = Relay::new(name).await?;
    relay.sample().await?;
    relay.audit().await?;
    let pool = raw(&relay.dir).await?;
    tamper(&pool, &relay).await?;
    pool.close().await;
    let err = relay
        .audit()
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("audit passed after tampering ({name})"))?;
    Ok(err)
}

#[tokio::test]
async fn audit_catches_an_edited_amount() -> anyhow::Result<()> {
    let err = tampered("amount", async |db, _| {
        sqlx::query("UPDATE ledger SET amount = amount + 1 WHERE seq = 3")
            .execute(db)
            .await?;
        Ok(())
    })
    .await?;
    assert!(matches!(err, AuditError::Altered { seq: 3 }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "entry 3 was altered: its fields do not match its hash"
    );
    Ok(())
}

#[tokio::test]
async fn audit_catches_a_deleted_entry() -> anyhow::Result<()> {
    let err = tampered("delete", async |db, _| {
        sqlx::query("DELETE FROM ledger WHERE seq = 4")
            .execute(db)
            .await?;
        Ok(())
    })
    .await?;
    assert!(
        matches!(
            err,
            AuditError::Sequence {
                expected: 4,
                found: 5
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("deleted"), "{err}");
    Ok(())
}

#[tokio::test]
async fn audit_catches_the_last_entry_deleted_through_the_balances_cache() -> anyhow::Result<()> {
    // Removing the newest entry leaves a valid shorter chain; the cache still holds the
    // balances that entry made.
    let err = tampered("truncate", async |db, _| {
        sqlx::query("DELETE FROM ledger WHERE seq = 7")
            .execute(db)
            .await?;
        Ok(())
    })
    .await?;
    assert!(matches!(err, AuditError::CacheMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains("balances cache"), "{err}");
    Ok(())
}

#[tokio::test]
async fn audit_catches_reordered_entries() -> anyhow::Result<()> {
    let err = tampered("reorder", async |db, _| {
        for sql in [
            "UPDATE ledger SET seq = 1000 WHERE seq = 3",
            "UPDATE ledger SET seq = 3 WHERE seq = 4",
            "UPDATE ledger SET seq = 4 WHERE seq = 1000",
        ] {
            sqlx::query(sql).execute(db).await?;
        }
        Ok(())
    })
    .await?;
    assert!(matches!(err, AuditError::BrokenLink { seq: 3 }), "{err:?}");
    assert!(err.to_string().contains("reordered"), "{err}");
    Ok(())
}

#[tokio::test]
async fn audit_catches_an_edited_balance_cache() -> anyhow::Result<()> {
    let err = tampered("cache", async |db, _| {
        sqlx::query("UPDATE balances SET micro = micro + 5 WHERE account = 'platform'")
            .execute(db)
            .await?;
        Ok(())
    })
    .await?;
    assert!(
        matches!(
            err,
            AuditError::CacheMismatch {
                account: Account::Platform,
                cached: 200_005,
                ledger: 200_000
            }
        ),
        "{err:?}"
    );
    Ok(())
}

#[tokio::test]
async fn audit_catches_a_forged_signature() -> anyhow::Result<()> {
    // The forger edits an amount and recomputes the hash correctly, but can only sign it
    // with a key of their own.
    let err = tampered("forge", async |db, relay| {
        let mut entry = relay
            .storage
            .ledger_page(2, 1)
            .await?
            .pop()
            .ok_or_else(|| anyhow::anyhow!("no entry 3"))?;
        entry.amount = MicroCredits(entry.amount.0 + 1);
        entry.hash = entry.compute_hash();
        let forged = wallet(66).sign_ledger_entry(&entry.hash);
        sqlx::query("UPDATE ledger SET amount = ?, hash = ?, signature = ? WHERE seq = 3")
            .bind(entry.amount.0 as i64)
            .bind(&entry.hash[..])
            .bind(&forged.0[..])
            .execute(db)
            .await?;
        Ok(())
    })
    .await?;
    assert!(
        matches!(err, AuditError::BadSignature { seq: 3, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("forged signature"), "{err}");
    Ok(())
}

// --- Transfers. ---

/// The relay's clock as a signer sees it, in Unix milliseconds.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `key`'s transfer of `amount` micro-credits to `to` on the relay whose key is `relay`,
/// numbered `nonce`, valid until `expires_ms`.
fn signed_until(
    key: &WalletKey,
    relay: &WalletAddress,
    to: WalletAddress,
    amount: u64,
    nonce: u64,
    expires_ms: u64,
) -> SignedTransfer {
    SignedTransfer {
        from: key.address(),
        to,
        amount: MicroCredits(amount),
        nonce,
        expires_ms,
        signature: key.sign_transfer(relay, &to, amount, nonce, expires_ms),
    }
}

/// [`signed_until`] an hour from now, well inside what a relay accepts.
fn signed(
    key: &WalletKey,
    relay: &WalletAddress,
    to: WalletAddress,
    amount: u64,
    nonce: u64,
) -> SignedTransfer {
    signed_until(key, relay, to, amount, nonce, now_ms() + 3_600_000)
}

/// A relay where wallet 1 holds 1.7 credits (from the sample flow).
async fn funded(name: &str) -> anyhow::Result<(Relay, WalletAddress, WalletAddress)> {
    let relay = Relay::new(name).await?;
    relay.sample().await?;
    Ok((relay, wallet(1).address(), wallet(5).address()))
}

#[tokio::test]
async fn a_signed_transfer_moves_credit_once() -> anyhow::Result<()> {
    let (relay, from, to) = funded("transfer").await?;
    let s = &relay.storage;
    let amount = MicroCredits(700_000);
    let transfer = signed(&wallet(1), &relay.key.address(), to, amount.0, 1);
    let entry = s.transfer(&relay.key, &transfer).await?;
    assert_eq!(entry.reference, "nonce:1");
    assert_eq!(s.balance(&Account::Wallet(from)).await?, credits(1));
    assert_eq!(s.balance(&Account::Wallet(to)).await?, amount);
    assert_eq!(relay.audit().await?.transferred, amount);
    Ok(())
}

/// Balances and ledger length, to show a refused transfer changed nothing.
async fn snapshot(relay: &Relay) -> anyhow::Result<(BTreeMap<Account, i128>, usize)> {
    Ok((
        relay.storage.balances().await?,
        relay.storage.ledger_page(0, u32::MAX).await?.len(),
    ))
}

#[tokio::test]
async fn a_forged_transfer_is_refused_and_changes_nothing() -> anyhow::Result<()> {
    let (relay, from, to) = funded("forged-transfer").await?;
    let before = snapshot(&relay).await?;
    let relay_address = relay.key.address();
    let honest = signed(&wallet(1), &relay_address, to, 500_000, 1);
    // Signed by the recipient, not the sender.
    let by_thief = signed(&wallet(5), &relay_address, to, 500_000, 1).signature;
    // Signed by the sender for a smaller amount.
    let smaller = signed(&wallet(1), &relay_address, to, 1, 1).signature;
    // Signed by the sender for another relay.
    let elsewhere = signed(&wallet(1), &wallet(99).address(), to, 500_000, 1).signature;
    // Signed by the sender to expire sooner (a later expiry is a different transfer).
    let sooner = signed_until(
        &wallet(1),
        &relay_address,
        to,
        500_000,
        1,
        now_ms() + 60_000,
    )
    .signature;
    for signature in [by_thief, smaller, elsewhere, sooner] {
        let forged = SignedTransfer {
            signature,
            ..honest.clone()
        };
        let err = relay.storage.transfer(&relay.key, &forged).await.err();
        assert!(
            matches!(err, Some(LedgerError::ForgedTransfer { from: f }) if f == from),
            "{err:?}"
        );
    }
    assert_eq!(snapshot(&relay).await?, before);
    relay.audit().await?;
    Ok(())
}

#[tokio::test]
async fn a_replayed_transfer_is_refused_and_changes_nothing() -> anyhow::Result<()> {
    let (relay, _, to) = funded("replay").await?;
    let transfer = signed(&wallet(1), &relay.key.address(), to, 100_000, 42);
    relay.storage.transfer(&relay.key, &transfer).await?;
    let before = snapshot(&relay).await?;
    let err = relay.storage.transfer(&relay.key, &transfer).await.err();
    assert!(
        matches!(err, Some(LedgerError::NonceReused { nonce: 42, .. })),
        "{err:?}"
    );
    assert!(err
        .map(|e| e.to_string())
        .unwrap_or_default()
        .contains("already used"));
    assert_eq!(snapshot(&relay).await?, before);
    Ok(())
}

#[tokio::test]
async fn an_overdrawing_transfer_is_refused_and_spends_its_nonce() -> anyhow::Result<()> {
    let (relay, from, to) = funded("overdraft").await?;
    let before = snapshot(&relay).await?;
    let too_much = credits(2);
    let transfer = signed(&wallet(1), &relay.key.address(), to, too_much.0, 7);
    let err = relay.storage.transfer(&relay.key, &transfer).await.err();
    assert!(
        matches!(
            err,
            Some(LedgerError::Overdraft {
                balance: MicroCredits(1_700_000),
                ..
            })
        ),
        "{err:?}"
    );
    assert_eq!(snapshot(&relay).await?, before);
    // Once the wallet holds enough, the same signed transfer must not run: whoever saw
    // it refused could otherwise replay it whenever they liked.
    let (submitter, _) = relay
        .storage
        .create_account(&relay.key, credits(5), None)
        .await?;
    relay
        .storage
        .escrow_job(&relay.key, submitter, job(2), credits(5))
        .await?;
    let split = split_unit_price(5_000_000_000, credits(1), 0, 0, 1, false)?;
    relay
        .storage
        .accrue_unit(job(2), &split, &[from], None)
        .await?;
    relay.storage.pay_out_job(&relay.key, job(2)).await?;
    assert!(relay.storage.balance(&Account::Wallet(from)).await? >= too_much);
    let funded = snapshot(&relay).await?;
    let err = relay.storage.transfer(&relay.key, &transfer).await.err();
    assert!(
        matches!(err, Some(LedgerError::NonceReused { nonce: 7, .. })),
        "{err:?}"
    );
    assert_eq!(snapshot(&relay).await?, funded);
    relay.audit().await?;
    Ok(())
}

#[tokio::test]
async fn an_expired_transfer_is_refused_and_changes_nothing() -> anyhow::Result<()> {
    let (relay, _, to) = funded("expired-transfer").await?;
    let before = snapshot(&relay).await?;
    let relay_address = relay.key.address();
    for expires_ms in [0, now_ms() - 1] {
        let stale = signed_until(&wallet(1), &relay_address, to, 1_000, 3, expires_ms);
        let err = relay.storage.transfer(&relay.key, &stale).await.err();
        assert!(
            matches!(err, Some(LedgerError::TransferExpired { expires_ms: e, .. }) if e == expires_ms),
            "{err:?}"
        );
        let text = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains("sign it again"), "{text}");
    }
    assert_eq!(snapshot(&relay).await?, before);
    // Refused before its nonce was looked at: a fresh signature with it still runs.
    let fresh = signed(&wallet(1), &relay_address, to, 1_000, 3);
    relay.storage.transfer(&relay.key, &fresh).await?;
    Ok(())
}

#[tokio::test]
async fn a_transfer_valid_for_more_than_a_day_is_refused() -> anyhow::Result<()> {
    let (relay, _, to) = funded("far-transfer").await?;
    let before = snapshot(&relay).await?;
    let relay_address = relay.key.address();
    let day = starling_protocol::MAX_TRANSFER_VALIDITY_MS;
    for expires_ms in [now_ms() + day + 60_000, u64::MAX] {
        let lasting = signed_until(&wallet(1), &relay_address, to, 1_000, 4, expires_ms);
        let err = relay.storage.transfer(&relay.key, &lasting).await.err();
        assert!(
            matches!(err, Some(LedgerError::ExpiryTooFar { expires_ms: e, .. }) if e == expires_ms),
            "{err:?}"
        );
    }
    assert_eq!(snapshot(&relay).await?, before);
    // Just inside the limit is fine.
    let day_less_a_minute = signed_until(
        &wallet(1),
        &relay_address,
        to,
        1_000,
        4,
        now_ms() + day - 60_000,
    );
    relay
        .storage
        .transfer(&relay.key, &day_less_a_minute)
        .await?;
    Ok(())
}

// --- Conservation under random operations. ---

#[derive(Debug, Clone)]
enum Op {
    /// A new submitter with this many micro-credits.
    Issue(u64),
    Escrow {
        submitter: usize,
        job: u8,
        amount: u64,
    },
    /// A unit of the job settles: its price accrues to its payees.
    Pay {
        job: u8,
        gflops: u64,
        volunteers: u8,
        site: bool,
    },
    Refund {
        job: u8,
    },
    /// The job's accruals are paid into the ledger.
    PayOut {
        job: u8,
    },
    Transfer {
        from: u8,
        to: u8,
        amount: u64,
        nonce: u8,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    // Weighted so that most sequences fund wallets and then move their credit.
    prop_oneof![
        2 => (0u64..20_000_000).prop_map(Op::Issue),
        3 => (0usize..4, 0u8..3, 0u64..15_000_000).prop_map(|(submitter, job, amount)| Op::Escrow {
            submitter,
            job,
            amount
        }),
        4 => (0u8..3, 0u64..8, 1u8..4, any::<bool>()).prop_map(|(job, gflops, volunteers, site)| {
            Op::Pay {
                job,
                gflops,
                volunteers,
                site,
            }
        }),
        1 => (0u8..3).prop_map(|job| Op::Refund { job }),
        2 => (0u8..3).prop_map(|job| Op::PayOut { job }),
        4 => (0u8..4, 0u8..4, 0u64..1_500_000, 0u8..4).prop_map(|(from, to, amount, nonce)| {
            Op::Transfer {
                from,
                to,
                amount,
                nonce,
            }
        }),
        1 => Just(Op::Reopen),
    ]
}

/// What the balances must be, kept beside the database.
#[derive(Default)]
struct Model {
    balances: BTreeMap<Account, i128>,
    submitters: Vec<AccountId>,
    job_owner: BTreeMap<u8, AccountId>,
    nonces: std::collections::BTreeSet<(u8, u8)>,
    /// Accrued and not paid out, per job and payee.
    owed: BTreeMap<(u8, Account), u64>,
}

impl Model {
    fn get(&self, account: &Account) -> i128 {
        self.balances.get(account).copied().unwrap_or(0)
    }
    fn shift(&mut self, from: Account, to: Account, amount: u64) {
        *self.balances.entry(from).or_insert(0) -= i128::from(amount);
        *self.balances.entry(to).or_insert(0) += i128::from(amount);
    }
    fn owed_by(&self, job: u8) -> i128 {
        self.owed
            .iter()
            .filter(|((j, _), _)| *j == job)
            .map(|(_, micro)| i128::from(*micro))
            .sum()
    }
    fn accrue(&mut self, job: u8, to: Account, amount: u64) {
        if amount > 0 {
            *self.owed.entry((job, to)).or_insert(0) += amount;
        }
    }
    fn nonzero(&self) -> BTreeMap<Account, i128> {
        self.balances
            .iter()
            .filter(|(_, v)| **v != 0)
            .map(|(k, v)| (*k, *v))
            .collect()
    }
}

async fn step(relay: &mut Relay, model: &mut Model, op: &Op) -> anyhow::Result<()> {
    let key = relay.key.clone();
    let s = relay.storage.clone();
    let volunteer = |i: u8| wallet(10 + i).address();
    match *op {
        Op::Issue(amount) => {
            let (id, _) = s.create_account(&key, MicroCredits(amount), None).await?;
            model.submitters.push(id);
            model.shift(Account::Issuance, Account::Submitter(id), amount);
        }
        Op::Escrow {
            submitter,
            job: j,
            amount,
        } => {
            let Some(&id) = model
                .submitters
                .get(submitter % model.submitters.len().max(1))
            else {
                return Ok(());
            };
            // One submitter per job, so refunds go back to whoever paid.
            if model.job_owner.get(&j).is_some_and(|owner| *owner != id) {
                return Ok(());
            }
            let result = s
                .escrow_job(&key, id, job(j.into()), MicroCredits(amount))
                .await;
            let covered = model.get(&Account::Submitter(id)) >= i128::from(amount);
            match result {
                Ok(_) => {
                    anyhow::ensure!(covered && amount > 0, "escrow beyond the balance");
                    model.job_owner.insert(j, id);
                    model.shift(Account::Submitter(id), escrow(job(j.into())), amount);
                }
                Err(LedgerError::Overdraft { .. }) => {
                    anyhow::ensure!(!covered, "refused a covered escrow")
                }
                Err(LedgerError::ZeroAmount) => anyhow::ensure!(amount == 0),
                Err(e) => return Err(e.into()),
            }
        }
        Op::Pay {
            job: j,
            gflops,
            volunteers,
            site,
        } => {
            let split = split_unit_price(
                gflops * 1_000_000_000,
                MicroCredits(700_001),
                100_000,
                50_000,
                volunteers.into(),
                site,
            )?;
            let wallets: Vec<_> = (0..volunteers).map(volunteer).collect();
            let site_wallet = volunteer(3);
            let escrow = escrow(job(j.into()));
            let result = s
                .accrue_unit(
                    job(j.into()),
                    &split,
                    &wallets,
                    site.then_some(&site_wallet),
                )
                .await;
            let covered = model.get(&escrow) - model.owed_by(j) >= i128::from(split.price.0);
            match result {
                Ok(()) => {
                    anyhow::ensure!(covered, "accrued beyond the escrow");
                    for (w, share) in wallets.iter().zip(&split.volunteers) {
                        model.accrue(j, Account::Wallet(*w), share.0);
                    }
                    model.accrue(j, Account::Wallet(site_wallet), split.site.0);
                    model.accrue(j, Account::Platform, split.platform.0);
                }
                Err(LedgerError::Overdraft { .. }) => {
                    anyhow::ensure!(!covered, "refused a covered payment")
                }
                Err(e) => return Err(e.into()),
            }
        }
        Op::PayOut { job: j } => {
            let escrow = escrow(job(j.into()));
            let entries = s.pay_out_job(&key, job(j.into())).await?;
            let owed: Vec<(Account, u64)> = model
                .owed
                .iter()
                .filter(|((oj, _), _)| *oj == j)
                .map(|((_, account), micro)| (*account, *micro))
                .collect();
            anyhow::ensure!(entries.len() == owed.len(), "{entries:?} for {owed:?}");
            for (account, micro) in owed {
                model.owed.remove(&(j, account));
                model.shift(escrow, account, micro);
            }
        }
        Op::Refund { job: j } => {
            let Some(&owner) = model.job_owner.get(&j) else {
                return Ok(());
            };
            let escrow = escrow(job(j.into()));
            let left = model.get(&escrow) - model.owed_by(j);
            let refunded = s.refund_job(&key, job(j.into()), owner).await?;
            anyhow::ensure!(refunded.is_some() == (left > 0));
            model.shift(escrow, Account::Submitter(owner), u64::try_from(left)?);
        }
        Op::Transfer {
            from,
            to,
            amount,
            nonce,
        } => {
            let (from_key, to_address) = (wallet(10 + from), volunteer(to));
            let transfer = signed(&from_key, &key.address(), to_address, amount, nonce.into());
            let result = s.transfer(&key, &transfer).await;
            let sender = Account::Wallet(from_key.address());
            match result {
                Ok(_) => {
                    anyhow::ensure!(
                        model.get(&sender) >= i128::from(amount) && from != to && amount > 0
                    );
                    anyhow::ensure!(model.nonces.insert((from, nonce)), "nonce reused");
                    model.shift(sender, Account::Wallet(to_address), amount);
                }
                Err(LedgerError::NonceReused { .. }) => {
                    anyhow::ensure!(model.nonces.contains(&(from, nonce)))
                }
                Err(LedgerError::Overdraft { .. }) => {
                    anyhow::ensure!(model.get(&sender) < i128::from(amount));
                    // Refused, but its nonce is spent.
                    anyhow::ensure!(model.nonces.insert((from, nonce)), "nonce reused");
                }
                Err(LedgerError::SameAccount(_)) => anyhow::ensure!(from == to),
                Err(LedgerError::ZeroAmount) => anyhow::ensure!(amount == 0),
                Err(e) => return Err(e.into()),
            }
        }
        Op::Reopen => {
            relay.storage = Storage::open(&relay.dir).await?;
            relay.key = load_or_create_relay_key(&relay.dir)?;
            anyhow::ensure!(
                relay.key.address() == key.address(),
                "the relay key changed"
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn random_operations_conserve_credit_and_pass_the_audit(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let outcome: anyhow::Result<()> = rt.block_on(async {
            let mut relay = Relay::new("conservation").await?;
            let mut model = Model::default();
            for (i, op) in ops.iter().enumerate() {
                step(&mut relay, &mut model, op).await.map_err(|e| e.context(format!("step {i}: {op:?}")))?;
                let balances = relay.storage.balances().await?;
                anyhow::ensure!(balances.values().sum::<i128>() == 0, "step {i}: credit not conserved: {balances:?}");
                let stored: BTreeMap<_, _> = balances.into_iter().filter(|(_, v)| *v != 0).collect();
                anyhow::ensure!(stored == model.nonzero(), "step {i}: balances {stored:?} != model {:?}", model.nonzero());
                let summary = relay.audit().await.map_err(|e| anyhow::anyhow!("step {i}: audit failed: {e}"))?;
                anyhow::ensure!(summary.balances.values().sum::<i128>() == 0);
            }
            Ok(())
        });
        prop_assert!(outcome.is_ok(), "{:?}", outcome.err());
    }
}

// --- The commands. ---

fn starling_relay(args: &[&str]) -> anyhow::Result<std::process::Output> {
    Ok(
        std::process::Command::new(env!("CARGO_BIN_EXE_relay-server"))
            .args(args)
            .env_remove("STARLING_DATA_DIR")
            .output()?,
    )
}

#[tokio::test]
async fn keys_create_prints_one_key_and_audit_fails_after_tampering() -> anyhow::Result<()> {
    let dir = temp_dir("cli");
    let dir_arg = dir
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("temp dir is not UTF-8"))?;
    let mut keys = Vec::new();
    for balance in ["2.5", "1"] {
        let out = starling_relay(&[
            "keys",
            "create",
            "--data-dir",
            dir_arg,
            "--balance",
            balance,
        ])?;
        anyhow::ensure!(
            out.status.success(),
            "keys create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout)?;
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 1, "stdout: {stdout:?}");
        assert!(
            lines[0].starts_with("stk_") && lines[0].len() == 68,
            "{stdout:?}"
        );
        keys.push(lines[0].to_string());
    }
    let storage = Storage::open(&dir).await?;
    for key in &keys {
        assert!(storage.account_by_api_key(key).await?.is_some());
    }

    let out = starling_relay(&["audit", "--data-dir", dir_arg])?;
    let stdout = String::from_utf8(out.stdout)?;
    assert!(
        out.status.success(),
        "audit failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("entries      2"), "{stdout}");
    assert!(stdout.contains("issued       3.5"), "{stdout}");
    let relay = load_or_create_relay_key(&dir)?.address();
    assert!(stdout.contains(&relay.to_string()), "{stdout}");
    let out = starling_relay(&[
        "audit",
        "--data-dir",
        dir_arg,
        "--relay-key",
        &relay.to_string(),
    ])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let pool = raw(&dir).await?;
    sqlx::query("UPDATE ledger SET amount = 9000000 WHERE seq = 2")
        .execute(&pool)
        .await?;
    pool.close().await;
    let out = starling_relay(&["audit", "--data-dir", dir_arg])?;
    let stderr = String::from_utf8(out.stderr)?;
    assert!(!out.status.success(), "audit passed a tampered ledger");
    assert!(
        stderr.contains("ledger audit FAILED: entry 2 was altered"),
        "{stderr}"
    );

    // An auditor holding only the published address reaches the same verdict, and a
    // different address fails every signature.
    let published = relay.to_string();
    let out = starling_relay(&["audit", "--data-dir", dir_arg, "--relay-key", &published])?;
    assert!(!out.status.success());
    let other = wallet(7).address().to_string();
    let out = starling_relay(&["audit", "--data-dir", dir_arg, "--relay-key", &other])?;
    let stderr = String::from_utf8(out.stderr)?;
    assert!(
        stderr.contains("entry 1 has a forged signature"),
        "{stderr}"
    );

    let bad = starling_relay(&["keys", "create", "--data-dir", dir_arg, "--balance", "-1"])?;
    assert!(!bad.status.success());
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
