//! Headless Chromium with WebGPU and WebRTC, driven through chromedriver's WebDriver API.

use crate::page::{ConsoleEntry, ConsoleLevel, Page};
use anyhow::{bail, Context, Result};
use base64::Engine as _;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Flags this machine kind needs (see ../shared/NOTES.md): no sandbox as root, no
/// background traffic to a network that is not there, WebGPU on, and WebRTC over loopback.
fn chromium_args(profile: &Path) -> Vec<String> {
    [
        "--headless=new",
        "--no-sandbox",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--enable-unsafe-webgpu",
        "--allow-loopback-in-peer-connection",
        "--disable-features=WebRtcHideLocalIpsWithMdns",
        "--window-size=1100,900",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect()
}

/// WebDriver's key code for Tab, for [`Browser::press`].
pub const TAB: &str = "\u{E004}";
/// WebDriver's key code for Enter.
pub const ENTER: &str = "\u{E007}";

/// A browser session; chromedriver and Chromium are stopped on drop.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    // chromedriver hands each console entry out once; kept for `Page::console`. None
    // unless started recording it.
    console: Option<std::sync::Mutex<Vec<ConsoleEntry>>>,
    _profile: crate::TempDir,
}

impl Browser {
    /// Starts chromedriver and a fresh headless Chromium profile.
    pub async fn start(name: &str) -> Result<Self> {
        Self::launch(name, false, &[]).await
    }

    /// Like [`Browser::start`], recording the page's console for [`Page::console`].
    /// Opt-in: with chromedriver's logging on, web_app's console test (which reads the
    /// job id right after Submit) failed twice in two runs, and passed twice without.
    pub async fn start_recording_console(name: &str) -> Result<Self> {
        Self::launch(name, true, &[]).await
    }

    /// [`Browser::start`] with more Chromium flags (e.g. `--host-resolver-rules=…`).
    pub async fn start_with(name: &str, extra_args: &[String]) -> Result<Self> {
        Self::launch(name, false, extra_args).await
    }

