//! Volunteers that return wrong matmul results, disconnect mid-unit, answer after their
//! lease expired, or send every result twice cannot stall or corrupt a job: wrong results
//! fail Freivalds' check at the relay, leases are reissued, and late or duplicate results
//! count once.

use starling_e2e::{MatmulJob, Relay, TempDir, Volunteer};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_stalling_and_duplicating_volunteers_cannot_break_a_job() -> anyhow::Result<()> {
    let data = TempDir::new("faults")?;
    let relay = Relay::start_with(data.path(), 1, &["--lease-secs", "2"])?;
    let api = relay.api();
    // Rates keep the chance that one unit meets 8 faults in a row (failing the job by
    // design) negligible: under 0.3^8 per unit.
    let faults = [
        ("wrong", "0.3"),
        ("drop", "0.3"),
        ("stall", "0.3"),
        ("duplicate", "1"),
    ];
    let mut volunteers = vec![Volunteer::start_with(&relay.url(), &["--cpu"])?];
    let mut logs = Vec::new();
    for (fault, rate) in faults {
        let log = data.path().join(format!("volunteer-{fault}.log"));
        volunteers.push(Volunteer::start_logged(
            &relay.url(),
            &["--cpu", "--fault", fault, "--fault-rate", rate],
            &log,
        )?);
        logs.push((fault, log));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while api.stats().await?.volunteers < 5 {
        assert!(Instant::now() < deadline, "volunteers did not connect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // 2048 rows at 1 MFLOP a unit (122 rows of 64x64): 17 units.
    let job = MatmulJob::random(2048, 64, 64, 3);
    let id = api.submit(&job.body).await?;
    let done = api.wait_done(&id, Duration::from_secs(120)).await?;
    let progress = &done.progress;
    assert_eq!(progress.units_done, progress.units_total, "{done:?}");
    assert!(progress.units_total >= 16, "{done:?}");
    let (status, result) = api.result(&id).await?;
    assert_eq!(status, 200);
    job.check(&result)?;

    // The faults really happened: each faulty volunteer logged injecting one.
    drop(volunteers);
    for (fault, log) in logs {
        let text = std::fs::read_to_string(&log)?;
        assert!(
            text.contains("injecting a fault"),
            "the {fault} volunteer never misbehaved:\n{text}"
        );
        if fault == "wrong" {
            // Caught by the spot check (a unit of the job) or by its known answer (a
            // known-answer unit, which the relay may hand out from the first lease on).
            assert!(
                text.contains("result not accepted: the result failed the kernel's check")
                    || text.contains("result not accepted: the result is wrong"),
                "wrong results were refused:\n{text}"
            );
        }
    }
    Ok(())
}
