//! Which matmul shader a device runs, chosen by a short trial on the device itself.
//!
//! The vec4 shader ([`super::tiles::VOLUNTEER`]) is 2.6-2.8x the scalar one's speed
//! alone on an H200, 3-5x on lavapipe and about 1.5x on SwiftShader, but nobody can say
//! ahead of time for every adapter, and SwiftShader takes over a second to compile it. So a volunteer starts on the scalar shader (its
//! first unit is never delayed), times it, and at a later unit big enough to say
//! something, runs that unit on both shaders and keeps the faster. The choice is
//! remembered per adapter (the browser keeps it across visits), keyed also by both
//! shaders' text, so a changed shader is tried again.
//!
//! Only speed is at stake: whichever shader ran, the relay verifies the output.

use super::{Matmul, MatmulUnit};
#[cfg(feature = "gpu")]
use crate::volunteer::checked;
use crate::UnitSpec;

/// The matmul shaders a volunteer can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulShader {
    /// `shader.wgsl`: one output per thread, 64x64 blocks; runs every shape.
    Scalar,
    /// [`super::tiles::VOLUNTEER`]: vec4 loads, 8x16 register tiles, 128x128 blocks; only
    /// where k and n are multiples of 4 (other units run the scalar shader whatever was
    /// chosen).
    Vec4,
}

impl MatmulShader {
    /// The name a choice is remembered by.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scalar => "scalar",
            Self::Vec4 => "vec4",
        }
    }

    /// A remembered choice; `None` for anything else (an old or tampered value, which
    /// just means trying again).
    pub fn parse(remembered: &str) -> Option<Self> {
        match remembered {
            "scalar" => Some(Self::Scalar),
            "vec4" => Some(Self::Vec4),
            _ => None,
        }
    }
}

/// Units smaller than one vec4 block's work (2 x 128^3 FLOPs) leave most of its threads
/// idle, so they say nothing about which shader is faster on real units.
pub const MIN_TRIAL_FLOPS: u64 = 2 * 128 * 128 * 128;

/// Most a trial may cost, predicted from the scalar shader's measured rate (the trial
/// runs the unit [`TRIAL_RUNS`] times over); a unit that would take a slow device seconds
/// would risk its lease.
pub const TRIAL_BUDGET_MS: f64 = 2_000.0;

/// Dispatches of each shader the trial times beyond a run of one: the difference between
/// a run of `1 + EXTRA_DISPATCHES` and a run of one is the shaders' own time, since
/// uploading the unit and reading it back cost the same in both. On a fast GPU those
/// dominate a unit, and a plain timing would call the shaders even.
const EXTRA_DISPATCHES: u32 = 3;

/// Most extra dispatches a trial times. Where three are drowned by how much a run's
/// upload and read-back vary (an H200 on a 2048^3 unit: 1.3 ms a scalar dispatch in a
/// 12 ms run, and three dispatches measured -2 ms), the trial times four times as many,
/// up to this.
#[cfg(feature = "gpu")]
const MAX_EXTRA_DISPATCHES: u32 = 48;

/// Units' worth of work in a trial: per shader one run to build the pipeline, one run of
/// one dispatch and one of `1 + EXTRA_DISPATCHES`. Where the trial times more dispatches,
/// their runs are short by then, and the elapsed time bounds them.
const TRIAL_RUNS: u32 = 2 * (3 + EXTRA_DISPATCHES);

/// How much faster the vec4 shader must be to be chosen: a short trial is noisy, and on
/// a tie the scalar shader's cheaper compile wins the next visit's first unit.
const VEC4_MARGIN: f64 = 0.9;

/// Whether a unit of `unit_flops` is a fair and affordable trial on a device whose scalar
/// shader ran at `scalar_flops_per_ms`.
pub fn worth_a_trial(unit_flops: u64, scalar_flops_per_ms: f64) -> bool {
    // NaN rates (no measurement) fail both comparisons, so they never start a trial.
    let predicted_ms = f64::from(TRIAL_RUNS) * unit_flops as f64 / scalar_flops_per_ms;
    unit_flops >= MIN_TRIAL_FLOPS && scalar_flops_per_ms > 0.0 && predicted_ms <= TRIAL_BUDGET_MS
}

/// Shaders' time below which a trial cannot tell them apart (a browser's coarsened clock,
/// a submission's jitter): a fast GPU on a small unit, where transfers dominate and the
/// choice matters little anyway.
const MEASURABLE_MS: f64 = 1.0;

