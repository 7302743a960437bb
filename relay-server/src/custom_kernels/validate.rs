//! Whether a submitter's WGSL and manifest may run on volunteers: naga parses and
//! validates the shader (WebGPU's baseline: no optional capabilities), and every binding,
//! the entry point, the workgroup and the buffers must match the manifest and fit
//! WebGPU's default limits, so a kernel the relay accepts is one every volunteer's
//! browser can create a pipeline for.

use naga::{AddressSpace, ArraySize, Module, Scalar, ScalarKind, StorageAccess, TypeInner};
use starling_api::manifest::{
    Comparison, Element, Expr, ExprError, KernelManifest, ParamSpec, UNIT_UNIFORM_FIELDS,
};
use std::collections::BTreeMap;

/// Longest WGSL source, in bytes: naga's work grows with it, and volunteers download it.
pub const MAX_SOURCE_BYTES: usize = 64 * 1024;
/// WebGPU's default `maxComputeInvocationsPerWorkgroup`.
const MAX_WORKGROUP_INVOCATIONS: u32 = 256;
/// WebGPU's default `maxComputeWorkgroupSizeX`, `…Y`, `…Z`.
const MAX_WORKGROUP_SIZE: [u32; 3] = [256, 256, 64];
/// WebGPU's default `maxComputeWorkgroupStorageSize`, bytes.
const MAX_WORKGROUP_STORAGE: u32 = 16 * 1024;
/// WebGPU's default `maxStorageBufferBindingSize`, bytes.
pub const MAX_STORAGE_BUFFER_BYTES: u64 = 128 * 1024 * 1024;
/// WebGPU's default `maxStorageBuffersPerShaderStage`.
const MAX_STORAGE_BUFFERS: usize = 8;
/// WebGPU's default `maxComputeWorkgroupsPerDimension`.
const MAX_WORKGROUPS_PER_DIMENSION: u64 = 65_535;
/// WebGPU's default `maxBindingsPerBindGroup`.
const MAX_BINDING: u32 = 999;
/// Most declared parameters: each is a field of the unit uniform.
const MAX_PARAMS: usize = 16;
/// Longest name of a parameter or input.
const MAX_NAME_BYTES: usize = 64;
/// Longest description.
const MAX_DESCRIPTION_BYTES: usize = 1024;
/// Most FLOPs one invocation may declare: prices and deadlines are drawn from it.
const MAX_FLOPS_PER_INVOCATION: f64 = 1e9;

/// Why a kernel is refused: the message, and what is at fault (`source` for the shader,
/// else the manifest's field, as `manifest.inputs[0].length`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What is wrong, with the line and column for a shader error.
    pub detail: String,
    /// The field at fault.
    pub field: String,
}

/// Most elements per invocation, and of halo, an input sliced per unit may declare.
const MAX_SLICE_ELEMENTS: u32 = 1 << 20;

fn refuse(field: impl Into<String>, detail: impl Into<String>) -> Refusal {
    Refusal {
        detail: detail.into(),
        field: field.into(),
    }
}

/// Checks `source` against `manifest`.
pub fn validate(source: &str, manifest: &KernelManifest) -> Result<(), Refusal> {
    check_manifest(manifest)?;
    if source.len() > MAX_SOURCE_BYTES {
        return Err(refuse(
            "source",
            format!(
                "the shader is {} bytes, over the {MAX_SOURCE_BYTES}-byte limit",
                source.len()
            ),
        ));
    }
    let module = naga::front::wgsl::parse_str(source).map_err(|e| {
        let at = e
            .location(source)
            .map(|at| format!("line {}, column {}: ", at.line_number, at.line_position))
            .unwrap_or_default();
        refuse("source", format!("{at}{}", e.message()))
    })?;
    naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::empty(),
    )
    .validate(&module)
    .map_err(|e| {
        let at = e
            .location(source)
            .map(|at| format!("line {}, column {}: ", at.line_number, at.line_position))
            .unwrap_or_default();
        refuse("source", format!("{at}{}", with_causes(e.as_inner())))
    })?;
    if !module.overrides.is_empty() {
        return Err(refuse(
            "source",
            "pipeline-overridable constants are not supported: the manifest fixes every size",
        ));
    }
    check_entry_point(&module, manifest)?;
    check_bindings(&module, manifest)
}

