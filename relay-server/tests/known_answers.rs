//! Known-answer units are indistinguishable from new work (issue 19): a group of wallets
//! that pools every unit its members were sent never receives, as a known-answer test,
//! parameters any wallet was sent before, so a cheater that answers honestly only what
//! it recognises is still caught. Driven through the scheduler, as sessions drive it.

mod common;

use common::TempDir;
use starling_kernels::{Catalog, NamedInputs};
use starling_protocol::{Assignment, WalletAddress, WalletKey};
use starling_relay::scheduler::{LeaseError, Scheduler, SchedulerConfig, Speed, Verdict};
use starling_relay::storage::{PeerId, Storage};
use std::collections::HashSet;
use std::sync::Arc;

/// One-MFLOP units: a few thousand Monte Carlo samples each.
fn config(canary_rate: f64) -> SchedulerConfig {
    SchedulerConfig {
        unit_flops: 1_000_000,
        canary_rate,
        // The test makes its probes itself.
        probe_cpu_share: 0.0,
        ..SchedulerConfig::default()
    }
}

/// What a unit is, as a volunteer sees it: kernel, parameters and input.
fn seen_as(a: &Assignment) -> (String, String, Vec<u8>) {
    (a.kernel.clone(), a.params_json.clone(), a.input.clone())
}

/// The honest answer to `a`.
fn compute(a: &Assignment) -> anyhow::Result<Vec<u8>> {
    Ok(Catalog::builtin()
        .get(&a.kernel)?
        .run_cpu(&a.params_json, &a.input)?)
}

/// Leases to `wallet` on `scheduler`: `None` when there is nothing, `Err` once it is
/// quarantined.
async fn lease(
    scheduler: &Scheduler,
    wallet: WalletAddress,
) -> anyhow::Result<Result<Option<Assignment>, ()>> {
    match scheduler
        .next_assignment(PeerId::new(), wallet, None, Speed::NEWCOMER, None)
        .await
    {
        Ok(assigned) => Ok(Ok(assigned.map(|(a, _)| a))),
        Err(LeaseError::Quarantined(_)) => Ok(Err(())),
        Err(e) => Err(e.into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_answer_units_carry_work_nobody_saw_and_catch_a_cheater_that_pools_what_it_saw(
) -> anyhow::Result<()> {
    let dir = TempDir::new("known-answers");
    let storage = Storage::open(&dir).await?;
    let catalog = Arc::new(Catalog::builtin());
    let work = Scheduler::new(storage.clone(), catalog.clone(), config(0.0));
    // Everything any wallet was sent: the colluders' pool (honest wallets' units
    // included, as a group big enough learns most of what is out there).
    let mut seen: HashSet<(String, String, Vec<u8>)> = HashSet::new();

    // A real job, computed by two honest wallets, so that settled units exist to be
    // sent again.
    let job = work
        .submit(
            "montecarlo",
            serde_json::json!({"samples": 40_000u64, "seed": 3}),
            &NamedInputs::new(),
            None,
            None,
            None,
        )
        .await?;
    let honest = [
        WalletKey::from_seed(rand::random()).address(),
        WalletKey::from_seed(rand::random()).address(),
    ];
    loop {
        let mut any = false;
        for wallet in honest {
            if let Ok(Some(a)) = lease(&work, wallet).await? {
                any = true;
                let output = compute(&a)?;
                seen.insert(seen_as(&a));
                work.accept_result(PeerId::new(), wallet, a.lease, &output)
                    .await?;
            }
        }
        if !any {
            break;
        }
    }
    let record = storage.job(job).await?.expect("stored");
    assert_eq!(record.state.as_str(), "done", "{record:?}");

    // The relay's stock of fresh known-answer units.
    for _ in 0..3 {
        work.make_probe("montecarlo").await?;
    }
    // Probes are nobody's jobs: not listed, not counted, never leased as work.
    assert_eq!(
        storage.list_jobs(None, None, None, 100).await?.jobs.len(),
        1
    );
    assert_eq!(
        storage.counts().await?.jobs,
        vec![("done".to_owned(), 1)],
        "probes counted among jobs"
    );
    let newcomer = WalletKey::from_seed(rand::random()).address();
    assert!(
        lease(&work, newcomer)
            .await?
            .expect("not quarantined")
            .is_none(),
        "a probe's unit leased as work"
    );

    // Every lease a known-answer test from here on. The cheater answers honestly what
    // the pool saw before, and lies about the rest; its partner answers everything.
    let tests = Scheduler::new(storage.clone(), catalog, config(1.0));
    let cheater = WalletKey::from_seed(rand::random()).address();
    let partner = WalletKey::from_seed(rand::random()).address();
    let (mut sent, mut lies) = (0, 0);
    let mut quarantined = false;
    'leasing: loop {
        let mut any = false;
        for wallet in [cheater, partner] {
            let a = match lease(&tests, wallet).await? {
                Ok(Some(a)) => a,
                Ok(None) => continue,
                Err(()) if wallet == cheater => {
                    quarantined = true;
                    break 'leasing;
                }
                Err(()) => anyhow::bail!("the honest partner was quarantined"),
            };
            any = true;
            sent += 1;
            let known = !seen.insert(seen_as(&a));
            // Before: every known-answer lease was a settled unit of the real job, which
            // the honest wallets had been sent.
            assert!(
                !known,
                "a known-answer unit the pool saw before: {}",
                a.params_json
            );
            let mut output = compute(&a)?;
            if wallet == cheater && !known {
                lies += 1;
                output.iter_mut().for_each(|b| *b = b.wrapping_add(1));
            }
            let verdict = tests
                .accept_result(PeerId::new(), wallet, a.lease, &output)
                .await?;
            if wallet == partner {
                assert_eq!(verdict, Verdict::Accepted, "{}", a.params_json);
            }
        }
        if !any {
            break;
        }
    }
    eprintln!("{sent} known-answer units sent; the cheater lied {lies} times");
    // Before: the cheater recognised every known-answer unit and was never caught.
    assert!(
        quarantined,
        "the cheater was never quarantined ({lies} lies)"
    );
    Ok(())
}
