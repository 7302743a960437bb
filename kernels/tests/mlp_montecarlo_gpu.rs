//! The mlp and montecarlo shaders on a real wgpu adapter (lavapipe on CI) against their
//! CPU references: within `outputs_agree` for mlp, bit for bit for montecarlo.

use rand::{Rng, SeedableRng};
use starling_kernels::mlp::{tolerance_terms, Activation, Mlp, MlpParams, MlpUnit};
use starling_kernels::montecarlo::{
    philox4x32_10, MonteCarlo, MonteCarloParams, MonteCarloUnit, PHILOX_KAT,
};
use starling_kernels::{Catalog, GpuDispatch, KernelSpec, NamedInputs, UnitSpec};
use support::gpu::{floats, gpu};

mod support;

fn f32_bytes(values: impl IntoIterator<Item = f32>) -> Vec<u8> {
    values.into_iter().flat_map(f32::to_le_bytes).collect()
}

/// A random network: weights ~ U(-a, a) with a = gain sqrt(3 / fan_in), biases in
/// [-0.1, 0.1), inputs in [-1, 1).
fn random_job(rng: &mut impl Rng, layers: &[u32], batch: u32, gain: f32) -> NamedInputs {
    let mut weights = Vec::new();
    for pair in layers.windows(2) {
        let a = gain * (3.0 / pair[0] as f32).sqrt();
        weights.extend((0..pair[0] * pair[1]).map(|_| rng.random_range(-a..a)));
        weights.extend((0..pair[1]).map(|_| rng.random_range(-0.1f32..0.1)));
    }
    let inputs = (0..batch * layers[0]).map(|_| rng.random_range(-1.0f32..1.0));
    let mut named = NamedInputs::new();
    named.insert("weights".into(), f32_bytes(weights));
    named.insert("inputs".into(), f32_bytes(inputs));
    named
}

/// Largest |gpu - cpu| and its ratio to the tolerance of `outputs_agree`.
fn differences(unit: &MlpUnit, on_gpu: &[u8], on_cpu: &[u8]) -> (f32, f32) {
    let tol = tolerance_terms(&unit.layers, unit.output) as f32 * f32::EPSILON;
    floats(on_gpu)
        .iter()
        .zip(floats(on_cpu))
        .fold((0f32, 0f32), |(abs, ratio), (g, c)| {
            let d = (g - c).abs();
            (
                abs.max(d),
                ratio.max(d / (tol * g.abs().max(c.abs()).max(1.0))),
            )
        })
}

