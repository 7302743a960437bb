//! Type-erased access to kernels by id, with JSON parameters.

use crate::custom::CustomKernel;
#[cfg(feature = "gpu")]
use crate::gpu::Gpu;
use crate::gpu::{GpuDispatch, GpuError};
use crate::volunteer::parse_unit;
use crate::{matmul::Matmul, KernelError, KernelSpec, UnitSpec};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::{Arc, RwLock};

/// Named binary inputs of a job, as decoded from the submitter's request.
pub type NamedInputs = BTreeMap<String, Vec<u8>>;

/// `pack_input` of a kernel that takes no inputs: refuses any, naming it, with `why`.
pub fn no_inputs(inputs: &NamedInputs, why: &str) -> Result<Vec<u8>, KernelError> {
    match inputs.keys().next() {
        Some(name) => Err(KernelError::InvalidInput {
            field: name.clone(),
            reason: why.to_owned(),
        }),
        None => Ok(Vec::new()),
    }
}

/// What `GET /api/v1/kernels` shows about a kernel.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct KernelInfo {
    /// Stable id.
    pub id: &'static str,
    /// Version; changes when outputs may change.
    pub version: u32,
    /// One paragraph for people.
    pub description: &'static str,
    /// JSON Schema of the job parameters.
    pub params_schema: Value,
    /// Each named input and its encoding.
    pub inputs: Vec<InputInfo>,
    /// Encoding of the job result.
    pub output: &'static str,
    /// MIME type of the job result.
    pub output_content_type: &'static str,
    /// How two replicas of a unit are compared (exact, or the tolerance and why).
    pub comparison: &'static str,
    /// The cheap single-result check, if the kernel has one, and its false-accept odds.
    pub spot_check: Option<&'static str>,
}

/// One named input of a kernel.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct InputInfo {
    /// Name used in the job's `input` object.
    pub name: &'static str,
    /// Encoding and size, for people.
    pub encoding: &'static str,
}

/// A job, planned: its input blob and its units, ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct JobPlan {
    /// The packed job input.
    pub input: Vec<u8>,
    /// Each unit's parameters as JSON text, in merge order.
    pub units: Vec<String>,
    /// Each unit's FLOPs, in the same order.
    pub unit_flops: Vec<u64>,
    /// Total FLOPs of the job.
    pub flops: u64,
}

/// A kernel behind JSON: what the relay and volunteers call.
pub trait Kernel: Send + Sync {
    /// The kernel's description.
    fn info(&self) -> KernelInfo;
    /// Validates parameters and inputs, packs the input and splits the job.
    fn plan(
        &self,
        params: &Value,
        inputs: &NamedInputs,
        target_flops: u64,
    ) -> Result<JobPlan, KernelError>;
    /// How many units [`Kernel::plan`] would split valid `params` into, without
    /// checking inputs or writing out each unit: what a relay compares with its limit on
    /// units before paying for a plan it would refuse.
    fn unit_count(&self, params: &Value, target_flops: u64) -> Result<usize, KernelError>;
    /// The input bytes of one unit.
    fn unit_input(
        &self,
        params: &Value,
        job_input: &[u8],
        unit: &str,
    ) -> Result<Vec<u8>, KernelError>;
    /// Checks a unit output's size before it is accepted.
    fn check_output(&self, unit: &str, output: &[u8]) -> Result<(), KernelError>;
    /// The exact size of one unit's output: what a volunteer holding its lease may
    /// legitimately send back.
    fn output_len(&self, unit: &str) -> Result<usize, KernelError>;
    /// Merges unit outputs (in unit order) into the job result.
    fn merge(&self, params: &Value, outputs: &[Vec<u8>]) -> Result<Vec<u8>, KernelError>;
    /// Runs one unit on the CPU reference.
    fn run_cpu(&self, unit: &str, input: &[u8]) -> Result<Vec<u8>, KernelError>;
    /// Describes one unit's GPU dispatch.
    fn gpu_dispatch(&self, unit: &str, input: &[u8]) -> Result<GpuDispatch, KernelError>;
    /// FLOPs of one unit.
    fn unit_flops(&self, unit: &str) -> Result<u64, KernelError>;
    /// Whether two outputs of one unit count as the same result.
    fn outputs_agree(&self, unit: &str, a: &[u8], b: &[u8]) -> Result<bool, KernelError>;
    /// The kernel's cheap check of one output, if it has one (see [`KernelSpec::spot_check`]).
    fn spot_check(
        &self,
        unit: &str,
        input: &[u8],
        output: &[u8],
        seed: u64,
    ) -> Result<Option<bool>, KernelError>;
    /// A fresh job for known-answer units, made from `seed` (see [`KernelSpec::probe`]):
    /// its parameters as JSON and its named inputs.
    fn probe(&self, seed: u64) -> Option<(Value, NamedInputs)>;
}

