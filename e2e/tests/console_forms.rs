//! The console's form in real headless Chromium against a real relay: a quote (units,
//! price, time) and the account's balance beside Submit, updated as the form changes; a
//! refusal the relay names a field for shown beside that field, in plain words; and "My
//! jobs", which survives a reload (the followed job is followed again) and shows another
//! key none of them.

use starling_e2e::browser::Browser;
use starling_e2e::{Relay, TempDir};
use starling_kernels::catalog::NamedInputs;
use starling_kernels::Catalog;
use std::time::Duration;

/// The relay's unit size in MFLOP.
const UNIT_MFLOPS: u64 = 1;
/// Jobs on the first page of "My jobs".
const MY_JOBS_PAGE: usize = 20;

/// The first number in `text` ("1,234" read as 1234).
fn first_number(text: &str) -> Option<u64> {
    text.split(|c: char| !c.is_ascii_digit() && c != ',')
        .map(|n| n.replace(',', ""))
        .find_map(|n| n.parse().ok())
}

fn render_units(width: u32, height: u32) -> anyhow::Result<usize> {
    let params = serde_json::json!({
        "width": width, "height": height, "samples_per_pixel": 8, "seed": 3,
    });
    Ok(Catalog::builtin()
        .get("render")?
        .plan(&params, &NamedInputs::new(), UNIT_MFLOPS * 1_000_000)?
        .units
        .len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_quotes_places_refusals_and_keeps_my_jobs_across_a_reload() -> anyhow::Result<()>
{
    let data = TempDir::new("console-forms")?;
    let relay = Relay::start(data.path(), UNIT_MFLOPS)?;
    let key = relay.dev_key().unwrap_or_default().to_owned();
    let api = relay.api();
    let console = format!("{}/console", relay.url());
    let browser = Browser::start("console-forms").await?;
    browser.goto(&console).await?;
    browser
        .wait_text("kernel", Duration::from_secs(30), |t| t.contains("render"))
        .await?;
    browser.set_value("kernel", "render").await?;
    browser
        .wait_text("error-width", Duration::from_secs(5), |_| true)
        .await?;
    browser.set_value("api-key", &key).await?;

    // The balance is the account's.
    let account = api.client().account().await?;
    let balance = browser
        .wait_text("balance", Duration::from_secs(10), |t| {
            t.contains("credits")
        })
        .await?;
    assert!(
        balance.contains(&account.balance),
        "{balance} vs {account:?}"
    );

    // The quote follows the form: as many units as the relay would split it into.
    for (field, value) in [
        ("param-width", "64"),
        ("param-height", "48"),
        ("param-samples_per_pixel", "8"),
        ("param-seed", "3"),
        ("quorum", "1"),
    ] {
        browser.set_value(field, value).await?;
    }
    let expected = render_units(64, 48)?;
    let quote = browser
        .wait_text("quote", Duration::from_secs(10), |t| {
            first_number(t) == Some(expected as u64)
        })
        .await?;
    assert!(quote.contains("credits"), "{quote}");
    let job = starling_api::SubmitJob::new(
        "render",
        serde_json::json!({"width": 64, "height": 48, "samples_per_pixel": 8, "seed": 3}),
    )
    .with_quorum(1);
    let relay_quote = api.client().quote(&job).await?;
    assert!(
        quote.contains(&format!("{} credits", relay_quote.price)),
        "{quote} vs {relay_quote:?}"
    );
    browser.set_value("param-width", "640").await?;
    let wider = render_units(640, 48)?;
    assert_ne!(wider, expected);
    browser
        .wait_text("quote", Duration::from_secs(10), |t| {
            first_number(t) == Some(wider as u64)
        })
        .await?;

    // Inputs of the wrong size: the relay's refusal lands beside the input it names,
    // without its "invalid input" preamble, and nothing is created.
    let jobs_before = api.client().jobs(None, 100, None).await?.jobs.len();
    browser.set_value("kernel", "matmul").await?;
    browser
        .wait_text("param-m", Duration::from_secs(5), |_| true)
        .await?;
    for name in ["m", "k", "n"] {
        browser.set_value(&format!("param-{name}"), "4").await?;
    }
    let short = data.path().join("a.f32");
    std::fs::write(&short, [0u8; 12])?;
    let right = data.path().join("b.f32");
    std::fs::write(&right, [0u8; 64])?;
    browser.upload("input-a", &short).await?;
    browser.upload("input-b", &right).await?;
    let beside = browser
        .wait_text("relay-error-input-a", Duration::from_secs(10), |t| {
            !t.is_empty()
        })
        .await?;
    assert!(
        beside.contains("64 bytes") && !beside.starts_with("invalid input"),
        "{beside}"
    );
    browser.click("submit").await?;
    browser
        .wait_text("submit-error", Duration::from_secs(10), |t| !t.is_empty())
        .await?;
    assert_eq!(
        api.client().jobs(None, 100, None).await?.jobs.len(),
        jobs_before
    );
    assert_eq!(
        browser
            .text("relay-error-input-b")
            .await?
            .unwrap_or_default(),
        ""
    );
    // Large inputs are not uploaded again at every change of the form just to quote.
    let large = data.path().join("large.f32");
    std::fs::write(&large, vec![0u8; 5 << 20])?;
    browser.upload("input-a", &large).await?;
    browser
        .wait_text("quote", Duration::from_secs(10), |t| {
            t.contains("too large to send for a quote")
        })
        .await?;

    // A job submitted, then the page reloaded: the card and the list are back.
    browser.set_value("kernel", "render").await?;
    browser
        .wait_text("param-width", Duration::from_secs(5), |_| true)
        .await?;
    for (field, value) in [
        ("param-width", "64"),
        ("param-height", "48"),
        ("param-samples_per_pixel", "8"),
        ("param-seed", "3"),
    ] {
        browser.set_value(field, value).await?;
    }
    browser.click("submit").await?;
    let id = browser
        .wait_text("job-id", Duration::from_secs(30), |t| !t.is_empty())
        .await?;
    browser
        .wait_text("my-jobs", Duration::from_secs(10), |t| t.contains(&id))
        .await?;
    // A page of newer jobs pushes it off the list's first page.
    let monte_carlo = starling_api::SubmitJob::new(
        "montecarlo",
        serde_json::json!({"samples": 1_000_000, "seed": 1}),
    );
    for _ in 0..MY_JOBS_PAGE {
        api.submit(&monte_carlo).await?;
    }
    browser.goto(&console).await?;
    browser
        .wait_text("job-id", Duration::from_secs(30), |t| t == id)
        .await?;
    let first_page = browser
        .wait_text("my-jobs", Duration::from_secs(10), |t| {
            t.matches("montecarlo").count() == MY_JOBS_PAGE
        })
        .await?;
    assert!(!first_page.contains(&id), "{first_page}");
    browser.click("my-jobs-more").await?;
    browser
        .wait_text("my-jobs", Duration::from_secs(10), |t| t.contains(&id))
        .await?;

    // Another submitter's key lists none of them.
    let other = relay.create_key("0.000001")?;
    browser.set_value("api-key", &other).await?;
    let theirs = browser
        .wait_text("my-jobs", Duration::from_secs(10), |t| {
            t.contains("No jobs")
        })
        .await?;
    assert!(!theirs.contains(&id), "{theirs}");
    let balance = browser
        .wait_text("balance", Duration::from_secs(10), |t| {
            t.contains("credits")
        })
        .await?;
    assert!(balance.contains("Your balance: 0.000001"), "{balance}");
    // A job that costs more than the key holds is said to before it is submitted.
    browser.set_value("param-width", "640").await?;
    browser.set_value("param-height", "480").await?;
    let short = browser
        .wait_text("quote", Duration::from_secs(10), |t| {
            t.contains("more than your balance")
        })
        .await?;
    assert!(short.contains("balance of 0.000001"), "{short}");
    Ok(())
}

/// A submitter who opens the console before pasting a key: the form says what it needs,
/// and the page asks the relay nothing it would refuse (a quote without a key was a 401
/// in the console of every first visit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_before_a_key_is_entered_logs_no_error_or_refusal() -> anyhow::Result<()> {
    use starling_e2e::page::Page;
    let data = TempDir::new("console-no-key")?;
    let relay = Relay::start(data.path(), UNIT_MFLOPS)?;
    let browser = Browser::start_recording_console("console-no-key").await?;
    browser.goto(&format!("{}/console", relay.url())).await?;
    let quote = browser
        .wait_text("quote", Duration::from_secs(30), |t| !t.is_empty())
        .await?;
    assert!(quote.contains("API key"), "{quote}");
    let bad: Vec<String> = browser
        .console()
        .await?
        .into_iter()
        .filter(|e| e.is_page_error() || e.source == "network")
        .map(|e| e.to_string())
        .collect();
    assert!(bad.is_empty(), "the console logged: {bad:#?}");
    Ok(())
}
