//! Starling's kernel catalog.
//!
//! A kernel is everything the network needs to know about one kind of computation:
//! its parameters and their limits, how job inputs are encoded, how a job splits into work
//! units and how unit outputs merge back, the WGSL that runs a unit on a GPU, and a CPU
//! reference that is both the test oracle and the fallback for devices without WebGPU.
//!
//! Kernels implement the typed [`UnitSpec`] (what a volunteer runs) and [`KernelSpec`]
//! (what the relay plans, checks and merges) traits, one module each (`matmul/`). The
//! [`Catalog`] erases their types behind [`Kernel`] so the relay can handle any kernel by
//! id with JSON parameters; [`volunteer`] runs any kernel's units by id with only the
//! volunteer's half, so nothing of the relay's is linked into a volunteer's build. [`gpu::Gpu`] is the one wgpu runner every kernel
//! uses, natively (Vulkan, Metal) and in browsers (WebGPU).

/// A kernel's WGSL (`src/KERNEL/shader.wgsl`) as `build.rs` strips it for shipping.
macro_rules! shader {
    ($kernel:literal) => {
        include_str!(concat!(env!("OUT_DIR"), "/", $kernel, ".wgsl"))
    };
}
pub(crate) use shader;

pub mod catalog;
pub mod custom;
pub mod gpu;
pub mod matmul;
pub mod mlp;
pub mod montecarlo;
pub mod render;
pub mod volunteer;

pub use catalog::{Catalog, Kernel, KernelInfo, NamedInputs};
#[cfg(feature = "gpu")]
pub use gpu::Gpu;
pub use gpu::{GpuDispatch, GpuError};

use serde::{de::DeserializeOwned, Serialize};

/// Why a kernel refused parameters or data.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KernelError {
    /// No kernel with that id in the catalog.
    #[error("unknown kernel `{0}`")]
    UnknownKernel(String),
    /// A parameter is missing, has the wrong type, or is out of range.
    #[error("invalid parameter `{field}`: {reason}")]
    InvalidParam {
        /// Dotted path of the parameter.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A named input is missing, unexpected, or has the wrong size.
    #[error("invalid input `{field}`: {reason}")]
    InvalidInput {
        /// Name of the input.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Bytes handed to a unit (input or output) do not match the unit's shape.
    #[error("unit data has {got} bytes, expected {expected}")]
    Shape {
        /// Bytes received.
        got: usize,
        /// Bytes the unit's parameters call for.
        expected: usize,
    },
}

/// What a volunteer needs of a kernel: one unit's parameters, its GPU dispatch, its CPU
/// reference, the size of its output and its cost. Volunteers reach kernels only through
/// this half (by id, with [`volunteer`]), so the relay's half ([`KernelSpec`]: schemas,
/// planning, merging, checks, JSON values) stays out of the browser's wasm.
pub trait UnitSpec: Send + Sync + 'static {
    /// One unit's parameters, as volunteers receive them.
    type Unit: Serialize + DeserializeOwned;

    /// Stable id used in the REST API and on the wire.
    const ID: &'static str;

    /// Exact size of a unit's output; anything else is rejected before merging.
    fn output_len(unit: &Self::Unit) -> usize;
    /// The CPU reference: the oracle for tests and the fallback without a GPU.
    fn run_cpu(unit: &Self::Unit, input: &[u8]) -> Result<Vec<u8>, KernelError>;
    /// How to run the unit on a GPU through [`Gpu::run`].
    fn gpu_dispatch(unit: &Self::Unit, input: &[u8]) -> Result<GpuDispatch, KernelError>;
    /// Floating-point operations one unit costs, for scheduling and credit.
    fn unit_flops(unit: &Self::Unit) -> u64;
}

/// A kernel, typed: the relay's half on top of the volunteer's [`UnitSpec`]. Implement
/// both once per kernel module; [`Catalog`] does the rest.
pub trait KernelSpec: UnitSpec {
    /// The job's parameters, as submitters send them.
    type Params: Serialize + DeserializeOwned;

    /// Bumped whenever outputs for the same inputs may change.
    const VERSION: u32;