struct Erased<K>(PhantomData<K>);

fn parse<T: serde::de::DeserializeOwned>(what: &str, value: Value) -> Result<T, KernelError> {
    serde_json::from_value(value).map_err(|e| KernelError::InvalidParam {
        field: what.to_owned(),
        reason: e.to_string(),
    })
}

impl<K: KernelSpec> Kernel for Erased<K> {
    fn info(&self) -> KernelInfo {
        K::info()
    }

    fn plan(
        &self,
        params: &Value,
        inputs: &NamedInputs,
        target_flops: u64,
    ) -> Result<JobPlan, KernelError> {
        let params: K::Params = parse("params", params.clone())?;
        K::validate(&params)?;
        let input = K::pack_input(&params, inputs)?;
        let units = K::split(&params, target_flops.max(1));
        let unit_flops: Vec<u64> = units.iter().map(K::unit_flops).collect();
        let flops = unit_flops.iter().sum();
        let units = units
            .iter()
            .map(|u| serde_json::to_string(u).expect("unit parameters are plain structs"))
            .collect();
        Ok(JobPlan {
            input,
            units,
            unit_flops,
            flops,
        })
    }

    fn unit_count(&self, params: &Value, target_flops: u64) -> Result<usize, KernelError> {
        let params: K::Params = parse("params", params.clone())?;
        K::validate(&params)?;
        Ok(K::split(&params, target_flops.max(1)).len())
    }

    fn unit_input(
        &self,
        params: &Value,
        job_input: &[u8],
        unit: &str,
    ) -> Result<Vec<u8>, KernelError> {
        let params: K::Params = parse("params", params.clone())?;
        K::unit_input(&params, job_input, &parse_unit::<K>(unit)?)
    }

    fn check_output(&self, unit: &str, output: &[u8]) -> Result<(), KernelError> {
        let expected = K::output_len(&parse_unit::<K>(unit)?);
        if output.len() == expected {
            Ok(())
        } else {
            Err(KernelError::Shape {
                got: output.len(),
                expected,
            })
        }
    }

    fn merge(&self, params: &Value, outputs: &[Vec<u8>]) -> Result<Vec<u8>, KernelError> {
        let params: K::Params = parse("params", params.clone())?;
        K::merge(&params, outputs)
    }

    fn output_len(&self, unit: &str) -> Result<usize, KernelError> {
        Ok(K::output_len(&parse_unit::<K>(unit)?))
    }

    fn run_cpu(&self, unit: &str, input: &[u8]) -> Result<Vec<u8>, KernelError> {
        K::run_cpu(&parse_unit::<K>(unit)?, input)
    }

    fn gpu_dispatch(&self, unit: &str, input: &[u8]) -> Result<GpuDispatch, KernelError> {
        K::gpu_dispatch(&parse_unit::<K>(unit)?, input)
    }

    fn unit_flops(&self, unit: &str) -> Result<u64, KernelError> {
        Ok(K::unit_flops(&parse_unit::<K>(unit)?))
    }

    fn outputs_agree(&self, unit: &str, a: &[u8], b: &[u8]) -> Result<bool, KernelError> {
        let unit = parse_unit::<K>(unit)?;
        let expected = K::output_len(&unit);
        Ok(a.len() == expected && b.len() == expected && K::outputs_agree(&unit, a, b))
    }

