//! `cargo bench -p starling-kernels --bench matmul_shapes`: the vec4 matmul shader's
//! template (`matmul::tiles`) over a sweep of tile shapes, the shader alone's GFLOP/s
//! against the scalar shader's in the same run, to find the shape a GPU runs fastest.
//! Every shape's output is checked against the scalar shader's.
//!
//! `STARLING_BENCH_MATMUL=n` sets the size (n x n x n, default 4096 on a hardware adapter
//! and 256 on a software one); `STARLING_PEAK_GFLOPS` adds the fraction of peak;
//! `STARLING_SHAPES_WGSL=DIR` writes each shape's shader there.

use rand::{Rng, SeedableRng};
use serde_json::json;
use starling_kernels::matmul::tiles::{Shape, VOLUNTEER};
use starling_kernels::matmul::{outputs_agree, Matmul};
use starling_kernels::{Catalog, Gpu, GpuDispatch, NamedInputs};
use std::fmt::Write;
use std::time::{Duration, Instant};

/// The shapes compared with the volunteers' one: the shape before this bench, and the
/// best few of a first sweep of 25 on an H200 with their neighbours in each direction.
/// Shapes beyond WebGPU's default limits are measured too, marked native: a native
/// volunteer could ask for them.
fn shapes() -> Vec<Shape> {
    let s = |bm, bn, bk, tm, tn, prefetch, stages| Shape {
        bm,
        bn,
        bk,
        tm,
        tn,
        prefetch,
        stages,
        unroll: true,
    };
    vec![
        // The volunteers' shape before this bench (128x128x16, 8x8 a thread).
        Shape {
            prefetch: false,
            unroll: false,
            ..s(128, 128, 16, 8, 8, false, 1)
        },
        s(128, 128, 16, 8, 8, true, 1),
        Shape {
            unroll: false,
            ..VOLUNTEER
        },
        Shape {
            prefetch: false,
            ..VOLUNTEER
        },
        s(128, 128, 16, 8, 16, true, 1),
        s(128, 128, 8, 8, 16, true, 2),
        s(64, 128, 16, 8, 16, true, 1),
        s(128, 64, 16, 8, 16, true, 1),
        s(64, 64, 16, 4, 4, true, 2),
        s(128, 128, 32, 8, 16, true, 1),
        s(128, 128, 16, 8, 16, true, 2),
        s(128, 256, 16, 8, 16, true, 1),
        s(256, 128, 16, 16, 8, true, 1),
        s(256, 128, 8, 16, 8, true, 2),
        VOLUNTEER,
    ]
}

/// Median of repeated runs: at least 3, and at least ~`budget` of work.
fn time<F: FnMut() -> Result<(), String>>(
    budget: Duration,
    mut run: F,
) -> Result<Duration, String> {
    run()?;
    let mut samples = Vec::new();
    let started = Instant::now();
    while samples.len() < 3 || (started.elapsed() < budget && samples.len() < 30) {
        let t = Instant::now();
        run()?;
        samples.push(t.elapsed());
    }
    samples.sort();
    Ok(samples[samples.len() / 2])
}

/// The shader's own time per dispatch: runs of `REPEATS` dispatches against runs of one,
/// so that upload and read-back cancel out. Many dispatches, so that the shader's time
/// dwarfs how much an upload's varies: with 9, one H200 gave its fastest shape 54 and then
/// 34 TFLOP/s in two runs.
fn shader_time(gpu: &Gpu, d: &GpuDispatch, input: &[u8]) -> Result<Duration, String> {
    const REPEATS: u32 = 65;
    let budget = Duration::from_millis(600);
    let run = |dispatches| {
        time(budget, || {
            pollster::block_on(gpu.run_repeated(d, input, dispatches))
                .map(drop)
                .map_err(|e| e.to_string())
        })
    };
    let once = run(1)?;
    let repeated = run(REPEATS)?;
    Ok(repeated.saturating_sub(once) / (REPEATS - 1))
}

