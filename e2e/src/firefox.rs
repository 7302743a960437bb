//! Headless Firefox ESR (Debian's `firefox-esr`), driven over WebDriver BiDi.
//!
//! Debian packages no geckodriver, and Firefox serves BiDi itself: started with
//! `--remote-debugging-port`, it listens for a WebSocket at `/session`. The client is
//! ours, on tokio-tungstenite, because what a test needs is a few commands of JSON
//! (`session.new`, `session.subscribe`, `browsingContext.getTree`, `.navigate`,
//! `.locateNodes`, `script.callFunction`, `input.performActions`) and one event
//! (`log.entryAdded`).
//! The Rust BiDi crates looked at (2026-12) were either built to talk through a
//! WebDriver server (geckodriver, which Debian lacks) or young one-person projects with a
//! large surface, and npm's puppeteer-core would put a Node process and a second
//! protocol between the test and the browser.

use crate::page::{ConsoleEntry, ConsoleLevel, Page};
use anyhow::{bail, Context, Result};
use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long Firefox may take to start and open its BiDi socket (a cold start on a busy
/// 2-core machine took about 5 s).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long one BiDi command may take: a navigation waits for the page's load.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Lines of Firefox's own output kept for error messages.
const OUTPUT_LINES: usize = 200;

/// Preferences for a fresh profile. The remote agent already applies its recommended
/// automation preferences (no first-run pages, updates, telemetry or background
/// traffic); these add what the volunteer page needs.
const USER_JS: &str = r#"// Written by the e2e harness.
// WebDriver BiDi only (the remote agent's CDP is gone from recent Firefox).
user_pref("remote.active-protocols", 1);
// WebRTC to a relay on loopback: offer loopback and plain host addresses (no mDNS names
// the relay could not resolve). Firefox 153 offers no 127.0.0.1 candidate even so: it
// reaches the relay from the host's own address, and on a machine with no interface
// but loopback it offers no candidate at all and cannot connect.
user_pref("media.peerconnection.ice.loopback", true);
user_pref("media.peerconnection.ice.obfuscate_host_addresses", false);
user_pref("media.peerconnection.ice.no_host", false);
// No first-run questions, and no experiments fetched from a network that is not there.
user_pref("browser.shell.checkDefaultBrowser", false);
user_pref("datareporting.policy.dataSubmissionEnabled", false);
user_pref("toolkit.telemetry.reportingpolicy.firstRun", false);
user_pref("app.normandy.enabled", false);
user_pref("messaging-system.rsexperimentloader.enabled", false);
"#;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;
/// Firefox's own output, its last lines.
type Output = Arc<Mutex<Vec<String>>>;

/// A headless Firefox with one tab; stopped (and its profile removed) on drop.
pub struct Firefox {
    // Declared first, dropped first: the process stops before its profile is removed.
    _process: Process,
    writer: tokio::sync::Mutex<SplitSink<Socket, Message>>,
    pending: Pending,
    next_id: AtomicU64,
    context: String,
    console: Arc<Mutex<Vec<ConsoleEntry>>>,
    output: Output,
    reader: tokio::task::JoinHandle<()>,
    version: String,
    _profile: crate::TempDir,
}

/// The Firefox process, stopped on drop (also when starting it fails half-way).
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        // SIGTERM first: Firefox then shuts its content processes down with it.
        let terminated = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        while terminated && Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Keeps Firefox's output (`pipe`) in `output`, the last [`OUTPUT_LINES`] lines, on a
/// thread of its own: the pipe must be drained for as long as Firefox runs, or a chatty
/// Firefox blocks on a full pipe. The BiDi URL, when printed, goes to `url`.
fn drain(
    pipe: impl std::io::Read + Send + 'static,
    output: Output,
    mut url: Option<oneshot::Sender<String>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if let Some(printed) = line.strip_prefix("WebDriver BiDi listening on ") {
                if let Some(tx) = url.take() {
                    let _ = tx.send(printed.trim().to_owned());
                }
            }
            let mut output = lock(&output);
            if output.len() == OUTPUT_LINES {
                output.remove(0);
            }
            output.push(line);
        }
    });
}

/// Starts `firefox-esr` on a fresh profile with BiDi on a port it picks itself; returns
/// the process, the WebSocket URL it will print and its output (kept growing).
fn launch(
    profile: &Path,
    extra_prefs: &str,
) -> Result<(Process, oneshot::Receiver<String>, Output)> {
    std::fs::write(profile.join("user.js"), format!("{USER_JS}{extra_prefs}\n"))?;
    let mut child = Command::new("firefox-esr")
        .args(["--headless", "--no-remote", "--remote-debugging-port=0"])
        .arg("--profile")
        .arg(profile)
        .arg("about:blank")
        .env("MOZ_CRASHREPORTER_DISABLE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting firefox-esr (scripts/setup.sh installs it)")?;
    let output = Output::default();
    let (url_tx, url_rx) = oneshot::channel();
    drain(
        child.stdout.take().context("firefox stdout")?,
        output.clone(),
        None,
    );
    drain(
        child.stderr.take().context("firefox stderr")?,
        output.clone(),
        Some(url_tx),
    );
    Ok((Process(child), url_rx, output))
}