    fn spot_check(
        &self,
        unit: &str,
        input: &[u8],
        output: &[u8],
        seed: u64,
    ) -> Result<Option<bool>, KernelError> {
        let unit = parse_unit::<K>(unit)?;
        if output.len() != K::output_len(&unit) {
            return Ok(Some(false));
        }
        Ok(K::spot_check(&unit, input, output, seed))
    }

    fn probe(&self, seed: u64) -> Option<(Value, NamedInputs)> {
        let (params, inputs) = K::probe(seed)?;
        Some((
            serde_json::to_value(params).expect("kernel parameters are plain structs"),
            inputs,
        ))
    }
}

/// All kernels this build knows, by id, and the registered ones this process met.
pub struct Catalog {
    kernels: BTreeMap<&'static str, Box<dyn Kernel>>,
    /// Each kernel's description, built once: the relay consults it per result.
    infos: BTreeMap<&'static str, KernelInfo>,
    /// Kernels submitters registered, by content address, as the relay loaded them
    /// (see [`Catalog::add_custom`]); at most [`MAX_CUSTOM_KERNELS`].
    custom: RwLock<BTreeMap<String, Arc<CustomKernel>>>,
}

/// Most registered kernels a catalog holds at once; a relay loads one again from its
/// database when it needs one it let go.
pub const MAX_CUSTOM_KERNELS: usize = 256;

/// A kernel from [`Catalog::get`]: a built-in, borrowed, or a registered one, shared.
pub enum KernelRef<'c> {
    /// One of the build's kernels.
    Builtin(&'c (dyn Kernel + 'static)),
    /// A kernel a submitter registered.
    Custom(Arc<CustomKernel>),
}

impl std::ops::Deref for KernelRef<'_> {
    type Target = dyn Kernel;

    fn deref(&self) -> &(dyn Kernel + 'static) {
        match self {
            Self::Builtin(kernel) => *kernel,
            Self::Custom(kernel) => kernel.as_ref(),
        }
    }
}

impl Catalog {
    /// The built-in catalog.
    pub fn builtin() -> Self {
        let mut kernels: BTreeMap<&'static str, Box<dyn Kernel>> = BTreeMap::new();
        kernels.insert(Matmul::ID, Box::new(Erased::<Matmul>(PhantomData)));
        kernels.insert(
            crate::mlp::Mlp::ID,
            Box::new(Erased::<crate::mlp::Mlp>(PhantomData)),
        );
        kernels.insert(
            crate::montecarlo::MonteCarlo::ID,
            Box::new(Erased::<crate::montecarlo::MonteCarlo>(PhantomData)),
        );
        kernels.insert(
            crate::render::Render::ID,
            Box::new(Erased::<crate::render::Render>(PhantomData)),
        );
        let infos = kernels.iter().map(|(id, k)| (*id, k.info())).collect();
        Self {
            kernels,
            infos,
            custom: RwLock::new(BTreeMap::new()),
        }
    }

    /// The kernel with this id: a built-in, or a registered kernel added here.
    pub fn get(&self, id: &str) -> Result<KernelRef<'_>, KernelError> {
        if let Some(kernel) = self.kernels.get(id) {
            return Ok(KernelRef::Builtin(kernel.as_ref()));
        }
        self.custom(id)
            .map(KernelRef::Custom)
            .ok_or_else(|| KernelError::UnknownKernel(id.chars().take(64).collect()))
    }

    /// The registered kernel with this content address, if added here.
    pub fn custom(&self, id: &str) -> Option<Arc<CustomKernel>> {
        self.custom
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(id)
            .cloned()
    }

    /// Makes a registered kernel available to [`Catalog::get`]; past
    /// [`MAX_CUSTOM_KERNELS`] one held earlier is let go.
    pub fn add_custom(&self, kernel: CustomKernel) -> Arc<CustomKernel> {
        let kernel = Arc::new(kernel);
        let mut custom = self
            .custom
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if custom.len() >= MAX_CUSTOM_KERNELS && !custom.contains_key(kernel.id()) {
            custom.pop_first();
        }
        custom.insert(kernel.id().to_owned(), kernel.clone());
        kernel
    }

    /// Every kernel's description, sorted by id.
    pub fn infos(&self) -> Vec<&KernelInfo> {
        self.infos.values().collect()
    }

    /// The description of the kernel with this id.
    pub fn info(&self, id: &str) -> Result<&KernelInfo, KernelError> {
        self.infos
            .get(id)
            .ok_or_else(|| KernelError::UnknownKernel(id.to_owned()))
    }

    /// Runs one unit on the GPU when one is given, else on the CPU reference (as
    /// [`crate::volunteer::run_unit`], which volunteers call).
    #[cfg(feature = "gpu")]
    pub async fn run_unit(
        &self,
        gpu: Option<&Gpu>,
        kernel: &str,
        unit: &str,
        input: &[u8],
    ) -> Result<Vec<u8>, RunError> {
        crate::volunteer::run_unit(gpu, kernel, unit, input).await
    }
}

