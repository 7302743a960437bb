//! Starling's kernel catalog.
//!
//! A kernel is everything the network needs to know about one kind of computation:
//! its parameters and their limits, how job inputs are encoded, how a job splits into work
//! units and how unit outputs merge back, the WGSL that runs a unit on a GPU, and a CPU
//! reference that is both the test oracle and the fallback for devices without WebGPU.
//!
//! Kernels implement the typed [`KernelSpec`] trait, one module each (`matmul/`); the
//! [`Catalog`] erases their types behind [`Kernel`] so the relay and volunteers can handle
//! any kernel by id with JSON parameters. [`gpu::Gpu`] is the one wgpu runner every kernel
//! uses, natively (Vulkan, Metal) and in browsers (WebGPU).

pub mod catalog;
pub mod gpu;
pub mod matmul;
pub mod mlp;
pub mod montecarlo;
pub mod render;

pub use catalog::{Catalog, Kernel, KernelInfo, NamedInputs};
pub use gpu::{Gpu, GpuDispatch, GpuError};

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

/// A kernel, typed. Implement this once per kernel module; [`Catalog`] does the rest.
pub trait KernelSpec: Send + Sync + 'static {
    /// The job's parameters, as submitters send them.
    type Params: Serialize + DeserializeOwned;
    /// One unit's parameters, as volunteers receive them.
    type Unit: Serialize + DeserializeOwned;

    /// Stable id used in the REST API and on the wire.
    const ID: &'static str;
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
    /// Exact size of a unit's output; anything else is rejected before merging.
    fn output_len(unit: &Self::Unit) -> usize;
    /// Joins unit outputs, given in split order, into the job result.
    fn merge(params: &Self::Params, outputs: &[Vec<u8>]) -> Result<Vec<u8>, KernelError>;
    /// The CPU reference: the oracle for tests and the fallback without a GPU.
    fn run_cpu(unit: &Self::Unit, input: &[u8]) -> Result<Vec<u8>, KernelError>;
    /// How to run the unit on a GPU through [`Gpu::run`].
    fn gpu_dispatch(unit: &Self::Unit, input: &[u8]) -> Result<GpuDispatch, KernelError>;
    /// Floating-point operations one unit costs, for scheduling and credit.
    fn unit_flops(unit: &Self::Unit) -> u64;
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
}
