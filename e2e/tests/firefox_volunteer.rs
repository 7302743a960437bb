//! Firefox ESR (Debian's package, driven over WebDriver BiDi) volunteers beside Chromium
//! on a quorum-2 job: each unit needs both browsers' results, so the job finishes only
//! if Firefox connects, computes (on its CPU worker: it has no WebGPU here) and agrees
//! with Chromium. Both wallets are paid, the result matches the CPU reference, and
//! neither console shows a page error. Firefox never offers a loopback candidate; it
//! reaches the relay from the host's own address, which the test keeps working.

use anyhow::{ensure, Context, Result};
use starling_e2e::browser::Browser;
use starling_e2e::firefox::Firefox;
use starling_e2e::page::{lines, Page};
use starling_e2e::{Api, MatmulJob, Relay, TempDir};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// How long a page may take from Start to a connected volunteer. Firefox's channel
/// opened 0.5 to 0.8 s after Start here; the rest is slack for a busy machine.
const CONNECT: Duration = Duration::from_secs(30);

/// A volunteer page after Start.
struct Started {
    device: String,
    wallet: String,
}

/// Opens the volunteer page, waits for its device card, reads its wallet and presses
/// Start with a real click, then waits until the page says it works for the relay.
/// Fails with the page's console (never hangs) when it does not get there in time.
async fn start_volunteering<P: Page>(page: &P, relay_url: &str) -> Result<Started> {
    page.goto(relay_url).await?;
    let device = page
        .wait_for_text("device", Duration::from_secs(30), |t| t != "Detecting…")
        .await?;
    let wallet = page
        .wait_for_text("wallet-address", Duration::from_secs(10), |t| {
            t.starts_with("st1")
        })
        .await?;
    let pressed = Instant::now();
    page.click("start").await?;
    page.wait_for_text("status", CONNECT, starling_e2e::connected)
        .await
        .with_context(|| format!("{} never connected to the relay", page.browser_name()))?;
    eprintln!(
        "{}: working {:?} after Start (polled every 100 ms)",
        page.browser_name(),
        pressed.elapsed()
    );
    Ok(Started { device, wallet })
}

