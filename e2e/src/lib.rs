//! Harness for end-to-end tests: real relay and volunteer processes, a real headless
//! Chromium driven over WebDriver, and REST calls like a submitter's.

pub mod browser;

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use rand::{Rng, SeedableRng};
use starling_kernels::matmul::{outputs_agree, Matmul, MatmulUnit};
use starling_kernels::KernelSpec;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e/ sits in the workspace root")
        .to_path_buf()
}

/// A binary built by `cargo build --workspace --bins` (scripts/test.sh does it first).
pub fn binary(name: &str) -> Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let path = target.join("debug").join(name);
    if !path.exists() {
        bail!(
            "{} is missing: run `cargo build --workspace --bins` first",
            path.display()
        );
    }
    Ok(path)
}

/// A free TCP port on loopback (racy in principle, fine for tests on one machine).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A relay process, killed on drop.
pub struct Relay {
    child: Option<Child>,
    port: u16,
    data_dir: PathBuf,
    unit_mflops: u64,
}

impl Relay {
    /// Starts a relay on a fresh data directory and port.
    pub fn start(data_dir: &Path, unit_mflops: u64) -> Result<Self> {
        let mut relay = Self {
            child: None,
            port: free_port()?,
            data_dir: data_dir.to_path_buf(),
            unit_mflops,
        };
        relay.spawn()?;
        Ok(relay)
    }

    fn spawn(&mut self) -> Result<()> {
        let root = workspace_root();
        let mut child = Command::new(binary("relay-server")?)
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--app-dir")
            .arg(root.join("dist"))
            .arg("--public-dir")
            .arg(root.join("public"))
            .args(["--unit-mflops", &self.unit_mflops.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting relay-server")?;
        let stdout = child.stdout.take().context("relay stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        if !line.contains("listening on http://") {
            let _ = child.kill();
            bail!("relay did not start: {line:?}");
        }
        self.child = Some(child);
        Ok(())
    }

    /// The relay's base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `kill -9` the relay, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the relay again on the same port and data directory.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A native volunteer process, killed on drop.
pub struct Volunteer(Child);

impl Volunteer {
    /// Starts `volunteer --relay URL` (GPU through wgpu; lavapipe here).
    pub fn start(relay_url: &str) -> Result<Self> {
        let child = Command::new(binary("volunteer")?)
            .args(["--relay", relay_url])
            .env(
                "RUST_LOG",
                "warn,webrtc=error,rtc=error,rtc_ice=error,rtc_dtls=error",
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting volunteer")?;
        Ok(Self(child))
    }
}

impl Drop for Volunteer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A matmul job with its inputs and the CPU reference result.
pub struct MatmulJob {
    /// Rows of A.
    pub m: u32,
    /// Inner dimension.
    pub k: u32,
    /// Columns of B.
    pub n: u32,
    /// The REST request body.
    pub body: serde_json::Value,
    /// C computed on the CPU reference.
    pub expected: Vec<u8>,
}

impl MatmulJob {
    /// Random inputs in [-1, 1) from `seed`.
    pub fn random(m: u32, k: u32, n: u32, seed: u64) -> Self {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut gen = |count: u32| -> Vec<u8> {
            (0..count)
                .flat_map(|_| rng.random_range(-1.0f32..1.0).to_le_bytes())
                .collect()
        };
        let a = gen(m * k);
        let b = gen(k * n);
        let whole = MatmulUnit {
            row_start: 0,
            rows: m,
            k,
            n,
        };
        let expected = Matmul::run_cpu(&whole, &[a.clone(), b.clone()].concat())
            .expect("a valid reference job");
        let b64 = base64::engine::general_purpose::STANDARD;
        let body = serde_json::json!({
            "kernel": "matmul",
            "params": {"m": m, "k": k, "n": n},
            "input": {"a": b64.encode(&a), "b": b64.encode(&b)},
        });
        Self {
            m,
            k,
            n,
            body,
            expected,
        }
    }

    /// Checks a downloaded result against the CPU reference.
    pub fn check(&self, result: &[u8]) -> Result<()> {
        if result.len() != self.expected.len() {
            bail!(
                "result has {} bytes, expected {}",
                result.len(),
                self.expected.len()
            );
        }
        if !outputs_agree(self.k, result, &self.expected) {
            bail!("result differs from the CPU reference");
        }
        Ok(())
    }
}

/// A submitter's REST client.
pub struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    /// A client for the relay at `base`.
    pub fn new(base: &str) -> Self {
        Self {
            base: base.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    /// `POST /api/v1/jobs`; returns the job id.
    pub async fn submit(&self, body: &serde_json::Value) -> Result<String> {
        let response = self
            .http
            .post(format!("{}/api/v1/jobs", self.base))
            .json(body)
            .send()
            .await?;
        let status = response.status();
        let json: serde_json::Value = response.json().await?;
        if status.as_u16() != 201 {
            bail!("submit answered {status}: {json}");
        }
        Ok(json["id"].as_str().context("id in the answer")?.to_owned())
    }

    async fn get_json(&self, path: &str) -> Result<serde_json::Value> {
        Ok(self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// `GET /api/v1/jobs/{id}`.
    pub async fn job(&self, id: &str) -> Result<serde_json::Value> {
        self.get_json(&format!("/api/v1/jobs/{id}")).await
    }

    /// `GET /api/v1/stats`.
    pub async fn stats(&self) -> Result<serde_json::Value> {
        self.get_json("/api/v1/stats").await
    }

    /// Polls until the job is done (error if it fails or `timeout` passes).
    pub async fn wait_done(&self, id: &str, timeout: Duration) -> Result<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            // The relay may be restarting; a refused connection is not a failure.
            if let Ok(job) = self.job(id).await {
                match job["state"].as_str() {
                    Some("done") => return Ok(job),
                    Some("failed") | Some("cancelled") => bail!("job ended: {job}"),
                    _ => {}
                }
                if Instant::now() > deadline {
                    bail!("job not done after {timeout:?}: {job}");
                }
            } else if Instant::now() > deadline {
                bail!("relay unreachable after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `GET /api/v1/jobs/{id}/result` with its status.
    pub async fn result(&self, id: &str) -> Result<(u16, Vec<u8>)> {
        let response = self
            .http
            .get(format!("{}/api/v1/jobs/{id}/result", self.base))
            .send()
            .await?;
        Ok((response.status().as_u16(), response.bytes().await?.to_vec()))
    }

    /// The raw client, for error-path tests.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The relay's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }
}

/// A fresh temporary directory under target/, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates one named after the test.
    pub fn new(name: &str) -> Result<Self> {
        let dir = workspace_root()
            .join("target")
            .join("e2e-tmp")
            .join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