/// "entry point main is invalid: …: the cause", since naga's outer message alone rarely
/// says what to fix.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= MAX_NAME_BYTES
}

/// The manifest alone: names, bounds, expressions with every parameter at its greatest.
fn check_manifest(manifest: &KernelManifest) -> Result<(), Refusal> {
    if manifest.description.len() > MAX_DESCRIPTION_BYTES {
        return Err(refuse(
            "manifest.description",
            format!("longer than {MAX_DESCRIPTION_BYTES} bytes"),
        ));
    }
    if manifest.params.len() > MAX_PARAMS {
        return Err(refuse(
            "manifest.params",
            format!("more than {MAX_PARAMS} parameters"),
        ));
    }
    for (i, param) in manifest.params.iter().enumerate() {
        let field = format!("manifest.params[{i}]");
        if !is_identifier(&param.name) || UNIT_UNIFORM_FIELDS.contains(&param.name.as_str()) {
            return Err(refuse(
                format!("{field}.name"),
                format!(
                    "a parameter's name is an identifier of at most {MAX_NAME_BYTES} bytes other than {}",
                    UNIT_UNIFORM_FIELDS.join(", ")
                ),
            ));
        }
        if manifest.params[..i].iter().any(|p| p.name == param.name) {
            return Err(refuse(
                format!("{field}.name"),
                format!("`{}` is declared twice", param.name),
            ));
        }
        if param.min > param.max {
            return Err(refuse(format!("{field}.min"), "min is greater than max"));
        }
    }
    let inputs = manifest.inputs.iter().enumerate();
    if manifest.inputs.len() + 1 > MAX_STORAGE_BUFFERS {
        return Err(refuse(
            "manifest.inputs",
            format!(
                "at most {} inputs: WebGPU allows {MAX_STORAGE_BUFFERS} storage buffers",
                MAX_STORAGE_BUFFERS - 1
            ),
        ));
    }
    let greatest = greatest_params(&manifest.params);
    for (i, input) in inputs {
        let field = format!("manifest.inputs[{i}]");
        if !is_identifier(&input.name) {
            return Err(refuse(
                format!("{field}.name"),
                format!("an input's name is an identifier of at most {MAX_NAME_BYTES} bytes"),
            ));
        }
        if manifest.inputs[..i].iter().any(|p| p.name == input.name) {
            return Err(refuse(
                format!("{field}.name"),
                format!("`{}` is declared twice", input.name),
            ));
        }
        check_buffer_length(
            &field,
            &input.length,
            input.element,
            &manifest.params,
            &greatest,
        )?;
    }
    check_buffer_length(
        "manifest.output",
        &manifest.output.length,
        manifest.output.element,
        &manifest.params,
        &greatest,
    )?;
    let mut bindings: Vec<(String, u32)> = manifest
        .inputs
        .iter()
        .enumerate()
        .map(|(i, input)| (format!("manifest.inputs[{i}].binding"), input.binding))
        .collect();
    bindings.push(("manifest.output.binding".into(), manifest.output.binding));
    bindings.push(("manifest.unit_binding".into(), manifest.unit_binding));
    for (i, (field, binding)) in bindings.iter().enumerate() {
        if *binding > MAX_BINDING {
            return Err(refuse(field, format!("bindings go up to {MAX_BINDING}")));
        }
        if bindings[..i].iter().any(|(_, b)| b == binding) {
            return Err(refuse(field, format!("binding {binding} is used twice")));
        }
    }
    check_split(manifest, &greatest)?;
    check_slices(manifest, &greatest)?;
    let tolerance = match manifest.compare {
        Comparison::Exact => None,
        Comparison::Abs(t) | Comparison::Rel(t) => Some(t),
    };
    if let Some(tolerance) = tolerance {
        if !(tolerance.is_finite() && tolerance >= 0.0) {
            return Err(refuse(
                "manifest.compare",
                "a tolerance is a finite number of at least 0",
            ));
        }
        if manifest.output.element != Element::F32 {
            return Err(refuse(
                "manifest.compare",
                "a tolerance compares f32 outputs; integers are compared exactly",
            ));
        }
    }
    let flops = manifest.flops_per_invocation;
    if !(flops.is_finite() && flops > 0.0 && flops <= MAX_FLOPS_PER_INVOCATION) {
        return Err(refuse(
            "manifest.flops_per_invocation",
            format!("between 0 (excluded) and {MAX_FLOPS_PER_INVOCATION:e}"),
        ));
    }
    Ok(())
}

