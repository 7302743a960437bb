//! Native WebRTC data channels for Starling, on the `webrtc` crate.
//!
//! The relay answers volunteers' offers ([`answer`]); the native volunteer makes offers
//! ([`connect`]). Both sides use non-trickle signaling: each waits for ICE gathering to
//! finish, so one HTTP round trip carries the whole exchange. Either way the result is a
//! [`PeerLink`]: one ordered, reliable data channel seen as two message queues.
//!
//! Native only: browsers use their own `RTCPeerConnection` through `starling-client`.

mod nodelay;

use bytes::BytesMut;
use rtc::peer_connection::certificate::{CertificateParams, RTCCertificate};
use rtc::peer_connection::transport::RTCDtlsRole;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Notify};
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::error::Error as RtcError;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceCandidateType, RTCIceGatheringState, RTCIceServer, RTCIceTransportPolicy,
    RTCPeerConnectionState, RTCSessionDescription, SettingEngineBuilder,
};

/// Largest message [`PeerLink::send`] accepts: the SCTP maximum message size both this
/// stack and browsers advertise by default.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Bytes buffered for sending before `send` waits. Unbounded, bulk sends overflow the
/// peer's UDP receive buffer and stall for 1-3 s on SCTP's minimum retransmission timer.
const SEND_BUFFER_LIMIT: usize = 64 * 1024;
/// Host candidates gather in milliseconds; this only bounds a stuck gatherer, after
/// which the description goes out with whatever was gathered.
const GATHER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`connect`] waits for the channel to open once the answer is applied.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Bounds the whole signaling request, so a relay that accepts but never answers fails
/// the connect instead of hanging it.
const SIGNAL_TIMEOUT: Duration = Duration::from_secs(20);
/// How long closing waits for the remote to acknowledge what was already sent; closing
/// discards whatever SCTP still holds.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Period of the driver nudges while a connection is set up (see [`nudge_until`]).
const NUDGE_PERIOD: Duration = Duration::from_millis(5);
/// Received messages queued before the reader stops pulling from the channel, which in
/// turn makes SCTP slow the sender down. Each is at most [`MAX_MESSAGE_BYTES`], so a
/// peer can park at most 1 MiB here however fast it sends and however slowly its
/// messages are consumed; 16 still keeps a bulk transfer's pipeline full.
const INBOUND_QUEUE: usize = 16;
/// How long the offering (volunteer) side lets its connection stay "disconnected" (no
/// packet for 3 s, see `with_ice_timeouts`) before counting it dead, instead of waiting 6 s
/// more for "failed": a volunteer whose relay restarted is back within about 4 s instead
/// of 9. The relay's side waits for "failed", so a volunteer on a wobbly network keeps
/// its leases.
const OFFERER_DISCONNECTED_GRACE: Duration = Duration::from_secs(1);
/// Label of the one data channel a volunteer opens.
const CHANNEL_LABEL: &str = "starling";

/// Why a peer connection could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The WebRTC stack refused an operation, e.g. an unparseable SDP or no usable
    /// network interface.
    #[error("WebRTC error: {0} (check the SDP and that the bind address exists on this host)")]
    Rtc(String),
    /// The HTTP signaling exchange with the relay failed.
    #[error("signaling with the relay failed: {0}")]
    Signaling(String),
    /// The data channel did not open in time: usually UDP between the two hosts is blocked
    /// or the relay advertised an address this host cannot reach.
    #[error(
        "the data channel did not open within {0:?}; check that UDP to the relay's WebRTC \
         address is not blocked"
    )]
    Timeout(Duration),
    /// The message is over [`MAX_MESSAGE_BYTES`]; split it before sending.
    #[error(
        "message of {0} bytes exceeds the {MAX_MESSAGE_BYTES}-byte data-channel limit; \
         split it into smaller messages"
    )]
    MessageTooLarge(usize),
    /// The data channel or its peer connection is closed; reconnect to go on.
    #[error("the data channel is closed")]
    Closed,
}

fn rtc_err(e: impl std::fmt::Display) -> PeerError {
    PeerError::Rtc(e.to_string())
}

/// State every handle of one link shares. Dropping the last handle drops `_on_drop`,
/// which tells the reader task to close the connection: `Drop` cannot await, the task can.
struct Shared {
    dc: Arc<dyn DataChannel>,
    pc: Arc<dyn PeerConnection>,
    _on_drop: oneshot::Sender<()>,
}

/// The sending half of a [`PeerLink`]; cheap to clone, so several tasks can write while
/// one reads.
#[derive(Clone)]
pub struct PeerSender {
    shared: Arc<Shared>,
}