fn main() {
    let gpu = match pollster::block_on(Gpu::new()) {
        Ok(gpu) => gpu,
        Err(e) => {
            println!("no wgpu adapter ({e}); nothing to measure");
            return;
        }
    };
    let adapter = gpu.adapter();
    println!(
        "adapter: {} ({}, {})",
        adapter.name,
        adapter.backend,
        if adapter.software {
            "software"
        } else {
            "hardware"
        }
    );
    let n: u32 = std::env::var("STARLING_BENCH_MATMUL")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(if adapter.software { 256 } else { 4096 });
    let peak: Option<f64> = std::env::var("STARLING_PEAK_GFLOPS")
        .ok()
        .and_then(|v| v.parse().ok());
    let wgsl_dir = std::env::var_os("STARLING_SHAPES_WGSL").map(std::path::PathBuf::from);

    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut inputs = NamedInputs::new();
    for name in ["a", "b"] {
        inputs.insert(
            name.into(),
            (0..n * n)
                .flat_map(|_| rng.random_range(-1.0f32..1.0).to_le_bytes())
                .collect(),
        );
    }
    let params = json!({"m": n, "k": n, "n": n});
    let catalog = Catalog::builtin();
    let result = (|| -> Result<(), String> {
        let kernel = catalog.get("matmul").map_err(|e| e.to_string())?;
        let plan = kernel
            .plan(&params, &inputs, u64::MAX)
            .map_err(|e| e.to_string())?;
        let unit = plan.units.first().ok_or("no unit")?;
        let input = kernel
            .unit_input(&params, &plan.input, unit)
            .map_err(|e| e.to_string())?;
        let flops = kernel.unit_flops(unit).map_err(|e| e.to_string())? as f64;
        let unit_params = serde_json::from_str(unit).map_err(|e| e.to_string())?;
        let today = kernel
            .gpu_dispatch(unit, &input)
            .map_err(|e| e.to_string())?;
        let vec4 = Matmul::gpu_dispatch_vec4(&unit_params, &input)
            .map_err(|e| e.to_string())?
            .ok_or("n is not a multiple of 4")?;
        let expected = pollster::block_on(gpu.run(&today, &input)).map_err(|e| e.to_string())?;
        println!(
            "{n}x{n}x{n}: {:.1} GFLOP a unit; GF/s of the shader alone, ratio to today's \
             scalar shader",
            flops / 1e9
        );
        let report = |name: &str, d: Duration, base: Option<Duration>| {
            let rate = flops / d.as_secs_f64().max(1e-12) / 1e9;
            let mut line = format!("{name:<28} {rate:>10.1} GF/s");
            if let Some(base) = base {
                let _ = write!(line, "  {:>5.2}x", base.as_secs_f64() / d.as_secs_f64());
            }
            if let Some(peak) = peak {
                let _ = write!(line, "  {:>5.1}% of peak", 100.0 * rate / peak);
            }
            println!("{line}");
            rate
        };
        let scalar_time = shader_time(&gpu, &today, &input)?;
        report(
            "today: scalar (shader.wgsl)",
            scalar_time,
            Some(scalar_time),
        );
        let vec4_time = shader_time(&gpu, &vec4, &input)?;
        report("today: vec4 (VOLUNTEER)", vec4_time, Some(scalar_time));
        let mut best: Option<(f64, Shape)> = None;
        for shape in shapes() {
            // WebGPU's defaults, which every browser grants; bigger shapes are native-only.
            let portable = shape.fits(256, 16 * 1024);
            if !shape.fits(1024, 48 * 1024) {
                println!("{:<28} does not fit the template", shape.name());
                continue;
            }
            let source = shape.wgsl();
            if let Some(dir) = &wgsl_dir {
                let file = dir.join(format!("{}.wgsl", shape.name().replace([' ', 'x'], "_")));
                let _ = std::fs::create_dir_all(dir);
                let _ = std::fs::write(file, &source);
            }
            let d = GpuDispatch {
                // Each shape's own pipeline: the cache is keyed by label.
                label: Box::leak(shape.name().into_boxed_str()),
                shader: Box::leak(source.into_boxed_str()),
                workgroups: [n.div_ceil(shape.bn), n.div_ceil(shape.bm), 1],
                ..vec4.clone()
            };
            let got = match pollster::block_on(gpu.run(&d, &input)) {
                Ok(got) => got,
                Err(e) => {
                    println!("{:<28} failed: {e}", shape.name());
                    continue;
                }
            };
            if !outputs_agree(n, &got, &expected) {
                println!("{:<28} output DIFFERS from today's shader", shape.name());
                continue;
            }
            let t = shader_time(&gpu, &d, &input)?;
            let name = format!(
                "{}{}",
                shape.name(),
                if portable { "" } else { " (native)" }
            );
            let rate = report(&name, t, Some(scalar_time));
            if portable && best.is_none_or(|(r, _)| rate > r) {
                best = Some((rate, shape));
            }
        }
        if let Some((rate, shape)) = best {
            println!(
                "fastest within WebGPU's default limits: {} at {rate:.1} GF/s",
                shape.name()
            );
        }
        Ok(())
    })();
    if let Err(e) = result {
        println!("failed: {e}");
    }
}
