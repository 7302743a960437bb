//! `/api/v1/jobs`: submit a job, follow it, fetch its result.

use crate::app::AppState;
use crate::error::ApiError;
use crate::storage::{JobRecord, JobState};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde::Deserialize;
use starling_kernels::NamedInputs;
use starling_protocol::JobId;
use std::collections::BTreeMap;

/// Body of `POST /api/v1/jobs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitJob {
    /// Kernel id from `GET /api/v1/kernels`.
    pub kernel: String,
    /// Kernel parameters, checked against the kernel's schema.
    pub params: serde_json::Value,
    /// Named inputs, each base64 (standard alphabet, padded); absent for kernels that
    /// take none (`render`, `montecarlo`).
    #[serde(default)]
    pub input: BTreeMap<String, String>,
    /// How units are verified; the relay's default when absent.
    #[serde(default)]
    pub verification: Option<Verification>,
}

/// A job's verification settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verification {
    /// Agreeing results from distinct wallets each unit needs, 1 to 5. With 1, a single
    /// result stands once it passes the kernel's checks: cheaper, and only as safe as
    /// those checks (and the known-answer tests that catch lying wallets).
    pub quorum: u32,
}

fn body_bytes(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge { limit }
        } else {
            ApiError::Malformed {
                detail: rejection.body_text(),
            }
        }
    })
}

/// `POST /api/v1/jobs`: validate, split and queue a job; 201 with its record.
pub async fn submit(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body_bytes(body, state.limits.max_body_bytes)?;
    let request: SubmitJob = serde_json::from_slice(&body).map_err(|e| ApiError::Malformed {
        detail: format!("body is not a valid job: {e}"),
    })?;
    let mut inputs = NamedInputs::new();
    for (name, encoded) in &request.input {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|e| ApiError::Invalid {
                detail: format!("input `{name}` is not valid base64: {e}"),
                field: Some(format!("input.{name}")),
            })?;
        inputs.insert(name.clone(), bytes);
    }
    let id = state
        .scheduler
        .submit(
            &request.kernel,
            request.params,
            &inputs,
            request.verification.map(|v| v.quorum),
        )
        .await?;
    let record = state
        .scheduler
        .storage()
        .job(id)
        .await?
        .ok_or_else(|| ApiError::Internal(format!("job {id} vanished after insert")))?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/api/v1/jobs/{id}"))],
        Json(record),
    )
        .into_response())
}

fn job_id(raw: &str) -> Result<JobId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::NotFound(format!("no job with id `{raw}`")))
}

/// `GET /api/v1/jobs/{id}`: state and progress.
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JobRecord>, ApiError> {
    let id = job_id(&id)?;
    state
        .scheduler
        .storage()
        .job(id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no job with id `{id}`")))
}

/// `GET /api/v1/jobs/{id}/result`: the merged output once the job is done.
pub async fn result(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = job_id(&id)?;
    let job = state
        .scheduler
        .storage()
        .job_result(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no job with id `{id}`")))?;
    match (job.state, job.result) {
        (JobState::Done, Some(bytes)) => {
            let content_type = state
                .scheduler
                .catalog()
                .info(&job.kernel)
                .map(|info| info.output_content_type)
                .unwrap_or("application/octet-stream");
            Ok(([(header::CONTENT_TYPE, content_type)], bytes).into_response())
        }
        (other, _) => Err(ApiError::Conflict(format!(
            "job `{id}` is {}, its result exists only once it is done",
            other.as_str()
        ))),
    }
}

/// `GET /api/v1/jobs/{id}/units`: each unit's state and who computed it: the wallets
/// whose results were judged valid and invalid, and the leases out now. Output bytes are
/// left out; the merged result has them.
pub async fn units(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = job_id(&id)?;
    let storage = state.scheduler.storage();
    if storage.job(id).await?.is_none() {
        return Err(ApiError::NotFound(format!("no job with id `{id}`")));
    }
    let units: Vec<serde_json::Value> = storage
        .audit_units(id)
        .await?
        .into_iter()
        .map(|u| {
            serde_json::json!({
                "index": u.idx,
                "state": u.state,
                "results": u.result_wallets.len(),
                "valid_wallets": u.valid_wallets,
                "leases_out": u.active_leases,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "units": units })))
}
