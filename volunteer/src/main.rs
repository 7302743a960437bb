//! `volunteer`: a headless native volunteer (wgpu on Vulkan/Metal, or the CPU reference).
//! It reconnects after relay restarts until stopped with Ctrl-C, waiting between tries as
//! the page does (`starling_client::reconnect`: jittered, from 0.25 s up to 30 s).

mod fault;

use anyhow::Context;
use clap::Parser;
use fault::{CollusionGroup, Fault, FaultyTransport};
use starling_client::platform::RelayTransport;
use starling_client::reconnect::{self, Backoff};
use starling_client::{Engine, Event, Profile, Transport, TransportChoice, VolunteerError};
use starling_protocol::{SiteClaim, WalletAddress, WalletKey};
use std::cell::Cell;
use std::path::Path;
use std::time::{Duration, Instant};

/// A headless Starling volunteer.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// The relay's base URL.
    #[arg(long, env = "STARLING_RELAY", default_value = "http://127.0.0.1:8080")]
    relay: String,
    /// Also trust the certificates in this PEM file for an https:// relay (its
    /// self-signed certificate, or a private CA's); the system's roots stay trusted.
    #[arg(long, env = "STARLING_CA_CERT", value_name = "FILE")]
    ca_cert: Option<std::path::PathBuf>,
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
    /// Run only the relay's built-in kernels, never a kernel a submitter registered.
    #[arg(long)]
    builtin_only: bool,
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
    /// Connect through the relay's TURN server only (relayed candidates), to check a
    /// TURN setup; without it a direct path is used where one works.
    #[arg(long)]
    turn_only: bool,
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
        builtin_only: cli.builtin_only,
    };
    let group = match &cli.collude_with {
        Some(dir) => Some(CollusionGroup::new(
            dir.clone(),
            wallet.address().to_string(),
        )?),
        None => None,
    };
    // Built once, before the loop: a bad --ca-cert is a start-up error, not a retry.
    let signaling = starling_api::https::http_client_builder(cli.ca_cert.as_deref())?
        .build()
        .context("building the signaling HTTP client")?;
    let mut backoff = Backoff::new();
    let faulted = std::rc::Rc::new(std::cell::Cell::new(false));
    loop {
        let outcome = tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            t = RelayTransport::connect_with(&cli.relay, &signaling, cli.transport, cli.turn_only) => t,
        };
        match outcome {
            Ok(transport) => {
                tracing::info!(target: "transport", transport = %transport.kind(), "transport open");
                let (result, steady) = match cli.fault {
                    None => {
                        let mut transport = transport;
                        let served = serve(&mut transport, &engine, &profile, clock).await;
                        transport.close().await;
                        served
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
                        let served = serve(&mut faulty, &engine, &profile, clock).await;
                        faulty.into_inner().close().await;
                        served
                    }
                };
                backoff.session_ended(steady);
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
            Err(e) => tracing::warn!("{e}"),
        }
        let wait = Duration::from_millis(backoff.next_wait_ms(rand::random()).into());
        tracing::info!(attempt = backoff.attempt(), "reconnecting in {wait:?}");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            () = tokio::time::sleep(wait) => {}
        }
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

/// One connection's work loop, until Ctrl-C (`Ok`) or the connection fails; and whether
/// the session was steady ([`reconnect::steady`]), which resets the backoff.
async fn serve<T: Transport>(
    transport: &mut T,
    engine: &Engine,
    profile: &Profile,
    clock: Instant,
) -> (Result<(), VolunteerError>, bool) {
    let welcomed_at = Cell::new(None::<Instant>);
    let computed = Cell::new(0u64);
    let result = starling_client::run(
        transport,
        engine,
        profile,
        || clock.elapsed().as_secs_f64() * 1000.0,
        |event: Event| {
            match event {
                Event::Connected { .. } => welcomed_at.set(Some(Instant::now())),
                Event::Computed { .. } => computed.set(computed.get() + 1),
                _ => {}
            }
            log_event(event)
        },
        async {
            let _ = tokio::signal::ctrl_c().await;
        },
    )
    .await;
    let welcomed_for_ms = welcomed_at
        .get()
        .map(|at| at.elapsed().as_secs_f64() * 1000.0);
    (result, reconnect::steady(welcomed_for_ms, computed.get()))
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
        Event::Asked => tracing::debug!("asked for work"),
        Event::Assigned {
            kernel, job_age_s, ..
        } => tracing::debug!(kernel, job_age_s, "unit assigned"),
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
