//! `cargo bench -p starling-e2e --bench browser_native`: the same kernel and unit in
//! headless Chromium's WebGPU and in native wgpu, on one device (issue 26, goal 5).
//!
//! Chromium serves WebGPU from the SwiftShader it bundles, whatever Vulkan driver the
//! machine has (docs/performance.md, "Browser against native on one device"). So the
//! native side loads that same SwiftShader library as its Vulkan driver
//! (`VK_ICD_FILENAMES`), and both run on one device. Where Chromium's WebGPU reaches a
//! real GPU, `STARLING_BENCH_VK_ICD=system` leaves native wgpu on the machine's drivers.
//!
//! Both sides run [`Engine::benchmark`], the volunteer page's "Measure": an n³ matmul,
//! one run to build the pipeline, then the best of three. In the browser that is the
//! real page, served by a real relay process, and its button; natively the volunteer's
//! own engine. Three sizes: the page's own 128³ (4.2 MFLOP, where a unit's fixed costs
//! show), 320³ (the relay's 64 MFLOP units) and 512³ (268 MFLOP, where the shader's own
//! speed does). Rounds alternate native and browser so that drift on a shared machine
//! hits both. The page is reloaded each round in one profile (a volunteer's return
//! visit, its matmul shader remembered), and natively a fresh engine is opened each round
//! (the shader remembered by the process). `STARLING_BENCH_ROUNDS` sets the rounds
//! (default 7).
//!
//! Needs the built UI (`scripts/build-ui.sh`) and the relay binary (the tests' debug
//! build, or `target/release` with `STARLING_E2E_PROFILE=release`).

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use starling_client::Engine;
use starling_e2e::browser::Browser;
use starling_e2e::{Relay, TempDir};
use std::time::Duration;

/// Debian's Chromium keeps its SwiftShader (and the Vulkan driver manifest naming it)
/// beside its binary.
const CHROMIUM_SWIFTSHADER: &str = "/usr/lib/chromium/vk_swiftshader_icd.json";

/// The matmul shader each key of the page's `localStorage` remembers.
const REMEMBERED_SHADERS: &str = r#"
const shaders = [];
for (let i = 0; i < localStorage.length; i++) {
  const key = localStorage.key(i);
  if (key.startsWith('starling.matmul-shader.')) shaders.push(localStorage.getItem(key));
}
return shaders.join(',');
"#;

/// One round's figure on one side.
struct Measured {
    gflops: f64,
    shader: String,
}

