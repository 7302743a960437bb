//! Every page passes axe-core's WCAG 2.2 A/AA rules and best practices in real headless
//! Chromium against a real relay: the volunteer page idle and working, the console, the
//! network page (with a volunteer online, so its charts and tables have rows), the
//! widget and the API docs; and every text field, select and checkbox has a border of
//! at least 3:1 against its surface (WCAG 1.4.11, which axe does not check). A failure
//! lists each broken rule with the elements that break it. Screenshots of `/` and `/network` go to e2e/artifacts/.

use starling_e2e::axe;
use starling_e2e::browser::Browser;
use starling_e2e::{MatmulJob, Relay, TempDir};
use std::time::Duration;

const LOAD: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_passes_axe() -> anyhow::Result<()> {
    let data = TempDir::new("a11y")?;
    let relay = Relay::start_with(data.path(), 1, &["--price-per-gflop", "1"])?;
    let api = relay.api();
    let browser = Browser::start("a11y").await?;
    let mut report = Vec::new();
    let mut check = |page: &str, found: Vec<axe::Violation>, weak: Vec<String>| {
        eprintln!(
            "{page}: {} violation(s), {} weak control border(s)",
            found.len(),
            weak.len()
        );
        for v in found {
            report.push(format!("{page}: {v}"));
        }
        for control in weak {
            report.push(format!(
                "{page}: control border under 3:1 (WCAG 1.4.11): {control}"
            ));
        }
    };

    browser.goto(&relay.url()).await?;
    browser
        .wait_text("device", LOAD, |t| t != "Detecting…")
        .await?;
    check(
        "/ (idle)",
        axe::violations(&browser).await?,
        axe::weak_control_borders(&browser).await?,
    );

    // Working, with a job's units going through, so receipts and charts have content.
    let job = MatmulJob::random(96, 64, 64, 3);
    let id = api.submit_with_quorum(&job.body, 1).await?;
    browser.click("start").await?;
    api.wait_done(&id, Duration::from_secs(120)).await?;
    browser.wait_text("units-done", LOAD, |t| t != "0").await?;
    browser.screenshot("a11y-volunteer-working").await?;
    check(
        "/ (working)",
        axe::violations(&browser).await?,
        axe::weak_control_borders(&browser).await?,
    );

    browser.click("nav-network").await?;
    browser.wait_text("volunteers", LOAD, |t| t != "–").await?;
    browser.screenshot("a11y-network").await?;
    check(
        "/network",
        axe::violations(&browser).await?,
        axe::weak_control_borders(&browser).await?,
    );

    browser.click("nav-console").await?;
    browser
        .wait_text("kernel", LOAD, |t| t.contains("matmul"))
        .await?;
    check(
        "/console",
        axe::violations(&browser).await?,
        axe::weak_control_borders(&browser).await?,
    );

    browser.goto(&format!("{}/widget", relay.url())).await?;
    browser
        .wait_text("device", LOAD, |t| t != "Detecting…")
        .await?;
    check(
        "/widget",
        axe::violations(&browser).await?,
        axe::weak_control_borders(&browser).await?,
    );

    browser
        .goto(&format!("{}/api/v1/docs", relay.url()))
        .await?;
    let deadline = std::time::Instant::now() + LOAD;
    // The docs page renders the OpenAPI document after fetching it.
    while browser
        .execute(
            "return document.querySelectorAll('details').length;",
            serde_json::json!([]),
        )
        .await?
        .as_u64()
        .unwrap_or(0)
        == 0
    {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the API docs never rendered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Open every operation, kernel and schema: axe skips what is hidden.
    browser
        .execute(
            "document.querySelectorAll('details').forEach(d => d.open = true);",
            serde_json::json!([]),
        )
        .await?;
    check(
        "/api/v1/docs",
        axe::violations(&browser).await?,
        axe::weak_control_borders(&browser).await?,
    );

    assert!(
        report.is_empty(),
        "axe-core found {} violation(s):\n{}",
        report.len(),
        report.join("\n")
    );
    Ok(())
}
