//! `matmul`: C = A x B in f32, split into blocks of rows of A.
//!
//! Encoding: every matrix is f32 little-endian, row-major. Job inputs `a` (m x k) and
//! `b` (k x n); the job result is C (m x n). A unit's input is its block of rows of A
//! followed by the whole of B; its output is the matching block of rows of C.

use crate::catalog::{InputInfo, KernelInfo, NamedInputs};
use crate::gpu::GpuDispatch;
use crate::{KernelError, KernelSpec, UnitSpec};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The vec4 shader's template and the shape volunteers run (`tiles::VOLUNTEER`).
pub mod tiles;
pub mod tune;

/// Largest accepted dimension. 4096 keeps B (64 MiB at most) under WebGPU's default
/// 128 MiB storage-binding limit, so every unit fits on every conformant adapter.
pub const MAX_DIM: u32 = 4096;
/// Rows and columns of C one workgroup computes (see `shader.wgsl`).
const BLOCK: u32 = 64;
/// Largest accepted magnitude of an input element: with k <= 4096 terms, every product
/// sum stays below f32's maximum (1e16^2 * 4096 < 3.4e38), so honest outputs are finite.
pub const MAX_ABS_INPUT: f32 = 1e16;
/// Random vectors per Freivalds check: a wrong result slips through with probability at
/// most 2^-FREIVALDS_ROUNDS (see [`freivalds`]).
pub const FREIVALDS_ROUNDS: u32 = 8;

/// Parameters of a matmul job.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MatmulParams {
    /// Rows of A and C.
    pub m: u32,
    /// Columns of A, rows of B.
    pub k: u32,
    /// Columns of B and C.
    pub n: u32,
}

/// One unit: rows `row_start .. row_start + rows` of C.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MatmulUnit {
    /// First row of the block.
    pub row_start: u32,
    /// Rows in the block.
    pub rows: u32,
    /// Columns of A, rows of B.
    pub k: u32,
    /// Columns of B and C.
    pub n: u32,
}

/// The matmul kernel.
pub struct Matmul;

fn f32_bytes(count: u64) -> usize {
    // Dimensions are validated to <= MAX_DIM, so count * 4 fits comfortably in usize on
    // 32-bit targets too (at most 4096 * 4096 * 4 bytes = 64 MiB).
    (count * 4) as usize
}

impl MatmulUnit {
    fn a_len(&self) -> usize {
        f32_bytes(u64::from(self.rows) * u64::from(self.k))
    }
    fn b_len(&self) -> usize {
        f32_bytes(u64::from(self.k) * u64::from(self.n))
    }
    fn check_input(&self, input: &[u8]) -> Result<(), KernelError> {
        let expected = self.a_len() + self.b_len();
        if input.len() != expected
            || self.rows == 0
            || self.k == 0
            || self.n == 0
            || self.rows > MAX_DIM
            || self.k > MAX_DIM
            || self.n > MAX_DIM
        {
            return Err(KernelError::Shape {
                got: input.len(),
                expected,
            });
        }
        Ok(())
    }
}

fn floats(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
}

impl UnitSpec for Matmul {
    type Unit = MatmulUnit;
    const ID: &'static str = "matmul";

    fn output_len(u: &MatmulUnit) -> usize {
        f32_bytes(u64::from(u.rows) * u64::from(u.n))
    }

