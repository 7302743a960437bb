//! Submitters own their jobs. Against a real relay process: every job route answers only
//! to the account that submitted the job (another account gets the 404 of a job that
//! does not exist, a caller without a key 401); the public pages show aggregates and an
//! opaque escrow reference the owner alone can tie to the job; keys are checked before a
//! body is read; made-up keys are rate limited like anonymous requests.

use reqwest::Method;
use sha2::{Digest, Sha256};
use starling_api::{JobList, JobState};
use starling_e2e::{Api, KernelJob, Relay, TempDir, Volunteer};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Status and body (as text) of `method path` by `api`.
async fn call(api: &Api, method: Method, path: &str) -> anyhow::Result<(u16, String)> {
    let response = api
        .http()
        .request(method, format!("{}{path}", api.base()))
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.text().await?))
}

#[tokio::test]
async fn only_the_owner_reaches_a_job() -> anyhow::Result<()> {
    let data = TempDir::new("ownership")?;
    let relay = Relay::start(data.path(), 64)?;
    let owner = relay.api();
    let other = Api::with_key(&relay.url(), &relay.create_key("10")?);
    let anonymous = Api::new(&relay.url());

    let volunteer = Volunteer::start_with(&relay.url(), &["--cpu"])?;
    let done = owner
        .submit_with_quorum(&KernelJob::montecarlo(200_000, 7)?.body, 1)
        .await?;
    owner.wait_done(&done, Duration::from_secs(60)).await?;
    drop(volunteer);
    // With no volunteer left, this one does not finish: something to cancel.
    let queued = owner
        .submit_with_quorum(&KernelJob::montecarlo(200_000, 8)?.body, 1)
        .await?;

    // Purging: only the owner (the owner's purge is `job_data.rs`'s test).
    let purge = format!("/api/v1/jobs/{done}/data");
    let (status, body) = call(&other, Method::DELETE, &purge).await?;
    assert_eq!(status, 404, "another account purges: {body}");
    assert_eq!(call(&anonymous, Method::DELETE, &purge).await?.0, 401);

    for path in [
        format!("/api/v1/jobs/{done}"),
        format!("/api/v1/jobs/{done}/result"),
        format!("/api/v1/jobs/{done}/units"),
        format!("/api/v1/jobs/{done}/events"),
    ] {
        let (status, body) = call(&owner, Method::GET, &path).await?;
        assert_eq!(status, 200, "the owner reads {path}: {body}");
        let (status, body) = call(&other, Method::GET, &path).await?;
        assert_eq!(status, 404, "another account gets {path}: {body}");
        assert!(body.contains("no job with id"), "{path}: {body}");
        let (status, body) = call(&anonymous, Method::GET, &path).await?;
        assert_eq!(status, 401, "no key gets {path}: {body}");
    }

    // Listing: the owner's jobs only.
    let (status, body) = call(&owner, Method::GET, "/api/v1/jobs").await?;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&done) && body.contains(&queued), "{body}");
    let (status, body) = call(&other, Method::GET, "/api/v1/jobs").await?;
    assert_eq!(status, 200, "{body}");
    let listed: JobList = serde_json::from_str(&body)?;
    assert!(listed.jobs.is_empty(), "{body}");
    let (status, _) = call(&anonymous, Method::GET, "/api/v1/jobs").await?;
    assert_eq!(status, 401);

    // Cancelling: only the owner; the job is untouched by the others' attempts.
    let cancel = format!("/api/v1/jobs/{queued}");
    assert_eq!(call(&other, Method::DELETE, &cancel).await?.0, 404);
    assert_eq!(call(&anonymous, Method::DELETE, &cancel).await?.0, 401);
    assert_ne!(owner.job(&queued).await?.state, JobState::Cancelled);
    let (status, body) = call(&owner, Method::DELETE, &cancel).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(owner.job(&queued).await?.state, JobState::Cancelled);

    // The public pages: no job id, no parameter; the ledger names each job's escrow by
    // an opaque reference that the owner's record lets anyone check.
    let record = owner.job(&done).await?;
    let proof = record
        .escrow
        .clone()
        .ok_or_else(|| anyhow::anyhow!("the owner sees the escrow"))?;
    let (escrow, salt) = (proof.account, proof.salt);
    let mut digest = Sha256::new();
    digest.update(b"starling escrow v1\0");
    digest.update(done.as_bytes());
    digest.update(salt.as_bytes());
    let expected = format!("escrow:{}", &hex(&digest.finalize())[..32]);
    assert_eq!(escrow, expected, "the owner can prove the link: {record:?}");
    let mut public = String::new();
    for path in [
        "/api/v1/stats",
        "/api/v1/leaderboard",
        "/api/v1/ledger?limit=500",
    ] {
        let (status, body) = call(&anonymous, Method::GET, path).await?;
        assert_eq!(status, 200, "{path}: {body}");
        public.push_str(&body);
    }
    for secret in [&done, &queued] {
        assert!(
            !public.contains(secret.as_str()),
            "job id {secret} is public"
        );
    }
    assert!(public.contains(&escrow), "the ledger shows {escrow}");
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The relay's peak resident memory so far, in KiB (`VmHWM`).
fn peak_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmHWM in /proc/{pid}/status"))
}