/// Micro-credits the public ledger paid `wallet` (entries with reason `pay`).
async fn paid(api: &Api, wallet: &str) -> Result<u64> {
    let history = api.client().wallet_history(wallet, 0, 500).await?;
    Ok(history
        .entries
        .iter()
        .filter(|e| e.credit == format!("wallet:{wallet}") && e.reason == "pay")
        .map(|e| e.amount_micro)
        .sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firefox_and_chromium_both_compute_and_are_paid_on_a_quorum_2_job() -> Result<()> {
    let data = TempDir::new("firefox-volunteer")?;
    let relay = Relay::start(data.path(), 1)?;
    let api = relay.api();
    let chromium = Browser::start_recording_console("quorum-chromium").await?;
    let firefox = Firefox::start("quorum-firefox").await?;
    eprintln!("Firefox {}", firefox.version());

    let on_chromium = start_volunteering(&chromium, &relay.url()).await?;
    let on_firefox = match start_volunteering(&firefox, &relay.url()).await {
        Ok(started) => started,
        Err(e) => {
            return Err(e.context(format!(
                "Firefox's own output (last lines):\n{}",
                firefox.output()
            )))
        }
    };
    eprintln!(
        "device cards: chromium {:?}, firefox {:?}",
        on_chromium.device, on_firefox.device
    );
    for (name, device) in [
        ("chromium", &on_chromium.device),
        ("firefox", &on_firefox.device),
    ] {
        ensure!(
            device.starts_with("WebGPU:") || device.starts_with("CPU fallback"),
            "{name}'s device card shows the adapter or the CPU fallback: {device}"
        );
    }
    ensure!(
        on_chromium.wallet != on_firefox.wallet,
        "each browser has its own wallet: {}",
        on_chromium.wallet
    );
    let deadline = Instant::now() + CONNECT;
    while api.stats().await?.volunteers < 2 {
        ensure!(
            Instant::now() < deadline,
            "the relay counts {} volunteers, not 2",
            api.stats().await?.volunteers
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // 160x128x96 at 1 MFLOP a unit: 4 units, small enough for Firefox's CPU worker.
    let job = MatmulJob::random(160, 128, 96, 31);
    let submitted = Instant::now();
    let id = api.submit_with_quorum(&job.body, 2).await?;
    let done = match api.wait_done(&id, Duration::from_secs(120)).await {
        Ok(done) => done,
        Err(e) => {
            return Err(e.context(format!(
                "console of chromium:\n{}\nconsole of firefox:\n{}",
                lines(&chromium.console().await.unwrap_or_default()),
                lines(&firefox.console().await.unwrap_or_default())
            )))
        }
    };
    eprintln!(
        "quorum-2 job of {} units done in {:?}",
        done.progress.units_total,
        submitted.elapsed()
    );
    let (status, result) = api.result(&id).await?;
    assert_eq!(status, 200);
    job.check(&result)?;
    eprintln!(
        "GFLOP/s while computing: chromium {:?}, firefox {:?}",
        chromium.text("gflops").await?,
        firefox.text("gflops").await?
    );

    // Every unit was judged on both browsers' results.
    let both: BTreeSet<&str> = [on_chromium.wallet.as_str(), on_firefox.wallet.as_str()].into();
    let units = api.units(&id).await?;
    ensure!(units.len() >= 4, "the job has {} units", units.len());
    for unit in &units {
        let wallets: BTreeSet<&str> = unit.valid_wallets.iter().map(String::as_str).collect();
        ensure!(
            wallets == both,
            "unit {} was judged on {wallets:?}, not on both browsers' wallets",
            unit.index
        );
    }

    // Both wallets are paid in the public ledger, and each page's credit counter (from
    // its signed receipts) shows what its wallet got.
    for (page_name, wallet) in [
        ("chromium", &on_chromium.wallet),
        ("firefox", &on_firefox.wallet),
    ] {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut pay = paid(&api, wallet).await?;
        while pay == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            pay = paid(&api, wallet).await?;
        }
        let balance = api.wallet(wallet).await?.balance_micro;
        eprintln!("{page_name}'s wallet: paid {pay} micro-credits, balance {balance}");
        ensure!(pay > 0, "the ledger paid {page_name}'s wallet nothing");
        ensure!(
            balance == pay,
            "{page_name}'s balance {balance} is what the ledger paid it, {pay}"
        );
    }
    let expected = |wallet: &str| {
        let api = &api;
        let wallet = wallet.to_owned();
        async move {
            let balance = api.wallet(&wallet).await?.balance_micro;
            anyhow::Ok(balance as f64 / 1e6)
        }
    };
    let on_page = expected(&on_chromium.wallet).await?;
    chromium
        .wait_for_text("credits-earned", Duration::from_secs(10), |t| {
            starling_e2e::shows_credits(t, on_page)
        })
        .await?;
    let on_page = expected(&on_firefox.wallet).await?;
    firefox
        .wait_for_text("credits-earned", Duration::from_secs(10), |t| {
            starling_e2e::shows_credits(t, on_page)
        })
        .await?;

    for (name, errors) in [
        ("chromium", chromium.page_errors().await?),
        ("firefox", firefox.page_errors().await?),
    ] {
        ensure!(
            errors.is_empty(),
            "{name}'s console shows page errors:\n{}",
            lines(&errors)
        );
    }
    Ok(())
}

/// How long a browser may take to notice that its relay died without a word: ICE
/// declares the connection failed after about 30 s without answers (Firefox closed its
/// channel 29.8 s after a SIGKILL here).
const NOTICE_DEAD_RELAY: Duration = Duration::from_secs(60);

/// Waits until `page`'s console holds `count` entries containing `needle`.
async fn wait_console<P: Page>(
    page: &P,
    needle: &str,
    count: usize,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let console = page.console().await?;
        if console.iter().filter(|e| e.text.contains(needle)).count() >= count {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{}'s console holds fewer than {count} entries with {needle:?} after {timeout:?}; status {:?}; console:\n{}",
            page.browser_name(),
            page.text("status").await?,
            lines(&console)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A relay killed (SIGKILL: no goodbye on any channel) and started again on the same
/// address a while later: both browsers notice that their connection died, try again
/// while it is down, come back by themselves and finish a quorum-2 job together, and
/// tearing the dead and the failed connections down throws nothing in either console.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_browsers_come_back_after_the_relay_is_killed() -> Result<()> {
    let data = TempDir::new("firefox-relay-killed")?;
    let mut relay = Relay::start(data.path(), 1)?;
    let api = relay.api();
    let chromium = Browser::start_recording_console("killed-chromium").await?;
    let firefox = Firefox::start("killed-firefox").await?;
    start_volunteering(&chromium, &relay.url()).await?;
    start_volunteering(&firefox, &relay.url()).await?;

    relay.kill();
    let killed = Instant::now();
    chromium
        .wait_for_text("status", NOTICE_DEAD_RELAY, |t| !starling_e2e::connected(t))
        .await
        .context("chromium never noticed that the relay died")?;
    firefox
        .wait_for_text("status", NOTICE_DEAD_RELAY, |t| !starling_e2e::connected(t))
        .await
        .context("firefox never noticed that the relay died")?;
    eprintln!(
        "both browsers noticed the dead relay {:?} after SIGKILL",
        killed.elapsed()
    );
    // Two failed tries each while the relay is down: each try's peer connection is
    // dropped unopened.
    let failed_try = "could not connect to the relay";
    wait_console(&chromium, failed_try, 2, Duration::from_secs(30)).await?;
    wait_console(&firefox, failed_try, 2, Duration::from_secs(30)).await?;

    relay.restart()?;
    let restarted = Instant::now();
    loop {
        let back = api.stats().await?.volunteers;
        if back >= 2 {
            break;
        }
        ensure!(
            restarted.elapsed() < Duration::from_secs(30),
            "{back} of 2 browsers came back within 30 s of the restart; chromium says {:?}, firefox says {:?}",
            Page::text(&chromium, "status").await?,
            firefox.text("status").await?
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "both browsers back {:?} after the restart",
        restarted.elapsed()
    );

    let job = MatmulJob::random(160, 128, 96, 32);
    let id = api.submit_with_quorum(&job.body, 2).await?;
    api.wait_done(&id, Duration::from_secs(120)).await?;
    let (status, result) = api.result(&id).await?;
    assert_eq!(status, 200);
    job.check(&result)?;
    for (name, errors) in [
        ("chromium", chromium.page_errors().await?),
        ("firefox", firefox.page_errors().await?),
    ] {
        ensure!(
            errors.is_empty(),
            "{name}'s console shows page errors:\n{}",
            lines(&errors)
        );
    }
    Ok(())
}
