//! A result must be signed by the wallet its lease was issued to: a forged or misplaced
//! signature is refused with a clear reason, stores nothing, pays nothing and puts the
//! unit back in the queue.

mod common;

use common::TempDir;
use relay_server::scheduler::{Scheduler, SchedulerConfig, Speed, Verdict};
use relay_server::storage::{PeerId, Storage};
use starling_kernels::{Catalog, NamedInputs};
use starling_protocol::WalletKey;
use std::sync::Arc;

#[tokio::test]
async fn forged_result_signatures_are_refused_and_change_nothing() -> anyhow::Result<()> {
    let dir = TempDir::new("sigs");
    let storage = Storage::open(&dir).await?;
    let scheduler = Scheduler::new(
        storage.clone(),
        Arc::new(Catalog::builtin()),
        SchedulerConfig::default(),
    );
    let params = serde_json::json!({"samples": 1000, "seed": 3});
    let job = scheduler
        .submit("montecarlo", params, &NamedInputs::new(), Some(1), None)
        .await?;
    let honest = WalletKey::from_seed([1; 32]);
    let thief = WalletKey::from_seed([2; 32]);
    let peer = PeerId::new();
    let (assignment, _) = scheduler
        .next_assignment(peer, honest.address(), None, Speed::NEWCOMER)
        .await?
        .expect("a unit");
    let output = vec![0u8; 8];

    // Signed by another key, or over another output: refused, nothing stored.
    for signature in [
        thief.sign_result(assignment.lease, &output),
        honest.sign_result(assignment.lease, b"something else"),
    ] {
        let verdict = scheduler
            .accept_result(
                peer,
                &honest.address().verifier()?,
                assignment.lease,
                &output,
                &signature,
            )
            .await?;
        assert_eq!(
            verdict,
            Verdict::Rejected(
                "the result's signature does not match this volunteer's wallet".into()
            )
        );
    }
    let units = storage.audit_units(job).await?;
    assert!(units[0].result_wallets.is_empty(), "{units:?}");
    assert_eq!(units[0].state, "queued", "the forged lease was released");
    assert!(storage.wallet(&thief.address()).await?.is_none());
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
