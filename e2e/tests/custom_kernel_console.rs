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
    anyhow::ensure!(
        image == starling_e2e::examples::mandelbrot(256, 600, 64),
        "the image differs from the CPU's"
    );
    Ok(())
}
