//! The volunteer page tells the truth and works by keyboard, in real headless Chromium
//! against a real relay: with nothing queued it says it waits for work (not that it
//! works); with a render job it names the work in words; what a credit is and what this
//! device earned today, in sane decimals, matching the wallet's balance; Tab reaches
//! Start, Enter starts, focus stays on the one Start/Pause control, Tab reaches Stop,
//! and a live region announces each change; a whole session (start, compute, pause,
//! stop, start again, stop) logs no uncaught error and no failed request. A screenshot
//! of the waiting page goes to e2e/artifacts/.

use starling_e2e::browser::{Browser, ENTER, TAB};
use starling_e2e::page::{lines, Page};
use starling_e2e::{Relay, RenderJob, TempDir};
use std::time::Duration;

const LOAD: Duration = Duration::from_secs(30);

/// Presses Tab until the element with `test_id` has focus; fails after `max` presses.
async fn tab_to(browser: &Browser, test_id: &str, max: usize) -> anyhow::Result<usize> {
    for presses in 1..=max {
        browser.press(&[TAB]).await?;
        if browser.focused_test_id().await?.as_deref() == Some(test_id) {
            return Ok(presses);
        }
    }
    anyhow::bail!(
        "{max} Tabs never reached [data-testid={test_id}] (focus is on {:?})",
        browser.focused_test_id().await?
    )
}

/// Whether the element that has focus is the one marked earlier by [`mark_focused`]:
/// the same node, not a new one that took its place.
async fn focus_is_marked(browser: &Browser) -> anyhow::Result<bool> {
    Ok(browser
        .execute(
            "return document.activeElement && document.activeElement.__starlingMark === 1;",
            serde_json::json!([]),
        )
        .await?
        .as_bool()
        .unwrap_or(false))
}

async fn mark_focused(browser: &Browser) -> anyhow::Result<()> {
    browser
        .execute(
            "document.activeElement.__starlingMark = 1;",
            serde_json::json!([]),
        )
        .await?;
    Ok(())
}

/// The text of the page's live region (role=status or aria-live) holding the status.
async fn announced(browser: &Browser) -> anyhow::Result<String> {
    let text = browser
        .execute(
            "const s = document.querySelector(\"[data-testid='status']\");
             const live = s && s.closest('[aria-live], [role=status], [role=alert]');
             return live ? live.textContent : null;",
            serde_json::json!([]),
        )
        .await?;
    text.as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("the status is in no live region"))
}

/// Significant digits shown in a decimal figure ("0.000747" has 3, "12.50" has 4).
fn significant_digits(figure: &str) -> usize {
    figure
        .chars()
        .filter(char::is_ascii_digit)
        .skip_while(|&c| c == '0')
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volunteer_page_tells_the_truth_by_keyboard() -> anyhow::Result<()> {
    let data = TempDir::new("volunteer-page")?;
    let relay = Relay::start_with(data.path(), 1, &["--price-per-gflop", "1"])?;
    let api = relay.api();
    let browser = Browser::start_recording_console("volunteer-page").await?;
    browser.goto(&relay.url()).await?;
    browser
        .wait_text("device", LOAD, |t| t != "Detecting…")
        .await?;
    let explainer = browser
        .wait_text("credit-explainer", LOAD, |t| !t.is_empty())
        .await?;
    assert!(
        explainer.contains("credit"),
        "the page says what a credit is: {explainer}"
    );

    // Keyboard only: Tab to Start, Enter.
    tab_to(&browser, "start", 30).await?;
    mark_focused(&browser).await?;
    browser.press(&[ENTER]).await?;
    // Nothing is queued: connected, and saying so, not "Working".
    let status = browser
        .wait_text("status", LOAD, |t| t.starts_with("Connected"))
        .await?;
    assert_eq!(status, "Connected, waiting for work.");
    browser.screenshot("volunteer-waiting").await?;
    assert!(
        focus_is_marked(&browser).await?,
        "focus left the Start control when it became Pause (now on {:?})",
        browser.focused_test_id().await?
    );
    assert_eq!(browser.focused_test_id().await?.as_deref(), Some("pause"));
    assert_eq!(announced(&browser).await?, status);
    // Stop is one Tab away, and back.
    tab_to(&browser, "stop", 1).await?;

    // A render job: the page names the work.
    let job = RenderJob::new(64, 48, 2, 5)?;
    let id = api.submit_with_quorum(&job.body, 1).await?;
    let working = browser
        .wait_text("status", LOAD, |t| t.starts_with("Working"))
        .await?;
    assert_eq!(
        working, "Working: rendering part of an image for a job submitted under a minute ago.",
        "the work in words"
    );
    api.wait_done(&id, Duration::from_secs(120)).await?;
    browser
        .wait_text("status", LOAD, |t| t == "Connected, waiting for work.")
        .await?;

    // What this device earned today, as the wallet's balance says (a new wallet: all of
    // it from today), in a handful of significant digits.
    let address = browser
        .wait_text("wallet-address", LOAD, |t| t.starts_with("st1"))
        .await?;
    let balance: f64 = api.wallet(&address).await?.balance.parse()?;
    assert!(balance > 0.0, "the job paid this wallet");
    let earned = browser
        .wait_text("earned-today", Duration::from_secs(20), |t| {
            t.parse::<f64>().is_ok_and(|v| v > 0.0)
        })
        .await?;
    let shown: f64 = earned.parse()?;
    assert!(
        (shown - balance).abs() <= balance * 0.01,
        "earned today {earned} vs balance {balance}"
    );
    assert!(
        significant_digits(&earned) <= 4,
        "earned today in sane decimals: {earned}"
    );

    // Pause and resume by keyboard from the same control, then Stop.
    tab_to(&browser, "pause", 30).await?;
    browser.press(&[ENTER]).await?;
    browser
        .wait_text("status", LOAD, |t| t.starts_with("Paused"))
        .await?;
    assert!(announced(&browser).await?.starts_with("Paused"));
    assert_eq!(browser.focused_test_id().await?.as_deref(), Some("pause"));
    browser.press(&[ENTER]).await?;
    browser
        .wait_text("status", LOAD, |t| t.starts_with("Connected"))
        .await?;
    tab_to(&browser, "stop", 1).await?;
    browser.press(&[ENTER]).await?;
    browser
        .wait_text("status", LOAD, |t| t.starts_with("Idle"))
        .await?;
    // Stop cannot be pressed while stopped; focus moves to Start, not to the page.
    assert_eq!(browser.focused_test_id().await?.as_deref(), Some("start"));

    // Start again, then stop again: nothing thrown, nothing failed.
    browser.press(&[ENTER]).await?;
    browser
        .wait_text("status", LOAD, |t| t.starts_with("Connected"))
        .await?;
    browser.click("stop").await?;
    browser
        .wait_text("status", LOAD, |t| t.starts_with("Idle"))
        .await?;
    let console = browser.console().await?;
    let bad: Vec<_> = console
        .iter()
        .filter(|e| e.is_page_error() || e.source == "network")
        .cloned()
        .collect();
    assert!(
        bad.is_empty(),
        "the session logged errors or failed requests:\n{}",
        lines(&bad)
    );
    Ok(())
}
