//! Several relays, one network (issue 22), as `scripts/cluster.sh` runs it: three relays
//! on one PostgreSQL database behind nginx (`deploy/nginx-cluster.conf`), thirty native
//! volunteers connecting through the balancer (three of them returning a wrong result
//! for every unit), twenty jobs of the four kernels submitted straight to the three
//! relays in turn, and one relay SIGKILLed three times (a different one each time) while
//! they run. What the network owes its users: every job finishes with the CPU
//! reference's output, no unit is settled on a cheater's result and no cheater is paid,
//! the ledger is one chain that audits clean, and the balances add up to what was
//! issued. It also prints how long a dead relay's units took to be free for others.
//!
//! The test gathers every figure before judging, so one run tells all that went wrong.
//! A second test opens the volunteer page through the balancer in headless Chromium.

#[path = "../../relay-server/tests/common/postgres.rs"]
mod postgres;

use anyhow::Context as _;
use postgres::{query, Postgres};
use starling_api::jobs::SubmitJob;
use starling_api::UnitState;
use starling_e2e::browser::Browser;
use starling_e2e::{binary, Api, KernelJob, MatmulJob, Relay, RenderJob, TempDir, Volunteer};
use starling_protocol::WalletKey;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const RELAYS: usize = 3;
const VOLUNTEERS: usize = 30;
/// Every tenth volunteer lies.
const CHEATER_EVERY: usize = 10;

/// nginx in front of the relays, from `deploy/nginx-cluster.conf`, killed on drop.
struct Balancer {
    child: std::process::Child,
    port: u16,
}

