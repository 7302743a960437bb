//! `cargo bench -p starling-e2e --bench first_unit`: start to first unit on the real
//! volunteer page (issue 26, goal 6). Each trial opens the page in a fresh headless
//! Chromium profile (WebGPU on SwiftShader, real WebRTC to a real relay process) with a
//! matmul job already queued, presses Start as soon as it is enabled (a script in the
//! page clicks it, so WebDriver's own latency is not in the figures), and waits for the
//! page's "page open to first unit". The time is then broken down from the page's own
//! clock: navigation and resource timing, and the marks `web-ui/src/runtime.rs` leaves
//! (`starling:*`, once per page). Every figure is in one trial's page clock, so the
//! breakdown adds up to the page's own figure.
//!
//! Needs the built UI (`scripts/build-ui.sh`) and the relay binary:
//! `STARLING_E2E_PROFILE=release` takes it from `target/release` (build it with
//! `cargo build --release -p starling-relay`), as a deployed relay runs; otherwise the
//! tests' debug build. `STARLING_BENCH_TRIALS` sets the trials (default 5) and
//! `STARLING_BENCH_UNIT_MFLOPS` the relay's unit size (default 64, the relay's own).

use serde_json::{json, Value};
use starling_e2e::browser::Browser;
use starling_e2e::{MatmulJob, Relay, TempDir};
use std::time::Duration;

/// The stages, each from the mark (or timing) before it to its own: what the page did.
const STAGES: [(&str, &str); 11] = [
    ("document", "the HTML's response ended (navigation timing)"),
    ("wasm", "the app's .wasm fetched (resource timing)"),
    (
        "starling:detect",
        "the app started and began detecting the device",
    ),
    ("starling:adapter", "WebGPU adapter and device"),
    (
        "starling:detected",
        "the engine set up (CPU worker where no GPU)",
    ),
    ("starling:start", "Start pressed as soon as it was enabled"),
    (
        "starling:channel-open",
        "signaling, ICE, DTLS and SCTP: the data channel open",
    ),
    ("starling:welcome", "hello proved, welcome back"),
    ("starling:assigned-1", "first lease"),
    (
        "starling:computed-1",
        "first unit computed (its pipeline compiled)",
    ),
    ("starling:acked-1", "first result recorded by the relay"),
];

/// Reads one trial's timeline from the page: each stage's time on the page clock.
const TIMELINE: &str = r#"
const nav = performance.getEntriesByType('navigation')[0];
const wasm = performance.getEntriesByType('resource')
  .filter(r => r.name.split('?')[0].endsWith('.wasm'))
  .map(r => r.responseEnd);
const at = { document: nav ? nav.responseEnd : null,
             wasm: wasm.length ? Math.max(...wasm) : null };
for (const m of performance.getEntriesByType('mark')) {
  if (m.name.startsWith('starling:')) at[m.name] = m.startTime;
}
return at;
"#;

/// Clicks Start the moment it is enabled, from inside the page.
const PRESS_START_WHEN_ENABLED: &str = r#"
const timer = setInterval(() => {
  const start = document.querySelector('[data-testid="start"]');
  if (start && !start.disabled) { clearInterval(timer); start.click(); }
}, 2);
"#;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let trials = count("STARLING_BENCH_TRIALS", 5)?;
    let unit_mflops = count("STARLING_BENCH_UNIT_MFLOPS", 64)?;
    let data = TempDir::new("bench-first-unit")?;
    let relay = Relay::start(data.path(), unit_mflops as u64)?;
    let api = relay.api();
    println!(
        "start to first unit: {trials} trials, fresh Chromium profile each, \
         {unit_mflops} MFLOP units, a job of four queued before the page opens"
    );
    // The page without its GPU warm-up first (`?warmup=off`): the baseline, then as
    // volunteers get it; trials alternate so that drift on a shared machine hits both.
    let mut timelines: [Vec<Value>; 2] = [Vec::new(), Vec::new()];
    for trial in 0..2 * trials {
        let warm = trial % 2 == 1;
        // Four equal units of an m x 256 x 256 matmul at the relay's unit size, so the
        // first unit's compute less the second's is what its pipeline's compile cost.
        let rows = (unit_mflops as u32 * 1_000_000 / (2 * 256 * 256)).clamp(1, 1024);
        let job = MatmulJob::random(4 * rows, 256, 256, trial as u64);
        let id = api.submit_with_quorum(&job.body, 1).await?;
        let browser = if std::env::var_os("STARLING_BENCH_CONSOLE").is_some() {
            Browser::start_recording_console("bench-first-unit").await?
        } else {
            Browser::start("bench-first-unit").await?
        };
        let page = if warm {
            relay.url()
        } else {
            format!("{}/?warmup=off", relay.url())
        };
        browser.goto(&page).await?;
        browser.execute(PRESS_START_WHEN_ENABLED, json!([])).await?;
        let shown = browser
            .wait_text("first-unit-ms", Duration::from_secs(120), |t| {
                t.ends_with("ms")
            })
            .await?;
        // The first result's acknowledgement and the second unit land just after.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let timeline = loop {
            let timeline = browser.execute(TIMELINE, json!([])).await?;
            if !timeline["starling:acked-1"].is_null() && !timeline["starling:computed-2"].is_null()
            {
                break timeline;
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "no second unit within 60 s: {timeline}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        println!(
            "trial {} ({}): the page shows {shown}",
            trial / 2 + 1,
            if warm { "warm-up" } else { "no warm-up" }
        );
        timelines[usize::from(warm)].push(timeline);
        if std::env::var_os("STARLING_BENCH_CONSOLE").is_some() {
            use starling_e2e::page::Page;
            for entry in browser.console().await? {
                println!("  console: {entry:?}");
            }
        }
        drop(browser);
        // The next trial starts on a job of its own, from its first unit.
        api.client().cancel(&id).await?;
    }
    println!("without the GPU warm-up (?warmup=off), the baseline:");
    print(&timelines[0]);
    println!("with it (the page as volunteers get it):");
    print(&timelines[1]);
    let median_total = |timelines: &[Value]| {
        let mut totals: Vec<f64> = timelines
            .iter()
            .filter_map(|t| t["starling:computed-1"].as_f64())
            .collect();
        totals.sort_by(f64::total_cmp);
        totals.get(totals.len() / 2).copied()
    };
    if let (Some(before), Some(after)) = (median_total(&timelines[0]), median_total(&timelines[1]))
    {
        println!(
            "page open to first unit, median: {after:.0} ms with the warm-up, {before:.0} ms \
             without ({:.2}x)",
            after / before
        );
    }
    Ok(())
}

