//! The one wgpu device the GPU tests and benchmarks of this crate share, opened once.

use starling_kernels::Gpu;
use std::sync::OnceLock;

/// The machine's adapter (Mesa's lavapipe on CI), opened on first use.
pub fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        let gpu = pollster::block_on(Gpu::new())
            .expect("a wgpu adapter (scripts/setup.sh installs Mesa's lavapipe)");
        eprintln!("adapter: {:?}", gpu.adapter());
        gpu
    })
}

/// Little-endian f32 bytes as floats.
#[allow(dead_code)] // not every test that shares the device compares floats
pub fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}
