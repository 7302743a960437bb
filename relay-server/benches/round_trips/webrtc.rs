//! The `over WebRTC` and `over the WebSocket` scenarios: the relay's whole path, DTLS
//! and SCTP (or the WebSocket's TCP) included.

use crate::meter::{pin_this_thread, Meter, VOLUNTEER_THREAD};
use crate::scheduler::{submit_matmul, TrustedNetwork};
use crate::Figures;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use starling_kernels::Catalog;
use starling_protocol::{Binding, ChallengeBinding, ChannelBinding, WalletKey};
use starling_relay::app::{self, AppState, Limits, StaticDirs};
use std::time::{Duration, Instant};

/// The relay's whole path over real WebRTC: the relay's HTTP router answers each
/// volunteer's offer (`/api/v1/rtc/offer`) and serves its data channel as `relay-server`
/// does, and each volunteer speaks the protocol as the browser's loop does (hello with
/// its proof, `Ready`, then for each unit (an `Assign`, or the `Ack` of its previous
/// result carrying the next) the CPU reference's output as a `Result` that asks for the
/// next unit). The network is [`TrustedNetwork`]'s. The volunteers, WebRTC stacks
/// included, run on a runtime of their own whose threads are named like the volunteer
/// thread, so their CPU is counted apart from the relay's; both ends' DTLS and SCTP share
/// the machine's cores, as the simulated work does in the scenario before. A lease's
/// latency here is what a volunteer sees: from asking (`Ready`, or the `Result` that asks
/// for more) to the unit arriving, so it includes judging the result it came with.
/// With `websocket`, the same over the WebSocket fallback (`/api/v1/ws`): the hello
/// signs the relay's challenge, and every message crosses one TCP connection. With
/// `ready_apart`, each volunteer asks for its next unit with a `Ready` after its result
/// instead of in it, as protocol v5 did: four messages a unit instead of two.
pub(crate) async fn over_transport(
    units: usize,
    volunteers: usize,
    websocket: bool,
    ready_apart: bool,
) -> anyhow::Result<Figures> {
    let network = TrustedNetwork::start(volunteers).await?;
    let (base_url, server) = serve(&network).await?;
    let runtime = volunteer_runtime()?;
    // The runtime cannot be dropped inside this async context, so every path out of the
    // measured part goes through its shutdown below.
    let measured = async {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        // Every volunteer connects and says hello before the jobs exist, so connecting is
        // not in the measured window.
        let (welcomed_tx, mut welcomed) = tokio::sync::mpsc::channel(volunteers);
        let mut tasks = Vec::new();
        for (_, wallet) in &network.wallets {
            let wallet = wallet.clone();
            let base_url = base_url.clone();
            let welcomed = welcomed_tx.clone();
            let stopped = stopped.clone();
            tasks.push(runtime.spawn(async move {
                volunteer(
                    &base_url,
                    websocket,
                    &wallet,
                    Behaviour {
                        ready_apart,
                        ..Behaviour::default()
                    },
                    welcomed,
                    stopped,
                )
                .await
            }));
        }
        drop(welcomed_tx);
        for _ in 0..volunteers {
            let arrived = tokio::time::timeout(Duration::from_secs(60), welcomed.recv())
                .await
                .map_err(|_| anyhow::anyhow!("volunteers took over a minute to connect"))?;
            if arrived.is_none() {
                // Every sender is gone: say why the first volunteer that ended did.
                for task in tasks {
                    if task.is_finished() {
                        task.await??;
                    }
                }
                anyhow::bail!("a volunteer failed to connect");
            }
        }
        let jobs = submit_matmul(&network.scheduler, units, network.account, None).await?;
        let meter = Meter::start();
        while network.all_done(&jobs).await?.is_err() {
            if let Some(ended) = tasks.iter().position(|t| t.is_finished()) {
                let task = tasks.swap_remove(ended);
                task.await??;
                anyhow::bail!("a volunteer stopped before the jobs were done");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let window = meter.end();
        let _ = stop.send(true);
        let mut latencies = Vec::new();
        for task in tasks {
            latencies.extend(task.await??.latencies);
        }
        anyhow::Ok((window.figures(units, latencies), jobs))
    }
    .await;
    server.abort();
    runtime.shutdown_background();
    let (figures, jobs) = measured?;
    network.finish(&jobs).await?;
    Ok(figures)
}

/// The relay's HTTP router over `network`'s scheduler, as `relay-server` serves it, on a
/// loopback port: its base URL, and the task serving it (abort it when done).
pub(crate) async fn serve(
    network: &TrustedNetwork,
) -> anyhow::Result<(String, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let state = AppState::new(
        network.scheduler.clone(),
        starling_webrtc_native::AnswerConfig {
            bind_ip: [127, 0, 0, 1].into(),
            open_timeout: Duration::from_secs(30),
            tcp: false,
        },
        Limits::default(),
    );
    let dirs = StaticDirs {
        app: network.dir.join("dist"),
        public: network.dir.join("public"),
    };
    let router = app::router(state, &dirs);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base_url = format!("http://{}", listener.local_addr()?);
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    });
    Ok((base_url, server))
}