/// A BiDi `log.entryAdded` event's entry as a console line.
fn console_entry(entry: &Value) -> ConsoleEntry {
    let level = match entry["level"].as_str() {
        Some("error") => ConsoleLevel::Error,
        Some("warn") => ConsoleLevel::Warning,
        _ => ConsoleLevel::Info,
    };
    let mut text = entry["text"].as_str().unwrap_or_default().to_owned();
    let mut source = entry["type"].as_str().unwrap_or_default().to_owned();
    match entry["stackTrace"]["callFrames"].get(0) {
        Some(frame) => text.push_str(&format!(
            " (at {}:{})",
            frame["url"].as_str().unwrap_or_default(),
            frame["lineNumber"]
        )),
        // Firefox reports some of its own events as script errors with no script behind
        // them ("WebRTC: ICE failed, add a STUN server…" when a relay dies): they are the
        // browser's, like Chromium's `network` entries, not the page's.
        None if source == "javascript" => source = "browser".to_owned(),
        None => {}
    }
    ConsoleEntry {
        level,
        source,
        text,
    }
}

impl Firefox {
    /// Starts a headless Firefox on a fresh profile, opens a BiDi session and starts
    /// recording its console.
    pub async fn start(name: &str) -> Result<Self> {
        Self::start_with(name, "").await
    }