impl PeerSender {
    /// Sends one message; waits (backpressure) while the channel's send buffer is full.
    /// Fails with [`PeerError::MessageTooLarge`] over [`MAX_MESSAGE_BYTES`], and with
    /// [`PeerError::Closed`] once the channel is closed.
    pub async fn send(&self, msg: Vec<u8>) -> Result<(), PeerError> {
        let len = msg.len();
        if len > MAX_MESSAGE_BYTES {
            return Err(PeerError::MessageTooLarge(len));
        }
        // Through `Bytes`, the Vec's allocation is reused rather than copied.
        match self
            .shared
            .dc
            .send(BytesMut::from(bytes::Bytes::from(msg)))
            .await
        {
            Ok(()) => Ok(()),
            Err(RtcError::ErrDataChannelClosed) => Err(PeerError::Closed),
            // The remote advertised a smaller maximum than ours.
            Err(RtcError::ErrOutboundPacketTooLarge) => Err(PeerError::MessageTooLarge(len)),
            Err(e) => Err(PeerError::Rtc(format!("sending on the data channel: {e}"))),
        }
    }
}

/// One open, ordered, reliable data channel to a remote peer, as two message queues.
///
/// Each message is one data-channel message of at most [`MAX_MESSAGE_BYTES`]. Dropping
/// the link and every [`PeerSender`] made from it closes the connection (best effort);
/// [`PeerLink::close`] does so and waits for it.
pub struct PeerLink {
    rx: mpsc::Receiver<Vec<u8>>,
    sender: PeerSender,
    descriptions: Descriptions,
}

/// The offer and the answer that opened a connection, as exchanged: both ends hold the
/// same two texts, which name each end's DTLS certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptions {
    /// The offerer's (the volunteer's) session description.
    pub offer: String,
    /// The answerer's (the relay's) session description.
    pub answer: String,
}

impl std::fmt::Debug for PeerLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerLink").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for PeerSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerSender").finish_non_exhaustive()
    }
}

/// Closes a connection without losing what was already sent. Only the peer connection is
/// closed: it ends the association with an SCTP ABORT, which the remote sees at once as
/// the channel closing. Closing the channel first would reset its stream, and the stream
/// reset discards messages SCTP has not sent yet.
async fn shut_down(pc: &Arc<dyn PeerConnection>, dc: &Arc<dyn DataChannel>) {
    let drained = tokio::time::timeout(CLOSE_GRACE, async {
        // Polled: the channel's buffered-amount events go to the reader task, not here.
        while matches!(dc.outstanding_bytes().await, Ok(n) if n > 0) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    if drained.is_err() {
        tracing::debug!("closing with unacknowledged data after {CLOSE_GRACE:?}");
    }
    let _ = pc.close().await;
}

impl PeerLink {
    /// Sends one message; waits (backpressure) while the channel's send buffer is full.
    /// Err once the channel is closed (see [`PeerSender::send`]).
    pub async fn send(&self, msg: Vec<u8>) -> Result<(), PeerError> {
        self.sender.send(msg).await
    }

    /// Next received message; `None` once the channel or peer connection has closed.
    pub async fn recv(&mut self) -> Option<Vec<u8>> {
        self.rx.recv().await
    }

    /// A cloneable sender half, so one task can read while others write.
    pub fn sender(&self) -> PeerSender {
        self.sender.clone()
    }

    /// The offer and answer that opened this connection.
    pub fn descriptions(&self) -> &Descriptions {
        &self.descriptions
    }

    /// The remote end's address on the candidate pair ICE selected: where its data
    /// actually comes from (a TURN server's, when it relays). `None` before a pair is
    /// selected or once the connection is gone.
    pub async fn remote_address(&self) -> Option<std::net::IpAddr> {
        let sctp = self.sender.shared.pc.sctp().await?;
        let pair = sctp
            .transport()
            .ice_transport()
            .get_selected_candidate_pair()
            .await
            .ok()??;
        pair.remote().address.parse().ok()
    }

    /// Whether the selected candidate pair goes through a TURN server (either end a
    /// relayed candidate); `None` before a pair is selected or once the connection is
    /// gone.
    pub async fn relayed(&self) -> Option<bool> {
        let sctp = self.sender.shared.pc.sctp().await?;
        let pair = sctp
            .transport()
            .ice_transport()
            .get_selected_candidate_pair()
            .await
            .ok()??;
        let relay = |typ: RTCIceCandidateType| typ == RTCIceCandidateType::Relay;
        Some(relay(pair.local().typ) || relay(pair.remote().typ))
    }

    /// The DER of the certificate the remote end presented in the DTLS handshake (the
    /// first of its chain), for checks the stack does not make itself: webrtc-rs checks
    /// it against one of the fingerprints the remote description names, not all of them.
    /// `None` once the connection is gone.
    pub async fn remote_certificate(&self) -> Option<Vec<u8>> {
        let sctp = self.sender.shared.pc.sctp().await?;
        let chain = sctp.transport().get_remote_certificates().await.ok()?;
        chain.into_iter().next()
    }

    /// Closes the data channel and the peer connection. Senders still held elsewhere
    /// fail with [`PeerError::Closed`] from then on.
    pub async fn close(self) {
        let PeerLink { rx, sender, .. } = self;
        // Unblocks the reader if it is waiting for queue space; it then sees the
        // connection end and exits by itself.
        drop(rx);
        shut_down(&sender.shared.pc, &sender.shared.dc).await;
    }
}

/// Connection events the signaling code and the reader task wait on. The callbacks run
/// on the connection's driver task, so they only signal and never block.
struct Handler {
    gathered: Notify,
    dead: Arc<Notify>,
    channels: mpsc::Sender<Arc<dyn DataChannel>>,
    /// How long "disconnected" may last before it counts as dead; `None`: wait for
    /// "failed".
    disconnected_grace: Option<Duration>,
    /// Counts state changes, so a grace timer knows whether the state moved on.
    changes: Arc<AtomicU64>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.notify_one();
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        tracing::debug!("peer connection {state}");
        let change = self.changes.fetch_add(1, Ordering::SeqCst) + 1;
        match state {
            // A vanished browser tab or crashed process never closes its channel; ICE
            // failure is how we learn.
            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                self.dead.notify_one()
            }
            RTCPeerConnectionState::Disconnected => {
                // Timed on a task of its own: this callback runs on the driver.
                if let (Some(grace), Ok(runtime)) = (
                    self.disconnected_grace,
                    tokio::runtime::Handle::try_current(),
                ) {
                    let (dead, changes) = (self.dead.clone(), self.changes.clone());
                    runtime.spawn(async move {
                        tokio::time::sleep(grace).await;
                        if changes.load(Ordering::SeqCst) == change {
                            dead.notify_one();
                        }
                    });
                }
            }
            _ => {}
        }
    }

    async fn on_data_channel(&self, dc: Arc<dyn DataChannel>) {
        // Only the first channel is served; events of further ones are ignored.
        if self.channels.try_send(dc).is_err() {
            tracing::debug!("ignoring an extra data channel from the remote peer");
        }
    }
}

