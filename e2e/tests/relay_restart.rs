//! Kill the relay (SIGKILL) in the middle of a job and start it again on the same data
//! directory: the volunteer reconnects by itself within 10 s, and the job resumes and
//! finishes with the right result.

use starling_e2e::{MatmulJob, Relay, TempDir, Volunteer};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_survives_a_relay_crash_and_restart() -> anyhow::Result<()> {
    let data = TempDir::new("restart")?;
    let mut relay = Relay::start(data.path(), 1)?;
    let api = relay.api();
    // Many small units so that the kill lands mid-job.
    let job = MatmulJob::random(2048, 96, 96, 21);
    let id = api.submit_with_quorum(&job.body, 1).await?;
    let total = api.job(&id).await?.progress.units_total;
    assert!(total >= 20, "job has {total} units");

    let _volunteer = Volunteer::start(&relay.url())?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let progress = api.job(&id).await?.progress.units_done;
        if progress >= 3 {
            assert!(
                progress < total,
                "the job finished before the kill; make it bigger"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no progress before the kill");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    relay.kill();
    let done_at_kill = {
        relay.restart()?;
        api.job(&id).await?.progress.units_done
    };
    let back = Instant::now();
    let deadline = back + Duration::from_secs(10);
    while api.stats().await?.volunteers == 0 {
        assert!(
            Instant::now() < deadline,
            "the volunteer did not reconnect within 10 s of the relay being back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "the volunteer reconnected {:?} after the relay was back",
        back.elapsed()
    );
    assert!(
        done_at_kill >= 3,
        "accepted results survived the crash: {done_at_kill}"
    );
    // The volunteer reconnects by itself.
    api.wait_done(&id, Duration::from_secs(120)).await?;
    let (status, result) = api.result(&id).await?;
    assert_eq!(status, 200);
    job.check(&result)?;
    Ok(())
}
