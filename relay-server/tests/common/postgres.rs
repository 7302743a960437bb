//! A PostgreSQL server of the test's own, from Debian's `postgresql` package: a fresh
//! cluster in a temporary directory, on a free loopback port, trusted local logins, no
//! fsync (the tests check what the relay writes, not the disk). One server per test
//! process, started on first use; each test gets a database of its own on it.
//!
//! The server runs under a shell that stops it when this process's end of a pipe closes,
//! so it ends with the test process however that ends.

// Shared by every test binary of the crate; only some start a server.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The test process's server.
pub struct Postgres {
    port: u16,
    _dir: PathBuf,
    /// Held so the pipe to the server's shell stays open while the process lives.
    _guard: Mutex<Child>,
}

/// The newest installed server binaries (`/usr/lib/postgresql/VERSION/bin`).
fn binaries() -> anyhow::Result<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| {
            anyhow::anyhow!("PostgreSQL is not installed (scripts/setup.sh installs it): {e}")
        })?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| anyhow::anyhow!("no PostgreSQL server under /usr/lib/postgresql"))
}

/// Runs the server's programs as `postgres` when the tests run as root (PostgreSQL
/// refuses to run as root), as the current user otherwise.
fn as_server_user(program: &Path) -> Command {
    let root = std::env::var("USER").is_ok_and(|u| u == "root")
        || Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if root {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// A number no other call in this process returns.
fn unique() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Postgres {
    /// The process's server, started on first use.
    pub fn shared() -> anyhow::Result<&'static Self> {
        static SERVER: OnceLock<Result<Postgres, String>> = OnceLock::new();
        SERVER
            .get_or_init(|| Self::start().map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(|e| anyhow::anyhow!("cannot start PostgreSQL: {e}"))
    }

    fn start() -> anyhow::Result<Self> {
        let bin = binaries()?;
        let dir =
            std::env::temp_dir().join(format!("starling-pg-{}-{}", std::process::id(), unique()));
        std::fs::create_dir_all(&dir)?;
        // The server's user must own its directory (a no-op when that is us).
        let _ = Command::new("chown")
            .arg("postgres:postgres")
            .arg(&dir)
            .status();
        let data = dir.join("data");
        let init = as_server_user(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "starling", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .stdout(Stdio::null())
            .output()?;
        anyhow::ensure!(
            init.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let port = free_port()?;
        // `read` returns when the test process's end of stdin closes (it exited,
        // however), and the shell then stops the server.
        let script = format!(
            "{postgres} -D {data} -p {port} -k {dir} -c listen_addresses=127.0.0.1 \
             -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
             -c max_connections=300 -c shared_preload_libraries=pg_stat_statements \
             -c pg_stat_statements.track_planning=on & pid=$!; read _; kill -INT $pid; wait $pid; rm -rf {dir}",
            postgres = bin.join("postgres").display(),
            data = data.display(),
            dir = dir.display(),
        );
        let mut child = as_server_user(Path::new("/bin/sh"))
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        // Listening is not ready: until recovery ends the server refuses logins.
        let ready = || {
            Command::new(bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                .status()
                .is_ok_and(|s| s.success())
        };
        while !ready() {
            if let Some(status) = child.try_wait()? {
                anyhow::bail!("the PostgreSQL server exited at start: {status}");
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "PostgreSQL did not listen within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Self {
            port,
            _dir: dir,
            _guard: Mutex::new(child),
        })
    }

    /// The server's URL for database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://starling@127.0.0.1:{}/{name}", self.port)
    }

    /// A new, empty database; returns its URL.
    pub fn database(&self) -> anyhow::Result<String> {
        let name = format!("t_{}_{}", std::process::id(), unique());
        let created = Command::new(binaries()?.join("psql"))
            .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "starling", "-d", "postgres", "-c"])
            .arg(format!("CREATE DATABASE {name}"))
            .output()?;
        anyhow::ensure!(
            created.status.success(),
            "cannot create a database: {}",
            String::from_utf8_lossy(&created.stderr)
        );
        Ok(self.url(&name))
    }
}

/// Resets the server's statement statistics (pg_stat_statements, loaded at start), which
/// [`top_statements`] reads back.
pub fn reset_statements(server: &Postgres) -> anyhow::Result<()> {
    psql(
        server,
        "CREATE EXTENSION IF NOT EXISTS pg_stat_statements; SELECT pg_stat_statements_reset();",
    )?;
    Ok(())
}

/// The `n` statements that took the server longest since [`reset_statements`]: ms
/// executing, ms planning, calls, and the statement's first 100 characters.
pub fn top_statements(server: &Postgres, n: usize) -> anyhow::Result<String> {
    psql(
        server,
        &format!(
            "SELECT round(total_exec_time)::bigint, round(total_plan_time)::bigint, calls, \
             regexp_replace(left(query, 100), '\\s+', ' ', 'g') \
             FROM pg_stat_statements ORDER BY total_exec_time + total_plan_time DESC LIMIT {n}"
        ),
    )
}

/// All statements' time on the server since [`reset_statements`]: ms executing, ms
/// planning, and calls.
/// Beside the server processes' CPU it shows what goes to anything but executing them.
pub fn statements_total(server: &Postgres) -> anyhow::Result<String> {
    psql(
        server,
        "SELECT round(sum(total_exec_time))::bigint, round(sum(total_plan_time))::bigint, \
         sum(calls) FROM pg_stat_statements",
    )
}

/// What `command` prints, run on the database at `url` (unaligned, no headers: one line
/// a row, columns split by ` | `).
pub fn query(url: &str, command: &str) -> anyhow::Result<String> {
    let out = Command::new(binaries()?.join("psql"))
        .args(["-q", "-A", "-F", " | ", "-t", "-d", url, "-c", command])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn psql(server: &Postgres, command: &str) -> anyhow::Result<String> {
    let out = Command::new(binaries()?.join("psql"))
        .args([
            "-q",
            "-A",
            "-F",
            " | ",
            "-t",
            "-h",
            "127.0.0.1",
            "-p",
            &server.port.to_string(),
        ])
        .args(["-U", "starling", "-d", "postgres", "-c", command])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// CPU time so far of each PostgreSQL server process on this machine, by pid, with what
/// the process does (Linux, from /proc): the bench's measure of what the database costs
/// per unit.
pub fn server_cpu() -> Option<std::collections::HashMap<u32, (String, Duration)>> {
    let mut cpu = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        if !head.ends_with("(postgres") {
            continue;
        }
        let mut fields = rest.split_whitespace().skip(11);
        let user: u64 = fields.next().and_then(|f| f.parse().ok()).unwrap_or(0);
        let system: u64 = fields.next().and_then(|f| f.parse().ok()).unwrap_or(0);
        let title = std::fs::read_to_string(entry.path().join("cmdline")).unwrap_or_default();
        cpu.insert(
            pid,
            (role_of(&title), Duration::from_millis((user + system) * 10)),
        );
    }
    Some(cpu)
}

/// What a server process does, from the title PostgreSQL gives it (`postgres: walwriter`,
/// `postgres: USER DB HOST(PORT) STATE` for a client's connection).
fn role_of(title: &str) -> String {
    const BACKGROUND: [&str; 8] = [
        "checkpointer",
        "background writer",
        "walwriter",
        "autovacuum launcher",
        "autovacuum worker",
        "logical replication launcher",
        "stats collector",
        "archiver",
    ];
    let Some(rest) = title.strip_prefix("postgres: ") else {
        return "postmaster".to_owned();
    };
    BACKGROUND
        .iter()
        .find(|b| rest.starts_with(*b))
        .map_or_else(|| "connections".to_owned(), |b| (*b).to_owned())
}

/// What each kind of server process spent between two [`server_cpu`] readings, costliest
/// first.
pub fn server_cpu_by_role(
    before: &std::collections::HashMap<u32, (String, Duration)>,
    after: &std::collections::HashMap<u32, (String, Duration)>,
) -> Vec<(String, Duration)> {
    let mut roles = std::collections::BTreeMap::<String, Duration>::new();
    for (pid, (role, t)) in after {
        let before = before.get(pid).map(|(_, t)| *t).unwrap_or_default();
        *roles.entry(role.clone()).or_default() += t.saturating_sub(before);
    }
    let mut roles: Vec<_> = roles.into_iter().collect();
    roles.sort_by_key(|(_, t)| std::cmp::Reverse(*t));
    roles
}

/// How each table's rows changed in the database at `url` since it was made: inserts,
/// updates, the updates PostgreSQL made without touching the indexes (HOT), deletes, and
/// autovacuum's visits. Read after the relays closed their connections, which flushes
/// their counts.
pub fn table_churn(url: &str) -> anyhow::Result<String> {
    query(
        url,
        "SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del, autovacuum_count \
         FROM pg_stat_user_tables WHERE n_tup_ins + n_tup_upd + n_tup_del > 0 \
         ORDER BY n_tup_upd + n_tup_ins DESC",
    )
}

/// How many deadlocks PostgreSQL found (and broke by failing one side) in the database at
/// `url` since it was made.
pub fn deadlocks(url: &str) -> anyhow::Result<String> {
    query(
        url,
        "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()",
    )
}

/// What the server's processes spent between two [`server_cpu`] readings (processes that
/// started in between count from zero; those that ended are lost, so read before
/// connections close).
pub fn server_cpu_since(
    before: &std::collections::HashMap<u32, (String, Duration)>,
    after: &std::collections::HashMap<u32, (String, Duration)>,
) -> Duration {
    server_cpu_by_role(before, after)
        .into_iter()
        .map(|(_, t)| t)
        .sum()
}