/// Closes a connection that is dropped before a [`PeerLink`] owns it, e.g. when a
/// caller's timeout cancels [`connect`] or a [`PendingPeer`] is never opened. Dropping
/// a connection does not stop its driver task, which keeps its sockets and timers until
/// closed.
struct CloseOnDrop(Option<Arc<dyn PeerConnection>>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        if let (Some(pc), Ok(runtime)) = (self.0.take(), tokio::runtime::Handle::try_current()) {
            runtime.spawn(async move {
                let _ = pc.close().await;
            });
        }
    }
}

/// A connection not yet handed to a [`PeerLink`].
struct Peer {
    pc: Arc<dyn PeerConnection>,
    handler: Arc<Handler>,
    channels: mpsc::Receiver<Arc<dyn DataChannel>>,
    guard: CloseOnDrop,
}

/// A connection on `bind_ips`; it presents `certificate` in the DTLS handshake, or one
/// the stack generates when `None`, and gathers with `ice`'s servers.
async fn new_peer(
    bind_ips: &[IpAddr],
    certificate: Option<RTCCertificate>,
    ice: &IceOptions,
    disconnected_grace: Option<Duration>,
) -> Result<Peer, PeerError> {
    new_peer_on(bind_ips, certificate, ice, false, disconnected_grace).await
}

