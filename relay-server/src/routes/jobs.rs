//! `/api/v1/jobs`: submit, list, follow, cancel a job and fetch its result.

use crate::app::AppState;
use crate::error::ApiError;
use crate::ledger::AccountId;
use crate::routes::auth::Submitter;
use crate::routes::extract::Query;
use crate::routes::wire;
use crate::scheduler::{JobOrder, SubmitError};
use crate::storage::job_queries::{Cancelled, Erase, IdempotentRequest, Purged};
use crate::storage::{IdempotencyClaim, JobState, StorageError};
use axum::body::Bytes;
use axum::extract::multipart::MultipartError;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use sha2::{Digest, Sha256};
use starling_api::jobs::{
    MultipartJob, UnitsQuery, DEFAULT_PAGE, IDEMPOTENCY_KEY, MAX_PAGE, OUTPUTS_PAGE_BYTES,
    OUTPUTS_PAGE_UNITS, UNITS_PAGE, UNITS_PAGE_MAX,
};
use starling_api::{
    Job, JobList, OutputsQuery, Problem, Quote, SubmitJob, UnitOutput, UnitOutputs, UnitPage,
    UnitStates,
};
use starling_kernels::NamedInputs;
use starling_protocol::JobId;
use std::collections::BTreeMap;

/// A submission, whichever way it arrived (JSON with base64 inputs, or multipart).
#[derive(Debug)]
struct Submission {
    kernel: String,
    params: serde_json::Value,
    inputs: NamedInputs,
    quorum: Option<u32>,
}

impl Submission {
    fn from_json(body: &[u8]) -> Result<Self, ApiError> {
        let request: SubmitJob = serde_json::from_slice(body).map_err(|e| ApiError::Malformed {
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
        Ok(Self {
            kernel: request.kernel,
            params: request.params,
            inputs,
            quorum: request.verification.map(|v| v.quorum),
        })
    }

    /// A part named `job` holds `{kernel, params}` as JSON; every other part is the raw
    /// bytes of the input it is named after.
    async fn from_multipart(mut multipart: Multipart, limit: usize) -> Result<Self, ApiError> {
        let multipart_error = |e: MultipartError| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge { limit }
            } else {
                ApiError::Malformed {
                    detail: format!("multipart body: {}", e.body_text()),
                }
            }
        };
        let mut job = None;
        let mut inputs = NamedInputs::new();
        while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
            let name = field
                .name()
                .filter(|n| !n.is_empty())
                .ok_or_else(|| ApiError::Malformed {
                    detail: "every multipart part needs a name (`job` or an input name)".into(),
                })?
                .to_owned();
            let bytes = field.bytes().await.map_err(multipart_error)?;
            if name == "job" {
                job = Some(Self::from_json(&bytes)?);
            } else if inputs.insert(name.clone(), bytes.to_vec()).is_some() {
                return Err(ApiError::Invalid {
                    detail: format!("input `{name}` is given twice"),
                    field: Some(format!("input.{name}")),
                });
            }
        }
        let mut job = job.ok_or_else(|| ApiError::Invalid {
            detail: "multipart body has no `job` part with the kernel and params".into(),
            field: Some("job".into()),
        })?;
        for (name, bytes) in inputs {
            if job.inputs.insert(name.clone(), bytes).is_some() {
                return Err(ApiError::Invalid {
                    detail: format!("input `{name}` is given both in `job` and as a part"),
                    field: Some(format!("input.{name}")),
                });
            }
        }
        Ok(job)
    }

    fn input_bytes(&self) -> usize {
        self.inputs.values().map(Vec::len).sum()
    }

    /// SHA-256 over kernel, parameters and inputs, each length-prefixed, so a retry matches
    /// however it was encoded (JSON or multipart). `params` is hashed as re-serialised by
    /// serde_json, whose maps are sorted, so key order in the request does not matter.
    fn digest(&self) -> String {
        let mut hash = Sha256::new();
        let kernel = self.kernel.as_bytes();
        let params = self.params.to_string();
        let quorum = self.quorum.map(|q| q.to_string()).unwrap_or_default();
        for part in [kernel, params.as_bytes(), quorum.as_bytes()] {
            hash.update((part.len() as u64).to_le_bytes());
            hash.update(part);
        }
        for (name, bytes) in &self.inputs {
            for part in [name.as_bytes(), bytes.as_slice()] {
                hash.update((part.len() as u64).to_le_bytes());
                hash.update(part);
            }
        }
        hex::encode(hash.finalize())
    }
}

