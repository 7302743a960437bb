//! `montecarlo`: estimating pi by counting random points of the unit square that fall in
//! the quarter circle, with the counter-based generator Philox4x32-10.
//!
//! Sample i (0-based, over the whole job) is Philox4x32-10 of counter
//! (i mod 2^32, i / 2^32, 0, 0) under key (seed mod 2^32, seed / 2^32); its first two words
//! x and y are the point (x / 2^32, y / 2^32), a hit when x^2 + y^2 < 2^64 (exactly, in
//! integers). Counter-based means any range of samples can be drawn without the ones
//! before it, so units are just ranges, and every device draws the same numbers: hit
//! counts are integers that replicas and the CPU reference reproduce bit for bit.
//!
//! The job has no inputs. A unit's output is its hit count as u64 little-endian; the job
//! result is JSON `{"samples", "hits", "pi", "std_error"}`.

use crate::catalog::{KernelInfo, NamedInputs};
use crate::gpu::GpuDispatch;
use crate::{KernelError, KernelSpec, UnitSpec};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Most samples in a job: 2^40, about 10^12.
pub const MAX_SAMPLES: u64 = 1 << 40;
/// Most samples in a unit: its hit count must fit the shader's one u32 atomic counter.
pub const MAX_UNIT_SAMPLES: u32 = u32::MAX;
/// Most units in a job: one row each in the relay's database, so a small `target_flops`
/// cannot turn a 2^40-sample job into 2^40 units. Units then have at least 2^20 samples.
pub const MAX_UNITS: u64 = 1 << 20;
/// Integer operations per sample, counted as FLOPs for scheduling and credit: one
/// Philox4x32-10 call is ten rounds of two 32x32 -> 64-bit products (about 20 operations
/// each from 16-bit halves, as the WGSL does), four XORs and two key additions, about 460;
/// the exact x^2 + y^2 < 2^64 test is two more products and a few additions and compares,
/// about 50 with the loop.
pub const SAMPLE_FLOPS: u64 = 512;
/// Threads per workgroup in `shader.wgsl`.
const WORKGROUP: u32 = 256;
/// Samples each GPU thread draws, at least, when sizing the dispatch: enough to amortise
/// the per-thread reduction, few enough to occupy a large GPU for a large unit.
const SAMPLES_PER_THREAD: u32 = 32;
/// Philox4x32 round multipliers and Weyl key increments (Salmon et al. 2011, Random123).
const PHILOX_M0: u32 = 0xD251_1F53;
const PHILOX_M1: u32 = 0xCD9E_8D57;
const PHILOX_W0: u32 = 0x9E37_79B9;
const PHILOX_W1: u32 = 0xBB67_AE85;

/// Parameters of a montecarlo job.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MonteCarloParams {
    /// Points to draw, 1 ..= 2^40.
    pub samples: u64,
    /// Generator key: the same seed gives the same points and the same result.
    pub seed: u64,
}

/// One unit: samples `start .. start + count` of the job.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MonteCarloUnit {
    /// Index of the unit's first sample in the job.
    pub start: u64,
    /// Samples in the unit.
    pub count: u32,
    /// The job's seed.
    pub seed: u64,
}

/// The montecarlo kernel.
pub struct MonteCarlo;

/// Random123's known-answer vectors for Philox4x32-10: (counter, key, output). The CPU
/// and the GPU implementations are both tested against them.
pub const PHILOX_KAT: [([u32; 4], [u32; 2], [u32; 4]); 3] = [
    (
        [0, 0, 0, 0],
        [0, 0],
        [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8],
    ),
    (
        [u32::MAX; 4],
        [u32::MAX; 2],
        [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd],
    ),
    (
        [0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344],
        [0xa409_3822, 0x299f_31d0],
        [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1],
    ),
];

/// One Philox4x32 round.
fn philox_round(c: [u32; 4], k: [u32; 2]) -> [u32; 4] {
    let p0 = u64::from(PHILOX_M0) * u64::from(c[0]);
    let p1 = u64::from(PHILOX_M1) * u64::from(c[2]);
    [
        (p1 >> 32) as u32 ^ c[1] ^ k[0],
        p1 as u32,
        (p0 >> 32) as u32 ^ c[3] ^ k[1],
        p0 as u32,
    ]
}

