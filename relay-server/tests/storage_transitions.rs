//! Lease life cycle against a real SQLite file: results count once, stale leases change
//! nothing, expired and orphaned leases go back to the queue, and a restart resumes.

use relay_server::storage::{Completion, LeaseTerms, NewJob, PeerId, Storage};
use starling_protocol::{JobId, LeaseId};

fn lease() -> LeaseId {
    LeaseId::from_uuid(uuid::Uuid::new_v4())
}

fn job(units: usize) -> NewJob {
    NewJob {
        id: JobId::from_uuid(uuid::Uuid::new_v4()),
        kernel: "matmul".into(),
        params: serde_json::json!({"m": 1, "k": 1, "n": 1}),
        input: vec![0; 8],
        units: (0..units).map(|i| format!("{{\"i\":{i}}}")).collect(),
        unit_flops: (0..units as u64).map(|i| 1_000_000 * (i + 1)).collect(),
        flops: 2,
    }
}

#[tokio::test]
async fn lease_deadlines_follow_unit_cost_within_bounds() -> anyhow::Result<()> {
    let storage = Storage::open(&temp_dir("deadlines")).await?;
    storage.insert_job(&job(3)).await?; // units of 1, 2 and 3 MFLOP
    let peer = PeerId::new();
    let terms = LeaseTerms {
        start_ms: 10_000,
        min_ms: 1_500,
        max_ms: 2_500,
        slack_ms: 500,
        ms_per_flop: 1e-3, // 1 s per MFLOP
    };
    let mut deadlines = Vec::new();
    for _ in 0..3 {
        let leased = storage
            .lease_next(peer, lease(), terms)
            .await?
            .expect("unit");
        deadlines.push((leased.flops, leased.deadline_ms));
    }
    // 500 + 1000 = 1500; 500 + 2000 = 2500; 500 + 3000 = 3500, capped at 2500.
    assert_eq!(
        deadlines,
        [
            (1_000_000, 11_500),
            (2_000_000, 12_500),
            (3_000_000, 12_500)
        ]
    );
    Ok(())
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("starling-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[tokio::test]
async fn a_result_counts_once_and_stale_leases_change_nothing() -> anyhow::Result<()> {
    let dir = temp_dir("once");
    let storage = Storage::open(&dir).await?;
    let j = job(2);
    storage.insert_job(&j).await?;
    let (peer, other) = (PeerId::new(), PeerId::new());
    let l1 = lease();
    let unit = storage
        .lease_next(peer, l1, LeaseTerms::until(i64::MAX))
        .await?
        .expect("a queued unit");
    assert_eq!(unit.job, j.id);
    // Another peer cannot answer someone else's lease.
    assert_eq!(
        storage.complete_lease(l1, other, b"x").await?,
        Completion::Stale
    );
    assert_eq!(
        storage.complete_lease(l1, peer, b"out1").await?,
        Completion::Accepted { job: j.id }
    );
    // A duplicate of the same result is stale.
    assert_eq!(
        storage.complete_lease(l1, peer, b"out1").await?,
        Completion::Stale
    );
    let l2 = lease();
    storage
        .lease_next(peer, l2, LeaseTerms::until(i64::MAX))
        .await?
        .expect("second unit");
    assert!(storage
        .lease_next(peer, lease(), LeaseTerms::until(i64::MAX))
        .await?
        .is_none());
    assert_eq!(
        storage.complete_lease(l2, peer, b"out2").await?,
        Completion::JobComplete { job: j.id }
    );
    assert_eq!(
        storage.unit_outputs(j.id).await?,
        vec![b"out1".to_vec(), b"out2".to_vec()]
    );
    assert!(storage.finish_job(j.id, b"merged").await?);
    assert!(
        !storage.finish_job(j.id, b"again").await?,
        "a job finishes once"
    );
    let record = storage.job(j.id).await?.expect("job");
    assert_eq!(record.progress.units_done, 2);
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

#[tokio::test]
async fn expired_and_orphaned_leases_are_requeued_and_late_results_refused() -> anyhow::Result<()> {
    let dir = temp_dir("requeue");
    let storage = Storage::open(&dir).await?;
    let j = job(2);
    storage.insert_job(&j).await?;
    let (a, b) = (PeerId::new(), PeerId::new());
    let expired = lease();
    storage
        .lease_next(a, expired, LeaseTerms::until(1_000))
        .await?
        .expect("unit");
    let orphaned = lease();
    storage
        .lease_next(b, orphaned, LeaseTerms::until(i64::MAX))
        .await?
        .expect("unit");
    assert_eq!(
        storage.release_lease(orphaned, a).await?,
        None,
        "only the holder can hand a lease back"
    );
    assert_eq!(storage.expire_leases(2_000).await?, 1);
    assert_eq!(storage.release_peer(b).await?, 1);
    // Results on void leases count for nothing.
    assert_eq!(
        storage.complete_lease(expired, a, b"late").await?,
        Completion::Stale
    );
    assert_eq!(
        storage.complete_lease(orphaned, b, b"late").await?,
        Completion::Stale
    );
    // Both units can be leased again.
    assert!(storage
        .lease_next(a, lease(), LeaseTerms::until(i64::MAX))
        .await?
        .is_some());
    assert!(storage
        .lease_next(a, lease(), LeaseTerms::until(i64::MAX))
        .await?
        .is_some());
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

#[tokio::test]
async fn a_reopened_database_keeps_accepted_results_and_voids_leases() -> anyhow::Result<()> {
    let dir = temp_dir("reopen");
    let j = job(3);
    let peer = PeerId::new();
    let held = lease();
    {
        let storage = Storage::open(&dir).await?;
        storage.insert_job(&j).await?;
        let done = lease();
        storage
            .lease_next(peer, done, LeaseTerms::until(i64::MAX))
            .await?
            .expect("unit");
        storage.complete_lease(done, peer, b"kept").await?;
        storage
            .lease_next(peer, held, LeaseTerms::until(i64::MAX))
            .await?
            .expect("unit");
    }
    let storage = Storage::open(&dir).await?;
    assert_eq!(storage.recover_leases().await?, 1);
    let record = storage.job(j.id).await?.expect("job survives");
    assert_eq!(
        (record.progress.units_done, record.progress.units_leased),
        (1, 0)
    );
    assert_eq!(
        storage.complete_lease(held, peer, b"stale").await?,
        Completion::Stale
    );
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
