//! The widget as a site owner uses it: another site's page (its own origin, not the
//! relay's) embeds `widget.js` from the relay with one script tag. In real headless
//! Chromium: the card appears, nothing is leased or even connected before the visitor
//! presses Start, then the job completes and the site's wallet is paid its share; the
//! visitor's yes is remembered on that site only.

use starling_api::JobState;
use starling_e2e::browser::Browser;
use starling_e2e::{HostSite, MatmulJob, Relay, TempDir};
use starling_protocol::{SiteOrigin, WalletKey};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_on_another_origin_embeds_the_widget_with_one_script_tag() -> anyhow::Result<()> {
    let data = TempDir::new("widget-origin")?;
    // 1 credit per GFLOP, so the small test units' site shares survive rounding.
    // --allow-http-sites: the blog registers its loopback origin over plain http.
    let relay = Relay::start_with(
        data.path(),
        1,
        &["--price-per-gflop", "1", "--allow-http-sites"],
    )?;
    let api = relay.api();
    // The embedding site's wallet; the page names it as a word of its own too, so the
    // same page answered at /.well-known/starling-site proves the origin.
    let site_key = WalletKey::from_seed([19; 32]);
    let site_address = site_key.address().to_string();
    let site = site_address.as_str();
    let host = HostSite::serve(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>A recipe blog</title></head>\
         <body><h1>Lentil soup</h1><p>Soak the lentils overnight.</p><p hidden> {site} </p>\
         <script src=\"{}/widget.js\" data-site-wallet=\"{site}\" data-intensity=\"0.5\" async></script>\
         </body></html>",
        relay.url()
    ))
    .await?;
    // The relay answers on 127.0.0.1; the blog is "localhost": another site entirely.
    let blog = format!("http://localhost:{}/", host.port());
    // The site owner registers the blog's origin once; the widget's claim must match it.
    let origin: SiteOrigin = format!("http://localhost:{}", host.port()).parse()?;
    let signature: String = site_key
        .sign_site(&origin)
        .0
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let registered = api
        .http()
        .post(format!("{}/api/v1/sites", api.base()))
        .json(&serde_json::json!({
            "origin": origin.as_str(),
            "wallet": site,
            "signature": signature,
        }))
        .send()
        .await?;
    anyhow::ensure!(
        registered.status().as_u16() == 201,
        "site registration: {}",
        registered.text().await?
    );
    let browser = Browser::start("widget-origin").await?;
    // The visitor has been to the network's own page, and answers yes when the browser
    // asks whether the card may keep its choice (Storage Access, `consent.rs`).
    browser.goto(&relay.url()).await?;
    browser.goto(&blog).await?;
    browser
        .wait_text("starling-frame", Duration::from_secs(15), |_| true)
        .await?;
    browser.enter_frame("starling-frame").await?;
    browser.set_permission("storage-access", "granted").await?;
    let device = browser
        .wait_text("device", Duration::from_secs(30), |t| t != "Detecting…")
        .await?;
    eprintln!("widget on {blog}: {device}");
    browser
        .wait_text("intensity-value", Duration::from_secs(10), |t| t == "50%")
        .await?;

    let job = MatmulJob::random(160, 128, 96, 31);
    let id = api.submit_with_quorum(&job.body, 1).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        api.job(&id).await?.state,
        JobState::Queued,
        "nothing before Start"
    );
    assert_eq!(api.stats().await?.volunteers, 0, "not even a connection");

    browser.click("start").await?;
    api.wait_done(&id, Duration::from_secs(120)).await?;
    let (status, result) = api.result(&id).await?;
    assert_eq!(status, 200);
    job.check(&result)?;
    let history = api.client().wallet_history(&site, 0, 500).await?;
    let shares = history
        .entries
        .iter()
        .filter(|e| e.reason == "site_share")
        .count();
    assert!(
        shares >= 1,
        "the blog's wallet was paid its share: {history:?}"
    );
    browser.leave_frame().await?;
    browser.screenshot("widget-other-origin").await?;

    // Back on the blog later: the visitor's yes holds there, visibly, and one click stops it.
    browser.goto(&blog).await?;
    browser
        .wait_text("starling-frame", Duration::from_secs(15), |_| true)
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

    // The same page under another site's name ("127.0.0.1", not "localhost") has not been
    // told yes: it waits for Start again.
    let other = format!("http://127.0.0.1:{}/", host.port());
    browser.goto(&other).await?;
    browser
        .wait_text("starling-frame", Duration::from_secs(15), |_| true)
        .await?;
    browser.enter_frame("starling-frame").await?;
    browser
        .wait_text("device", Duration::from_secs(30), |t| t != "Detecting…")
        .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = browser.text("status").await?.unwrap_or_default();
    assert!(
        !starling_e2e::connected(&status) && !status.starts_with("Connecting"),
        "a site the visitor never said yes on does not start: {status}"
    );
    Ok(())
}
