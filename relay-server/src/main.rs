//! `relay-server`: runs the Starling relay.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use starling_kernels::Catalog;
use starling_protocol::WalletAddress;
use starling_relay::app::{self, AppState, Limits, StaticDirs};
use starling_relay::ledger::{self, MicroCredits};
use starling_relay::middleware::RateLimit;
use starling_relay::scheduler::caps::LeaseLimits;
use starling_relay::scheduler::{Scheduler, SchedulerConfig};
use starling_relay::server::{self, ConnectionStats, ServeLimits};
use starling_relay::storage::{Billing, Pricing, Storage};
use starling_relay::validation::NetworkRule;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The Starling relay: REST API, WebRTC peers, scheduler, storage and the web UI.
///
/// Without a subcommand it runs the relay with the options below.
#[derive(Debug, Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    /// Ledger administration instead of running the relay.
    #[command(subcommand)]
    command: Option<Command>,
    /// Address to serve HTTP on (port 0 picks a free port; the URL is printed).
    #[arg(long, env = "STARLING_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    #[command(flatten)]
    database: Database,
    /// The built web UI (Trunk's dist/).
    #[arg(long, default_value = "dist")]
    app_dir: PathBuf,
    /// Static assets served as they are.
    #[arg(long, default_value = "public")]
    public_dir: PathBuf,
    /// IP address volunteers reach the relay's WebRTC side on (defaults to the listen IP,
    /// or 127.0.0.1 when listening on all interfaces).
    #[arg(long, env = "STARLING_RTC_IP")]
    rtc_ip: Option<IpAddr>,
    /// Also offer volunteers an ICE-TCP candidate (on --rtc-ip, a fresh port per
    /// volunteer), for networks that drop UDP but let TCP out to any port. TURN over TCP
    /// or TLS (--turn) gets through stricter firewalls.
    #[arg(long)]
    rtc_tcp: bool,
    /// A load balancer in front of this relay (repeat, or separate with commas): its
    /// requests' client address is the last `X-Forwarded-For` entry, so rate limits and
    /// peer caps count volunteers, not the balancer.
    #[arg(
        long = "trusted-proxy",
        env = "STARLING_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    trusted_proxies: Vec<IpAddr>,
    #[command(flatten)]
    ice_servers: starling_relay::rtc::ice_servers::IceServerArgs,
    /// Target size of a work unit in millions of floating-point operations.
    #[arg(long, default_value_t = 64)]
    unit_mflops: u64,
    /// Shortest lease in seconds. Each lease lasts four times what the volunteer's
    /// measured speed predicts for the unit plus 2 s, within this and --max-lease-secs;
    /// a unit not back by then is reissued.
    #[arg(long, default_value_t = 10)]
    lease_secs: u64,
    /// Longest lease in seconds, however slow the volunteer.
    #[arg(long, default_value_t = 600)]
    max_lease_secs: u64,
    /// Leases one wallet may hold at once, over all its connections; asks beyond wait.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    leases_per_wallet: u32,
    /// Leases the wallets of one network (an IPv4 address or an IPv6 /64) may hold at
    /// once, all together; asks beyond wait.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    leases_per_network: u32,
    /// Leases per second one wallet regains (a token bucket; bursts of as many); 0 turns
    /// the rate cap off.
    #[arg(long, default_value_t = 50.0)]
    leases_per_wallet_per_s: f64,
    /// Agreeing results from distinct wallets that settle a unit, for jobs that do not
    /// say (`"verification": {"quorum": N}`). Trusted wallets' units need one where the
    /// kernel's spot check stands in for the replica.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=5))]
    quorum: u32,
    /// Fraction of leases that are hidden known-answer tests: settled units handed out
    /// again, indistinguishable from new ones, to catch wallets that return wrong results.
    #[arg(long, default_value_t = 0.02)]
    canary_rate: f64,
    /// Share of one core the relay spends computing known-answer units of its own fresh
    /// jobs, so that known-answer tests carry work no volunteer saw before; 0 turns it
    /// off (known-answer tests then re-send settled units of real jobs).
    #[arg(long, default_value_t = 0.05)]
    probe_cpu_share: f64,
    /// Fraction of a just-trusted wallet's units still replicated when the kernel has no
    /// spot check. It falls as the wallet's clean record grows, to a tenth of this. With
    /// `--canary-rate` it sets the verification overhead once wallets are trusted (audit +
    /// canary rate of extra compute); lower catches a trusted cheater later.
    #[arg(long, default_value_t = 0.1)]
    audit_rate: f64,
    /// Whether a quorum of agreeing results needs a wallet with a clean record on the
    /// kernel among them (or the relay's own CPU reference run behind them; for a
    /// registered kernel, which has none, a wallet trusted over all kernels). Turn off
    /// only where every volunteer is known: otherwise two fresh wallets of one person
    /// settle units with whatever they agree to send.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    vet_newcomers: bool,
    /// Share of one core the relay may spend running a unit's CPU reference to check a
    /// quorum of wallets without a record (a new network's first units; 0: never, such
    /// quorums wait for a vetted wallet's result instead).
    #[arg(long, default_value_t = 0.25)]
    reference_cpu_share: f64,
    /// Leading bits of a volunteer's IPv4 address that name its network: one network
    /// holds one replica of a unit (32: every address on its own, for private clusters).
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u8).range(0..=32))]
    network_prefix_v4: u8,
    /// Leading bits of a volunteer's IPv6 address that name its network.
    #[arg(long, default_value_t = 48, value_parser = clap::value_parser!(u8).range(0..=128))]
    network_prefix_v6: u8,
    /// Count every loopback address as one network, for the one-replica-per-network rule
    /// and `--leases-per-network` (tests of them; by default each loopback connection is
    /// its own, so a whole network run on one machine works).
    #[arg(long)]
    loopback_one_network: bool,
    /// Seconds between payouts: what verified units earned is paid into the ledger at
    /// most this long after they settle, and at once when their job ends.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    payout_secs: u64,
    /// Largest accepted request body, in MiB.
    #[arg(long, default_value_t = 64)]
    max_body_mib: usize,
    /// Price of one GFLOP of verified work, in credits. Prices are whole micro-credits
    /// per unit, rounded down, so keep `price x unit size` well above one micro-credit.
    #[arg(long, default_value = "0.01")]
    price_per_gflop: MicroCredits,
    /// Share of each unit's price paid to the site a widget volunteer came through, in
    /// parts per million. Only sites registered with a proof (POST /api/v1/sites) are
    /// paid, and the share comes out of the platform's fee, never the volunteers' pay:
    /// above --platform-fee-ppm it is capped at the fee.
    #[arg(long, default_value_t = 25_000, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    site_share_ppm: u32,
    /// The platform's fee on each unit's price, in parts per million. A registered
    /// site's share is paid out of it.
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    platform_fee_ppm: u32,
    /// TEST/DEV ONLY: let site registrations prove loopback origins over plain http
    /// (http://127.0.0.1:PORT). Without it a site must be served over https from a
    /// public address.
    #[arg(long)]
    allow_http_sites: bool,
    /// Make (once) and print a development API key holding 1,000,000 credits, kept in
    /// DATA_DIR/dev-api-key. Turn off for a public relay: --dev-key=false.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    dev_key: bool,
    /// Jobs one account may have queued or running at once (429 beyond).
    #[arg(long, default_value_t = 100)]
    max_active_jobs: u64,
    /// Most work units one job may split into (422 beyond).
    #[arg(long, default_value_t = 100_000)]
    max_units_per_job: usize,
    /// Largest total of one job's inputs, in MiB (after base64 decoding).
    #[arg(long, default_value_t = 64)]
    max_input_mib: usize,
    /// Days an ended job's inputs are kept; then they are erased for good (fractions of a
    /// day work: 0.5 is twelve hours).
    #[arg(long, default_value_t = 7.0, value_parser = retention_days)]
    retain_inputs_days: f64,
    /// Days an ended job's result, and every output its volunteers returned, is kept;
    /// then it is erased for good (`DELETE /api/v1/jobs/{id}/data` erases it at once).
    #[arg(long, default_value_t = 30.0, value_parser = retention_days)]
    retain_results_days: f64,
    /// Requests per second each verified API key, and each IP address, regains under
    /// /api/v1; 0 turns rate limiting off.
    #[arg(long, default_value_t = 100.0)]
    rate_limit_per_s: f64,
    /// Requests a client may make in one burst before the rate limit applies.
    #[arg(long, default_value_t = 1000)]
    rate_limit_burst: u32,
    /// Seconds a client has to send a request's headers before its connection is closed
    /// (slow or stalled clients would otherwise hold connections open forever).
    #[arg(long, default_value_t = 10.0, value_parser = seconds)]
    header_timeout_secs: f64,
    /// Seconds a request may take, body upload included, before it is answered 408;
    /// job event streams are exempt.
    #[arg(long, default_value_t = 60.0, value_parser = seconds)]
    request_timeout_secs: f64,
    /// HTTP connections open at once; more are closed as soon as they are accepted.
    /// Defaults to 4096, or half the open-file limit when that is lower (volunteers'
    /// WebRTC connections and the database need descriptors too).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: Option<u64>,
    /// Job event streams (`/jobs/{id}/events`) open at once across the relay (429 beyond).
    #[arg(long, default_value_t = 2000)]
    max_event_streams: usize,
    /// Job event streams one account may have open at once (429 beyond).
    #[arg(long, default_value_t = 50)]
    max_event_streams_per_account: usize,
    /// Seconds shutdown (SIGTERM, SIGINT) waits for requests in flight and for volunteer
    /// sessions to hand back their leases.
    #[arg(long, default_value_t = 5.0, value_parser = seconds)]
    shutdown_grace_secs: f64,
    /// HTTPS (tls.rs).
    #[command(flatten)]
    tls: starling_relay::tls::TlsArgs,
}

