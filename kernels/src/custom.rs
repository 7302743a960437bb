//! A submitter's own WGSL kernel, run from its manifest (`starling_api::manifest`): the
//! same planning, unit inputs, merging and comparison as a built-in, drawn from what the
//! manifest declares instead of code.
//!
//! - A job's input is its inputs concatenated in the manifest's order; a unit gets all
//!   of each input, or of one the manifest slices per unit ([`InputSlice`](starling_api::manifest::InputSlice)) only the
//!   elements its invocations read.
//! - Units are runs of `unit_invocations` along a 1-D range, or bands of whole rows of a
//!   2-D one, so unit outputs concatenate, in order, into the job's output.
//! - Each invocation owns `output.length / invocations` consecutive output elements.
//! - There is no CPU reference: replicas on distinct wallets are the only check.

use crate::catalog::{JobPlan, KernelInfo, NamedInputs};
#[cfg(feature = "gpu")]
use crate::gpu::Gpu;
use crate::gpu::GpuDispatch;
use crate::KernelError;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use starling_api::manifest::{Comparison, Expr, KernelManifest, UNIT_UNIFORM_FIELDS};
use std::collections::BTreeMap;
use std::ops::Range;

/// WebGPU's default `maxStorageBufferBindingSize`: no buffer of a job may be larger.
pub const MAX_BUFFER_BYTES: u64 = 128 * 1024 * 1024;
/// WebGPU's default `maxComputeWorkgroupsPerDimension`.
const MAX_WORKGROUPS_PER_DIMENSION: u64 = 65_535;

/// One unit of a custom kernel, as volunteers receive it (the unit uniform's values).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomUnit {
    /// The unit's first invocation in the job's range.
    pub offset: [u32; 2],
    /// Invocations in the unit, along x and y.
    pub size: [u32; 2],
    /// The job's whole range.
    pub range: [u32; 2],
    /// The job's parameters, in the manifest's order.
    pub params: Vec<u32>,
}

/// A unit as the relay sends it to a volunteer: the kernel's source and manifest with
/// it, checked against the kernel's content address before anything runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Carried<K> {
    kernel: K,
    unit: CustomUnit,
}

/// The kernel half of [`Carried`], as sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CarriedKernel {
    source: String,
    manifest: KernelManifest,
}

/// A unit's parameters as the relay stores them (plain) or sends them (carried).
#[derive(Deserialize)]
#[serde(untagged)]
enum AnyUnit {
    Carried(Carried<serde::de::IgnoredAny>),
    Plain(CustomUnit),
}

/// A registered kernel ready to plan and run: its manifest with every expression parsed.
#[derive(Debug, Clone)]
pub struct CustomKernel {
    id: String,
    manifest: KernelManifest,
    source: String,
    input_lengths: Vec<Expr>,
    output_length: Expr,
    range: Vec<Expr>,
}

