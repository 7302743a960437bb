//! The volunteer page respects the Battery Status API in real headless Chromium: on
//! battery below the volunteer's floor it pauses (visibly, and the relay sees no new
//! units); plugged in, or with the floor lowered, it works again.
//!
//! Chromium reports a desktop's battery as full and charging, so the test shadows the
//! page's own `BatteryManager` properties, which is what the page reads before each unit.

use starling_e2e::browser::Browser;
use starling_e2e::{MatmulJob, Relay, TempDir};
use std::time::Duration;

async fn set_battery(browser: &Browser, level: f64, charging: bool) -> anyhow::Result<()> {
    let set = browser
        .execute(
            "if (!navigator.getBattery) return false;
             return navigator.getBattery().then(b => {
               Object.defineProperty(b, 'level', { value: arguments[0], configurable: true });
               Object.defineProperty(b, 'charging', { value: arguments[1], configurable: true });
               return true;
             });",
            serde_json::json!([level, charging]),
        )
        .await?;
    anyhow::ensure!(set == true, "this Chromium has no Battery Status API");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_battery_pauses_work_until_plugged_in_or_the_floor_is_lowered() -> anyhow::Result<()> {
    let data = TempDir::new("battery")?;
    let relay = Relay::start(data.path(), 1)?;
    let api = relay.api();
    let browser = Browser::start("battery").await?;
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

    // 10% and discharging, under the default 20% floor: the page checks before asking for
    // each unit, so once work arrives it pauses, visibly, and no more units go out.
    set_battery(&browser, 0.1, false).await?;
    let job = MatmulJob::random(160, 128, 96, 41);
    let id = api.submit_with_quorum(&job.body, 1).await?;
    browser
        .wait_text("status", Duration::from_secs(15), |t| {
            t.contains("battery low")
        })
        .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let held = api.job(&id).await?;
    assert!(
        held.progress.units_done <= 1,
        "on low battery at most the unit already asked for runs: {held:?}"
    );
    browser.screenshot("volunteer-battery-low").await?;

    // Plugged in: work resumes and the job completes.
    set_battery(&browser, 0.1, true).await?;
    browser
        .wait_text("status", Duration::from_secs(10), |t| {
            starling_e2e::connected(t)
        })
        .await?;
    api.wait_done(&id, Duration::from_secs(60)).await?;

    // Unplugged again, then the volunteer lowers the floor to 5%: 10% is enough now.
    set_battery(&browser, 0.1, false).await?;
    let job = MatmulJob::random(160, 128, 96, 42);
    let id = api.submit_with_quorum(&job.body, 1).await?;
    browser
        .wait_text("status", Duration::from_secs(15), |t| {
            t.contains("battery low")
        })
        .await?;
    browser.set_value("battery-floor", "5").await?;
    browser
        .wait_text("status", Duration::from_secs(10), |t| {
            starling_e2e::connected(t)
        })
        .await?;
    api.wait_done(&id, Duration::from_secs(60)).await?;
    let (status, result) = api.result(&id).await?;
    assert_eq!(status, 200);
    job.check(&result)?;
    Ok(())
}
