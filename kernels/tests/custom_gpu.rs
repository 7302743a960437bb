//! Custom kernels from their manifests (`examples/kernels/`) on a real wgpu adapter
//! (lavapipe on CI): planned, split, run unit by unit through `CustomKernel::run`,
//! merged, and compared with a CPU reference computed here.

use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use starling_api::manifest::{content_id, KernelManifest};
use starling_kernels::custom::{outputs_agree, CustomKernel};
use starling_kernels::{Kernel, NamedInputs};
use support::gpu::{floats, gpu};

mod support;

fn example(name: &str) -> CustomKernel {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/kernels");
    let source = std::fs::read_to_string(dir.join(format!("{name}.wgsl"))).expect("example source");
    let manifest: KernelManifest = serde_json::from_str(
        &std::fs::read_to_string(dir.join(format!("{name}.json"))).expect("example manifest"),
    )
    .expect("a manifest");
    CustomKernel::new(content_id(&source, &manifest), manifest, source).expect("a kernel")
}

/// Plans the job, runs every unit on the GPU, and merges: the job's result.
fn run_job(kernel: &CustomKernel, params: &Value, inputs: &NamedInputs) -> Vec<u8> {
    let plan = kernel.plan(params, inputs, 1).expect("a valid job");
    assert_eq!(kernel.unit_count(params, 1).ok(), Some(plan.units.len()));
    let outputs: Vec<Vec<u8>> = plan
        .units
        .iter()
        .map(|unit| {
            let input = kernel
                .unit_input(params, &plan.input, unit)
                .expect("unit input");
            let output = pollster::block_on(kernel.run(gpu(), unit, &input)).expect("GPU run");
            kernel.check_output(unit, &output).expect("the unit's size");
            output
        })
        .collect();
    kernel.merge(params, &outputs).expect("merge")
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[test]
fn saxpy_over_a_million_floats_equals_the_cpu_exactly() {
    let kernel = example("saxpy");
    let n = 1_000_000usize;
    let mut rng = rand::rngs::StdRng::seed_from_u64(25);
    let x: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let y: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let a = 2.5f32;
    let inputs = NamedInputs::from([
        ("a".to_owned(), f32_bytes(&[a])),
        ("x".to_owned(), f32_bytes(&x)),
        ("y".to_owned(), f32_bytes(&y)),
    ]);
    let result = run_job(&kernel, &json!({"n": n}), &inputs);
    let expected: Vec<f32> = x.iter().zip(&y).map(|(x, y)| a * x + y).collect();
    let got = floats(&result);
    assert_eq!(got.len(), n);
    let differing = got
        .iter()
        .zip(&expected)
        .filter(|(g, e)| g.to_bits() != e.to_bits())
        .count();
    assert_eq!(
        differing, 0,
        "{differing} of {n} differ from the CPU's a * x + y"
    );
}

/// A unit of SAXPY, whose x and y are sliced per unit, carries `a` and its own elements
/// of x and y, not the job's 8 MB: 16 units of a 10^6-float job send 8.4 MB in all
/// instead of 128 MB. A unit string claiming elements past the job's range is refused.
#[test]
fn a_sliced_unit_carries_only_its_own_elements() {
    let kernel = example("saxpy");
    let n = 1_000_000usize;
    let inputs = NamedInputs::from([
        ("a".to_owned(), f32_bytes(&[1.0])),
        ("x".to_owned(), f32_bytes(&vec![1.0; n])),
        ("y".to_owned(), f32_bytes(&vec![2.0; n])),
    ]);
    let params = json!({"n": n});
    let plan = kernel.plan(&params, &inputs, 1).expect("a valid job");
    let sizes: Vec<usize> = plan
        .units
        .iter()
        .map(|unit| {
            kernel
                .unit_input(&params, &plan.input, unit)
                .expect("unit input")
                .len()
        })
        .collect();
    assert_eq!(sizes[0], 4 + 2 * 4 * 65_536);
    assert_eq!(sizes.iter().sum::<usize>(), plans_total(&plan.units) * 4);
    let beyond = plan.units[0].replace("\"offset\":[0,0]", "\"offset\":[999999,0]");
    assert_ne!(beyond, plan.units[0], "the unit names its offset");
    assert!(kernel.unit_input(&params, &plan.input, &beyond).is_err());
}

/// Bytes/4 all of a SAXPY job's units receive: `a` each, and x and y once.
fn plans_total(units: &[String]) -> usize {
    units.len() + 2 * 1_000_000
}

/// The escape count of pixel (px, py) as the shader computes it, in 12-bit fixed point.
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

#[test]
fn a_mandelbrot_image_in_bands_of_rows_equals_the_cpu_exactly() {
    let kernel = example("mandelbrot");
    let (width, height, max_iter) = (768u32, 767u32, 200u32);
    let params = json!({"width": width, "height": height, "max_iter": max_iter});
    let plan = kernel.plan(&params, &NamedInputs::new(), 1).expect("plans");
    assert!(plan.units.len() > 1, "the image is cut into bands");
    let result = run_job(&kernel, &params, &NamedInputs::new());
    let got: Vec<u32> = result
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(got.len(), (width * height) as usize);
    let mut differing = Vec::new();
    for py in 0..height {
        for px in 0..width {
            let expected = escape_count(px, py, max_iter);
            if got[(py * width + px) as usize] != expected {
                differing.push((px, py));
            }
        }
    }
    assert!(
        differing.is_empty(),
        "{} pixels differ, first {:?}",
        differing.len(),
        differing.first()
    );
}

#[test]
fn a_blur_agrees_with_the_cpu_within_its_tolerance_and_a_changed_value_does_not() {
    let kernel = example("blur");
    let n = 200_000usize;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let signal: Vec<f32> = (0..n).map(|_| rng.random_range(-100.0f32..100.0)).collect();
    let inputs = NamedInputs::from([("signal".to_owned(), f32_bytes(&signal))]);
    let result = run_job(&kernel, &json!({"n": n}), &inputs);
    let expected: Vec<f32> = (0..n)
        .map(|i| {
            let left = signal[i.saturating_sub(1)];
            let right = signal[(i + 1).min(n - 1)];
            0.25 * left + 0.5 * signal[i] + 0.25 * right
        })
        .collect();
    let compare = kernel.manifest().compare;
    assert!(outputs_agree(compare, &result, &f32_bytes(&expected)));
    let mut wrong = expected.clone();
    wrong[n / 2] += 0.01;
    assert!(!outputs_agree(compare, &result, &f32_bytes(&wrong)));
}

#[test]
fn jobs_that_do_not_fit_the_manifest_are_refused_naming_the_field() {
    let kernel = example("saxpy");
    let floats_of = |n: usize| vec![0u8; 4 * n];
    let good = NamedInputs::from([
        ("a".to_owned(), floats_of(1)),
        ("x".to_owned(), floats_of(10)),
        ("y".to_owned(), floats_of(10)),
    ]);
    let field = |result: Result<_, starling_kernels::KernelError>| match result {
        Err(starling_kernels::KernelError::InvalidParam { field, .. })
        | Err(starling_kernels::KernelError::InvalidInput { field, .. }) => field,
        other => panic!(
            "not refused: {:?}",
            other.map(|_: starling_kernels::catalog::JobPlan| ())
        ),
    };
    assert!(kernel.plan(&json!({"n": 10}), &good, 1).is_ok());
    assert_eq!(field(kernel.plan(&json!({}), &good, 1)), "n");
    assert_eq!(field(kernel.plan(&json!({"n": 0}), &good, 1)), "n");
    assert_eq!(field(kernel.plan(&json!({"n": 16_777_217}), &good, 1)), "n");
    assert_eq!(field(kernel.plan(&json!({"n": "10"}), &good, 1)), "n");
    assert_eq!(field(kernel.plan(&json!({"n": 10, "m": 1}), &good, 1)), "m");
    assert_eq!(field(kernel.plan(&json!({"n": 11}), &good, 1)), "x");
    let mut missing = good.clone();
    missing.remove("y");
    assert_eq!(field(kernel.plan(&json!({"n": 10}), &missing, 1)), "y");
    let mut extra = good.clone();
    extra.insert("z".into(), floats_of(1));
    assert_eq!(field(kernel.plan(&json!({"n": 10}), &extra, 1)), "z");
    // No CPU path: a custom kernel never runs on a volunteer's CPU fallback.
    let plan = kernel.plan(&json!({"n": 10}), &good, 1).expect("plans");
    assert!(kernel.run_cpu(&plan.units[0], &plan.input).is_err());
    // A unit reaching outside its job is refused, not run.
    let outside = plan.units[0].replace("\"size\":[10,1]", "\"size\":[11,1]");
    assert_ne!(outside, plan.units[0]);
    assert!(kernel.dispatch(&outside).is_err());
    assert!(kernel.output_len(&outside).is_err());
}

#[test]
fn units_cover_the_range_once_in_order() {
    let saxpy = example("saxpy");
    let inputs = |n: usize| {
        NamedInputs::from([
            ("a".to_owned(), vec![0u8; 4]),
            ("x".to_owned(), vec![0u8; 4 * n]),
            ("y".to_owned(), vec![0u8; 4 * n]),
        ])
    };
    for n in [1usize, 65_535, 65_536, 65_537, 1_000_000] {
        let plan = saxpy.plan(&json!({"n": n}), &inputs(n), 1).expect("plans");
        let total: usize = plan
            .units
            .iter()
            .map(|u| saxpy.output_len(u).expect("a unit") / 4)
            .sum();
        assert_eq!(total, n);
        assert_eq!(plan.flops, 2 * n as u64);
    }
}
