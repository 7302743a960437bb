//! Two GPU runs at once on one page: a volunteer presses the device card's benchmark the
//! moment they press Start, with work queued, so the benchmark's matmuls, the GPU
//! warm-up and the job's units share one WebGPU device at the same time (headless
//! Chromium, SwiftShader). wgpu panics when one run's error scopes are popped while
//! another's are pushed, which killed the page's wasm: with the warm-up beside the first
//! unit and `kernels/src/gpu.rs` popping each scope after awaiting the one before, this
//! test failed (benchmark never shown). The benchmark beside the units alone, without the
//! warm-up, did not hit that window in two runs: the warm-up's compile holds it open.

use starling_e2e::browser::Browser;
use starling_e2e::page::Page;
use starling_e2e::{MatmulJob, Relay, TempDir};
use std::time::Duration;

/// Clicks Start and the benchmark together, from inside the page, once both are enabled.
const PRESS_BOTH_WHEN_ENABLED: &str = r#"
const timer = setInterval(() => {
  const start = document.querySelector('[data-testid="start"]');
  const bench = document.querySelector('[data-testid="run-benchmark"]');
  if (start && bench && !start.disabled && !bench.disabled) {
    clearInterval(timer);
    start.click();
    bench.click();
  }
}, 2);
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn benchmark_pressed_while_units_compute_leaves_both_correct() -> anyhow::Result<()> {
    let data = TempDir::new("gpu-at-once")?;
    let relay = Relay::start(data.path(), 64)?;
    let api = relay.api();
    // Eight units of 488 rows at the relay's 64 MFLOP: about a second of SwiftShader's
    // time, so units compute through the benchmark's runs.
    let job = MatmulJob::random(8 * 488, 256, 256, 3);
    let id = api.submit_with_quorum(&job.body, 1).await?;
    let browser = Browser::start_recording_console("gpu-at-once").await?;
    browser.goto(&relay.url()).await?;
    browser
        .execute(PRESS_BOTH_WHEN_ENABLED, serde_json::json!([]))
        .await?;
    let measured = browser
        .wait_text("benchmark", Duration::from_secs(60), |t| {
            t.contains("GFLOP/s")
        })
        .await?;
    eprintln!("benchmark beside the units: {measured}");
    let done = api.wait_done(&id, Duration::from_secs(120)).await?;
    eprintln!("job done: {:?}", done.progress);
    let (status, result) = api.result(&id).await?;
    assert_eq!(status, 200);
    job.check(&result)?;
    let errors: Vec<String> = browser
        .console()
        .await?
        .into_iter()
        .filter(|e| e.is_page_error())
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "the page logged errors: {errors:#?}");
    // The page's performance marks (how long Start took to reach the first unit) are
    // left once per page, not per unit: a volunteer's tab that runs for days must not
    // grow its timeline with every unit.
    let marks = browser
        .execute(
            "return performance.getEntriesByType('mark').map(m => m.name);",
            serde_json::json!([]),
        )
        .await?;
    let marks: Vec<String> = serde_json::from_value(marks)?;
    let units = done.progress.units_total;
    assert!(units >= 8, "the job had eight units: {done:?}");
    assert!(
        marks.iter().any(|m| m == "starling:computed-2"),
        "the page marks its units: {marks:?}"
    );
    assert!(
        marks.len() <= 12,
        "{} marks after {units} units: {marks:?}",
        marks.len()
    );
    Ok(())
}
