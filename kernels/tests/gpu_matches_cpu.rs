//! Every kernel's WGSL on a real wgpu adapter (lavapipe on CI) against its CPU reference.

use rand::{Rng, SeedableRng};
use starling_kernels::matmul::{outputs_agree, Matmul, MatmulParams};
use starling_kernels::{Catalog, NamedInputs, UnitSpec};
use support::gpu::gpu;

mod support;

fn random_f32_bytes(rng: &mut impl Rng, count: u32) -> Vec<u8> {
    (0..count)
        .flat_map(|_| rng.random_range(-1.0f32..1.0).to_le_bytes())
        .collect()
}

/// The vec4 shader volunteers run (`tiles::VOLUNTEER`: 128x128 blocks, vec4 loads, for k
/// and n multiples of 4): its edges (rows, columns and k around 128 and 8), the smallest,
/// and k at its largest (llvmpipe ends an invocation after 65 535 loop iterations in all).
#[test]
fn matmul_vec4_shader_on_gpu_equals_cpu_reference_at_its_edges() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x7665_6334);
    let mut shapes = vec![
        (1, 4, 4),
        (4, 4, 4),
        (128, 128, 128),
        (129, 132, 124),
        (200, 20, 260),
        (3, 4096, 8),
    ];
    for _ in 0..6 {
        shapes.push((
            rng.random_range(1..300),
            4 * rng.random_range(1..80),
            4 * rng.random_range(1..80),
        ));
    }
    for (rows, k, n) in shapes {
        let unit = starling_kernels::matmul::MatmulUnit {
            row_start: 0,
            rows,
            k,
            n,
        };
        let mut input = random_f32_bytes(&mut rng, rows * k);
        input.extend(random_f32_bytes(&mut rng, k * n));
        let dispatch = Matmul::gpu_dispatch_vec4(&unit, &input)
            .expect("dispatch")
            .expect("k and n are multiples of 4");
        let on_gpu = pollster::block_on(gpu().run(&dispatch, &input)).expect("gpu run");
        let on_cpu = Matmul::run_cpu(&unit, &input).expect("cpu run");
        assert!(
            outputs_agree(k, &on_gpu, &on_cpu),
            "GPU and CPU disagree for {rows}x{k}x{n}"
        );
    }
}

/// Every kind of shape the vec4 template writes (prefetch or not, one or two stages,
/// unrolled or not, tiles of 4 to 16, blocks of 64 to 256) computes the CPU reference's
/// product at sizes that cut its blocks and slices short: the bench that compares shapes
/// on a GPU trusts any shape of it.
#[test]
fn every_shape_of_the_vec4_template_equals_cpu_reference() {
    use starling_kernels::matmul::tiles::{Shape, VOLUNTEER};
    let shape = |bm, bn, bk, tm, tn, prefetch, stages, unroll| Shape {
        bm,
        bn,
        bk,
        tm,
        tn,
        prefetch,
        stages,
        unroll,
    };
    let shapes = [
        VOLUNTEER,
        shape(128, 128, 16, 8, 8, false, 1, false),
        shape(128, 128, 8, 8, 16, true, 2, true),
        shape(64, 64, 16, 4, 4, true, 2, false),
        shape(64, 128, 16, 4, 8, false, 1, true),
        shape(256, 128, 8, 16, 8, true, 2, true),
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x7469_6c65);
    for tile in shapes {
        assert!(tile.fits(256, 32 * 1024), "{} fits lavapipe", tile.name());
        for (rows, k, n) in [(1, 4, 4), (129, 36, 260), (70, 132, 68)] {
            let unit = starling_kernels::matmul::MatmulUnit {
                row_start: 0,
                rows,
                k,
                n,
            };
            let mut input = random_f32_bytes(&mut rng, rows * k);
            input.extend(random_f32_bytes(&mut rng, k * n));
            let vec4 = Matmul::gpu_dispatch_vec4(&unit, &input)
                .expect("dispatch")
                .expect("k and n are multiples of 4");
            let dispatch = starling_kernels::GpuDispatch {
                // One pipeline per shape: the cache is keyed by label.
                label: Box::leak(tile.name().into_boxed_str()),
                shader: Box::leak(tile.wgsl().into_boxed_str()),
                workgroups: [n.div_ceil(tile.bn), rows.div_ceil(tile.bm), 1],
                ..vec4
            };
            let on_gpu = pollster::block_on(gpu().run(&dispatch, &input)).expect("gpu run");
            let on_cpu = Matmul::run_cpu(&unit, &input).expect("cpu run");
            assert!(
                outputs_agree(k, &on_gpu, &on_cpu),
                "shape {} disagrees with the CPU for {rows}x{k}x{n}",
                tile.name()
            );
        }
    }
}

#[test]
fn matmul_on_gpu_equals_cpu_reference_on_random_shapes() {
    let catalog = Catalog::builtin();
    let kernel = catalog.get("matmul").expect("matmul is built in");
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5747_4c49);
    // Shapes around the 16x16 tile edge plus a few random ones.
    let mut shapes = vec![
        (1, 1, 1),
        (16, 16, 16),
        (17, 15, 33),
        (64, 128, 32),
        (3, 257, 5),
    ];
    for _ in 0..8 {
        shapes.push((
            rng.random_range(1..96),
            rng.random_range(1..160),
            rng.random_range(1..96),
        ));
    }
    for (m, k, n) in shapes {
        let params = MatmulParams { m, k, n };
        let mut inputs = NamedInputs::new();
        inputs.insert("a".into(), random_f32_bytes(&mut rng, m * k));
        inputs.insert("b".into(), random_f32_bytes(&mut rng, k * n));
        let json = serde_json::to_value(params).expect("plain struct");
        let plan = kernel
            .plan(&json, &inputs, 2 * 40 * u64::from(k * n))
            .expect("valid job");
        let mut gpu_outputs = Vec::new();
        for unit in &plan.units {
            let input = kernel
                .unit_input(&json, &plan.input, unit)
                .expect("unit input");
            let on_gpu = pollster::block_on(catalog.run_unit(Some(gpu()), "matmul", unit, &input))
                .expect("gpu run");
            let on_cpu = kernel.run_cpu(unit, &input).expect("cpu run");
            assert!(
                outputs_agree(k, &on_gpu, &on_cpu),
                "GPU and CPU disagree for {m}x{k}x{n}, unit {unit}"
            );
            gpu_outputs.push(on_gpu);
        }
        assert_eq!(
            kernel.merge(&json, &gpu_outputs).expect("merge").len(),
            (m * n * 4) as usize
        );
    }
}

#[test]
fn comparison_catches_a_single_tampered_element() {
    let unit = starling_kernels::matmul::MatmulUnit {
        row_start: 0,
        rows: 8,
        k: 8,
        n: 8,
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let input = random_f32_bytes(&mut rng, 128);
    let honest = Matmul::run_cpu(&unit, &input).expect("valid");
    let on_gpu =
        pollster::block_on(gpu().run(&Matmul::gpu_dispatch(&unit, &input).expect("valid"), &input))
            .expect("gpu run");
    assert!(outputs_agree(8, &honest, &on_gpu));
    let mut tampered = on_gpu.clone();
    tampered[20] ^= 0x40; // flip one exponent bit of element 5
    assert!(!outputs_agree(8, &honest, &tampered));
}