#[test]
fn mlp_on_gpu_agrees_with_cpu_reference_on_random_networks() {
    let catalog = Catalog::builtin();
    let kernel = catalog.get("mlp").expect("mlp is built in");
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x4d4c_5031);
    // Sizes around the 64-thread stride, the extremes, and random ones.
    let mut cases: Vec<(Vec<u32>, u32, f32)> = vec![
        (vec![1, 1], 3, 1.0),
        (vec![63, 64, 65], 5, 1.0),
        (vec![784, 128, 10], 7, 1.0),
        (vec![1024, 1024, 1024], 2, 1.4),
        (vec![16, 128, 1000], 3, 2.0),
        (vec![8, 33, 33, 33, 33, 33, 33, 33, 2], 9, 1.4),
        // The largest network: 8 layers of 1024 run long loops in every invocation.
        (vec![1024; 9], 1, 1.0),
    ];
    for _ in 0..6 {
        let depth = rng.random_range(2..=5);
        let layers = (0..depth).map(|_| rng.random_range(1..200)).collect();
        cases.push((layers, rng.random_range(1..40), rng.random_range(0.5..3.0)));
    }
    // Per output activation: largest |gpu - cpu| and its ratio to the tolerance.
    let mut worst = [(0f32, 0f32); 2];
    for (layers, batch, gain) in cases {
        for output in [Activation::Softmax, Activation::Linear] {
            let params = MlpParams {
                layers: layers.clone(),
                batch,
                output,
            };
            let json = serde_json::to_value(&params).expect("plain struct");
            let inputs = random_job(&mut rng, &layers, batch, gain);
            // Units of a few rows, so that row offsets are exercised too.
            let row_flops = Mlp::unit_flops(&MlpUnit {
                row_start: 0,
                rows: 1,
                layers: layers.clone(),
                output,
            });
            let plan = kernel
                .plan(&json, &inputs, row_flops * 4)
                .expect("valid job");
            let mut gpu_outputs = Vec::new();
            for unit_json in &plan.units {
                let unit: MlpUnit = serde_json::from_str(unit_json).expect("unit");
                let input = kernel
                    .unit_input(&json, &plan.input, unit_json)
                    .expect("unit input");
                let on_gpu =
                    pollster::block_on(catalog.run_unit(Some(gpu()), "mlp", unit_json, &input))
                        .expect("gpu run");
                let on_cpu = kernel.run_cpu(unit_json, &input).expect("cpu run");
                let (abs, ratio) = differences(&unit, &on_gpu, &on_cpu);
                let w = &mut worst[usize::from(output == Activation::Linear)];
                *w = (w.0.max(abs), w.1.max(ratio));
                assert!(
                    kernel
                        .outputs_agree(unit_json, &on_gpu, &on_cpu)
                        .expect("unit"),
                    "GPU and CPU disagree for {layers:?} {output:?}, unit {unit_json}: \
                     {abs:e} = {ratio} of the tolerance"
                );
                gpu_outputs.push(on_gpu);
            }
            let merged = kernel.merge(&json, &gpu_outputs).expect("merge");
            assert_eq!(
                merged.len(),
                (batch * layers[layers.len() - 1] * 4) as usize
            );
        }
    }
    for (name, (abs, ratio)) in ["softmax", "linear"].iter().zip(worst) {
        eprintln!(
            "mlp GPU vs CPU, {name}: largest difference {abs:e}, {ratio:.3e} of the tolerance"
        );
        // A tenth of the tolerance: the bound keeps a wide margin over what devices do.
        assert!(ratio < 0.1, "{name}: {ratio}");
    }
}

#[test]
fn mlp_comparison_catches_a_tampered_gpu_output() {
    let layers = vec![32, 64, 16];
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let named = random_job(&mut rng, &layers, 8, 2.0);
    let params = MlpParams {
        layers: layers.clone(),
        batch: 8,
        output: Activation::Linear,
    };
    let input = Mlp::pack_input(&params, &named).expect("valid");
    let unit = MlpUnit {
        row_start: 0,
        rows: 8,
        layers,
        output: Activation::Linear,
    };
    let honest = Mlp::run_cpu(&unit, &input).expect("valid");
    let on_gpu =
        pollster::block_on(gpu().run(&Mlp::gpu_dispatch(&unit, &input).expect("ok"), &input))
            .expect("gpu run");
    assert!(Mlp::outputs_agree(&unit, &honest, &on_gpu));
    let values = floats(&on_gpu);
    let (i, v) = values
        .iter()
        .enumerate()
        .find(|(_, v)| v.abs() > 0.2)
        .expect("a non-tiny output");
    let mut tampered = values.clone();
    tampered[i] = v * 1.01;
    assert!(!Mlp::outputs_agree(&unit, &honest, &f32_bytes(tampered)));
}