/// Philox4x32-10: ten rounds, the key bumped by (W0, W1) between rounds. Identical to
/// `philox4x32_10` in `shader.wgsl` and to Random123's `philox4x32(ctr, key)`.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = philox_round(counter, key);
    let mut k = key;
    for _ in 1..10 {
        k = [k[0].wrapping_add(PHILOX_W0), k[1].wrapping_add(PHILOX_W1)];
        c = philox_round(c, k);
    }
    c
}

/// Whether sample `index` of a job with `seed` falls in the quarter circle.
pub fn is_hit(index: u64, seed: u64) -> bool {
    let r = philox4x32_10(
        [index as u32, (index >> 32) as u32, 0, 0],
        [seed as u32, (seed >> 32) as u32],
    );
    let (x, y) = (u64::from(r[0]), u64::from(r[1]));
    // Each square is below 2^64; the sum is below 2^64 exactly when it does not overflow.
    (x * x).checked_add(y * y).is_some()
}

impl MonteCarloUnit {
    fn check(&self) -> Result<(), KernelError> {
        if self.count == 0 {
            return Err(KernelError::InvalidParam {
                field: "unit.count".to_owned(),
                reason: "must be at least 1".to_owned(),
            });
        }
        match self.start.checked_add(u64::from(self.count)) {
            Some(end) if end <= MAX_SAMPLES => Ok(()),
            _ => Err(KernelError::InvalidParam {
                field: "unit.start".to_owned(),
                reason: format!(
                    "samples {} + {} run past the largest job of {MAX_SAMPLES} samples",
                    self.start, self.count
                ),
            }),
        }
    }

    fn check_input(&self, input: &[u8]) -> Result<(), KernelError> {
        self.check()?;
        if !input.is_empty() {
            return Err(KernelError::Shape {
                got: input.len(),
                expected: 0,
            });
        }
        Ok(())
    }
}

fn hits_of(output: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(output.try_into().ok()?))
}

impl UnitSpec for MonteCarlo {
    type Unit = MonteCarloUnit;
    const ID: &'static str = "montecarlo";

    fn output_len(_: &MonteCarloUnit) -> usize {
        8
    }

    fn run_cpu(u: &MonteCarloUnit, input: &[u8]) -> Result<Vec<u8>, KernelError> {
        u.check_input(input)?;
        let hits = (u.start..u.start + u64::from(u.count))
            .filter(|i| is_hit(*i, u.seed))
            .count() as u64;
        Ok(hits.to_le_bytes().to_vec())
    }

    fn gpu_dispatch(u: &MonteCarloUnit, input: &[u8]) -> Result<GpuDispatch, KernelError> {
        u.check_input(input)?;
        let uniforms = [
            u.start as u32,
            (u.start >> 32) as u32,
            u.count,
            u.seed as u32,
            (u.seed >> 32) as u32,
            0,
            0,
            0,
        ]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
        let workgroups = u
            .count
            .div_ceil(WORKGROUP * SAMPLES_PER_THREAD)
            .clamp(1, 65_535);
        Ok(GpuDispatch {
            label: "montecarlo",
            shader: crate::shader!("montecarlo"),
            uniforms,
            inputs: Vec::new(),
            output_bytes: 8,
            workgroups: [workgroups, 1, 1],
        })
    }

    fn unit_flops(u: &MonteCarloUnit) -> u64 {
        u64::from(u.count) * SAMPLE_FLOPS
    }
}

impl KernelSpec for MonteCarlo {
    type Params = MonteCarloParams;
    const VERSION: u32 = 1;

