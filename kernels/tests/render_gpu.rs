//! The render kernel's WGSL on a real wgpu adapter (lavapipe on CI) against its CPU
//! reference.

use rand::{Rng, SeedableRng};
use starling_kernels::render::{
    outputs_agree, Render, RenderParams, RenderUnit, MAX_BOUNCES, MAX_SPP, OUTLIERS_PER_10K,
    OUTLIER_BASE, TOLERANCE,
};
use starling_kernels::{Catalog, KernelSpec, NamedInputs, UnitSpec};
use support::gpu::gpu;
use support::render_divergence::divergence_histogram;

mod support;

fn run_gpu(unit: &RenderUnit) -> Vec<u8> {
    let dispatch = Render::gpu_dispatch(unit, &[]).expect("valid unit");
    pollster::block_on(gpu().run(&dispatch, &[])).expect("gpu run")
}

/// Pixels whose channels differ by more than [`TOLERANCE`], and the largest difference of
/// any channel in units of one sample (difference * spp).
fn divergence(unit: &RenderUnit, a: &[u8], b: &[u8]) -> (usize, f32) {
    let (outliers, worst, _) = divergence_histogram(unit, a, b);
    (outliers, worst)
}

#[test]
fn render_on_gpu_agrees_with_cpu_reference_on_random_tiles() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5245_4e44);
    for case in 0..6 {
        let params = RenderParams {
            width: rng.random_range(8..120),
            height: rng.random_range(8..120),
            samples_per_pixel: rng.random_range(1..12),
            seed: rng.random(),
            max_bounces: rng.random_range(1..7),
        };
        // Log-uniform from one pixel per unit to the whole image.
        let target = 1u64 << rng.random_range(10..36);
        let units = Render::split(&params, target);
        let unit = units[rng.random_range(0..units.len())];
        let on_gpu = run_gpu(&unit);
        let on_cpu = Render::run_cpu(&unit, &[]).expect("cpu run");
        let (outliers, worst) = divergence(&unit, &on_gpu, &on_cpu);
        eprintln!(
            "case {case}: {unit:?}: {outliers} of {} pixels differ by > {TOLERANCE}, \
             worst by {worst} samples",
            unit.w * unit.h
        );
        assert!(
            outputs_agree(&unit, &on_gpu, &on_cpu),
            "GPU and CPU disagree on {unit:?}"
        );
    }
}

/// The longest loops the limits allow: llvmpipe silently stops an invocation's loops after
/// 65535 iterations in all, so a shader that loops more than that per pixel comes back
/// darker on lavapipe (see `MAX_BOUNCES`).
#[test]
fn render_on_gpu_completes_the_most_samples_and_bounces() {
    let unit = RenderUnit {
        x0: 90,
        y0: 60,
        w: 2,
        h: 2,
        width: 256,
        height: 256,
        samples_per_pixel: MAX_SPP,
        seed: 3,
        max_bounces: MAX_BOUNCES,
    };
    let on_gpu = run_gpu(&unit);
    let on_cpu = Render::run_cpu(&unit, &[]).expect("cpu run");
    let (outliers, worst) = divergence(&unit, &on_gpu, &on_cpu);
    eprintln!("{outliers} of 4 pixels differ by > {TOLERANCE}, worst by {worst} samples");
    assert!(
        outputs_agree(&unit, &on_gpu, &on_cpu),
        "{on_gpu:?} {on_cpu:?}"
    );
    // Tighter than the verifier: no pixel may be off by more than a few samples.
    assert!(worst < 16.0, "{worst}");
}

fn decode(png_bytes: &[u8]) -> (u32, u32, Vec<u8>) {
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = decoder.read_info().expect("a PNG header");
    let mut buf = vec![0; reader.output_buffer_size().expect("small image")];
    let info = reader.next_frame(&mut buf).expect("one frame");
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

#[test]
fn merged_png_of_a_gpu_job_matches_the_cpu_one() {
    let catalog = Catalog::builtin();
    let kernel = catalog.get("render").expect("render is built in");
    let params = serde_json::json!({
        "width": 72, "height": 40, "samples_per_pixel": 6, "seed": 11, "max_bounces": 4,
    });
    let per_pixel = 6 * starling_kernels::render::flops_per_sample(4);
    let plan = kernel
        .plan(&params, &NamedInputs::new(), 24 * 24 * per_pixel)
        .expect("valid job");
    assert_eq!(plan.units.len(), 3 * 2);
    assert!(plan.input.is_empty());
    let mut gpu_outputs = Vec::new();
    let mut cpu_outputs = Vec::new();
    let mut allowance = 0;
    for unit in &plan.units {
        let input = kernel
            .unit_input(&params, &plan.input, unit)
            .expect("input");
        let on_gpu = pollster::block_on(catalog.run_unit(Some(gpu()), "render", unit, &input))
            .expect("gpu run");
        let on_cpu =
            pollster::block_on(catalog.run_unit(None, "render", unit, &input)).expect("cpu run");
        assert!(kernel.outputs_agree(unit, &on_gpu, &on_cpu).expect("unit"));
        let parsed: RenderUnit = serde_json::from_str(unit).expect("unit json");
        allowance += OUTLIER_BASE + (parsed.w * parsed.h) as usize * OUTLIERS_PER_10K / 10_000;
        gpu_outputs.push(on_gpu);
        cpu_outputs.push(on_cpu);
    }
    let (gw, gh, on_gpu) = decode(&kernel.merge(&params, &gpu_outputs).expect("merge"));
    let (cw, ch, on_cpu) = decode(&kernel.merge(&params, &cpu_outputs).expect("merge"));
    assert_eq!((gw, gh), (72, 40));
    assert_eq!((cw, ch), (72, 40));
    // Within 1e-3 linear, a channel moves by at most one 8-bit level (the sRGB curve's
    // steepest slope is 12.92 * 255 * 1e-3 = 3.3 levels, but only below 0.0031308: allow
    // 4); pixels beyond that are the few diverged ones outputs_agree allowed.
    let off = on_gpu
        .chunks_exact(3)
        .zip(on_cpu.chunks_exact(3))
        .filter(|(g, c)| g.iter().zip(c.iter()).any(|(x, y)| x.abs_diff(*y) > 4))
        .count();
    eprintln!("{off} pixels of the merged PNGs differ by more than 4 levels");
    assert!(
        off <= allowance,
        "{off} pixels differ, allowance {allowance}"
    );
}
