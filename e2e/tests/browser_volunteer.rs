//! A volunteer in real headless Chromium (WebGPU on SwiftShader, real WebRTC) computes a
//! matmul, render, mlp and montecarlo jobs submitted over REST; each result matches the
//! CPU reference (the render job's PNG within the kernel's tolerance).

use serde_json::json;
use starling_api::JobState;
use starling_e2e::browser::Browser;
use starling_e2e::{workspace_root, KernelJob, MatmulJob, Relay, RenderJob, TempDir};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_volunteer_computes_a_matmul_job_over_webrtc() -> anyhow::Result<()> {
    let data = TempDir::new("browser")?;
    let relay = Relay::start(data.path(), 1)?;
    let api = relay.api();
    let browser = Browser::start("browser").await?;

    let opened = Instant::now();
    browser.goto(&relay.url()).await?;
    let device = browser
        .wait_text("device", Duration::from_secs(30), |t| t != "Detecting…")
        .await?;
    eprintln!("device card: {device}");
    assert!(
        device.starts_with("WebGPU:") || device.starts_with("CPU fallback"),
        "device card shows the adapter or CPU fallback: {device}"
    );
    assert_eq!(
        browser.text("units-done").await?.as_deref(),
        Some("0"),
        "nothing computes before Start"
    );

    // 96x128x96 at 1 MFLOP per unit: 40 rows a unit, so 3 units; use 128 rows for 4+.
    let job = MatmulJob::random(160, 128, 96, 11);
    let id = api.submit_with_quorum(&job.body, 1).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = api.job(&id).await?;
    assert_eq!(
        before.state,
        JobState::Queued,
        "no unit leased before Start: {before:?}"
    );
    let units = before.progress.units_total;
    assert!(
        units >= 4,
        "the job splits into at least 4 units, got {units}"
    );

    browser.click("start").await?;
    let done = api.wait_done(&id, Duration::from_secs(120)).await?;
    eprintln!("job done: {:?}", done.progress);
    let first_unit = browser
        .wait_text("first-unit-ms", Duration::from_secs(10), |t| {
            t.ends_with("ms")
        })
        .await?;
    eprintln!(
        "page open to first computed unit (page clock): {first_unit}; test clock to done: {:?}",
        opened.elapsed()
    );
    let (status, result) = api.result(&id).await?;
    assert_eq!(status, 200);
    job.check(&result)?;

    // The other kernels through the same page, so every shader also passes the browser's
    // own WGSL compiler: a render job whose PNG matches the CPU reference, an mlp and a
    // montecarlo job.
    let render = RenderJob::new(96, 64, 16, 7)?;
    let render_id = api.submit_with_quorum(&render.body, 1).await?;
    let others = [
        KernelJob::mlp(&[48, 64, 32, 10], 200, 5)?,
        KernelJob::montecarlo(100_000, 9)?,
    ];
    let mut other_ids = Vec::new();
    for job in &others {
        other_ids.push(api.submit_with_quorum(&job.body, 1).await?);
    }
    for (job, id) in others.iter().zip(&other_ids) {
        let done = api.wait_done(id, Duration::from_secs(180)).await?;
        eprintln!("{} job done: {:?}", job.kernel, done.progress);
        let (status, result) = api.result(id).await?;
        assert_eq!(status, 200);
        job.check(&result)?;
    }
    let done = api.wait_done(&render_id, Duration::from_secs(180)).await?;
    eprintln!("render job done: {:?}", done.progress);
    let (status, content_type, png) = api.result_typed(&render_id).await?;
    assert_eq!((status, content_type.as_str()), (200, "image/png"));
    let artifacts = workspace_root().join("e2e/artifacts");
    std::fs::create_dir_all(&artifacts)?;
    std::fs::write(artifacts.join("render-job.png"), &png)?;
    render.check(&png)?;
    browser
        .wait_text("units-done", Duration::from_secs(10), |t| {
            t.parse::<i64>().is_ok_and(|n| n >= units)
        })
        .await?;
    // The page's credit counter (from signed receipts) matches what the public ledger
    // paid the browser's wallet, the one wallet behind every unit.
    let units = api.units(&id).await?;
    let wallet = units
        .first()
        .and_then(|u| u.valid_wallets.first())
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no wallet behind the matmul job's units"))?;
    let balance = api.wallet(&wallet).await?;
    let expected = balance.balance_micro as f64 / 1e6;
    assert!(expected > 0.0, "the browser's wallet was paid: {balance:?}");
    browser
        .wait_text("credits-earned", Duration::from_secs(10), |t| {
            starling_e2e::shows_credits(t, expected)
        })
        .await?;
    browser
        .wait_text("receipts", Duration::from_secs(10), |t| t.contains('#'))
        .await?;
    let shot = browser.screenshot("volunteer-page").await?;
    eprintln!("screenshot: {}", shot.display());
    browser.click("stop").await?;
    browser
        .wait_text("status", Duration::from_secs(10), |t| t.starts_with("Idle"))
        .await?;

    // The device card's benchmark runs only on request, locally: no connection.
    browser.click("run-benchmark").await?;
    let bench = browser
        .wait_text("benchmark", Duration::from_secs(60), |t| {
            t.contains("GFLOP/s")
        })
        .await?;
    eprintln!("device benchmark: {bench}");
    let gflops: f64 = bench
        .split_whitespace()
        .next()
        .and_then(|g| g.parse().ok())
        .unwrap_or(0.0);
    assert!(gflops > 0.0, "a measured speed: {bench}");
    assert_eq!(
        api.stats().await?.volunteers,
        0,
        "benchmarking connects nothing"
    );
    Ok(())
}

