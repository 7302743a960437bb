//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]` attributes,
//! and an offline page that renders it.
//!
//! Types owned by storage (`JobRecord` and its parts) are described here by `…Doc`
//! mirrors so the storage layer stays free of API documentation concerns; a test checks
//! each mirror has exactly the fields the real type serialises.

use crate::routes;
use axum::http::header;
use axum::response::IntoResponse;
use std::sync::OnceLock;
use utoipa::{OpenApi, ToSchema};

/// A job as the API shows it (mirror of `storage::JobRecord`).
#[derive(ToSchema)]
#[schema(as = JobRecord)]
#[allow(dead_code)] // Only its schema is used.
pub struct JobRecordDoc {
    /// Job id.
    #[schema(format = Uuid)]
    id: String,
    /// Kernel id.
    kernel: String,
    /// Parameters as submitted.
    #[schema(value_type = Object)]
    params: serde_json::Value,
    /// Life-cycle state.
    state: JobStateDoc,
    /// Unit counts.
    progress: ProgressDoc,
    /// Total FLOPs.
    flops: u64,
    /// Agreeing results from distinct wallets each unit needs.
    quorum: u32,
    /// Why the job failed, when it did.
    error: Option<String>,
    /// Creation time, Unix ms.
    created_ms: i64,
    /// Last change, Unix ms.
    updated_ms: i64,
    /// Where the job's escrow sits in the public ledger, and the salt that proves it is
    /// this job's (shown only to the job's owner).
    escrow: Option<crate::storage::EscrowProof>,
    /// When its inputs were erased (by `DELETE …/data` or their retention), Unix ms.
    inputs_purged_ms: Option<i64>,
    /// When all its data (inputs, outputs, result) was erased, Unix ms.
    purged_ms: Option<i64>,
}

/// Where a job is in its life (mirror of `storage::JobState`).
#[derive(ToSchema)]
#[schema(as = JobState)]
#[allow(dead_code)] // Only its schema is used.
#[serde(rename_all = "lowercase")]
pub enum JobStateDoc {
    /// Accepted; no unit handed out yet.
    Queued,
    /// Some units handed out or done.
    Running,
    /// Every unit done and merged; the result is available.
    Done,
    /// Gave up; `error` says why.
    Failed,
    /// Cancelled by its submitter.
    Cancelled,
}

/// Unit counts of a job (mirror of `storage::Progress`).
#[derive(ToSchema)]
#[schema(as = Progress)]
#[allow(dead_code)] // Only its schema is used.
pub struct ProgressDoc {
    /// Units in the job.
    units_total: i64,
    /// Units with an accepted output.
    units_done: i64,
    /// Units out on lease now.
    units_leased: i64,
}

/// Data of a `progress` event on `/api/v1/jobs/{id}/events`.
#[derive(ToSchema)]
#[schema(as = ProgressEvent)]
#[allow(dead_code)] // Only its schema is used.
pub struct ProgressEventDoc {
    /// Life-cycle state.
    state: JobStateDoc,
    /// Units in the job.
    units_total: i64,
    /// Units with an accepted output.
    units_done: i64,
    /// Units out on lease now.
    units_leased: i64,
    /// Total FLOPs of the job.
    flops: u64,
    /// Last change, Unix ms.
    updated_ms: i64,
}

/// A `multipart/form-data` submission: a `job` part, and every other part is the raw
/// bytes of the input it is named after (`a`, `b`, `weights`…).
#[derive(ToSchema)]
#[schema(as = MultipartJob)]
#[allow(dead_code)] // Only its schema is used.
pub struct MultipartJobDoc {
    /// JSON `{"kernel": …, "params": …}` (an `input` object of base64 is also accepted).
    job: String,
}

/// An error (RFC 9457 `application/problem+json`).
#[derive(ToSchema)]
#[schema(as = Problem)]
#[allow(dead_code)] // Only its schema is used.
pub struct ProblemDoc {
    /// A URI reference naming the kind of problem (`/problems/invalid-value`…).
    #[schema(rename = "type")]
    kind: String,
    /// Short summary of the kind.
    title: String,
    /// HTTP status.
    status: u16,
    /// What is wrong in this request.
    detail: String,
    /// The request field at fault (`params.m`, `input.b`, `limit`, `Idempotency-Key`).
    field: Option<String>,
}

/// The relay's API description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Starling relay API",
        description = "Submit compute jobs to a volunteer network, follow them, fetch results.\n\n\
            Every job route answers only to the API key (`Authorization: Bearer <key>`) of the \
            account that submitted the job: another account gets 404, a request without a key \
            401. A job's inputs and result are stored sealed under a key of the job's own. \
            `DELETE /api/v1/jobs/{id}/data` erases an ended job's inputs, outputs and result for \
            good (the record and its ledger entries stay); otherwise inputs are erased 7 days \
            and everything 30 days after the job ends (the relay's `--retain-inputs-days` and \
            `--retain-results-days`)."
    ),
    paths(
        routes::kernels,
        routes::network::stats,
        routes::network::leaderboard,
        routes::jobs::submit,
        routes::jobs::list,
        routes::jobs::get,
        routes::jobs::cancel,
        routes::jobs::result,
        routes::jobs::units,
        routes::jobs::purge,
        routes::events::events,
        routes::wallets::get,
        routes::ledger::history,
        routes::ledger::ledger,
        routes::ledger::account,
        routes::ledger::transfer,
        routes::sites::register,
        routes::rtc::offer,
        routes::healthz,
        routes::ops::readyz,
        routes::ops::metrics,
        openapi_json,
        docs,
    ),
    components(schemas(
        JobRecordDoc,
        JobStateDoc,
        ProgressDoc,
        ProgressEventDoc,
        MultipartJobDoc,
        ProblemDoc,
        routes::jobs::SubmitJob,
        routes::jobs::Verification,
        routes::ledger::TransferRequest,
        routes::sites::SiteRegistration,
        routes::jobs::JobList,
        routes::rtc::Sdp,
    ))
)]
pub struct ApiDoc;

/// Handler docs open with "`METHOD /path`: " for readers of the code; in the document
/// the method and path are already there, so summaries drop it.
fn tidy_summary(op: &mut utoipa::openapi::path::Operation) {
    if let Some(summary) = &mut op.summary {
        if let Some((_, rest)) = summary.strip_prefix('`').and_then(|s| s.split_once("`: ")) {
            let mut rest = rest.to_owned();
            if let Some(first) = rest.get(..1) {
                rest.replace_range(..1, &first.to_uppercase());
            }
            *summary = rest;
        }
    }
}

/// The document as JSON, built once.
pub fn document() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        let mut doc = ApiDoc::openapi();
        for item in doc.paths.paths.values_mut() {
            for op in [&mut item.get, &mut item.post, &mut item.delete]
                .into_iter()
                .flatten()
            {
                tidy_summary(op);
            }
        }
        doc.to_json()
            .unwrap_or_else(|e| format!("{{\"error\":\"cannot serialise the document: {e}\"}}"))
    })
}

/// `GET /api/v1/openapi.json`: this API as an OpenAPI 3.1 document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "documentation", responses(
    (status = 200, description = "The OpenAPI 3.1 document", body = Object),
))]
pub async fn openapi_json() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document())
}

/// `GET /api/v1/docs`: a self-contained page rendering the document (no CDN).
#[utoipa::path(get, path = "/api/v1/docs", tag = "documentation", responses(
    (status = 200, description = "HTML page", body = String, content_type = "text/html"),
))]
pub async fn docs() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("api_docs.html"),
    )
}
