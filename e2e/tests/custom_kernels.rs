//! Submitters' own WGSL kernels (`examples/kernels/`) run over native volunteers on
//! lavapipe, through the real relay and real WebRTC: registered, submitted like a
//! built-in, replicated to distinct wallets, merged, and checked against a CPU reference
//! computed here. Among the volunteers a cheater returns wrong output for every unit (it
//! is outvoted and never paid) and one computes on the CPU fallback (it never runs a
//! custom kernel's unit).

use anyhow::Context as _;
use rand::{Rng, SeedableRng};
use serde_json::json;
use starling_api::manifest::KernelManifest;
use starling_api::{Input, RegisterKernel, SubmitJob};
use starling_e2e::{Api, Relay, TempDir, Volunteer};
use starling_protocol::WalletKey;
use std::time::{Duration, Instant};

fn example(name: &str) -> anyhow::Result<RegisterKernel> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/kernels");
    let source = std::fs::read_to_string(dir.join(format!("{name}.wgsl")))?;
    let manifest: KernelManifest =
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{name}.json")))?)?;
    Ok(RegisterKernel { source, manifest })
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn input(name: &str, bytes: Vec<u8>) -> Input {
    Input {
        name: name.into(),
        file_name: format!("{name}.bin"),
        bytes,
    }
}

