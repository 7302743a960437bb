//! The network page on a phone, in real headless Chromium against a real relay with a
//! native volunteer computing a job: the hour charts (GFLOP/s and units verified per
//! second, one point a minute, from `GET /api/v1/stats/history`) draw the work; nothing
//! is wider than the screen, every table fits its card; and the page does not shift
//! under the reader's eyes as its figures, charts and tables fill in. The volunteer page
//! shows the network's pace beside this device's.

use serde_json::json;
use starling_e2e::browser::Browser;
use starling_e2e::{MatmulJob, Relay, TempDir, Volunteer};
use std::time::{Duration, Instant};

const LOAD: Duration = Duration::from_secs(30);

/// Waits until the polyline of the chart `test_id` has at least one point with work
/// (above the baseline, y < 56); returns its points.
async fn wait_for_work_drawn(browser: &Browser, test_id: &str) -> anyhow::Result<String> {
    let deadline = Instant::now() + LOAD;
    loop {
        let points = browser
            .execute(
                "const l = document.querySelector(`[data-testid='${arguments[0]}'] polyline`);
                 return l ? l.getAttribute('points') : null;",
                json!([test_id]),
            )
            .await?;
        let points = points.as_str().unwrap_or_default().to_owned();
        let drawn = points
            .split(' ')
            .filter_map(|p| p.split_once(',').and_then(|(_, y)| y.parse::<f64>().ok()))
            .any(|y| y < 56.0);
        if drawn {
            return Ok(points);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the chart {test_id} never drew the work: {points:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_page_charts_the_hour_and_fits_a_phone_without_shifting() -> anyhow::Result<()> {
    let data = TempDir::new("network-page")?;
    let relay = Relay::start(data.path(), 1)?;
    let api = relay.api();
    let _volunteer = Volunteer::start(&relay.url())?;
    let job = MatmulJob::random(128, 96, 96, 21);
    let id = api.submit_with_quorum(&job.body, 1).await?;
    api.wait_done(&id, Duration::from_secs(120)).await?;
    let history = api.client().stats_history().await?;
    let now = history.minutes.last().cloned();
    assert!(
        history.minutes.iter().map(|m| m.units).sum::<u64>() > 0,
        "the history counts the job's units: {now:?}"
    );

    let browser = Browser::start("network-page").await?;
    // A phone: 390 CSS pixels wide.
    browser.resize(390, 844).await?;
    browser.goto(&format!("{}/network", relay.url())).await?;
    // Layout shifts from the first paint on, as Chromium scores them (CLS).
    browser
        .execute(
            "window.__shift = 0;
             new PerformanceObserver((list) => {
               for (const e of list.getEntries()) if (!e.hadRecentInput) window.__shift += e.value;
             }).observe({ type: 'layout-shift', buffered: true });",
            json!([]),
        )
        .await?;
    wait_for_work_drawn(&browser, "history-gflops").await?;
    wait_for_work_drawn(&browser, "history-units").await?;
    browser
        .wait_text("ledger", LOAD, |t| t.contains("pay"))
        .await?;
    browser.screenshot("network-phone").await?;

    let fit = browser
        .execute(
            "const page = document.documentElement;
             const wide = [...document.querySelectorAll('.table-wrap')]
               .filter((w) => w.scrollWidth > w.clientWidth + 1)
               .map((w) => `${w.firstElementChild.getAttribute('data-testid')} ${w.scrollWidth}>${w.clientWidth}`);
             return { page: page.scrollWidth, screen: window.innerWidth, wide };",
            json!([]),
        )
        .await?;
    assert!(
        fit["page"].as_f64() <= fit["screen"].as_f64(),
        "the page is wider than the phone: {fit}"
    );
    assert_eq!(
        fit["wide"],
        json!([]),
        "tables wider than their card: {fit}"
    );
    let shift = browser
        .execute("return window.__shift;", json!([]))
        .await?
        .as_f64()
        .unwrap_or(f64::NAN);
    eprintln!("network page on a phone: cumulative layout shift {shift:.4}");
    // Web Vitals call a CLS up to 0.1 good; the page keeps to a tenth of that.
    assert!(
        shift < 0.01,
        "the page shifted as it filled in: CLS {shift:.4}"
    );

    // The volunteer page puts the network's pace beside this device's.
    browser.click("nav-volunteer").await?;
    wait_for_work_drawn(&browser, "network-pace").await?;
    Ok(())
}
