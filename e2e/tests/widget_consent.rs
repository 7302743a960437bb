//! Consent a host page cannot fake. A page embedding the widget controls how the card
//! looks: it can fade it to nearly nothing over a button of its own, cover it, shrink it or
//! move it off-screen, so that a visitor's real click lands on Start unseen, and then hide
//! a running card. In real headless Chromium (which has IntersectionObserver v2), against
//! a real relay: a real pointer click on Start in a card the visitor cannot see computes
//! nothing; a running card that is hidden stops leasing within a second and resumes when
//! shown; a remembered yes resumes only where the card is visible, says so, lapses after
//! 30 days, and the volunteer page's "Forget sites where I said yes" withdraws it.

use anyhow::{ensure, Context};
use serde_json::{json, Value};
use starling_api::{JobState, UnitState};
use starling_e2e::browser::Browser;
use starling_e2e::firefox::Firefox;
use starling_e2e::page::Page;
use starling_e2e::{connected, Api, HostSite, MatmulJob, Relay, TempDir};
use starling_protocol::WalletKey;
use std::time::{Duration, Instant};

/// A host page embedding the widget; `?attack=` picks what it does to the card: `faded`
/// (opacity 0.05 over a decoy button of its own), `covered` (an element over the card that
/// lets clicks through), `shrunk` (scaled to a few pixels), `offscreen`, `revealed` (faded
/// until the click, shown right after it), or nothing.
fn host_page(relay_url: &str, site: &str, intensity: f64) -> String {
    format!(
        r##"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Free prizes</title>
<style id="attack"></style></head>
<body><h1>Free prizes</h1>
<button id="decoy" style="position:fixed;right:40px;bottom:40px;width:300px;height:200px">Claim your prize</button>
<div id="cover" style="display:none;position:fixed;right:0;bottom:0;width:420px;height:340px;background:#fff;z-index:2147483647;pointer-events:none">Click anywhere to claim your prize</div>
<script>
  var attack = new URLSearchParams(location.search).get("attack") || "";
  document.getElementById("attack").textContent = {{
    faded: "#starling-widget {{ opacity: 0.05 !important; }}",
    covered: "#cover {{ display: block !important; }}",
    shrunk: "#starling-widget {{ transform: scale(0.05) !important; transform-origin: 100% 100%; }}",
    offscreen: "#starling-widget {{ right: -2000px !important; }}",
    revealed: "#starling-widget {{ opacity: 0.05 !important; }}"
  }}[attack] || "";
  // The page loses focus when a click lands in the card's frame: it then shows the card at
  // once, hoping the card judges the click by what it shows a moment later (once its
  // engine has been fetched, say) rather than at the press.
  if (attack === "revealed") {{
    window.addEventListener("blur", () => {{ document.getElementById("attack").textContent = ""; }});
  }}
</script>
<script src="{relay_url}/widget.js" data-site-wallet="{site}" data-intensity="{intensity}" async></script>
</body></html>"##
    )
}

/// The Start button's centre in the top-level page's viewport, through whatever the host
/// did to the card (a transform included), or None where it is not on screen.
async fn start_button_centre(browser: &Browser) -> anyhow::Result<Option<(f64, f64)>> {
    let frame = browser
        .execute(
            "const r = document.querySelector('[data-testid=starling-frame]').getBoundingClientRect();
             return [r.left, r.top, r.width, r.height, innerWidth, innerHeight];",
            json!([]),
        )
        .await?;
    browser.enter_frame("starling-frame").await?;
    let inside = browser
        .execute(
            "const b = document.querySelector('[data-testid=start]').getBoundingClientRect();
             return [b.left + b.width / 2, b.top + b.height / 2, innerWidth];",
            json!([]),
        )
        .await;
    browser.leave_frame().await?;
    let number = |v: &Value, i: usize| v[i].as_f64().context("a coordinate");
    let inside = inside?;
    let scale = number(&frame, 2)? / number(&inside, 2)?;
    let x = number(&frame, 0)? + number(&inside, 0)? * scale;
    let y = number(&frame, 1)? + number(&inside, 1)? * scale;
    let on_screen = x >= 0.0 && y >= 0.0 && x < number(&frame, 4)? && y < number(&frame, 5)?;
    Ok(on_screen.then_some((x, y)))
}

