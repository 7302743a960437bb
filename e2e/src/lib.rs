//! Harness for end-to-end tests: real relay and volunteer processes, a real headless
//! Chromium driven over WebDriver (and Firefox ESR over WebDriver BiDi, both behind
//! [`page::Page`]), and REST calls like a submitter's.

pub mod axe;
pub mod browser;
pub mod examples;
pub mod firefox;
pub mod no_udp;
pub mod page;
pub mod turn;

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use rand::{Rng, SeedableRng};
use starling_api::{Job, JobState, Stats, SubmitJob, UnitSummary, Wallet};
use starling_kernels::matmul::{outputs_agree, Matmul, MatmulUnit};
use starling_kernels::{Catalog, NamedInputs, UnitSpec};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether a volunteer page's status line says it is connected: computing ("Working: …")
/// or with nothing to compute ("Connected, waiting for work.").
pub fn connected(status: &str) -> bool {
    status.starts_with("Working") || status.starts_with("Connected")
}

/// Whether a page's figure of credits shows `credits`: the page rounds to three
/// significant digits below 1 credit and to cents above, so within half a percent (and
/// half a cent).
pub fn shows_credits(figure: &str, credits: f64) -> bool {
    let tolerance = if credits >= 1.0 {
        0.005
    } else {
        credits * 0.005 + 5e-7
    };
    figure
        .parse::<f64>()
        .is_ok_and(|shown| (shown - credits).abs() <= tolerance)
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e/ sits in the workspace root")
        .to_path_buf()
}

/// A binary built by `cargo build --workspace --bins` (scripts/test.sh does it first),
/// or with `STARLING_E2E_PROFILE=release` by `cargo build --release` (the benches, which
/// measure the relay as it is deployed).
pub fn binary(name: &str) -> Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let release = std::env::var("STARLING_E2E_PROFILE").is_ok_and(|p| p == "release");
    let (profile, build) = if release {
        ("release", "cargo build --release --bins")
    } else {
        ("debug", "cargo build --workspace --bins")
    };
    let path = target.join(profile).join(name);
    if !path.exists() {
        bail!("{} is missing: run `{build}` first", path.display());
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
    dev_key: Option<String>,
    /// `https` when started with TLS flags.
    scheme: String,
    /// What `--tls-self-signed` printed.
    self_signed: Option<SelfSigned>,
    port: u16,
    data_dir: PathBuf,
    unit_mflops: u64,
    extra: Vec<String>,
}

impl Relay {
    /// Starts a relay on a fresh data directory and port.
    pub fn start(data_dir: &Path, unit_mflops: u64) -> Result<Self> {
        Self::start_with(data_dir, unit_mflops, &[])
    }

    /// Starts a relay with extra command-line arguments (e.g. `--lease-secs 2`).
    pub fn start_with(data_dir: &Path, unit_mflops: u64, extra: &[&str]) -> Result<Self> {
        // reqwest is built without a TLS provider of its own; see starling_api::https.
        starling_api::https::install_ring();
        let mut relay = Self {
            child: None,
            dev_key: None,
            scheme: "http".into(),
            self_signed: None,
            port: free_port()?,
            data_dir: data_dir.to_path_buf(),
            unit_mflops,
            extra: extra.iter().map(|s| s.to_string()).collect(),
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
            .args(&self.extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting relay-server")?;
        let stdout = child.stdout.take().context("relay stdout")?;
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let Some((_, url)) = line.trim().split_once("listening on ") else {
            let _ = child.kill();
            bail!("relay did not start: {line:?}");
        };
        self.scheme = url.split("://").next().unwrap_or("http").to_owned();
        // The second line carries the development API key.
        let mut key_line = String::new();
        stdout.read_line(&mut key_line)?;
        self.dev_key = key_line
            .trim()
            .strip_prefix("development API key: ")
            .map(str::to_owned);
        if self.extra.iter().any(|arg| arg == "--tls-self-signed") {
            self.self_signed = Some(SelfSigned::read(&mut stdout)?);
        }
        self.child = Some(child);
        Ok(())
    }

    /// The development API key the relay printed (it holds 1,000,000 credits).
    pub fn dev_key(&self) -> Option<&str> {
        self.dev_key.as_deref()
    }

    /// A REST client that submits with the development key.
    pub fn api(&self) -> Api {
        match &self.dev_key {
            Some(key) => Api::with_key(&self.url(), key),
            None => Api::new(&self.url()),
        }
    }

    /// A new submitter account holding `balance` credits (a decimal), made with
    /// `relay-server keys create` on this relay's data directory; returns its API key.
    pub fn create_key(&self, balance: &str) -> Result<String> {
        let created = Command::new(binary("relay-server")?)
            .args(["keys", "create", "--balance", balance, "--data-dir"])
            .arg(&self.data_dir)
            .output()?;
        if !created.status.success() {
            bail!("keys create failed: {created:?}");
        }
        Ok(String::from_utf8(created.stdout)?.trim().to_owned())
    }

    /// The relay's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The relay's base URL.
    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.port)
    }