    fn info() -> KernelInfo {
        KernelInfo {
            id: Self::ID,
            version: Self::VERSION,
            description: "Estimates pi from random points of the unit square (the fraction \
                          inside the quarter circle, times 4), drawn with the counter-based \
                          generator Philox4x32-10 so that every device draws the same points; \
                          split into ranges of samples.",
            params_schema: json!({
                "type": "object",
                "required": ["samples", "seed"],
                "additionalProperties": false,
                "properties": {
                    "samples": {
                        "type": "integer", "minimum": 1, "maximum": MAX_SAMPLES,
                        "default": 100_000_000,
                    },
                    "seed": {
                        "description": "Philox key; a JSON integer up to 2^64 - 1",
                        "type": "integer",
                        "minimum": 0,
                        "maximum": u64::MAX,
                        "default": 42,
                    },
                },
            }),
            inputs: Vec::new(),
            output: "JSON {\"samples\": N, \"hits\": H, \"pi\": 4H/N, \"std_error\": \
                     4 sqrt(p (1 - p) / N) with p = H/N}. Sample i is Philox4x32-10 of \
                     counter (i mod 2^32, i div 2^32, 0, 0), key (seed mod 2^32, seed div \
                     2^32); words x, y are a hit when x^2 + y^2 < 2^64",
            output_content_type: "application/json",
            comparison: "exact: hit counts are integers computed exactly on every device, so \
                         honest replicas are byte-identical",
            spot_check: None,
        }
    }

    fn validate(p: &MonteCarloParams) -> Result<(), KernelError> {
        if !(1..=MAX_SAMPLES).contains(&p.samples) {
            return Err(KernelError::InvalidParam {
                field: "samples".to_owned(),
                reason: format!(
                    "must be between 1 and {MAX_SAMPLES} (2^40), got {}",
                    p.samples
                ),
            });
        }
        Ok(())
    }

    fn pack_input(_: &MonteCarloParams, inputs: &NamedInputs) -> Result<Vec<u8>, KernelError> {
        crate::catalog::no_inputs(
            inputs,
            "montecarlo takes no inputs (the points come from the seed)",
        )
    }

    fn split(p: &MonteCarloParams, target_flops: u64) -> Vec<MonteCarloUnit> {
        let fewest = p.samples.div_ceil(MAX_UNITS);
        let per_unit = (target_flops / SAMPLE_FLOPS)
            .max(fewest)
            .clamp(1, u64::from(MAX_UNIT_SAMPLES));
        let mut units = Vec::new();
        let mut start = 0;
        while start < p.samples {
            let count = per_unit.min(p.samples - start);
            units.push(MonteCarloUnit {
                start,
                // per_unit <= MAX_UNIT_SAMPLES, a u32.
                count: count as u32,
                seed: p.seed,
            });
            start += count;
        }
        units
    }

    fn unit_input(
        p: &MonteCarloParams,
        job_input: &[u8],
        u: &MonteCarloUnit,
    ) -> Result<Vec<u8>, KernelError> {
        if !job_input.is_empty() {
            return Err(KernelError::Shape {
                got: job_input.len(),
                expected: 0,
            });
        }
        if u.seed != p.seed || u.start.saturating_add(u64::from(u.count)) > p.samples {
            return Err(KernelError::InvalidParam {
                field: "unit".to_owned(),
                reason: format!(
                    "samples {} + {} with seed {} are not part of the job",
                    u.start, u.count, u.seed
                ),
            });
        }
        Ok(Vec::new())
    }

    fn merge(p: &MonteCarloParams, outputs: &[Vec<u8>]) -> Result<Vec<u8>, KernelError> {
        let mut hits = 0u64;
        for (i, output) in outputs.iter().enumerate() {
            let unit_hits = hits_of(output).ok_or(KernelError::Shape {
                got: output.len(),
                expected: 8,
            })?;
            hits = hits
                .checked_add(unit_hits)
                .filter(|h| *h <= p.samples)
                .ok_or_else(|| KernelError::InvalidInput {
                    field: format!("outputs[{i}]"),
                    reason: format!("hits add up to more than the job's {} samples", p.samples),
                })?;
        }
        let n = p.samples as f64;
        let fraction = hits as f64 / n;
        let result = json!({
            "samples": p.samples,
            "hits": hits,
            "pi": 4.0 * fraction,
            "std_error": 4.0 * (fraction * (1.0 - fraction) / n).sqrt(),
        });
        Ok(result.to_string().into_bytes())
    }

