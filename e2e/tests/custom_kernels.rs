//! Submitters' own WGSL kernels (`examples/kernels/`) run over native volunteers on
//! lavapipe, through the real relay and real WebRTC: registered, submitted like a
//! built-in, replicated to distinct wallets, merged, and checked against a CPU reference
//! computed here. Among the volunteers a cheater returns wrong output for every unit (it
//! is outvoted and never paid) and one computes on the CPU fallback (it never runs a
//! custom kernel's unit).

use anyhow::Context as _;
use rand::{Rng, SeedableRng};
use serde_json::json;
use starling_e2e::examples::{check_blur, example, f32_bytes, floats, input, mandelbrot, run};
use starling_e2e::{Relay, TempDir, Volunteer};
use starling_protocol::WalletKey;
use std::time::{Duration, Instant};

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
    let (_, saxpy) = run(
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
    let (_, image) = run(
        &api,
        "mandelbrot",
        json!({"width": width, "height": height, "max_iter": max_iter}),
        Vec::new(),
    )
    .await?;
    anyhow::ensure!(
        image == mandelbrot(width, height, max_iter),
        "the Mandelbrot image differs from the CPU's"
    );

    // A blur, within its relative tolerance.
    let count = 150_000usize;
    let signal: Vec<f32> = (0..count)
        .map(|_| rng.random_range(-10.0f32..10.0))
        .collect();
    let (_, blurred) = run(
        &api,
        "blur",
        json!({"n": count}),
        vec![input("signal", f32_bytes(&signal))],
    )
    .await?;
    check_blur(&signal, &floats(&blurred))?;

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