/// Every parameter at its greatest value: lengths are checked there at registration
/// (and again for each job's own values when it is submitted).
fn greatest_params(params: &[ParamSpec]) -> BTreeMap<String, u64> {
    params
        .iter()
        .map(|p| (p.name.clone(), u64::from(p.max)))
        .collect()
}

fn eval_at(
    field: &str,
    text: &str,
    params: &[ParamSpec],
    values: &BTreeMap<String, u64>,
) -> Result<u64, Refusal> {
    let expr = Expr::parse(text, params).map_err(|e| refuse(field, e.to_string()))?;
    expr.eval(values).map_err(|e| match e {
        ExprError::Overflow(step) => refuse(
            field,
            format!("`{text}` overflows with every parameter at its max ({step})"),
        ),
        other => refuse(field, other.to_string()),
    })
}

fn check_buffer_length(
    field: &str,
    text: &str,
    element: Element,
    params: &[ParamSpec],
    greatest: &BTreeMap<String, u64>,
) -> Result<(), Refusal> {
    let field = format!("{field}.length");
    let elements = eval_at(&field, text, params, greatest)?;
    match elements.checked_mul(element.bytes()) {
        Some(bytes) if bytes <= MAX_STORAGE_BUFFER_BYTES => Ok(()),
        _ => Err(refuse(
            field,
            format!(
                "`{text}` is {elements} elements with every parameter at its max, over WebGPU's {MAX_STORAGE_BUFFER_BYTES}-byte storage buffer; lower the parameters' max"
            ),
        )),
    }
}

fn check_split(manifest: &KernelManifest, greatest: &BTreeMap<String, u64>) -> Result<(), Refusal> {
    let split = &manifest.split;
    if !(1..=2).contains(&split.range.len()) {
        return Err(refuse(
            "manifest.split.range",
            "a range is one expression (1-D) or two (2-D: width, height)",
        ));
    }
    for (i, text) in split.range.iter().enumerate() {
        let field = format!("manifest.split.range[{i}]");
        let extent = eval_at(&field, text, &manifest.params, greatest)?;
        if extent > u64::from(u32::MAX) {
            return Err(refuse(
                field,
                format!("`{text}` exceeds u32 with every parameter at its max"),
            ));
        }
    }
    // A unit's dispatch: along x at most the unit's invocations (1-D) or one whole row
    // (2-D), which must fit WebGPU's workgroup count per dimension.
    let [wx, wy, _] = manifest.workgroup_size.map(|w| u64::from(w.max(1)));
    let unit = u64::from(split.unit_invocations);
    if unit == 0 {
        return Err(refuse("manifest.split.unit_invocations", "at least 1"));
    }
    let row = if split.range.len() == 2 {
        eval_at(
            "manifest.split.range[0]",
            &split.range[0],
            &manifest.params,
            greatest,
        )?
    } else {
        unit
    };
    // 2-D units are bands of rows, at most `unit` of them.
    if row.div_ceil(wx) > MAX_WORKGROUPS_PER_DIMENSION
        || (split.range.len() == 2 && unit.div_ceil(wy) > MAX_WORKGROUPS_PER_DIMENSION)
    {
        return Err(refuse(
            "manifest.split.unit_invocations",
            format!("one unit would dispatch more than WebGPU's {MAX_WORKGROUPS_PER_DIMENSION} workgroups along a dimension"),
        ));
    }
    Ok(())
}

