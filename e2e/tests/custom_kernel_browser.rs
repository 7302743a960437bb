//! Submitters' own kernels (the three examples) computed by headless Chromium's WebGPU
//! over WebRTC: the browser and a native volunteer are the job's two wallets, so every
//! unit's quorum of 2 holds a result the browser computed with the WGSL it was sent (and
//! checked against the kernel's content address), and the merged result equals the CPU's.

use rand::{Rng, SeedableRng};
use serde_json::json;
use starling_api::manifest::KernelManifest;
use starling_api::{RegisterKernel, SubmitJob};
use starling_e2e::browser::Browser;
use starling_e2e::examples::{check_blur, example, f32_bytes, floats, input, mandelbrot, run};
use starling_e2e::{Relay, TempDir, Volunteer};
use starling_protocol::WalletKey;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_runs_a_registered_saxpy_kernel_on_webgpu() -> anyhow::Result<()> {
    let data = TempDir::new("custom-browser")?;
    // Fresh volunteers of the test's own: no wallet trusted on the built-ins anchors a
    // quorum here (relay-server/tests/custom_kernels.rs tests that rule).
    let relay = Relay::start_with(data.path(), 1, &["--vet-newcomers", "false"])?;
    let api = relay.api();
    let browser = Browser::start("custom-browser").await?;
    browser.goto(&relay.url()).await?;
    let device = browser
        .wait_text("device", Duration::from_secs(30), |t| t != "Detecting…")
        .await?;
    anyhow::ensure!(
        device.starts_with("WebGPU:"),
        "a registered kernel runs only on WebGPU; the page found {device}"
    );

    let key = WalletKey::from_seed(rand::random());
    let key_file = data.path().join("native.key");
    std::fs::write(&key_file, key.to_hex())?;
    let native_wallet = key.address().to_string();
    let _native = Volunteer::start_with(
        &relay.url(),
        &["--key-file", &key_file.display().to_string()],
    )?;

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/kernels");
    let manifest: KernelManifest =
        serde_json::from_str(&std::fs::read_to_string(dir.join("saxpy.json"))?)?;
    let source = std::fs::read_to_string(dir.join("saxpy.wgsl"))?;
    let kernel = api
        .client()
        .register_kernel(&RegisterKernel { source, manifest })
        .await?;
    let kernel_id = kernel.id.clone();

    let n = 200_000usize;
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let x: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let y: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let a = -0.5f32;
    let inputs = [("a", vec![a]), ("x", x.clone()), ("y", y.clone())]
        .into_iter()
        .map(|(name, values)| input(name, f32_bytes(&values)))
        .collect();
    let job = api
        .client()
        .submit_multipart(&SubmitJob::new(kernel.id, json!({"n": n})), inputs, None)
        .await?;
    let id = job.id.to_string();
    browser.click("start").await?;
    let done = api.wait_done(&id, Duration::from_secs(240)).await?;
    eprintln!("saxpy in the browser and natively: {:?}", done.progress);
    let (status, result) = api.result(&id).await?;
    anyhow::ensure!(status == 200, "result: {status}");
    let expected = f32_bytes(&x.iter().zip(&y).map(|(x, y)| a * x + y).collect::<Vec<_>>());
    anyhow::ensure!(
        result == expected,
        "the merged SAXPY differs from the CPU's"
    );

    // The other two examples through the same page: a 2-D image of integers (exact) and
    // a blur whose input is sliced per unit with a halo (within its tolerance).
    let (width, height, max_iter) = (256u32, 384u32, 60u32);
    let (mandelbrot_id, image) = run(
        &api,
        "mandelbrot",
        json!({"width": width, "height": height, "max_iter": max_iter}),
        Vec::new(),
    )
    .await?;
    anyhow::ensure!(
        image == mandelbrot(width, height, max_iter),
        "the Mandelbrot image computed in the browser differs from the CPU's"
    );
    let signal: Vec<f32> = (0..150_000)
        .map(|_| rng.random_range(-10.0f32..10.0))
        .collect();
    let (blur_id, blurred) = run(
        &api,
        "blur",
        json!({"n": signal.len()}),
        vec![input("signal", f32_bytes(&signal))],
    )
    .await?;
    check_blur(&signal, &floats(&blurred))?;

    // The page names the kernel it ran last (one of the three: a known-answer unit of
    // an earlier job may come last), whose it is, and links its source.
    let ids: Vec<String> = ["saxpy", "mandelbrot", "blur"]
        .into_iter()
        .map(|name| {
            let kernel = example(name)?;
            anyhow::Ok(starling_api::manifest::content_id(
                &kernel.source,
                &kernel.manifest,
            ))
        })
        .collect::<Result<_, _>>()?;
    anyhow::ensure!(ids[0] == kernel_id);
    let named = browser
        .wait_text("kernel-source", Duration::from_secs(10), |t| {
            t.contains("registered by account")
        })
        .await?;
    anyhow::ensure!(
        ids.iter()
            .any(|id| named.starts_with(&format!("Kernel {}", &id[..12]))),
        "{named}"
    );

    // Every unit was settled by the native volunteer and one other wallet: the browser's.
    for job in [&id, &mandelbrot_id, &blur_id] {
        for unit in api.units(job).await? {
            anyhow::ensure!(unit.valid_wallets.len() >= 2, "{unit:?}");
            anyhow::ensure!(
                unit.valid_wallets.iter().any(|w| *w != native_wallet),
                "the browser computed none of {unit:?}"
            );
        }
    }

    // "Run only built-in kernels", from the next Start: a second job of the kernel goes
    // to two native volunteers alone while the browser stays connected and asking.
    browser.click("stop").await?;
    browser
        .wait_text("status", Duration::from_secs(10), |t| t.starts_with("Idle"))
        .await?;
    browser.click("builtin-only").await?;
    let second_key = WalletKey::from_seed(rand::random());
    let second_file = data.path().join("second.key");
    std::fs::write(&second_file, second_key.to_hex())?;
    let _second = Volunteer::start_with(
        &relay.url(),
        &["--key-file", &second_file.display().to_string()],
    )?;
    browser.click("start").await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while api.stats().await?.volunteers < 3 {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "three volunteers connected"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = 3 * 65_536;
    let inputs = [
        ("a", vec![2.0f32]),
        ("x", vec![1.0; m]),
        ("y", vec![0.25; m]),
    ]
    .into_iter()
    .map(|(name, values)| input(name, f32_bytes(&values)))
    .collect();
    let second_job = api
        .client()
        .submit_multipart(&SubmitJob::new(kernel_id, json!({"n": m})), inputs, None)
        .await?;
    let second_id = second_job.id.to_string();
    api.wait_done(&second_id, Duration::from_secs(240)).await?;
    let natives = [native_wallet, second_key.address().to_string()];
    for unit in api.units(&second_id).await? {
        anyhow::ensure!(
            unit.valid_wallets.iter().all(|w| natives.contains(w)),
            "a built-in-only browser computed {unit:?}"
        );
    }
    Ok(())
}
