//! The web app in real headless Chromium (WebGPU on SwiftShader) against a real relay:
//! the widget on a host page computes nothing before Start and then completes a job;
//! the console submits a render job through its schema form, follows it to 100% and
//! shows the image; a bad parameter blocks submission. Screenshots of every page go to
//! e2e/artifacts/.

use base64::Engine as _;
use starling_api::JobState;
use starling_e2e::browser::Browser;
use starling_e2e::{Api, MatmulJob, Relay, TempDir};
use std::time::Duration;

async fn job_count(api: &Api) -> anyhow::Result<usize> {
    let list = api.client().jobs(None, 100, None).await?;
    Ok(list.jobs.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn widget_waits_for_start_and_console_submits_and_shows_a_render() -> anyhow::Result<()> {
    let data = TempDir::new("web-app")?;
    // 1 credit per GFLOP: the 1 MFLOP test units are worth enough that a site share, were
    // one paid, would survive rounding down to whole micro-credits.
    let relay = Relay::start_with(data.path(), 1, &["--price-per-gflop", "1"])?;
    let api = relay.api();
    let browser = Browser::start("web-app").await?;

    // An invalid site wallet is ignored, visibly.
    browser
        .goto(&format!(
            "{}/widget?site=st1bogus&intensity=0.3",
            relay.url()
        ))
        .await?;
    let note = browser
        .wait_text("site-note", Duration::from_secs(10), |t| !t.is_empty())
        .await?;
    assert!(note.contains("invalid"), "{note}");

    // The widget on a host page: detected, but idle until the visitor presses Start.
    browser
        .goto(&format!("{}/example-host.html", relay.url()))
        .await?;
    browser
        .wait_text("starling-frame", Duration::from_secs(10), |_| true)
        .await?;
    browser.enter_frame("starling-frame").await?;
    let device = browser
        .wait_text("device", Duration::from_secs(30), |t| t != "Detecting…")
        .await?;
    eprintln!("widget device: {device}");
    browser
        .wait_text("intensity-value", Duration::from_secs(10), |t| t == "30%")
        .await?;
    let job = MatmulJob::random(160, 128, 96, 11);
    let id = api.submit_with_quorum(&job.body, 1).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = api.job(&id).await?;
    assert_eq!(
        before.state,
        JobState::Queued,
        "the widget leases nothing before Start: {before:?}"
    );
    assert_eq!(
        api.stats().await?.volunteers,
        0,
        "the widget does not even connect before Start"
    );
    browser.leave_frame().await?;
    browser.screenshot("widget-host-idle").await?;
    browser.enter_frame("starling-frame").await?;
    browser.click("start").await?;
    let done = api.wait_done(&id, Duration::from_secs(120)).await?;
    eprintln!("widget job done: {:?}", done.progress);
    let (status, result) = api.result(&id).await?;
    assert_eq!(status, 200);
    job.check(&result)?;
    // The host page names a site wallet its owner never registered for this origin: it
    // earns nothing (a registered site's share is `widget_cross_origin.rs`'s).
    let site = "st1kr5tgzc4nrdq7q4g67tavr6fqvaviqze5wnfuunpgir4s6ng5emjahiume";
    let history = api.client().wallet_history(site, 0, 500).await?;
    let shares = history
        .entries
        .iter()
        .filter(|e| e.reason == "site_share")
        .count();
    assert_eq!(shares, 0, "an unregistered site was paid: {history:?}");
    let status_line = browser
        .wait_text("status", Duration::from_secs(5), |t| !t.is_empty())
        .await?;
    assert!(
        starling_e2e::connected(&status_line) || status_line.starts_with("Paused"),
        "the widget shows that work runs: {status_line}"
    );
    browser.leave_frame().await?;
    browser.screenshot("widget-host-working").await?;
    // The choice is remembered for this site: the next visit starts by itself, visibly.
    browser
        .goto(&format!("{}/example-host.html", relay.url()))
        .await?;
    browser
        .wait_text("starling-frame", Duration::from_secs(10), |_| true)
        .await?;
    browser.enter_frame("starling-frame").await?;
    browser
        .wait_text("status", Duration::from_secs(30), |t| {
            starling_e2e::connected(t)
        })
        .await?;
    browser.click("stop").await?;
    browser
        .wait_text("status", Duration::from_secs(10), |t| t.starts_with("Idle"))
        .await?;
    browser.leave_frame().await?;

    // The volunteer page starts work; the nav switches pages without a reload, so the
    // volunteer keeps computing while the console is open.
    browser.goto(&relay.url()).await?;
    browser
        .wait_text("device", Duration::from_secs(30), |t| t != "Detecting…")
        .await?;
    browser.click("start").await?;
    browser
        .wait_text("status", Duration::from_secs(30), |t| {
            starling_e2e::connected(t)
        })
        .await?;
    browser.click("nav-console").await?;
    browser
        .wait_text("kernel", Duration::from_secs(10), |t| t.contains("render"))
        .await?;
    browser.set_value("kernel", "render").await?;
    browser
        .wait_text("error-width", Duration::from_secs(5), |_| true)
        .await?;
    // The submitter's key: the relay's development key, typed into the console.
    browser
        .set_value("api-key", relay.dev_key().unwrap_or_default())
        .await?;
    let jobs_before = job_count(&api).await?;

    // A bad parameter: the inline message shows and nothing is sent.
    browser.set_value("param-width", "0").await?;
    browser.set_value("param-height", "48").await?;
    browser.set_value("param-samples_per_pixel", "8").await?;
    browser.set_value("param-seed", "3").await?;
    browser.set_value("quorum", "1").await?;
    browser.click("submit").await?;
    let message = browser
        .wait_text("error-width", Duration::from_secs(5), |t| !t.is_empty())
        .await?;
    assert!(
        message.contains("at least 1"),
        "validation message: {message}"
    );
    browser
        .wait_text("form-error", Duration::from_secs(5), |t| !t.is_empty())
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        job_count(&api).await?,
        jobs_before,
        "an invalid form submits nothing"
    );
    browser.screenshot("console-invalid").await?;

    // Fixed: submitted, followed to 100%, and the image is shown.
    browser.set_value("param-width", "64").await?;
    browser.click("submit").await?;
    // The tile map fills in while the job runs (best effort: the job may finish first).
    if browser
        .wait_text("tile-map", Duration::from_secs(5), |_| true)
        .await
        .is_ok()
    {
        browser
            .execute(
                "const el = document.querySelector(\"[data-testid='job']\");
                 if (el) el.scrollIntoView({block: 'end'});",
                serde_json::json!([]),
            )
            .await?;
        browser.screenshot("console-rendering").await?;
    }
    browser
        .wait_text("progress", Duration::from_secs(180), |t| t == "100%")
        .await?;
    browser
        .wait_text("job-state", Duration::from_secs(10), |t| t == "done")
        .await?;
    assert_eq!(job_count(&api).await?, jobs_before + 1);
    let mut width = serde_json::Value::Null;
    for _ in 0..50 {
        width = browser
            .execute(
                "const img = document.querySelector(\"[data-testid='result-image']\");
                 return img && img.complete ? img.naturalWidth : null;",
                serde_json::json!([]),
            )
            .await?;
        if !width.is_null() && width != 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(width, 64, "the rendered PNG is shown");
    // Saved under a name that says what it is.
    let download = browser
        .execute(
            "return document.querySelector(\"[data-testid='result-link']\").getAttribute('download');",
            serde_json::json!([]),
        )
        .await?;
    let download = download.as_str().unwrap_or_default();
    assert!(
        download.starts_with("starling-render-") && download.ends_with(".png"),
        "download name {download:?}"
    );
    browser
        .execute(
            "document.querySelector(\"[data-testid='job']\").scrollIntoView({block: 'end'});",
            serde_json::json!([]),
        )
        .await?;
    browser.screenshot("console-done").await?;

    // A kernel with named inputs: the files go up as multipart parts.
    let matmul = MatmulJob::random(40, 32, 24, 5);
    let b64 = base64::engine::general_purpose::STANDARD;
    for name in ["a", "b"] {
        let bytes = b64.decode(matmul.body.input.get(name).cloned().unwrap_or_default())?;
        let path = data.path().join(format!("{name}.f32"));
        std::fs::write(&path, bytes)?;
    }
    browser.set_value("kernel", "matmul").await?;
    browser
        .wait_text("param-m", Duration::from_secs(5), |_| true)
        .await?;
    for (name, value) in [("m", matmul.m), ("k", matmul.k), ("n", matmul.n)] {
        browser
            .set_value(&format!("param-{name}"), &value.to_string())
            .await?;
    }
    browser
        .upload("input-a", &data.path().join("a.f32"))
        .await?;
    browser
        .upload("input-b", &data.path().join("b.f32"))
        .await?;
    browser.set_value("quorum", "1").await?;
    let render_id = browser.text("job-id").await?.unwrap_or_default();
    browser.click("submit").await?;
    // The card shows the render job until the relay has answered the submission.
    let matmul_id = browser
        .wait_text("job-id", Duration::from_secs(30), |t| {
            !t.is_empty() && t != render_id
        })
        .await?;
    browser
        .wait_text("job-state", Duration::from_secs(120), |t| t == "done")
        .await?;
    // The state shown may still be the previous job's for a moment: the relay decides.
    api.wait_done(&matmul_id, Duration::from_secs(120)).await?;
    let (status, result) = api.result(&matmul_id).await?;
    assert_eq!(status, 200);
    matmul.check(&result)?;

    // The network page sees this volunteer.
    browser.click("nav-network").await?;
    browser
        .wait_text("volunteers", Duration::from_secs(15), |t| t == "1")
        .await?;
    browser
        .wait_text("jobs-done", Duration::from_secs(15), |t| t.starts_with('3'))
        .await?;
    // The network's pace and the leaderboard: every wallet on it earned exactly what the
    // ledger credited it (no transfers here), the unregistered site not among them, and
    // the page shows the same order.
    let gflops = browser
        .wait_text("gflops", Duration::from_secs(15), |t| {
            t.parse::<f64>().is_ok_and(|g| g > 0.0)
        })
        .await?;
    eprintln!("network page: {gflops} GFLOP/s");
    let board = api.client().leaderboard(None).await?;
    let wallets = &board.wallets;
    assert!(!wallets.is_empty(), "the volunteer's wallet: {board:?}");
    assert!(
        !wallets.iter().any(|w| w.address == site),
        "an unregistered site earned shares: {board:?}"
    );
    for w in wallets {
        let history = api.client().wallet_history(&w.address, 0, 1).await?;
        assert_eq!(
            w.earned_micro, history.balance_micro,
            "leaderboard credit equals the ledger's for {}",
            w.address
        );
    }
    let mut shown = serde_json::Value::Null;
    for _ in 0..50 {
        shown = browser
            .execute(
                "const c = document.querySelector(\"[data-testid='leaderboard'] [data-address]\");
                 return c ? c.dataset.address : null;",
                serde_json::json!([]),
            )
            .await?;
        if !shown.is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        shown.as_str(),
        Some(wallets[0].address.as_str()),
        "the page's leaderboard leads with the same wallet"
    );
    browser.screenshot("network-page").await?;

    // Back on the volunteer page the meter kept counting; then at a phone's width.
    browser.click("nav-volunteer").await?;
    browser
        .wait_text("units-done", Duration::from_secs(10), |t| {
            t.parse::<u64>().is_ok_and(|n| n > 0)
        })
        .await?;
    browser.screenshot("volunteer-app").await?;

    // Pause holds work (at most the unit already asked for runs); Resume finishes it.
    browser.click("pause").await?;
    browser
        .wait_text("status", Duration::from_secs(10), |t| {
            t.starts_with("Paused")
        })
        .await?;
    let paused_job = MatmulJob::random(160, 128, 96, 12);
    let paused_id = api.submit_with_quorum(&paused_job.body, 1).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = api.job(&paused_id).await?;
    assert!(
        held.progress.units_done <= 1,
        "paused: at most one unit computed: {held:?}"
    );
    browser.click("pause").await?;
    api.wait_done(&paused_id, Duration::from_secs(60)).await?;

    // A hidden tab holds work the same way, unless "keep working" is on.
    let volunteer_tab = browser.open_tab().await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let hidden_job = MatmulJob::random(160, 128, 96, 13);
    let hidden_id = api.submit_with_quorum(&hidden_job.body, 1).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = api.job(&hidden_id).await?;
    eprintln!("while the tab is hidden: {:?}", held.progress);
    assert!(
        held.progress.units_done <= 1,
        "hidden: at most one unit computed: {held:?}"
    );
    browser.switch_to(&volunteer_tab).await?;
    api.wait_done(&hidden_id, Duration::from_secs(60)).await?;

    // The wallet card: a bad key is refused with a message; the backed-up key restores.
    let address = browser
        .wait_text("wallet-address", Duration::from_secs(5), |t| {
            t.starts_with("st1")
        })
        .await?;
    browser.click("restore-open").await?;
    browser.set_value("restore-key", "not a key").await?;
    browser.click("restore").await?;
    let refused = browser
        .wait_text("wallet-error", Duration::from_secs(5), |t| !t.is_empty())
        .await?;
    assert!(refused.contains("not a wallet key"), "{refused}");
    browser.click("backup").await?;
    let secret = browser
        .wait_text("secret", Duration::from_secs(5), |t| t.len() == 64)
        .await?;
    assert!(secret.chars().all(|c| c.is_ascii_hexdigit()), "{secret}");
    browser.screenshot("volunteer-wallet").await?;
    browser.set_value("restore-key", &secret).await?;
    browser.click("restore").await?;
    browser
        .wait_text("wallet-message", Duration::from_secs(5), |t| {
            t.starts_with("Key restored")
        })
        .await?;
    assert_eq!(
        browser.text("wallet-address").await?.as_deref(),
        Some(address.as_str()),
        "restoring the backup keeps the same wallet"
    );
    browser.resize(390, 844).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    browser.screenshot("volunteer-phone").await?;
    browser.click("stop").await?;
    browser
        .wait_text("status", Duration::from_secs(10), |t| t.starts_with("Idle"))
        .await?;
    Ok(())
}