/// Where the relay's state lives.
#[derive(Debug, clap::Args)]
struct Database {
    /// Directory for the relay's files: the SQLite database (unless --database names
    /// another), relay.key, job data keys, TLS certificates.
    #[arg(long, env = "STARLING_DATA_DIR", default_value = ".data")]
    data_dir: PathBuf,
    /// A PostgreSQL database instead of the SQLite file, as postgres://USER:PASS@HOST/DB:
    /// several relays on one database form one network.
    #[arg(long, env = "STARLING_DATABASE")]
    database: Option<String>,
}

impl Database {
    /// Opens the database these flags name.
    async fn open(&self) -> anyhow::Result<Storage> {
        let Some(url) = &self.database else {
            return Ok(Storage::open(&self.data_dir).await?);
        };
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            anyhow::bail!(
                "--database takes a postgres:// URL (SQLite is the default, in --data-dir)"
            );
        }
        Storage::open_postgres(url, &self.data_dir)
            .await
            .with_context(|| format!("cannot open the PostgreSQL database {}", redacted(url)))
    }
}

/// `url` without its password, for messages.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let user = &url[scheme + 3..at];
            let user = user.split(':').next().unwrap_or_default();
            format!("{}://{user}@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// Commands beside running the relay.
#[derive(Debug, Subcommand)]
enum Command {
    /// Submitter API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Verifies the whole credit ledger (chain, signatures, balances) and prints a
    /// summary; exits non-zero, naming the problem, if anything was tampered with.
    Audit {
        #[command(flatten)]
        database: Database,
        /// Check signatures against this published relay key address instead of the one
        /// in DATA_DIR/relay.key (which whoever can edit the database may replace).
        #[arg(long)]
        relay_key: Option<WalletAddress>,
    },
    /// Copies a network from its SQLite database into a new PostgreSQL database (ledger
    /// chain intact: `audit --database` passes after), then exits. Stop the relay first;
    /// afterwards start it with `--database` and the same `--data-dir`.
    Migrate {
        /// The data directory holding the SQLite database (and the job data keys, which
        /// stay there).
        #[arg(long)]
        from_sqlite: PathBuf,
        /// The PostgreSQL database to fill, postgres://USER:PASS@HOST/DB; it must hold no
        /// rows yet.
        #[arg(long)]
        to: String,
    },
}

/// `keys …` subcommands.
#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Creates a submitter account and prints its new API key (only) on stdout.
    Create {
        #[command(flatten)]
        database: Database,
        /// Credits issued to the account, a decimal like 2.5.
        #[arg(long, default_value = "0")]
        balance: MicroCredits,
        /// A note for whoever reads the accounts table.
        #[arg(long)]
        label: Option<String>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                "info,webrtc=error,rtc=error,rtc_dtls=error,rtc_ice=error,sqlx=warn".into()
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Some(command) = cli.command {
        return run_command(command).await;
    }
    // Checked before anything opens: a TURN server without credentials is a mistake to
    // hear about at once, not from volunteers who cannot connect.
    let ice_servers = cli.ice_servers.into_config()?;
    // Before anything else: a bad certificate or key stops the relay with the reason.
    let data_dir = &cli.database.data_dir;
    let https = cli.tls.load(data_dir, cli.listen.ip())?;
    let storage = cli.database.open().await?;
    // Loaded before serving so a damaged key file stops the relay instead of starting a
    // ledger that can no longer be verified.
    let relay_key = ledger::load_or_create_relay_key(data_dir)?;
    tracing::info!(key = %relay_key.address(), "ledger signing key loaded");
    if cli.site_share_ppm > cli.platform_fee_ppm {
        tracing::warn!(
            "--site-share-ppm {} is above --platform-fee-ppm {}: sites are paid the whole fee",
            cli.site_share_ppm,
            cli.platform_fee_ppm
        );
    }
    let storage = storage.with_billing(Billing {
        key: relay_key,
        pricing: Pricing {
            price_per_gflop: cli.price_per_gflop,
            site_share_ppm: cli.site_share_ppm,
            platform_fee_ppm: cli.platform_fee_ppm,
        },
    });
    let dev_key = if cli.dev_key {
        Some(development_key(&storage, data_dir).await?)
    } else {
        None
    };
    let scheduler = Scheduler::new(
        storage,
        Arc::new(Catalog::builtin()),
        SchedulerConfig {
            unit_flops: cli.unit_mflops.max(1) * 1_000_000,
            lease: Duration::from_secs(cli.lease_secs.max(1)),
            max_lease: Duration::from_secs(cli.max_lease_secs.max(cli.lease_secs).max(1)),
            default_quorum: cli.quorum,
            canary_rate: cli.canary_rate.clamp(0.0, 1.0),
            probe_cpu_share: cli.probe_cpu_share.clamp(0.0, 1.0),
            caps: LeaseLimits {
                per_wallet: cli.leases_per_wallet as usize,
                per_network: cli.leases_per_network as usize,
                per_second: cli.leases_per_wallet_per_s.max(0.0),
                burst: cli.leases_per_wallet_per_s.max(1.0),
                loopback_is_one_network: cli.loopback_one_network,
            },
            audit_rate: cli.audit_rate.clamp(0.0, 1.0),
            max_units_per_job: cli.max_units_per_job.max(1),
            payout_interval: Duration::from_secs(cli.payout_secs),
            retain_inputs: Duration::from_secs_f64(cli.retain_inputs_days * 86_400.0),
            retain_results: Duration::from_secs_f64(cli.retain_results_days * 86_400.0),
            vet_newcomers: cli.vet_newcomers,
            reference_cpu_share: cli.reference_cpu_share.clamp(0.0, 1.0),
            networks: NetworkRule {
                v4_prefix: cli.network_prefix_v4,
                v6_prefix: cli.network_prefix_v6,
                loopback_is_one_network: cli.loopback_one_network,
            },
            ..SchedulerConfig::default()
        },
    );
    scheduler.recover().await?;
    scheduler.spawn_housekeeping();
    scheduler.spawn_probes();
    let rtc_ip = cli.rtc_ip.unwrap_or(if cli.listen.ip().is_unspecified() {
        IpAddr::from([127, 0, 0, 1])
    } else {
        cli.listen.ip()
    });
    let state = AppState::new(
        scheduler,
        starling_webrtc_native::AnswerConfig {
            bind_ip: rtc_ip,
            // A volunteer's channel opens within a second of the answer (NOTES: 0.2-0.8 s
            // with browsers); an answered peer that has not opened by then holds a socket
            // and a pending slot (rtc::PendingPeers) for nothing.
            open_timeout: Duration::from_secs(5),
            tcp: cli.rtc_tcp,
        },
        Limits {
            max_body_bytes: cli.max_body_mib * 1024 * 1024,
            max_input_bytes: cli.max_input_mib * 1024 * 1024,
            max_active_jobs: cli.max_active_jobs.max(1),
            rate: RateLimit {
                per_second: cli.rate_limit_per_s,
                burst: cli.rate_limit_burst,
            },
            request_timeout: Duration::from_secs_f64(cli.request_timeout_secs),
            max_event_streams: cli.max_event_streams,
            max_event_streams_per_account: cli.max_event_streams_per_account,
        },
    );
    let state = state
        .with_ice_servers(ice_servers)
        .with_trusted_proxies(cli.trusted_proxies);
    let state = if cli.allow_http_sites {
        tracing::warn!("--allow-http-sites: sites may register loopback origins over http");
        state.allow_http_sites()
    } else {
        state
    };
    let shutdown = state.shutdown.clone();
    let storage = state.scheduler.storage().clone();
    let grace = Duration::from_secs_f64(cli.shutdown_grace_secs);
    let limits = ServeLimits {
        header_read_timeout: Duration::from_secs_f64(cli.header_timeout_secs),
        max_connections: connection_cap(cli.max_connections),
        drain: grace,
        ..ServeLimits::default()
    };
    let router = app::router(
        state,
        &StaticDirs {
            app: cli.app_dir,
            public: cli.public_dir,
        },
    );
    let listener = tokio::net::TcpListener::bind(cli.listen).await?;
    let addr = listener.local_addr()?;
    // Tests and scripts read this line to find the port, and the next for the key.
    let scheme = if https.is_some() { "https" } else { "http" };
    println!("Starling relay listening on {scheme}://{addr}/");
    if let Some(key) = dev_key {
        println!("development API key: {key}");
    }
    if let Some(made) = https.as_ref().and_then(|https| https.self_signed.as_ref()) {
        print_self_signed(made, addr.port());
    }
    let stopping = shutdown.clone();
    let stop = async move {
        stop_signal().await;
        tracing::info!("stopping: closing volunteer connections and event streams");
        // Ends event streams (so the HTTP drain does not wait on them) and peer
        // sessions, which release their leases and close their connections.
        stopping.begin();
    };
    let stats = Arc::new(ConnectionStats::default());
    match https {
        Some(https) => server::serve_tls(listener, router, limits, stats, https.config, stop).await,
        None => server::serve(listener, router, limits, stats, stop).await,
    }
    if !shutdown.sessions_ended(grace).await {
        tracing::warn!("some volunteer sessions did not end within {grace:?}");
    }
    // Every write queued so far commits before the process exits.
    if let Err(e) = storage.flush().await {
        tracing::error!("final writes failed: {e}");
    }
    tracing::info!("stopped");
    Ok(())
}

/// What a tester needs to trust a `--tls-self-signed` certificate; tests read the
/// `self-signed certificate:` and `spki sha256` lines. Write errors are ignored: a
/// script that read only the lines above it and closed the pipe must not stop the relay.
fn print_self_signed(made: &starling_relay::tls::SelfSigned, port: u16) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "self-signed certificate: {}", made.cert_path.display());
    let _ = writeln!(out, "certificate names: {}", made.names.join(", "));
    let _ = writeln!(out, "certificate sha256: {}", made.cert_sha256);
    let _ = writeln!(out, "spki sha256 (base64): {}", made.spki_sha256_base64);
    let _ = writeln!(
        out,
        "trust it: starling --ca-cert {path} ...; chromium \
         --ignore-certificate-errors-spki-list={spki} https://localhost:{port}/",
        path = made.cert_path.display(),
        spki = made.spki_sha256_base64,
    );
    let _ = out.flush();
}