    /// Human and machine description: parameter schema and input encoding.
    fn info() -> KernelInfo;
    /// Checks ranges and relations between parameters.
    fn validate(params: &Self::Params) -> Result<(), KernelError>;
    /// Checks the named inputs against the parameters and packs them into the job's one
    /// input blob.
    fn pack_input(params: &Self::Params, inputs: &NamedInputs) -> Result<Vec<u8>, KernelError>;
    /// Splits a validated job into units of roughly `target_flops` each.
    fn split(params: &Self::Params, target_flops: u64) -> Vec<Self::Unit>;
    /// The bytes a volunteer needs for one unit, cut from the job's input blob.
    fn unit_input(
        params: &Self::Params,
        job_input: &[u8],
        unit: &Self::Unit,
    ) -> Result<Vec<u8>, KernelError>;
    /// Joins unit outputs, given in split order, into the job result.
    fn merge(params: &Self::Params, outputs: &[Vec<u8>]) -> Result<Vec<u8>, KernelError>;
    /// Whether two outputs of the same unit, from different volunteers (or a volunteer
    /// and the CPU reference), count as the same result: exact for integer kernels, within
    /// a tolerance the kernel justifies for floating point.
    fn outputs_agree(unit: &Self::Unit, a: &[u8], b: &[u8]) -> bool;
    /// A check of one output alone, much cheaper than recomputing it, where the kernel has
    /// one (Freivalds' algorithm for matmul). `seed` picks the random challenge, so a
    /// volunteer cannot know it in advance. `None`: this kernel has no such check.
    fn spot_check(_unit: &Self::Unit, _input: &[u8], _output: &[u8], _seed: u64) -> Option<bool> {
        None
    }
    /// A fresh job made from `seed` alone, of the sizes real jobs of this kernel have,
    /// for the relay's known-answer units: the relay computes a few of its units itself
    /// and hands each to one volunteer as a test. Its parameters and data are new (random
    /// matrices, a random seed), so no volunteer can tell its units from new work by
    /// having seen them before. `None`: this kernel makes none.
    fn probe(_seed: u64) -> Option<(Self::Params, NamedInputs)> {
        None
    }
}

/// A small deterministic generator (SplitMix64) for [`KernelSpec::probe`]: the kernels
/// build for wasm too, and a probe needs no cryptographic randomness (its seed comes
/// from the relay's own generator).
#[derive(Debug, Clone)]
pub struct ProbeRng(u64);

impl ProbeRng {
    /// A generator started at `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// One of `choices`, which must not be empty.
    pub fn pick<T: Copy>(&mut self, choices: &[T]) -> T {
        choices[(self.next_u64() % choices.len() as u64) as usize]
    }

    /// `count` f32 uniform in `[-scale, scale)`, little-endian, as kernels' inputs are.
    pub fn f32_bytes(&mut self, count: usize, scale: f32) -> Vec<u8> {
        (0..count)
            .flat_map(|_| {
                let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
                ((unit * 2.0 - 1.0) * scale).to_le_bytes()
            })
            .collect()
    }
}

#[cfg(test)]
mod shader_tests {
    /// What a WGSL compiler reads of a shader: its tokens, without comments.
    fn tokens(wgsl: &str) -> Vec<&str> {
        wgsl.lines()
            .flat_map(|line| {
                line.split("//")
                    .next()
                    .unwrap_or_default()
                    .split_whitespace()
            })
            .collect()
    }

    /// The shipped shaders are the written ones, token for token, and carry no comments.
    #[test]
    fn shipped_shaders_are_the_sources_without_comments() {
        let pairs = [
            (include_str!("matmul/shader.wgsl"), shader!("matmul")),
            (include_str!("mlp/shader.wgsl"), shader!("mlp")),
            (
                include_str!("montecarlo/shader.wgsl"),
                shader!("montecarlo"),
            ),
            (include_str!("render/shader.wgsl"), shader!("render")),
        ];
        for (written, shipped) in pairs {
            assert_eq!(tokens(written), tokens(shipped));
            assert!(!shipped.contains("//"));
            assert!(shipped.len() < written.len(), "nothing was stripped");
        }
    }
}
