//! A volunteer on aiortc (Python), a third WebRTC stack beside Chromium's and webrtc-rs:
//! its offer names its one certificate under sha-256, sha-384 and sha-512 and no
//! loopback candidate. It connects to a real relay, proves its hello and is welcomed.
//! `tests/aiortc/volunteer.py` carries the bytes; this test speaks the protocol.
//! Skipped, saying so, where `scripts/setup.sh` has not installed aiortc.

mod common;

use common::loopback::{hello, relay};
use common::TempDir;
use starling_protocol::{encode_frames, ChannelBinding, Reassembler, ToVolunteer, WalletKey};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const PATIENCE: Duration = Duration::from_secs(20);

/// The Python of the venv `scripts/test.sh` installs aiortc into.
fn aiortc_python() -> Option<PathBuf> {
    let tools = std::env::var_os("STARLING_TOOLS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/starling/tools"))
        })?;
    let python = tools.join("aiortc/bin/python");
    python.exists().then_some(python)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aiortc_volunteer_proves_its_hello() -> anyhow::Result<()> {
    let Some(python) = aiortc_python() else {
        // The suite's command installs it and sets STARLING_REQUIRE_AIORTC, so there a
        // missing venv fails; a bare `cargo test` without it says what it skipped.
        anyhow::ensure!(
            std::env::var_os("STARLING_REQUIRE_AIORTC").is_none(),
            "no aiortc venv, and STARLING_REQUIRE_AIORTC is set (scripts/test.sh installs it)"
        );
        eprintln!("skipped: no aiortc venv (scripts/test.sh installs it)");
        return Ok(());
    };
    let dir = TempDir::new("aiortc");
    let (url, _scheduler) = relay(&dir, PATIENCE).await?;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/aiortc/volunteer.py");
    let mut child = tokio::process::Command::new(python)
        .arg(script)
        .arg(format!("{url}/api/v1/rtc/offer"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = child.stdin.take().expect("piped");
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut next_line = async || -> anyhow::Result<String> {
        tokio::time::timeout(PATIENCE, lines.next_line())
            .await??
            .ok_or_else(|| anyhow::anyhow!("the aiortc volunteer exited"))
    };

    let descriptions: serde_json::Value = serde_json::from_str(&next_line().await?)?;
    let offer = descriptions["offer"].as_str().unwrap_or_default();
    let answer = descriptions["answer"].as_str().unwrap_or_default();
    for algorithm in ["sha-256", "sha-384", "sha-512"] {
        assert!(
            offer.contains(&format!("a=fingerprint:{algorithm} ")),
            "{offer}"
        );
    }
    let binding = ChannelBinding::from_descriptions(offer, answer)?;
    let key = WalletKey::from_seed([5; 32]);
    let frames: Vec<String> = encode_frames(&hello(&key, &binding, "aiortc/1.16.0".into()))
        .iter()
        .map(|frame| frame.iter().map(|b| format!("{b:02x}")).collect())
        .collect();
    stdin
        .write_all(format!("{}\n", frames.join(" ")).as_bytes())
        .await?;
    stdin.flush().await?;

    let mut reassembler = Reassembler::new(1 << 20);
    let welcome = loop {
        let hex = next_line().await?;
        let frame = (0..hex.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(&hex[at..at + 2], 16))
            .collect::<Result<Vec<u8>, _>>()?;
        if let Some(message) = reassembler.push_message(&frame)? {
            break message;
        }
    };
    assert!(
        matches!(welcome, ToVolunteer::Welcome { .. }),
        "{welcome:?}"
    );
    drop(stdin);
    let _ = tokio::time::timeout(PATIENCE, child.wait()).await;
    Ok(())
}
