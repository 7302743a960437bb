//! The WebSocket a volunteer falls back to when WebRTC cannot connect (`/api/v1/ws`):
//! the same messages as the data channel, but the hello's proof signs the relay's
//! per-connection challenge and host instead of DTLS fingerprints. An honest volunteer
//! computes and is credited over it; a hello signed by another key, for another host,
//! or for another connection's challenge (a replay) is refused with a reason and leaves
//! nothing stored; garbage, text and oversized messages are refused without a panic;
//! and unproved sockets are capped like unproved WebRTC peers.

mod common;

use common::loopback::{relay, relay_with};
use common::websocket::{closes, hello, open, receive, refusal, send, Socket};
use common::TempDir;
use futures::SinkExt;
use starling_kernels::{Catalog, NamedInputs};
use starling_protocol::{
    Binding, ChallengeBinding, Chunker, ToRelay, ToVolunteer, WalletKey, MAX_CHUNK_BYTES,
    PROTOCOL_VERSION,
};
use starling_relay::rtc::MAX_PENDING_PER_ADDRESS;
use starling_relay::scheduler::{Scheduler, SchedulerConfig};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const PATIENCE: Duration = Duration::from_secs(15);

async fn montecarlo_job(
    scheduler: &Scheduler,
    quorum: u32,
) -> anyhow::Result<starling_protocol::JobId> {
    Ok(scheduler
        .submit(
            "montecarlo",
            serde_json::json!({"samples": 1000, "seed": 3}),
            &NamedInputs::new(),
            Some(quorum),
            None,
            None,
        )
        .await?)
}

