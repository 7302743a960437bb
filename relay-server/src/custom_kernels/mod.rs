//! Kernels submitters bring (issue 25): a WGSL compute shader and a manifest, checked by
//! [`validate`], kept content-addressed by [`content_id`] (in `starling_api`, since
//! volunteers check it too), and shown in the catalog beside the built-ins with their
//! source readable by anyone.

pub mod validate;

use starling_api::kernels::{CustomOrigin, KernelInfo};
use starling_api::manifest::{Comparison, CustomKernel};

pub use starling_api::manifest::{content_id, is_content_id};

/// The catalog's entry for a registered kernel: the console builds its form from
/// `params_schema` as for a built-in.
pub fn info(kernel: &CustomKernel) -> KernelInfo {
    let manifest = &kernel.manifest;
    let properties: serde_json::Map<String, serde_json::Value> = manifest
        .params
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                // The console's form starts from each parameter's default.
                serde_json::json!({
                    "type": "integer", "minimum": p.min, "maximum": p.max, "default": p.min,
                }),
            )
        })
        .collect();
    let required: Vec<&str> = manifest.params.iter().map(|p| p.name.as_str()).collect();
    KernelInfo {
        id: kernel.id.clone(),
        version: 1,
        description: manifest.description.clone(),
        params_schema: serde_json::json!({
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": false,
        }),
        inputs: manifest
            .inputs
            .iter()
            .map(|input| starling_api::kernels::KernelInput {
                name: input.name.clone(),
                encoding: format!(
                    "little-endian {}, `{}` of them",
                    input.element.wgsl(),
                    input.length
                ),
            })
            .collect(),
        output: format!(
            "little-endian {}, `{}` of them",
            manifest.output.element.wgsl(),
            manifest.output.length
        ),
        output_content_type: "application/octet-stream".into(),
        comparison: match manifest.compare {
            Comparison::Exact => "exact, replicated to at least 2 distinct wallets".into(),
            Comparison::Abs(t) => {
                format!("within {t} absolute, replicated to at least 2 distinct wallets")
            }
            Comparison::Rel(t) => {
                format!("within {t} relative, replicated to at least 2 distinct wallets")
            }
        },
        spot_check: None,
        custom: Some(CustomOrigin {
            owner: kernel.owner.clone(),
            suspended: kernel.suspended.clone(),
        }),
    }
}