/// The `localStorage` entries where the app remembers its matmul shader choice.
const CHOICES: &str = "return Object.keys(localStorage)
     .filter(k => k.startsWith('starling.matmul-shader.'))
     .map(k => [k, localStorage.getItem(k)]);";

/// The app tries both matmul shaders on a unit big enough to say which is faster on the
/// visitor's device, keeps and remembers one, and every unit stays right: the job's
/// result matches the CPU reference. A remembered value that is not a choice (old, or
/// written by hand) is ignored and tried again, never run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_chooses_its_matmul_shader_by_a_trial_and_remembers_it() -> anyhow::Result<()> {
    let data = TempDir::new("browser-matmul-trial")?;
    // 8 MFLOP units: a 1024x128x128 product is five of them, each worth a trial.
    let relay = Relay::start(data.path(), 8)?;
    let api = relay.api();
    let browser = Browser::start("browser-matmul-trial").await?;
    browser.goto(&relay.url()).await?;
    let device = browser
        .wait_text("device", Duration::from_secs(30), |t| t != "Detecting…")
        .await?;
    anyhow::ensure!(device.starts_with("WebGPU:"), "no WebGPU here: {device}");
    browser.click("start").await?;
    let job = MatmulJob::random(1024, 128, 128, 21);
    let id = api.submit_with_quorum(&job.body, 1).await?;
    api.wait_done(&id, Duration::from_secs(120)).await?;
    job.check(&api.result(&id).await?.1)?;
    let choices = browser.execute(CHOICES, json!([])).await?;
    eprintln!("remembered: {choices}");
    let choices = choices
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("no list: {choices}"))?;
    assert_eq!(
        choices.len(),
        1,
        "one choice for the one adapter: {choices:?}"
    );
    let key = choices[0][0].as_str().unwrap_or_default().to_owned();
    let chosen = choices[0][1].as_str().unwrap_or_default().to_owned();
    assert!(
        chosen == "scalar" || chosen == "vec4",
        "a shader's name: {chosen}"
    );

    // Tampered with: the next visit ignores it, computes right, and tries again.
    browser
        .execute(
            "localStorage.setItem(arguments[0], 'matmul_evil'); return true;",
            json!([key]),
        )
        .await?;
    browser.goto(&relay.url()).await?;
    browser
        .wait_text("device", Duration::from_secs(30), |t| t != "Detecting…")
        .await?;
    browser.click("start").await?;
    let job = MatmulJob::random(1024, 128, 128, 22);
    let id = api.submit_with_quorum(&job.body, 1).await?;
    api.wait_done(&id, Duration::from_secs(120)).await?;
    job.check(&api.result(&id).await?.1)?;
    let again = browser.execute(CHOICES, json!([])).await?;
    eprintln!("remembered after the second visit: {again}");
    let again = again[0][1].as_str().unwrap_or_default();
    assert!(
        again == "scalar" || again == "vec4",
        "tried again and remembered: {again}"
    );
    Ok(())
}
