//! A real coturn (Debian's `coturn` package) on loopback, in the `use-auth-secret` mode
//! the relay mints credentials for, and coturn's own test client to try credentials on it.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `turnserver` process on 127.0.0.1, killed on drop. It logs verbosely to a file, so a
/// test can see the allocations and the bytes relayed for each user.
pub struct Coturn {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: crate::TempDir,
}

/// A free UDP port on loopback (racy in principle, fine for tests on one machine).
pub fn free_udp_port() -> Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Coturn {
    /// Starts coturn sharing `secret` with the relay (its `static-auth-secret`), relaying
    /// between loopback addresses only, with no TLS, no CLI and no system files touched.
    pub fn start(secret: &str) -> Result<Self> {
        let port = free_udp_port()?;
        // Named by port: TempDir names are per process, and tests in one run in parallel.
        let dir = crate::TempDir::new(&format!("coturn-{port}"))?;
        // Relayed addresses come from a range of their own; coturn skips ports in use.
        let relay_low = 40_000 + (u32::from(port) * 7 % 20_000) as u16;
        let log = dir.path().join("turnserver.log");
        let child = Command::new("turnserver")
            .args([
                "-n", // no configuration file: everything is on this line
                "--listening-ip=127.0.0.1",
                "--relay-ip=127.0.0.1",
                &format!("--listening-port={port}"),
                &format!("--min-port={relay_low}"),
                &format!("--max-port={}", relay_low + 200),
                "--use-auth-secret",
                &format!("--static-auth-secret={secret}"),
                "--realm=starling.test",
                // Test only: the relay's host candidate is on loopback.
                "--allow-loopback-peers",
                // As the README's configuration: relay to the relay's address only.
                "--denied-peer-ip=0.0.0.0-255.255.255.255",
                "--allowed-peer-ip=127.0.0.1",
                "--no-cli",
                "--no-tls",
                "--no-dtls",
                "--no-tcp-relay",
                // Caps a new allocation's lifetime. Not a refresh's: once a client has
                // refreshed, coturn holds its allocation 10 minutes after the client is
                // killed (measured). Tests that read the usage coturn logs at a close
                // stop their volunteers as a person would, so the client deallocates.
                "--max-allocate-lifetime=15",
                "--log-file=stdout",
                "--simple-log",
                "--verbose",
            ])
            .arg(format!(
                "--pidfile={}",
                dir.path().join("turnserver.pid").display()
            ))
            .arg(format!("--userdb={}", dir.path().join("turndb").display()))
            .stdout(std::fs::File::create(&log)?)
            .stderr(Stdio::null())
            .spawn()
            .context("starting turnserver (scripts/setup.sh installs the coturn package)")?;
        let mut coturn = Self {
            child,
            port,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while !coturn.log_text().contains("Total General servers") {
            if let Some(status) = coturn.child.try_wait()? {
                bail!("turnserver exited ({status}): {}", coturn.log_text());
            }
            if Instant::now() > deadline {
                bail!("turnserver did not come up: {}", coturn.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(coturn)
    }

    /// The UDP port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its `turn:` URL (UDP).
    pub fn url(&self) -> String {
        format!("turn:127.0.0.1:{}?transport=udp", self.port)
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Where its log is.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Users that coturn granted an allocation (`ALLOCATE processed, success`).
    pub fn allocated_users(&self) -> Vec<String> {
        let mut users: Vec<String> = self
            .log_text()
            .lines()
            .filter(|line| line.contains("ALLOCATE processed, success"))
            .filter_map(|line| {
                let start = line.find("user <")? + "user <".len();
                let end = start + line[start..].find('>')?;
                Some(line[start..end].to_owned())
            })
            .collect();
        users.dedup();
        users
    }

    /// Whether an allocation with `username` and `credential` relays a few packets to a
    /// UDP echo peer on 127.0.0.1 through this server, tried with coturn's own client
    /// (`turnutils_uclient`), which exits 0 only if every step worked.
    pub fn try_credential(&self, username: &str, credential: &str) -> Result<bool> {
        self.try_relaying_to("127.0.0.1", username, credential)
    }

    /// [`Coturn::try_credential`] with the echo peer on `peer_ip` (a loopback address).
    pub fn try_relaying_to(&self, peer_ip: &str, username: &str, credential: &str) -> Result<bool> {
        let peer_port = free_udp_port()?;
        let mut peer = Command::new("turnutils_peer")
            .args(["-L", peer_ip, "-p", &peer_port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting turnutils_peer (coturn package)")?;
        let client = Command::new("turnutils_uclient")
            .args([
                "-p",
                &self.port.to_string(),
                "-u",
                username,
                "-w",
                credential,
            ])
            .args(["-n", "2", "-X", "-e", peer_ip, "-r", &peer_port.to_string()])
            .arg("127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting turnutils_uclient (coturn package)");
        let outcome = client.and_then(|child| wait_bounded(child, Duration::from_secs(20)));
        let _ = peer.kill();
        let _ = peer.wait();
        outcome
    }
}

/// Waits for `child` to exit within `limit` (killing it after): whether it succeeded.
fn wait_bounded(mut child: Child, limit: Duration) -> Result<bool> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status.success());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            // A client that never finishes did not get its packets relayed.
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
