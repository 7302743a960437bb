//! The widget without WebGPU (`?device=cpu`, what a visitor whose browser has none gets):
//! its bundle carries no CPU reference of its own (the page's thread never computes, so
//! the embedding site's page never freezes), and it computes on the CPU worker: a job
//! completes and matches the CPU reference. The engine comes only with Start: a visitor
//! who never presses it downloads the card alone.

use serde_json::json;
use starling_e2e::browser::Browser;
use starling_e2e::{MatmulJob, Relay, TempDir};
use std::time::Duration;

/// The files the page has fetched so far that hold the engine (the split module).
async fn engine_fetched(browser: &Browser) -> anyhow::Result<Vec<String>> {
    let names = browser
        .execute(
            "return performance.getEntriesByType('resource').map(e => e.name)
               .filter(n => n.includes('/starling-widget-engine-'));",
            json!([]),
        )
        .await?;
    Ok(serde_json::from_value(names)?)
}

/// Opens the widget without WebGPU and waits for its card, before Start.
async fn open_card(browser: &Browser, relay: &Relay) -> anyhow::Result<()> {
    browser
        .goto(&format!("{}/widget?device=cpu", relay.url()))
        .await?;
    // The widget fetches its engine, which finds the device, when the visitor presses Start.
    browser
        .wait_text("device", Duration::from_secs(30), |t| {
            t == "Device: checked on Start"
        })
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_widget_without_webgpu_computes_on_its_cpu_worker() -> anyhow::Result<()> {
    let data = TempDir::new("widget-cpu")?;
    let relay = Relay::start(data.path(), 1)?;
    let api = relay.api();
    let browser = Browser::start_recording_console("widget-cpu").await?;
    open_card(&browser, &relay).await?;

    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = engine_fetched(&browser).await?;
    assert!(
        before.is_empty(),
        "the engine came before Start: {before:?}"
    );

    let job = MatmulJob::random(96, 64, 48, 7);
    let id = api.submit_with_quorum(&job.body, 1).await?;
    browser.click("start").await?;
    let device = browser
        .wait_text("device", Duration::from_secs(30), |t| {
            t != "Detecting…" && !t.contains("on Start")
        })
        .await?;
    assert_eq!(device, "CPU fallback");
    api.wait_done(&id, Duration::from_secs(120)).await?;
    let (status, result) = api.result(&id).await?;
    assert_eq!(status, 200);
    job.check(&result)?;
    let units = browser
        .wait_text("widget-units", Duration::from_secs(10), |t| {
            !t.starts_with("0 units")
        })
        .await?;
    eprintln!("widget on the CPU: {units}");
    let after = engine_fetched(&browser).await?;
    assert_eq!(
        after.len(),
        1,
        "the engine came once, with Start: {after:?}"
    );
    Ok(())
}

/// The relay is gone when the visitor presses Start, so the engine's module cannot come:
/// the card says so, and once the relay is back the next Start fetches it (a failed fetch
/// is not remembered) and works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_whose_engine_cannot_be_fetched_says_so_and_the_next_start_fetches_it(
) -> anyhow::Result<()> {
    let data = TempDir::new("widget-no-engine")?;
    let mut relay = Relay::start(data.path(), 1)?;
    let browser = Browser::start("widget-no-engine").await?;
    open_card(&browser, &relay).await?;
    relay.kill();
    browser.click("start").await?;
    let status = browser
        .wait_text("status", Duration::from_secs(15), |t| {
            t.starts_with("Stopped")
        })
        .await?;
    assert!(
        status.contains("engine could not be fetched"),
        "the card says why: {status}"
    );
    assert!(engine_fetched(&browser).await?.len() <= 1, "one try");

    relay.restart()?;
    let api = relay.api();
    let job = MatmulJob::random(48, 32, 24, 11);
    let id = api.submit_with_quorum(&job.body, 1).await?;
    browser.click("start").await?;
    api.wait_done(&id, Duration::from_secs(120)).await?;
    let (status, result) = api.result(&id).await?;
    assert_eq!(status, 200);
    job.check(&result)?;
    Ok(())
}