/// The runtime the volunteers' side runs on, its threads named so that their CPU is
/// counted apart from the relay's (and pinned where `STARLING_BENCH_VOLUNTEER_CPUS` asks).
/// It cannot be dropped inside an async context: end it with `shutdown_background`.
pub(crate) fn volunteer_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    let cpus = std::env::var("STARLING_BENCH_VOLUNTEER_CPUS").ok();
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(VOLUNTEER_THREAD)
        .on_thread_start(move || {
            if let Some(cpus) = &cpus {
                if let Err(e) = pin_this_thread(cpus) {
                    eprintln!("volunteer runtime not pinned to {cpus}: {e}");
                }
            }
        })
        .enable_all()
        .build()?)
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;
type WsMessage = tokio_tungstenite::tungstenite::Message;

/// A bench volunteer's connection: a data channel, or the WebSocket.
enum BenchLink {
    WebRtc(starling_webrtc_native::PeerLink),
    WebSocket(
        tokio::sync::Mutex<SplitSink<Socket, WsMessage>>,
        SplitStream<Socket>,
    ),
}

impl BenchLink {
    /// Connects to the relay at `base_url` and reads what the hello must sign. With
    /// `source`, the offer is posted from that loopback address, as a volunteer of its
    /// own network would post it (the relay's caps on pending peers and requests are per
    /// address).
    async fn open(
        base_url: &str,
        websocket: bool,
        source: Option<std::net::IpAddr>,
    ) -> anyhow::Result<(Self, Binding)> {
        if !websocket {
            let signal_url = format!("{base_url}/api/v1/rtc/offer");
            let link = match source {
                None => starling_webrtc_native::connect(&signal_url).await?,
                Some(address) => {
                    // No idle connection kept: thousands of them would fill the relay's
                    // connection cap.
                    let http = reqwest::Client::builder()
                        .local_address(address)
                        .pool_max_idle_per_host(0)
                        .build()?;
                    starling_webrtc_native::connect_with(
                        &signal_url,
                        &http,
                        &starling_webrtc_native::IceOptions::default(),
                    )
                    .await?
                }
            };
            let descriptions = link.descriptions();
            let binding =
                ChannelBinding::from_descriptions(&descriptions.offer, &descriptions.answer)?;
            return Ok((Self::WebRtc(link), Binding::Dtls(binding)));
        }
        let host = base_url.trim_start_matches("http://");
        let (socket, _) =
            tokio_tungstenite::connect_async(format!("ws://{host}/api/v1/ws")).await?;
        let (sink, stream) = socket.split();
        let mut link = Self::WebSocket(tokio::sync::Mutex::new(sink), stream);
        let frame = link
            .recv()
            .await
            .ok_or_else(|| anyhow::anyhow!("the relay closed the WebSocket"))?;
        let mut reassembler = starling_protocol::Reassembler::new(1024);
        match reassembler.push_message(&frame)? {
            Some(starling_protocol::ToVolunteer::Challenge { challenge }) => Ok((
                link,
                Binding::Challenge(ChallengeBinding::new(challenge, host)),
            )),
            _ => anyhow::bail!("no challenge first on the WebSocket"),
        }
    }

    async fn send(&self, frame: Vec<u8>) -> anyhow::Result<()> {
        match self {
            Self::WebRtc(link) => Ok(link.send(frame).await?),
            Self::WebSocket(sink, _) => Ok(sink
                .lock()
                .await
                .send(WsMessage::Binary(frame.into()))
                .await?),
        }
    }

    async fn recv(&mut self) -> Option<Vec<u8>> {
        match self {
            Self::WebRtc(link) => link.recv().await,
            Self::WebSocket(_, stream) => loop {
                match stream.next().await? {
                    Ok(WsMessage::Binary(frame)) => return Some(frame.into()),
                    Ok(WsMessage::Close(_)) | Err(_) => return None,
                    Ok(_) => {}
                }
            },
        }
    }

    async fn close(self) {
        match self {
            Self::WebRtc(link) => link.close().await,
            Self::WebSocket(sink, _) => {
                let _ = sink.into_inner().close().await;
            }
        }
    }
}

/// What one bench volunteer saw.
pub(crate) struct Served {
    /// Each lease's latency: asked for (`Ready`, or a `Result` asking for more) to
    /// received.
    pub(crate) latencies: Vec<Duration>,
    /// When its first unit arrived, and when its last result went.
    pub(crate) first_assign: Option<Instant>,
    pub(crate) last_result: Option<Instant>,
}