/// Asks for one unit, computes it with the CPU reference and sends the result, which
/// the relay must accept.
async fn compute_one(socket: &mut Socket) -> anyhow::Result<()> {
    send(socket, &ToRelay::Ready { slots: 1 }).await?;
    let assignment = match receive(socket, 1 << 20).await? {
        ToVolunteer::Assign(assignment) => assignment,
        other => anyhow::bail!("expected work, got {other:?}"),
    };
    let output = Catalog::builtin()
        .get(&assignment.kernel)?
        .run_cpu(&assignment.params_json, &assignment.input)?;
    send(
        socket,
        &ToRelay::Result {
            lease: assignment.lease,
            output,
            elapsed_ms: 1,
            more: 0,
        },
    )
    .await?;
    match receive(socket, 1 << 20).await? {
        ToVolunteer::Ack { accepted, .. } => anyhow::ensure!(accepted, "an honest result refused"),
        other => anyhow::bail!("expected an ack, got {other:?}"),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_volunteer_proves_its_wallet_by_the_challenge_and_is_credited(
) -> anyhow::Result<()> {
    let dir = TempDir::new("ws-honest");
    let (url, scheduler) = relay(&dir, PATIENCE).await?;
    let job = montecarlo_job(&scheduler, 1).await?;
    let key = WalletKey::from_seed([1; 32]);
    let (mut socket, binding) = open(&url).await?;
    send(&mut socket, &hello(&key, &binding)).await?;
    assert!(matches!(
        receive(&mut socket, 1 << 20).await?,
        ToVolunteer::Welcome {
            version: PROTOCOL_VERSION
        }
    ));
    compute_one(&mut socket).await?;
    let units = scheduler.storage().audit_units(job).await?;
    assert_eq!(units[0].result_wallets, vec![key.address().to_string()]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_asking_for_more_is_answered_with_its_verdict_and_the_next_unit(
) -> anyhow::Result<()> {
    let dir = TempDir::new("ws-more");
    // No known answers or probes: the two units below are all the work there is.
    let config = SchedulerConfig {
        canary_rate: 0.0,
        probe_cpu_share: 0.0,
        ..SchedulerConfig::default()
    };
    let (url, scheduler) = relay_with(&dir, PATIENCE, config).await?;
    let jobs = [
        montecarlo_job(&scheduler, 1).await?,
        montecarlo_job(&scheduler, 1).await?,
    ];
    let units = scheduler.storage().audit_units(jobs[0]).await?.len()
        + scheduler.storage().audit_units(jobs[1]).await?.len();
    let key = WalletKey::from_seed([1; 32]);
    let (mut socket, binding) = open(&url).await?;
    send(&mut socket, &hello(&key, &binding)).await?;
    anyhow::ensure!(matches!(
        receive(&mut socket, 1 << 20).await?,
        ToVolunteer::Welcome { .. }
    ));
    send(&mut socket, &ToRelay::Ready { slots: 1 }).await?;
    let mut unit = match receive(&mut socket, 1 << 20).await? {
        ToVolunteer::Assign(assignment) => assignment,
        other => anyhow::bail!("expected work, got {other:?}"),
    };
    // Each result asks for one more: every unit after the first rides on the verdict
    // on the one before, and the last verdict comes alone.
    for answered in 1..=units {
        let output = Catalog::builtin()
            .get(&unit.kernel)?
            .run_cpu(&unit.params_json, &unit.input)?;
        let lease = unit.lease;
        send(
            &mut socket,
            &ToRelay::Result {
                lease,
                output,
                elapsed_ms: 1,
                more: 1,
            },
        )
        .await?;
        match receive(&mut socket, 1 << 20).await? {
            ToVolunteer::Ack {
                lease: acked,
                accepted: true,
                next,
                ..
            } if acked == lease => match next {
                Some(next) if answered < units => unit = next,
                None if answered == units => {}
                other => anyhow::bail!("unit {answered} of {units}: next {other:?}"),
            },
            other => anyhow::bail!("expected the verdict on {lease}, got {other:?}"),
        }
    }
    for job in jobs {
        for unit in scheduler.storage().audit_units(job).await? {
            assert_eq!(unit.result_wallets, vec![key.address().to_string()]);
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_proofs_and_replayed_challenges_are_refused_and_leave_nothing() -> anyhow::Result<()>
{
    let dir = TempDir::new("ws-proofs");
    let (url, scheduler) = relay(&dir, PATIENCE).await?;
    let storage = scheduler.storage().clone();
    let job = montecarlo_job(&scheduler, 1).await?;
    let honest = WalletKey::from_seed([1; 32]);
    let thief = WalletKey::from_seed([2; 32]);

    // Another key's signature over this connection's challenge, claiming the honest wallet.
    let (mut socket, binding) = open(&url).await?;
    let mut forged = hello(&thief, &binding);
    if let ToRelay::Hello { wallet, .. } = &mut forged {
        *wallet = honest.address();
    }
    send(&mut socket, &forged).await?;
    let reason = refusal(&mut socket).await?;
    assert!(
        reason.contains("proof") && reason.contains(&honest.address().to_string()),
        "{reason}"
    );
    assert!(closes(&mut socket).await, "a refused socket stays open");

    // The right challenge, but signed for another relay's host: what a relay in the
    // middle gets when it passes this relay's challenge on to its own visitors.
    let (mut socket, binding) = open(&url).await?;
    let Binding::Challenge(ChallengeBinding { challenge, .. }) = binding else {
        anyhow::bail!("a WebSocket's binding is a challenge");
    };
    let elsewhere = Binding::Challenge(ChallengeBinding::new(challenge, "evil.example"));
    send(&mut socket, &hello(&honest, &elsewhere)).await?;
    let reason = refusal(&mut socket).await?;
    assert!(reason.contains("challenge and relay host"), "{reason}");

    // A real hello of an earlier connection, replayed on a new one: that challenge
    // lived only with its connection.
    let (mut first, first_binding) = open(&url).await?;
    let captured = hello(&honest, &first_binding);
    drop(first.close(None).await);
    let (mut socket, _) = open(&url).await?;
    send(&mut socket, &captured).await?;
    let reason = refusal(&mut socket).await?;
    assert!(reason.contains("proof"), "{reason}");

    // A challenge no relay issued (made up, or guessed) for the right host.
    let (mut socket, _) = open(&url).await?;
    let host = url.trim_start_matches("http://");
    let made_up = Binding::Challenge(ChallengeBinding::new([0; 32], host));
    send(&mut socket, &hello(&honest, &made_up)).await?;
    assert!(refusal(&mut socket).await?.contains("proof"));

    for wallet in [honest.address(), thief.address()] {
        assert!(storage.wallet(&wallet).await?.is_none(), "{wallet} stored");
    }
    assert!(storage.audit_units(job).await?[0].result_wallets.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_text_and_oversized_messages_are_refused_without_harm() -> anyhow::Result<()> {
    let dir = TempDir::new("ws-garbage");
    let (url, scheduler) = relay(&dir, PATIENCE).await?;
    let job = montecarlo_job(&scheduler, 1).await?;

    // Bytes that are no frame of the codec.
    let (mut socket, _) = open(&url).await?;
    socket
        .send(Message::Binary(
            b"\x00\x01 not a starling frame".to_vec().into(),
        ))
        .await?;
    let reason = refusal(&mut socket).await?;
    assert!(
        !reason.is_empty() && !reason.contains("not a starling frame"),
        "{reason}"
    );
    assert!(closes(&mut socket).await);

    // A text message: the protocol is binary.
    let (mut socket, _) = open(&url).await?;
    socket.send(Message::Text("hello?".into())).await?;
    assert!(refusal(&mut socket).await?.contains("text"));

    // One WebSocket message over the limit (a chunk is at most 64 KiB): refused by the
    // WebSocket layer before it is buffered whole.
    let (mut socket, _) = open(&url).await?;
    let oversized = vec![0u8; 4 * MAX_CHUNK_BYTES];
    // The relay may close while the message is still going out.
    let _ = socket.send(Message::Binary(oversized.into())).await;
    match receive(&mut socket, 1 << 20).await {
        Ok(ToVolunteer::Refused { reason }) => assert!(reason.contains("limit"), "{reason}"),
        Ok(other) => anyhow::bail!("an oversized message got {other:?}"),
        Err(e) => anyhow::bail!("an oversized message was not refused with a reason: {e}"),
    }

    // A hello-sized lie: chunks of a message far over the pre-hello cap.
    let (mut socket, _) = open(&url).await?;
    let big = starling_protocol::encode(&ToRelay::Failed {
        lease: starling_protocol::LeaseId::from_uuid(uuid::Uuid::nil()),
        reason: "x".repeat(200_000),
    });
    for frame in Chunker::frames(&big).into_iter().take(3) {
        if socket.send(Message::Binary(frame.into())).await.is_err() {
            break;
        }
    }
    let reason = refusal(&mut socket).await?;
    assert!(
        reason.contains("limit") && reason.contains("hello"),
        "{reason}"
    );

    // Nothing stored, and the relay still serves an honest volunteer.
    assert!(scheduler.storage().audit_units(job).await?[0]
        .result_wallets
        .is_empty());
    let key = WalletKey::from_seed([3; 32]);
    let (mut socket, binding) = open(&url).await?;
    send(&mut socket, &hello(&key, &binding)).await?;
    assert!(matches!(
        receive(&mut socket, 1 << 20).await?,
        ToVolunteer::Welcome { .. }
    ));
    compute_one(&mut socket).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unproved_sockets_are_capped_and_time_out() -> anyhow::Result<()> {
    let dir = TempDir::new("ws-flood");
    let (url, _scheduler) = relay(&dir, PATIENCE).await?;
    // As many silent sockets as one address may hold unproved.
    let mut silent = Vec::new();
    for _ in 0..MAX_PENDING_PER_ADDRESS {
        silent.push(open(&url).await?.0);
    }
    // One more is refused before the upgrade, as problem+json.
    let host = url.trim_start_matches("http://");
    match tokio_tungstenite::connect_async(format!("ws://{host}/api/v1/ws")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429);
            let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default());
            assert!(body.contains("pending"), "{body}");
        }
        other => anyhow::bail!(
            "a socket over the cap was not refused: {:?}",
            other.map(|_| ())
        ),
    }
    // A silent socket is refused once the hello timeout passes, and its place freed.
    let reason = refusal(&mut silent[0]).await?;
    assert!(reason.contains("no hello"), "{reason}");
    for socket in &mut silent {
        assert!(closes(socket).await);
    }
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match open(&url).await {
            Ok(_) => break,
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!("not yet: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => anyhow::bail!("the caps' places were never freed: {e}"),
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_get_of_the_websocket_path_gets_problem_json() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = TempDir::new("ws-plain-get");
    let (url, _scheduler) = relay(&dir, PATIENCE).await?;
    let mut stream = tokio::net::TcpStream::connect(url.trim_start_matches("http://")).await?;
    stream
        .write_all(b"GET /api/v1/ws HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n")
        .await?;
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer)).await??;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(answer.contains("WebSocket"), "{answer}");
    Ok(())
}