fn invalid_param(field: &str, reason: impl Into<String>) -> KernelError {
    KernelError::InvalidParam {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

impl CustomKernel {
    /// The kernel `id` (its content address) with this manifest and source. The relay has
    /// checked both when it was registered; this only parses the expressions again.
    pub fn new(id: String, manifest: KernelManifest, source: String) -> Result<Self, KernelError> {
        let parse = |field: &str, text: &str| {
            Expr::parse(text, &manifest.params).map_err(|e| invalid_param(field, e.to_string()))
        };
        let input_lengths = manifest
            .inputs
            .iter()
            .map(|input| parse(&input.name, &input.length))
            .collect::<Result<_, _>>()?;
        let output_length = parse("output", &manifest.output.length)?;
        let range = manifest
            .split
            .range
            .iter()
            .map(|text| parse("range", text))
            .collect::<Result<Vec<_>, _>>()?;
        if !(1..=2).contains(&range.len()) || manifest.split.unit_invocations == 0 {
            return Err(invalid_param(
                "split",
                "a 1-D or 2-D range, units of at least 1",
            ));
        }
        Ok(Self {
            id,
            manifest,
            source,
            input_lengths,
            output_length,
            range,
        })
    }

    /// Its content address.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// What a volunteer is sent for `unit` (a unit's JSON as planned): the unit with this
    /// kernel's source and manifest, so it needs nothing else to run it.
    pub fn assignment_params(&self, unit: &str) -> String {
        let unit: CustomUnit = match serde_json::from_str(unit) {
            Ok(unit) => unit,
            // Not a unit of this kernel: sent as it is, and refused by the volunteer.
            Err(_) => return unit.to_owned(),
        };
        serde_json::to_string(&Carried {
            kernel: CarriedKernel {
                source: self.source.clone(),
                manifest: self.manifest.clone(),
            },
            unit,
        })
        .expect("a unit and a manifest always serialise")
    }

    /// The kernel `id` and the unit, from what the relay sent a volunteer: refused unless
    /// the source and manifest it carries hash to `id`.
    pub fn from_assignment(id: &str, params_json: &str) -> Result<(Self, String), KernelError> {
        let carried: Carried<CarriedKernel> =
            serde_json::from_str(params_json).map_err(|e| invalid_param("unit", e.to_string()))?;
        let Carried { kernel, unit } = carried;
        if starling_api::manifest::content_id(&kernel.source, &kernel.manifest) != id {
            return Err(invalid_param(
                "kernel",
                "the source and manifest sent are not the kernel this unit names",
            ));
        }
        let unit = serde_json::to_string(&unit).expect("a unit always serialises");
        Ok((
            Self::new(id.to_owned(), kernel.manifest, kernel.source)?,
            unit,
        ))
    }

    /// What it declares.
    pub fn manifest(&self) -> &KernelManifest {
        &self.manifest
    }

    /// A job's parameters, checked against the declared ones and their bounds.
    fn values(&self, params: &Value) -> Result<BTreeMap<String, u64>, KernelError> {
        let object = params
            .as_object()
            .ok_or_else(|| invalid_param("params", "an object of integer parameters"))?;
        if let Some(extra) = object
            .keys()
            .find(|name| !self.manifest.params.iter().any(|p| &p.name == *name))
        {
            let shown: String = extra.chars().take(64).collect();
            return Err(invalid_param(&shown, "not a parameter of this kernel"));
        }
        self.manifest
            .params
            .iter()
            .map(|p| {
                let value = object
                    .get(&p.name)
                    .ok_or_else(|| invalid_param(&p.name, "missing"))?
                    .as_u64()
                    .filter(|v| (u64::from(p.min)..=u64::from(p.max)).contains(v))
                    .ok_or_else(|| {
                        invalid_param(&p.name, format!("an integer from {} to {}", p.min, p.max))
                    })?;
                Ok((p.name.clone(), value))
            })
            .collect()
    }

    fn eval(
        &self,
        field: &str,
        expr: &Expr,
        values: &BTreeMap<String, u64>,
    ) -> Result<u64, KernelError> {
        expr.eval(values)
            .map_err(|e| invalid_param(field, e.to_string()))
    }

    /// Bytes of a buffer of `elements`, refused over WebGPU's binding limit.
    fn buffer_bytes(field: &str, elements: u64) -> Result<u64, KernelError> {
        elements
            .checked_mul(4)
            .filter(|bytes| *bytes <= MAX_BUFFER_BYTES)
            .ok_or_else(|| {
                invalid_param(
                    field,
                    format!("{elements} elements, over WebGPU's {MAX_BUFFER_BYTES}-byte buffer"),
                )
            })
    }

    /// The range, the output elements per invocation, and each input's bytes.
    fn shape(&self, values: &BTreeMap<String, u64>) -> Result<Shape, KernelError> {
        let mut range = [1u32; 2];
        for (i, expr) in self.range.iter().enumerate() {
            let extent = self.eval("range", expr, values)?;
            range[i] = u32::try_from(extent)
                .ok()
                .filter(|e| *e > 0)
                .ok_or_else(|| {
                    invalid_param(
                        "params",
                        format!("the range's extent {extent} is not within 1 and 2^32 - 1"),
                    )
                })?;
        }
        let invocations = u64::from(range[0]) * u64::from(range[1]);
        let output = self.eval("output", &self.output_length, values)?;
        Self::buffer_bytes("output", output)?;
        if output == 0 || output % invocations != 0 {
            return Err(invalid_param(
                "params",
                format!("the output's {output} elements are not a whole number per each of {invocations} invocations"),
            ));
        }
        let inputs = self
            .manifest
            .inputs
            .iter()
            .zip(&self.input_lengths)
            .map(|(input, expr)| {
                let elements = self.eval(&input.name, expr, values)?;
                if let Some(slice) = input.per_unit {
                    let expected = u64::from(range[0]) * u64::from(slice.per_invocation);
                    if self.range.len() != 1 || elements != expected {
                        return Err(invalid_param(
                            &input.name,
                            format!(
                                "sliced per unit, it must hold {} elements per invocation of a \
                                 1-D range ({expected}), not {elements}",
                                slice.per_invocation
                            ),
                        ));
                    }
                }
                Self::buffer_bytes(&input.name, elements)
            })
            .collect::<Result<_, _>>()?;
        Ok(Shape {
            range,
            per_invocation: output / invocations,
            inputs,
        })
    }

    /// The units, in merge order.
    fn split(&self, values: &BTreeMap<String, u64>, range: [u32; 2]) -> Vec<CustomUnit> {
        let target = self.manifest.split.unit_invocations;
        let params: Vec<u32> = self
            .manifest
            .params
            .iter()
            // Values were checked against each parameter's u32 bounds.
            .map(|p| values.get(&p.name).map_or(0, |v| *v as u32))
            .collect();
        let unit = |offset: [u32; 2], size: [u32; 2]| CustomUnit {
            offset,
            size,
            range,
            params: params.clone(),
        };
        if self.range.len() == 1 {
            (0..range[0].div_ceil(target))
                .map(|i| {
                    let start = i * target;
                    unit([start, 0], [target.min(range[0] - start), 1])
                })
                .collect()
        } else {
            let rows = (target / range[0]).max(1);
            (0..range[1].div_ceil(rows))
                .map(|i| {
                    let start = i * rows;
                    unit([0, start], [range[0], rows.min(range[1] - start)])
                })
                .collect()
        }
    }

    fn unit_count_for(&self, range: [u32; 2]) -> usize {
        let target = self.manifest.split.unit_invocations;
        let count = if self.range.len() == 1 {
            range[0].div_ceil(target)
        } else {
            range[1].div_ceil((target / range[0]).max(1))
        };
        count as usize
    }

    fn parse_unit(&self, unit: &str) -> Result<(CustomUnit, Shape), KernelError> {
        let unit = match serde_json::from_str(unit) {
            Ok(AnyUnit::Plain(unit)) | Ok(AnyUnit::Carried(Carried { unit, .. })) => unit,
            Err(e) => return Err(invalid_param("unit", e.to_string())),
        };
        if unit.params.len() != self.manifest.params.len() {
            return Err(invalid_param("unit", "not this kernel's parameters"));
        }
        let values = self
            .manifest
            .params
            .iter()
            .zip(&unit.params)
            .map(|(p, v)| (p.name.clone(), u64::from(*v)))
            .collect();
        let shape = self.shape(&values)?;
        let inside = |axis: usize| {
            u64::from(unit.offset[axis]) + u64::from(unit.size[axis])
                <= u64::from(shape.range[axis])
        };
        if shape.range != unit.range || !inside(0) || !inside(1) || unit.size.contains(&0) {
            return Err(invalid_param("unit", "outside the job's range"));
        }
        Ok((unit, shape))
    }

    /// The bytes of the job's input (its inputs concatenated in the manifest's order)
    /// that `unit` receives, one range per input: all of an input, or for one sliced
    /// per unit, the elements its invocations read (see
    /// [`InputSlice`](starling_api::manifest::InputSlice)).
    fn unit_input_ranges(&self, unit: &CustomUnit, shape: &Shape) -> Vec<Range<usize>> {
        let mut at = 0u64;
        self.manifest
            .inputs
            .iter()
            .zip(&shape.inputs)
            .map(|(input, bytes)| {
                let whole = at..at + bytes;
                at = whole.end;
                let Some(slice) = input.per_unit else {
                    return whole.start as usize..whole.end as usize;
                };
                // In elements; `shape` checked the input holds range * per_invocation, and
                // `parse_unit` that the unit lies within the range, so none overflows.
                let per = u64::from(slice.per_invocation);
                let halo = u64::from(slice.halo);
                let len = bytes / 4;
                let first = (u64::from(unit.offset[0]) * per).saturating_sub(halo);
                let end = ((u64::from(unit.offset[0]) + u64::from(unit.size[0])) * per)
                    .saturating_add(halo)
                    .min(len);
                (whole.start + 4 * first) as usize..(whole.start + 4 * end) as usize
            })
            .collect()
    }

    fn unit_output_len(unit: &CustomUnit, shape: &Shape) -> usize {
        let invocations = u64::from(unit.size[0]) * u64::from(unit.size[1]);
        (invocations * shape.per_invocation * 4) as usize
    }

    /// How to run one unit on a GPU: the shader, its bindings as the manifest places
    /// them, the unit uniform's bytes and the workgroup counts.
    pub fn dispatch(&self, unit: &str) -> Result<CustomDispatch<'_>, KernelError> {
        let (unit, shape) = self.parse_unit(unit)?;
        let mut uniform: Vec<u8> = unit
            .offset
            .iter()
            .chain(&unit.size)
            .chain(&unit.range)
            .chain(&unit.params)
            .flat_map(|v| v.to_le_bytes())
            .collect();
        debug_assert_eq!(
            uniform.len(),
            4 * (2 * UNIT_UNIFORM_FIELDS.len() + unit.params.len())
        );
        // A uniform binding's size is a multiple of 16 bytes on every backend.
        uniform.resize(uniform.len().next_multiple_of(16), 0);
        // The unit's input is its ranges of the job's input, concatenated.
        let mut at = 0usize;
        let inputs = self
            .manifest
            .inputs
            .iter()
            .zip(self.unit_input_ranges(&unit, &shape))
            .map(|(input, range)| {
                let range = at..at + range.len();
                at = range.end;
                (input.binding, range)
            })
            .collect();
        let [wx, wy, _] = self.manifest.workgroup_size.map(|w| w.max(1));
        let workgroups = [unit.size[0].div_ceil(wx), unit.size[1].div_ceil(wy), 1];
        if workgroups
            .iter()
            .any(|w| u64::from(*w) > MAX_WORKGROUPS_PER_DIMENSION)
        {
            return Err(invalid_param(
                "unit",
                "more workgroups than WebGPU dispatches",
            ));
        }
        Ok(CustomDispatch {
            label: &self.id,
            shader: &self.source,
            entry_point: &self.manifest.entry_point,
            unit_binding: self.manifest.unit_binding,
            uniform,
            inputs,
            input_bytes: at,
            output_binding: self.manifest.output.binding,
            output_bytes: Self::unit_output_len(&unit, &shape) as u64,
            workgroups,
        })
    }

    /// Runs one unit on the GPU. There is no CPU path: a custom kernel runs on WebGPU,
    /// Vulkan or Metal, or not at all.
    #[cfg(feature = "gpu")]
    pub async fn run(
        &self,
        gpu: &Gpu,
        unit: &str,
        input: &[u8],
    ) -> Result<Vec<u8>, crate::catalog::RunError> {
        let dispatch = self.dispatch(unit)?;
        if input.len() != dispatch.input_bytes {
            return Err(KernelError::Shape {
                got: input.len(),
                expected: dispatch.input_bytes,
            }
            .into());
        }
        Ok(gpu.run_custom(&dispatch, input).await?)
    }
}

struct Shape {
    range: [u32; 2],
    per_invocation: u64,
    inputs: Vec<u64>,
}

/// One unit of a custom kernel on the GPU: like [`GpuDispatch`], with the shader and
/// bindings the manifest names.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomDispatch<'k> {
    /// Pipeline cache key: the kernel's content address.
    pub label: &'k str,
    /// The WGSL.
    pub shader: &'k str,
    /// The `@compute` function.
    pub entry_point: &'k str,
    /// Where the unit uniform is bound.
    pub unit_binding: u32,
    /// Its bytes.
    pub uniform: Vec<u8>,
    /// Each input's binding and bytes of the unit input.
    pub inputs: Vec<(u32, Range<usize>)>,
    /// The unit input's expected size.
    pub input_bytes: usize,
    /// Where the output is bound.
    pub output_binding: u32,
    /// Its size.
    pub output_bytes: u64,
    /// Workgroup counts.
    pub workgroups: [u32; 3],
}