/// [`new_peer`], also listening for ICE over TCP when `tcp`.
async fn new_peer_on(
    bind_ips: &[IpAddr],
    certificate: Option<RTCCertificate>,
    ice: &IceOptions,
    tcp: bool,
    disconnected_grace: Option<Duration>,
) -> Result<Peer, PeerError> {
    let (channels_tx, channels) = mpsc::channel(1);
    let handler = Arc::new(Handler {
        gathered: Notify::new(),
        dead: Arc::new(Notify::new()),
        channels: channels_tx,
        disconnected_grace,
        changes: Arc::new(AtomicU64::new(0)),
    });
    let settings = SettingEngineBuilder::new()
        // The default mode opens a multicast socket per peer, which fails ("No such
        // device") on hosts without multicast, and gains nothing: candidates are
        // exchanged as plain addresses.
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        .with_include_loopback_candidate(bind_ips.iter().any(IpAddr::is_loopback))
        // The side that completes the DTLS handshake as client sends the SCTP INIT, and
        // webrtc 0.21.1 sends packets queued in reaction to a state change only on the
        // driver's next wake-up (a 200 ms ICE tick once connected). As DTLS server the
        // relay only ever answers packets, which goes out at once; the offerer, which
        // then starts SCTP, nudges its own driver (see `nudge_until`).
        .with_answering_dtls_role(RTCDtlsRole::Server)
        // Connectivity checks every 20 ms instead of 200 ms: ICE connects in ~20 ms on a
        // LAN instead of up to 200 ms.
        .with_ice_connection_attempts(Some(Duration::from_millis(20)), Some(50))
        // A crashed relay or a closed tab sends no goodbye; with the default timers the
        // other side waits ~30 s to notice. Keepalives every second and failure after 6 s
        // of silence get leases requeued and volunteers reconnected quickly.
        .with_ice_timeouts(
            Some(Duration::from_secs(3)),
            Some(Duration::from_secs(6)),
            Some(Duration::from_secs(1)),
        )
        .build();
    let mut configuration = RTCConfigurationBuilder::new().with_ice_servers(
        ice.servers
            .iter()
            .map(|server| RTCIceServer {
                urls: server.urls.clone(),
                username: server.username.clone().unwrap_or_default(),
                credential: server.credential.clone().unwrap_or_default(),
            })
            .collect(),
    );
    if ice.relay_only {
        configuration = configuration.with_ice_transport_policy(RTCIceTransportPolicy::Relay);
    }
    if let Some(certificate) = certificate {
        configuration = configuration.with_certificates(vec![certificate]);
    }
    let mut builder = PeerConnectionBuilder::new();
    if tcp {
        builder =
            builder.with_runtime(Arc::new(nodelay::NoDelayTcp(webrtc::runtime::TokioRuntime)));
    }
    let pc = builder
        .with_configuration(configuration.build())
        .with_setting_engine(settings)
        .with_handler(handler.clone())
        // Concrete addresses: a wildcard bind expands to every interface except loopback.
        .with_udp_addrs(
            bind_ips
                .iter()
                .map(|ip| std::net::SocketAddr::new(*ip, 0))
                .collect(),
        )
        .with_tcp_addrs(if tcp {
            bind_ips
                .iter()
                .map(|ip| std::net::SocketAddr::new(*ip, 0))
                .collect()
        } else {
            Vec::new()
        })
        .with_data_channel_send_buffer_limit(SEND_BUFFER_LIMIT)
        .build()
        .await
        .map_err(|e| {
            PeerError::Rtc(format!(
                "cannot create a peer connection on {bind_ips:?}: {e}"
            ))
        })?;
    let pc: Arc<dyn PeerConnection> = Arc::new(pc);
    Ok(Peer {
        pc: pc.clone(),
        handler,
        channels,
        guard: CloseOnDrop(Some(pc)),
    })
}

impl Peer {
    /// Opens the data channel on this side and sets a complete local offer (ICE gathered):
    /// the channel and the offer's text.
    async fn offer(&self) -> Result<(Arc<dyn DataChannel>, String), PeerError> {
        let dc = self
            .pc
            .create_data_channel(CHANNEL_LABEL, None)
            .await
            .map_err(rtc_err)?;
        let offer = self.pc.create_offer(None).await.map_err(rtc_err)?;
        self.pc
            .set_local_description(offer)
            .await
            .map_err(rtc_err)?;
        Ok((dc, self.local_sdp_after_gathering().await?))
    }

    /// The local description once ICE gathering is complete, candidates included, since
    /// signaling carries no trickled candidates.
    async fn local_sdp_after_gathering(&self) -> Result<String, PeerError> {
        if tokio::time::timeout(GATHER_TIMEOUT, self.handler.gathered.notified())
            .await
            .is_err()
        {
            tracing::warn!("ICE gathering not complete after {GATHER_TIMEOUT:?}; going on");
        }
        self.pc
            .local_description()
            .await
            .map(|d| d.sdp)
            .ok_or_else(|| PeerError::Rtc("no local description after negotiation".into()))
    }

    async fn close(mut self) {
        if let Some(pc) = self.guard.0.take() {
            let _ = pc.close().await;
        }
    }

    /// Hands the connection to a reader task. Returns the link and a signal that fires
    /// when the channel is open (or is dropped if it closes first).
    fn into_link(
        mut self,
        dc: Arc<dyn DataChannel>,
        descriptions: Descriptions,
    ) -> (PeerLink, oneshot::Receiver<()>) {
        // From here the link's handles and reader own closing.
        self.guard.0 = None;
        let (tx, rx) = mpsc::channel(INBOUND_QUEUE);
        let (open_tx, open_rx) = oneshot::channel();
        let (on_drop, dropped) = oneshot::channel();
        let shared = Arc::new(Shared {
            dc: dc.clone(),
            pc: self.pc.clone(),
            _on_drop: on_drop,
        });
        // Detached: it ends by itself once the connection is closed or every handle dropped.
        tokio::spawn(read_loop(self.pc, dc, self.handler, tx, open_tx, dropped));
        let link = PeerLink {
            rx,
            sender: PeerSender { shared },
            descriptions,
        };
        (link, open_rx)
    }
}