/// How a bench volunteer behaves beyond answering at once.
#[derive(Clone, Copy, Default)]
pub(crate) struct Behaviour {
    /// Each unit also takes this long before its result is sent, as a GPU's compute time
    /// would (a timer, not CPU: the volunteers stand for machines of their own).
    pub(crate) simulated: Option<Duration>,
    /// Hold one unit in hand while computing another (`Ready { slots: 2 }` first, then
    /// each result asks for one more), so the lease round trip overlaps the compute.
    pub(crate) ask_ahead: bool,
    /// Signal from this loopback address (see [`BenchLink::open`]).
    pub(crate) source: Option<std::net::IpAddr>,
    /// Ask for the next unit with a `Ready` of its own after each result, as protocol
    /// v5 did (four messages a unit, not two): the baseline in the same run.
    pub(crate) ready_apart: bool,
}

/// One volunteer over WebRTC (or the WebSocket) until `stopped` turns true, behaving as
/// `behaviour` says: returns its leases' latencies (asked for to received) and times.
pub(crate) async fn volunteer(
    base_url: &str,
    websocket: bool,
    wallet: &WalletKey,
    behaviour: Behaviour,
    welcomed: tokio::sync::mpsc::Sender<()>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Served> {
    use starling_protocol::{
        encode_frames, DeviceInfo, Reassembler, ToRelay, ToVolunteer, PROTOCOL_VERSION,
    };
    // A relay admits 8 unproved peers per address at once (rtc::admission): the rest
    // of the 64 retry as a real volunteer's reconnect would.
    let mut tries = 0;
    let (link, binding) = loop {
        match BenchLink::open(base_url, websocket, behaviour.source).await {
            Ok(opened) => break opened,
            Err(_) if tries < 200 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    };
    let link = tokio::sync::Mutex::new(link);
    // Sends take the lock only between receives: this loop never awaits both at once.
    let send = |message: ToRelay| {
        let link = &link;
        async move {
            let link = link.lock().await;
            for frame in encode_frames(&message) {
                link.send(frame).await?;
            }
            anyhow::Ok(())
        }
    };
    let hello = ToRelay::Hello {
        version: PROTOCOL_VERSION,
        client: "bench/0".into(),
        device: DeviceInfo {
            adapter: "CPU".into(),
            backend: "cpu".into(),
            fallback: true,
        },
        wallet: wallet.address(),
        site: None,
        proof: wallet.sign_binding(&binding),
    };
    send(hello).await?;
    let catalog = Catalog::builtin();
    let mut reassembler = Reassembler::new(1 << 20);
    let mut served = Served {
        latencies: Vec::new(),
        first_assign: None,
        last_result: None,
    };
    let mut ready_sent = Instant::now();
    loop {
        let frame = {
            let mut link = link.lock().await;
            tokio::select! {
                frame = link.recv() => frame,
                _ = stopped.wait_for(|stop| *stop) => break,
            }
        };
        let frame = frame.ok_or_else(|| anyhow::anyhow!("the relay closed the channel"))?;
        let Some(message) = reassembler.push_message(&frame)? else {
            continue;
        };
        let assignment = match message {
            ToVolunteer::Welcome { .. } => {
                let _ = welcomed.send(()).await;
                ready_sent = Instant::now();
                let slots = if behaviour.ask_ahead { 2 } else { 1 };
                send(ToRelay::Ready { slots }).await?;
                continue;
            }
            ToVolunteer::Assign(assignment) => assignment,
            ToVolunteer::Ack {
                accepted,
                detail,
                next,
                ..
            } => {
                // A replica that came back after its unit settled without it: wasted,
                // not wrong.
                anyhow::ensure!(
                    accepted || detail.contains("already settled"),
                    "an honest result was refused: {detail}"
                );
                match next {
                    Some(assignment) => assignment,
                    None => continue,
                }
            }
            ToVolunteer::Receipt(_) => continue,
            ToVolunteer::Refused { reason } => anyhow::bail!("refused: {reason}"),
            ToVolunteer::Challenge { .. } => anyhow::bail!("a WebSocket's challenge on WebRTC"),
        };
        served.latencies.push(ready_sent.elapsed());
        served.first_assign.get_or_insert_with(Instant::now);
        let output = catalog
            .get(&assignment.kernel)?
            .run_cpu(&assignment.params_json, &assignment.input)?;
        if let Some(compute_time) = behaviour.simulated {
            tokio::time::sleep(compute_time).await;
        }
        // The result asks for the next unit, as the browser's loop does working flat out.
        ready_sent = Instant::now();
        send(ToRelay::Result {
            lease: assignment.lease,
            output,
            elapsed_ms: 0,
            more: u32::from(!behaviour.ready_apart),
        })
        .await?;
        served.last_result = Some(Instant::now());
        if behaviour.ready_apart {
            ready_sent = Instant::now();
            send(ToRelay::Ready { slots: 1 }).await?;
        }
    }
    link.into_inner().close().await;
    Ok(served)
}