/// The shader to keep, from the trial's times of the same dispatches; `None` where the
/// trial could not tell.
pub fn choose(scalar_ms: f64, vec4_ms: f64) -> Option<MatmulShader> {
    if !scalar_ms.is_finite() || scalar_ms < MEASURABLE_MS {
        return None;
    }
    Some(
        if vec4_ms.is_finite() && vec4_ms >= 0.0 && vec4_ms < scalar_ms * VEC4_MARGIN {
            MatmulShader::Vec4
        } else {
            MatmulShader::Scalar
        },
    )
}

/// Where a device's choice is remembered: the adapter, its backend, and a digest of both
/// shaders' text.
pub fn remembered_key(adapter: &str, backend: &str) -> String {
    // FNV-1a: a stable digest with no dependency; this is a cache key, not a defence.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in crate::shader!("matmul")
        .bytes()
        .chain(crate::shader!("matmul_vec4").bytes())
    {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("starling.matmul-shader.{hash:016x}.{backend}.{adapter}")
}

/// The matmul unit in a unit's parameters, if it is one the two shaders can both run.
pub fn vec4_candidate(params_json: &str) -> Option<MatmulUnit> {
    let unit: MatmulUnit = serde_json::from_str(params_json).ok()?;
    (unit.k.is_multiple_of(4) && unit.n.is_multiple_of(4)).then_some(unit)
}

/// FLOPs of a matmul unit.
pub fn flops(unit: &MatmulUnit) -> u64 {
    Matmul::unit_flops(unit)
}

/// Runs `unit` on the vec4 shader; `None` where k or n is not a multiple of 4.
#[cfg(feature = "gpu")]
pub async fn run_vec4(
    gpu: &crate::Gpu,
    unit: &MatmulUnit,
    input: &[u8],
) -> Result<Option<Vec<u8>>, crate::catalog::RunError> {
    let Some(vec4) = Matmul::gpu_dispatch_vec4(unit, input)? else {
        return Ok(None);
    };
    let output = gpu.run(&vec4, input).await?;
    Ok(Some(checked(Matmul::output_len(unit), output)?))
}

/// What a trial measured, and the unit's output from the shader it chose.
#[cfg(feature = "gpu")]
#[derive(Debug)]
pub struct Trial {
    /// Time of the scalar shader's extra dispatches, in ms (upload and read-back taken out).
    pub scalar_ms: f64,
    /// Time of the vec4 shader's, the same way.
    pub vec4_ms: f64,
    /// Extra dispatches of each shader timed.
    pub dispatches: u32,
    /// The shader to keep; `None` where the trial could not tell (the unit's output is
    /// the scalar shader's then).
    pub chosen: Option<MatmulShader>,
    /// The unit's output.
    pub output: Vec<u8>,
}

/// A run of `1 + extra` dispatches less a run of one, in ms (the shader's own time for
/// `extra` dispatches), and the run of one's time.
#[cfg(feature = "gpu")]
async fn extra_time(
    gpu: &crate::Gpu,
    dispatch: &crate::GpuDispatch,
    input: &[u8],
    extra: u32,
    now_ms: &impl Fn() -> f64,
) -> Result<(f64, f64), crate::catalog::RunError> {
    let started = now_ms();
    gpu.run_repeated(dispatch, input, 1).await?;
    let one = now_ms();
    gpu.run_repeated(dispatch, input, 1 + extra).await?;
    Ok(((now_ms() - one) - (one - started), one - started))
}

/// Runs `unit` on both shaders on `gpu`, timed with `now_ms` (the platform's clock), and
/// returns the faster with the unit's output. `None` where k or n is not a multiple of 4.
#[cfg(feature = "gpu")]
pub async fn trial(
    gpu: &crate::Gpu,
    unit: &MatmulUnit,
    input: &[u8],
    now_ms: impl Fn() -> f64,
) -> Result<Option<Trial>, crate::catalog::RunError> {
    let Some(vec4) = Matmul::gpu_dispatch_vec4(unit, input)? else {
        return Ok(None);
    };
    let scalar = Matmul::gpu_dispatch(unit, input)?;
    // Once each untimed: builds both pipelines (the vec4 one may compile for a second or
    // more on a software adapter) and gives each shader's output.
    let scalar_output = gpu.run(&scalar, input).await?;
    let vec4_output = gpu.run(&vec4, input).await?;
    let started = now_ms();
    // The scalar shader's extra dispatches alone, more of them until their time outweighs
    // a whole run of one (so a run's jitter cannot decide), within the dispatch and time
    // bounds.
    let mut extra = EXTRA_DISPATCHES;
    let scalar_ms = loop {
        let (shader_ms, run_ms) = extra_time(gpu, &scalar, input, extra, &now_ms).await?;
        if shader_ms >= 2.0 * run_ms
            || extra >= MAX_EXTRA_DISPATCHES
            || now_ms() - started > TRIAL_BUDGET_MS / 2.0
        {
            break shader_ms;
        }
        extra = (extra * 4).min(MAX_EXTRA_DISPATCHES);
    };
    let (vec4_ms, _) = extra_time(gpu, &vec4, input, extra, &now_ms).await?;
    let chosen = choose(scalar_ms, vec4_ms);
    Ok(Some(Trial {
        scalar_ms,
        vec4_ms,
        dispatches: extra,
        chosen,
        output: checked(
            Matmul::output_len(unit),
            match chosen {
                Some(MatmulShader::Vec4) => vec4_output,
                _ => scalar_output,
            },
        )?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vec4_shader_must_win_clearly_and_honestly() {
        assert_eq!(choose(100.0, 50.0), Some(MatmulShader::Vec4));
        assert_eq!(choose(100.0, 89.0), Some(MatmulShader::Vec4));
        assert_eq!(choose(100.0, 95.0), Some(MatmulShader::Scalar));
        assert_eq!(choose(100.0, 150.0), Some(MatmulShader::Scalar));
        // A clock that went backwards or a broken measurement keeps the safe default.
        assert_eq!(choose(100.0, -1.0), Some(MatmulShader::Scalar));
        assert_eq!(choose(100.0, f64::NAN), Some(MatmulShader::Scalar));
        // Too little time to tell the shaders apart: no choice at all.
        assert_eq!(choose(f64::NAN, 10.0), None);
        assert_eq!(choose(0.4, 0.1), None);
        assert_eq!(choose(-3.0, 0.1), None);
    }

    #[test]
    fn trials_are_fair_and_bounded() {
        let big = 2 * 256 * 256 * 256;
        // A fast device tries on a real unit.
        assert!(worth_a_trial(big, 1e6));
        // Too small to say anything.
        assert!(!worth_a_trial(2 * 64 * 64 * 64, 1e9));
        // A slow device would spend over two seconds: not now.
        assert!(!worth_a_trial(big, 1e3));
        // No measured rate yet (or a nonsense one): no trial.
        assert!(!worth_a_trial(big, 0.0));
        assert!(!worth_a_trial(big, f64::NAN));
    }

    #[test]
    fn remembered_choices_parse_back_and_garbage_means_try_again() {
        for shader in [MatmulShader::Scalar, MatmulShader::Vec4] {
            assert_eq!(MatmulShader::parse(shader.as_str()), Some(shader));
        }
        assert_eq!(MatmulShader::parse("VEC4"), None);
        assert_eq!(MatmulShader::parse(""), None);
    }

    #[test]
    fn a_unit_claiming_absurd_dimensions_is_priced_without_overflow_and_not_tried() {
        let unit = vec4_candidate(&format!(
            r#"{{"row_start":0,"rows":{m},"k":{m},"n":{m}}}"#,
            m = u32::MAX - 3
        ))
        .expect("a candidate by shape alone");
        assert_eq!(flops(&unit), u64::MAX);
        assert!(!worth_a_trial(flops(&unit), 1e9));
    }

    #[test]
    fn only_units_both_shaders_run_are_candidates() {
        assert!(vec4_candidate(r#"{"row_start":0,"rows":8,"k":16,"n":32}"#).is_some());
        assert!(vec4_candidate(r#"{"row_start":0,"rows":8,"k":15,"n":32}"#).is_none());
        assert!(vec4_candidate(r#"{"row_start":0,"rows":8,"k":16,"n":30}"#).is_none());
        assert!(vec4_candidate("not json").is_none());
    }

    #[test]
    fn the_key_names_the_adapter_and_backend() {
        let key = remembered_key("SwiftShader Device", "browserwebgpu");
        assert!(key.ends_with(".browserwebgpu.SwiftShader Device"), "{key}");
        assert_ne!(key, remembered_key("llvmpipe", "vulkan"));
    }
}