    /// The relay's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The certificate made by `--tls-self-signed`, as the relay printed it.
    pub fn self_signed(&self) -> Option<&SelfSigned> {
        self.self_signed.as_ref()
    }

    /// `kill -9` the relay, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, as a service manager stops the relay; waits up to `within` for it to
    /// exit (then SIGKILL) and returns how long it took and how it exited.
    pub fn terminate(&mut self, within: Duration) -> Result<(Duration, std::process::ExitStatus)> {
        let mut child = self.child.take().context("the relay is not running")?;
        let sent = Instant::now();
        let kill = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .context("running kill")?;
        if !kill.success() {
            bail!("kill -TERM failed: {kill}");
        }
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok((sent.elapsed(), status));
            }
            if sent.elapsed() > within {
                let _ = child.kill();
                let status = child.wait()?;
                bail!("the relay did not exit within {within:?} of SIGTERM ({status})");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the relay again on the same port and data directory (after
    /// [`Relay::terminate`], or killing it first).
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

/// A certificate a relay made with `--tls-self-signed`: what a client is told to trust.
#[derive(Debug, Clone)]
pub struct SelfSigned {
    /// The PEM file (`--ca-cert`).
    pub cert_path: PathBuf,
    /// Base64 SHA-256 of its public key (Chromium's
    /// `--ignore-certificate-errors-spki-list`).
    pub spki_sha256: String,
}

impl SelfSigned {
    /// Reads the lines the relay prints after its key, up to the SPKI hash.
    fn read(stdout: &mut impl BufRead) -> Result<Self> {
        let mut cert_path = None;
        for _ in 0..8 {
            let mut line = String::new();
            if stdout.read_line(&mut line)? == 0 {
                break;
            }
            let line = line.trim();
            if let Some(path) = line.strip_prefix("self-signed certificate: ") {
                cert_path = Some(PathBuf::from(path));
            }
            if let Some(spki) = line.strip_prefix("spki sha256 (base64): ") {
                return Ok(Self {
                    cert_path: cert_path.context("no certificate path before the SPKI hash")?,
                    spki_sha256: spki.to_owned(),
                });
            }
        }
        bail!("the relay printed no self-signed certificate")
    }
}

/// A native volunteer process, killed on drop.
pub struct Volunteer(Child);

impl Volunteer {
    /// Starts `volunteer --relay URL` (GPU through wgpu; lavapipe here).
    pub fn start(relay_url: &str) -> Result<Self> {
        Self::start_with(relay_url, &[])
    }

    /// Starts a volunteer with extra arguments (e.g. `--fault drop --fault-rate 0.5`).
    pub fn start_with(relay_url: &str, extra: &[&str]) -> Result<Self> {
        Self::spawn(relay_url, extra, Stdio::inherit())
    }

    /// Like [`Volunteer::start_with`], with its log (warnings and up) written to `log`.
    pub fn start_logged(relay_url: &str, extra: &[&str], log: &Path) -> Result<Self> {
        let file = std::fs::File::create(log).context("creating the volunteer log")?;
        Self::spawn(relay_url, extra, Stdio::from(file))
    }

    /// Stops it as Ctrl-C would (SIGINT), so it closes its connection as a person
    /// quitting it does, and waits up to `limit` for it to exit.
    pub fn interrupt(&mut self, limit: std::time::Duration) -> Result<std::process::ExitStatus> {
        let status = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status()
            .context("running kill -INT")?;
        anyhow::ensure!(status.success(), "kill -INT failed: {status}");
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.0.try_wait()? {
                return Ok(status);
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "the volunteer did not exit within {limit:?} of SIGINT"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    fn spawn(relay_url: &str, extra: &[&str], stderr: Stdio) -> Result<Self> {
        let child = Command::new(binary("volunteer")?)
            .args(["--relay", relay_url])
            .args(extra)
            .env(
                "RUST_LOG",
                "warn,receipts=info,transport=info,webrtc=error,rtc=error,rtc_ice=error,rtc_dtls=error",
            )
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(stderr)
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
    pub body: SubmitJob,
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
        let body = SubmitJob {
            input: [("a", &a), ("b", &b)]
                .into_iter()
                .map(|(name, bytes)| (name.to_owned(), b64.encode(bytes)))
                .collect(),
            ..SubmitJob::new("matmul", serde_json::json!({"m": m, "k": k, "n": n}))
        };
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

/// A `render` job and its image, rendered whole on the CPU reference.
pub struct RenderJob {
    /// The REST request body.
    pub body: SubmitJob,
    /// The reference image: width, height and 8-bit RGB pixels.
    pub expected: Image,
}

/// A decoded 8-bit RGB image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Row-major RGB bytes.
    pub rgb: Vec<u8>,
}

impl Image {
    /// Decodes a PNG (any bit depth or colour type the decoder normalises to 8-bit RGB).
    pub fn from_png(bytes: &[u8]) -> Result<Self> {
        let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
        let mut reader = decoder.read_info().context("not a PNG")?;
        let mut buf = vec![0; reader.output_buffer_size().context("PNG too large")?];
        let frame = reader.next_frame(&mut buf).context("PNG frame")?;
        if frame.color_type != png::ColorType::Rgb || frame.bit_depth != png::BitDepth::Eight {
            bail!(
                "expected 8-bit RGB, got {:?} {:?}",
                frame.color_type,
                frame.bit_depth
            );
        }
        buf.truncate(frame.buffer_size());
        Ok(Self {
            width: frame.width,
            height: frame.height,
            rgb: buf,
        })
    }
}

impl RenderJob {
    /// A job for the built-in scene, with its CPU reference image.
    pub fn new(width: u32, height: u32, samples_per_pixel: u32, seed: u32) -> Result<Self> {
        let params = serde_json::json!({
            "width": width,
            "height": height,
            "samples_per_pixel": samples_per_pixel,
            "seed": seed,
        });
        let png = cpu_reference("render", &params, &NamedInputs::new())?;
        Ok(Self {
            body: SubmitJob::new("render", params),
            expected: Image::from_png(&png)?,
        })
    }

    /// Checks a downloaded PNG against the reference: same size, at least 99% of pixels
    /// within 2 levels per channel (GPU and CPU round differently, and a ray that grazes
    /// an edge may take another path), and a mean difference under one level.
    pub fn check(&self, png: &[u8]) -> Result<()> {
        let got = Image::from_png(png)?;
        if (got.width, got.height) != (self.expected.width, self.expected.height) {
            bail!(
                "image is {}x{}, expected {}x{}",
                got.width,
                got.height,
                self.expected.width,
                self.expected.height
            );
        }
        let pixels = got.rgb.len() / 3;
        let mut off = 0usize;
        let mut total = 0u64;
        for (a, b) in got
            .rgb
            .chunks_exact(3)
            .zip(self.expected.rgb.chunks_exact(3))
        {
            let worst = a
                .iter()
                .zip(b)
                .map(|(x, y)| x.abs_diff(*y))
                .max()
                .unwrap_or(0);
            total += a
                .iter()
                .zip(b)
                .map(|(x, y)| u64::from(x.abs_diff(*y)))
                .sum::<u64>();
            if worst > 2 {
                off += 1;
            }
        }
        let mean = total as f64 / got.rgb.len() as f64;
        if off * 100 > pixels || mean > 1.0 {
            bail!(
                "{off} of {pixels} pixels differ by more than 2 levels; mean difference {mean:.3}"
            );
        }
        Ok(())
    }
}

/// A job of any kernel with its CPU reference result, checked with the kernel's own
/// replica comparison applied to the whole job as one unit (`whole_unit`), or exactly
/// when `whole_unit` is `None`.
pub struct KernelJob {
    /// Kernel id.
    pub kernel: &'static str,
    /// The REST request body.
    pub body: SubmitJob,
    /// The job result computed on the CPU reference.
    pub expected: Vec<u8>,
    /// A unit covering the whole job, as JSON, for the kernel's comparison.
    pub whole_unit: Option<String>,
}

impl KernelJob {
    /// A random `mlp` job: weights scaled like a trained network's, softmax output.
    pub fn mlp(layers: &[u32], batch: u32, seed: u64) -> Result<Self> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let weights: u32 = layers.windows(2).map(|w| w[0] * w[1] + w[1]).sum();
        let scale = 1.0 / (layers[0] as f32).sqrt();
        let mut gen = |count: u32, scale: f32| -> Vec<u8> {
            (0..count)
                .flat_map(|_| (rng.random_range(-1.0f32..1.0) * scale).to_le_bytes())
                .collect()
        };
        let mut inputs = NamedInputs::new();
        inputs.insert("weights".into(), gen(weights, scale));
        inputs.insert("inputs".into(), gen(batch * layers[0], 1.0));
        let params = serde_json::json!({"layers": layers, "batch": batch, "output": "softmax"});
        let expected = cpu_reference("mlp", &params, &inputs)?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let input = inputs
            .iter()
            .map(|(k, v)| (k.clone(), b64.encode(v)))
            .collect();
        Ok(Self {
            kernel: "mlp",
            body: SubmitJob {
                input,
                ..SubmitJob::new("mlp", params)
            },
            expected,
            whole_unit: Some(
                serde_json::json!({"row_start": 0, "rows": batch, "layers": layers, "output": "softmax"})
                    .to_string(),
            ),
        })
    }

    /// A `montecarlo` job estimating pi; hit counts must match exactly.
    pub fn montecarlo(samples: u64, seed: u64) -> Result<Self> {
        let params = serde_json::json!({"samples": samples, "seed": seed});
        Ok(Self {
            kernel: "montecarlo",
            expected: cpu_reference("montecarlo", &params, &NamedInputs::new())?,
            body: SubmitJob::new("montecarlo", params),
            whole_unit: None,
        })
    }

    /// Checks a downloaded result against the CPU reference.
    pub fn check(&self, result: &[u8]) -> Result<()> {
        let agree = match &self.whole_unit {
            Some(unit) => {
                Catalog::builtin()
                    .get(self.kernel)?
                    .outputs_agree(unit, result, &self.expected)?
            }
            None => result == self.expected,
        };
        if !agree {
            bail!(
                "{} result differs from the CPU reference ({} bytes, expected {})",
                self.kernel,
                result.len(),
                self.expected.len()
            );
        }
        Ok(())
    }
}

/// A whole job computed on the CPU reference, split and merged the way the relay does.
pub fn cpu_reference(
    kernel: &str,
    params: &serde_json::Value,
    inputs: &NamedInputs,
) -> Result<Vec<u8>> {
    let catalog = Catalog::builtin();
    let kernel = catalog.get(kernel)?;
    let plan = kernel.plan(params, inputs, 1 << 30)?;
    let outputs = plan
        .units
        .iter()
        .map(|unit| {
            let input = kernel.unit_input(params, &plan.input, unit)?;
            kernel.run_cpu(unit, &input)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(kernel.merge(params, &outputs)?)
}

/// Runs `relay-server audit` on `data_dir` (the relay stopped or not): its summary, or an
/// error with what it printed when the ledger does not verify.
pub fn audit(data_dir: &Path) -> Result<String> {
    let audit = Command::new(binary("relay-server")?)
        .args(["audit", "--data-dir"])
        .arg(data_dir)
        .output()?;
    if !audit.status.success() {
        bail!(
            "the ledger audit failed: {}",
            String::from_utf8_lossy(&audit.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&audit.stdout).into_owned())
}

/// How long a client keeps an idle connection for reuse: under the relay's header-read
/// timeout (10 s), which also closes idle kept-alive connections, so a request is never
/// sent on a connection the relay is closing.
const IDLE_CONNECTION: Duration = Duration::from_secs(5);

/// A submitter's REST client: typed calls through `starling_api::Client`, and the raw
/// HTTP client (with the same key) for tests of the wire itself.
pub struct Api {
    client: starling_api::Client,
}

impl Api {
    /// A client for the relay at `base` that sends `Authorization: Bearer key` (falls
    /// back to no key should the key not be a valid header value).
    pub fn with_key(base: &str, key: &str) -> Self {
        starling_api::https::install_ring();
        let mut headers = reqwest::header::HeaderMap::new();
        if let Ok(value) = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}")) {
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        // The key travels as a default header so `http()` sends it too.
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .pool_idle_timeout(IDLE_CONNECTION)
            .build()
            .unwrap_or_default();
        Self {
            client: starling_api::Client::with_http(base, None, http),
        }
    }

    /// A client for the relay at `base`.
    pub fn new(base: &str) -> Self {
        starling_api::https::install_ring();
        let http = reqwest::Client::builder()
            .pool_idle_timeout(IDLE_CONNECTION)
            .build()
            .unwrap_or_default();
        Self {
            client: starling_api::Client::with_http(base, None, http),
        }
    }

    /// The typed client, for calls this harness has no shortcut for.
    pub fn client(&self) -> &starling_api::Client {
        &self.client
    }

    /// `POST /api/v1/jobs` with `"verification": {"quorum": quorum}` added: tests with a
    /// single volunteer need quorum 1, since replicas must come from distinct wallets.
    pub async fn submit_with_quorum(&self, body: &SubmitJob, quorum: u32) -> Result<String> {
        self.submit(&body.clone().with_quorum(quorum)).await
    }

    /// `POST /api/v1/jobs`, which must create the job (201); returns its id.
    pub async fn submit(&self, body: &SubmitJob) -> Result<String> {
        let response = self
            .http()
            .post(format!("{}/api/v1/jobs", self.base()))
            .json(body)
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        if status.as_u16() != 201 {
            bail!("submit answered {status}: {text}");
        }
        let job: Job = serde_json::from_str(&text).context("a job in the answer")?;
        Ok(job.id.to_string())
    }

    /// `GET {path}` (a path under the relay) as raw JSON, for answers a test reads as
    /// the wire has them.
    pub async fn get(&self, path: &str) -> Result<serde_json::Value> {
        Ok(self
            .http()
            .get(format!("{}{path}", self.base()))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// What the public ledger credited each wallet, summed over every page of it.
    pub async fn credited_wallets(&self) -> Result<std::collections::HashMap<String, u64>> {
        let mut credited = std::collections::HashMap::<String, u64>::new();
        let mut after = 0u64;
        loop {
            let entries = self.client().ledger(after, 500).await?.entries;
            for entry in &entries {
                if let Some(wallet) = entry.credit.strip_prefix("wallet:") {
                    *credited.entry(wallet.to_owned()).or_default() += entry.amount_micro;
                }
                after = after.max(entry.seq);
            }
            if entries.len() < 500 {
                return Ok(credited);
            }
        }
    }

    /// `GET /api/v1/wallets/{address}`: the wallet's standing.
    pub async fn wallet(&self, address: &str) -> Result<Wallet> {
        Ok(self.client.wallet(address).await?)
    }

    /// `GET /api/v1/jobs/{id}/units`: each unit's state and the wallets behind it, every
    /// page of them.
    pub async fn units(&self, id: &str) -> Result<Vec<UnitSummary>> {
        Ok(self.client.units(id).await?)
    }

    /// `GET /api/v1/jobs/{id}`.
    pub async fn job(&self, id: &str) -> Result<Job> {
        Ok(self.client.job(id).await?)
    }

    /// `GET /api/v1/stats`.
    pub async fn stats(&self) -> Result<Stats> {
        Ok(self.client.stats().await?)
    }

    /// Polls until the job is done (error if it fails or `timeout` passes).
    pub async fn wait_done(&self, id: &str, timeout: Duration) -> Result<Job> {
        let deadline = Instant::now() + timeout;
        loop {
            // The relay may be restarting; a refused connection is not a failure.
            if let Ok(job) = self.job(id).await {
                match job.state {
                    JobState::Done => return Ok(job),
                    JobState::Failed | JobState::Cancelled => bail!("job ended: {job:?}"),
                    JobState::Queued | JobState::Running => {}
                }
                if Instant::now() > deadline {
                    bail!("job not done after {timeout:?}: {job:?}");
                }
            } else if Instant::now() > deadline {
                bail!("relay unreachable after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `GET /api/v1/jobs/{id}/result` with its status.
    pub async fn result(&self, id: &str) -> Result<(u16, Vec<u8>)> {
        let (status, _, body) = self.result_typed(id).await?;
        Ok((status, body))
    }

    /// `GET /api/v1/jobs/{id}/result` with its status and content type.
    pub async fn result_typed(&self, id: &str) -> Result<(u16, String, Vec<u8>)> {
        let response = self
            .http()
            .get(format!("{}/api/v1/jobs/{id}/result", self.base()))
            .send()
            .await?;
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        Ok((
            response.status().as_u16(),
            content_type,
            response.bytes().await?.to_vec(),
        ))
    }

    /// The raw client, for error-path tests.
    pub fn http(&self) -> &reqwest::Client {
        self.client.http()
    }

    /// The relay's base URL.
    pub fn base(&self) -> &str {
        self.client.base()
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

/// Another web site: one HTML page answered for every path, on its own port (so on its
/// own origin), for tests of what a site embedding the widget sees. Stops on drop.
pub struct HostSite {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl HostSite {
    /// Serves `html` on 127.0.0.1 at a free port (needs a Tokio runtime).
    pub async fn serve(html: String) -> Result<Self> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let html = std::sync::Arc::new(html);
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let html = html.clone();
                tokio::spawn(async move {
                    // One request per connection: read its head, answer, close.
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{html}",
                        html.len()
                    );
                    let _ = socket.write_all(response.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        Ok(Self { port, task })
    }

    /// The site's port; `http://localhost:PORT/` and `http://127.0.0.1:PORT/` are two
    /// different sites to the browser.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for HostSite {
    fn drop(&mut self) {
        self.task.abort();
    }
}