    fn run_cpu(u: &MatmulUnit, input: &[u8]) -> Result<Vec<u8>, KernelError> {
        u.check_input(input)?;
        let (k, n) = (u.k as usize, u.n as usize);
        let a: Vec<f32> = floats(&input[..u.a_len()]).collect();
        let b: Vec<f32> = floats(&input[u.a_len()..]).collect();
        let mut c = vec![0f32; u.rows as usize * n];
        // i-p-j order streams through B row by row; each c element still sums over p in
        // increasing order, like the GPU kernel, which keeps the two close.
        for (i, c_row) in c.chunks_exact_mut(n).enumerate() {
            for p in 0..k {
                let a_ip = a[i * k + p];
                let b_row = &b[p * n..(p + 1) * n];
                for (cj, bj) in c_row.iter_mut().zip(b_row) {
                    *cj += a_ip * bj;
                }
            }
        }
        Ok(c.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    fn gpu_dispatch(u: &MatmulUnit, input: &[u8]) -> Result<GpuDispatch, KernelError> {
        u.check_input(input)?;
        let uniforms = [u.rows, u.k, u.n, 0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        Ok(GpuDispatch {
            label: "matmul",
            shader: crate::shader!("matmul"),
            uniforms,
            inputs: vec![0..u.a_len(), u.a_len()..input.len()],
            output_bytes: Self::output_len(u) as u64,
            workgroups: [u.n.div_ceil(BLOCK), u.rows.div_ceil(BLOCK), 1],
        })
    }

    fn unit_flops(u: &MatmulUnit) -> u64 {
        // Saturating: a volunteer may price a unit before its shape is checked, and three
        // u32s claimed by a peer overflow u64.
        2u64.saturating_mul(u64::from(u.rows))
            .saturating_mul(u64::from(u.k))
            .saturating_mul(u64::from(u.n))
    }
}

impl Matmul {
    /// The vec4 shader ([`tiles::VOLUNTEER`]: vec4 loads, 8x16 register tiles, 128x128
    /// blocks) for `u`, where k and n are multiples of 4; `None` otherwise. A volunteer
    /// runs it where a trial on its own device found it faster ([`tune`]).
    pub fn gpu_dispatch_vec4(
        u: &MatmulUnit,
        input: &[u8],
    ) -> Result<Option<GpuDispatch>, KernelError> {
        let scalar = Self::gpu_dispatch(u, input)?;
        Ok(
            (u.k.is_multiple_of(4) && u.n.is_multiple_of(4)).then(|| GpuDispatch {
                label: "matmul-vec4",
                shader: crate::shader!("matmul_vec4"),
                workgroups: [
                    u.n.div_ceil(tiles::VOLUNTEER.bn),
                    u.rows.div_ceil(tiles::VOLUNTEER.bm),
                    1,
                ],
                ..scalar
            }),
        )
    }
}

impl KernelSpec for Matmul {
    type Params = MatmulParams;
    const VERSION: u32 = 1;

    fn info() -> KernelInfo {
        // A default the console's form starts from: a product a volunteer computes in well
        // under a second.
        let dim = json!({"type": "integer", "minimum": 1, "maximum": MAX_DIM, "default": 256});
        KernelInfo {
            id: Self::ID,
            version: Self::VERSION,
            description: "Dense matrix product C = A x B in f32, split into blocks of rows.",
            params_schema: json!({
                "type": "object",
                "required": ["m", "k", "n"],
                "additionalProperties": false,
                "properties": {"m": dim, "k": dim, "n": dim},
            }),
            inputs: vec![
                InputInfo {
                    name: "a",
                    encoding: "m*k f32 little-endian, row-major",
                },
                InputInfo {
                    name: "b",
                    encoding: "k*n f32 little-endian, row-major",
                },
            ],
            output: "m*n f32 little-endian, row-major",
            output_content_type: "application/octet-stream",
            comparison: "element-wise, |x - y| <= k * 2^-23 * max(1, |x|, |y|): the rounding \
                         error of a k-term f32 dot product, whatever the summation order or \
                         fused multiply-adds of the device",
            spot_check: Some(
                "Freivalds' algorithm with 8 random +-1 vectors, O(8(rk + kn + rn)) instead of \
                 O(rkn): a result whose row errors exceed the rigorous f32 rounding bound \
                 passes with probability at most 2^-8",
            ),
        }
    }

    fn validate(p: &MatmulParams) -> Result<(), KernelError> {
        for (field, value) in [("m", p.m), ("k", p.k), ("n", p.n)] {
            if value == 0 || value > MAX_DIM {
                return Err(KernelError::InvalidParam {
                    field: field.to_owned(),
                    reason: format!("must be between 1 and {MAX_DIM}, got {value}"),
                });
            }
        }
        Ok(())
    }

    fn pack_input(p: &MatmulParams, inputs: &NamedInputs) -> Result<Vec<u8>, KernelError> {
        if let Some(extra) = inputs.keys().find(|k| *k != "a" && *k != "b") {
            return Err(KernelError::InvalidInput {
                field: extra.clone(),
                reason: "matmul takes only inputs `a` and `b`".to_owned(),
            });
        }
        let mut packed = Vec::new();
        for (name, rows, cols) in [("a", p.m, p.k), ("b", p.k, p.n)] {
            let data = inputs.get(name).ok_or_else(|| KernelError::InvalidInput {
                field: name.to_owned(),
                reason: "missing".to_owned(),
            })?;
            let expected = f32_bytes(u64::from(rows) * u64::from(cols));
            if data.len() != expected {
                return Err(KernelError::InvalidInput {
                    field: name.to_owned(),
                    reason: format!(
                        "expected {rows}x{cols} f32 = {expected} bytes, got {} bytes",
                        data.len()
                    ),
                });
            }
            if let Some((index, value)) = floats(data)
                .enumerate()
                .find(|(_, v)| !v.is_finite() || v.abs() > MAX_ABS_INPUT)
            {
                return Err(KernelError::InvalidInput {
                    field: name.to_owned(),
                    reason: format!(
                        "element {index} is {value}; elements must be finite and at most \
                         {MAX_ABS_INPUT:e} in magnitude"
                    ),
                });
            }
            packed.extend_from_slice(data);
        }
        Ok(packed)
    }

    fn split(p: &MatmulParams, target_flops: u64) -> Vec<MatmulUnit> {
        let row_flops = 2 * u64::from(p.k) * u64::from(p.n);
        let rows_per_unit = (target_flops / row_flops).clamp(1, u64::from(p.m)) as u32;
        (0..p.m)
            .step_by(rows_per_unit as usize)
            .map(|row_start| MatmulUnit {
                row_start,
                rows: rows_per_unit.min(p.m - row_start),
                k: p.k,
                n: p.n,
            })
            .collect()
    }

    fn unit_input(
        p: &MatmulParams,
        job_input: &[u8],
        u: &MatmulUnit,
    ) -> Result<Vec<u8>, KernelError> {
        let a_total = f32_bytes(u64::from(p.m) * u64::from(p.k));
        let a_start = f32_bytes(u64::from(u.row_start) * u64::from(p.k));
        let expected = a_total + u.b_len();
        if job_input.len() != expected || a_start + u.a_len() > a_total {
            return Err(KernelError::Shape {
                got: job_input.len(),
                expected,
            });
        }
        let mut input = Vec::with_capacity(u.a_len() + u.b_len());
        input.extend_from_slice(&job_input[a_start..a_start + u.a_len()]);
        input.extend_from_slice(&job_input[a_total..]);
        Ok(input)
    }

    fn merge(p: &MatmulParams, outputs: &[Vec<u8>]) -> Result<Vec<u8>, KernelError> {
        let merged = outputs.concat();
        let expected = f32_bytes(u64::from(p.m) * u64::from(p.n));
        if merged.len() != expected {
            return Err(KernelError::Shape {
                got: merged.len(),
                expected,
            });
        }
        Ok(merged)
    }

    /// Sizes of small real jobs: A up to 1024 x 256 and B up to 256 x 256, entries in
    /// [-1, 1) as normalised data has them.
    fn probe(seed: u64) -> Option<(MatmulParams, NamedInputs)> {
        let mut rng = crate::ProbeRng::new(seed);
        let (m, k, n) = (
            rng.pick(&[256, 512, 1024]),
            rng.pick(&[64, 128, 256]),
            rng.pick(&[64, 128, 256]),
        );
        let mut inputs = NamedInputs::new();
        inputs.insert("a".into(), rng.f32_bytes((m * k) as usize, 1.0));
        inputs.insert("b".into(), rng.f32_bytes((k * n) as usize, 1.0));
        Some((MatmulParams { m, k, n }, inputs))
    }

    fn outputs_agree(u: &MatmulUnit, x: &[u8], y: &[u8]) -> bool {
        outputs_agree(u.k, x, y)
    }

    fn spot_check(u: &MatmulUnit, input: &[u8], output: &[u8], seed: u64) -> Option<bool> {
        Some(freivalds(u, input, output, seed))
    }
}

/// SplitMix64: a tiny, well-mixed generator for the verifier's challenge vectors.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Freivalds' check of one unit's output C against its input (A rows, B) without
/// recomputing the product: for random r in {-1, +1}^n, C r must equal A (B r).
///
/// Each round costs O(rows*k + k*n + rows*n) instead of O(rows*k*n). For exact
/// arithmetic a wrong C passes one round with probability at most 1/2, so
/// [`FREIVALDS_ROUNDS`] rounds let it through with probability at most 2^-8 (1/256).
/// Floats need a tolerance: sums here are in f64, and an honest f32 C is off by at most
/// k * 2^-24 * sum_p |A_ip| |B_pj| per element (any order, with or without FMA), so row i
/// may differ by `2 (k + 1) 2^-24 s_i` with `s_i = sum_p |A_ip| sum_j |B_pj|`. That bound
/// never rejects an honest result; an error smaller than it in every row goes unnoticed,
/// which replication against another volunteer then catches.
pub fn freivalds(u: &MatmulUnit, input: &[u8], output: &[u8], seed: u64) -> bool {
    if u.check_input(input).is_err() || output.len() != Matmul::output_len(u) {
        return false;
    }
    let (rows, k, n) = (u.rows as usize, u.k as usize, u.n as usize);
    let a: Vec<f64> = floats(&input[..u.a_len()]).map(f64::from).collect();
    let b: Vec<f64> = floats(&input[u.a_len()..]).map(f64::from).collect();
    let c: Vec<f64> = floats(output).map(f64::from).collect();
    let b_abs: Vec<f64> = b
        .chunks_exact(n)
        .map(|r| r.iter().map(|v| v.abs()).sum())
        .collect();
    let bound = |i: usize| -> f64 {
        let s: f64 = a[i * k..(i + 1) * k]
            .iter()
            .zip(&b_abs)
            .map(|(x, y)| x.abs() * y)
            .sum();
        2.0 * (k as f64 + 1.0) * f64::from(f32::EPSILON) / 2.0 * s
    };
    let bounds: Vec<f64> = (0..rows).map(bound).collect();
    let mut state = seed;
    let mut r = vec![0f64; n];
    for _ in 0..FREIVALDS_ROUNDS {
        for chunk in r.chunks_mut(64) {
            let bits = splitmix64(&mut state);
            for (i, v) in chunk.iter_mut().enumerate() {
                *v = if bits >> i & 1 == 1 { 1.0 } else { -1.0 };
            }
        }
        let br: Vec<f64> = b
            .chunks_exact(n)
            .map(|row| row.iter().zip(&r).map(|(x, y)| x * y).sum())
            .collect();
        for i in 0..rows {
            let abr: f64 = a[i * k..(i + 1) * k]
                .iter()
                .zip(&br)
                .map(|(x, y)| x * y)
                .sum();
            let cr: f64 = c[i * n..(i + 1) * n]
                .iter()
                .zip(&r)
                .map(|(x, y)| x * y)
                .sum();
            let error = (abr - cr).abs();
            if error.is_nan() || error > bounds[i] {
                return false;
            }
        }
    }
    true
}

/// Whether two honest outputs of the same unit agree: summation order and fused
/// multiply-adds differ between GPUs and the CPU reference, so elements may differ by the
/// rounding error of a k-term f32 dot product, bounded here by `k * eps * magnitude`.
pub fn outputs_agree(k: u32, x: &[u8], y: &[u8]) -> bool {
    x.len() == y.len()
        && floats(x).zip(floats(y)).all(|(a, b)| {
            let scale = a.abs().max(b.abs()).max(1.0);
            (a - b).abs() <= k.max(1) as f32 * f32::EPSILON * scale
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn to_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn job(p: MatmulParams, seed: u32) -> Vec<u8> {
        let gen = |len: u32, salt: u32| -> Vec<f32> {
            (0..len)
                .map(|i| ((i.wrapping_mul(2654435761) ^ salt ^ seed) % 1000) as f32 / 500.0 - 1.0)
                .collect()
        };
        let mut inputs = NamedInputs::new();
        inputs.insert("a".into(), to_bytes(&gen(p.m * p.k, 1)));
        inputs.insert("b".into(), to_bytes(&gen(p.k * p.n, 2)));
        Matmul::pack_input(&p, &inputs).expect("sizes match")
    }

    proptest! {
        #[test]
        fn split_then_merge_equals_the_whole_product(
            m in 1u32..40, k in 1u32..20, n in 1u32..20, target in 1u64..5000, seed: u32
        ) {
            let p = MatmulParams { m, k, n };
            let input = job(p, seed);
            let whole = MatmulUnit { row_start: 0, rows: m, k, n };
            let expected = Matmul::run_cpu(&whole, &input).expect("whole job");
            let units = Matmul::split(&p, target);
            prop_assert_eq!(units.iter().map(|u| u.rows).sum::<u32>(), m);
            let outputs: Vec<Vec<u8>> = units
                .iter()
                .map(|u| Matmul::run_cpu(u, &Matmul::unit_input(&p, &input, u).expect("slice")).expect("unit"))
                .collect();
            prop_assert_eq!(Matmul::merge(&p, &outputs).expect("merge"), expected);
        }
    }

    fn random_unit(rows: u32, k: u32, n: u32, seed: u32) -> (MatmulUnit, Vec<u8>) {
        let p = MatmulParams { m: rows, k, n };
        let unit = MatmulUnit {
            row_start: 0,
            rows,
            k,
            n,
        };
        (unit, job(p, seed))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn freivalds_accepts_honest_and_rejects_tampered_results(
            rows in 1u32..24, k in 1u32..40, n in 1u32..24, seed: u32, challenge: u64,
            at in 0usize..10_000, factor in prop::sample::select(vec![0.0f32, -1.0, 1.5, 2.0]),
        ) {
            let (unit, input) = random_unit(rows, k, n, seed);
            let honest = Matmul::run_cpu(&unit, &input).expect("valid");
            prop_assert!(freivalds(&unit, &input, &honest, challenge));
            prop_assert_eq!(Matmul::spot_check(&unit, &input, &honest, challenge), Some(true));

            // One element scaled (or zeroed, negated): caught whenever it changes by more
            // than the rounding bound, which a non-tiny element always does.
            let mut tampered = honest.clone();
            let i = at % (rows * n) as usize;
            let v = f32::from_le_bytes([tampered[4 * i], tampered[4 * i + 1], tampered[4 * i + 2], tampered[4 * i + 3]]);
            prop_assume!(v.abs() > 0.05);
            tampered[4 * i..4 * i + 4].copy_from_slice(&(v * factor).to_le_bytes());
            prop_assert!(!freivalds(&unit, &input, &tampered, challenge));
        }
    }

    #[test]
    fn freivalds_rejects_flipped_bits_scaled_blocks_and_other_inputs() {
        let (unit, input) = random_unit(32, 48, 40, 9);
        let honest = Matmul::run_cpu(&unit, &input).expect("valid");
        assert!(freivalds(&unit, &input, &honest, 1));

        let mut flipped = honest.clone();
        flipped[4 * 77 + 3] ^= 0x40; // an exponent bit of element 77
        assert!(!freivalds(&unit, &input, &flipped, 1));

        let mut scaled: Vec<f32> = floats(&honest).collect();
        for row in 8..16 {
            for col in 0..8 {
                scaled[row * 40 + col] *= 1.01;
            }
        }
        assert!(!freivalds(&unit, &input, &to_bytes(&scaled), 1));

        let (_, other_input) = random_unit(32, 48, 40, 10);
        let other = Matmul::run_cpu(&unit, &other_input).expect("valid");
        assert!(!freivalds(&unit, &input, &other, 1));

        let mut nan = honest.clone();
        nan[0..4].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(!freivalds(&unit, &input, &nan, 1));
        assert!(!freivalds(&unit, &input, &honest[4..], 1));
    }

    #[test]
    fn rejects_non_finite_and_huge_inputs() {
        let p = MatmulParams { m: 1, k: 2, n: 1 };
        let mut inputs = NamedInputs::new();
        inputs.insert("a".into(), to_bytes(&[1.0, f32::INFINITY]));
        inputs.insert("b".into(), to_bytes(&[1.0, 2.0]));
        let err = Matmul::pack_input(&p, &inputs).expect_err("inf");
        assert!(
            err.to_string()
                .starts_with("invalid input `a`: element 1 is inf"),
            "{err}"
        );
        inputs.insert("a".into(), to_bytes(&[1.0, 2.0]));
        inputs.insert("b".into(), to_bytes(&[f32::NAN, 1e17]));
        assert!(Matmul::pack_input(&p, &inputs).is_err());
    }

    #[test]
    fn splits_into_row_blocks_by_cost() {
        let p = MatmulParams {
            m: 64,
            k: 32,
            n: 32,
        };
        let units = Matmul::split(&p, 2 * 32 * 32 * 16);
        assert_eq!(units.len(), 4);
        assert!(units.iter().all(|u| u.rows == 16));
        assert_eq!(units[3].row_start, 48);
    }

    #[test]
    fn cpu_reference_computes_a_known_product() {
        // [[1,2],[3,4]] x [[5,6],[7,8]] = [[19,22],[43,50]]
        let unit = MatmulUnit {
            row_start: 0,
            rows: 2,
            k: 2,
            n: 2,
        };
        let input = to_bytes(&[1., 2., 3., 4., 5., 6., 7., 8.]);
        let out = Matmul::run_cpu(&unit, &input).expect("valid");
        assert_eq!(out, to_bytes(&[19., 22., 43., 50.]));
    }

    #[test]
    fn rejects_wrong_sizes_and_ranges_with_precise_messages() {
        let p = MatmulParams { m: 2, k: 3, n: 4 };
        let mut inputs = NamedInputs::new();
        inputs.insert("a".into(), vec![0; 24]);
        inputs.insert("b".into(), vec![0; 47]);
        let err = Matmul::pack_input(&p, &inputs).expect_err("b is short");
        assert_eq!(
            err.to_string(),
            "invalid input `b`: expected 3x4 f32 = 48 bytes, got 47 bytes"
        );
        let err = Matmul::validate(&MatmulParams { m: 0, k: 1, n: 1 }).expect_err("m = 0");
        assert_eq!(
            err.to_string(),
            "invalid parameter `m`: must be between 1 and 4096, got 0"
        );
        let unit = MatmulUnit {
            row_start: 0,
            rows: 2,
            k: 3,
            n: 4,
        };
        assert!(Matmul::run_cpu(&unit, &[0; 5]).is_err());
        assert!(Matmul::gpu_dispatch(&unit, &[0; 5]).is_err());
    }
}