/// Why running a unit failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The unit or its data were refused by the kernel.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// The GPU failed.
    #[error(transparent)]
    Gpu(#[from] GpuError),
}

#[cfg(test)]
mod probe_tests {
    use super::*;

    /// The console's form starts from each parameter's `default`: every parameter has
    /// one, inside its bounds, and the kernels that take no inputs plan a job from them
    /// as they stand.
    #[test]
    fn every_parameter_has_a_default_a_job_accepts() {
        let catalog = Catalog::builtin();
        for info in catalog.infos() {
            let properties = info.params_schema["properties"]
                .as_object()
                .expect("properties");
            let mut defaults = serde_json::Map::new();
            for (name, schema) in properties {
                let default = &schema["default"];
                assert!(!default.is_null(), "{}.{name} has no default", info.id);
                if let (Some(v), Some(min), Some(max)) = (
                    default.as_f64(),
                    schema["minimum"].as_f64(),
                    schema["maximum"].as_f64(),
                ) {
                    assert!((min..=max).contains(&v), "{}.{name} = {v}", info.id);
                }
                defaults.insert(name.clone(), default.clone());
            }
            let kernel = catalog.get(info.id).expect("listed");
            if info.inputs.is_empty() {
                kernel
                    .plan(&Value::Object(defaults), &NamedInputs::new(), 64_000_000)
                    .unwrap_or_else(|e| panic!("{}'s defaults are refused: {e}", info.id));
            }
        }
    }

    #[test]
    fn every_builtin_kernel_makes_valid_fresh_probes() {
        let catalog = Catalog::builtin();
        for info in catalog.infos() {
            let kernel = catalog.get(info.id).expect("listed");
            let (params, inputs) = kernel.probe(1).expect("every built-in kernel probes");
            let plan = kernel
                .plan(&params, &inputs, 64_000_000)
                .unwrap_or_else(|e| panic!("{}'s probe is refused: {e}", info.id));
            assert!(!plan.units.is_empty(), "{}", info.id);
            // A different seed, different work: nobody saw these parameters or data.
            let (other, other_inputs) = kernel.probe(2).expect("probes");
            assert!(
                other != params || other_inputs != inputs,
                "{}: seeds 1 and 2 make the same probe",
                info.id
            );
        }
    }
}

#[cfg(test)]
mod unit_count_tests {
    use super::Catalog;

    #[test]
    fn the_unit_count_is_the_plans_for_every_kernel() {
        let catalog = Catalog::builtin();
        let mut checked = 0;
        for info in catalog.infos() {
            let kernel = catalog.get(info.id).expect("listed kernels exist");
            let Some((params, inputs)) = kernel.probe(7) else {
                continue;
            };
            for target in [100_000, 1_000_000, 64_000_000] {
                let plan = kernel
                    .plan(&params, &inputs, target)
                    .expect("a probe plans");
                assert_eq!(
                    kernel.unit_count(&params, target).ok(),
                    Some(plan.units.len()),
                    "{} at {target} FLOPs a unit",
                    info.id
                );
            }
            checked += 1;
        }
        assert!(checked >= 2, "{checked} kernels have probes");
    }
}
