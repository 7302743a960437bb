//! A page keeps working through a relay restart without a second click: the relay is
//! killed (SIGKILL, as a crash) while a real headless Chromium computes a job, and
//! started again on the same port and data directory. The page must notice the dead
//! connection, say it is reconnecting, connect again within 10 s of the relay being back,
//! and finish the job with the right result. While the relay stays down the page retries
//! with backoff (not in a tight loop), and Stop still ends it.

use serde_json::{json, Value};
use starling_e2e::browser::Browser;
use starling_e2e::{MatmulJob, Relay, TempDir};
use std::time::{Duration, Instant};

/// Records every text the status line shows, with the page's clock, and every state
/// change of the page's peer connections: a state shown for 50 ms is seen even though
/// WebDriver polls far more slowly. Installed before Start, so the wrapper sees every
/// `RTCPeerConnection` the page makes; each is still the browser's own.
const RECORDER: &str = r#"
    window.__statuses = [];
    window.__pc = [];
    const status = document.querySelector("[data-testid='status']");
    const note = () => window.__statuses.push([performance.now(), status.textContent]);
    new MutationObserver(note).observe(status, { childList: true, characterData: true, subtree: true });
    note();
    const Original = window.RTCPeerConnection;
    let made = 0;
    window.RTCPeerConnection = function (...args) {
        const pc = new Original(...args);
        const id = ++made;
        const log = (kind, state) => window.__pc.push([performance.now(), id, kind, state]);
        pc.addEventListener("connectionstatechange", () => log("connection", pc.connectionState));
        pc.addEventListener("iceconnectionstatechange", () => log("ice", pc.iceConnectionState));
        return pc;
    };
    window.RTCPeerConnection.prototype = Original.prototype;
    return true;
"#;

async fn page_clock(browser: &Browser) -> anyhow::Result<f64> {
    browser
        .execute("return performance.now();", json!([]))
        .await?
        .as_f64()
        .ok_or_else(|| anyhow::anyhow!("no page clock"))
}

