//! The console's form for a registered kernel (the Mandelbrot example), generated from
//! its manifest's parameters: listed by its description, quoted as the relay splits it,
//! submitted, and computed by native volunteers into the image the CPU computes.

use starling_api::manifest::KernelManifest;
use starling_api::RegisterKernel;
use starling_e2e::browser::Browser;
use starling_e2e::{Relay, TempDir, Volunteer};
use std::time::Duration;

fn first_number(text: &str) -> Option<u64> {
    text.split(|c: char| !c.is_ascii_digit() && c != ',')
        .map(|n| n.replace(',', ""))
        .find_map(|n| n.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_builds_a_registered_kernels_form_and_submits_it() -> anyhow::Result<()> {
    let data = TempDir::new("custom-console")?;
    // Fresh volunteers of the test's own: no wallet trusted on the built-ins anchors a
    // quorum here (relay-server/tests/custom_kernels.rs tests that rule).
    let relay = Relay::start_with(data.path(), 1, &["--vet-newcomers", "false"])?;
    let key = relay.dev_key().unwrap_or_default().to_owned();
    let api = relay.api();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/kernels");
    let manifest: KernelManifest =
        serde_json::from_str(&std::fs::read_to_string(dir.join("mandelbrot.json"))?)?;
    let source = std::fs::read_to_string(dir.join("mandelbrot.wgsl"))?;
    let kernel = api
        .client()
        .register_kernel(&RegisterKernel { source, manifest })
        .await?;
    let _volunteers = [
        Volunteer::start(&relay.url())?,
        Volunteer::start(&relay.url())?,
    ];

    let browser = Browser::start("custom-console").await?;
    browser.goto(&format!("{}/console", relay.url())).await?;
    browser
        .wait_text("kernel", Duration::from_secs(30), |t| {
            t.contains(&format!(
                "Mandelbrot escape counts, width x height pixels ({}…)",
                &kernel.id[..12]
            ))
        })
        .await?;
    browser.set_value("kernel", &kernel.id).await?;
    browser.set_value("api-key", &key).await?;
    // 256 x 600 pixels in bands of 256 rows (65,536 invocations): 3 units.
    for (field, value) in [
        ("param-width", "256"),
        ("param-height", "600"),
        ("param-max_iter", "64"),
    ] {
        browser
            .wait_text(field, Duration::from_secs(5), |_| true)
            .await?;
        browser.set_value(field, value).await?;
    }
    browser
        .wait_text("quote", Duration::from_secs(10), |t| {
            first_number(t) == Some(3)
        })
        .await?;
    browser.click("submit").await?;
    let id = browser
        .wait_text("job-id", Duration::from_secs(10), |t| t.len() == 36)
        .await?;
    let done = api.wait_done(&id, Duration::from_secs(120)).await?;
    anyhow::ensure!(done.kernel == kernel.id && done.quorum >= 2, "{done:?}");
    let (status, image) = api.result(&id).await?;
    anyhow::ensure!(status == 200);
    let expected: Vec<u8> = (0..600u32)
        .flat_map(|py| (0..256u32).map(move |px| escape_count(px, py, 64)))
        .flat_map(u32::to_le_bytes)
        .collect();
    anyhow::ensure!(image == expected, "the image differs from the CPU's");
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
