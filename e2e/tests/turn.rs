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
