//! A registered kernel that never ends its loop, run over native volunteers on lavapipe
//! (each with a record of honest built-in work): each unit outlives its lease on one
//! volunteer after another, the relay suspends the kernel after three distinct
//! volunteers, fails its job with that reason and refunds the escrow, refuses new jobs
//! of it, and the volunteers go on to compute other work.

use serde_json::json;
use starling_api::manifest::KernelManifest;
use starling_api::{JobState, RegisterKernel, SubmitJob};
use starling_e2e::{KernelJob, Relay, TempDir, Volunteer};
use starling_protocol::WalletKey;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_kernel_is_suspended_its_job_fails_and_is_refunded() -> anyhow::Result<()> {
    let data = TempDir::new("endless-kernel")?;
    // Short leases: the kernel's declared FLOPs earn its units the shortest.
    let relay = Relay::start_with(data.path(), 1, &["--lease-secs", "2"])?;
    let api = relay.api();
    let mut volunteers = Vec::new();
    let mut wallets = Vec::new();
    for i in 0..3 {
        let key = WalletKey::from_seed(rand::random());
        let key_file = data.path().join(format!("wallet-{i}.key"));
        std::fs::write(&key_file, key.to_hex())?;
        let key_arg = key_file.display().to_string();
        volunteers.push(Volunteer::start_with(
            &relay.url(),
            &["--key-file", key_arg.as_str()],
        )?);
        wallets.push(key.address().to_string());
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while api.stats().await?.volunteers < 3 {
        anyhow::ensure!(Instant::now() < deadline, "the volunteers did not connect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Only volunteers with a record count toward suspending a kernel (three fresh
    // wallets sitting on its units would otherwise suspend anyone's): each earns one on
    // built-in work first.
    for round in 0..5 {
        let warm_up = KernelJob::montecarlo(60_000, 100 + round)?;
        let id = api.submit_with_quorum(&warm_up.body, 1).await?;
        api.wait_done(&id, Duration::from_secs(120)).await?;
        let mut short = 0;
        for wallet in &wallets {
            if api.wallet(wallet).await?.valid_results < 3 {
                short += 1;
            }
        }
        if short == 0 {
            break;
        }
        anyhow::ensure!(
            round < 4,
            "{short} volunteers without a record after five jobs"
        );
    }

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kernels");
    let manifest: KernelManifest =
        serde_json::from_str(&std::fs::read_to_string(dir.join("endless.json"))?)?;
    let source = std::fs::read_to_string(dir.join("endless.wgsl"))?;
    let kernel = api
        .client()
        .register_kernel(&RegisterKernel { source, manifest })
        .await?;
    let before = api.client().account().await?.balance_micro;
    let job = api
        .client()
        .submit(
            &SubmitJob::new(kernel.id.clone(), json!({"n": 6 * 4096})),
            None,
        )
        .await?;
    let escrowed = before - api.client().account().await?.balance_micro;
    anyhow::ensure!(escrowed > 0, "the job's price went into escrow");

    // The job fails, naming the suspension.
    let id = job.id.to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    let failed = loop {
        let job = api.job(&id).await?;
        match job.state {
            JobState::Failed => break job,
            JobState::Done | JobState::Cancelled => {
                anyhow::bail!("the job ended otherwise: {job:?}")
            }
            JobState::Queued | JobState::Running => {}
        }
        anyhow::ensure!(Instant::now() < deadline, "the job never failed: {job:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let reason = failed.error.unwrap_or_default();
    anyhow::ensure!(
        reason.contains("suspended") && reason.contains("3 distinct volunteers"),
        "{reason}"
    );
    // Nothing was paid out of it, so all of it came back.
    anyhow::ensure!(
        api.client().account().await?.balance_micro == before,
        "the escrow was not refunded in full"
    );
    // The kernel says so, and takes no new job.
    let shown = api.client().custom_kernel(&kernel.id).await?;
    anyhow::ensure!(shown.suspended.is_some(), "{shown:?}");
    let refused = api
        .client()
        .submit(&SubmitJob::new(kernel.id.clone(), json!({"n": 64})), None)
        .await;
    anyhow::ensure!(
        refused.as_ref().err().and_then(|e| e.status()) == Some(422),
        "a suspended kernel took a job: {refused:?}"
    );

    // The volunteers go on with other work once their devices are done with it.
    let other = KernelJob::montecarlo(100_000, 3)?;
    let other_id = api.submit_with_quorum(&other.body, 1).await?;
    api.wait_done(&other_id, Duration::from_secs(180)).await?;
    let (status, result) = api.result(&other_id).await?;
    anyhow::ensure!(status == 200);
    other.check(&result)?;
    Ok(())
}
