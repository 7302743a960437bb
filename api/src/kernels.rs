//! `GET /api/v1/kernels`: the catalog of kernels a relay runs, built-in and registered.

use serde::{Deserialize, Serialize};

/// The answer to `GET /api/v1/kernels`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KernelCatalog {
    /// Every kernel the relay runs.
    pub kernels: Vec<KernelInfo>,
}

/// What the relay shows about a kernel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KernelInfo {
    /// Stable id, named by a job's `kernel`.
    pub id: String,
    /// Version; changes when outputs may change.
    pub version: u32,
    /// One paragraph for people.
    pub description: String,
    /// JSON Schema of the job parameters.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub params_schema: serde_json::Value,
    /// Each named input and its encoding.
    pub inputs: Vec<KernelInput>,
    /// Encoding of the job result.
    pub output: String,
    /// MIME type of the job result.
    pub output_content_type: String,
    /// How two replicas of a unit are compared (exact, or the tolerance and why).
    pub comparison: String,
    /// The cheap single-result check, if the kernel has one, and its false-accept odds.
    pub spot_check: Option<String>,
    /// Set for a kernel a submitter registered (`GET /api/v1/kernels/{id}` has its
    /// source); absent for the relay's built-ins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<CustomOrigin>,
}

/// Who brought a custom kernel, and whether it still runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CustomOrigin {
    /// The account that registered it (none on a relay without billing).
    pub owner: Option<String>,
    /// Why it no longer runs, if it was suspended.
    pub suspended: Option<String>,
}

/// One named input of a kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KernelInput {
    /// Name used in the job's `input` object (or its multipart part).
    pub name: String,
    /// Encoding and size, for people.
    pub encoding: String,
}