fn f32s(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
}

/// Whether two replicas agree under `compare`: bit for bit, or element by element
/// within the tolerance (NaN agrees only with NaN).
pub fn outputs_agree(compare: Comparison, a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let within = |x: f32, y: f32, limit: f64| {
        x.to_bits() == y.to_bits()
            || (x.is_nan() && y.is_nan())
            || f64::from((x - y).abs()) <= limit
    };
    match compare {
        Comparison::Exact => a == b,
        Comparison::Abs(t) => f32s(a).zip(f32s(b)).all(|(x, y)| within(x, y, t)),
        Comparison::Rel(t) => f32s(a)
            .zip(f32s(b))
            .all(|(x, y)| within(x, y, t * f64::from(x.abs().max(y.abs())))),
    }
}

impl crate::catalog::Kernel for CustomKernel {
    fn info(&self) -> KernelInfo {
        // The relay describes registered kernels from their manifests; this is what the
        // built-ins' static descriptions can say of any of them.
        KernelInfo {
            id: "custom",
            version: 1,
            description: "a kernel a submitter registered",
            params_schema: Value::Null,
            inputs: Vec::new(),
            output: "the manifest's output buffer, little-endian",
            output_content_type: "application/octet-stream",
            comparison: "the manifest's comparison",
            spot_check: None,
        }
    }

