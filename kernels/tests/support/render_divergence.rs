//! How far two outputs of one render tile are apart, for the GPU test and the benchmark
//! that together set `render::outputs_agree`'s allowance.

use super::gpu::floats;
use starling_kernels::render::{RenderUnit, TOLERANCE};

/// Pixels whose channels differ by more than [`TOLERANCE`], the largest difference of any
/// channel in units of one sample (difference * spp), and how many outlier pixels differ
/// by up to 1, 2, 3 and more samples.
pub fn divergence_histogram(unit: &RenderUnit, a: &[u8], b: &[u8]) -> (usize, f32, [usize; 4]) {
    let (a, b) = (floats(a), floats(b));
    let mut outliers = 0;
    let mut worst = 0f32;
    let mut histogram = [0; 4];
    for (pa, pb) in a.chunks_exact(3).zip(b.chunks_exact(3)) {
        let diff = pa
            .iter()
            .zip(pb)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        let samples = diff * unit.samples_per_pixel as f32;
        if diff > TOLERANCE {
            outliers += 1;
            histogram[((samples - 1e-3).ceil().max(1.0) as usize - 1).min(3)] += 1;
        }
        worst = worst.max(samples);
    }
    (outliers, worst, histogram)
}