/// Registers `name`, submits a job of it, waits, and returns the result's bytes.
async fn run(
    api: &Api,
    name: &str,
    params: serde_json::Value,
    inputs: Vec<Input>,
) -> anyhow::Result<Vec<u8>> {
    let kernel = api.client().register_kernel(&example(name)?).await?;
    let job = api
        .client()
        .submit_multipart(&SubmitJob::new(kernel.id, params), inputs, None)
        .await?;
    let id = job.id.to_string();
    let done = api.wait_done(&id, Duration::from_secs(240)).await?;
    eprintln!("{name}: {} units", done.progress.units_total);
    let (status, bytes) = api.result(&id).await?;
    anyhow::ensure!(status == 200, "{name}'s result: {status}");
    Ok(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_kernels_run_over_volunteers_and_a_cheater_is_outvoted_and_unpaid(
) -> anyhow::Result<()> {
    let data = TempDir::new("custom-kernels")?;
    // Known-answer units often: settled units of these jobs go back to other wallets as
    // tests, compared with the manifest's comparison like replicas.
    // Its volunteers are the test's own, all fresh: vetting (a wallet trusted on the
    // built-in kernels must anchor a registered kernel's quorum) is off here and tested
    // in relay-server/tests/custom_kernels.rs.
    let relay = Relay::start_with(
        data.path(),
        1,
        // A SAXPY unit is 131 kFLOP: at the default price its share rounds to nothing,
        // and a volunteer that happened to settle only such units would go unpaid.
        &[
            "--canary-rate",
            "0.3",
            "--vet-newcomers",
            "false",
            "--price-per-gflop",
            "1",
        ],
    )?;
    let api = relay.api();
    let mut volunteers = Vec::new();
    let mut wallets = Vec::new();
    // Three honest GPU volunteers, a GPU cheater, a CPU volunteer.
    for (i, extra) in [
        &[][..],
        &[],
        &[],
        &["--fault", "wrong", "--fault-rate", "1"],
        &["--cpu"],
    ]
    .into_iter()
    .enumerate()
    {
        let key = WalletKey::from_seed(rand::random());
        let key_file = data.path().join(format!("wallet-{i}.key"));
        std::fs::write(&key_file, key.to_hex())?;
        let mut args = vec!["--key-file".to_owned(), key_file.display().to_string()];
        args.extend(extra.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let log = data.path().join(format!("volunteer-{i}.log"));
        volunteers.push(Volunteer::start_logged(&relay.url(), &args, &log)?);
        wallets.push((key.address().to_string(), log));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while api.stats().await?.volunteers < volunteers.len() as u64 {
        anyhow::ensure!(Instant::now() < deadline, "the volunteers did not connect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // SAXPY over 10^6 floats, compared exactly.
    let n = 1_000_000usize;
    let mut rng = rand::rngs::StdRng::seed_from_u64(25);
    let x: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let y: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let a = 1.75f32;
    let started = Instant::now();
    let saxpy = run(
        &api,
        "saxpy",
        json!({"n": n}),
        vec![
            input("a", f32_bytes(&[a])),
            input("x", f32_bytes(&x)),
            input("y", f32_bytes(&y)),
        ],
    )
    .await?;
    eprintln!("saxpy over 10^6 floats: {:?}", started.elapsed());
    let expected: Vec<f32> = x.iter().zip(&y).map(|(x, y)| a * x + y).collect();
    anyhow::ensure!(floats(&saxpy) == expected, "SAXPY differs from the CPU's");

    // A Mandelbrot image in bands of rows, exactly.
    let (width, height, max_iter) = (256u32, 384u32, 100u32);
    let image = run(
        &api,
        "mandelbrot",
        json!({"width": width, "height": height, "max_iter": max_iter}),
        Vec::new(),
    )
    .await?;
    let expected: Vec<u8> = (0..height)
        .flat_map(|py| (0..width).map(move |px| escape_count(px, py, max_iter)))
        .flat_map(u32::to_le_bytes)
        .collect();
    anyhow::ensure!(
        image == expected,
        "the Mandelbrot image differs from the CPU's"
    );

    // A blur, within its relative tolerance.
    let count = 150_000usize;
    let signal: Vec<f32> = (0..count)
        .map(|_| rng.random_range(-10.0f32..10.0))
        .collect();
    let blurred = floats(
        &run(
            &api,
            "blur",
            json!({"n": count}),
            vec![input("signal", f32_bytes(&signal))],
        )
        .await?,
    );
    for (i, got) in blurred.iter().enumerate() {
        let want = 0.25 * signal[i.saturating_sub(1)]
            + 0.5 * signal[i]
            + 0.25 * signal[(i + 1).min(count - 1)];
        anyhow::ensure!(
            (got - want).abs() <= 1e-5 * got.abs().max(want.abs()),
            "blur[{i}] = {got}, the CPU says {want}"
        );
    }

    // The cheater was outvoted on every unit it answered and earned nothing; the honest
    // GPU volunteers were paid; the CPU volunteer never ran a custom unit.
    let cheater = api.wallet(&wallets[3].0).await?;
    anyhow::ensure!(
        cheater.invalid_results > 0,
        "the cheater answered nothing: {cheater:?}"
    );
    anyhow::ensure!(
        cheater.valid_results == 0 && cheater.balance_micro == 0,
        "the cheater was paid: {cheater:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    for (wallet, _) in &wallets[..3] {
        loop {
            let honest = api.wallet(wallet).await?;
            anyhow::ensure!(
                honest.invalid_results == 0,
                "an honest result refused: {honest:?}"
            );
            if honest.balance_micro > 0 {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "an honest volunteer unpaid: {honest:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // The relay shows the declared FLOPs beside the time the units took.
    let saxpy_id =
        starling_api::manifest::content_id(&example("saxpy")?.source, &example("saxpy")?.manifest);
    let shown = api.client().custom_kernel(&saxpy_id).await?;
    let runs = shown.measured.context("runs measured")?;
    anyhow::ensure!(runs.results >= 32 && runs.mean_unit_ms > 0.0, "{runs:?}");
    anyhow::ensure!(
        runs.declared_gflop_per_s > 0.0 && runs.declared_gflop_per_s.is_finite(),
        "{runs:?}"
    );
    eprintln!("saxpy units: {runs:?}");
    let cpu = api.wallet(&wallets[4].0).await?;
    anyhow::ensure!(
        cpu.valid_results + cpu.invalid_results == 0,
        "the CPU volunteer ran custom units: {cpu:?}"
    );
    drop(volunteers);
    let cpu_log = std::fs::read_to_string(&wallets[4].1).context("the CPU volunteer's log")?;
    anyhow::ensure!(!cpu_log.contains("runs only on a GPU"), "{cpu_log}");
    Ok(())
}

/// The example's escape count, in its 12-bit fixed point.
fn escape_count(px: u32, py: u32, max_iter: u32) -> u32 {
    const ONE: i32 = 4096;
    let (cx, cy) = (-2 * ONE + px as i32 * 16, -3 * ONE / 2 + py as i32 * 16);
    let (mut zx, mut zy) = (0i32, 0i32);
    let mut i = 0;
    while i < max_iter && zx * zx + zy * zy <= 4 * ONE * ONE {
        (zx, zy) = (((zx * zx - zy * zy) >> 12) + cx, ((2 * zx * zy) >> 12) + cy);
        i += 1;
    }
    i
}
