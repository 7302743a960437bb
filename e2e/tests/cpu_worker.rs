//! The browser's CPU fallback (`?device=cpu`, what a visitor without WebGPU gets) computes
//! on a Web Worker: while units that take the CPU over a second each run, the page's
//! own thread keeps ticking, and the job's result matches the CPU reference. At 20%
//! intensity the same work spends at most half its time computing (the duty cycle).

use starling_e2e::browser::Browser;
use starling_e2e::{MatmulJob, Relay, TempDir};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_fallback_runs_on_a_web_worker_and_never_freezes_the_page() -> anyhow::Result<()> {
    let data = TempDir::new("cpu-worker")?;
    // 4 GFLOP units: long enough on a CPU that running one on the page's thread would
    // stall it far beyond the bound checked below (2 GFLOP units took 0.87 s on a 2-core
    // Xeon VM, under the test's own one-second floor).
    let relay = Relay::start(data.path(), 4000)?;
    let api = relay.api();
    let browser = Browser::start("cpu-worker").await?;
    browser
        .goto(&format!("{}/?device=cpu", relay.url()))
        .await?;
    let device = browser
        .wait_text("device", Duration::from_secs(30), |t| t != "Detecting…")
        .await?;
    assert!(
        device.starts_with("CPU fallback (Web Worker)"),
        "the CPU fallback runs on a worker: {device}"
    );

    // 3812 x 1024 x 1024: 8 GFLOP, split into two units of 1906 rows (4 GFLOP) each.
    let job = MatmulJob::random(ROWS, 1024, 1024, 21);
    let id = api.submit_with_quorum(&job.body, 1).await?;
    browser.click("start").await?;
    browser
        .wait_text("status", Duration::from_secs(30), |t| {
            starling_e2e::connected(t)
        })
        .await?;
    // A heartbeat on the page's thread: the longest gap between 20 ms ticks is how long
    // the page was frozen.
    browser
        .execute(
            "window.__gap = 0; let last = performance.now();
             setInterval(() => { const now = performance.now();
               window.__gap = Math.max(window.__gap, now - last); last = now; }, 20);",
            serde_json::json!([]),
        )
        .await?;
    let done = api.wait_done(&id, Duration::from_secs(240)).await?;
    let (status, result) = api.result(&id).await?;
    assert_eq!(status, 200);
    job.check(&result)?;

    let units = done.progress.units_total as f64;
    let gflops: f64 = browser
        .wait_text("gflops", Duration::from_secs(10), |t| {
            t.parse::<f64>().is_ok()
        })
        .await?
        .parse()?;
    // The meter's GFLOP/s is FLOPs over the time spent computing.
    let unit_ms = JOB_FLOPS / (gflops * 1e6) / units.max(1.0);
    let gap = browser
        .execute("return window.__gap;", serde_json::json!([]))
        .await?
        .as_f64()
        .unwrap_or(f64::INFINITY);
    eprintln!("{units} CPU units of {unit_ms:.0} ms each at {gflops} GFLOP/s; longest page stall {gap:.0} ms");
    assert!(
        unit_ms > 1000.0,
        "units must be long enough to tell a worker from the page's thread: {unit_ms:.0} ms"
    );
    assert!(
        gap < unit_ms / 2.0,
        "the page froze for {gap:.0} ms while {unit_ms:.0} ms units ran: the CPU work is on its thread"
    );
    browser.screenshot("volunteer-cpu-worker").await?;

    // The intensity slider at 20%: after each unit the volunteer rests four times as long
    // as it computed, so the job's wall time is mostly rest.
    browser.set_value("intensity", "20").await?;
    let busy_before_ms = JOB_FLOPS / (gflops * 1e6);
    let job = MatmulJob::random(ROWS, 1024, 1024, 22);
    let submitted = std::time::Instant::now();
    let id = api.submit_with_quorum(&job.body, 1).await?;
    api.wait_done(&id, Duration::from_secs(240)).await?;
    let wall_ms = submitted.elapsed().as_secs_f64() * 1e3;
    let (status, result) = api.result(&id).await?;
    assert_eq!(status, 200);
    job.check(&result)?;
    let gflops: f64 = browser.text("gflops").await?.unwrap_or_default().parse()?;
    let busy_ms = 2.0 * JOB_FLOPS / (gflops * 1e6) - busy_before_ms;
    let duty = busy_ms / wall_ms;
    eprintln!(
        "at 20% intensity: computed {busy_ms:.0} ms of {wall_ms:.0} ms ({:.0}%)",
        duty * 100.0
    );
    assert!(
        duty < 0.5,
        "at 20% intensity the volunteer computed {:.0}% of the time",
        duty * 100.0
    );
    Ok(())
}

/// Rows of A in each job.
const ROWS: u32 = 3812;

/// FLOPs of one ROWS x 1024 x 1024 matmul job.
const JOB_FLOPS: f64 = 2.0 * ROWS as f64 * 1024.0 * 1024.0;
