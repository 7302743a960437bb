//! A public relay over HTTPS: `--tls-self-signed --tls-name starling.test`. Chromium,
//! resolving `starling.test` to loopback and told to accept that one certificate (by its
//! public key), opens `https://starling.test:PORT/`: an origin that is not localhost, so
//! only HTTPS makes it the secure context WebGPU needs. It gets WebGPU and computes a
//! job the CLI submitted, followed and fetched over HTTPS with `--ca-cert`; a native
//! volunteer signals over HTTPS the same way. The adversaries: clients that do not trust
//! the certificate are refused, and plain HTTP on the port gets no page.

use anyhow::Context as _;
use base64::Engine as _;
use serde_json::json;
use starling_e2e::browser::Browser;
use starling_e2e::{binary, MatmulJob, Relay, TempDir, Volunteer};
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

/// `starling --relay RELAY [--ca-cert CA] ARGS…`, ended after `within`.
async fn starling(
    relay: &str,
    key: Option<&str>,
    ca_cert: Option<&Path>,
    args: &[&str],
    within: Duration,
) -> anyhow::Result<Output> {
    let mut command = tokio::process::Command::new(binary("starling")?);
    command
        .env_remove("STARLING_API_KEY")
        .env_remove("STARLING_CA_CERT")
        .kill_on_drop(true)
        .args(["--relay", relay]);
    if let Some(key) = key {
        command.env("STARLING_API_KEY", key);
    }
    if let Some(ca) = ca_cert {
        command.arg("--ca-cert").arg(ca);
    }
    let output = tokio::time::timeout(within, command.args(args).output())
        .await
        .with_context(|| format!("starling {args:?} did not end within {within:?}"))?;
    Ok(output?)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The job's two inputs written as raw files, as `--input` arguments.
fn input_args(job: &MatmulJob, dir: &Path) -> anyhow::Result<Vec<String>> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut args = Vec::new();
    for name in ["a", "b"] {
        let encoded = job.body.input.get(name).context("input")?;
        let path = dir.join(name);
        std::fs::write(&path, b64.decode(encoded)?)?;
        args.push("--input".to_owned());
        args.push(format!("{name}={}", path.display()));
    }
    Ok(args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_on_a_non_localhost_https_origin_computes_a_job_the_cli_sent_over_https(
) -> anyhow::Result<()> {
    let data = TempDir::new("https-browser")?;
    let relay = Relay::start_with(
        data.path(),
        1,
        &["--tls-self-signed", "--tls-name", "starling.test"],
    )?;
    let url = relay.url();
    assert!(
        url.starts_with("https://"),
        "the relay prints an https URL: {url}"
    );
    let made = relay
        .self_signed()
        .context("the relay printed its certificate")?;
    let ca = made.cert_path.as_path();
    let key = relay.dev_key();

    // A client that does not trust the certificate is refused, and says how to fix it.
    let untrusted = starling(&url, key, None, &["kernels"], Duration::from_secs(30)).await?;
    assert!(!untrusted.status.success(), "{}", text(&untrusted.stdout));
    assert_eq!(untrusted.status.code(), Some(4), "a network error");
    let said = text(&untrusted.stderr);
    assert!(said.contains("certificate"), "{said}");
    assert!(said.contains("--ca-cert"), "{said}");

    // Plain HTTP on the HTTPS port: a refusal, never the page.
    let plain = reqwest::get(format!("http://127.0.0.1:{}/", relay.port())).await;
    if let Ok(plain) = plain {
        assert_eq!(plain.status(), 400);
        let body = plain.text().await?;
        assert!(body.contains("https://"), "{body}");
        assert!(!body.contains("<html") && !body.contains("wasm"), "{body}");
    }

    let trusted = starling(&url, key, Some(ca), &["kernels"], Duration::from_secs(30)).await?;
    assert!(trusted.status.success(), "{}", text(&trusted.stderr));
    assert!(text(&trusted.stdout).contains("matmul"));

    let browser = Browser::start_with(
        "https-browser",
        &[
            "--host-resolver-rules=MAP starling.test 127.0.0.1".to_owned(),
            format!("--ignore-certificate-errors-spki-list={}", made.spki_sha256),
        ],
    )
    .await?;
    let page = format!("https://starling.test:{}/", relay.port());
    browser.goto(&page).await?;
    let context = browser
        .execute(
            "return [window.isSecureContext, location.origin, 'gpu' in navigator]",
            json!([]),
        )
        .await?;
    assert_eq!(
        context,
        json!([
            true,
            format!("https://starling.test:{}", relay.port()),
            true
        ]),
        "a secure context on a non-localhost origin, with WebGPU exposed"
    );
    let device = browser
        .wait_text("device", Duration::from_secs(30), |t| t != "Detecting…")
        .await?;
    eprintln!("device card over https://starling.test: {device}");
    assert!(
        device.starts_with("WebGPU:"),
        "WebGPU, not the CPU fallback: {device}"
    );

    let job = MatmulJob::random(160, 128, 96, 31);
    let mut args: Vec<String> = [
        "submit", "matmul", "-p", "m=160", "-p", "k=128", "-p", "n=96",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(input_args(&job, data.path())?);
    args.extend(["--quorum".to_owned(), "1".to_owned()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let submitted = starling(&url, key, Some(ca), &args, Duration::from_secs(30)).await?;
    assert!(submitted.status.success(), "{}", text(&submitted.stderr));
    let id = text(&submitted.stdout).trim().to_owned();
    assert_eq!(id.len(), 36, "the job id alone on stdout: {id:?}");

    let started = Instant::now();
    browser.click("start").await?;
    // The job's event stream over HTTPS until it ends.
    let watched = starling(
        &url,
        key,
        Some(ca),
        &["watch", &id],
        Duration::from_secs(180),
    )
    .await?;
    assert!(watched.status.success(), "{}", text(&watched.stderr));
    eprintln!("Start to done over HTTPS: {:?}", started.elapsed());
    let out = data.path().join("out.bin");
    let out_arg = out.display().to_string();
    let fetched = starling(
        &url,
        key,
        Some(ca),
        &["result", &id, "-o", &out_arg],
        Duration::from_secs(30),
    )
    .await?;
    assert!(fetched.status.success(), "{}", text(&fetched.stderr));
    job.check(&std::fs::read(&out)?)?;
    let done = browser.text("units-done").await?.unwrap_or_default();
    assert_ne!(done, "0", "the page computed the units");

    // The same page over the WebSocket: from an https page that is wss:// to the relay's
    // own TLS port, which must let the connection upgrade.
    browser.click("stop").await?;
    browser.goto(&format!("{page}?transport=websocket")).await?;
    browser
        .wait_text("device", Duration::from_secs(30), |t| t != "Detecting…")
        .await?;
    let again = starling(&url, key, Some(ca), &args, Duration::from_secs(30)).await?;
    assert!(again.status.success(), "{}", text(&again.stderr));
    let id = text(&again.stdout).trim().to_owned();
    browser.click("start").await?;
    let transport = browser
        .wait_text("transport", Duration::from_secs(30), |t| {
            t != "not connected" && t != "connecting…"
        })
        .await?;
    assert_eq!(transport, "WebSocket fallback", "wss:// to the relay");
    let watched = starling(
        &url,
        key,
        Some(ca),
        &["watch", &id],
        Duration::from_secs(180),
    )
    .await?;
    assert!(watched.status.success(), "{}", text(&watched.stderr));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_volunteer_signals_over_https_only_when_it_trusts_the_relay() -> anyhow::Result<()>
{
    let data = TempDir::new("https-native")?;
    let relay = Relay::start_with(data.path(), 1, &["--tls-self-signed"])?;
    let url = relay.url();
    let made = relay
        .self_signed()
        .context("the relay printed its certificate")?;
    let ca = made.cert_path.display().to_string();
    let key = relay.dev_key();

    // Without --ca-cert the volunteer cannot even post its offer.
    let log = data.path().join("untrusting.log");
    let untrusting = Volunteer::start_logged(&url, &["--cpu"], &log)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let said = std::fs::read_to_string(&log).unwrap_or_default();
        if said.contains("certificate") {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the untrusting volunteer never reported the certificate: {said}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(untrusting);

    let _volunteer = Volunteer::start_with(&url, &["--cpu", "--ca-cert", &ca])?;
    let job = MatmulJob::random(96, 64, 64, 32);
    let mut args: Vec<String> = ["submit", "matmul", "-p", "m=96", "-p", "k=64", "-p", "n=64"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(input_args(&job, data.path())?);
    args.extend(["--quorum", "1", "--wait"].map(str::to_owned));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let ca_path = made.cert_path.as_path();
    let submitted = starling(&url, key, Some(ca_path), &args, Duration::from_secs(120)).await?;
    assert!(submitted.status.success(), "{}", text(&submitted.stderr));
    let id = text(&submitted.stdout).trim().to_owned();
    let out = data.path().join("out.bin");
    let out_arg = out.display().to_string();
    let fetched = starling(
        &url,
        key,
        Some(ca_path),
        &["result", &id, "-o", &out_arg],
        Duration::from_secs(30),
    )
    .await?;
    assert!(fetched.status.success(), "{}", text(&fetched.stderr));
    job.check(&std::fs::read(&out)?)?;
    Ok(())
}

/// nginx in front of a relay, killed on drop: one process (`master_process off`), so
/// no worker outlives it holding the test's output.
struct Nginx(std::process::Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The README's nginx `server` block, as printed there, pointed at this test's
/// certificate, port and relay.
fn readme_server_block(port: u16, cert: &Path, key: &Path, relay: &str) -> anyhow::Result<String> {
    let readme = std::fs::read_to_string(starling_e2e::workspace_root().join("README.md"))?;
    let (_, rest) = readme
        .split_once("```nginx\n")
        .context("the README shows an nginx block")?;
    let (block, _) = rest.split_once("```").context("the nginx block ends")?;
    let replacements = [
        ("listen 443 ", format!("listen 127.0.0.1:{port} ")),
        (
            "/etc/letsencrypt/live/relay.example/fullchain.pem",
            cert.display().to_string(),
        ),
        (
            "/etc/letsencrypt/live/relay.example/privkey.pem",
            key.display().to_string(),
        ),
        ("http://127.0.0.1:8080", relay.to_owned()),
    ];
    let mut block = block.to_owned();
    for (from, to) in replacements {
        anyhow::ensure!(
            block.contains(from),
            "the README's block no longer has {from:?}"
        );
        block = block.replace(from, &to);
    }
    Ok(block)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_nginx_block_serves_a_plain_relay_over_https() -> anyhow::Result<()> {
    let data = TempDir::new("https-nginx")?;
    let relay = Relay::start(data.path(), 1)?;
    let proxy_dir = data.path().join("nginx");
    std::fs::create_dir_all(&proxy_dir)?;
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()])?;
    let cert = proxy_dir.join("cert.pem");
    let key = proxy_dir.join("key.pem");
    std::fs::write(&cert, made.cert.pem())?;
    std::fs::write(&key, made.signing_key.serialize_pem())?;
    let port = starling_e2e::free_port()?;
    let dir = proxy_dir.display();
    let config = format!(
        "user root;\nmaster_process off;\nerror_log {dir}/error.log warn;\npid {dir}/nginx.pid;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n access_log off;\n client_body_temp_path {dir}/body;\n proxy_temp_path {dir}/proxy;\n{}\n}}\n",
        readme_server_block(port, &cert, &key, &relay.url())?
    );
    std::fs::write(proxy_dir.join("nginx.conf"), config)?;
    let mut nginx = Nginx(
        std::process::Command::new("nginx")
            .arg("-p")
            .arg(&proxy_dir)
            .arg("-c")
            .arg(proxy_dir.join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(proxy_dir.join("stderr.log"))?)
            .spawn()
            .context("starting nginx (scripts/setup.sh installs nginx)")?,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        let log = ["stderr.log", "error.log"]
            .map(|name| std::fs::read_to_string(proxy_dir.join(name)).unwrap_or_default())
            .join("\n");
        let exited = nginx.0.try_wait()?;
        anyhow::ensure!(
            exited.is_none() && Instant::now() < deadline,
            "nginx did not come up ({exited:?}): {log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let proxied = format!("https://127.0.0.1:{port}");
    let http = starling_api::https::http_client_builder(Some(&cert))?.build()?;
    let health = http.get(format!("{proxied}/healthz")).send().await?;
    assert_eq!(health.status(), 200);
    assert!(
        health.headers().contains_key("strict-transport-security"),
        "the proxy sends HSTS"
    );

    // REST, signaling and the event stream, all through the proxy.
    let key = relay.dev_key();
    let _volunteer = Volunteer::start_with(
        &proxied,
        &["--cpu", "--ca-cert", &cert.display().to_string()],
    )?;
    let job = MatmulJob::random(96, 64, 64, 33);
    let mut args: Vec<String> = ["submit", "matmul", "-p", "m=96", "-p", "k=64", "-p", "n=64"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(input_args(&job, data.path())?);
    args.extend(["--quorum", "1", "--wait"].map(str::to_owned));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let submitted = starling(&proxied, key, Some(&cert), &args, Duration::from_secs(120)).await?;
    assert!(submitted.status.success(), "{}", text(&submitted.stderr));
    let id = text(&submitted.stdout).trim().to_owned();
    let out = data.path().join("out.bin");
    let out_arg = out.display().to_string();
    let fetched = starling(
        &proxied,
        key,
        Some(&cert),
        &["result", &id, "-o", &out_arg],
        Duration::from_secs(30),
    )
    .await?;
    assert!(fetched.status.success(), "{}", text(&fetched.stderr));
    job.check(&std::fs::read(&out)?)?;
    Ok(())
}
