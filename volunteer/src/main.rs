//! `volunteer`: a headless native volunteer (wgpu on Vulkan/Metal, or the CPU reference).
//! It reconnects after relay restarts until stopped with Ctrl-C.

mod fault;

use anyhow::Context;
use clap::Parser;
use fault::{CollusionGroup, Fault, FaultyTransport};
use starling_client::platform::RelayTransport;
use starling_client::{Engine, Event, Profile, Transport, TransportChoice, VolunteerError};
use starling_protocol::{SiteClaim, WalletAddress, WalletKey};
use std::path::Path;
use std::time::{Duration, Instant};

/// A headless Starling volunteer.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// The relay's base URL.
    #[arg(long, env = "STARLING_RELAY", default_value = "http://127.0.0.1:8080")]
    relay: String,
    /// How to reach the relay: `auto` tries WebRTC and falls back to the relay's
    /// WebSocket if the data channel has not opened within 5 s (UDP blocked, no TURN);
    /// `webrtc` or `websocket` use only that one.
    #[arg(long, env = "STARLING_TRANSPORT", default_value = "auto")]
    transport: TransportChoice,
    /// Use the CPU reference even when a GPU adapter exists.
    #[arg(long)]
    cpu: bool,
    /// The wallet's secret key file (64 hex characters), created if missing. Without
    /// it the volunteer makes a throwaway wallet for this run.
    #[arg(long, env = "STARLING_KEY_FILE")]
    key_file: Option<std::path::PathBuf>,
    /// TEST ONLY: misbehave on results (wrong output, disconnect, stall past the
    /// lease, send twice), to exercise the relay's defences.
    #[arg(long, value_enum)]
    fault: Option<Fault>,
    /// TEST ONLY: fraction of results the fault applies to (the first result always).
    #[arg(long, default_value_t = 1.0, requires = "fault")]
    fault_rate: f64,
    /// TEST ONLY: with `--fault collude`, the directory a colluding group shares: lie
    /// only on units another member holds too, answer honestly otherwise.
    #[arg(long, requires = "fault")]
    collude_with: Option<std::path::PathBuf>,
    /// Credit a site's wallet with the site share of this volunteer's work, as the
    /// widget does for the page it is embedded in. The relay pays it only when the
    /// site's owner registered this wallet for `--site-origin`; otherwise it is
    /// ignored (a volunteer gains nothing by naming a wallet of its own).
    #[arg(long, requires = "site_origin")]
    site: Option<WalletAddress>,
    /// The origin of the site named by `--site` (https://example.com).
    #[arg(long, requires = "site")]
    site_origin: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                "info,webrtc=error,rtc=error,rtc_dtls=error,rtc_ice=error".into()
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let engine = if cli.cpu {
        Engine::cpu_only()
    } else {
        Engine::detect().await
    };
    let device = engine.device_info();
    tracing::info!(
        adapter = device.adapter,
        backend = device.backend,
        "device ready"
    );
    if let Some(why) = engine.gpu_error() {
        tracing::info!("no GPU, using the CPU reference: {why}");
    }
    let wallet = match &cli.key_file {
        Some(path) => load_or_create_key(path)?,
        None => {
            let key = WalletKey::from_seed(rand::random());
            tracing::warn!("no --key-file: credit goes to a throwaway wallet");
            key
        }
    };
    tracing::info!(wallet = %wallet.address(), "wallet ready");
    let clock = Instant::now();
    let profile = Profile {
        client: format!("native/{}", env!("CARGO_PKG_VERSION")),
        wallet: wallet.clone(),
        site: cli
            .site
            .zip(cli.site_origin.clone())
            .map(|(wallet, origin)| SiteClaim { wallet, origin }),
    };
    let group = match &cli.collude_with {
        Some(dir) => Some(CollusionGroup::new(
            dir.clone(),
            wallet.address().to_string(),
        )?),
        None => None,
    };
    let mut backoff = Duration::from_millis(250);
    let faulted = std::rc::Rc::new(std::cell::Cell::new(false));
    loop {
        let outcome = tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            t = RelayTransport::connect_with(&cli.relay, cli.transport) => t,
        };
        match outcome {
            Ok(transport) => {
                tracing::info!(target: "transport", transport = %transport.kind(), "transport open");
                backoff = Duration::from_millis(250);
                let result = match cli.fault {
                    None => {
                        let mut transport = transport;
                        let result = serve(&mut transport, &engine, &profile, clock).await;
                        transport.close().await;
                        result
                    }
                    Some(fault) => {
                        tracing::warn!(?fault, rate = cli.fault_rate, "TEST MODE: faults injected");
                        let seed =
                            u64::from(std::process::id()) ^ clock.elapsed().as_nanos() as u64;
                        let mut faulty = FaultyTransport::new(
                            transport,
                            fault,
                            cli.fault_rate,
                            seed,
                            faulted.clone(),
                        )
                        .in_group(group.clone());
                        let result = serve(&mut faulty, &engine, &profile, clock).await;
                        faulty.into_inner().close().await;
                        result
                    }
                };
                match result {
                    Ok(()) => return Ok(()),
                    // Refusal is final (quarantined wallet, incompatible version):
                    // reconnecting would only be refused again.
                    Err(e @ VolunteerError::Refused(_)) => {
                        anyhow::bail!("{e}")
                    }
                    Err(e) => tracing::warn!("disconnected: {e}"),
                }
            }
            Err(e) => tracing::warn!("{e}; retrying in {backoff:?}"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Reads the wallet key at `path`, or makes one and writes it there (owner-only).
fn load_or_create_key(path: &Path) -> anyhow::Result<WalletKey> {
    match std::fs::read_to_string(path) {
        Ok(text) => WalletKey::from_hex(&text)
            .with_context(|| format!("reading the wallet key {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = WalletKey::from_seed(rand::random());
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options
                .open(path)
                .with_context(|| format!("creating the wallet key {}", path.display()))?;
            std::io::Write::write_all(&mut file, format!("{}\n", key.to_hex()).as_bytes())?;
            tracing::info!(path = %path.display(), "created a new wallet key; back it up");
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("reading the wallet key {}", path.display())),
    }
}

/// One connection's work loop, until Ctrl-C (`Ok`) or the connection fails.
async fn serve<T: Transport>(
    transport: &mut T,
    engine: &Engine,
    profile: &Profile,
    clock: Instant,
) -> Result<(), VolunteerError> {
    starling_client::run(
        transport,
        engine,
        profile,
        || clock.elapsed().as_secs_f64() * 1000.0,
        log_event,
        async {
            let _ = tokio::signal::ctrl_c().await;
        },
    )
    .await
}

fn log_event(event: Event) {
    match event {
        Event::Connected { transport } => tracing::info!(%transport, "connected to the relay"),
        Event::Computed {
            kernel,
            elapsed_ms,
            flops,
        } => tracing::info!(
            kernel,
            elapsed_ms,
            gflops = flops as f64 / elapsed_ms.max(1e-3) / 1e6,
            "unit computed"
        ),
        Event::Acked { accepted, detail } if !accepted => {
            tracing::warn!("result not accepted: {detail}")
        }
        Event::Acked { .. } => {}
        Event::UnitFailed(why) => tracing::warn!("unit failed: {why}"),
        Event::Credited {
            amount_micro,
            seq,
            reason,
        } => tracing::info!(
            target: "receipts",
            credits = amount_micro as f64 / 1e6,
            ledger_entry = seq,
            reason,
            "signed receipt: credited"
        ),
    }
}