/// The `Idempotency-Key` header, if sent: 1 to 255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let invalid = || ApiError::Invalid {
        detail: "Idempotency-Key must be 1 to 255 visible ASCII characters".into(),
        field: Some("Idempotency-Key".into()),
    };
    let key = value.to_str().map_err(|_| invalid())?;
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid());
    }
    Ok(Some(key.to_owned()))
}

/// `POST /api/v1/jobs`: validate, split and queue a job; 201 with its record. The body
/// is JSON ([`SubmitJob`]) or `multipart/form-data` (a `job` part and one part per input).
/// With an `Idempotency-Key` already used for the same request, 200 with that job.
#[utoipa::path(
    post,
    path = "/api/v1/jobs",
    tag = "jobs",
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe: the same key with the same request answers the job it created (200)")),
    request_body(content(
        (SubmitJob = "application/json"),
        (MultipartJob = "multipart/form-data"),
    )),
    responses(
        (status = 201, description = "Job accepted", body = Job),
        (status = 200, description = "A retry: the job this Idempotency-Key created", body = Job),
        (status = 400, description = "Body is not JSON or not a job", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No API key (`Authorization: Bearer …`), or not a valid one", body = Problem, content_type = "application/problem+json"),
        (status = 402, description = "The account's balance cannot cover the job's price", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body or inputs over the limit", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown kernel, invalid parameter or input, or Idempotency-Key reused for another request", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limit exceeded, or too many jobs running for this API key; see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn submit(
    State(state): State<AppState>,
    Submitter(submitter): Submitter,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    let submission = read_submission(&state, &headers, request).await?;
    let Some(key) = idempotency_key(&headers)? else {
        return Ok(created(create(&state, submission, submitter).await?));
    };
    // Keys are scoped to their account: two submitters may pick the same key.
    let key = match submitter {
        Some(account) => format!("{account}/{key}"),
        None => key,
    };
    let digest = submission.digest();
    // A retry usually finds its key here. Two submissions racing with one key (on this
    // relay or another) both get past it; the transaction that stores a job also claims
    // its key, so one of them stores nothing and is answered with the other's job.
    if let Some(prior) = state.scheduler.storage().idempotent_request(&key).await? {
        return retried(state, &key, &digest, prior).await;
    }
    let claim = IdempotencyClaim {
        key: key.clone(),
        request_sha256: digest.clone(),
    };
    match create_order(&state, submission, submitter, Some(claim)).await? {
        Created::Job(job) => Ok(created(*job)),
        Created::KeyTaken => {
            let prior = state
                .scheduler
                .storage()
                .idempotent_request(&key)
                .await?
                .ok_or_else(|| ApiError::Internal(format!("key `{key}` taken by no job")))?;
            retried(state, &key, &digest, prior).await
        }
    }
}

/// The answer to a submission whose `key` an earlier one (`prior`) took: that job, when
/// it was the same request.
async fn retried(
    state: AppState,
    key: &str,
    digest: &str,
    prior: IdempotentRequest,
) -> Result<Response, ApiError> {
    if prior.request_sha256 != digest {
        return Err(ApiError::Invalid {
            detail: format!("Idempotency-Key `{key}` was already used for a different request"),
            field: Some("Idempotency-Key".into()),
        });
    }
    let job = record_after(&state, prior.job, "its key was taken").await?;
    Ok((StatusCode::OK, location(prior.job), Json(job)).into_response())
}

/// A submission's body, JSON or multipart, with its inputs under the relay's limit.
async fn read_submission(
    state: &AppState,
    headers: &HeaderMap,
    request: Request,
) -> Result<Submission, ApiError> {
    let limit = state.limits.max_body_bytes;
    let multipart = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"));
    let submission = if multipart {
        let multipart =
            Multipart::from_request(request, state)
                .await
                .map_err(|e| ApiError::Malformed {
                    detail: e.body_text(),
                })?;
        Submission::from_multipart(multipart, limit).await?
    } else {
        let body = Bytes::from_request(request, state)
            .await
            .map_err(|e| ApiError::unreadable_body(e, limit))?;
        Submission::from_json(&body)?
    };
    let total = submission.input_bytes();
    if total > state.limits.max_input_bytes {
        return Err(ApiError::InputsTooLarge {
            total,
            limit: state.limits.max_input_bytes,
        });
    }
    Ok(submission)
}

fn created(job: Job) -> Response {
    (StatusCode::CREATED, location(job.id), Json(job)).into_response()
}

fn location(id: JobId) -> [(header::HeaderName, String); 1] {
    [(header::LOCATION, format!("/api/v1/jobs/{id}"))]
}

async fn create(
    state: &AppState,
    submission: Submission,
    submitter: Option<AccountId>,
) -> Result<Job, ApiError> {
    match create_order(state, submission, submitter, None).await? {
        Created::Job(job) => Ok(*job),
        Created::KeyTaken => Err(ApiError::Internal("a job without a key took a key".into())),
    }
}

/// What storing a submission came to.
enum Created {
    Job(Box<Job>),
    /// Its idempotency key was taken first: nothing stored.
    KeyTaken,
}

async fn create_order(
    state: &AppState,
    submission: Submission,
    submitter: Option<AccountId>,
    idempotency: Option<IdempotencyClaim>,
) -> Result<Created, ApiError> {
    let ordered = state
        .scheduler
        .submit_order(JobOrder {
            kernel: &submission.kernel,
            params: submission.params,
            inputs: &submission.inputs,
            quorum: submission.quorum,
            submitter,
            max_active: submitter.map(|_| state.limits.max_active_jobs),
            idempotency,
        })
        .await;
    let id = match ordered {
        Ok(id) => id,
        Err(SubmitError::Storage(StorageError::IdempotencyKeyTaken)) => {
            return Ok(Created::KeyTaken)
        }
        Err(e) => return Err(e.into()),
    };
    record_after(state, id, "inserting")
        .await
        .map(|job| Created::Job(Box::new(job)))
}

/// Job `id`, which `what` (a write of ours) just changed: it exists.
async fn record_after(state: &AppState, id: JobId, what: &str) -> Result<Job, ApiError> {
    state
        .scheduler
        .storage()
        .job(id)
        .await?
        .map(|record| wire::job(&record))
        .ok_or_else(|| ApiError::Internal(format!("job {id} vanished after {what}")))
}

fn no_such_job(raw: &str) -> ApiError {
    ApiError::NotFound(format!("no job with id `{raw}`"))
}

/// The job `raw` names, if `owner` submitted it. Another account's job gets the same 404
/// as a job that does not exist, so an id is never confirmed to anyone but its owner.
pub(crate) async fn owned_job(
    state: &AppState,
    owner: Option<AccountId>,
    raw: &str,
) -> Result<JobId, ApiError> {
    let id: JobId = raw.parse().map_err(|_| no_such_job(raw))?;
    if state.scheduler.storage().owns(owner, id).await? {
        Ok(id)
    } else {
        Err(no_such_job(raw))
    }
}

/// `GET /api/v1/jobs/{id}`: state and progress.
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}",
    tag = "jobs",
    params(("id" = String, Path, format = Uuid, description = "Job id")),
    responses(
        (status = 200, description = "The job", body = Job),
        (status = 401, description = "No API key (`Authorization: Bearer …`), or not a valid one", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    Submitter(owner): Submitter,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    let id = owned_job(&state, owner, &id).await?;
    state
        .scheduler
        .storage()
        .job(id)
        .await?
        .map(|record| Json(wire::job(&record)))
        .ok_or_else(|| ApiError::NotFound(format!("no job with id `{id}`")))
}

/// `GET /api/v1/jobs/{id}/result`: the merged output once the job is done.
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}/result",
    tag = "jobs",
    params(("id" = String, Path, format = Uuid, description = "Job id")),
    responses(
        (status = 200, description = "The merged result, with the kernel's content type (f32 LE bytes, PNG or JSON)", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 401, description = "No API key (`Authorization: Bearer …`), or not a valid one", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The job is not done", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "The job's data was purged", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn result(
    State(state): State<AppState>,
    Submitter(owner): Submitter,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = owned_job(&state, owner, &id).await?;
    let job = state
        .scheduler
        .storage()
        .job_result(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no job with id `{id}`")))?;
    if let Some(when) = job.purged_ms {
        return Err(ApiError::Gone(format!(
            "job `{id}`'s data was purged (at {when} ms since the Unix epoch): its result is erased for good"
        )));
    }
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

/// Cursors are opaque to clients so the paging scheme can change without breaking them.
fn encode_cursor(position: i64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("j{position}"))
}

fn decode_cursor(cursor: &str) -> Option<i64> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()?;
    std::str::from_utf8(&raw)
        .ok()?
        .strip_prefix('j')?
        .parse()
        .ok()
}

/// `GET /api/v1/jobs?limit=&state=&cursor=`: jobs newest first, one page at a time.
#[utoipa::path(
    get,
    path = "/api/v1/jobs",
    tag = "jobs",
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "Jobs per page (default 50)"),
        ("state" = Option<starling_api::JobState>, Query, description = "Only jobs in this state"),
        ("cursor" = Option<String>, Query, description = "`next` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of jobs, newest first", body = JobList),
        (status = 401, description = "No API key (`Authorization: Bearer …`), or not a valid one", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A query parameter is invalid; `field` names it", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    Submitter(owner): Submitter,
    Query(query): Query<BTreeMap<String, String>>,
) -> Result<Json<JobList>, ApiError> {
    let invalid = |field: &str, detail: String| ApiError::Invalid {
        detail,
        field: Some(field.to_owned()),
    };
    let mut limit = DEFAULT_PAGE;
    let mut filter = None;
    let mut before = None;
    for (name, value) in &query {
        match name.as_str() {
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|l| (1..=MAX_PAGE).contains(l))
                    .ok_or_else(|| {
                        invalid(
                            "limit",
                            format!("limit must be an integer from 1 to {MAX_PAGE}, got `{value}`"),
                        )
                    })?;
            }
            "state" => {
                filter = Some(value.parse::<starling_api::JobState>().map_err(|_| {
                    invalid(
                        "state",
                        format!(
                            "state must be one of queued, running, done, failed, cancelled; got `{value}`"
                        ),
                    )
                })?);
            }
            "cursor" => {
                before = Some(decode_cursor(value).ok_or_else(|| {
                    invalid(
                        "cursor",
                        "cursor is not one this relay handed out (use `next` of the previous page)"
                            .into(),
                    )
                })?);
            }
            other => {
                return Err(invalid(
                    other,
                    format!("unknown query parameter `{other}` (known: limit, state, cursor)"),
                ))
            }
        }
    }
    let page = state
        .scheduler
        .storage()
        .list_jobs(owner, filter, before, limit)
        .await?;
    Ok(Json(JobList {
        jobs: page.jobs.iter().map(wire::job).collect(),
        next: page.next.map(encode_cursor),
    }))
}