/// The montecarlo shader's Philox section, run on the test vectors: thread i computes
/// Philox4x32-10 of counter and key i from the input and writes its four words.
#[test]
fn philox_on_gpu_matches_the_published_test_vectors() {
    const SOURCE: &str = include_str!("../src/montecarlo/shader.wgsl");
    let begin = SOURCE.find("// BEGIN philox").expect("BEGIN marker");
    let end = SOURCE.find("// END philox").expect("END marker");
    let shader = format!(
        "{}\n{}",
        &SOURCE[begin..end],
        r#"
@group(0) @binding(0) var<uniform> cases: vec4<u32>;
@group(0) @binding(1) var<storage, read> kat: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

@compute @workgroup_size(1, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>) {
    let i = wid.x;
    if (i >= cases.x) {
        return;
    }
    let c = vec4<u32>(kat[6u * i], kat[6u * i + 1u], kat[6u * i + 2u], kat[6u * i + 3u]);
    let k = vec2<u32>(kat[6u * i + 4u], kat[6u * i + 5u]);
    let r = philox4x32_10(c, k);
    for (var j = 0u; j < 4u; j = j + 1u) {
        out[4u * i + j] = r[j];
    }
}
"#
    );
    let words: Vec<u32> = PHILOX_KAT
        .iter()
        .flat_map(|(c, k, _)| c.iter().chain(k).copied())
        .collect();
    let input: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    let n = PHILOX_KAT.len() as u32;
    // One binding over the whole input.
    let whole_input = 0..input.len();
    let dispatch = GpuDispatch {
        label: "philox-kat",
        shader: Box::leak(shader.into_boxed_str()),
        uniforms: [n, 0, 0, 0].iter().flat_map(|v| v.to_le_bytes()).collect(),
        inputs: vec![whole_input],
        output_bytes: u64::from(n) * 16,
        workgroups: [n, 1, 1],
    };
    let out = pollster::block_on(gpu().run(&dispatch, &input)).expect("gpu run");
    for (i, (counter, key, expected)) in PHILOX_KAT.iter().enumerate() {
        let got: Vec<u32> = out[16 * i..16 * i + 16]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(got, expected, "GPU Philox for {counter:x?} {key:x?}");
        assert_eq!(philox4x32_10(*counter, *key), *expected, "CPU Philox");
    }
}

#[test]
fn montecarlo_on_gpu_equals_cpu_reference_on_random_ranges() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5049_5049);
    let mut units = vec![
        MonteCarloUnit {
            start: 0,
            count: 1,
            seed: 0,
        },
        // Sample indices crossing 2^32: the shader's carry into the counter's high word.
        MonteCarloUnit {
            start: (1 << 32) - 1000,
            count: 3000,
            seed: u64::MAX,
        },
        // Not a multiple of the workgroup or of the dispatch's stride.
        MonteCarloUnit {
            start: 123,
            count: 256 * 32 * 3 + 17,
            seed: 42,
        },
    ];
    for _ in 0..5 {
        units.push(MonteCarloUnit {
            start: rng.random_range(0..(1u64 << 40) - 200_000),
            count: rng.random_range(1..200_000),
            seed: rng.random(),
        });
    }
    for unit in units {
        let on_cpu = MonteCarlo::run_cpu(&unit, &[]).expect("valid");
        let dispatch = MonteCarlo::gpu_dispatch(&unit, &[]).expect("valid");
        let on_gpu = pollster::block_on(gpu().run(&dispatch, &[])).expect("gpu run");
        assert!(
            MonteCarlo::outputs_agree(&unit, &on_gpu, &on_cpu),
            "{unit:?}: GPU {on_gpu:?}, CPU {on_cpu:?}"
        );
    }
}

#[test]
fn montecarlo_job_on_gpu_estimates_pi() {
    let catalog = Catalog::builtin();
    let kernel = catalog.get("montecarlo").expect("built in");
    let params = MonteCarloParams {
        samples: 1_000_000,
        seed: 2024,
    };
    let json = serde_json::to_value(params).expect("plain struct");
    let plan = kernel
        .plan(&json, &NamedInputs::new(), 300_000 * 512)
        .expect("valid");
    assert_eq!(plan.units.len(), 4);
    let outputs: Vec<Vec<u8>> = plan
        .units
        .iter()
        .map(|unit| {
            pollster::block_on(catalog.run_unit(Some(gpu()), "montecarlo", unit, &[]))
                .expect("gpu run")
        })
        .collect();
    let result: serde_json::Value =
        serde_json::from_slice(&kernel.merge(&json, &outputs).expect("merge")).expect("JSON");
    let pi = result["pi"].as_f64().expect("pi");
    let std_error = result["std_error"].as_f64().expect("std_error");
    assert!(
        (pi - std::f64::consts::PI).abs() < 5.0 * std_error,
        "{result}"
    );
}
