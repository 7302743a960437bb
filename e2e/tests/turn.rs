//! NAT traversal that is configured: the relay advertises a real coturn (Debian's
//! package, started here on loopback) with credentials it mints in coturn's
//! `use-auth-secret` scheme. coturn accepts what the relay mints and refuses what a
//! volunteer might make of it (an extended expiry, a forged password); a browser
//! allowed only relayed candidates completes a job through it.

use starling_api::IceServers;
use starling_e2e::turn::Coturn;
use starling_e2e::{Relay, TempDir};

const SECRET: &str = "e2e-turn-secret-5b1f";

/// The ice-servers answer's TURN entry: (urls, username, credential).
fn turn_entry(servers: &IceServers) -> anyhow::Result<(Vec<String>, String, String)> {
    let turn = servers
        .ice_servers
        .iter()
        .find(|s| s.urls.iter().any(|u| u.starts_with("turn:")))
        .ok_or_else(|| anyhow::anyhow!("no TURN server advertised: {servers:?}"))?;
    Ok((
        turn.urls.clone(),
        turn.username.clone().unwrap_or_default(),
        turn.credential.clone().unwrap_or_default(),
    ))
}

async fn ice_servers(relay: &Relay) -> anyhow::Result<IceServers> {
    let response = reqwest::get(format!("{}/api/v1/rtc/ice-servers", relay.url())).await?;
    anyhow::ensure!(
        response.status() == 200,
        "ice-servers: {}",
        response.status()
    );
    let no_store = response
        .headers()
        .get("cache-control")
        .and_then(|v| v.to_str().ok())
        == Some("no-store");
    anyhow::ensure!(no_store, "minted credentials are never cached");
    Ok(response.json().await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturn_accepts_minted_credentials_and_refuses_stretched_or_forged_ones(
) -> anyhow::Result<()> {
    let coturn = Coturn::start(SECRET)?;
    let data = TempDir::new("turn-credentials")?;
    let relay = Relay::start_with(
        data.path(),
        1,
        &[
            "--stun",
            "stun:127.0.0.1:3478",
            "--turn",
            &coturn.url(),
            "--turn-secret",
            SECRET,
            "--turn-ttl-secs",
            "600",
        ],
    )?;
    let servers = ice_servers(&relay).await?;
    assert_eq!(servers.ttl_secs, Some(600));
    assert_eq!(servers.ice_servers[0].urls, ["stun:127.0.0.1:3478"]);
    let (urls, username, credential) = turn_entry(&servers)?;
    assert_eq!(urls, [coturn.url()]);
    let (expiry, id) = username
        .split_once(':')
        .ok_or_else(|| anyhow::anyhow!("username is expiry:id: {username}"))?;
    let expiry: u64 = expiry.parse()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    assert!(
        (now + 590..=now + 610).contains(&expiry),
        "expires after the TTL: {expiry} vs now {now}"
    );
    let (_, _, other) = turn_entry(&ice_servers(&relay).await?)?;
    assert_ne!(other, credential, "each volunteer gets its own credential");

    assert!(
        coturn.try_credential(&username, &credential)?,
        "coturn relays for the credential the relay minted"
    );
    assert!(coturn.allocated_users().contains(&username));
    // The credential is handed to anyone who opens the page: with the README's
    // configuration coturn relays only to the relay's address, nowhere else.
    assert!(
        !coturn.try_relaying_to("127.0.0.2", &username, &credential)?,
        "a valid credential does not make coturn an open proxy"
    );

    // A volunteer stretching its credential's life: a later expiry under the password
    // minted for the earlier one.
    let stretched = format!("{}:{id}", expiry + 86_400);
    assert!(
        !coturn.try_credential(&stretched, &credential)?,
        "a stretched expiry is refused"
    );
    // A password made up without the secret, and one made with the wrong secret.
    assert!(!coturn.try_credential(&username, "bm90IHRoZSBzZWNyZXQ=")?);
    let forged = hmac_sha1_base64(b"guessed-secret", &username);
    assert!(!coturn.try_credential(&username, &forged)?);
    // An expired credential, correctly minted: coturn checks the expiry itself.
    let expired = format!("{}:{id}", now - 5);
    let expired_password = hmac_sha1_base64(SECRET.as_bytes(), &expired);
    assert!(
        !coturn.try_credential(&expired, &expired_password)?,
        "an expired credential is refused"
    );
    assert_eq!(
        coturn.allocated_users(),
        [username],
        "no allocation for anything but the minted credential"
    );
    assert!(
        coturn.log_text().contains("Forbidden IP"),
        "coturn refused the peer outside allowed-peer-ip"
    );
    Ok(())
}

/// base64(HMAC-SHA1(key, message)) through openssl, an implementation other than the
/// relay's.
fn hmac_sha1_base64(key: &[u8], message: &str) -> String {
    use std::io::Write;
    let mut openssl = std::process::Command::new("openssl")
        .args(["dgst", "-sha1", "-binary", "-hmac"])
        .arg(std::ffi::OsStr::new(
            std::str::from_utf8(key).unwrap_or("key"),
        ))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("openssl runs");
    if let Some(mut stdin) = openssl.stdin.take() {
        let _ = stdin.write_all(message.as_bytes());
    }
    let out = openssl.wait_with_output().expect("openssl finishes");
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, out.stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_allowed_only_relayed_candidates_completes_a_job_through_turn() -> anyhow::Result<()>
{
    use starling_e2e::browser::Browser;
    use starling_e2e::MatmulJob;
    use std::time::Duration;

    let coturn = Coturn::start(SECRET)?;
    let data = TempDir::new("turn-browser")?;
    let relay = Relay::start_with(
        data.path(),
        1,
        &["--turn", &coturn.url(), "--turn-secret", SECRET],
    )?;
    let api = relay.api();
    let browser = Browser::start("turn-browser").await?;
    browser.goto(&format!("{}/?ice=relay", relay.url())).await?;
    browser
        .wait_text("device", Duration::from_secs(30), |t| t != "Detecting…")
        .await?;
    assert_eq!(
        browser.text("transport").await?.as_deref(),
        Some("not connected")
    );
    assert!(coturn.allocated_users().is_empty(), "nothing before Start");

    let job = MatmulJob::random(96, 128, 96, 23);
    let id = api.submit_with_quorum(&job.body, 1).await?;
    browser.click("start").await?;
    let transport = browser
        .wait_text("transport", Duration::from_secs(30), |t| {
            t != "not connected" && t != "connecting…"
        })
        .await?;
    assert_eq!(transport, "WebRTC (TURN)", "the device card names the path");
    let done = api.wait_done(&id, Duration::from_secs(120)).await?;
    eprintln!("job done through TURN: {:?}", done.progress);
    let (status, result) = api.result(&id).await?;
    assert_eq!(status, 200);
    job.check(&result)?;

    // coturn saw it: an allocation under a credential the relay minted, and, once the
    // volunteer stops, the bytes that session relayed (the job's inputs went through).
    let users = coturn.allocated_users();
    assert!(
        users.iter().any(|u| u
            .split_once(':')
            .is_some_and(|(expiry, id)| { expiry.parse::<u64>().is_ok() && id.len() == 16 })),
        "an allocation under a minted credential: {users:?}"
    );
    browser.click("stop").await?;
    let relayed = relayed_bytes(&coturn, Duration::from_secs(30)).await?;
    eprintln!("coturn relayed {relayed} bytes from the relay to the volunteer");
    // 96x128 and 128x96 f32 inputs are 96 KiB; all of it came through coturn.
    assert!(
        relayed > 96 * 1024,
        "the inputs came through TURN: {relayed} bytes"
    );

    // Without the knob the same page takes the direct path, and says so. ICE nominates
    // the first pair whose checks succeed, and on a loaded machine the relayed pair
    // (TURN is still offered) sometimes answers first: a page stuck on TURN would never
    // say direct, so up to three connections, one of them direct.
    browser.goto(&relay.url()).await?;
    browser
        .wait_text("device", Duration::from_secs(30), |t| t != "Detecting…")
        .await?;
    let mut seen = Vec::new();
    for _ in 0..3 {
        browser.click("start").await?;
        let transport = browser
            .wait_text("transport", Duration::from_secs(30), |t| {
                t != "not connected" && t != "connecting…"
            })
            .await?;
        browser.click("stop").await?;
        browser
            .wait_text("status", Duration::from_secs(10), |t| t.starts_with("Idle"))
            .await?;
        if transport == "WebRTC (direct)" {
            return Ok(());
        }
        seen.push(transport);
    }
    panic!("without the knob the page never took the direct path: {seen:?}");
}

/// The bytes coturn's relayed addresses received from peers (here: from the relay) over
/// all sessions closed so far (`rb=` of each session's `peer usage:` line, logged when it
/// closes), waiting up to `limit` for one.
async fn relayed_bytes(coturn: &Coturn, limit: std::time::Duration) -> anyhow::Result<u64> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let total: u64 = coturn
            .log_text()
            .lines()
            .filter(|line| line.contains("peer usage:"))
            .filter_map(|line| {
                let start = line.find("rb=")? + 3;
                let digits: String = line[start..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                digits.parse::<u64>().ok()
            })
            .sum();
        if total > 0 {
            return Ok(total);
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!(
                "coturn logged no session usage within {limit:?}; log at {}",
                coturn.log_path().display()
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_volunteer_with_turn_only_completes_a_job_through_coturn() -> anyhow::Result<()> {
    use starling_e2e::{MatmulJob, Volunteer};
    use std::time::Duration;

    let coturn = Coturn::start(SECRET)?;
    let data = TempDir::new("turn-native")?;
    let relay = Relay::start_with(
        data.path(),
        1,
        &["--turn", &coturn.url(), "--turn-secret", SECRET],
    )?;
    let api = relay.api();
    let job = MatmulJob::random(96, 128, 96, 29);
    let id = api.submit_with_quorum(&job.body, 1).await?;
    let log = data.path().join("volunteer.log");
    let volunteer = Volunteer::start_logged(&relay.url(), &["--cpu", "--turn-only"], &log)?;
    let done = api.wait_done(&id, Duration::from_secs(120)).await;
    let done = done.map_err(|e| {
        anyhow::anyhow!(
            "{e}; volunteer log: {}; coturn log at {}",
            std::fs::read_to_string(&log).unwrap_or_default(),
            coturn.log_path().display()
        )
    })?;
    eprintln!("job done through TURN (native): {:?}", done.progress);
    let (status, result) = api.result(&id).await?;
    assert_eq!(status, 200);
    job.check(&result)?;
    assert!(
        !coturn.allocated_users().is_empty(),
        "the native volunteer allocated on coturn"
    );
    // A volunteer that quits gives its allocation back (a Refresh of lifetime 0) rather
    // than leaving coturn to hold it until it expires: 10 minutes once the client has
    // refreshed it, whatever `--max-allocate-lifetime` says. The usage coturn logs at
    // the close is what this test reads, so the close must come from the volunteer.
    let mut volunteer = volunteer;
    let exit = volunteer.interrupt(Duration::from_secs(15))?;
    assert!(
        exit.success(),
        "the volunteer quit cleanly on SIGINT: {exit}"
    );
    let relayed = relayed_bytes(&coturn, Duration::from_secs(10)).await?;
    eprintln!("coturn relayed {relayed} bytes from the relay to the native volunteer");
    assert!(
        relayed > 96 * 1024,
        "the inputs came through TURN: {relayed} bytes"
    );
    Ok(())
}

#[test]
fn relay_refuses_turn_settings_that_cannot_work_at_start() -> anyhow::Result<()> {
    let data = TempDir::new("turn-flags")?;
    let run = |args: &[&str]| -> anyhow::Result<(bool, String)> {
        let out = std::process::Command::new(starling_e2e::binary("relay-server")?)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data.path())
            .args(args)
            .output()?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    };
    // An open TURN server would relay anyone's traffic; coturn with auth refuses all.
    let (ok, stderr) = run(&["--turn", "turn:127.0.0.1:3478"])?;
    assert!(
        !ok && stderr.contains("--turn needs credentials"),
        "{stderr}"
    );
    let (ok, stderr) = run(&["--turn-secret", "s"])?;
    assert!(!ok && stderr.contains("without a --turn URL"), "{stderr}");
    let (ok, stderr) = run(&["--turn", "http://turn.example.org", "--turn-secret", "s"])?;
    assert!(!ok && stderr.contains("is not a TURN URL"), "{stderr}");
    let (ok, stderr) = run(&[
        "--turn",
        "turn:127.0.0.1:3478",
        "--turn-secret",
        "s",
        "--turn-user",
        "u",
        "--turn-credential",
        "p",
    ])?;
    assert!(!ok && stderr.contains("cannot be used with"), "{stderr}");
    // Neither the secret nor the static password is echoed back.
    let (ok, stderr) = run(&["--turn-secret", "hunter2-secret", "--turn-ttl-secs", "5"])?;
    assert!(!ok && !stderr.contains("hunter2-secret"), "{stderr}");
    Ok(())
}
