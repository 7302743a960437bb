//! The console following a 20,000-unit render job in real headless Chromium, while four
//! native volunteers compute it: no main-thread task over 200 ms (a `PerformanceObserver`
//! for long tasks), settled tiles are drawn with their own pixels while the job runs, the
//! picture they grow into equals the result pixel for pixel, and the result matches the
//! CPU reference on a sample of its tiles. Before the tile map read run-
//! length unit states and painted a canvas, and before the job card updated in place,
//! following such a job froze the tab for seconds at a time.

use anyhow::Context as _;
use starling_e2e::browser::Browser;
use starling_e2e::{Image, Relay, TempDir, Volunteer};
use starling_kernels::catalog::NamedInputs;
use starling_kernels::Catalog;
use std::time::{Duration, Instant};

/// Longest main-thread task the console may run while it follows the job.
const LONGEST_TASK_MS: f64 = 200.0;
/// 141 x 141 tiles of 8 x 8 pixels: 19,881 units at the relay's 1 MFLOP unit size.
const SIDE: u32 = 1128;
const SAMPLES_PER_PIXEL: u32 = 5;
/// Native volunteers computing the job.
const VOLUNTEERS: usize = 4;
/// Tiles checked against the CPU reference (the whole image on the CPU reference takes
/// minutes in a debug build).
const CHECKED_TILES: usize = 24;

/// The tile map's progress: (tiles computed, as its label states it; tiles whose pixels
/// it fetched and drew; tiles).
async fn tile_progress(browser: &Browser) -> anyhow::Result<Option<(u64, u64, u64)>> {
    let found = browser
        .execute(
            "const map = document.querySelector(\"[data-testid='tile-map']\");
             return map ? [map.getAttribute('aria-label'), map.dataset.fetched] : null;",
            serde_json::json!([]),
        )
        .await?;
    let (Some(label), Some(fetched)) = (found[0].as_str(), found[1].as_str()) else {
        return Ok(None);
    };
    // "Tiles of the image: N of M computed"
    let numbers: Vec<u64> = label
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    Ok(match (&numbers[..], fetched.parse()) {
        (&[done, total], Ok(fetched)) => Some((done, fetched, total)),
        _ => None,
    })
}