impl Balancer {
    fn start(dir: &Path, relay_ports: &[u16]) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let template = std::fs::read_to_string(
            starling_e2e::workspace_root().join("deploy/nginx-cluster.conf"),
        )?;
        let port = starling_e2e::free_port()?;
        let upstreams: String = relay_ports
            .iter()
            .map(|p| format!("        server 127.0.0.1:{p} max_fails=1 fail_timeout=3s;\n"))
            .collect();
        let config = template
            .replace("@DIR@", &dir.display().to_string())
            .replace("@LISTEN@", &format!("127.0.0.1:{port}"))
            .replace("@UPSTREAMS@\n", &upstreams);
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, config)?;
        let child = std::process::Command::new("nginx")
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf)
            // One process, so none outlives the test.
            .args(["-g", "daemon off; master_process off;"])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr.log"))?)
            .spawn()
            .context("starting nginx (scripts/setup.sh installs nginx)")?;
        let mut balancer = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            let log = ["stderr.log", "error.log"]
                .map(|name| std::fs::read_to_string(dir.join(name)).unwrap_or_default())
                .join("\n");
            let exited = balancer.child.try_wait()?;
            anyhow::ensure!(
                exited.is_none() && Instant::now() < deadline,
                "nginx did not come up ({exited:?}): {log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(balancer)
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A job with the CPU reference its result must match.
enum Reference {
    Matmul(MatmulJob),
    Render(RenderJob),
    Kernel(KernelJob),
}

impl Reference {
    fn body(&self) -> &SubmitJob {
        match self {
            Self::Matmul(j) => &j.body,
            Self::Render(j) => &j.body,
            Self::Kernel(j) => &j.body,
        }
    }

    fn check(&self, result: &[u8]) -> anyhow::Result<()> {
        match self {
            Self::Matmul(j) => j.check(result),
            Self::Render(j) => j.check(result),
            Self::Kernel(j) => j.check(result),
        }
    }
}

/// Five jobs of each kernel, about 4,500 units of 1 MFLOP in all (7 matmul, 121 render,
/// 13 MLP and 768 Monte Carlo units a job: enough that the kills land while they run),
/// their CPU references built on both cores at once.
fn twenty_jobs() -> anyhow::Result<Vec<Reference>> {
    std::thread::scope(|s| {
        let mut built = Vec::new();
        for i in 0..5u32 {
            let seed = u64::from(i) + 1;
            built.push(s.spawn(move || {
                anyhow::Ok(Reference::Matmul(MatmulJob::random(
                    1024,
                    64,
                    96,
                    40 + seed,
                )))
            }));
            built.push(s.spawn(move || Ok(Reference::Render(RenderJob::new(128, 64, 8, 10 + i)?))));
            built.push(s.spawn(move || {
                Ok(Reference::Kernel(KernelJob::mlp(
                    &[32, 48, 10],
                    6_000,
                    20 + seed,
                )?))
            }));
            built.push(s.spawn(move || {
                Ok(Reference::Kernel(KernelJob::montecarlo(
                    3_000_000,
                    30 + seed,
                )?))
            }));
        }
        built
            .into_iter()
            .map(|b| {
                b.join()
                    .map_err(|_| anyhow::anyhow!("building a job panicked"))?
            })
            .collect()
    })
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// Active leases held by relays that have not beaten since `since_ms`: a dead relay's.
fn orphaned_leases(url: &str, since_ms: u128) -> anyhow::Result<u64> {
    Ok(query(
        url,
        &format!(
            "SELECT COUNT(*) FROM leases WHERE state = 'active'
             AND relay NOT IN (SELECT id FROM relays WHERE seen_ms > {since_ms})"
        ),
    )?
    .parse()?)
}

/// Micro-credits in a decimal number of credits as the audit prints them (`2.5`).
fn micro(credits: &str) -> Option<i64> {
    let (whole, frac) = credits.split_once('.').unwrap_or((credits, ""));
    let frac = format!("{frac:0<6}");
    (frac.len() == 6).then_some(())?;
    Some(whole.parse::<i64>().ok()? * 1_000_000 + frac.parse::<i64>().ok()?)
}

fn audit(data: &Path, url: &str) -> anyhow::Result<String> {
    let audit = std::process::Command::new(binary("relay-server")?)
        .arg("audit")
        .arg("--data-dir")
        .arg(data)
        .args(["--database", url])
        .output()?;
    anyhow::ensure!(
        audit.status.success(),
        "the audit failed: {}",
        String::from_utf8_lossy(&audit.stderr)
    );
    Ok(String::from_utf8_lossy(&audit.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_relays_behind_nginx_lose_nothing_to_three_kills_and_pay_no_cheater(
) -> anyhow::Result<()> {
    let started = Instant::now();
    let url = Postgres::shared()?.database()?;
    let data = TempDir::new("cluster")?;
    // One data directory, as on one machine: the relays share the ledger's key and the
    // key sealing job data (scripts/cluster.sh does the same).
    let shared: PathBuf = data.path().join("relays");
    let args = [
        "--database",
        &url,
        "--trusted-proxy",
        "127.0.0.1",
        "--lease-secs",
        "3",
        "--canary-rate",
        "0.05",
        // A unit is 1 MFLOP: at the default price it would earn less than a
        // micro-credit, and "paid nothing" would prove nothing.
        "--price-per-gflop",
        "1",
    ];
    let mut relays = Vec::new();
    // One at a time: the first migrates the database and makes the keys.
    for _ in 0..RELAYS {
        relays.push(Relay::start_with(&shared, 1, &args)?);
    }
    let key = relays[0]
        .dev_key()
        .context("the development key")?
        .to_owned();
    let ports: Vec<u16> = relays.iter().map(Relay::port).collect();
    let balancer = Balancer::start(&data.path().join("nginx"), &ports)?;
    let through_balancer = Api::with_key(&balancer.url(), &key);

    let mut volunteers = Vec::new();
    let mut cheaters = HashSet::new();
    for i in 0..VOLUNTEERS {
        let wallet = WalletKey::from_seed(rand::random());
        let key_file = data.path().join(format!("wallet-{i}.key"));
        std::fs::write(&key_file, wallet.to_hex())?;
        let key_arg = key_file.display().to_string();
        let mut extra = vec!["--cpu", "--key-file", key_arg.as_str()];
        if i % CHEATER_EVERY == CHEATER_EVERY - 1 {
            extra.extend(["--fault", "wrong", "--fault-rate", "1"]);
            cheaters.insert(wallet.address().to_string());
        }
        let log = data.path().join(format!("volunteer-{i}.log"));
        volunteers.push(Volunteer::start_logged(&balancer.url(), &extra, &log)?);
    }
    // Everyone connects through the balancer, which spreads them over the relays.
    let deadline = Instant::now() + Duration::from_secs(90);
    let spread = loop {
        let mut on = Vec::new();
        for relay in &relays {
            on.push(relay.api().stats().await?.volunteers);
        }
        if on.iter().sum::<u64>() >= VOLUNTEERS as u64 {
            break on;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{VOLUNTEERS} volunteers did not connect: {on:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!(
        "volunteers per relay {spread:?} after {:?}",
        started.elapsed()
    );
    anyhow::ensure!(
        spread.iter().all(|n| *n > 0),
        "the balancer left a relay without volunteers: {spread:?}"
    );

    let jobs = twenty_jobs()?;
    let mut ids = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        ids.push(relays[i % RELAYS].api().submit(job.body()).await?);
    }
    let mut total_units = 0;
    for id in &ids {
        total_units += through_balancer.job(id).await?.progress.units_total;
    }
    eprintln!(
        "{total_units} units in {} jobs at {:?}",
        ids.len(),
        started.elapsed()
    );
    anyhow::ensure!(
        total_units >= 4_000,
        "only {total_units} units: make the jobs bigger"
    );

    // Counted in the database: twenty API reads a poll were slower than the jobs. Not the
    // relays' own known-answer probe jobs, which come and go.
    let settled = || -> anyhow::Result<i64> {
        Ok(query(
            &url,
            "SELECT COALESCE(SUM(units_done), 0) FROM jobs WHERE probe = 0",
        )?
        .parse()?)
    };
    let mut failures: Vec<String> = Vec::new();
    let mut last_done = 0;
    for crash in 0..3 {
        let deadline = Instant::now() + Duration::from_secs(120);
        let done = loop {
            let done = settled()?;
            if done >= last_done + total_units / 8 || done >= total_units {
                break done;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "no progress before crash {crash}: {done}/{total_units} settled"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let victim = crash % RELAYS;
        let killed_at = now_ms();
        let kill = Instant::now();
        relays[victim].kill();
        // Its volunteers' leases are free for others once the other relays void them
        // (its heartbeat stops) or they expire, whichever comes first.
        let freed = loop {
            // Beats are half a second apart: wait one before judging who is dead.
            tokio::time::sleep(Duration::from_millis(600)).await;
            let orphaned = orphaned_leases(&url, killed_at)?;
            if orphaned == 0 {
                break Some(kill.elapsed());
            }
            if kill.elapsed() > Duration::from_secs(30) {
                failures.push(format!(
                    "crash {crash}: {orphaned} leases of the dead relay still held after 30 s"
                ));
                break None;
            }
        };
        let after = settled()?;
        if after < done {
            failures.push(format!("crash {crash} lost units: {done} -> {after}"));
        }
        eprintln!(
            "crash {crash} (relay {victim}) at {:?}: {after}/{total_units} settled; its leases free after {freed:?}",
            started.elapsed()
        );
        relays[victim].restart()?;
        last_done = after;
    }

    for (i, (id, job)) in ids.iter().zip(&jobs).enumerate() {
        // Results and states from a relay other than the one that took the job.
        let reader = relays[(i + 1) % RELAYS].api();
        match reader.wait_done(id, Duration::from_secs(240)).await {
            Ok(_) => match reader.result(id).await {
                Ok((200, bytes)) => {
                    if let Err(e) = job.check(&bytes) {
                        failures.push(format!("job {i} result wrong: {e:#}"));
                    }
                }
                Ok((status, _)) => failures.push(format!("job {i} result answered {status}")),
                Err(e) => failures.push(format!("job {i} result: {e:#}")),
            },
            Err(e) => failures.push(format!("job {i} did not finish: {e:#}")),
        }
    }
    eprintln!("jobs ended after {:?}", started.elapsed());

    // No unit settled on a cheater's result, and every unit's agreeing results come from
    // distinct wallets.
    let mut settled_by_cheaters = 0;
    for id in &ids {
        for unit in through_balancer.units(id).await? {
            if unit.state != UnitState::Done {
                failures.push(format!("unit not done: {unit:?}"));
                continue;
            }
            let distinct: HashSet<&String> = unit.valid_wallets.iter().collect();
            if unit.valid_wallets.is_empty() || distinct.len() != unit.valid_wallets.len() {
                failures.push(format!("unit settled wrongly: {unit:?}"));
            }
            if unit.valid_wallets.iter().any(|w| cheaters.contains(w)) {
                settled_by_cheaters += 1;
                failures.push(format!("a unit settled on a cheater's result: {unit:?}"));
            }
        }
    }

    // What the one public ledger credited each wallet, every page of it.
    let credited = through_balancer.credited_wallets().await?;
    for cheater in &cheaters {
        let standing = through_balancer.wallet(cheater).await?;
        let credit = credited.get(cheater).copied().unwrap_or(0);
        if credit > 0 || standing.balance_micro > 0 {
            failures.push(format!(
                "cheater {cheater} paid {credit} micro: {standing:?}"
            ));
        }
    }
    let honest_paid: u64 = credited
        .iter()
        .filter(|(w, _)| !cheaters.contains(*w))
        .map(|(_, c)| c)
        .sum();
    eprintln!(
        "{settled_by_cheaters} units settled by cheaters; honest wallets paid {honest_paid} micro-credits"
    );
    if honest_paid == 0 {
        failures.push("no honest volunteer was paid".into());
    }

    match audit(&shared, &url) {
        Ok(summary) if summary.contains("ledger ok") => {
            let issued = summary
                .lines()
                .find_map(|l| l.strip_prefix("issued"))
                .and_then(|v| micro(v.trim()))
                .unwrap_or(0);
            // Balances as the relays keep them, every account but issuance's.
            let held: i64 = query(
                &url,
                "SELECT COALESCE(SUM(micro), 0) FROM balances WHERE account <> 'issuance'",
            )?
            .parse()?;
            if issued != held || issued == 0 {
                failures.push(format!(
                    "balances hold {held} micro-credits but {issued} were issued"
                ));
            }
            eprintln!("audit: {issued} issued, {held} held in balances");
        }
        Ok(summary) => failures.push(format!("ledger audit: {summary}")),
        Err(e) => failures.push(format!("ledger audit: {e:#}")),
    }
    eprintln!("cluster run took {:?}", started.elapsed());
    drop(volunteers);
    drop(balancer);
    anyhow::ensure!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    Ok(())
}

/// The page as a visitor meets it in a deployment: opened through the balancer, which
/// here sends everything to relay A, while the job was submitted to relay B. WebGPU on
/// SwiftShader, real WebRTC to relay A, the result read from relay B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_through_the_balancer_computes_a_job_another_relay_took() -> anyhow::Result<()> {
    let url = Postgres::shared()?.database()?;
    let data = TempDir::new("cluster-browser")?;
    let shared = data.path().join("relays");
    let args = ["--database", url.as_str(), "--trusted-proxy", "127.0.0.1"];
    let behind = Relay::start_with(&shared, 1, &args)?;
    let other = Relay::start_with(&shared, 1, &args)?;
    let balancer = Balancer::start(&data.path().join("nginx"), &[behind.port()])?;
    let key = other.dev_key().context("the development key")?.to_owned();
    let submitted_to = Api::with_key(&other.url(), &key);

    let job = MatmulJob::random(160, 128, 96, 11);
    let id = submitted_to.submit_with_quorum(&job.body, 1).await?;
    let units = submitted_to.job(&id).await?.progress.units_total;
    anyhow::ensure!(units >= 4, "only {units} units");

    let browser = Browser::start("cluster-browser").await?;
    browser.goto(&balancer.url()).await?;
    browser
        .wait_text("device", Duration::from_secs(30), |t| t != "Detecting…")
        .await?;
    browser.click("start").await?;
    submitted_to
        .wait_done(&id, Duration::from_secs(120))
        .await?;
    let (status, result) = submitted_to.result(&id).await?;
    anyhow::ensure!(status == 200, "result answered {status}");
    job.check(&result)?;
    // The page's session lived on the relay behind the balancer, not on the one that
    // took the job.
    let stats = behind.api().stats().await?;
    anyhow::ensure!(
        stats.volunteers >= 1,
        "the browser is not connected to the relay behind the balancer: {stats:?}"
    );
    anyhow::ensure!(
        other.api().stats().await?.volunteers == 0,
        "the browser reached the relay that took the job directly"
    );
    Ok(())
}

/// Behind the balancer the relay limits each client by the address the balancer saw,
/// not by what the client wrote: a client rotating made-up `X-Forwarded-For` headers
/// is still one client (a relay that believed the first entry would give each request a
/// fresh bucket), while another client (another loopback address) has a bucket of its
/// own (a relay that ignored the header would see both as the balancer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_balancers_client_address_is_rate_limited_not_a_forged_one() -> anyhow::Result<()> {
    let data = TempDir::new("cluster-forwarded")?;
    let relay = Relay::start_with(
        data.path(),
        1,
        &[
            "--trusted-proxy",
            "127.0.0.1",
            "--rate-limit-per-s",
            "0.1",
            "--rate-limit-burst",
            "5",
        ],
    )?;
    let balancer = Balancer::start(&data.path().join("nginx"), &[relay.port()])?;
    let stats = format!("{}/api/v1/stats", balancer.url());
    let forger = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 1]))
        .build()?;
    let mut limited = 0;
    for i in 0..20 {
        let status = forger
            .get(&stats)
            .header("X-Forwarded-For", format!("198.51.100.{i}"))
            .send()
            .await?
            .status();
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            limited += 1;
        }
    }
    anyhow::ensure!(
        limited >= 10,
        "forged X-Forwarded-For headers escaped the rate limit: {limited} of 20 limited"
    );
    let other = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()?;
    let status = other.get(&stats).send().await?.status();
    anyhow::ensure!(
        status == reqwest::StatusCode::OK,
        "another client was limited with the forger: {status}"
    );
    Ok(())
}

/// A volunteer whose network blocks UDP reaches its relay over the WebSocket fallback,
/// through the balancer on a port of its own. Its hello signs the relay's host as its
/// URL names it (host and port), so the balancer must pass that Host on unchanged
/// (nginx's `$host` drops the port, and the relay refused every such hello).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_volunteer_computes_through_the_balancer() -> anyhow::Result<()> {
    let data = TempDir::new("cluster-websocket")?;
    let relay = Relay::start_with(data.path(), 1, &["--trusted-proxy", "127.0.0.1"])?;
    let balancer = Balancer::start(&data.path().join("nginx"), &[relay.port()])?;
    let api = relay.api();
    let job = KernelJob::montecarlo(20_000, 5)?;
    let id = api.submit_with_quorum(&job.body, 1).await?;
    let _volunteer = Volunteer::start_logged(
        &balancer.url(),
        &["--transport", "websocket", "--cpu"],
        &data.path().join("volunteer.log"),
    )?;
    if let Err(e) = api.wait_done(&id, Duration::from_secs(60)).await {
        let log = std::fs::read_to_string(data.path().join("volunteer.log")).unwrap_or_default();
        let tail: String = log.lines().rev().take(5).collect::<Vec<_>>().join("\n");
        anyhow::bail!("{e:#}; the volunteer's last lines:\n{tail}");
    }
    let (status, result) = api.result(&id).await?;
    anyhow::ensure!(status == 200, "result answered {status}");
    job.check(&result)
}
