//! `cargo bench -p starling-kernels`: per kernel and size, GFLOP/s of one work unit on the
//! wgpu adapter and on the CPU reference, measured in the same run, and their ratio.
//!
//! GPU times are what a volunteer sees per unit: upload, dispatch and read-back included
//! (the pipeline is compiled in a warm-up run first). Set `STARLING_PEAK_GFLOPS` to the
//! adapter's FP32 peak to also print the fraction of peak reached. Set
//! `STARLING_BENCH_QUICK=1` for one small size per kernel, `STARLING_BENCH_MATMUL=1024,4096`
//! for other matmul sizes. On a hardware adapter the "shader" column times the shader alone
//! (see `shader_time`), which is what a fraction of peak should be measured on.

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use starling_kernels::{Catalog, Gpu, GpuDispatch, NamedInputs};
use std::time::{Duration, Instant};

/// Units bigger than this skip the single-threaded CPU reference (a 4096³ matmul would
/// take about ten seconds a run there).
const CPU_MAX_GFLOP: f64 = 20.0;

/// Dispatches per run when timing a shader alone, at first (see [`shader_time_anywhere`]).
const SHADER_REPEATS: u32 = 9;
/// Most extra dispatches a shader's timing grows to.
const MAX_EXTRA_DISPATCHES: u32 = 128;

/// One benchmarked job: a kernel, its parameters and inputs, planned as a single unit.
struct Case {
    kernel: &'static str,
    label: String,
    params: Value,
    inputs: NamedInputs,
}

fn random_f32(rng: &mut impl Rng, count: usize) -> Vec<u8> {
    (0..count)
        .flat_map(|_| rng.random_range(-1.0f32..1.0).to_le_bytes())
        .collect()
}

fn cases(quick: bool) -> Vec<Case> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut cases = Vec::new();
    let sizes: Vec<u32> = match std::env::var("STARLING_BENCH_MATMUL") {
        Ok(list) => list
            .split(',')
            .filter_map(|v| v.trim().parse().ok())
            .collect(),
        Err(_) if quick => vec![16, 128],
        Err(_) => vec![256, 512, 1024],
    };
    for n in sizes {
        let mut inputs = NamedInputs::new();
        inputs.insert("a".into(), random_f32(&mut rng, (n * n) as usize));
        inputs.insert("b".into(), random_f32(&mut rng, (n * n) as usize));
        cases.push(Case {
            kernel: "matmul",
            label: format!("{n}x{n}x{n}"),
            params: json!({"m": n, "k": n, "n": n}),
            inputs,
        });
    }
    let nets: &[(&[u32], u32)] = if quick {
        &[(&[64, 64, 10], 64)]
    } else {
        &[(&[784, 512, 256, 10], 256), (&[1024, 1024, 1024, 1024], 64)]
    };
    for &(layers, batch) in nets {
        let weights: usize = layers
            .windows(2)
            .map(|w| (w[0] * w[1] + w[1]) as usize)
            .sum();
        let mut inputs = NamedInputs::new();
        // Weights scaled so activations stay O(1) through the layers, like a trained net.
        let scale = 1.0 / (layers[0] as f32).sqrt();
        inputs.insert(
            "weights".into(),
            (0..weights)
                .flat_map(|_| (rng.random_range(-1.0f32..1.0) * scale).to_le_bytes())
                .collect(),
        );
        inputs.insert(
            "inputs".into(),
            random_f32(&mut rng, (batch * layers[0]) as usize),
        );
        cases.push(Case {
            kernel: "mlp",
            label: format!("{layers:?}x{batch}"),
            params: json!({"layers": layers, "batch": batch, "output": "softmax"}),
            inputs,
        });
    }
    for samples in if quick {
        [1u64 << 20].as_slice()
    } else {
        &[1 << 22, 1 << 24]
    } {
        cases.push(Case {
            kernel: "montecarlo",
            label: format!("2^{} samples", samples.ilog2()),
            params: json!({"samples": samples, "seed": 7}),
            inputs: NamedInputs::new(),
        });
    }
    for (side, spp) in if quick {
        [(32u32, 4u32)].as_slice()
    } else {
        &[(64, 16), (128, 16)]
    } {
        cases.push(Case {
            kernel: "render",
            label: format!("{side}x{side} {spp}spp"),
            params: json!({"width": side, "height": side, "samples_per_pixel": spp, "seed": 1}),
            inputs: NamedInputs::new(),
        });
    }
    cases
}

