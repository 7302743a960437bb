//! Native WebRTC data channels for Starling, on the `webrtc` crate.
//!
//! The relay answers volunteers' offers ([`answer`]); the native volunteer makes offers
//! ([`connect`]). Both sides use non-trickle signaling: each waits for ICE gathering to
//! finish, so one HTTP round trip carries the whole exchange. Either way the result is a
//! [`PeerLink`]: one ordered, reliable data channel seen as two message queues.

use bytes::BytesMut;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Notify};
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
    RTCPeerConnectionState, RTCSessionDescription, SettingEngineBuilder,
};

/// Largest message a data channel carries reliably (the SCTP message size in practice).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Bytes buffered for sending before `send` waits; without a bound, bulk sends overflow
/// the peer's UDP buffer and stall on retransmission timers.
const SEND_BUFFER_LIMIT: usize = 64 * 1024;
const GATHER_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Received messages queued before the reader stops pulling from the channel.
const INBOUND_QUEUE: usize = 256;

/// Why a peer connection could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The WebRTC stack refused (bad SDP, no usable candidates ...).
    #[error("WebRTC error: {0}")]
    Rtc(String),
    /// Signaling over HTTP failed.
    #[error("signaling failed: {0}")]
    Signaling(String),
    /// The channel did not open in time.
    #[error("the data channel did not open within {0:?}")]
    Timeout(Duration),
    /// The message is over [`MAX_MESSAGE_BYTES`].
    #[error("message of {0} bytes exceeds the {MAX_MESSAGE_BYTES}-byte data-channel limit")]
    MessageTooLarge(usize),
    /// The channel is closed.
    #[error("the data channel is closed")]
    Closed,
}

fn rtc_err(e: impl std::fmt::Display) -> PeerError {
    PeerError::Rtc(e.to_string())
}

/// The sending half of a [`PeerLink`]; cheap to clone.
#[derive(Clone)]
pub struct PeerSender {
    dc: Arc<dyn DataChannel>,
}

impl PeerSender {
    /// Sends one message; waits while the send buffer is full.
    pub async fn send(&self, msg: Vec<u8>) -> Result<(), PeerError> {
        if msg.len() > MAX_MESSAGE_BYTES {
            return Err(PeerError::MessageTooLarge(msg.len()));
        }
        self.dc
            .send(BytesMut::from(&msg[..]))
            .await
            .map_err(|_| PeerError::Closed)
    }
}

/// One open data channel to a remote peer.
pub struct PeerLink {
    rx: mpsc::Receiver<Vec<u8>>,
    sender: PeerSender,
    pc: Arc<dyn PeerConnection>,
}

impl PeerLink {
    /// Sends one message (see [`PeerSender::send`]).
    pub async fn send(&self, msg: Vec<u8>) -> Result<(), PeerError> {
        self.sender.send(msg).await
    }

    /// Next received message; `None` once the channel or connection closed.
    pub async fn recv(&mut self) -> Option<Vec<u8>> {
        self.rx.recv().await
    }

    /// A sender that can be used from other tasks.
    pub fn sender(&self) -> PeerSender {
        self.sender.clone()
    }

    /// Closes the channel and the connection.
    pub async fn close(self) {
        let _ = self.sender.dc.close().await;
        let _ = self.pc.close().await;
    }
}

/// Events the reader task and the signaling code wait on.
struct Handler {
    gathered: Notify,
    dead: Notify,
    channel: mpsc::Sender<Arc<dyn DataChannel>>,
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
        // A vanished browser tab never closes its channel; ICE failure is how we learn.
        if matches!(
            state,
            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed
        ) {
            self.dead.notify_one();
        }
    }

    async fn on_data_channel(&self, dc: Arc<dyn DataChannel>) {
        let _ = self.channel.try_send(dc);
    }
}

async fn new_peer(
    bind_ip: IpAddr,
) -> Result<
    (
        Arc<dyn PeerConnection>,
        Arc<Handler>,
        mpsc::Receiver<Arc<dyn DataChannel>>,
    ),
    PeerError,
