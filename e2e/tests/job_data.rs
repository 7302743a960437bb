//! A submitter's data, against a real relay process: inputs and results are sealed at
//! rest, `starling purge` (DELETE …/data) erases a job's data so that no byte of it is
//! left in the database file or its WAL, retention purges on schedule, and the
//! active-jobs quota holds under concurrent submissions.

use anyhow::{bail, Context};
use base64::Engine as _;
use starling_api::{Job, JobState};
use starling_e2e::{binary, Api, KernelJob, MatmulJob, Relay, TempDir, Volunteer};
use std::path::Path;
use std::time::{Duration, Instant};

/// The database file and its WAL, as bytes.
fn database_bytes(data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    for name in ["starling.sqlite3", "starling.sqlite3-wal"] {
        match std::fs::read(data_dir.join(name)) {
            Ok(file) => bytes.extend(file),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(bytes)
}

/// How many of the 32-byte windows across `data` (every 97th offset, so a handful of
/// slices cover the whole of it) `haystack` contains.
fn found_in(haystack: &[u8], data: &[u8]) -> usize {
    let mut by_prefix: std::collections::HashMap<&[u8], Vec<&[u8]>> = Default::default();
    for at in (0..data.len().saturating_sub(32)).step_by(97) {
        let window = &data[at..at + 32];
        by_prefix.entry(&window[..8]).or_default().push(window);
    }
    let mut found = std::collections::HashSet::new();
    for at in 0..haystack.len().saturating_sub(32) {
        if let Some(windows) = by_prefix.get(&haystack[at..at + 8]) {
            for window in windows {
                if &haystack[at..at + 32] == *window {
                    found.insert(*window);
                }
            }
        }
    }
    found.len()
}

fn input_bytes(job: &MatmulJob, name: &str) -> anyhow::Result<Vec<u8>> {
    let encoded = job.body.input.get(name).context("input in the body")?;
    Ok(base64::engine::general_purpose::STANDARD.decode(encoded)?)
}

fn starling(relay: &Relay, args: &[&str]) -> anyhow::Result<std::process::Output> {
    Ok(std::process::Command::new(binary("starling")?)
        .args([
            "--relay",
            &relay.url(),
            "--api-key",
            relay.dev_key().unwrap_or_default(),
        ])
        .args(args)
        .output()?)
}

#[tokio::test]
async fn purging_leaves_no_byte_of_a_jobs_data() -> anyhow::Result<()> {
    let data = TempDir::new("purge")?;
    let relay = Relay::start(data.path(), 1)?;
    let api = relay.api();
    let _volunteer = Volunteer::start_with(&relay.url(), &["--cpu"])?;
    let job = MatmulJob::random(96, 48, 64, 11);
    let id = api.submit_with_quorum(&job.body, 1).await?;
    api.wait_done(&id, Duration::from_secs(90)).await?;
    let (status, result) = api.result(&id).await?;
    assert_eq!(status, 200);
    job.check(&result)?;
    let a = input_bytes(&job, "a")?;

    // Sealed at rest: the input was never written as it was sent.
    assert_eq!(
        found_in(&database_bytes(data.path())?, &a),
        0,
        "input stored in the clear"
    );

    // Still running jobs keep their data.
    let running = api
        .submit_with_quorum(&KernelJob::montecarlo(100_000_000, 3)?.body, 2)
        .await?;
    let refused = starling(&relay, &["purge", &running])?;
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("cancel it first"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    let purged = starling(&relay, &["--json", "purge", &id])?;
    assert!(purged.status.success(), "{purged:?}");
    let record: Job = serde_json::from_slice(&purged.stdout)?;
    assert!(record.purged_ms.is_some(), "{record:?}");
    assert_eq!(record.state, JobState::Done, "{record:?}");

    let response = api
        .http()
        .get(format!("{}/api/v1/jobs/{id}/result", api.base()))
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 410);
    let problem: serde_json::Value = response.json().await?;
    assert_eq!(problem["type"], "/problems/purged", "{problem}");

    // Neither the input nor any part of the result is left in the file or its WAL.
    let bytes = database_bytes(data.path())?;
    assert_eq!(found_in(&bytes, &a), 0, "input left after the purge");
    assert_eq!(found_in(&bytes, &input_bytes(&job, "b")?), 0);
    assert_eq!(found_in(&bytes, &result), 0, "result left after the purge");
    assert!(
        std::fs::read_dir(data.path().join("job-keys"))?
            .all(|entry| entry.map(|e| e.file_name() != id.as_str()).unwrap_or(true)),
        "the job's key is destroyed"
    );
    // A second purge changes nothing and says so with the same record.
    let again = starling(&relay, &["--json", "purge", &id])?;
    assert!(again.status.success(), "{again:?}");

    drop(relay);
    starling_e2e::audit(data.path())?;
    Ok(())
}

#[tokio::test]
async fn retention_purges_on_schedule() -> anyhow::Result<()> {
    let data = TempDir::new("retention")?;
    // Inputs kept about 2 s after a job ends, results about 6 s.
    let relay = Relay::start_with(
        data.path(),
        1,
        &[
            "--retain-inputs-days",
            "0.000025",
            "--retain-results-days",
            "0.00007",
        ],
    )?;
    let api = relay.api();
    let volunteer = Volunteer::start_with(&relay.url(), &["--cpu"])?;
    let job = MatmulJob::random(32, 16, 16, 5);
    let id = api.submit_with_quorum(&job.body, 1).await?;
    api.wait_done(&id, Duration::from_secs(60)).await?;
    drop(volunteer);
    let ended = Instant::now();
    let (status, _) = api.result(&id).await?;
    assert_eq!(status, 200, "the result is there at first");

    let until = |what: &'static str, when: fn(&Job) -> Option<i64>, limit: Duration| {
        let api = &api;
        let id = &id;
        async move {
            loop {
                let record = api.job(id).await?;
                if when(&record).is_some() {
                    return anyhow::Ok(record);
                }
                if ended.elapsed() > limit {
                    bail!("{what} not set after {limit:?}: {record:?}");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    until(
        "inputs_purged_ms",
        |job| job.inputs_purged_ms,
        Duration::from_secs(20),
    )
    .await?;
    let (status, _) = api.result(&id).await?;
    assert_eq!(status, 200, "inputs go first, the result stays");
    until("purged_ms", |job| job.purged_ms, Duration::from_secs(30)).await?;
    let (status, _) = api.result(&id).await?;
    assert_eq!(status, 410);
    Ok(())
}

#[tokio::test]
async fn the_active_jobs_quota_holds_under_concurrent_submissions() -> anyhow::Result<()> {
    let data = TempDir::new("quota-race")?;
    let relay = Relay::start_with(data.path(), 64, &["--max-active-jobs", "2"])?;
    let base = relay.url();
    let key = relay.dev_key().unwrap_or_default().to_owned();
    let mut submissions = Vec::new();
    for seed in 0..12 {
        let api = Api::with_key(&base, &key);
        submissions.push(tokio::spawn(async move {
            let body = KernelJob::montecarlo(1_000_000, seed)?.body;
            let response = api
                .http()
                .post(format!("{}/api/v1/jobs", api.base()))
                .json(&body)
                .send()
                .await?;
            anyhow::Ok(response.status().as_u16())
        }));
    }
    let mut statuses = Vec::new();
    for submission in submissions {
        statuses.push(submission.await??);
    }
    let accepted = statuses.iter().filter(|s| **s == 201).count();
    assert_eq!(accepted, 2, "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 429),
        "{statuses:?}"
    );
    Ok(())
}
