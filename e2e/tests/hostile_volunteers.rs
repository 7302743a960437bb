//! Volunteers who attack the network rather than compute for it, against a real relay
//! over real WebRTC. A wallet that takes units and hands them straight back (to exhaust
//! their jobs' retries) once failed every queued job; now a hand-back counts against the
//! wallet, never returns the unit to it at once, and cuts the wallet off after a few.

use starling_api::JobState;
use starling_e2e::{MatmulJob, Relay, TempDir, Volunteer};
use starling_protocol::WalletKey;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wallet_that_hands_back_every_unit_cannot_fail_a_job() -> anyhow::Result<()> {
    let data = TempDir::new("fail-loop")?;
    let relay = Relay::start_with(data.path(), 1, &["--lease-secs", "2"])?;
    let api = relay.api();
    let attacker = WalletKey::from_seed(rand::random());
    let key_file = data.path().join("attacker.key");
    std::fs::write(&key_file, attacker.to_hex())?;
    let log = data.path().join("attacker.log");
    let key_file = key_file.display().to_string();
    // The attacker alone first: everything it is given, it hands back.
    let _attacker = Volunteer::start_logged(
        &relay.url(),
        &[
            "--cpu",
            "--key-file",
            &key_file,
            "--fault",
            "fail",
            "--fault-rate",
            "1",
        ],
        &log,
    )?;
    // 4096 x 128 x 64 at 1 MFLOP a unit: 68 units, each needing two agreeing wallets.
    let job = MatmulJob::random(4096, 128, 64, 19);
    let id = api.submit(&job.body).await?;
    let address = attacker.address().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let record = api.job(&id).await?;
        // Before: the unit went straight back to the same wallet, and ten hand-backs of
        // it failed the job within seconds.
        assert_ne!(
            record.state,
            JobState::Failed,
            "one wallet failed the job: {record:?}"
        );
        if api.wallet(&address).await?.quarantined {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the attacker was never cut off");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Honest volunteers arrive and finish the job the attacker could not fail.
    let _honest = [
        Volunteer::start_with(&relay.url(), &["--cpu"])?,
        Volunteer::start_with(&relay.url(), &["--cpu"])?,
    ];
    let done = api.wait_done(&id, Duration::from_secs(120)).await?;
    assert_eq!(done.state, JobState::Done, "{done:?}");
    job.check(&api.result(&id).await?.1)?;

    let standing = api.wallet(&address).await?;
    assert_eq!(standing.valid_results, 0, "{standing:?}");
    assert!(
        standing.handbacks >= 9,
        "the attacker handed units back: {standing:?}"
    );
    let text = std::fs::read_to_string(&log)?;
    assert!(
        text.contains("injecting a fault"),
        "the attacker never misbehaved:\n{text}"
    );
    Ok(())
}