/// Opens `url`, waits for the card's frame and its device, and stays in the top page.
async fn open_card(browser: &Browser, url: &str) -> anyhow::Result<()> {
    browser.goto(url).await?;
    browser
        .wait_text("starling-frame", Duration::from_secs(15), |_| true)
        .await?;
    browser.enter_frame("starling-frame").await?;
    browser
        .wait_text("device", Duration::from_secs(30), |t| t != "Detecting…")
        .await?;
    browser.leave_frame().await?;
    Ok(())
}

/// The card's text under `test_id`, read inside its frame.
async fn card_text(browser: &Browser, test_id: &str) -> anyhow::Result<String> {
    browser.enter_frame("starling-frame").await?;
    let text = browser.text(test_id).await;
    browser.leave_frame().await?;
    Ok(text?.unwrap_or_default())
}

/// Waits until the card's `test_id` text passes `pred`.
async fn wait_card(
    browser: &Browser,
    test_id: &str,
    within: Duration,
    pred: impl Fn(&str) -> bool,
) -> anyhow::Result<String> {
    browser.enter_frame("starling-frame").await?;
    let text = browser.wait_text(test_id, within, pred).await;
    browser.leave_frame().await?;
    text
}

/// The visitor has been to the network's own page (Chromium lets a site's frame ask for
/// its own storage only then) and answers `answer` (`granted` or `denied`) when the
/// browser asks whether the card on `url` may keep its choice.
async fn answer_storage_prompt(
    browser: &Browser,
    relay_url: &str,
    url: &str,
    answer: &str,
) -> anyhow::Result<()> {
    browser.goto(relay_url).await?;
    open_card(browser, url).await?;
    browser.enter_frame("starling-frame").await?;
    let answered = browser.set_permission("storage-access", answer).await;
    browser.leave_frame().await?;
    answered
}

/// The visitor opens `url`'s card, sees it, presses Start, and work begins.
async fn say_yes_on_a_visible_card(browser: &Browser, url: &str) -> anyhow::Result<()> {
    open_card(browser, url).await?;
    wait_card(browser, "sight", Duration::from_secs(5), |t| t == "Visible").await?;
    browser.enter_frame("starling-frame").await?;
    press_start(browser).await?;
    browser
        .wait_text("status", Duration::from_secs(30), connected)
        .await?;
    browser.leave_frame().await?;
    Ok(())
}

/// Presses Start in the card (the driver already inside the frame, or on the relay's own
/// window) until the card leaves Idle. Chromium drops input to a frame for a moment after
/// it loads or moves, as it would a person's too-early click; the person clicks again.
async fn press_start(browser: &Browser) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        browser.click("start").await?;
        let pressed = browser
            .wait_text("status", Duration::from_secs(1), |t| !t.starts_with("Idle"))
            .await;
        if pressed.is_ok() {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "Start never took a click");
    }
}

/// Sums over the job's units: (results, leases out, units done).
async fn progress(api: &Api, id: &str) -> anyhow::Result<(i64, i64, usize)> {
    let units = api.units(id).await?;
    Ok((
        units.iter().map(|u| u.results).sum(),
        units.iter().map(|u| u.leases_out).sum(),
        units.iter().filter(|u| u.state == UnitState::Done).count(),
    ))
}