    /// Like [`Firefox::start`], with more `user_pref(…);` lines for the profile's user.js
    /// (they override the harness's own).
    pub async fn start_with(name: &str, extra_prefs: &str) -> Result<Self> {
        let profile = crate::TempDir::new(&format!("firefox-{name}"))?;
        let (process, url_rx, output) = launch(profile.path(), extra_prefs)?;
        let url = match tokio::time::timeout(START_TIMEOUT, url_rx).await {
            Ok(Ok(url)) => url,
            _ => {
                drop(process);
                bail!(
                    "firefox-esr opened no WebDriver BiDi socket within {START_TIMEOUT:?}; its output:\n{}",
                    lock(&output).join("\n")
                );
            }
        };
        let (socket, _) = tokio_tungstenite::connect_async(format!("{url}/session"))
            .await
            .with_context(|| format!("connecting to Firefox's BiDi socket at {url}"))?;
        let (writer, mut read) = socket.split();
        let pending: Pending = Arc::default();
        let console: Arc<Mutex<Vec<ConsoleEntry>>> = Arc::default();
        let reader = {
            let (pending, console) = (pending.clone(), console.clone());
            tokio::spawn(async move {
                while let Some(Ok(message)) = read.next().await {
                    let Message::Text(text) = message else {
                        continue;
                    };
                    let Ok(value) = serde_json::from_str::<Value>(text.as_str()) else {
                        continue;
                    };
                    if let Some(id) = value["id"].as_u64() {
                        if let Some(reply) = lock(&pending).remove(&id) {
                            let _ = reply.send(value);
                        }
                    } else if value["method"] == "log.entryAdded" {
                        lock(&console).push(console_entry(&value["params"]));
                    }
                }
                // The socket is gone: every command still waiting fails now.
                lock(&pending).clear();
            })
        };
        let mut firefox = Self {
            _process: process,
            writer: tokio::sync::Mutex::new(writer),
            pending,
            next_id: AtomicU64::new(1),
            context: String::new(),
            console,
            output,
            reader,
            version: String::new(),
            _profile: profile,
        };
        let session = firefox
            .command("session.new", json!({ "capabilities": {} }))
            .await?;
        firefox.version = session["capabilities"]["browserVersion"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        firefox
            .command("session.subscribe", json!({ "events": ["log.entryAdded"] }))
            .await?;
        let tree = firefox
            .command("browsingContext.getTree", json!({ "maxDepth": 0 }))
            .await?;
        firefox.context = tree["contexts"][0]["context"]
            .as_str()
            .with_context(|| format!("Firefox has no tab: {tree}"))?
            .to_owned();
        Ok(firefox)
    }

    /// The browser's version, as its BiDi session reported it (e.g. `153.8.0`).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The last lines Firefox printed (its own errors, not the page's console).
    pub fn output(&self) -> String {
        lock(&self.output).join("\n")
    }

    /// Sends one BiDi command and waits for its result.
    async fn command(&self, method: &str, params: Value) -> Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply_tx, reply_rx) = oneshot::channel();
        lock(&self.pending).insert(id, reply_tx);
        let request = json!({ "id": id, "method": method, "params": params }).to_string();
        self.writer
            .lock()
            .await
            .send(Message::text(request))
            .await
            .with_context(|| format!("sending {method} to Firefox"))?;
        let reply = match tokio::time::timeout(COMMAND_TIMEOUT, reply_rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => bail!("Firefox closed its BiDi connection during {method}"),
            Err(_) => {
                lock(&self.pending).remove(&id);
                bail!("Firefox did not answer {method} within {COMMAND_TIMEOUT:?}");
            }
        };
        if reply["type"] == "success" {
            return Ok(reply["result"].clone());
        }
        bail!(
            "BiDi {method}: {}: {}",
            reply["error"].as_str().unwrap_or("?"),
            reply["message"].as_str().unwrap_or_default()
        )
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) in the page and returns
    /// its value as JSON (what `JSON.stringify` makes of it; `undefined` is null). The
    /// arguments and the value travel as JSON text, so no BiDi value encoding is needed.
    pub async fn execute(&self, script: &str, args: Value) -> Result<Value> {
        let declaration =
            format!("function (json) {{ return JSON.stringify((function () {{ {script} }}).apply(this, JSON.parse(json))); }}");
        let result = self
            .command(
                "script.callFunction",
                json!({
                    "functionDeclaration": declaration,
                    "arguments": [{ "type": "string", "value": args.to_string() }],
                    "target": { "context": self.context },
                    "awaitPromise": true,
                }),
            )
            .await?;
        match result["type"].as_str() {
            Some("success") => match result["result"]["value"].as_str() {
                Some(json) => Ok(serde_json::from_str(json)?),
                None => Ok(Value::Null),
            },
            _ => bail!(
                "script threw: {}",
                result["exceptionDetails"]["text"]
                    .as_str()
                    .unwrap_or("(no message)")
            ),
        }
    }

    /// The element with `data-testid` as a BiDi shared reference, scrolled into view.
    async fn find(&self, test_id: &str) -> Result<Value> {
        let found = self
            .command(
                "browsingContext.locateNodes",
                json!({
                    "context": self.context,
                    "locator": { "type": "css", "value": format!("[data-testid='{test_id}']") },
                    "maxNodeCount": 1,
                }),
            )
            .await?;
        let shared_id = found["nodes"][0]["sharedId"]
            .as_str()
            .with_context(|| format!("no [data-testid={test_id}] on the page"))?;
        self.command(
            "script.callFunction",
            json!({
                "functionDeclaration": "function (el) { el.scrollIntoView({ block: 'center' }); }",
                "arguments": [{ "sharedId": shared_id }],
                "target": { "context": self.context },
                "awaitPromise": false,
            }),
        )
        .await?;
        Ok(json!({ "sharedId": shared_id }))
    }
}

impl Page for Firefox {
    fn browser_name(&self) -> &str {
        "firefox"
    }

    async fn goto(&self, url: &str) -> Result<()> {
        self.command(
            "browsingContext.navigate",
            json!({ "context": self.context, "url": url, "wait": "complete" }),
        )
        .await?;
        Ok(())
    }

    async fn click(&self, test_id: &str) -> Result<()> {
        let element = self.find(test_id).await?;
        // A mouse moved onto the element's centre, pressed and released: the page gets
        // the real pointer, mouse and click events, as from a user.
        self.command(
            "input.performActions",
            json!({
                "context": self.context,
                "actions": [{
                    "type": "pointer",
                    "id": "mouse",
                    "parameters": { "pointerType": "mouse" },
                    "actions": [
                        { "type": "pointerMove", "x": 0, "y": 0,
                          "origin": { "type": "element", "element": element } },
                        { "type": "pointerDown", "button": 0 },
                        { "type": "pointerUp", "button": 0 },
                    ],
                }],
            }),
        )
        .await?;
        Ok(())
    }

    async fn text(&self, test_id: &str) -> Result<Option<String>> {
        let text = self
            .execute(
                "const el = document.querySelector(`[data-testid='${arguments[0]}']`);
                 return el ? el.innerText : null;",
                json!([test_id]),
            )
            .await?;
        Ok(text.as_str().map(str::to_owned))
    }

    async fn console(&self) -> Result<Vec<ConsoleEntry>> {
        Ok(lock(&self.console).clone())
    }
}

impl Drop for Firefox {
    fn drop(&mut self) {
        self.reader.abort();
    }
}
