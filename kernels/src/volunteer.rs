//! The volunteer's half of the catalog: runs any built-in kernel's unit by id, through
//! [`UnitSpec`] alone.
//!
//! Static dispatch on purpose: the relay's [`Catalog`](crate::Catalog) keeps each kernel
//! behind a `dyn Kernel`, and a vtable links every method it names (schemas, planning,
//! merging, spot checks, `serde_json::Value`) into whatever calls through it. Here each
//! function names only what it runs, so a build that never calls [`run_cpu`] (the
//! browser's page, whose CPU units run on a Web Worker) does not carry the CPU
//! references either.

use crate::gpu::GpuDispatch;
use crate::matmul::Matmul;
use crate::mlp::Mlp;
use crate::montecarlo::MonteCarlo;
use crate::render::Render;
#[cfg(feature = "gpu")]
use crate::{catalog::RunError, gpu::Gpu};
use crate::{KernelError, UnitSpec};

/// The ids of the kernels a volunteer can run: the same as the relay's catalog.
pub const KERNEL_IDS: [&str; 4] = [Matmul::ID, Mlp::ID, MonteCarlo::ID, Render::ID];

/// Evaluates `$body` with the type `$K` standing for the kernel whose id is `$id`.
macro_rules! by_id {
    ($id:expr, $K:ident => $body:expr) => {
        match $id {
            Matmul::ID => {
                type $K = Matmul;
                $body
            }
            Mlp::ID => {
                type $K = Mlp;
                $body
            }
            MonteCarlo::ID => {
                type $K = MonteCarlo;
                $body
            }
            Render::ID => {
                type $K = Render;
                $body
            }
            other => Err(KernelError::UnknownKernel(other.to_owned())),
        }
    };
}

/// A unit's parameters, from the JSON text the relay sends.
pub(crate) fn parse_unit<K: UnitSpec>(unit: &str) -> Result<K::Unit, KernelError> {
    serde_json::from_str(unit).map_err(|e| KernelError::InvalidParam {
        field: "unit".to_owned(),
        reason: e.to_string(),
    })
}

/// `output`, if it has the size its unit calls for (a shader's bug must not reach the relay
/// as a short answer).
pub(crate) fn checked(expected: usize, output: Vec<u8>) -> Result<Vec<u8>, KernelError> {
    if output.len() == expected {
        Ok(output)
    } else {
        Err(KernelError::Shape {
            got: output.len(),
            expected,
        })
    }
}

/// FLOPs of one unit of `kernel`.
pub fn unit_flops(kernel: &str, unit: &str) -> Result<u64, KernelError> {
    by_id!(kernel, K => Ok(K::unit_flops(&parse_unit::<K>(unit)?)))
}

/// The exact size of one unit's output.
pub fn output_len(kernel: &str, unit: &str) -> Result<usize, KernelError> {
    by_id!(kernel, K => Ok(K::output_len(&parse_unit::<K>(unit)?)))
}

/// Runs one unit on the kernel's CPU reference; its output has the unit's size.
pub fn run_cpu(kernel: &str, unit: &str, input: &[u8]) -> Result<Vec<u8>, KernelError> {
    by_id!(kernel, K => {
        let unit = parse_unit::<K>(unit)?;
        checked(K::output_len(&unit), K::run_cpu(&unit, input)?)
    })
}

/// One unit's GPU dispatch and the size its output must have.
pub fn gpu_dispatch(
    kernel: &str,
    unit: &str,
    input: &[u8],
) -> Result<(GpuDispatch, usize), KernelError> {
    by_id!(kernel, K => {
        let unit = parse_unit::<K>(unit)?;
        Ok((K::gpu_dispatch(&unit, input)?, K::output_len(&unit)))
    })
}

/// Runs one unit on `gpu`; its output has the unit's size.
#[cfg(feature = "gpu")]
pub async fn run_gpu(
    gpu: &Gpu,
    kernel: &str,
    unit: &str,
    input: &[u8],
) -> Result<Vec<u8>, RunError> {
    let (dispatch, expected) = gpu_dispatch(kernel, unit, input)?;
    let output = gpu.run(&dispatch, input).await?;
    Ok(checked(expected, output)?)
}

/// Runs one unit on the GPU when one is given, else on the CPU reference.
#[cfg(feature = "gpu")]
pub async fn run_unit(
    gpu: Option<&Gpu>,
    kernel: &str,
    unit: &str,
    input: &[u8],
) -> Result<Vec<u8>, RunError> {
    match gpu {
        Some(gpu) => run_gpu(gpu, kernel, unit, input).await,
        None => Ok(run_cpu(kernel, unit, input)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Catalog;

    /// A kernel the relay plans but volunteers cannot run would never finish a job.
    #[test]
    fn volunteers_run_exactly_the_relays_kernels() {
        let catalog: Vec<&str> = Catalog::builtin().infos().iter().map(|i| i.id).collect();
        let mut here = KERNEL_IDS.to_vec();
        here.sort_unstable();
        assert_eq!(here, catalog);
    }

    /// The same units, through the relay's erased catalog and through this module: the
    /// same FLOPs, output sizes and CPU outputs.
    #[test]
    fn agrees_with_the_catalog_on_every_kernels_probe() {
        let catalog = Catalog::builtin();
        for id in KERNEL_IDS {
            let kernel = catalog.get(id).expect("listed");
            let (params, inputs) = kernel.probe(7).expect("every built-in kernel probes");
            let plan = kernel
                .plan(&params, &inputs, 1_000_000)
                .expect("probe plans");
            let unit = plan.units.first().expect("a probe has units");
            let input = kernel
                .unit_input(&params, &plan.input, unit)
                .expect("unit input");
            assert_eq!(unit_flops(id, unit), kernel.unit_flops(unit), "{id}");
            assert_eq!(output_len(id, unit), kernel.output_len(unit), "{id}");
            let here = run_cpu(id, unit, &input).expect("runs");
            assert_eq!(Ok(here), kernel.run_cpu(unit, &input), "{id}");
            assert!(gpu_dispatch(id, unit, &input).is_ok(), "{id}");
        }
    }

    /// What a peer or a bad relay could send: an unknown kernel, unit text that is not
    /// the kernel's, a unit whose input is the wrong size. Each is an error, not a panic.
    #[test]
    fn refuses_unknown_kernels_malformed_units_and_wrong_inputs() {
        assert_eq!(
            unit_flops("bitcoin", "{}"),
            Err(KernelError::UnknownKernel("bitcoin".into()))
        );
        for bad in ["", "null", "{", r#"{"rows":"x"}"#, "[]"] {
            for id in KERNEL_IDS {
                assert!(
                    matches!(run_cpu(id, bad, &[]), Err(KernelError::InvalidParam { .. })),
                    "{id} accepted {bad:?}"
                );
            }
        }
        let unit = r#"{"row_start":0,"rows":2,"k":2,"n":2}"#;
        assert!(run_cpu("matmul", unit, &[0; 3]).is_err());
        assert!(gpu_dispatch("matmul", unit, &[0; 3]).is_err());
        assert_eq!(run_cpu("matmul", unit, &[0; 32]), Ok(vec![0; 16]));
    }
}