/// `DELETE /api/v1/jobs/{id}`: cancels a queued or running job; its outstanding units are
/// withdrawn and results still on their way are ignored. 200 with the cancelled record.
#[utoipa::path(
    delete,
    path = "/api/v1/jobs/{id}",
    tag = "jobs",
    params(("id" = String, Path, format = Uuid, description = "Job id")),
    responses(
        (status = 200, description = "The job, now cancelled", body = Job),
        (status = 401, description = "No API key (`Authorization: Bearer …`), or not a valid one", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The job has already ended", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn cancel(
    State(state): State<AppState>,
    Submitter(owner): Submitter,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    let id = owned_job(&state, owner, &id).await?;
    let storage = state.scheduler.storage();
    match storage.cancel_job(id).await? {
        Cancelled::Now { withdrawn } => {
            tracing::info!(job = %id, withdrawn, "job cancelled");
            state.scheduler.job_changed(id);
        }
        Cancelled::AlreadyEnded(ended) => {
            return Err(ApiError::Conflict(format!(
                "job `{id}` is already {}; only queued or running jobs can be cancelled",
                ended.as_str()
            )))
        }
        Cancelled::Missing => return Err(no_such_job(&id.to_string())),
    }
    record_after(&state, id, "cancelling").await.map(Json)
}

#[cfg(test)]
mod tests {
    use super::Submission;

    fn digest(body: &str) -> String {
        Submission::from_json(body.as_bytes())
            .map(|s| s.digest())
            .unwrap_or_default()
    }

    #[test]
    fn request_digest_ignores_key_order_but_not_values() {
        let a = digest(r#"{"kernel":"matmul","params":{"m":1,"k":2},"input":{"a":"AAAA"}}"#);
        let b = digest(r#"{"input":{"a":"AAAA"},"params":{"k":2,"m":1},"kernel":"matmul"}"#);
        let c = digest(r#"{"kernel":"matmul","params":{"m":1,"k":3},"input":{"a":"AAAA"}}"#);
        assert!(!a.is_empty());
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}

/// `GET /api/v1/jobs/{id}/units`: each unit's state and who computed it: the wallets
/// whose results were judged valid, how many results came back, and the leases out now.
/// Output bytes are left out; the merged result has them. Paged, in unit order: a job
/// may have 100,000 units.
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}/units",
    tag = "jobs",
    params(
        ("id" = String, Path, format = Uuid, description = "Job id"),
        UnitsQuery,
    ),
    responses(
        (status = 200, description = "A page of units: pass `next` as `after` for the following page; `null` on the last page", body = UnitPage),
        (status = 401, description = "No API key (`Authorization: Bearer …`), or not a valid one", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`after` or `limit` out of range", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn units(
    State(state): State<AppState>,
    Submitter(owner): Submitter,
    Path(id): Path<String>,
    Query(page): Query<UnitsQuery>,
) -> Result<Json<UnitPage>, ApiError> {
    let id = owned_job(&state, owner, &id).await?;
    let limit = page.limit.unwrap_or(UNITS_PAGE);
    if !(1..=UNITS_PAGE_MAX).contains(&limit) {
        return Err(ApiError::Invalid {
            detail: format!("limit must be between 1 and {UNITS_PAGE_MAX}, got {limit}"),
            field: Some("limit".into()),
        });
    }
    // One more than asked tells whether another page follows.
    let mut units = state
        .scheduler
        .storage()
        .unit_page(id, page.after, limit + 1)
        .await?;
    let more = units.len() > limit as usize;
    units.truncate(limit as usize);
    let next = more.then(|| units.last().map(|u| u.idx)).flatten();
    let units = units
        .into_iter()
        .map(wire::unit)
        .collect::<Result<_, _>>()?;
    Ok(Json(UnitPage { units, next }))
}

/// `GET /api/v1/jobs/{id}/units/states`: every unit's state in unit order, as runs of
/// one state: what a progress map needs, in a few hundred bytes where the unit listing of
/// a large job is megabytes.
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}/units/states",
    tag = "jobs",
    params(("id" = String, Path, format = Uuid, description = "Job id")),
    responses(
        (status = 200, description = "The units' states, run-length encoded in unit order", body = UnitStates),
        (status = 401, description = "No API key (`Authorization: Bearer …`), or not a valid one", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn unit_states(
    State(state): State<AppState>,
    Submitter(owner): Submitter,
    Path(id): Path<String>,
) -> Result<Json<UnitStates>, ApiError> {
    let id = owned_job(&state, owner, &id).await?;
    Ok(Json(state.scheduler.storage().unit_states(id).await?))
}

/// `DELETE /api/v1/jobs/{id}/data`: erases an ended job's data for good (its inputs,
/// every output its volunteers returned, its result and its key); the job's record and
/// its ledger entries stay, marked purged. 200 with the record.
#[utoipa::path(
    delete,
    path = "/api/v1/jobs/{id}/data",
    tag = "jobs",
    params(("id" = String, Path, format = Uuid, description = "Job id")),
    responses(
        (status = 200, description = "The job, its data erased (`purged_ms` set); also for a job purged before", body = Job),
        (status = 401, description = "No API key, or not a valid one", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The job is still queued or running (cancel it first)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn purge(
    State(state): State<AppState>,
    Submitter(owner): Submitter,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    let id = owned_job(&state, owner, &id).await?;
    let storage = state.scheduler.storage();
    match storage.purge_job_data(id, Erase::All).await? {
        Purged::Now => tracing::info!(job = %id, "job data purged"),
        Purged::Already => {}
        Purged::NotEnded(now) => {
            return Err(ApiError::Conflict(format!(
                "job `{id}` is {}: its data is in use; cancel it first",
                now.as_str()
            )))
        }
        Purged::Missing => return Err(no_such_job(&id.to_string())),
    }
    record_after(&state, id, "purging").await.map(Json)
}

/// `POST /api/v1/jobs/quote`: units, price and a time estimate for a job, checked and
/// split exactly as `POST /api/v1/jobs` would, with nothing stored and nothing charged.
#[utoipa::path(
    post,
    path = "/api/v1/jobs/quote",
    tag = "jobs",
    request_body(content(
        (SubmitJob = "application/json"),
        (MultipartJob = "multipart/form-data"),
    )),
    responses(
        (status = 200, description = "What the job would be", body = Quote),
        (status = 400, description = "Body is not JSON or not a job", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No API key (`Authorization: Bearer …`), or not a valid one", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body or inputs over the limit", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown kernel, invalid parameter or input, or too many units; `field` names the one at fault", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn quote(
    State(state): State<AppState>,
    Submitter(submitter): Submitter,
    headers: HeaderMap,
    request: Request,
) -> Result<Json<Quote>, ApiError> {
    let submission = read_submission(&state, &headers, request).await?;
    state.scheduler.ensure_kernel(&submission.kernel).await?;
    let (plan, quorum) = state.scheduler.plan(
        &submission.kernel,
        &submission.params,
        &submission.inputs,
        submission.quorum,
    )?;
    // Priced as `insert_job` prices it: billed only where the relay bills and the caller
    // has an account.
    let price_per_gflop = state
        .scheduler
        .storage()
        .billing()
        .filter(|_| submitter.is_some())
        .map(|billing| billing.pricing.price_per_gflop);
    let price = match price_per_gflop {
        Some(per_gflop) => {
            crate::lifecycle::billing::job_budget(plan.unit_flops.iter().copied(), per_gflop)
                .map_err(|e| ApiError::Invalid {
                    detail: format!("the job's price cannot be computed: {e}"),
                    field: Some("params".into()),
                })?
        }
        None => crate::ledger::MicroCredits(0),
    };
    let rates = state.scheduler.throughput();
    let work_gflop = plan.flops as f64 * f64::from(quorum) / 1e9;
    Ok(Json(Quote {
        units: plan.units.len() as u64,
        flops: plan.flops,
        quorum,
        price: price.to_string(),
        price_micro: price.0,
        eta_s: (rates.gflops > 0.0).then(|| work_gflop / rates.gflops),
        volunteers: state.scheduler.volunteers() as u64,
    }))
}

/// `GET /api/v1/jobs/{id}/units/outputs?from=&to=`: the outputs of the job's settled
/// units in `from..to`, while it runs, so a render can be drawn as its tiles settle. A
/// page holds at most 5000 units and about 1 MiB of output; `next` says where to go on.
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}/units/outputs",
    tag = "jobs",
    params(
        ("id" = String, Path, format = Uuid, description = "Job id"),
        OutputsQuery,
    ),
    responses(
        (status = 200, description = "Settled units' outputs in unit order; pass `next` as `from` for the rest of the range", body = UnitOutputs),
        (status = 401, description = "No API key (`Authorization: Bearer …`), or not a valid one", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "The job's data was purged", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`from` or `to` out of range", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn unit_outputs(
    State(state): State<AppState>,
    Submitter(owner): Submitter,
    Path(id): Path<String>,
    Query(range): Query<OutputsQuery>,
) -> Result<Json<UnitOutputs>, ApiError> {
    let id = owned_job(&state, owner, &id).await?;
    let from = range.from.unwrap_or(0);
    let to = range.to.unwrap_or(i64::MAX);
    for (name, value) in [("from", from), ("to", to)] {
        if value < 0 {
            return Err(ApiError::Invalid {
                detail: format!("{name} must be a unit index (0 or more), got {value}"),
                field: Some(name.into()),
            });
        }
    }
    let storage = state.scheduler.storage();
    if let Some(when) = storage.purged_ms(id).await? {
        return Err(ApiError::Gone(format!(
            "job `{id}`'s data was purged (at {when} ms since the Unix epoch): its outputs are erased for good"
        )));
    }
    let (outputs, next) = storage
        .settled_outputs(id, from, to, OUTPUTS_PAGE_UNITS, OUTPUTS_PAGE_BYTES)
        .await?;
    let base64 = base64::engine::general_purpose::STANDARD;
    Ok(Json(UnitOutputs {
        outputs: outputs
            .into_iter()
            .map(|(index, output)| UnitOutput {
                index,
                output: base64.encode(output),
            })
            .collect(),
        next,
    }))
}