    fn plan(
        &self,
        params: &Value,
        inputs: &NamedInputs,
        _target_flops: u64,
    ) -> Result<JobPlan, KernelError> {
        let values = self.values(params)?;
        let shape = self.shape(&values)?;
        if let Some(extra) = inputs
            .keys()
            .find(|name| !self.manifest.inputs.iter().any(|i| &i.name == *name))
        {
            let shown: String = extra.chars().take(64).collect();
            return Err(KernelError::InvalidInput {
                field: shown,
                reason: "not an input of this kernel".into(),
            });
        }
        let mut input = Vec::new();
        for (declared, bytes) in self.manifest.inputs.iter().zip(&shape.inputs) {
            let given = inputs
                .get(&declared.name)
                .ok_or_else(|| KernelError::InvalidInput {
                    field: declared.name.clone(),
                    reason: "missing".into(),
                })?;
            if given.len() as u64 != *bytes {
                return Err(KernelError::InvalidInput {
                    field: declared.name.clone(),
                    reason: format!(
                        "{} bytes, expected {bytes}: `{}` {} values",
                        given.len(),
                        declared.length,
                        declared.element.wgsl()
                    ),
                });
            }
            input.extend_from_slice(given);
        }
        let units = self.split(&values, shape.range);
        let unit_flops: Vec<u64> = units.iter().map(|u| self.flops_of(u)).collect();
        Ok(JobPlan {
            input,
            units: units
                .iter()
                .map(|u| serde_json::to_string(u).expect("a unit is a plain struct"))
                .collect(),
            flops: unit_flops
                .iter()
                .fold(0u64, |sum, f| sum.saturating_add(*f)),
            unit_flops,
        })
    }