/// Resolves on SIGTERM (service managers, `docker stop`, `kill`) or SIGINT (Ctrl-C).
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
                return;
            }
            Err(e) => tracing::warn!("cannot listen for SIGTERM: {e}"),
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// The connection cap: as asked, or 4096 within half the open-file limit, after raising
/// that limit to its hard maximum (the soft default, often 1024, is meant for programs
/// that do not serve connections).
fn connection_cap(asked: Option<u64>) -> usize {
    #[cfg(target_os = "linux")]
    let files = {
        use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
        let limit = getrlimit(Resource::Nofile);
        if limit.current != limit.maximum {
            let raised = Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            };
            if let Err(e) = setrlimit(Resource::Nofile, raised) {
                tracing::debug!("cannot raise the open-file limit: {e}");
            }
        }
        // `None` is unlimited.
        getrlimit(Resource::Nofile).current
    };
    #[cfg(not(target_os = "linux"))]
    let files = None::<u64>;
    let cap = asked.unwrap_or_else(|| files.map_or(4096, |files| (files / 2).clamp(1, 4096)));
    usize::try_from(cap).unwrap_or(usize::MAX)
}

/// A duration in seconds: positive, at most a day.
fn seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs <= 86_400.0 => Ok(secs),
        _ => Err(format!(
            "`{text}` is not a number of seconds from 0 (excluded) to 86400"
        )),
    }
}