/// The count in environment variable `name`, else `default`.
fn count(name: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Ok(n) => n
            .parse()
            .map_err(|e| anyhow::anyhow!("{name}={n:?} is not a count: {e}")),
        Err(_) => Ok(default),
    }
}

/// One line per stage: each trial's milliseconds since the stage before, and the median.
fn print(timelines: &[Value]) {
    let at = |timeline: &Value, name: &str| timeline[name].as_f64();
    println!(
        "{:<24} {:>34}  {:>8}  what",
        "stage (ms since the last)", "trials", "median"
    );
    let mut previous: Vec<f64> = vec![0.0; timelines.len()];
    for (name, what) in STAGES {
        let mut spans = Vec::new();
        for (i, timeline) in timelines.iter().enumerate() {
            match at(timeline, name) {
                Some(t) => {
                    spans.push(Some(t - previous[i]));
                    previous[i] = t;
                }
                None => spans.push(None),
            }
        }
        let shown: Vec<String> = spans
            .iter()
            .map(|s| s.map_or("-".into(), |ms| format!("{ms:.0}")))
            .collect();
        println!(
            "{name:<24} {:>34}  {:>8}  {what}",
            shown.join(" "),
            median(spans.iter().flatten().copied())
        );
    }
    let totals: Vec<Option<f64>> = timelines
        .iter()
        .map(|t| at(t, "starling:computed-1"))
        .collect();
    let shown: Vec<String> = totals
        .iter()
        .map(|s| s.map_or("-".into(), |ms| format!("{ms:.0}")))
        .collect();
    println!(
        "{:<24} {:>34}  {:>8}  page open to first unit (the page's own figure)",
        "total",
        shown.join(" "),
        median(totals.iter().flatten().copied())
    );
    let warm: Vec<Option<f64>> = timelines
        .iter()
        .map(|t| Some(at(t, "starling:warm")? - at(t, "starling:start")?))
        .collect();
    let shown_warm: Vec<String> = warm
        .iter()
        .map(|s| s.map_or("-".into(), |ms| format!("{ms:.0}")))
        .collect();
    println!(
        "{:<24} {:>34}  {:>8}  Start to the warm-up unit done, beside the connection",
        "  warm-up",
        shown_warm.join(" "),
        median(warm.iter().flatten().copied())
    );
    // The first unit's compute less the second's: what compiling its pipeline cost.
    let compile: Vec<Option<f64>> = timelines
        .iter()
        .map(|t| {
            let one = at(t, "starling:computed-1")? - at(t, "starling:assigned-1")?;
            let two = at(t, "starling:computed-2")? - at(t, "starling:assigned-2")?;
            Some(one - two)
        })
        .collect();
    let shown: Vec<String> = compile
        .iter()
        .map(|s| s.map_or("-".into(), |ms| format!("{ms:.0}")))
        .collect();
    let second: Vec<Option<f64>> = timelines
        .iter()
        .map(|t| Some(at(t, "starling:computed-2")? - at(t, "starling:assigned-2")?))
        .collect();
    let shown_second: Vec<String> = second
        .iter()
        .map(|s| s.map_or("-".into(), |ms| format!("{ms:.0}")))
        .collect();
    println!(
        "{:<24} {:>34}  {:>8}  the second unit's compute (pipeline cached)",
        "  second unit",
        shown_second.join(" "),
        median(second.iter().flatten().copied())
    );
    println!(
        "{:<24} {:>34}  {:>8}  first unit's compute less the second's (pipeline compile)",
        "  of which compile",
        shown.join(" "),
        median(compile.iter().flatten().copied())
    );
}

/// The median of `values`, printed; "-" when there are none.
fn median(values: impl Iterator<Item = f64>) -> String {
    let mut values: Vec<f64> = values.collect();
    if values.is_empty() {
        return "-".into();
    }
    values.sort_by(f64::total_cmp);
    format!("{:.0}", values[values.len() / 2])
}