/// Inputs sliced per unit: only of a 1-D kernel's inputs, with a sensible slice, and an
/// input that holds `per_invocation` elements per invocation of the range (checked with
/// every parameter at its max here, and for each job's own values when it is planned).
fn check_slices(
    manifest: &KernelManifest,
    greatest: &BTreeMap<String, u64>,
) -> Result<(), Refusal> {
    if manifest.output.per_unit.is_some() {
        return Err(refuse(
            "manifest.output.per_unit",
            "only inputs are sliced per unit: each unit's output is its own already",
        ));
    }
    for (i, input) in manifest.inputs.iter().enumerate() {
        let Some(slice) = input.per_unit else {
            continue;
        };
        let field = format!("manifest.inputs[{i}].per_unit");
        if manifest.split.range.len() != 1 {
            return Err(refuse(
                field,
                "inputs are sliced per unit of a 1-D range only",
            ));
        }
        if !(1..=MAX_SLICE_ELEMENTS).contains(&slice.per_invocation)
            || slice.halo > MAX_SLICE_ELEMENTS
        {
            return Err(refuse(
                field,
                format!("per_invocation from 1 and halo up to {MAX_SLICE_ELEMENTS}"),
            ));
        }
        let range = eval_at(
            "manifest.split.range[0]",
            &manifest.split.range[0],
            &manifest.params,
            greatest,
        )?;
        let length = eval_at(
            &format!("manifest.inputs[{i}].length"),
            &input.length,
            &manifest.params,
            greatest,
        )?;
        if range.checked_mul(u64::from(slice.per_invocation)) != Some(length) {
            return Err(refuse(
                field,
                format!(
                    "a sliced input holds per_invocation ({}) elements per invocation of the range: `{}` is not {} x `{}`",
                    slice.per_invocation, input.length, slice.per_invocation, manifest.split.range[0]
                ),
            ));
        }
    }
    Ok(())
}

fn check_entry_point(module: &Module, manifest: &KernelManifest) -> Result<(), Refusal> {
    let Some(entry) = module
        .entry_points
        .iter()
        .find(|ep| ep.name == manifest.entry_point && ep.stage == naga::ShaderStage::Compute)
    else {
        return Err(refuse(
            "manifest.entry_point",
            format!(
                "the shader has no @compute function `{}`",
                manifest.entry_point
            ),
        ));
    };
    let size = manifest.workgroup_size;
    if entry.workgroup_size != size {
        return Err(refuse(
            "manifest.workgroup_size",
            format!(
                "the shader's @workgroup_size is {:?}, the manifest says {size:?}",
                entry.workgroup_size
            ),
        ));
    }
    let invocations = size.iter().map(|&s| u64::from(s)).product::<u64>();
    let over = size.iter().zip(MAX_WORKGROUP_SIZE).any(|(s, max)| *s > max);
    if over || invocations > u64::from(MAX_WORKGROUP_INVOCATIONS) {
        return Err(refuse(
            "manifest.workgroup_size",
            format!(
                "{size:?} is over WebGPU's limits: at most {MAX_WORKGROUP_SIZE:?} and {MAX_WORKGROUP_INVOCATIONS} invocations a workgroup"
            ),
        ));
    }
    let workgroup_bytes: u32 = module
        .global_variables
        .iter()
        .filter(|(_, var)| var.space == AddressSpace::WorkGroup)
        .map(|(_, var)| module.types[var.ty].inner.size(module.to_ctx()))
        .fold(0u32, u32::saturating_add);
    if workgroup_bytes > MAX_WORKGROUP_STORAGE {
        return Err(refuse(
            "source",
            format!(
                "var<workgroup> takes {workgroup_bytes} bytes, over WebGPU's {MAX_WORKGROUP_STORAGE}"
            ),
        ));
    }
    Ok(())
}

/// What a binding must be, and the manifest field that declares it.
enum Expected {
    Input(usize, Element),
    Output(Element),
    Unit,
}