/// Pixels of the tile map's canvas that differ from the result image shown beside it
/// by more than one level in any channel, counted in the page: (differing, pixels).
const CANVAS_AGAINST_RESULT: &str = "
    const map = document.querySelector(\"[data-testid='tile-map']\");
    const img = document.querySelector(\"[data-testid='result-image']\");
    if (!map || !img || !img.complete || img.naturalWidth === 0) return null;
    const drawn = map.getContext('2d').getImageData(0, 0, map.width, map.height).data;
    const copy = document.createElement('canvas');
    copy.width = img.naturalWidth;
    copy.height = img.naturalHeight;
    const ctx = copy.getContext('2d');
    ctx.drawImage(img, 0, 0);
    const result = ctx.getImageData(0, 0, copy.width, copy.height).data;
    if (result.length !== drawn.length) return [-1, result.length / 4];
    let differing = 0;
    for (let i = 0; i < drawn.length; i += 4) {
      for (let c = 0; c < 3; c++) {
        if (Math.abs(drawn[i + c] - result[i + c]) > 1) { differing++; break; }
      }
    }
    return [differing, drawn.length / 4];";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_follows_a_20000_unit_render_without_freezing() -> anyhow::Result<()> {
    let data = TempDir::new("console-scale")?;
    let relay = Relay::start(data.path(), 1)?;
    let browser = Browser::start("console-scale").await?;
    browser.goto(&format!("{}/console", relay.url())).await?;
    browser
        .wait_text("kernel", Duration::from_secs(30), |t| t.contains("render"))
        .await?;
    browser.set_value("kernel", "render").await?;
    browser
        .wait_text("error-width", Duration::from_secs(5), |_| true)
        .await?;
    browser
        .set_value("api-key", relay.dev_key().unwrap_or_default())
        .await?;
    for (field, value) in [
        ("param-width", SIDE.to_string()),
        ("param-height", SIDE.to_string()),
        ("param-samples_per_pixel", SAMPLES_PER_PIXEL.to_string()),
        ("param-seed", "7".to_owned()),
        ("quorum", "1".to_owned()),
    ] {
        browser.set_value(field, &value).await?;
    }
    // Long tasks from here on: loading the app's wasm is not the console's doing.
    browser
        .execute(
            "window.__longTasks = [];
             new PerformanceObserver((list) => {
               for (const e of list.getEntries()) window.__longTasks.push(e.duration);
             }).observe({type: 'longtask'});",
            serde_json::json!([]),
        )
        .await?;
    browser.click("submit").await?;
    let id = browser
        .wait_text("job-id", Duration::from_secs(30), |t| !t.is_empty())
        .await?;
    let params = serde_json::json!({
        "width": SIDE, "height": SIDE, "samples_per_pixel": SAMPLES_PER_PIXEL, "seed": 7,
    });
    let plan = Catalog::builtin()
        .get("render")?
        .plan(&params, &NamedInputs::new(), 1_000_000)?;
    let api = relay.api();
    let job = api.job(&id).await?;
    assert_eq!(
        job.progress.units_total,
        plan.units.len() as i64,
        "the relay split the job as the reference below does"
    );
    assert!(job.progress.units_total >= 19_000, "{job:?}");

    // Volunteers only now, so the map is seen empty first and then filling in. Each
    // waits on a round trip per unit more than it computes (two settled 98 units/s here,
    // four 194/s, eight 233/s), so four halve the job's time over two.
    let _volunteers = (0..VOLUNTEERS)
        .map(|_| Volunteer::start(&relay.url()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let started = Instant::now();
    let mut seen_partway = None;
    loop {
        let state = browser.text("job-state").await?.unwrap_or_default();
        if state == "done" {
            break;
        }
        anyhow::ensure!(state != "failed", "the job failed");
        if let Some((done, fetched, total)) = tile_progress(&browser).await? {
            // Drawn with their own pixels while others are still computing.
            if fetched > 0 && done < total {
                seen_partway.get_or_insert((done, fetched, total));
            }
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "the job did not finish in 10 minutes: {:?}",
            api.job(&id).await?.progress
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let computing = started.elapsed();
    let long: Vec<f64> = serde_json::from_value(
        browser
            .execute("return window.__longTasks;", serde_json::json!([]))
            .await?,
    )?;
    let longest = long.iter().copied().fold(0.0, f64::max);
    println!(
        "console following {} units for {:.0} s: {} long tasks, longest {longest:.0} ms, \
         {:.0} ms in all; map seen part way at {seen_partway:?}",
        plan.units.len(),
        computing.as_secs_f64(),
        long.len(),
        long.iter().sum::<f64>(),
    );
    assert!(
        longest < LONGEST_TASK_MS,
        "the console blocked its main thread for {longest:.0} ms"
    );
    seen_partway.context("the tile map never drew a tile's pixels part way")?;
    browser
        .wait_text("result-image", Duration::from_secs(60), |_| true)
        .await?;
    // The picture the tiles grew into is the result, pixel for pixel.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (differing, pixels) = loop {
        let compared = browser
            .execute(CANVAS_AGAINST_RESULT, serde_json::json!([]))
            .await?;
        let fetched = tile_progress(&browser).await?;
        if let (Some([differing, pixels]), Some((_, fetched, total))) = (
            compared.as_array().map(|a| [a[0].as_i64(), a[1].as_i64()]),
            fetched,
        ) {
            if fetched == total {
                break (differing, pixels);
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the tile map did not finish drawing: {fetched:?}, {compared}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!("canvas against the result: {differing:?} of {pixels:?} pixels differ");
    assert_eq!(pixels, Some(i64::from(SIDE * SIDE)));
    assert_eq!(differing, Some(0), "the drawn tiles are not the result");

    // A sample of tiles spread over the image, each against the CPU reference.
    let kernel = Catalog::builtin();
    let kernel = kernel.get("render")?;
    let picks: Vec<usize> = (0..CHECKED_TILES)
        .map(|i| i * plan.units.len() / CHECKED_TILES + i % 7)
        .collect();
    let mut outputs = Vec::with_capacity(plan.units.len());
    for (i, unit) in plan.units.iter().enumerate() {
        let input = kernel.unit_input(&params, &plan.input, unit)?;
        outputs.push(if picks.contains(&i) {
            kernel.run_cpu(unit, &input)?
        } else {
            vec![0; kernel.output_len(unit)?]
        });
    }
    let expected = Image::from_png(&kernel.merge(&params, &outputs)?)?;
    let (status, png) = api.result(&id).await?;
    assert_eq!(status, 200);
    let got = Image::from_png(&png)?;
    assert_eq!((got.width, got.height), (SIDE, SIDE));
    let (mut pixels, mut off) = (0usize, 0usize);
    for &i in &picks {
        let unit: serde_json::Value = serde_json::from_str(&plan.units[i])?;
        let field = |name: &str| unit[name].as_u64().unwrap_or(0) as usize;
        for y in field("y0")..field("y0") + field("h") {
            for x in field("x0")..field("x0") + field("w") {
                let at = (y * SIDE as usize + x) * 3;
                let worst = (0..3)
                    .map(|c| got.rgb[at + c].abs_diff(expected.rgb[at + c]))
                    .max()
                    .unwrap_or(0);
                pixels += 1;
                if worst > 2 {
                    off += 1;
                }
            }
        }
    }
    assert!(
        off * 100 <= pixels,
        "{off} of {pixels} sampled pixels differ from the CPU reference by more than 2 levels"
    );
    Ok(())
}