#[tokio::test]
async fn a_bogus_key_is_refused_before_the_body_is_read() -> anyhow::Result<()> {
    let data = TempDir::new("bogus-key")?;
    let relay = Relay::start(data.path(), 64)?;
    let pid = relay.pid().ok_or_else(|| anyhow::anyhow!("no relay pid"))?;
    let addr = relay.url().trim_start_matches("http://").to_owned();
    let before = peak_kib(pid)?;
    const BODY: usize = 60 * 1024 * 1024;
    let mut attempts = Vec::new();
    for i in 0..4 {
        let addr = addr.clone();
        attempts.push(tokio::spawn(async move {
            let mut socket = tokio::net::TcpStream::connect(&addr).await?;
            let head = format!(
                "POST /api/v1/jobs HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
                 authorization: Bearer stk_made-up-{i}\r\ncontent-length: {BODY}\r\n\r\n"
            );
            socket.write_all(head.as_bytes()).await?;
            // A first MiB of the 60: a relay that waits for the rest never answers. A relay
            // that answers at once may close before the MiB is written (a broken pipe here),
            // which is the point: what it sent is still there to read.
            let _ = socket.write_all(&vec![b' '; 1024 * 1024]).await;
            let mut answer = vec![0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(10), socket.read(&mut answer))
                .await
                .map_err(|_| anyhow::anyhow!("no answer before the body was sent"))??;
            anyhow::Ok(String::from_utf8_lossy(&answer[..n]).into_owned())
        }));
    }
    for attempt in attempts {
        let answer = attempt.await??;
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
        assert!(answer.contains("the API key is not valid"), "{answer}");
    }
    let grown = peak_kib(pid)?.saturating_sub(before);
    eprintln!("4 bodies of 60 MiB with a made-up key: the relay's peak memory grew {grown} KiB");
    assert!(grown < 20 * 1024, "peak memory grew by {grown} KiB");
    Ok(())
}

#[tokio::test]
async fn made_up_keys_are_limited_like_anonymous_requests() -> anyhow::Result<()> {
    let data = TempDir::new("made-up-keys")?;
    let relay = Relay::start_with(
        data.path(),
        64,
        &["--rate-limit-per-s", "0.5", "--rate-limit-burst", "5"],
    )?;
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for i in 0..12 {
        let response = client
            .get(format!("{}/api/v1/stats", relay.url()))
            .bearer_auth(format!("stk_fresh-{i}"))
            .send()
            .await?;
        statuses.push(response.status().as_u16());
    }
    assert_eq!(&statuses[..5], [401; 5], "{statuses:?}");
    assert!(
        statuses[5..].iter().all(|s| *s == 429),
        "fresh made-up keys share their address's bucket: {statuses:?}"
    );
    // A verified key has a bucket of its own, but the address's still applies.
    let (status, _) = call(&relay.api(), Method::GET, "/api/v1/account").await?;
    assert_eq!(status, 429);
    Ok(())
}