fn check_bindings(module: &Module, manifest: &KernelManifest) -> Result<(), Refusal> {
    let mut expected: BTreeMap<u32, Expected> = manifest
        .inputs
        .iter()
        .enumerate()
        .map(|(i, input)| (input.binding, Expected::Input(i, input.element)))
        .collect();
    expected.insert(
        manifest.output.binding,
        Expected::Output(manifest.output.element),
    );
    expected.insert(manifest.unit_binding, Expected::Unit);
    for (_, var) in module.global_variables.iter() {
        let Some(binding) = &var.binding else {
            continue;
        };
        let name = var.name.as_deref().unwrap_or("?");
        let declared = (binding.group == 0)
            .then(|| expected.remove(&binding.binding))
            .flatten();
        let Some(declared) = declared else {
            return Err(refuse(
                "source",
                format!(
                    "`{name}` at @group({}) @binding({}) is not in the manifest (custom kernels use @group(0) and only the manifest's buffers)",
                    binding.group, binding.binding
                ),
            ));
        };
        let inner = &module.types[var.ty].inner;
        match declared {
            Expected::Input(i, element) => {
                let read_only = var.space
                    == AddressSpace::Storage {
                        access: StorageAccess::LOAD,
                    };
                if !read_only || !is_array_of(inner, module, element) {
                    return Err(refuse(
                        format!("manifest.inputs[{i}]"),
                        format!(
                            "`{name}` must be var<storage, read> array<{}>",
                            element.wgsl()
                        ),
                    ));
                }
            }
            Expected::Output(element) => {
                let writable = var.space
                    == AddressSpace::Storage {
                        access: StorageAccess::LOAD | StorageAccess::STORE,
                    };
                if !writable || !is_array_of(inner, module, element) {
                    return Err(refuse(
                        "manifest.output",
                        format!(
                            "`{name}` must be var<storage, read_write> array<{}>",
                            element.wgsl()
                        ),
                    ));
                }
            }
            Expected::Unit => {
                if var.space != AddressSpace::Uniform
                    || !is_unit_struct(inner, module, &manifest.params)
                {
                    let fields: Vec<String> = UNIT_UNIFORM_FIELDS
                        .iter()
                        .map(|f| format!("{f}: vec2<u32>"))
                        .chain(manifest.params.iter().map(|p| format!("{}: u32", p.name)))
                        .collect();
                    return Err(refuse(
                        "manifest.unit_binding",
                        format!(
                            "`{name}` must be var<uniform> of a struct {{ {} }}",
                            fields.join(", ")
                        ),
                    ));
                }
            }
        }
    }
    if let Some((binding, missing)) = expected.into_iter().next() {
        let field = match missing {
            Expected::Input(i, _) => format!("manifest.inputs[{i}].binding"),
            Expected::Output(_) => "manifest.output.binding".into(),
            Expected::Unit => "manifest.unit_binding".into(),
        };
        return Err(refuse(
            field,
            format!("the shader declares nothing at @group(0) @binding({binding})"),
        ));
    }
    Ok(())
}

fn scalar_of(element: Element) -> Scalar {
    match element {
        Element::F32 => Scalar::F32,
        Element::U32 => Scalar::U32,
        Element::I32 => Scalar::I32,
    }
}

fn is_array_of(inner: &TypeInner, module: &Module, element: Element) -> bool {
    matches!(inner, TypeInner::Array { base, size: ArraySize::Dynamic, .. }
        if module.types[*base].inner == TypeInner::Scalar(scalar_of(element)))
}

fn is_unit_struct(inner: &TypeInner, module: &Module, params: &[ParamSpec]) -> bool {
    let TypeInner::Struct { members, .. } = inner else {
        return false;
    };
    let vec2u = TypeInner::Vector {
        size: naga::VectorSize::Bi,
        scalar: Scalar {
            kind: ScalarKind::Uint,
            width: 4,
        },
    };
    let wanted = UNIT_UNIFORM_FIELDS
        .iter()
        .map(|name| (*name, vec2u.clone()))
        .chain(
            params
                .iter()
                .map(|p| (p.name.as_str(), TypeInner::Scalar(Scalar::U32))),
        );
    members.len() == UNIT_UNIFORM_FIELDS.len() + params.len()
        && members.iter().zip(wanted).all(|(member, (name, ty))| {
            member.name.as_deref() == Some(name) && module.types[member.ty].inner == ty
        })
}