/// Median of repeated runs: at least 3, and at least ~1 s of work.
fn time<F: FnMut() -> Result<(), String>>(mut run: F) -> Result<Duration, String> {
    run()?; // warm-up: pipeline compilation, caches
    let mut samples = Vec::new();
    let started = Instant::now();
    while samples.len() < 3 || (started.elapsed() < Duration::from_secs(1) && samples.len() < 50) {
        let t = Instant::now();
        run()?;
        samples.push(t.elapsed());
    }
    samples.sort();
    Ok(samples[samples.len() / 2])
}

/// The first, untuned matmul shader with the tuned one's buffers, to show what tuning bought.
fn matmul_baseline(tuned: &GpuDispatch) -> GpuDispatch {
    let word = |i: usize| {
        let mut w = [0u8; 4];
        w.copy_from_slice(&tuned.uniforms[4 * i..4 * i + 4]);
        u32::from_le_bytes(w)
    };
    let (rows, n) = (word(0), word(2));
    GpuDispatch {
        label: "matmul-16x16-baseline",
        shader: include_str!("matmul_16x16.wgsl"),
        workgroups: [n.div_ceil(16), rows.div_ceil(16), 1],
        ..tuned.clone()
    }
}

/// [`shader_time`] on any adapter, software ones included: for comparing two shaders
/// in the same run, where upload and read-back cancel out either way.
fn shader_time_anywhere(gpu: &Gpu, d: &GpuDispatch, input: &[u8]) -> Result<Duration, String> {
    let run = |dispatches| {
        time(|| {
            pollster::block_on(gpu.run_repeated(d, input, dispatches))
                .map(drop)
                .map_err(|e| e.to_string())
        })
    };
    let once = run(1)?;
    // Enough dispatches that their time outweighs twice a run of one: on a fast GPU a big
    // unit's transfers vary by more than a few dispatches take (an H200 read one shader
    // at 54 and then 34 TFLOP/s with 8 extra).
    let mut extra = SHADER_REPEATS - 1;
    loop {
        let repeated = run(1 + extra)?;
        let shader = repeated.saturating_sub(once);
        if shader >= 2 * once || extra >= MAX_EXTRA_DISPATCHES {
            if shader.is_zero() {
                return Err("the shader's time was lost in the transfers'".into());
            }
            return Ok(shader / extra);
        }
        extra *= 4;
    }
}

/// The shader's own time per dispatch on a hardware adapter ([`shader_time_anywhere`]).
/// `None` on a software adapter, where upload and read-back are cheap and the repeats
/// would only slow the run.
fn shader_time(gpu: &Gpu, d: &GpuDispatch, input: &[u8]) -> Result<Option<Duration>, String> {
    if gpu.adapter().software {
        return Ok(None);
    }
    shader_time_anywhere(gpu, d, input).map(Some)
}

/// A figure, or "-" where it was not measured.
fn figure(value: Option<f64>) -> String {
    value.map_or("-".to_owned(), |v| format!("{v:.2}"))
}

fn gflops(flops: u64, d: Duration) -> f64 {
    flops as f64 / d.as_secs_f64() / 1e9
}

