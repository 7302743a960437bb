//! The site share by proof (issue 19): a real relay and native volunteers. A volunteer
//! that names a second wallet of its own as its "site" skims nothing from its co-worker
//! (the wallet is not registered, and a site's share comes out of the platform's fee
//! anyway); a site owner registers with a signature and a file on the origin, and then a
//! volunteer coming through that site earns it the share.

use starling_api::{Site, SiteRegistration};
use starling_e2e::{HostSite, MatmulJob, Relay, TempDir, Volunteer};
use starling_protocol::{SiteOrigin, WalletKey};
use std::path::Path;
use std::time::{Duration, Instant};

/// Starts a native CPU volunteer with a key file of `key`, plus `extra` arguments.
fn volunteer(
    relay: &Relay,
    dir: &Path,
    name: &str,
    key: &WalletKey,
    extra: &[&str],
) -> anyhow::Result<Volunteer> {
    let file = dir.join(format!("{name}.key"));
    std::fs::write(&file, key.to_hex())?;
    let file = file.display().to_string();
    let mut args = vec!["--cpu", "--key-file", file.as_str()];
    args.extend_from_slice(extra);
    Volunteer::start_logged(&relay.url(), &args, &dir.join(format!("{name}.log")))
}

async fn wait_volunteers(api: &starling_e2e::Api, n: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while api.stats().await?.volunteers < n {
        anyhow::ensure!(Instant::now() < deadline, "volunteers did not connect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Micro-credits the ledger credited `wallet` for `reason`.
async fn credited(api: &starling_e2e::Api, wallet: &str, reason: &str) -> anyhow::Result<u64> {
    let history = api.client().wallet_history(wallet, 0, 500).await?;
    Ok(history
        .entries
        .iter()
        .filter(|e| e.credit == format!("wallet:{wallet}") && e.reason == reason)
        .map(|e| e.amount_micro)
        .sum())
}

/// `POST /api/v1/sites`: the status and the body.
async fn register(
    api: &starling_e2e::Api,
    origin: &str,
    wallet: &WalletKey,
    signer: &WalletKey,
) -> anyhow::Result<(u16, String, serde_json::Value)> {
    let parsed: SiteOrigin = origin.parse()?;
    let signature: String = signer
        .sign_site(&parsed)
        .0
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let response = api
        .http()
        .post(format!("{}/api/v1/sites", api.base()))
        .json(&SiteRegistration {
            origin: origin.to_owned(),
            wallet: wallet.address().to_string(),
            signature,
        })
        .send()
        .await?;
    let status = response.status().as_u16();
    let kind = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Ok((status, kind, response.json().await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volunteer_naming_its_own_second_wallet_as_site_skims_nothing() -> anyhow::Result<()> {
    let data = TempDir::new("site-skim")?;
    // The site share as the old default had it (10 % of each unit, then taken from the
    // volunteers), and a 5 % fee; 1 credit per GFLOP so rounding stays small.
    let relay = Relay::start_with(
        data.path(),
        1,
        &[
            "--price-per-gflop",
            "1",
            "--site-share-ppm",
            "100000",
            "--platform-fee-ppm",
            "50000",
        ],
    )?;
    let api = relay.api();
    let honest = WalletKey::from_seed(rand::random());
    let skimmer = WalletKey::from_seed(rand::random());
    let second = WalletKey::from_seed(rand::random()).address().to_string();
    let _a = volunteer(&relay, data.path(), "honest", &honest, &[])?;
    let _b = volunteer(
        &relay,
        data.path(),
        "skimmer",
        &skimmer,
        &[
            "--site",
            &second,
            "--site-origin",
            "https://skimmer.example",
        ],
    )?;
    wait_volunteers(&api, 2).await?;
    let before = api.client().account().await?;
    let job = MatmulJob::random(512, 64, 64, 19);
    let id = api.submit(&job.body).await?; // quorum 2: both wallets compute every unit
    let record = api.wait_done(&id, Duration::from_secs(120)).await?;
    job.check(&api.result(&id).await?.1)?;
    let units = u64::try_from(record.progress.units_total)?;

    // The named wallet got nothing, and no site share was paid to anyone.
    assert_eq!(credited(&api, &second, "site_share").await?, 0);
    let ledger = api.client().ledger(0, 500).await?;
    assert!(
        ledger.entries.iter().all(|e| e.reason != "site_share"),
        "a site share was paid: {ledger:?}"
    );
    // Both volunteers earned the same, and between them everything but the 5 % fee (less
    // at most one micro-credit of rounding per share): naming a site took nothing from
    // the co-worker.
    let honest_pay = credited(&api, &honest.address().to_string(), "pay").await?;
    let skimmer_pay = credited(&api, &skimmer.address().to_string(), "pay").await?;
    assert_eq!(honest_pay, skimmer_pay, "every unit paid both equal shares");
    let after = api.client().account().await?;
    let spent = before.balance_micro - after.balance_micro;
    let volunteers_ppm = (honest_pay + skimmer_pay + 2 * units) * 1_000_000 / spent.max(1);
    eprintln!("{units} units, {spent} spent: honest {honest_pay}, skimmer {skimmer_pay}");
    assert!(
        volunteers_ppm >= 950_000,
        "the volunteers got {volunteers_ppm} ppm of {spent} micro-credits over {units} units"
    );
    assert!(starling_e2e::audit(data.path())?.contains("ledger ok"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_registered_with_proof_earns_its_share() -> anyhow::Result<()> {
    let data = TempDir::new("site-proof")?;
    let relay = Relay::start_with(
        data.path(),
        1,
        &[
            "--price-per-gflop",
            "1",
            "--allow-http-sites",
            "--site-share-ppm",
            "25000",
            "--platform-fee-ppm",
            "50000",
        ],
    )?;
    let api = relay.api();
    let site = WalletKey::from_seed(rand::random());
    let stranger = WalletKey::from_seed(rand::random());
    // The site's origin serves its wallet at /.well-known/starling-site (this tiny server
    // answers every path with the same body).
    let proof = HostSite::serve(format!("# Starling site wallet\n{}\n", site.address())).await?;
    let origin = format!("http://127.0.0.1:{}", proof.port());
    // Another origin that names someone else's wallet.
    let other = HostSite::serve(format!("{}\n", stranger.address())).await?;
    let other_origin = format!("http://127.0.0.1:{}", other.port());

    // Signed by another key: refused before anything is fetched.
    let (status, kind, body) = register(&api, &origin, &site, &stranger).await?;
    assert_eq!(
        (status, body["field"].as_str()),
        (422, Some("signature")),
        "{body}"
    );
    assert!(kind.starts_with("application/problem+json"), "{kind}");
    // Signed, but the origin does not name the wallet.
    let (status, kind, body) = register(&api, &other_origin, &site, &site).await?;
    assert_eq!(
        (status, body["field"].as_str()),
        (422, Some("origin")),
        "{body}"
    );
    assert!(kind.starts_with("application/problem+json"), "{kind}");
    // Not an origin at all.
    let response = api
        .http()
        .post(format!("{}/api/v1/sites", api.base()))
        .json(&serde_json::json!({
            "origin": "file:///etc",
            "wallet": site.address().to_string(),
            "signature": "00".repeat(64),
        }))
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 422);
    let body: serde_json::Value = response.json().await?;
    assert_eq!(body["field"], "origin", "{body}");
    // Both proofs hold: registered.
    let (status, _, body) = register(&api, &origin, &site, &site).await?;
    assert_eq!(status, 201, "{body}");
    let registered: Site = serde_json::from_value(body)?;
    assert_eq!(registered.origin, origin);
    assert_eq!(registered.wallet, site.address().to_string());

    // A volunteer through that site earns it the share; one claiming the site's wallet on
    // another origin earns it nothing more (that claim is ignored).
    let worker = WalletKey::from_seed(rand::random());
    let site_address = site.address().to_string();
    let _v = volunteer(
        &relay,
        data.path(),
        "worker",
        &worker,
        &["--site", &site_address, "--site-origin", &origin],
    )?;
    wait_volunteers(&api, 1).await?;
    let job = MatmulJob::random(160, 128, 96, 23);
    let id = api.submit_with_quorum(&job.body, 1).await?;
    api.wait_done(&id, Duration::from_secs(120)).await?;
    job.check(&api.result(&id).await?.1)?;
    let share = credited(&api, &site_address, "site_share").await?;
    let pay = credited(&api, &worker.address().to_string(), "pay").await?;
    assert!(share > 0, "the registered site was paid its share");
    // 2.5 % of the price (out of the 5 % fee) against the volunteer's 95 %: its pay is
    // about 38 times the site's share, rounding aside.
    let ratio = pay as f64 / share as f64;
    eprintln!("site share {share}, volunteer pay {pay}");
    assert!((ratio - 38.0).abs() < 2.0, "site {share}, volunteer {pay}");
    assert!(starling_e2e::audit(data.path())?.contains("ledger ok"));
    Ok(())
}