> {
    let (channel, channels) = mpsc::channel(1);
    let handler = Arc::new(Handler {
        gathered: Notify::new(),
        dead: Notify::new(),
        channel,
    });
    let settings = SettingEngineBuilder::new()
        // mDNS would open a multicast socket per peer, which fails where there is none,
        // and gains nothing: candidates are exchanged as plain addresses.
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        .with_include_loopback_candidate(bind_ip.is_loopback())
        // Checks every 20 ms instead of 200 ms: connection setup ~240 ms instead of ~400.
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
    let pc = PeerConnectionBuilder::new()
        .with_setting_engine(settings)
        .with_handler(handler.clone())
        .with_udp_addrs(vec![format!("{bind_ip}:0")])
        .with_data_channel_send_buffer_limit(SEND_BUFFER_LIMIT)
        .build()
        .await
        .map_err(rtc_err)?;
    Ok((Arc::new(pc), handler, channels))
}

async fn local_sdp_after_gathering(
    pc: &Arc<dyn PeerConnection>,
    handler: &Handler,
) -> Result<String, PeerError> {
    // On timeout, go on with the candidates gathered so far.
    let _ = tokio::time::timeout(GATHER_TIMEOUT, handler.gathered.notified()).await;
    pc.local_description()
        .await
        .map(|d| d.sdp)
        .ok_or_else(|| PeerError::Rtc("no local description".into()))
}

/// Starts the task that moves channel events into the link's queue. Returns the link and
/// a signal that fires when the channel is open.
fn start_link(
    pc: Arc<dyn PeerConnection>,
    dc: Arc<dyn DataChannel>,
    handler: Arc<Handler>,
) -> (PeerLink, oneshot::Receiver<()>) {
    let (tx, rx) = mpsc::channel(INBOUND_QUEUE);
    let (open_tx, open_rx) = oneshot::channel();
    let reader_dc = dc.clone();
    let reader_pc = pc.clone();
    tokio::spawn(async move {
        let mut open_tx = Some(open_tx);
        loop {
            let event = tokio::select! {
                e = reader_dc.poll() => e,
                _ = handler.dead.notified() => None,
            };
            match event {
                Some(DataChannelEvent::OnOpen) => {
                    if let Some(open) = open_tx.take() {
                        let _ = open.send(());
                    }
                }
                Some(DataChannelEvent::OnMessage(msg)) => {
                    if let Some(open) = open_tx.take() {
                        let _ = open.send(());
                    }
                    if tx.send(msg.data.to_vec()).await.is_err() {
                        break;
                    }
                }
                Some(DataChannelEvent::OnClose) | None => break,
                Some(_) => {}
            }
        }
        drop(tx);
        // A closed channel leaves the connection alive for ~30 s unless closed here.
        let _ = reader_pc.close().await;
    });
    (
        PeerLink {
            rx,
            sender: PeerSender { dc },
            pc,
        },
        open_rx,
    )
}

/// How the relay's side binds.
#[derive(Debug, Clone)]
pub struct AnswerConfig {
    /// Address host candidates bind to (reachable by volunteers).
    pub bind_ip: IpAddr,
    /// How long an answered peer has to open its data channel.
    pub open_timeout: Duration,
}

/// An answered peer whose data channel has not opened yet.
pub struct PendingPeer {
    pc: Arc<dyn PeerConnection>,
    handler: Arc<Handler>,
    channels: mpsc::Receiver<Arc<dyn DataChannel>>,
    timeout: Duration,
}

impl PendingPeer {
    /// Waits for the offerer's data channel.
    pub async fn open(mut self) -> Result<PeerLink, PeerError> {
        let timeout = self.timeout;
        let dc = match tokio::time::timeout(timeout, self.channels.recv()).await {
            Ok(Some(dc)) => dc,
            _ => {
                let _ = self.pc.close().await;
                return Err(PeerError::Timeout(timeout));
            }
        };
        let (link, _opened) = start_link(self.pc, dc, self.handler);
        Ok(link)
    }
}