fn main() -> Result<()> {
    let rounds = match std::env::var("STARLING_BENCH_ROUNDS") {
        Ok(n) => n
            .parse::<usize>()
            .with_context(|| format!("STARLING_BENCH_ROUNDS={n:?} is not a count"))?,
        Err(_) => 7,
    };
    let icd =
        std::env::var("STARLING_BENCH_VK_ICD").unwrap_or_else(|_| CHROMIUM_SWIFTSHADER.into());
    if icd != "system" {
        if !std::path::Path::new(&icd).exists() {
            bail!("no Vulkan driver manifest at {icd} (STARLING_BENCH_VK_ICD)");
        }
        // Before any thread starts: the Vulkan loader reads it when wgpu opens an instance.
        std::env::set_var("VK_ICD_FILENAMES", &icd);
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(compare(rounds, &icd))
}

/// The sides of the units compared: the page's own, one of the relay's unit size
/// (2 x 320³ = 66 MFLOP against its 64), and a larger one.
const SIDES: [u32; 3] = [starling_client::BENCHMARK_N, 320, 512];

/// What the page's WebGPU adapter says it is (the device card shows only "software
/// adapter": Chromium hides adapter names unless asked).
const ADAPTER: &str = r#"
return navigator.gpu.requestAdapter().then(a => {
  if (!a) return 'no adapter';
  const i = a.info;
  return [i.vendor, i.architecture, i.device, i.description].filter(s => s).join(' ');
});
"#;

async fn compare(rounds: usize, icd: &str) -> Result<()> {
    let data = TempDir::new("bench-browser-native")?;
    let relay = Relay::start(data.path(), 64)?;
    let browser = Browser::start("bench-browser-native").await?;
    let native_device = Engine::detect().await.device_info();
    browser.goto(&relay.url()).await?;
    let page_device = browser.execute(ADAPTER, json!([])).await?;
    println!(
        "the volunteer page's benchmark (an n³ matmul, best of three after one run), \
         {rounds} rounds alternating native and browser; native wgpu's Vulkan driver: {icd}"
    );
    println!(
        "native:  {} ({}{})",
        native_device.adapter,
        native_device.backend,
        if native_device.fallback {
            ", software"
        } else {
            ""
        }
    );
    println!(
        "browser: {} (WebGPU's adapter info)",
        page_device.as_str().unwrap_or("?")
    );
    let mut ratios = Vec::new();
    for side in SIDES {
        println!(
            "{side}³ ({:.1} MFLOP)\n{:<6} {:>16} {:>8} {:>16} {:>8}",
            2.0 * f64::from(side).powi(3) / 1e6,
            "round",
            "native GFLOP/s",
            "shader",
            "browser GFLOP/s",
            "shader"
        );
        let mut native = Vec::new();
        let mut page = Vec::new();
        for round in 0..rounds {
            let (n, b) = (
                on_native(side).await?,
                on_page(&browser, &relay.url(), side).await?,
            );
            println!(
                "{:<6} {:>16.2} {:>8} {:>16.2} {:>8}",
                round + 1,
                n.gflops,
                n.shader,
                b.gflops,
                b.shader
            );
            native.push(n);
            page.push(b);
        }
        let (n, b) = (median(&native), median(&page));
        println!(
            "median: native {n:.2} GFLOP/s, browser {b:.2} GFLOP/s ({:.2}x)",
            b / n
        );
        ratios.push((side, b / n));
    }
    for (side, ratio) in ratios {
        println!("browser against native on this device, {side}³: {ratio:.2}x");
    }
    Ok(())
}

/// A fresh engine on this process's wgpu, as the native volunteer opens one.
async fn on_native(side: u32) -> Result<Measured> {
    let engine = Engine::detect().await;
    if let Some(why) = engine.gpu_error() {
        bail!("native wgpu found no adapter: {why}");
    }
    let gflops = engine.benchmark(side).await?;
    Ok(Measured {
        gflops,
        shader: engine
            .matmul_shader()
            .map_or("undecided", |s| s.as_str())
            .to_owned(),
    })
}

/// The volunteer page, (re)loaded, and its "Measure" pressed: what it measured.
async fn on_page(browser: &Browser, relay_url: &str, side: u32) -> Result<Measured> {
    browser
        .goto(&format!("{relay_url}/?benchmark={side}"))
        .await?;
    browser
        .wait_text("device", Duration::from_secs(60), |t| t != "Detecting…")
        .await?;
    browser.click("run-benchmark").await?;
    let label = format!("({side}³ matmul)");
    let shown = browser
        .wait_text("benchmark", Duration::from_secs(300), |t| {
            t.ends_with(&label)
        })
        .await?;
    let gflops = shown
        .split_whitespace()
        .next()
        .and_then(|g| g.parse::<f64>().ok())
        .with_context(|| format!("the page's benchmark reads {shown:?}"))?;
    let shader = match browser.execute(REMEMBERED_SHADERS, json!([])).await? {
        Value::String(s) if !s.is_empty() => s,
        _ => "undecided".to_owned(),
    };
    Ok(Measured { gflops, shader })
}

/// The median of the rounds' GFLOP/s.
fn median(rounds: &[Measured]) -> f64 {
    let mut figures: Vec<f64> = rounds.iter().map(|m| m.gflops).collect();
    figures.sort_by(f64::total_cmp);
    figures.get(figures.len() / 2).copied().unwrap_or(f64::NAN)
}