/// The status texts recorded since [`RECORDER`] ran: (page clock ms, text).
async fn statuses(browser: &Browser) -> anyhow::Result<Vec<(f64, String)>> {
    let log = browser
        .execute("return window.__statuses;", json!([]))
        .await?;
    Ok(log
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter_map(|row| Some((row[0].as_f64()?, row[1].as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default())
}

async fn print_peer_states(browser: &Browser, since_ms: f64) -> anyhow::Result<()> {
    let log = browser.execute("return window.__pc;", json!([])).await?;
    for row in log.as_array().into_iter().flatten() {
        if let [Value::Number(at), id, kind, state] =
            row.as_array().map(Vec::as_slice).unwrap_or(&[])
        {
            let at = at.as_f64().unwrap_or(0.0);
            eprintln!(
                "  peer connection {id} {kind} -> {state} at kill {:+.0} ms",
                at - since_ms
            );
        }
    }
    Ok(())
}

/// Opens the volunteer page, starts the recorder, presses Start and waits until it works.
async fn start_working(browser: &Browser, relay: &Relay) -> anyhow::Result<()> {
    browser.goto(&relay.url()).await?;
    browser
        .wait_text("device", Duration::from_secs(30), |t| t != "Detecting…")
        .await?;
    assert_eq!(
        browser.execute(RECORDER, json!([])).await?,
        Value::Bool(true),
        "the recorder is installed"
    );
    browser.click("start").await?;
    browser
        .wait_text("status", Duration::from_secs(20), |t| {
            starling_e2e::connected(t)
        })
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_reconnects_by_itself_after_a_relay_restart_and_finishes_the_job() -> anyhow::Result<()>
{
    let data = TempDir::new("browser-reconnect")?;
    let mut relay = Relay::start(data.path(), 1)?;
    let api = relay.api();
    let browser = Browser::start("browser-reconnect").await?;
    start_working(&browser, &relay).await?;

    // About 1 MFLOP a unit: hundreds of units, so the kill lands mid-job.
    let job = MatmulJob::random(4096, 128, 128, 23);
    let id = api.submit_with_quorum(&job.body, 1).await?;
    let total = api.job(&id).await?.progress.units_total;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = api.job(&id).await?.progress.units_done;
        if done >= 3 {
            assert!(
                done < total,
                "the job finished before the kill; make it bigger"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no progress before the kill");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let killed_ms = page_clock(&browser).await?;
    relay.kill();
    relay.restart()?;
    let restarted_ms = page_clock(&browser).await?;
    let done_at_restart = api.job(&id).await?.progress.units_done;
    assert!(done_at_restart < total, "work was left after the restart");

    // The page's own clock dates each status, so the measure does not depend on how
    // often this test polls.
    let deadline = Instant::now() + Duration::from_secs(40);
    let (reconnecting_ms, working_ms) = loop {
        let log = statuses(&browser).await?;
        let reconnecting = log
            .iter()
            .find(|(at, text)| *at >= killed_ms && text.starts_with("Reconnecting"));
        let working = reconnecting.and_then(|(seen, _)| {
            log.iter()
                .find(|(at, text)| at > seen && starling_e2e::connected(text))
        });
        if let (Some(r), Some(w)) = (reconnecting, working) {
            break (r.0, w.0);
        }
        if Instant::now() > deadline {
            print_peer_states(&browser, killed_ms).await?;
            anyhow::bail!(
                "the page did not reconnect by itself within 40 s of the kill; statuses since: {:?}",
                log.iter()
                    .filter(|(at, _)| *at >= killed_ms)
                    .map(|(at, text)| (at - killed_ms, text))
                    .collect::<Vec<_>>()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    print_peer_states(&browser, killed_ms).await?;
    let detected = reconnecting_ms - killed_ms;
    let back = working_ms - restarted_ms;
    eprintln!(
        "relay killed and restarted in {:.0} ms; the page said it was reconnecting {detected:.0} ms \
         after the kill and worked again {back:.0} ms after the relay was back",
        restarted_ms - killed_ms
    );
    assert!(
        back <= 10_000.0,
        "the page reconnected {back:.0} ms after the relay was back (limit 10 s)"
    );
    let relay_sees = api.stats().await?.volunteers;
    assert_eq!(relay_sees, 1, "the relay sees the page again, once");

    // No click since the first Start: the job finishes on the reconnected page.
    api.wait_done(&id, Duration::from_secs(180)).await?;
    let (status, result) = api.result(&id).await?;
    assert_eq!(status, 200);
    job.check(&result)?;
    // The page counts each unit once, though the unit in flight at the kill was handed
    // out again after it: it shows what the relay recorded for its wallet. Or one less:
    // the page counts a unit when its acknowledgement arrives, and a kill between the
    // relay committing a result and sending its acknowledgement (since protocol v6 that
    // waits for the next unit's lease too) loses that one acknowledgement; the unit is
    // still the wallet's, and paid. Never more: that would be a unit counted twice.
    let wallet = api
        .units(&id)
        .await?
        .first()
        .and_then(|u| u.valid_wallets.first())
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no wallet behind the job's units"))?;
    let recorded = api.wallet(&wallet).await?.valid_results;
    let counted = browser.text("units-done").await?.unwrap_or_default();
    eprintln!("job of {total} units; the page counts {counted}; the relay recorded {recorded} valid results");
    browser
        .wait_text("units-done", Duration::from_secs(10), |t| {
            t.parse::<u32>()
                .is_ok_and(|n| recorded.checked_sub(n).is_some_and(|lost| lost <= 1))
        })
        .await?;
    browser.click("stop").await?;
    browser
        .wait_text("status", Duration::from_secs(10), |t| t.starts_with("Idle"))
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_retries_with_backoff_while_the_relay_is_down_and_stop_ends_it() -> anyhow::Result<()>
{
    let data = TempDir::new("browser-backoff")?;
    let mut relay = Relay::start(data.path(), 1)?;
    let api = relay.api();
    let browser = Browser::start("browser-backoff").await?;
    start_working(&browser, &relay).await?;

    let killed_ms = page_clock(&browser).await?;
    relay.kill();
    let down = Instant::now();
    browser
        .wait_text("status", Duration::from_secs(15), |t| {
            t.starts_with("Reconnecting")
        })
        .await?;
    // Down for 15 s: retries double from half a second, jittered, so a few attempts and
    // not hundreds (10,000 pages retrying in a tight loop would flood a relay that is
    // coming back).
    let outage = Duration::from_secs(15);
    tokio::time::sleep(outage.saturating_sub(down.elapsed())).await;
    let log = statuses(&browser).await?;
    let attempts: Vec<u32> = log
        .iter()
        .filter(|(at, _)| *at >= killed_ms)
        .filter_map(|(_, text)| {
            text.split("attempt ")
                .nth(1)?
                .trim_end_matches(')')
                .parse()
                .ok()
        })
        .collect();
    let last = attempts.iter().copied().max().unwrap_or(0);
    eprintln!("attempts shown while the relay was down for {outage:?}: {attempts:?}");
    assert!(last >= 3, "the page kept trying: {attempts:?}");
    assert!(last <= 8, "the page backs off: {attempts:?}");
    let reconnecting = browser.text("status").await?.unwrap_or_default();
    assert!(
        reconnecting.starts_with("Reconnecting"),
        "still reconnecting: {reconnecting}"
    );

    // Stop works while reconnecting, and a stopped page does not come back with the relay.
    browser.click("stop").await?;
    browser
        .wait_text("status", Duration::from_secs(5), |t| t.starts_with("Idle"))
        .await?;
    relay.restart()?;
    let watch = Instant::now() + Duration::from_secs(5);
    while Instant::now() < watch {
        assert_eq!(
            api.stats().await?.volunteers,
            0,
            "a stopped page stays away"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        browser.text("start").await?.is_some(),
        "Start is offered again"
    );
    Ok(())
}