/// Relay side: answers a complete offer with a complete answer.
pub async fn answer(
    config: &AnswerConfig,
    offer_sdp: &str,
) -> Result<(String, PendingPeer), PeerError> {
    let offer = RTCSessionDescription::offer(offer_sdp.to_owned()).map_err(rtc_err)?;
    let (pc, handler, channels) = new_peer(config.bind_ip).await?;
    let answered = async {
        pc.set_remote_description(offer).await.map_err(rtc_err)?;
        let answer = pc.create_answer(None).await.map_err(rtc_err)?;
        pc.set_local_description(answer).await.map_err(rtc_err)?;
        local_sdp_after_gathering(&pc, &handler).await
    }
    .await;
    match answered {
        Ok(sdp) => Ok((
            sdp,
            PendingPeer {
                pc,
                handler,
                channels,
                timeout: config.open_timeout,
            },
        )),
        Err(e) => {
            let _ = pc.close().await;
            Err(e)
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Sdp {
    sdp: String,
}

/// The local address that routes to `url`'s host: host candidates must be reachable
/// from there, and binding the wildcard address would skip loopback.
async fn local_ip_towards(url: &str) -> Result<IpAddr, PeerError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| PeerError::Signaling(format!("bad relay URL {url}: {e}")))?;
    let host = parsed
        .host_str()
        .ok_or_else(|| PeerError::Signaling(format!("relay URL {url} has no host")))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = parsed.port_or_known_default().unwrap_or(80);
    let probe = tokio::net::UdpSocket::bind("0.0.0.0:0")
        .await
        .map_err(|e| PeerError::Rtc(e.to_string()))?;
    probe
        .connect((host.as_str(), port))
        .await
        .map_err(|e| PeerError::Signaling(format!("cannot reach {host}: {e}")))?;
    probe
        .local_addr()
        .map(|a| a.ip())
        .map_err(|e| PeerError::Rtc(e.to_string()))
}

/// Volunteer side: offers a data channel to the relay's signaling URL and waits for it to open.
pub async fn connect(signal_url: &str) -> Result<PeerLink, PeerError> {
    let bind_ip = local_ip_towards(signal_url).await?;
    let url = signal_url.to_owned();
    offer_then(bind_ip, move |offer| async move {
        let response = reqwest::Client::new()
            .post(&url)
            .json(&Sdp { sdp: offer })
            .timeout(Duration::from_secs(20))
            .send()
            .await
            .map_err(|e| PeerError::Signaling(e.to_string()))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| PeerError::Signaling(e.to_string()))?;
        if !status.is_success() {
            return Err(PeerError::Signaling(format!(
                "relay answered {status}: {body}"
            )));
        }
        serde_json::from_str::<Sdp>(&body)
            .map(|a| a.sdp)
            .map_err(|e| PeerError::Signaling(format!("bad answer from relay: {e}")))
    })
    .await
}

/// Makes an offer, hands it to `exchange` for an answer, and opens the channel.
pub async fn offer_then<F, Fut>(bind_ip: IpAddr, exchange: F) -> Result<PeerLink, PeerError>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = Result<String, PeerError>>,
{
    let (pc, handler, _channels) = new_peer(bind_ip).await?;
    let opened = async {
        let dc = pc
            .create_data_channel("starling", None)
            .await
            .map_err(rtc_err)?;
        let offer = pc.create_offer(None).await.map_err(rtc_err)?;
        pc.set_local_description(offer).await.map_err(rtc_err)?;
        let offer = local_sdp_after_gathering(&pc, &handler).await?;
        let answer = exchange(offer).await?;
        pc.set_remote_description(RTCSessionDescription::answer(answer).map_err(rtc_err)?)
            .await
            .map_err(rtc_err)?;
        let (link, open) = start_link(pc.clone(), dc, handler.clone());
        match tokio::time::timeout(CONNECT_TIMEOUT, open).await {
            Ok(Ok(())) => Ok(link),
            Ok(Err(_)) => Err(PeerError::Closed),
            Err(_) => Err(PeerError::Timeout(CONNECT_TIMEOUT)),
        }
    }
    .await;
    if opened.is_err() {
        let _ = pc.close().await;
    }
    opened
}