    async fn launch(name: &str, record_console: bool, extra_args: &[String]) -> Result<Self> {
        // reqwest is built without a TLS provider of its own; see starling_api::https.
        starling_api::https::install_ring();
        let port = crate::free_port()?;
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting chromedriver (scripts/setup.sh installs it)")?;
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while http.get(format!("{base}/status")).send().await.is_err() {
            if Instant::now() > deadline {
                bail!("chromedriver did not come up");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = crate::TempDir::new(&format!("chromium-{name}"))?;
        let mut caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": chromium_args(profile.path())
                    .into_iter()
                    .chain(extra_args.iter().cloned())
                    .collect::<Vec<_>>(),
            },
        }}});
        if record_console {
            caps["capabilities"]["alwaysMatch"]["goog:loggingPrefs"] = json!({ "browser": "ALL" });
        }
        let response: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await?
            .json()
            .await?;
        let session = response["value"]["sessionId"]
            .as_str()
            .with_context(|| format!("no WebDriver session: {response}"))?
            .to_owned();
        Ok(Self {
            driver,
            base,
            session,
            http,
            console: record_console.then(Default::default),
            _profile: profile,
        })
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Result<Value> {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let request = self.http.request(method.clone(), url);
        let request = if method == reqwest::Method::GET {
            request
        } else {
            request.json(&body)
        };
        let response: Value = request.send().await?.json().await?;
        if let Some(error) = response["value"]["error"].as_str() {
            bail!(
                "WebDriver {path}: {error}: {}",
                response["value"]["message"]
            );
        }
        Ok(response["value"].clone())
    }

    /// Opens a URL.
    pub async fn goto(&self, url: &str) -> Result<()> {
        self.call(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await?;
        Ok(())
    }

    async fn find(&self, test_id: &str) -> Result<String> {
        let found = self
            .call(
                reqwest::Method::POST,
                "/element",
                json!({"using": "css selector", "value": format!("[data-testid='{test_id}']")}),
            )
            .await?;
        Ok(found[ELEMENT_KEY]
            .as_str()
            .context("element id")?
            .to_owned())
    }

    /// The visible text of the element with `data-testid`, or None if it is absent.
    pub async fn text(&self, test_id: &str) -> Result<Option<String>> {
        let Ok(id) = self.find(test_id).await else {
            return Ok(None);
        };
        let text = self
            .call(
                reqwest::Method::GET,
                &format!("/element/{id}/text"),
                Value::Null,
            )
            .await?;
        Ok(text.as_str().map(str::to_owned))
    }

    /// Clicks the element with `data-testid`.
    pub async fn click(&self, test_id: &str) -> Result<()> {
        let id = self.find(test_id).await?;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            json!({}),
        )
        .await?;
        Ok(())
    }

    /// Clicks at viewport coordinates of the top-level page with the pointer, as a person
    /// would: trusted input events at that point, whatever lies there (unlike a script's
    /// `el.click()`, which a frame could tell apart).
    pub async fn click_at(&self, x: f64, y: f64) -> Result<()> {
        let (x, y) = (x.round() as i64, y.round() as i64);
        self.call(
            reqwest::Method::POST,
            "/actions",
            json!({"actions": [{
                "type": "pointer",
                "id": "mouse",
                "parameters": {"pointerType": "mouse"},
                "actions": [
                    {"type": "pointerMove", "origin": "viewport", "x": x, "y": y, "duration": 0},
                    {"type": "pointerDown", "button": 0},
                    {"type": "pointerUp", "button": 0},
                ],
            }]}),
        )
        .await?;
        self.call(reqwest::Method::DELETE, "/actions", json!({}))
            .await?;
        Ok(())
    }

    /// Waits until the element's text satisfies `pred`; returns that text.
    pub async fn wait_text(
        &self,
        test_id: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.text(test_id).await?;
            if let Some(t) = &text {
                if pred(t) {
                    return Ok(t.clone());
                }
            }
            if Instant::now() > deadline {
                let status = self.text("status").await.ok().flatten();
                bail!("[data-testid={test_id}] is {text:?} after {timeout:?} (status: {status:?})");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) in the page; its value.
    pub async fn execute(&self, script: &str, args: Value) -> Result<Value> {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            json!({ "script": script, "args": args }),
        )
        .await
    }

    /// Sets an input's or select's value as a user would: the value, then `input` and
    /// `change` events (what the page's handlers listen to).
    pub async fn set_value(&self, test_id: &str, value: &str) -> Result<()> {
        let found = self
            .execute(
                "const el = document.querySelector(`[data-testid='${arguments[0]}']`);
                 if (!el) return false;
                 el.focus();
                 el.value = arguments[1];
                 el.dispatchEvent(new Event('input', { bubbles: true }));
                 el.dispatchEvent(new Event('change', { bubbles: true }));
                 return true;",
                json!([test_id, value]),
            )
            .await?;
        if found != Value::Bool(true) {
            bail!("no [data-testid={test_id}] to set");
        }
        Ok(())
    }

    /// Chooses a file in the `<input type="file">` with `data-testid`.
    pub async fn upload(&self, test_id: &str, path: &Path) -> Result<()> {
        let id = self.find(test_id).await?;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            json!({ "text": path.display().to_string() }),
        )
        .await?;
        Ok(())
    }

    /// Opens a new tab and switches to it (the previous tab becomes hidden); returns the
    /// previous tab's handle for [`Browser::switch_to`].
    pub async fn open_tab(&self) -> Result<String> {
        let previous = self
            .call(reqwest::Method::GET, "/window", Value::Null)
            .await?;
        let opened = self
            .call(
                reqwest::Method::POST,
                "/window/new",
                json!({ "type": "tab" }),
            )
            .await?;
        self.switch_to(opened["handle"].as_str().context("new tab handle")?)
            .await?;
        Ok(previous.as_str().context("window handle")?.to_owned())
    }

    /// Switches to the tab with `handle`.
    pub async fn switch_to(&self, handle: &str) -> Result<()> {
        self.call(
            reqwest::Method::POST,
            "/window",
            json!({ "handle": handle }),
        )
        .await?;
        Ok(())
    }

    /// Switches into the iframe with `data-testid` (commands then act inside it).
    pub async fn enter_frame(&self, test_id: &str) -> Result<()> {
        let id = self.find(test_id).await?;
        self.call(
            reqwest::Method::POST,
            "/frame",
            json!({ "id": { ELEMENT_KEY: id } }),
        )
        .await?;
        Ok(())
    }

    /// Answers a permission as a person answering the browser's prompt would (WebDriver's
    /// Set Permission), for the current browsing context's origin: `storage-access`
    /// inside a frame, `granted` or `denied`.
    pub async fn set_permission(&self, name: &str, state: &str) -> Result<()> {
        self.call(
            reqwest::Method::POST,
            "/permissions",
            json!({ "descriptor": { "name": name }, "state": state }),
        )
        .await?;
        Ok(())
    }

    /// Switches back to the top-level page.
    pub async fn leave_frame(&self) -> Result<()> {
        self.call(reqwest::Method::POST, "/frame", json!({ "id": null }))
            .await?;
        Ok(())
    }

    /// Presses and releases keys as a keyboard would, in order, through WebDriver's
    /// input actions (so Tab moves focus and Enter activates what has it): each a
    /// character or a WebDriver key code such as [`TAB`] or [`ENTER`].
    pub async fn press(&self, keys: &[&str]) -> Result<()> {
        let actions: Vec<Value> = keys
            .iter()
            .flat_map(|k| {
                [
                    json!({"type": "keyDown", "value": k}),
                    json!({"type": "keyUp", "value": k}),
                ]
            })
            .collect();
        self.call(
            reqwest::Method::POST,
            "/actions",
            json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]}),
        )
        .await?;
        Ok(())
    }

    /// The `data-testid` of the element that has keyboard focus, if it has one.
    pub async fn focused_test_id(&self) -> Result<Option<String>> {
        let id = self
            .execute(
                "const el = document.activeElement; return el && el.getAttribute('data-testid');",
                json!([]),
            )
            .await?;
        Ok(id.as_str().map(str::to_owned))
    }

    /// Resizes the window (e.g. to a phone's width).
    pub async fn resize(&self, width: u32, height: u32) -> Result<()> {
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            json!({ "width": width, "height": height }),
        )
        .await?;
        Ok(())
    }

    /// Saves a PNG screenshot under e2e/artifacts/ (not committed) and returns its path.
    pub async fn screenshot(&self, name: &str) -> Result<std::path::PathBuf> {
        let b64 = self
            .call(reqwest::Method::GET, "/screenshot", Value::Null)
            .await?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().context("screenshot data")?)?;
        let dir = crate::workspace_root().join("e2e").join("artifacts");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png)?;
        Ok(path)
    }
}