fn site_wallet() -> String {
    WalletKey::from_seed([23; 32]).address().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_click_on_a_card_the_visitor_cannot_see_computes_nothing() -> anyhow::Result<()> {
    let data = TempDir::new("consent-unseen")?;
    let relay = Relay::start(data.path(), 1)?;
    let api = relay.api();
    let site = site_wallet();
    let host = HostSite::serve(host_page(&relay.url(), &site, 1.0)).await?;
    let page = format!("http://localhost:{}/", host.port());
    let browser = Browser::start("consent-unseen").await?;

    let job = MatmulJob::random(160, 128, 96, 5);
    let id = api.submit_with_quorum(&job.body, 1).await?;
    for attack in ["faded", "covered", "shrunk", "revealed"] {
        open_card(&browser, &format!("{page}?attack={attack}")).await?;
        let (x, y) = start_button_centre(&browser)
            .await?
            .with_context(|| format!("{attack}: Start is on screen, clickable"))?;
        browser.click_at(x, y).await?;
        let status = wait_card(&browser, "status", Duration::from_secs(10), |t| {
            t.starts_with("Stopped: this card is not fully visible") || connected(t)
        })
        .await
        .with_context(|| format!("{attack}: the click reached Start"))?;
        eprintln!("{attack} card at ({x:.0}, {y:.0}): {status}");
        ensure!(
            status.starts_with("Stopped: this card is not fully visible"),
            "{attack}: a Start the visitor could not see counted: {status}"
        );
        // Long enough for a unit to be leased and computed had the click counted.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (results, leases, _) = progress(&api, &id).await?;
        ensure!(
            results == 0 && leases == 0,
            "{attack}: the relay saw work ({results} results, {leases} leases)"
        );
        ensure!(api.stats().await?.volunteers == 0, "{attack}: it connected");
        ensure!(api.job(&id).await?.state == JobState::Queued, "{attack}");
    }

    // The same page leaving the card alone: the visitor sees it, and Start works.
    open_card(&browser, &page).await?;
    wait_card(&browser, "sight", Duration::from_secs(5), |t| {
        t == "Visible"
    })
    .await?;
    let (x, y) = start_button_centre(&browser)
        .await?
        .context("the visible card's Start")?;
    browser.click_at(x, y).await?;
    api.wait_done(&id, Duration::from_secs(120)).await?;
    let (status, result) = api.result(&id).await?;
    ensure!(status == 200);
    job.check(&result)?;
    browser.screenshot("consent-visible-card").await?;

    // Minimised to a pill, the card still says it works; closed, it is gone and so is
    // the work.
    browser.enter_frame("starling-frame").await?;
    browser.click("minimise").await?;
    browser
        .wait_text("working-badge", Duration::from_secs(5), |t| {
            t == "● working"
        })
        .await?;
    browser.leave_frame().await?;
    let card_height = "const c = document.getElementById('starling-widget');
                       return c ? c.getBoundingClientRect().height : -1;";
    let deadline = Instant::now() + Duration::from_secs(5);
    // 56 px and its border, from 280.
    while !browser
        .execute(card_height, json!([]))
        .await?
        .as_f64()
        .is_some_and(|h| (0.0..100.0).contains(&h))
    {
        ensure!(Instant::now() < deadline, "the card shrank to a pill");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    browser.enter_frame("starling-frame").await?;
    browser.click("close-card").await?;
    browser.leave_frame().await?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while browser.execute(card_height, json!([])).await?.as_f64() != Some(-1.0) {
        ensure!(Instant::now() < deadline, "closing removed the card");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while api.stats().await?.volunteers != 0 {
        ensure!(Instant::now() < deadline, "closing ended the session");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_card_the_host_hides_stops_within_a_second_and_resumes_when_shown(
) -> anyhow::Result<()> {
    let data = TempDir::new("consent-hidden")?;
    let relay = Relay::start(data.path(), 1)?;
    let api = relay.api();
    let site = site_wallet();
    let host = HostSite::serve(host_page(&relay.url(), &site, 1.0)).await?;
    let page = format!("http://localhost:{}/", host.port());
    let browser = Browser::start("consent-hidden").await?;
    // Many small units, so work is still going when the card is hidden.
    let job = MatmulJob::random(4096, 128, 96, 7);
    let id = api.submit_with_quorum(&job.body, 1).await?;
    let total = api.units(&id).await?.len();
    open_card(&browser, &page).await?;
    wait_card(&browser, "sight", Duration::from_secs(5), |t| {
        t == "Visible"
    })
    .await?;
    browser.enter_frame("starling-frame").await?;
    press_start(&browser).await?;
    browser.leave_frame().await?;

    for (hide, show) in [
        (
            "document.getElementById('starling-widget').style.opacity = '0'",
            "document.getElementById('starling-widget').style.opacity = '1'",
        ),
        (
            "document.getElementById('cover').style.display = 'block'",
            "document.getElementById('cover').style.display = 'none'",
        ),
    ] {
        let deadline = Instant::now() + Duration::from_secs(60);
        while progress(&api, &id).await?.0 < 3 {
            ensure!(Instant::now() < deadline, "work started");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let before = progress(&api, &id).await?;
        ensure!(
            before.2 < total,
            "work is still going: {before:?} of {total}"
        );
        let hidden_at = Instant::now();
        browser.execute(hide, json!([])).await?;
        wait_card(&browser, "status", Duration::from_secs(5), |t| {
            t == "Paused while this card is not fully visible."
        })
        .await
        .with_context(|| format!("`{hide}` pauses the card"))?;
        let paused_after = hidden_at.elapsed();
        let remaining = Duration::from_secs(1).saturating_sub(hidden_at.elapsed());
        tokio::time::sleep(remaining).await;
        let at_one_second = progress(&api, &id).await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let later = progress(&api, &id).await?;
        eprintln!(
            "`{hide}`: the card said paused after {paused_after:?}; results {} at hiding, {} at 1 s, {} at 4 s",
            before.0, at_one_second.0, later.0
        );
        ensure!(
            later.0 == at_one_second.0 && later.1 == 0,
            "work went on behind the hidden card: {at_one_second:?} then {later:?}"
        );
        browser.execute(show, json!([])).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while progress(&api, &id).await?.0 <= later.0 {
            ensure!(Instant::now() < deadline, "work resumes once shown");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        wait_card(&browser, "status", Duration::from_secs(5), connected).await?;
    }
    Ok(())
}

/// Sets every remembered yes to `days_ago` days ago, in the relay origin's own storage
/// (where a card keeps them), from a page of the relay's.
async fn age_consent(browser: &Browser, relay_url: &str, days_ago: f64) -> anyhow::Result<u64> {
    browser
        .goto(&format!("{relay_url}/about-widget.html"))
        .await?;
    let aged = browser
        .execute(
            "let n = 0;
             for (const k of Object.keys(localStorage)) {
               if (k.startsWith('starling.consent.')) {
                 localStorage.setItem(k, String(Date.now() - arguments[0] * 864e5));
                 n++;
               }
             }
             return n;",
            json!([days_ago]),
        )
        .await;
    aged?.as_u64().context("a count")
}

/// Waits long enough for an auto-resume to show, then checks none happened.
async fn ensure_not_resumed(browser: &Browser, what: &str) -> anyhow::Result<()> {
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = card_text(browser, "status").await?;
    ensure!(
        status.starts_with("Idle"),
        "{what}: the card resumed by itself: {status}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remembered_yes_resumes_only_visibly_lapses_and_can_be_withdrawn() -> anyhow::Result<()> {
    let data = TempDir::new("consent-remembered")?;
    let relay = Relay::start(data.path(), 1)?;
    let site = site_wallet();
    let host = HostSite::serve(host_page(&relay.url(), &site, 0.5)).await?;
    let page = format!("http://localhost:{}/", host.port());
    let browser = Browser::start("consent-remembered").await?;

    // The visitor says yes on a visible card, then leaves.
    answer_storage_prompt(&browser, &relay.url(), &page, "granted").await?;
    say_yes_on_a_visible_card(&browser, &page).await?;
    let memory = card_text(&browser, "memory").await?;
    ensure!(memory.starts_with("Remembered on localhost:"), "{memory}");

    // Next visit, the host moves the card off-screen: the yes does not restart work there.
    open_card(&browser, &format!("{page}?attack=offscreen")).await?;
    ensure_not_resumed(&browser, "off-screen card").await?;

    // With the card in view it resumes, and says so.
    open_card(&browser, &page).await?;
    let note = wait_card(&browser, "resumed", Duration::from_secs(15), |t| {
        t.starts_with("Resumed")
    })
    .await?;
    ensure!(
        note.starts_with(&format!(
            "Resumed: you started this on localhost:{}",
            host.port()
        )),
        "{note}"
    );
    wait_card(&browser, "status", Duration::from_secs(30), |t| {
        connected(t)
    })
    .await?;

    // A yes older than 30 days does not.
    ensure!(
        age_consent(&browser, &relay.url(), 31.0).await? == 1,
        "one remembered yes"
    );
    open_card(&browser, &page).await?;
    ensure_not_resumed(&browser, "a 31-day-old yes").await?;
    // One 29 days old still does (the check above is not simply "never").
    ensure!(age_consent(&browser, &relay.url(), 29.0).await? == 1);
    open_card(&browser, &page).await?;
    wait_card(&browser, "resumed", Duration::from_secs(15), |t| {
        t.starts_with("Resumed")
    })
    .await?;

    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgetting_sites_on_the_volunteer_page_stops_their_auto_start() -> anyhow::Result<()> {
    let data = TempDir::new("consent-forget")?;
    let relay = Relay::start(data.path(), 1)?;
    let site = site_wallet();
    let host = HostSite::serve(host_page(&relay.url(), &site, 0.5)).await?;
    let browser = Browser::start("consent-forget").await?;
    // What the relay's own pages can reach: a yes given in the relay's consent window, and
    // one given on a site that shares the relay's storage (127.0.0.1, the relay's host).
    let same_site = format!("http://127.0.0.1:{}/", host.port());
    say_yes_on_a_visible_card(&browser, &same_site).await?;
    // Remembered there, as on any site.
    open_card(&browser, &same_site).await?;
    wait_card(&browser, "resumed", Duration::from_secs(15), |t| {
        t.starts_with("Resumed")
    })
    .await?;
    // And one on another site (localhost), kept in the relay's storage because the browser
    // let the card reach it.
    let cross_site = format!("http://localhost:{}/", host.port());
    answer_storage_prompt(&browser, &relay.url(), &cross_site, "granted").await?;
    say_yes_on_a_visible_card(&browser, &cross_site).await?;
    let origin = format!("http://localhost:{}", host.port());
    browser
        .goto(&format!("{}/about-widget.html", relay.url()))
        .await?;
    let kept = browser
        .execute(
            "return Object.keys(localStorage).filter(k => k.startsWith('starling.consent.'));",
            json!([]),
        )
        .await?;
    ensure!(
        kept.as_array().is_some_and(|k| k.len() == 2)
            && kept
                .to_string()
                .contains(&format!("starling.consent.{origin}.")),
        "both sites' yes in the relay's own storage: {kept}"
    );
    let window = format!(
        "{}/widget?window=1&site={site}&origin={}",
        relay.url(),
        origin.replace(':', "%3A").replace('/', "%2F")
    );
    browser.goto(&window).await?;
    browser
        .wait_text("device", Duration::from_secs(30), |t| t != "Detecting…")
        .await?;
    press_start(&browser).await?;
    browser
        .wait_text("status", Duration::from_secs(30), connected)
        .await?;
    // (The window's yes for localhost is the same record as that site's card's.)
    // A host page can open that window itself, behind its own: a yes remembered there
    // does not start it.
    browser.goto(&window).await?;
    browser
        .wait_text("device", Duration::from_secs(30), |t| t != "Detecting…")
        .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = browser.text("status").await?.unwrap_or_default();
    ensure!(
        status.starts_with("Idle"),
        "the relay's window resumed by itself: {status}"
    );

    browser.goto(&format!("{}/", relay.url())).await?;
    browser
        .wait_text("forget-sites", Duration::from_secs(10), |_| true)
        .await?;
    browser.click("forget-sites").await?;
    let forgot = browser
        .wait_text("forget-sites-result", Duration::from_secs(5), |t| {
            t.starts_with("Forgot")
        })
        .await?;
    ensure!(forgot.starts_with("Forgot 2 "), "{forgot}");
    open_card(&browser, &same_site).await?;
    ensure_not_resumed(&browser, "a withdrawn yes").await?;
    open_card(&browser, &cross_site).await?;
    ensure_not_resumed(&browser, "a withdrawn yes on another site").await?;
    Ok(())
}

/// A yes the volunteer page could not withdraw is not kept: on another site, where the
/// browser does not let the card reach the relay's own storage, the card says so and the
/// next visit waits for Start again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_that_cannot_keep_a_yes_where_it_can_be_withdrawn_forgets_it() -> anyhow::Result<()>
{
    let data = TempDir::new("consent-unkept")?;
    let relay = Relay::start(data.path(), 1)?;
    let site = site_wallet();
    let host = HostSite::serve(host_page(&relay.url(), &site, 0.5)).await?;
    let page = format!("http://localhost:{}/", host.port());
    let browser = Browser::start("consent-unkept").await?;
    answer_storage_prompt(&browser, &relay.url(), &page, "denied").await?;
    say_yes_on_a_visible_card(&browser, &page).await?;
    let memory = card_text(&browser, "memory").await?;
    ensure!(memory.starts_with("Not remembered"), "{memory}");
    open_card(&browser, &page).await?;
    ensure_not_resumed(&browser, "a yes kept nowhere").await?;
    Ok(())
}

/// The card's text under `test_id` in Firefox, read through the frame (same origin as the
/// host page here, so a script may).
async fn firefox_card_text(firefox: &Firefox, test_id: &str) -> anyhow::Result<String> {
    let text = firefox
        .execute(
            "const frame = document.querySelector('[data-testid=starling-frame]');
             const doc = frame && frame.contentDocument;
             const el = doc && doc.querySelector(`[data-testid=${arguments[0]}]`);
             return el ? el.textContent : '';",
            json!([test_id]),
        )
        .await?;
    Ok(text.as_str().unwrap_or_default().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firefox_without_intersection_observer_v2_starts_only_in_the_relays_window(
) -> anyhow::Result<()> {
    let data = TempDir::new("consent-firefox")?;
    let relay = Relay::start(data.path(), 1)?;
    let api = relay.api();
    let firefox = Firefox::start("consent-firefox").await?;
    eprintln!("Firefox {}", firefox.version());
    // The relay's own example page, so that the test can read the card's frame.
    firefox
        .goto(&format!("{}/example-host.html", relay.url()))
        .await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // The device line first: once it shows, the card is rendered, its sight line too.
        let device = firefox_card_text(&firefox, "device").await?;
        let sight = firefox_card_text(&firefox, "sight").await?;
        if !device.is_empty() && device != "Detecting…" {
            ensure!(
                sight == "Visibility unknown: nothing runs here",
                "Firefox's card: {sight}"
            );
            break;
        }
        ensure!(Instant::now() < deadline, "the card came up: {device:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let job = MatmulJob::random(40, 32, 24, 9);
    let id = api.submit_with_quorum(&job.body, 1).await?;
    // What the card does with a Start it cannot see (a script's click is enough here: this
    // checks the card's answer, not whether a host could fake the click).
    firefox
        .execute(
            "document.querySelector('[data-testid=starling-frame]').contentDocument
               .querySelector('[data-testid=start]').click();",
            json!([]),
        )
        .await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = firefox_card_text(&firefox, "status").await?;
        if status.starts_with("Stopped: this browser cannot confirm the card is visible") {
            break;
        }
        ensure!(Instant::now() < deadline, "Firefox's card: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    ensure!(api.stats().await?.volunteers == 0, "it connected");
    ensure!(api.job(&id).await?.state == JobState::Queued);

    // The card's way out: the relay's own window, where Start works.
    let href = firefox
        .execute(
            "return document.querySelector('[data-testid=starling-frame]').contentDocument
               .querySelector('[data-testid=open-window]').getAttribute('href');",
            json!([]),
        )
        .await?;
    let href = href.as_str().context("the window's address")?.to_owned();
    eprintln!("Firefox's card offers {href}");
    firefox.goto(&format!("{}{href}", relay.url())).await?;
    firefox
        .wait_for_text("device", Duration::from_secs(30), |t| t != "Detecting…")
        .await?;
    firefox.click("start").await?;
    firefox
        .wait_for_text("status", Duration::from_secs(30), connected)
        .await?;
    api.wait_done(&id, Duration::from_secs(120)).await?;
    let (status, result) = api.result(&id).await?;
    ensure!(status == 200);
    job.check(&result)?;
    Ok(())
}
