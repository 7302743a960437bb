//! A relay in the test process, serving HTTP on a loopback port as `relay-server` runs
//! it, and volunteers' WebRTC links to it.

// Each test binary that includes `common` uses some of these.
#![allow(dead_code)]

use starling_kernels::Catalog;
use starling_protocol::{
    encode_frames, Assignment, ChannelBinding, DeviceInfo, Reassembler, ToRelay, ToVolunteer,
    WalletKey, PROTOCOL_VERSION,
};
use starling_relay::app::{self, AppState, Limits, StaticDirs};
use starling_relay::scheduler::{Scheduler, SchedulerConfig};
use starling_relay::storage::Storage;
use starling_webrtc_native::PeerLink;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A relay on `dir`'s database; answered peers that do not open their channel within
/// `open_timeout` are dropped. Returns its base URL and its scheduler.
pub async fn relay(dir: &Path, open_timeout: Duration) -> anyhow::Result<(String, Scheduler)> {
    relay_with(dir, open_timeout, SchedulerConfig::default()).await
}

/// [`relay`] with its scheduler configured by `config`.
pub async fn relay_with(
    dir: &Path,
    open_timeout: Duration,
    config: SchedulerConfig,
) -> anyhow::Result<(String, Scheduler)> {
    let storage = Storage::open(dir).await?;
    let scheduler = Scheduler::new(storage, Arc::new(Catalog::builtin()), config);
    let state = AppState::new(
        scheduler.clone(),
        starling_webrtc_native::AnswerConfig {
            bind_ip: [127, 0, 0, 1].into(),
            open_timeout,
            tcp: false,
        },
        Limits::default(),
    );
    let dirs = StaticDirs {
        app: dir.join("dist"),
        public: dir.join("public"),
    };
    let router = app::router(state, &dirs);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });
    Ok((url, scheduler))
}

/// A volunteer's link to the relay at `url`, and the binding its hello signs.
pub async fn connect(url: &str) -> anyhow::Result<(PeerLink, ChannelBinding)> {
    let link = starling_webrtc_native::connect(&format!("{url}/api/v1/rtc/offer")).await?;
    let d = link.descriptions();
    let binding = ChannelBinding::from_descriptions(&d.offer, &d.answer)?;
    Ok((link, binding))
}

/// The next message the relay sends on `link`, reassembled up to `max_bytes`; an error
/// if none comes within 15 s or the channel closes.
pub async fn receive(link: &mut PeerLink, max_bytes: usize) -> anyhow::Result<ToVolunteer> {
    let mut reassembler = Reassembler::new(max_bytes);
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(15), link.recv())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the relay closed the channel without a word"))?;
        if let Some(message) = reassembler.push_message(&frame)? {
            return Ok(message);
        }
    }
}

/// Sends `message` on `link`, in as many frames as it takes.
pub async fn send(link: &PeerLink, message: &ToRelay) -> anyhow::Result<()> {
    for frame in encode_frames(message) {
        link.send(frame).await?;
    }
    Ok(())
}

/// The reason of the relay's next message, which must be a refusal (anything else is an
/// error naming its size only: the old relay echoed whole messages back).
pub async fn refusal(link: &mut PeerLink, max_bytes: usize) -> anyhow::Result<String> {
    match receive(link, max_bytes).await? {
        ToVolunteer::Refused { reason } => Ok(reason),
        other => anyhow::bail!("expected a refusal, got a {}-byte other message", {
            format!("{other:?}").len()
        }),
    }
}

/// A CPU volunteer's hello for `key` on the connection `binding` names.
pub fn hello(key: &WalletKey, binding: &ChannelBinding, client: String) -> ToRelay {
    ToRelay::Hello {
        version: PROTOCOL_VERSION,
        client,
        device: DeviceInfo {
            adapter: "CPU".into(),
            backend: "cpu".into(),
            fallback: true,
        },
        wallet: key.address(),
        site: None,
        proof: key.sign_channel(binding),
    }
}

/// A link to the relay at `url` whose hello, as `client` with `key`'s wallet, was
/// welcomed; an error naming what came instead.
pub async fn join(url: &str, key: &WalletKey, client: &str) -> anyhow::Result<PeerLink> {
    let (mut link, binding) = connect(url).await?;
    send(&link, &hello(key, &binding, client.to_owned())).await?;
    match receive(&mut link, 1 << 20).await? {
        ToVolunteer::Welcome { .. } => Ok(link),
        other => anyhow::bail!(
            "not welcomed: a {}-byte other message",
            format!("{other:?}").len()
        ),
    }
}

/// Asks for one unit on `link`, computes it with the CPU reference and sends the result;
/// the relay must accept it. Returns the unit.
pub async fn compute_one(link: &mut PeerLink, max_bytes: usize) -> anyhow::Result<Assignment> {
    send(link, &ToRelay::Ready { slots: 1 }).await?;
    let assignment = match receive(link, max_bytes).await? {
        ToVolunteer::Assign(assignment) => assignment,
        other => anyhow::bail!("expected work, got {other:?}"),
    };
    let output = Catalog::builtin()
        .get(&assignment.kernel)?
        .run_cpu(&assignment.params_json, &assignment.input)?;
    send(
        link,
        &ToRelay::Result {
            lease: assignment.lease,
            output,
            elapsed_ms: 1,
            more: 0,
        },
    )
    .await?;
    match receive(link, max_bytes).await? {
        ToVolunteer::Ack {
            lease, accepted, ..
        } => {
            anyhow::ensure!(lease == assignment.lease, "an ack for another lease");
            anyhow::ensure!(accepted, "the relay refused an honest result");
        }
        other => anyhow::bail!("expected an ack, got {other:?}"),
    }
    Ok(assignment)
}
