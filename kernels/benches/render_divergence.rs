//! `cargo bench -p starling-kernels --bench render_divergence`: how often the wgpu adapter
//! and the CPU reference send a render sample down different paths, and how far that moves
//! pixels. This measurement sets `render::outputs_agree`'s allowance. Options:
//! `RENDER_SPPS=1,4,16` (samples per pixel), `RENDER_SEEDS=5`, `RENDER_TARGET_MFLOPS`
//! (tile size as the relay's `--unit-mflops` would make it; default 64x64 tiles).

use starling_kernels::render::{outputs_agree, Render, RenderParams, RenderUnit, TOLERANCE};
use starling_kernels::{KernelSpec, UnitSpec};
use support::gpu::gpu;
use support::render_divergence::divergence_histogram;

#[path = "../tests/support/mod.rs"]
mod support;
use std::time::Instant;

fn run_gpu(unit: &RenderUnit) -> Vec<u8> {
    let dispatch = Render::gpu_dispatch(unit, &[]).expect("valid unit");
    pollster::block_on(gpu().run(&dispatch, &[])).expect("gpu run")
}

fn main() {
    let spps: Vec<u32> = std::env::var("RENDER_SPPS")
        .ok()
        .map(|s| s.split(',').filter_map(|v| v.parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 4, 16, 64]);
    let seeds: Vec<u32> = std::env::var("RENDER_SEEDS")
        .ok()
        .map(|s| s.split(',').filter_map(|v| v.parse().ok()).collect())
        .unwrap_or_else(|| vec![5]);
    let size = 256;
    for (spp, seed) in spps
        .iter()
        .flat_map(|&spp| seeds.iter().map(move |&seed| (spp, seed)))
    {
        let params = RenderParams {
            width: size,
            height: size,
            samples_per_pixel: spp,
            seed,
            max_bounces: 5,
        };
        let per_pixel = u64::from(spp) * starling_kernels::render::flops_per_sample(5);
        // 64x64 tiles, or what the relay's --unit-mflops would give.
        let target = std::env::var("RENDER_TARGET_MFLOPS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(64 * 64 * per_pixel, |m| m * 1_000_000);
        let units = Render::split(&params, target);
        let (mut outliers, mut worst, mut pixels) = (0, 0f32, 0);
        let mut histogram = [0; 4];
        let mut most_in_a_tile = 0;
        let (mut gpu_s, mut cpu_s) = (0f64, 0f64);
        let mut rejected = 0;
        for unit in &units {
            let t = Instant::now();
            let on_gpu = run_gpu(unit);
            gpu_s += t.elapsed().as_secs_f64();
            let t = Instant::now();
            let on_cpu = Render::run_cpu(unit, &[]).expect("cpu run");
            cpu_s += t.elapsed().as_secs_f64();
            let (o, w, h) = divergence_histogram(unit, &on_gpu, &on_cpu);
            for (total, count) in histogram.iter_mut().zip(h) {
                *total += count;
            }
            most_in_a_tile = most_in_a_tile.max(o);
            outliers += o;
            worst = worst.max(w);
            pixels += (unit.w * unit.h) as usize;
            if !outputs_agree(unit, &on_gpu, &on_cpu) {
                rejected += 1;
            }
        }
        let n = units.len() as f64;
        eprintln!(
            "spp {spp:4} seed {seed}: {outliers} of {pixels} pixels ({:.4}%) differ by > \
             {TOLERANCE} (by <=1, <=2, <=3, >3 samples: {histogram:?}; at most \
             {most_in_a_tile} in a tile), worst {worst} samples, {rejected} of {} tiles \
             rejected; per {}x{} tile: GPU {:.3} s, CPU {:.3} s",
            100.0 * outliers as f64 / pixels as f64,
            units.len(),
            units[0].w,
            units[0].h,
            gpu_s / n,
            cpu_s / n,
        );
    }
}
