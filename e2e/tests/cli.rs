//! The `starling` command line against a real relay and a native volunteer: submit with
//! raw input files, wait, download, compare with the CPU reference; and its error lines
//! and exit codes.

use anyhow::Context as _;
use base64::Engine as _;
use starling_e2e::{binary, free_port, MatmulJob, Relay, TempDir, Volunteer};
use std::process::{Command, Output};

fn starling(relay: &str, key: Option<&str>, args: &[&str]) -> anyhow::Result<Output> {
    let mut command = Command::new(binary("starling")?);
    command.env_remove("STARLING_API_KEY");
    if let Some(key) = key {
        command.env("STARLING_API_KEY", key);
    }
    command
        .args(["--relay", relay])
        .args(args)
        .output()
        .context("running starling")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_submits_input_files_waits_and_downloads_the_result() -> anyhow::Result<()> {
    let data = TempDir::new("cli")?;
    let relay = Relay::start(data.path(), 1)?;
    let url = relay.url();
    let _volunteer = Volunteer::start(&url)?;
    let job = MatmulJob::random(256, 64, 64, 21);
    let b64 = base64::engine::general_purpose::STANDARD;
    for name in ["a", "b"] {
        let encoded = job.body.input.get(name).context("input")?;
        std::fs::write(data.path().join(name), b64.decode(encoded)?)?;
    }
    let a = format!("a={}", data.path().join("a").display());
    let b = format!("b={}", data.path().join("b").display());
    let submitted = starling(
        &url,
        relay.dev_key(),
        &[
            "submit", "matmul", "--param", "m=256", "--param", "k=64", "-p", "n=64", "--input", &a,
            "--input", &b, "--quorum", "1", "--wait",
        ],
    )?;
    assert!(submitted.status.success(), "{}", text(&submitted.stderr));
    let id = text(&submitted.stdout).trim().to_owned();
    assert_eq!(id.len(), 36, "the job id alone on stdout: {id:?}");
    assert!(text(&submitted.stderr).contains(&format!("job {id} done")));

    let out = data.path().join("out.bin");
    let out_arg = out.display().to_string();
    let fetched = starling(&url, relay.dev_key(), &["result", &id, "-o", &out_arg])?;
    assert!(fetched.status.success(), "{}", text(&fetched.stderr));
    job.check(&std::fs::read(&out)?)?;

    let status = starling(&url, relay.dev_key(), &["status", &id])?;
    assert!(
        text(&status.stdout).contains("done"),
        "{}",
        text(&status.stdout)
    );
    let listed = starling(&url, relay.dev_key(), &["jobs", "--state", "done"])?;
    assert!(
        text(&listed.stdout).contains(&id),
        "{}",
        text(&listed.stdout)
    );
    Ok(())
}

#[tokio::test]
async fn cli_errors_are_one_line_with_distinct_exit_codes() -> anyhow::Result<()> {
    let data = TempDir::new("cli-errors")?;
    let relay = Relay::start(data.path(), 64)?;
    let url = relay.url();

    let unknown = starling(&url, relay.dev_key(), &["submit", "fft", "--param", "n=4"])?;
    assert_eq!(unknown.status.code(), Some(3));
    assert_eq!(
        text(&unknown.stderr),
        "error: 422 Invalid value: unknown kernel `fft` (field kernel)\n"
    );
    assert!(unknown.stdout.is_empty());

    let bad_param = starling(&url, relay.dev_key(), &["submit", "matmul", "--param", "m"])?;
    assert_eq!(bad_param.status.code(), Some(2));
    assert_eq!(
        text(&bad_param.stderr),
        "error: --param `m` is not NAME=VALUE\n"
    );

    let missing = starling(
        &url,
        relay.dev_key(),
        &["status", "00000000-0000-0000-0000-000000000000"],
    )?;
    assert_eq!(missing.status.code(), Some(3));
    assert!(text(&missing.stderr).starts_with("error: 404 "));

    // Nothing listens on a fresh port.
    let nowhere = format!("http://127.0.0.1:{}", free_port()?);
    let unreachable = starling(&nowhere, None, &["kernels"])?;
    assert_eq!(unreachable.status.code(), Some(4));
    assert_eq!(text(&unreachable.stderr).lines().count(), 1);

    // A cancelled job: `watch` says so and exits 5; `result` is refused.
    let job = starling(
        &url,
        relay.dev_key(),
        &[
            "submit",
            "montecarlo",
            "-p",
            "samples=1000000",
            "-p",
            "seed=1",
        ],
    )?;
    assert!(job.status.success(), "{}", text(&job.stderr));
    let id = text(&job.stdout).trim().to_owned();
    let cancelled = starling(&url, relay.dev_key(), &["cancel", &id])?;
    assert!(text(&cancelled.stdout).contains("cancelled"));
    let watched = starling(&url, relay.dev_key(), &["watch", &id])?;
    assert_eq!(watched.status.code(), Some(5));
    assert_eq!(
        text(&watched.stderr),
        format!("error: job {id} cancelled\n")
    );
    let out = data.path().join("nothing.bin").display().to_string();
    let result = starling(&url, relay.dev_key(), &["result", &id, "-o", &out])?;
    assert_eq!(result.status.code(), Some(3));
    assert!(text(&result.stderr).starts_with("error: 409 "));

    let kernels = starling(&url, relay.dev_key(), &["kernels"])?;
    assert!(kernels.status.success());
    assert!(text(&kernels.stdout)
        .lines()
        .any(|l| l.starts_with("matmul")));
    Ok(())
}

#[tokio::test]
async fn cli_sends_its_api_key_and_reports_429() -> anyhow::Result<()> {
    let data = TempDir::new("cli-rate")?;
    let relay = Relay::start_with(
        data.path(),
        64,
        &["--rate-limit-per-s", "0.01", "--rate-limit-burst", "2"],
    )?;
    let url = relay.url();
    for _ in 0..2 {
        assert!(starling(&url, relay.dev_key(), &["kernels"])?
            .status
            .success());
    }
    let limited = starling(&url, relay.dev_key(), &["kernels"])?;
    assert_eq!(limited.status.code(), Some(3));
    assert_eq!(
        text(&limited.stderr),
        "error: 429 Too many requests: too many requests; retry in 100 s\n"
    );
    // A made-up key is no way around the address's limit (issue 20: it once was).
    let keyed = starling(&url, relay.dev_key(), &["--api-key", "tenant-a", "kernels"])?;
    assert_eq!(keyed.status.code(), Some(3), "{}", text(&keyed.stderr));
    Ok(())
}

#[tokio::test]
async fn cli_registers_and_shows_a_kernel_and_reports_a_bad_one() -> anyhow::Result<()> {
    let data = TempDir::new("cli-kernels")?;
    // Its two volunteers are fresh: no wallet trusted on the built-ins anchors a quorum
    // here (relay-server/tests/custom_kernels.rs tests that rule).
    let relay = Relay::start_with(data.path(), 64, &["--vet-newcomers", "false"])?;
    let url = relay.url();
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/kernels");
    let source = examples.join("saxpy.wgsl").display().to_string();
    let manifest = examples.join("saxpy.json").display().to_string();

    let registered = starling(
        &url,
        relay.dev_key(),
        &["kernel", "register", &source, "--manifest", &manifest],
    )?;
    assert!(registered.status.success(), "{}", text(&registered.stderr));
    let id = text(&registered.stdout).trim().to_owned();
    assert!(
        id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "the kernel's id alone on stdout: {id:?}"
    );

    // Anyone reads it back, key or not: the source as registered.
    let shown = starling(&url, None, &["kernel", "show", &id])?;
    assert!(shown.status.success(), "{}", text(&shown.stderr));
    let shown = text(&shown.stdout);
    assert!(
        shown.contains(&std::fs::read_to_string(&source)?),
        "{shown}"
    );
    assert!(shown.contains("\"entry_point\": \"main\""), "{shown}");
    let listed = starling(&url, None, &["kernels"])?;
    assert!(text(&listed.stdout)
        .lines()
        .any(|l| l.starts_with(&id) && l.contains("registered by")));

    // A shader that does not compile: one line naming where, exit code 3.
    let broken = data.path().join("broken.wgsl");
    std::fs::write(
        &broken,
        std::fs::read_to_string(&source)?.replace("a[0] * x[id.x] + y[id.x];", "a[0] * x[id.x] +;"),
    )?;
    let refused = starling(
        &url,
        relay.dev_key(),
        &[
            "kernel",
            "register",
            &broken.display().to_string(),
            "--manifest",
            &manifest,
        ],
    )?;
    assert_eq!(refused.status.code(), Some(3));
    let stderr = text(&refused.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: 422 Invalid value: line 25, column "),
        "{stderr}"
    );
    assert!(stderr.ends_with("(field source)\n"), "{stderr}");

    // An id that is not a content address never reaches the relay as a path.
    let bad_id = starling(&url, None, &["kernel", "show", "../jobs"])?;
    assert_eq!(bad_id.status.code(), Some(2));

    // `starling submit ID` runs it like a built-in: two GPU volunteers, the quorum of 2
    // a registered kernel always has, raw input files.
    let _volunteers = [Volunteer::start(&url)?, Volunteer::start(&url)?];
    let floats =
        |values: &[f32]| -> Vec<u8> { values.iter().flat_map(|v| v.to_le_bytes()).collect() };
    let (x, y): (Vec<f32>, Vec<f32>) = (0..1000).map(|i| (i as f32 * 0.5, 1.0 - i as f32)).unzip();
    let mut files = Vec::new();
    for (name, values) in [("a", vec![3.0f32]), ("x", x.clone()), ("y", y.clone())] {
        let path = data.path().join(format!("{name}.bin"));
        std::fs::write(&path, floats(&values))?;
        files.push(format!("{name}={}", path.display()));
    }
    let submitted = starling(
        &url,
        relay.dev_key(),
        &[
            "submit", &id, "-p", "n=1000", "-i", &files[0], "-i", &files[1], "-i", &files[2],
            "--wait",
        ],
    )?;
    assert!(submitted.status.success(), "{}", text(&submitted.stderr));
    let job = text(&submitted.stdout).trim().to_owned();
    let out = data.path().join("saxpy.bin");
    let out_arg = out.display().to_string();
    let fetched = starling(&url, relay.dev_key(), &["result", &job, "-o", &out_arg])?;
    assert!(fetched.status.success(), "{}", text(&fetched.stderr));
    let expected: Vec<f32> = x.iter().zip(&y).map(|(x, y)| 3.0 * x + y).collect();
    assert_eq!(std::fs::read(&out)?, floats(&expected));

    // A quorum of 1 is refused for it, naming the field.
    let solo = starling(
        &url,
        relay.dev_key(),
        &[
            "submit", &id, "-p", "n=1000", "-i", &files[0], "-i", &files[1], "-i", &files[2],
            "--quorum", "1",
        ],
    )?;
    assert_eq!(solo.status.code(), Some(3));
    assert!(
        text(&solo.stderr).contains("(field verification.quorum)"),
        "{}",
        text(&solo.stderr)
    );
    Ok(())
}
