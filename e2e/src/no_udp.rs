//! A network that drops UDP, for tests of what still connects without it: the test runs
//! itself again inside a fresh network namespace (`unshare --net`: loopback up, an
//! nftables table dropping every UDP packet both ways), so the relay, chromedriver,
//! Chromium and the test's own clients all live there. Chromium's IP-handling flags do
//! not stop loopback UDP, so the kernel does it. Making the namespace needs root
//! (CAP_SYS_ADMIN and CAP_NET_ADMIN); without it the test fails and says so.

use anyhow::{bail, ensure, Result};
use std::process::Command;
use std::time::Duration;

/// Set in the copy of a test that runs inside the namespace.
const INSIDE: &str = "STARLING_E2E_UDP_DROPPED";

/// Run by `sh -c` inside the new namespace: loopback up, UDP dropped both ways, then the
/// test binary again (`$0`), for the one test (`$1`).
const SETUP: &str = "set -e
ip link set lo up
nft add table inet starling_no_udp
nft add chain inet starling_no_udp in '{ type filter hook input priority 0; }'
nft add rule inet starling_no_udp in meta l4proto udp drop
nft add chain inet starling_no_udp out '{ type filter hook output priority 0; }'
nft add rule inet starling_no_udp out meta l4proto udp drop
exec \"$0\" --exact \"$1\" --nocapture --test-threads=1";

/// Whether this is the copy of the test inside the namespace.
pub fn inside() -> bool {
    std::env::var_os(INSIDE).is_some()
}

/// Runs the test named `test` of this binary again inside a namespace that drops UDP,
/// and fails with it.
pub fn run_inside(test: &str) -> Result<()> {
    match Command::new("unshare").args(["--net", "true"]).output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => bail!(
            "this test needs a network namespace with UDP dropped, and `unshare --net` \
             failed (run the tests as root, or with CAP_SYS_ADMIN): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => bail!("cannot run unshare (util-linux): {e}"),
    }
    ensure!(
        Command::new("nft").arg("--version").output().is_ok(),
        "this test drops UDP with nft: scripts/setup.sh installs Debian's nftables"
    );
    let status = Command::new("unshare")
        .args(["--net", "sh", "-c", SETUP])
        .arg(std::env::current_exe()?)
        .arg(test)
        .env(INSIDE, "1")
        .status()?;
    ensure!(
        status.success(),
        "the test inside the UDP-dropping namespace failed ({status}); its output is above"
    );
    Ok(())
}

/// Checks that the namespace really drops UDP on loopback: a datagram sent to a bound
/// socket never arrives.
pub fn ensure_dropped() -> Result<()> {
    let receiver = std::net::UdpSocket::bind("127.0.0.1:0")?;
    receiver.set_read_timeout(Some(Duration::from_millis(300)))?;
    let sender = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let _ = sender.send_to(b"probe", receiver.local_addr()?);
    let mut buf = [0u8; 16];
    ensure!(
        receiver.recv_from(&mut buf).is_err(),
        "UDP still flows in the namespace: the nftables rule did not take"
    );
    Ok(())
}