/// Why the reader stopped.
enum End {
    /// The channel closed, or the connection failed or closed.
    Closed,
    /// Every handle of the link was dropped.
    Dropped,
}

/// Moves channel events into the link's queue until the channel ends, then closes the
/// peer connection: a closed channel alone leaves it (and its sockets and timers) alive
/// for ~30 s.
async fn read_loop(
    pc: Arc<dyn PeerConnection>,
    dc: Arc<dyn DataChannel>,
    handler: Arc<Handler>,
    tx: mpsc::Sender<Vec<u8>>,
    open_tx: oneshot::Sender<()>,
    mut dropped: oneshot::Receiver<()>,
) {
    let mut open_tx = Some(open_tx);
    // Becomes None once the PeerLink is gone; senders may still be in use, so the
    // channel is drained rather than closed.
    let mut tx = Some(tx);
    let end = loop {
        let event = tokio::select! {
            // Events first: messages that arrived before the connection ended are
            // delivered before the end is.
            biased;
            e = dc.poll() => e,
            _ = handler.dead.notified() => break End::Closed,
            _ = &mut dropped => break End::Dropped,
        };
        match event {
            Some(DataChannelEvent::OnOpen) => {
                if let Some(open) = open_tx.take() {
                    let _ = open.send(());
                }
            }
            Some(DataChannelEvent::OnMessage(msg)) => {
                // A message proves the channel open even if OnOpen was missed.
                if let Some(open) = open_tx.take() {
                    let _ = open.send(());
                }
                if let Some(queue) = &tx {
                    if queue.send(msg.data.to_vec()).await.is_err() {
                        tx = None;
                    }
                }
            }
            Some(DataChannelEvent::OnClose) | None => break End::Closed,
            Some(_) => {}
        }
    };
    // recv() returns None from here on, even while the teardown below runs.
    drop(tx);
    match end {
        End::Dropped => shut_down(&pc, &dc).await,
        End::Closed => {
            let _ = pc.close().await;
        }
    }
}

/// Wakes the connection's driver every few milliseconds until `done` resolves.
///
/// webrtc 0.21.1's driver sends packets that the stack queues while handling a state
/// change (ICE connected, DTLS done, SCTP established) only on its next wake-up, which
/// once ICE is connected is its 200 ms timer; setup waits for two of those. Setting the
/// channel's low-water mark to its current value (0) changes nothing but wakes the driver.
async fn nudge_until<F: Future>(dc: &Arc<dyn DataChannel>, done: F) -> F::Output {
    let mut done = std::pin::pin!(done);
    loop {
        tokio::select! {
            out = &mut done => return out,
            () = tokio::time::sleep(NUDGE_PERIOD) => {
                let _ = dc.set_buffered_amount_low_threshold(0).await;
            }
        }
    }
}

/// Settings for the answering (relay) side.
#[derive(Debug, Clone)]
pub struct AnswerConfig {
    /// Address host candidates bind to; must be reachable by volunteers (127.0.0.1 in
    /// tests). A wildcard address would skip loopback.
    pub bind_ip: IpAddr,
    /// How long an answered peer has to open its data channel before
    /// [`PendingPeer::open`] gives up.
    pub open_timeout: Duration,
    /// Also offer a passive ICE-TCP candidate on `bind_ip`, for volunteers whose network
    /// drops UDP. webrtc 0.21.1 listens on a fresh port per peer (no TCP multiplexing),
    /// so it helps only where outgoing TCP to any port is allowed.
    pub tcp: bool,
}

/// An answered peer whose data channel has not opened yet. Dropping it closes the
/// connection.
pub struct PendingPeer {
    peer: Peer,
    timeout: Duration,
    descriptions: Descriptions,
}