    fn unit_count(&self, params: &Value, _target_flops: u64) -> Result<usize, KernelError> {
        let values = self.values(params)?;
        Ok(self.unit_count_for(self.shape(&values)?.range))
    }

    fn unit_input(
        &self,
        _params: &Value,
        job_input: &[u8],
        unit: &str,
    ) -> Result<Vec<u8>, KernelError> {
        let (unit, shape) = self.parse_unit(unit)?;
        let expected: u64 = shape.inputs.iter().sum();
        if job_input.len() as u64 != expected {
            return Err(KernelError::Shape {
                got: job_input.len(),
                expected: expected as usize,
            });
        }
        let ranges = self.unit_input_ranges(&unit, &shape);
        let mut input = Vec::with_capacity(ranges.iter().map(Range::len).sum());
        for range in ranges {
            input.extend_from_slice(&job_input[range]);
        }
        Ok(input)
    }

    fn check_output(&self, unit: &str, output: &[u8]) -> Result<(), KernelError> {
        let expected = self.output_len(unit)?;
        if output.len() == expected {
            Ok(())
        } else {
            Err(KernelError::Shape {
                got: output.len(),
                expected,
            })
        }
    }

    fn output_len(&self, unit: &str) -> Result<usize, KernelError> {
        let (unit, shape) = self.parse_unit(unit)?;
        Ok(Self::unit_output_len(&unit, &shape))
    }

    fn merge(&self, _params: &Value, outputs: &[Vec<u8>]) -> Result<Vec<u8>, KernelError> {
        Ok(outputs.concat())
    }

    fn run_cpu(&self, _unit: &str, _input: &[u8]) -> Result<Vec<u8>, KernelError> {
        Err(invalid_param(
            "kernel",
            "a custom kernel has no CPU reference",
        ))
    }

    fn gpu_dispatch(&self, _unit: &str, _input: &[u8]) -> Result<GpuDispatch, KernelError> {
        Err(invalid_param(
            "kernel",
            "a custom kernel runs through CustomKernel::dispatch, with its own bindings",
        ))
    }

    fn unit_flops(&self, unit: &str) -> Result<u64, KernelError> {
        Ok(self.flops_of(&self.parse_unit(unit)?.0))
    }

    fn outputs_agree(&self, unit: &str, a: &[u8], b: &[u8]) -> Result<bool, KernelError> {
        let expected = self.output_len(unit)?;
        Ok(a.len() == expected && outputs_agree(self.manifest.compare, a, b))
    }

    fn spot_check(&self, _: &str, _: &[u8], _: &[u8], _: u64) -> Result<Option<bool>, KernelError> {
        Ok(None)
    }

    fn probe(&self, _seed: u64) -> Option<(Value, NamedInputs)> {
        None
    }
}

impl CustomKernel {
    fn flops_of(&self, unit: &CustomUnit) -> u64 {
        let invocations = u64::from(unit.size[0]) * u64::from(unit.size[1]);
        (invocations as f64 * self.manifest.flops_per_invocation).ceil() as u64
    }
}
