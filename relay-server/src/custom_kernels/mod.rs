//! Kernels submitters bring (issue 25): a WGSL compute shader and a manifest, checked by
//! [`validate`], kept content-addressed by [`content_id`], and shown in the catalog beside
//! the built-ins with their source readable by anyone.

pub mod validate;

use sha2::{Digest as _, Sha256};
use starling_api::kernels::{CustomOrigin, KernelInfo};
use starling_api::manifest::{Comparison, CustomKernel, KernelManifest};

/// The content address of a kernel: SHA-256 over a tag, the source's length and bytes,
/// and the manifest as the relay serialises it (so whitespace or key order in what the
/// submitter sent does not make a second id), in lowercase hex.
pub fn content_id(source: &str, manifest: &KernelManifest) -> String {
    let manifest = serde_json::to_vec(manifest).expect("a manifest always serialises");
    let mut hash = Sha256::new();
    hash.update(b"starling custom kernel v1\n");
    hash.update((source.len() as u64).to_le_bytes());
    hash.update(source.as_bytes());
    hash.update(&manifest);
    hex::encode(hash.finalize())
}

/// Whether `id` has the shape of a content address (so it is never a built-in's name).
pub fn is_content_id(id: &str) -> bool {
    id.len() == 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

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
                serde_json::json!({"type": "integer", "minimum": p.min, "maximum": p.max}),
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