impl std::fmt::Debug for PendingPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingPeer")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl PendingPeer {
    /// Waits for the offerer's data channel to open and returns it as a link; fails with
    /// [`PeerError::Timeout`] after the configured `open_timeout`, or
    /// [`PeerError::Closed`] if the connection fails first.
    pub async fn open(mut self) -> Result<PeerLink, PeerError> {
        let timeout = self.timeout;
        let waited = tokio::time::timeout(timeout, async {
            tokio::select! {
                dc = self.peer.channels.recv() => dc,
                _ = self.peer.handler.dead.notified() => None,
            }
        })
        .await;
        match waited {
            // The remote's channel is announced on its first open, so it is open now.
            Ok(Some(dc)) => Ok(self.peer.into_link(dc, self.descriptions).0),
            Ok(None) => {
                self.peer.close().await;
                Err(PeerError::Closed)
            }
            Err(_) => {
                self.peer.close().await;
                Err(PeerError::Timeout(timeout))
            }
        }
    }
}

/// `sdp` as webrtc-rs is given it: without its fingerprint lines under algorithms other
/// than sha-256 when it has a sha-256 one. webrtc-rs checks the certificate presented
/// against the first fingerprint line of each section and knows only sha-256, so a
/// description naming its certificate under several algorithms (RFC 8122) with another
/// first would fail the handshake. The others are the caller's to check, against
/// [`PeerLink::remote_certificate`]; the link's [`Descriptions`] keep the text as received.
fn sha256_fingerprints_only(sdp: &str) -> String {
    let algorithm = |line: &str| {
        line.strip_prefix("a=fingerprint:")
            .and_then(|value| value.split(' ').next())
            .map(str::to_ascii_lowercase)
    };
    let other = |line: &str| algorithm(line).is_some_and(|a| a != "sha-256");
    let has_sha256 = sdp
        .lines()
        .any(|line| algorithm(line).as_deref() == Some("sha-256"));
    if !has_sha256 {
        return sdp.to_owned();
    }
    sdp.split_inclusive('\n')
        .filter(|line| !other(line))
        .collect()
}

/// Relay side: takes a complete (non-trickle) offer SDP and returns the complete answer
/// SDP (after ICE gathering completed) and a handle that yields the [`PeerLink`] once the
/// offerer's data channel opens.
pub async fn answer(
    config: &AnswerConfig,
    offer_sdp: &str,
) -> Result<(String, PendingPeer), PeerError> {
    let offer = RTCSessionDescription::offer(sha256_fingerprints_only(offer_sdp))
        .map_err(|e| PeerError::Rtc(format!("the offer is not valid SDP: {e}")))?;
    // The relay gathers host candidates only: a volunteer's TURN allocation reaches them.
    let peer = new_peer_on(
        &[config.bind_ip],
        None,
        &IceOptions::default(),
        config.tcp,
        None,
    )
    .await?;
    let answered = async {
        peer.pc
            .set_remote_description(offer)
            .await
            .map_err(|e| PeerError::Rtc(format!("cannot apply the offer: {e}")))?;
        let answer = peer.pc.create_answer(None).await.map_err(rtc_err)?;
        peer.pc
            .set_local_description(answer)
            .await
            .map_err(rtc_err)?;
        peer.local_sdp_after_gathering().await
    }
    .await;
    match answered {
        Ok(sdp) => Ok((
            sdp.clone(),
            PendingPeer {
                peer,
                timeout: config.open_timeout,
                descriptions: Descriptions {
                    offer: offer_sdp.to_owned(),
                    answer: sdp,
                },
            },
        )),
        Err(e) => {
            peer.close().await;
            Err(e)
        }
    }
}

/// An error and its causes: reqwest's own message ("error sending request") hides the
/// one a user can act on, such as a certificate the volunteer does not trust.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let said = inner.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = inner.source();
    }
    text
}

/// The signaling body, both ways.
#[derive(serde::Serialize, serde::Deserialize)]
struct Sdp {
    sdp: String,
}

/// The local addresses that route to `url`'s host, one per address family it resolves
/// to: host candidates must be reachable from there, binding the wildcard address would
/// skip loopback, and `localhost` may resolve to `::1` while the relay listens on
/// 127.0.0.1 or the reverse.
async fn local_ips_towards(url: &str) -> Result<Vec<IpAddr>, PeerError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| PeerError::Signaling(format!("bad relay URL {url}: {e}")))?;
    let host = parsed
        .host_str()
        .ok_or_else(|| PeerError::Signaling(format!("relay URL {url} has no host")))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = parsed.port_or_known_default().unwrap_or(80);
    let remotes = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| PeerError::Signaling(format!("cannot resolve relay host {host}: {e}")))?;
    let mut locals = Vec::new();
    let mut last_error = format!("{host} resolved to no address");
    for remote in remotes {
        let unspecified = match remote {
            std::net::SocketAddr::V4(_) => "0.0.0.0:0",
            std::net::SocketAddr::V6(_) => "[::]:0",
        };
        // Connecting a UDP socket sends nothing; it only asks the kernel for a route.
        let probe = match tokio::net::UdpSocket::bind(unspecified).await {
            Ok(probe) => probe,
            Err(e) => {
                last_error = format!("no {unspecified} socket: {e}");
                continue;
            }
        };
        match probe
            .connect(remote)
            .await
            .and_then(|()| probe.local_addr())
        {
            Ok(local) if !locals.contains(&local.ip()) => locals.push(local.ip()),
            Ok(_) => {}
            Err(e) => last_error = format!("no route to {remote}: {e}"),
        }
    }
    if locals.is_empty() {
        return Err(PeerError::Signaling(format!(
            "cannot reach relay host {host}: {last_error}"
        )));
    }
    Ok(locals)
}