impl Page for Browser {
    fn browser_name(&self) -> &str {
        "chromium"
    }

    async fn goto(&self, url: &str) -> Result<()> {
        Browser::goto(self, url).await
    }

    async fn click(&self, test_id: &str) -> Result<()> {
        Browser::click(self, test_id).await
    }

    async fn text(&self, test_id: &str) -> Result<Option<String>> {
        Browser::text(self, test_id).await
    }

    async fn console(&self) -> Result<Vec<ConsoleEntry>> {
        let Some(console) = &self.console else {
            bail!("this Chromium does not record its console: start it with Browser::start_recording_console");
        };
        // chromedriver's log endpoint (kept from the JSON wire protocol, with
        // `goog:loggingPrefs`) answers the entries since the last call.
        let fresh = self
            .call(
                reqwest::Method::POST,
                "/se/log",
                json!({ "type": "browser" }),
            )
            .await?;
        let mut console = console
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        console.extend(
            fresh
                .as_array()
                .into_iter()
                .flatten()
                .map(|entry| ConsoleEntry {
                    level: match entry["level"].as_str() {
                        Some("SEVERE") => ConsoleLevel::Error,
                        Some("WARNING") => ConsoleLevel::Warning,
                        _ => ConsoleLevel::Info,
                    },
                    source: entry["source"].as_str().unwrap_or_default().to_owned(),
                    text: entry["message"].as_str().unwrap_or_default().to_owned(),
                }),
        );
        Ok(console.clone())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ask chromedriver to quit Chromium (a blocking request: no async in Drop, and
        // no external tool), then stop chromedriver itself.
        let request = format!(
            "DELETE /session/{} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.session,
            self.base.trim_start_matches("http://")
        );
        if let Ok(mut stream) =
            std::net::TcpStream::connect(self.base.trim_start_matches("http://"))
        {
            use std::io::{Read, Write};
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            // chromedriver answers once Chromium has quit; the first bytes are enough.
            if stream.write_all(request.as_bytes()).is_ok() {
                let _ = stream.read(&mut [0u8; 512]);
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
