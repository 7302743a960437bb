//! The `over WebRTC` scenario: the relay's whole path, DTLS and SCTP included.

use crate::meter::{pin_this_thread, Meter, VOLUNTEER_THREAD};
use crate::scheduler::{submit_matmul, TrustedNetwork};
use crate::Figures;
use starling_kernels::Catalog;
use starling_protocol::{ChannelBinding, WalletKey};
use starling_relay::app::{self, AppState, Limits, StaticDirs};
use std::time::{Duration, Instant};

/// The relay's whole path over real WebRTC: the relay's HTTP router answers each
/// volunteer's offer (`/api/v1/rtc/offer`) and serves its data channel as `relay-server`
/// does, and each volunteer speaks the protocol as the browser's loop does (hello with
/// its proof, `Ready`, then for each `Assign` the CPU reference's output as `Result` and
/// `Ready` again). The network is [`TrustedNetwork`]'s. The volunteers, WebRTC stacks
/// included, run on a runtime of their own whose threads are named like the volunteer
/// thread, so their CPU is counted apart from the relay's; both ends' DTLS and SCTP share
/// the machine's cores, as the simulated work does in the scenario before. A lease's
/// latency here is what a volunteer sees: from sending `Ready` to the `Assign` arriving.
pub(crate) async fn over_webrtc(units: usize, volunteers: usize) -> anyhow::Result<Figures> {
    let network = TrustedNetwork::start(volunteers).await?;
    let state = AppState::new(
        network.scheduler.clone(),
        starling_webrtc_native::AnswerConfig {
            bind_ip: [127, 0, 0, 1].into(),
            open_timeout: Duration::from_secs(30),
        },
        Limits::default(),
    );
    let dirs = StaticDirs {
        app: network.dir.join("dist"),
        public: network.dir.join("public"),
    };
    let router = app::router(state, &dirs);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let offer_url = format!("http://{}/api/v1/rtc/offer", listener.local_addr()?);
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    });
    let cpus = std::env::var("STARLING_BENCH_VOLUNTEER_CPUS").ok();
    let runtime = tokio::runtime::Builder::new_multi_thread()
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
        .build()?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    // Every volunteer connects and says hello before the jobs exist, so connecting is
    // not in the measured window.
    let (welcomed_tx, mut welcomed) = tokio::sync::mpsc::channel(volunteers);
    let mut tasks = Vec::new();
    for (_, wallet) in &network.wallets {
        let wallet = wallet.clone();
        let offer_url = offer_url.clone();
        let welcomed = welcomed_tx.clone();
        let stopped = stopped.clone();
        tasks.push(
            runtime
                .spawn(async move { rtc_volunteer(&offer_url, &wallet, welcomed, stopped).await }),
        );
    }
    drop(welcomed_tx);
    for _ in 0..volunteers {
        tokio::time::timeout(Duration::from_secs(60), welcomed.recv())
            .await
            .map_err(|_| anyhow::anyhow!("volunteers took over a minute to connect"))?
            .ok_or_else(|| anyhow::anyhow!("a volunteer failed to connect"))?;
    }
    let jobs = submit_matmul(&network.scheduler, units, network.account).await?;
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
        latencies.extend(task.await??);
    }
    let figures = window.figures(units, latencies);
    server.abort();
    runtime.shutdown_background();
    network.finish(&jobs).await?;
    Ok(figures)
}

/// One volunteer over WebRTC until `stopped` turns true: returns its leases' latencies
/// (`Ready` sent to `Assign` received).
async fn rtc_volunteer(
    offer_url: &str,
    wallet: &WalletKey,
    welcomed: tokio::sync::mpsc::Sender<()>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Vec<Duration>> {
    use starling_protocol::{
        encode_frames, DeviceInfo, Reassembler, ToRelay, ToVolunteer, PROTOCOL_VERSION,
    };
    let mut link = starling_webrtc_native::connect(offer_url).await?;
    let sender = link.sender();
    let send = |message: ToRelay| {
        let sender = &sender;
        async move {
            for frame in encode_frames(&message) {
                sender.send(frame).await?;
            }
            anyhow::Ok(())
        }
    };
    let descriptions = link.descriptions();
    let binding = ChannelBinding::from_descriptions(&descriptions.offer, &descriptions.answer)?;
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
        proof: wallet.sign_channel(&binding),
    };
    send(hello).await?;
    let catalog = Catalog::builtin();
    let mut reassembler = Reassembler::new(1 << 20);
    let mut latencies = Vec::new();
    let mut ready_sent = Instant::now();
    loop {
        let frame = tokio::select! {
            frame = link.recv() => frame,
            _ = stopped.wait_for(|stop| *stop) => break,
        };
        let frame = frame.ok_or_else(|| anyhow::anyhow!("the relay closed the channel"))?;
        let Some(message) = reassembler.push_message(&frame)? else {
            continue;
        };
        match message {
            ToVolunteer::Welcome { .. } => {
                let _ = welcomed.send(()).await;
                ready_sent = Instant::now();
                send(ToRelay::Ready { slots: 1 }).await?;
            }
            ToVolunteer::Assign(assignment) => {
                latencies.push(ready_sent.elapsed());
                let output = catalog
                    .get(&assignment.kernel)?
                    .run_cpu(&assignment.params_json, &assignment.input)?;
                send(ToRelay::Result {
                    lease: assignment.lease,
                    output,
                    elapsed_ms: 0,
                })
                .await?;
                ready_sent = Instant::now();
                send(ToRelay::Ready { slots: 1 }).await?;
            }
            ToVolunteer::Ack {
                accepted, detail, ..
            } => {
                // A replica that came back after its unit settled without it: wasted,
                // not wrong.
                anyhow::ensure!(
                    accepted || detail.contains("already settled"),
                    "an honest result was refused: {detail}"
                );
            }
            ToVolunteer::Receipt(_) => {}
            ToVolunteer::Refused { reason } => anyhow::bail!("refused: {reason}"),
            ToVolunteer::Challenge { .. } => anyhow::bail!("a WebSocket's challenge on WebRTC"),
        }
    }
    link.close().await;
    Ok(latencies)
}