/// Volunteer side (native): offers one ordered, reliable data channel labelled
/// "starling" by POSTing `{"sdp": offer}` to `signal_url` (e.g.
/// `http://127.0.0.1:8080/api/v1/rtc/offer`), applies the `{"sdp": answer}` it gets
/// back, and waits up to 15 s for the channel to open. An `https://` relay must have a
/// certificate the system trusts; [`connect_with`] takes a client trusting others.
pub async fn connect(signal_url: &str) -> Result<PeerLink, PeerError> {
    connect_with(signal_url, &signaling_client()?, &IceOptions::default()).await
}

/// One STUN or TURN server, as the relay's `GET /api/v1/rtc/ice-servers` lists them.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Deserialize)]
pub struct IceServer {
    /// `stun:`, `stuns:`, `turn:` or `turns:` URLs.
    pub urls: Vec<String>,
    /// The TURN user name.
    #[serde(default)]
    pub username: Option<String>,
    /// The TURN password.
    #[serde(default)]
    pub credential: Option<String>,
}

/// What the offering side gathers candidates with.
#[derive(Debug, Clone, Default)]
pub struct IceOptions {
    /// STUN and TURN servers.
    pub servers: Vec<IceServer>,
    /// Offer relayed (TURN) candidates only, so the connection goes through a TURN
    /// server or fails.
    pub relay_only: bool,
}

/// The ICE servers the relay advertises at `url` (its `/api/v1/rtc/ice-servers`).
pub async fn fetch_ice_servers(
    http: &reqwest::Client,
    url: &str,
) -> Result<Vec<IceServer>, PeerError> {
    #[derive(serde::Deserialize)]
    struct Answer {
        ice_servers: Vec<IceServer>,
    }
    let response = http
        .get(url)
        .timeout(SIGNAL_TIMEOUT)
        .send()
        .await
        .map_err(|e| PeerError::Signaling(format!("GET {url}: {e}")))?;
    let status = response.status();
    if !status.is_success() {
        return Err(PeerError::Signaling(format!("GET {url} answered {status}")));
    }
    response
        .json::<Answer>()
        .await
        .map(|answer| answer.ice_servers)
        .map_err(|e| PeerError::Signaling(format!("GET {url}: no ice_servers list ({e})")))
}

/// [`connect`], signaling with `http` (a client that trusts a relay's self-signed
/// certificate, say) and gathering candidates with `ice`'s servers (and only relayed ones
/// when it says so).
pub async fn connect_with(
    signal_url: &str,
    http: &reqwest::Client,
    ice: &IceOptions,
) -> Result<PeerLink, PeerError> {
    let bind_ips = local_ips_towards(signal_url).await?;
    let peer = new_peer(&bind_ips, None, ice, Some(OFFERER_DISCONNECTED_GRACE)).await?;
    offer_through(
        peer,
        |offer| offer,
        |offer| post_offer(http, signal_url, offer),
    )
    .await
}

/// A client trusting the system's roots. reqwest is built without a crypto provider of
/// its own (one crypto library, ring, is linked): it needs a process default first.
pub fn signaling_client() -> Result<reqwest::Client, PeerError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .build()
        .map_err(|e| PeerError::Signaling(format!("HTTP client: {e}")))
}

async fn post_offer(
    http: &reqwest::Client,
    signal_url: &str,
    offer: String,
) -> Result<String, PeerError> {
    let response = http
        .post(signal_url)
        .json(&Sdp { sdp: offer })
        .timeout(SIGNAL_TIMEOUT)
        .send()
        .await
        .map_err(|e| PeerError::Signaling(format!("POST {signal_url}: {}", with_causes(&e))))?;
    let status = response.status();
    let body = response
        .text()
        .await
        .map_err(|e| PeerError::Signaling(format!("reading the answer from {signal_url}: {e}")))?;
    if !status.is_success() {
        return Err(PeerError::Signaling(format!(
            "relay at {signal_url} answered {status}: {body}"
        )));
    }
    serde_json::from_str::<Sdp>(&body)
        .map(|a| a.sdp)
        .map_err(|e| {
            PeerError::Signaling(format!(
                "relay at {signal_url} sent no {{\"sdp\": ...}} answer ({e}): {body}"
            ))
        })
}

