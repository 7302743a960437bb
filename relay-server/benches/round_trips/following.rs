//! How soon a relay hears of a job another relay on the same PostgreSQL database stored:
//! reading the changed rows every 250 ms alone, and with LISTEN/NOTIFY as well
//! (`storage/others.rs`), in the same run on the same server.

use crate::{job, postgres};
use starling_relay::storage::{Changed, Following, Storage};
use std::time::{Duration, Instant};

/// Jobs stored per way of following.
const JOBS: usize = 40;

/// Relay A stores [`JOBS`] one-unit jobs, each at a random moment of the follower's read
/// cycle; relay B's follower announces each as new work. Prints the delay's percentiles.
pub async fn changes_across_relays() -> anyhow::Result<()> {
    let server = match postgres::Postgres::shared() {
        Ok(server) => server,
        Err(e) => {
            println!("changes across relays skipped: {e:#}");
            return Ok(());
        }
    };
    println!("changes across relays (PostgreSQL): a job stored on relay A, announced on relay B");
    for (how, notified) in [("reads every 250 ms", false), ("+ LISTEN/NOTIFY", true)] {
        let url = server.database()?;
        let dir = crate::bench_dir();
        let a = Storage::open_postgres(&url, &dir).await?;
        let following = Following {
            notified,
            ..Following::default()
        };
        let b = Storage::open_postgres_following(&url, &dir, following).await?;
        let mut heard = b.others_changes();
        let mut delays = Vec::with_capacity(JOBS);
        for _ in 0..JOBS {
            tokio::time::sleep(Duration::from_millis(rand::random_range(50..300))).await;
            let stored = Instant::now();
            a.insert_job(&job(1, 1, None)).await?;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            loop {
                match tokio::time::timeout_at(deadline, heard.recv()).await {
                    Ok(Ok(Changed::NewWork)) => break,
                    Ok(Ok(_)) => {}
                    other => anyhow::bail!("relay B did not hear of the job: {other:?}"),
                }
            }
            delays.push(stored.elapsed());
        }
        delays.sort();
        let at = |q: f64| delays[((delays.len() - 1) as f64 * q).round() as usize];
        println!(
            "  {how:<20} p50 {:>7.1} ms   p90 {:>7.1} ms   max {:>7.1} ms   ({JOBS} jobs, each timed from before its insert commits)",
            at(0.5).as_secs_f64() * 1e3,
            at(0.9).as_secs_f64() * 1e3,
            at(1.0).as_secs_f64() * 1e3,
        );
    }
    Ok(())
}
