//! The registered kernels of `examples/kernels/` as tests use them: registering one,
//! running a job of it to its result, and the CPU's answers to check that result with.

use crate::Api;
use starling_api::manifest::KernelManifest;
use starling_api::{Input, RegisterKernel, SubmitJob};
use std::time::Duration;

/// The example `name` (`saxpy`, `mandelbrot`, `blur`), ready to register.
pub fn example(name: &str) -> anyhow::Result<RegisterKernel> {
    let dir = crate::workspace_root().join("examples/kernels");
    let source = std::fs::read_to_string(dir.join(format!("{name}.wgsl")))?;
    let manifest: KernelManifest =
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{name}.json")))?)?;
    Ok(RegisterKernel { source, manifest })
}

/// Little-endian bytes of `values`, as inputs and outputs hold them.
pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The floats in `bytes`.
pub fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// A multipart input named `name`.
pub fn input(name: &str, bytes: Vec<u8>) -> Input {
    Input {
        name: name.into(),
        file_name: format!("{name}.bin"),
        bytes,
    }
}

/// Registers `name`, submits a job of it, waits, and returns the job's id and result.
pub async fn run(
    api: &Api,
    name: &str,
    params: serde_json::Value,
    inputs: Vec<Input>,
) -> anyhow::Result<(String, Vec<u8>)> {
    let kernel = api.client().register_kernel(&example(name)?).await?;
    let job = api
        .client()
        .submit_multipart(&SubmitJob::new(kernel.id, params), inputs, None)
        .await?;
    let id = job.id.to_string();
    let done = api.wait_done(&id, Duration::from_secs(240)).await?;
    eprintln!("{name}: {} units", done.progress.units_total);
    let (status, bytes) = api.result(&id).await?;
    anyhow::ensure!(status == 200, "{name}'s result: {status}");
    Ok((id, bytes))
}

/// The Mandelbrot example's image as the CPU computes it: each pixel's escape count in
/// the shader's 12-bit fixed point, row-major, little-endian `u32`s.
pub fn mandelbrot(width: u32, height: u32, max_iter: u32) -> Vec<u8> {
    (0..height)
        .flat_map(|py| (0..width).map(move |px| escape_count(px, py, max_iter)))
        .flat_map(u32::to_le_bytes)
        .collect()
}

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

/// Checks `blurred` against the blur example on the CPU (1/4, 1/2, 1/4, the ends
/// clamped) within its relative tolerance, naming the first element that is not.
pub fn check_blur(signal: &[f32], blurred: &[f32]) -> anyhow::Result<()> {
    anyhow::ensure!(
        blurred.len() == signal.len(),
        "{} blurred values for {} inputs",
        blurred.len(),
        signal.len()
    );
    let last = signal.len() - 1;
    for (i, got) in blurred.iter().enumerate() {
        let want =
            0.25 * signal[i.saturating_sub(1)] + 0.5 * signal[i] + 0.25 * signal[(i + 1).min(last)];
        anyhow::ensure!(
            (got - want).abs() <= 1e-5 * got.abs().max(want.abs()),
            "blur[{i}] = {got}, the CPU says {want}"
        );
    }
    Ok(())
}