/// A complete offer (ICE gathered) from a fresh connection on `bind_ip`, which is closed
/// before this returns: its answer is never applied, so the channel never opens. For
/// tests and tools that drive signaling themselves (e.g. probing a relay's limits on
/// offers without holding connections on this side).
pub async fn make_offer(bind_ip: IpAddr) -> Result<String, PeerError> {
    let peer = new_peer(&[bind_ip], None, &IceOptions::default(), None).await?;
    let offered = peer.offer().await.map(|(_, offer)| offer);
    peer.close().await;
    offered
}

/// [`connect`], with the offer passed through `rewrite` before it is posted; `rewrite`
/// also gets the DER of the certificate this end will present. For tests and tools that
/// probe how a relay takes offers other WebRTC stacks write, e.g. one naming its
/// certificate under several hash algorithms as aiortc does. The link's
/// [`Descriptions`] hold the offer as posted.
pub async fn connect_rewriting_offer<R>(signal_url: &str, rewrite: R) -> Result<PeerLink, PeerError>
where
    R: FnOnce(String, &[u8]) -> String,
{
    let bind_ips = local_ips_towards(signal_url).await?;
    let http = signaling_client()?;
    let (certificate, der) = generate_certificate()?;
    let peer = new_peer(
        &bind_ips,
        Some(certificate),
        &IceOptions::default(),
        Some(OFFERER_DISCONNECTED_GRACE),
    )
    .await?;
    offer_through(
        peer,
        |offer| rewrite(offer, &der),
        |offer| post_offer(&http, signal_url, offer),
    )
    .await
}

/// A certificate as webrtc-rs generates its own (ECDSA P-256), and its DER.
fn generate_certificate() -> Result<(RTCCertificate, Vec<u8>), PeerError> {
    let provider = rtc::crypto::default_provider().map_err(rtc_err)?;
    let certificate = RTCCertificate::generate(
        provider.crypto(),
        rtc::crypto::SignatureScheme::EcdsaP256Sha256,
        CertificateParams::new(vec!["WebRTC".to_owned()]).map_err(rtc_err)?,
    )
    .map_err(rtc_err)?;
    let der = certificate
        .dtls_certificate
        .certificate
        .first()
        .map(|der| der.to_vec())
        .ok_or_else(|| PeerError::Rtc("a generated certificate has no DER".into()))?;
    Ok((certificate, der))
}

/// Makes a complete offer, hands it to `exchange` for the answer, applies the answer and
/// waits for the channel to open. Split from [`connect`] so tests can wire both sides
/// together without HTTP.
#[cfg(test)]
async fn offer_then<F, Fut>(bind_ips: &[IpAddr], exchange: F) -> Result<PeerLink, PeerError>
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Result<String, PeerError>>,
{
    let peer = new_peer(
        bind_ips,
        None,
        &IceOptions::default(),
        Some(OFFERER_DISCONNECTED_GRACE),
    )
    .await?;
    offer_through(peer, |offer| offer, exchange).await
}

/// [`offer_then`] on `peer`, sending the offer as `rewrite` makes it.
async fn offer_through<R, F, Fut>(
    peer: Peer,
    rewrite: R,
    exchange: F,
) -> Result<PeerLink, PeerError>
where
    R: FnOnce(String) -> String,
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Result<String, PeerError>>,
{
    let negotiated = async {
        let (dc, offer) = peer.offer().await?;
        let offer = rewrite(offer);
        let answer = exchange(offer.clone()).await?;
        let description = RTCSessionDescription::answer(answer.clone())
            .map_err(|e| PeerError::Rtc(format!("the relay's answer is not valid SDP: {e}")))?;
        peer.pc
            .set_remote_description(description)
            .await
            .map_err(|e| PeerError::Rtc(format!("cannot apply the relay's answer: {e}")))?;
        Ok((dc, Descriptions { offer, answer }))
    }
    .await;
    let (dc, descriptions) = match negotiated {
        Ok(negotiated) => negotiated,
        Err(e) => {
            peer.close().await;
            return Err(e);
        }
    };
    let (link, open) = peer.into_link(dc.clone(), descriptions);
    // On failure the link is dropped here, and its reader closes the connection.
    match nudge_until(&dc, tokio::time::timeout(CONNECT_TIMEOUT, open)).await {
        Ok(Ok(())) => Ok(link),
        Ok(Err(_)) => Err(PeerError::Closed),
        Err(_) => Err(PeerError::Timeout(CONNECT_TIMEOUT)),
    }
}

#[cfg(test)]
mod tests;