fn main() {
    // `cargo bench` passes `--bench`; there are no options to parse beyond the env vars.
    let quick = std::env::var_os("STARLING_BENCH_QUICK").is_some();
    let peak: Option<f64> = std::env::var("STARLING_PEAK_GFLOPS")
        .ok()
        .and_then(|v| v.parse().ok());
    let catalog = Catalog::builtin();
    let gpu = match pollster::block_on(Gpu::new()) {
        Ok(gpu) => Some(gpu),
        Err(e) => {
            println!("no wgpu adapter ({e}); CPU figures only");
            None
        }
    };
    if let Some(gpu) = &gpu {
        let a = gpu.adapter();
        println!(
            "adapter: {} ({}, {})",
            a.name,
            a.backend,
            if a.software { "software" } else { "hardware" }
        );
    }
    println!(
        "{:<11} {:<26} {:>10} {:>10} {:>10} {:>11} {:>10} {:>10} {:>8}",
        "kernel",
        "size",
        "unit GFLOP",
        "GPU ms",
        "GPU GF/s",
        "shader GF/s",
        "CPU ms",
        "CPU GF/s",
        "GPU/CPU"
    );
    for case in cases(quick) {
        let kernel = match catalog.get(case.kernel) {
            Ok(k) => k,
            Err(e) => {
                println!("{:<11} skipped: {e}", case.kernel);
                continue;
            }
        };
        let plan = match kernel.plan(&case.params, &case.inputs, u64::MAX) {
            Ok(plan) => plan,
            Err(e) => {
                println!("{:<11} {:<16} invalid case: {e}", case.kernel, case.label);
                continue;
            }
        };
        let Some(unit) = plan.units.first() else {
            continue;
        };
        let result = (|| -> Result<(), String> {
            let input = kernel
                .unit_input(&case.params, &plan.input, unit)
                .map_err(|e| e.to_string())?;
            let flops = kernel.unit_flops(unit).map_err(|e| e.to_string())?;
            let cpu = if flops as f64 <= CPU_MAX_GFLOP * 1e9 {
                Some(time(|| {
                    kernel
                        .run_cpu(unit, &input)
                        .map(drop)
                        .map_err(|e| e.to_string())
                })?)
            } else {
                None
            };
            let (gpu_ms, gpu_rate, shader_rate) = match &gpu {
                Some(gpu) => {
                    let d = time(|| {
                        pollster::block_on(catalog.run_unit(Some(gpu), case.kernel, unit, &input))
                            .map(drop)
                            .map_err(|e| e.to_string())
                    })?;
                    let dispatch = kernel
                        .gpu_dispatch(unit, &input)
                        .map_err(|e| e.to_string())?;
                    let shader = shader_time(gpu, &dispatch, &input)?;
                    (
                        d.as_secs_f64() * 1e3,
                        gflops(flops, d),
                        shader.map(|s| gflops(flops, s)),
                    )
                }
                None => (f64::NAN, f64::NAN, None),
            };
            let cpu_rate = cpu.map(|c| gflops(flops, c));
            print!(
                "{:<11} {:<26} {:>10.3} {:>10.2} {:>10.2} {:>11} {:>10} {:>10} {:>8}",
                case.kernel,
                case.label,
                flops as f64 / 1e9,
                gpu_ms,
                gpu_rate,
                figure(shader_rate),
                figure(cpu.map(|c| c.as_secs_f64() * 1e3)),
                figure(cpu_rate),
                cpu_rate.map_or("-".to_owned(), |c| format!("{:.2}x", gpu_rate / c)),
            );
            // FP32 peak only means something for matmul: the other kernels' FLOP counts
            // include integer and transcendental work that does not run at FMA rate.
            if let (Some(peak), "matmul") = (peak, case.kernel) {
                print!(
                    "  {:.1}% of peak",
                    100.0 * shader_rate.unwrap_or(gpu_rate) / peak
                );
            }
            println!();
            if let (Some(gpu), "matmul") = (&gpu, case.kernel) {
                let tuned = kernel
                    .gpu_dispatch(unit, &input)
                    .map_err(|e| e.to_string())?;
                let baseline = matmul_baseline(&tuned);
                let d = time(|| {
                    pollster::block_on(gpu.run(&baseline, &input))
                        .map(drop)
                        .map_err(|e| e.to_string())
                })?;
                let shader = shader_time(gpu, &baseline, &input)?.map(|s| gflops(flops, s));
                println!(
                    "{:<11} {:<26} {:>10} {:>10.2} {:>10.2} {:>11}   tuned/baseline {:.2}x{}",
                    "  baseline",
                    "16x16 tiles",
                    "",
                    d.as_secs_f64() * 1e3,
                    gflops(flops, d),
                    figure(shader),
                    gpu_rate / gflops(flops, d),
                    match (shader_rate, shader) {
                        (Some(t), Some(b)) => format!(" (shader alone {:.2}x)", t / b),
                        _ => String::new(),
                    }
                );
            }
            if let (Some(gpu), "matmul") = (&gpu, case.kernel) {
                let tuned = kernel
                    .gpu_dispatch(unit, &input)
                    .map_err(|e| e.to_string())?;
                let unit_params = serde_json::from_str(unit).map_err(|e| e.to_string())?;
                let candidate =
                    starling_kernels::matmul::Matmul::gpu_dispatch_vec4(&unit_params, &input)
                        .map_err(|e| e.to_string())?;
                if let Some(candidate) = candidate {
                    let k = u32::from_le_bytes([
                        tuned.uniforms[4],
                        tuned.uniforms[5],
                        tuned.uniforms[6],
                        tuned.uniforms[7],
                    ]);
                    let expected =
                        pollster::block_on(gpu.run(&tuned, &input)).map_err(|e| e.to_string())?;
                    let got = pollster::block_on(gpu.run(&candidate, &input))
                        .map_err(|e| e.to_string())?;
                    let agrees = starling_kernels::matmul::outputs_agree(k, &got, &expected);
                    let today = shader_time_anywhere(gpu, &tuned, &input)?;
                    let next = shader_time_anywhere(gpu, &candidate, &input)?;
                    println!(
                        "{:<11} {:<26} {:>10} {:>10} {:>10} {:>11}   shader alone: candidate \
                         {:.2} GF/s, today's {:.2} GF/s: {:.2}x; outputs {}",
                        "  candidate",
                        "vec4 loads, 8x16 tiles",
                        "",
                        "",
                        "",
                        figure(Some(gflops(flops, next))),
                        gflops(flops, next),
                        gflops(flops, today),
                        today.as_secs_f64() / next.as_secs_f64().max(1e-9),
                        if agrees { "agree" } else { "DIFFER" }
                    );
                    // What a volunteer's trial on this unit decides, and what it costs
                    // against the unit itself (`matmul::tune`).
                    let epoch = std::time::Instant::now();
                    let clock = || epoch.elapsed().as_secs_f64() * 1e3;
                    let started = clock();
                    let trial = pollster::block_on(starling_kernels::matmul::tune::trial(
                        gpu,
                        &unit_params,
                        &input,
                        clock,
                    ))
                    .map_err(|e| e.to_string())?;
                    let took = clock() - started;
                    if let Some(trial) = trial {
                        println!(
                            "{:<11} {:<26} scalar {:.2} ms, vec4 {:.2} ms for {} dispatches: \
                             keeps {}; the trial took {:.0} ms, {:.1}x one unit's {:.1} ms",
                            "  trial",
                            "on this unit",
                            trial.scalar_ms,
                            trial.vec4_ms,
                            trial.dispatches,
                            trial.chosen.map_or("nothing (cannot tell)", |c| c.as_str()),
                            took,
                            took / gpu_ms.max(1e-9),
                            gpu_ms,
                        );
                    }
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            println!("{:<11} {:<16} failed: {e}", case.kernel, case.label);
        }
    }
}
