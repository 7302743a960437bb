//! A device chooses its matmul shader by a trial on its own units, without delaying its
//! first unit and without ever sending a wrong or short output (lavapipe on CI).

#![cfg(not(target_arch = "wasm32"))]

use starling_client::Engine;
use starling_kernels::Catalog;
use starling_protocol::Assignment;

fn unit(rows: u32, k: u32, n: u32, seed: u32) -> Assignment {
    // Small integers: exact in f32 whatever the order of summation.
    let input = (0..rows * k + k * n)
        .flat_map(|i| (((i.wrapping_mul(2_654_435_761) ^ seed) % 7) as f32).to_le_bytes())
        .collect();
    Assignment {
        lease: "00000000-0000-0000-0000-000000000000"
            .parse()
            .expect("a lease id"),
        kernel: "matmul".into(),
        params_json: format!(r#"{{"row_start":0,"rows":{rows},"k":{k},"n":{n}}}"#),
        input,
        deadline_ms: u32::MAX,
        job_age_s: 0,
    }
}

async fn run_checked(engine: &Engine, a: &Assignment) -> anyhow::Result<()> {
    let output = engine.run(a).await?;
    let expected = Catalog::builtin()
        .get("matmul")?
        .run_cpu(&a.params_json, &a.input)?;
    anyhow::ensure!(
        output == expected,
        "the GPU's output differs from the CPU reference ({} against {} bytes)",
        output.len(),
        expected.len()
    );
    Ok(())
}

#[tokio::test]
async fn a_device_tries_both_shaders_on_a_real_unit_and_keeps_one() -> anyhow::Result<()> {
    let engine = Engine::detect().await;
    anyhow::ensure!(
        !engine.on_cpu(),
        "no wgpu adapter: {:?} (scripts/setup.sh installs Mesa's lavapipe)",
        engine.gpu_error()
    );
    // The first unit runs on the scalar shader: no trial before it, so a fresh device's
    // first result is never delayed by compiling a second shader.
    run_checked(&engine, &unit(128, 128, 128, 1)).await?;
    assert_eq!(engine.matmul_shader(), None);
    // Units too small to say anything never start a trial.
    for seed in 0..3 {
        run_checked(&engine, &unit(16, 16, 16, seed)).await?;
    }
    assert_eq!(engine.matmul_shader(), None);
    // Units the vec4 shader cannot run (n not a multiple of 4) are not trials either.
    run_checked(&engine, &unit(128, 128, 130, 2)).await?;
    assert_eq!(engine.matmul_shader(), None);
    // A real unit: a trial, whose output is the unit's (checked like every other). The
    // first unit's rate included building the scalar pipeline, so the trial may wait
    // for a unit or two more with a better measured rate.
    for seed in 3..8 {
        run_checked(&engine, &unit(256, 128, 128, seed)).await?;
        if engine.matmul_shader().is_some() {
            break;
        }
    }
    let chosen = engine
        .matmul_shader()
        .ok_or_else(|| anyhow::anyhow!("no trial within five units worth one"))?;
    eprintln!("this device chose the {} shader", chosen.as_str());
    // Whatever was chosen, every shape still computes right: vec4-able units on the
    // choice, others (and the smallest) on the scalar shader.
    for (rows, k, n) in [(256, 128, 128), (1, 4, 4), (129, 132, 124), (64, 30, 64)] {
        run_checked(&engine, &unit(rows, k, n, 9)).await?;
    }
    assert_eq!(engine.matmul_shader(), Some(chosen));
    Ok(())
}