/// A retention in days: positive, at most ten years.
fn retention_days(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(days) if days > 0.0 && days <= 3_650.0 => Ok(days),
        _ => Err(format!(
            "`{text}` is not a number of days from 0 (excluded) to 3650"
        )),
    }
}

/// The development API key in `DATA_DIR/dev-api-key`, made (with an account holding
/// 1,000,000 credits) on first use. Keys are stored hashed, so the file is the only copy.
async fn development_key(storage: &Storage, data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("dev-api-key");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let key = text.trim().to_owned();
        if storage.account_by_api_key(&key).await?.is_some() {
            return Ok(key);
        }
    }
    let billing = storage
        .billing()
        .ok_or_else(|| anyhow::anyhow!("the relay bills no jobs"))?;
    let balance = MicroCredits::from_credits(1_000_000)?;
    let (_, key) = storage
        .create_account(&billing.key, balance, Some("development"))
        .await?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path)?;
    std::io::Write::write_all(&mut file, format!("{key}\n").as_bytes())?;
    Ok(key)
}

/// Runs a ledger subcommand.
async fn run_command(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Keys(KeysCommand::Create {
            database,
            balance,
            label,
        }) => {
            let storage = database.open().await?;
            let key = ledger::load_or_create_relay_key(&database.data_dir)?;
            let (_, api_key) = storage
                .create_account(&key, balance, label.as_deref())
                .await?;
            // Scripts read the key from stdout: nothing else goes there.
            println!("{api_key}");
        }
        Command::Migrate { from_sqlite, to } => {
            let copied = Storage::copy_sqlite_to_postgres(&from_sqlite, &to)
                .await
                .with_context(|| format!("cannot migrate into {}", redacted(&to)))?;
            for (table, rows) in copied.tables {
                println!("{table:<18} {rows} rows");
            }
            println!("migrated into {}", redacted(&to));
        }
        Command::Audit {
            database,
            relay_key,
        } => {
            let relay = match relay_key {
                Some(address) => address,
                None => ledger::load_relay_key(&database.data_dir)?.address(),
            };
            let storage = database.open().await?;
            let summary = match storage.audit(&relay).await {
                Ok(summary) => summary,
                Err(e) => {
                    // The verdict, not a crash: one line naming the problem, exit 1.
                    eprintln!("ledger audit FAILED: {e}");
                    std::process::exit(1);
                }
            };
            println!("ledger ok: every entry is chained, signed by the relay key and balanced");
            println!("entries      {}", summary.entries);
            println!("issued       {}", summary.issued);
            println!("escrowed     {}", summary.escrowed);
            println!("paid         {}", summary.paid);
            println!("fees         {}", summary.fees);
            println!("refunded     {}", summary.refunded);
            println!("transferred  {}", summary.transferred);
            println!("accounts     {}", summary.balances.len());
            println!("relay key    {relay}");
        }
    }
    Ok(())
}