    /// Exact: every device computes the same integers.
    /// 2^20 to 2^28 samples under a fresh seed.
    fn probe(seed: u64) -> Option<(MonteCarloParams, NamedInputs)> {
        let mut rng = crate::ProbeRng::new(seed);
        let samples = 1u64 << (20 + rng.next_u64() % 9);
        Some((
            MonteCarloParams {
                samples,
                seed: rng.next_u64(),
            },
            NamedInputs::new(),
        ))
    }

    fn outputs_agree(_: &MonteCarloUnit, a: &[u8], b: &[u8]) -> bool {
        a == b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn info_schema_matches_the_params() {
        let info = MonteCarlo::info();
        assert_eq!(
            (info.id, info.version),
            (MonteCarlo::ID, MonteCarlo::VERSION)
        );
        let p = MonteCarloParams {
            samples: 5,
            seed: u64::MAX,
        };
        let value = serde_json::to_value(p).expect("plain struct");
        let keys: Vec<&String> = value.as_object().expect("object").keys().collect();
        let properties = info.params_schema["properties"]
            .as_object()
            .expect("properties");
        assert_eq!(keys, properties.keys().collect::<Vec<_>>());
        assert_eq!(
            info.params_schema["properties"]["seed"]["maximum"],
            u64::MAX
        );
        assert!(info.inputs.is_empty());
        assert_eq!(info.output_content_type, "application/json");
    }

    #[test]
    fn philox_matches_the_published_test_vectors() {
        for (counter, key, expected) in PHILOX_KAT {
            assert_eq!(
                philox4x32_10(counter, key),
                expected,
                "{counter:x?} {key:x?}"
            );
        }
    }

    fn merged(p: &MonteCarloParams, outputs: &[Vec<u8>]) -> serde_json::Value {
        let bytes = MonteCarlo::merge(p, outputs).expect("merge");
        serde_json::from_slice(&bytes).expect("JSON")
    }

    #[test]
    fn estimates_pi_within_five_standard_errors() {
        let p = MonteCarloParams {
            samples: 1_000_000,
            seed: 0x5eed_cafe_f00d_d00d,
        };
        let outputs: Vec<Vec<u8>> = MonteCarlo::split(&p, 100_000 * SAMPLE_FLOPS)
            .iter()
            .map(|u| MonteCarlo::run_cpu(u, &[]).expect("valid"))
            .collect();
        assert_eq!(outputs.len(), 10);
        let result = merged(&p, &outputs);
        let pi = result["pi"].as_f64().expect("pi");
        let std_error = result["std_error"].as_f64().expect("std_error");
        // sqrt(pi/4 (1 - pi/4) / 1e6) * 4 = 0.00164
        assert!((std_error - 0.001642).abs() < 1e-5, "{result}");
        assert!(
            (pi - std::f64::consts::PI).abs() < 5.0 * std_error,
            "{result}"
        );
        assert_eq!(result["samples"], 1_000_000);
        let hits = result["hits"].as_u64().expect("hits");
        assert_eq!(pi, 4.0 * hits as f64 / 1e6);
    }

    #[test]
    fn the_hit_test_is_exact_at_the_circle() {
        // x^2 + y^2 < 2^64 with the largest x: (2^32 - 1)^2 = 2^64 - 2^33 + 1, so y^2 must
        // be below 2^33 - 1, y <= 92681 (92681^2 = 8589767761 < 8589934591 = 2^33 - 1).
        let inside = |x: u64, y: u64| (x * x).checked_add(y * y).is_some();
        let x = u64::from(u32::MAX);
        assert!(inside(x, 92_681));
        assert!(!inside(x, 92_682));
        assert!(inside(0, x));
        assert!(!inside(x, x));
        // 2^31 sqrt(2) is the diagonal: 3037000499.97...
        assert!(inside(3_037_000_499, 3_037_000_499));
        assert!(!inside(3_037_000_500, 3_037_000_500));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn split_then_merge_equals_the_whole_range(
            samples in 1u64..5000, seed: u64, target in 1u64..2_000_000,
        ) {
            let p = MonteCarloParams { samples, seed };
            let units = MonteCarlo::split(&p, target);
            prop_assert_eq!(units.iter().map(|u| u64::from(u.count)).sum::<u64>(), samples);
            prop_assert!(units.windows(2).all(|w| w[0].start + u64::from(w[0].count) == w[1].start));
            let outputs: Vec<Vec<u8>> = units
                .iter()
                .map(|u| {
                    let input = MonteCarlo::unit_input(&p, &[], u).expect("empty input");
                    MonteCarlo::run_cpu(u, &input).expect("unit")
                })
                .collect();
            let whole = MonteCarloUnit { start: 0, count: samples as u32, seed };
            let whole = MonteCarlo::run_cpu(&whole, &[]).expect("whole");
            prop_assert_eq!(
                MonteCarlo::merge(&p, &outputs).expect("merge"),
                MonteCarlo::merge(&p, &[whole]).expect("merge")
            );
        }
    }

    #[test]
    fn splits_by_cost_and_caps_units() {
        let p = MonteCarloParams {
            samples: 1000,
            seed: 1,
        };
        let units = MonteCarlo::split(&p, 300 * SAMPLE_FLOPS);
        assert_eq!(
            units.iter().map(|u| u.count).collect::<Vec<_>>(),
            [300, 300, 300, 100]
        );
        assert_eq!(units[3].start, 900);
        assert_eq!(MonteCarlo::unit_flops(&units[3]), 100 * SAMPLE_FLOPS);

        let huge = MonteCarloParams {
            samples: MAX_SAMPLES,
            seed: 1,
        };
        // A tiny target would mean 2^40 units: capped at 2^20 units of 2^20 samples.
        assert_eq!(MonteCarlo::split(&huge, 1).len() as u64, MAX_UNITS);
        // A huge target still keeps each unit's count within a u32.
        let units = MonteCarlo::split(&huge, u64::MAX);
        assert_eq!(units.len(), 257);
        assert!(units.iter().take(256).all(|u| u.count == u32::MAX));
        assert_eq!(units[256].count, 256);
    }

    #[test]
    fn verifier_is_exact() {
        let unit = MonteCarloUnit {
            start: 12_345,
            count: 3000,
            seed: 99,
        };
        let honest = MonteCarlo::run_cpu(&unit, &[]).expect("valid");
        assert!(MonteCarlo::outputs_agree(&unit, &honest, &honest.clone()));
        let hits = hits_of(&honest).expect("8 bytes");
        assert!(hits > 2000 && hits < 2700, "{hits}");

        let mut flipped = honest.clone();
        flipped[0] ^= 1;
        assert!(!MonteCarlo::outputs_agree(&unit, &honest, &flipped));
        let mut high = honest.clone();
        high[7] ^= 0x80;
        assert!(!MonteCarlo::outputs_agree(&unit, &honest, &high));
        let one_more = (hits + 1).to_le_bytes();
        assert!(!MonteCarlo::outputs_agree(&unit, &honest, &one_more));
        let scaled = (hits * 101 / 100).to_le_bytes();
        assert!(!MonteCarlo::outputs_agree(&unit, &honest, &scaled));
        let other_seed = MonteCarlo::run_cpu(&MonteCarloUnit { seed: 100, ..unit }, &[]);
        assert!(!MonteCarlo::outputs_agree(
            &unit,
            &honest,
            &other_seed.expect("valid")
        ));
        let other_range = MonteCarlo::run_cpu(&MonteCarloUnit { start: 0, ..unit }, &[]);
        assert!(!MonteCarlo::outputs_agree(
            &unit,
            &honest,
            &other_range.expect("valid")
        ));
    }

    #[test]
    fn rejects_bad_params_and_inputs_with_precise_messages() {
        let err = MonteCarlo::validate(&MonteCarloParams {
            samples: 0,
            seed: 0,
        })
        .expect_err("no samples");
        assert_eq!(
            err.to_string(),
            "invalid parameter `samples`: must be between 1 and 1099511627776 (2^40), got 0"
        );
        assert!(MonteCarlo::validate(&MonteCarloParams {
            samples: MAX_SAMPLES + 1,
            seed: 0
        })
        .is_err());
        assert!(MonteCarlo::validate(&MonteCarloParams {
            samples: MAX_SAMPLES,
            seed: u64::MAX
        })
        .is_ok());

        let p = MonteCarloParams {
            samples: 10,
            seed: 0,
        };
        let mut inputs = NamedInputs::new();
        assert_eq!(MonteCarlo::pack_input(&p, &inputs), Ok(Vec::new()));
        inputs.insert("points".into(), vec![1, 2, 3]);
        let err = MonteCarlo::pack_input(&p, &inputs).expect_err("no inputs");
        assert_eq!(
            err.to_string(),
            "invalid input `points`: montecarlo takes no inputs (the points come from the seed)"
        );

        let catalog = crate::Catalog::builtin();
        let kernel = catalog.get("montecarlo").expect("built in");
        let plan = |params: serde_json::Value| {
            kernel
                .plan(&params, &NamedInputs::new(), 1 << 30)
                .map_err(|e| e.to_string())
        };
        let err = plan(json!({"samples": 10, "seed": 1, "rounds": 7})).expect_err("unknown");
        assert!(err.contains("unknown field `rounds`"), "{err}");
        let err = plan(json!({"samples": 10, "seed": -1})).expect_err("negative");
        assert!(err.starts_with("invalid parameter `params`"), "{err}");
        let err = plan(json!({"samples": 10})).expect_err("no seed");
        assert!(err.contains("missing field `seed`"), "{err}");
        let job = plan(json!({"samples": 10, "seed": u64::MAX})).expect("valid");
        assert_eq!(job.units.len(), 1);
        assert!(job.input.is_empty());
        assert_eq!(job.flops, 10 * SAMPLE_FLOPS);
    }

    #[test]
    fn rejects_malformed_units_outputs_and_merges() {
        let unit = MonteCarloUnit {
            start: 0,
            count: 0,
            seed: 0,
        };
        let err = MonteCarlo::run_cpu(&unit, &[]).expect_err("empty");
        assert_eq!(
            err.to_string(),
            "invalid parameter `unit.count`: must be at least 1"
        );
        let past = MonteCarloUnit {
            start: MAX_SAMPLES - 1,
            count: 2,
            seed: 0,
        };
        let err = MonteCarlo::gpu_dispatch(&past, &[]).expect_err("past the end");
        assert_eq!(
            err.to_string(),
            "invalid parameter `unit.start`: samples 1099511627775 + 2 run past the largest \
             job of 1099511627776 samples"
        );
        let ok = MonteCarloUnit { count: 1, ..past };
        assert!(MonteCarlo::gpu_dispatch(&ok, &[]).is_ok());
        assert_eq!(
            MonteCarlo::run_cpu(&ok, &[0]),
            Err(KernelError::Shape {
                got: 1,
                expected: 0
            })
        );

        let p = MonteCarloParams {
            samples: 10,
            seed: 3,
        };
        assert!(MonteCarlo::unit_input(&p, &[], &MonteCarloUnit { seed: 4, ..ok }).is_err());
        let err = MonteCarlo::merge(&p, &[vec![0; 8], vec![0; 4]]).expect_err("short");
        assert_eq!(
            err,
            KernelError::Shape {
                got: 4,
                expected: 8
            }
        );
        let err = MonteCarlo::merge(
            &p,
            &[6u64.to_le_bytes().to_vec(), 5u64.to_le_bytes().to_vec()],
        )
        .expect_err("too many hits");
        assert_eq!(
            err.to_string(),
            "invalid input `outputs[1]`: hits add up to more than the job's 10 samples"
        );
        let err = MonteCarlo::merge(
            &p,
            &[u64::MAX.to_le_bytes().to_vec(), 1u64.to_le_bytes().to_vec()],
        )
        .expect_err("overflow");
        assert!(
            err.to_string().starts_with("invalid input `outputs[0]`"),
            "{err}"
        );
        let result = merged(&p, &[10u64.to_le_bytes().to_vec()]);
        assert_eq!(
            result,
            json!({"samples": 10, "hits": 10, "pi": 4.0, "std_error": 0.0})
        );
    }
}
