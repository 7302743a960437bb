//! `/api/v1/kernels`: the catalog (built-ins and registered kernels), registering a
//! submitter's own WGSL kernel, and reading one with its source.

use crate::app::AppState;
use crate::custom_kernels::{self, validate};
use crate::error::ApiError;
use crate::routes::auth::Submitter;
use crate::routes::extract::JsonBody;
use crate::routes::wire;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use starling_api::manifest::MeasuredRuns;
use starling_api::{CustomKernel, KernelCatalog, Problem, RegisterKernel};

/// Most kernels one account may register: each is kept for good, source and all.
pub const MAX_KERNELS_PER_ACCOUNT: i64 = 100;
/// Most registered kernels the catalog lists, newest first.
const LISTED_CUSTOM_KERNELS: i64 = 500;

/// `GET /api/v1/kernels`: the catalog with parameter schemas.
#[utoipa::path(get, path = "/api/v1/kernels", tag = "kernels", responses(
    (status = 200, description = "Every built-in kernel, then the newest 500 registered ones, with their parameters' JSON Schema", body = KernelCatalog),
))]
pub async fn list(State(state): State<AppState>) -> Result<Json<KernelCatalog>, ApiError> {
    let builtin = state.scheduler.catalog().infos();
    let custom = state
        .scheduler
        .storage()
        .custom_kernels(LISTED_CUSTOM_KERNELS)
        .await?;
    Ok(Json(KernelCatalog {
        kernels: builtin
            .into_iter()
            .map(wire::kernel)
            .chain(
                custom
                    .iter()
                    .map(|k| custom_kernels::info(&wire::custom_kernel(k))),
            )
            .collect(),
    }))
}

/// `POST /api/v1/kernels`: registers a WGSL compute shader and its manifest. naga parses
/// and validates it for WebGPU's baseline, and its entry point, workgroup size and
/// bindings must match the manifest within WebGPU's default limits. 201 with the kernel,
/// or 200 with the one already registered under the same content address.
#[utoipa::path(
    post,
    path = "/api/v1/kernels",
    tag = "kernels",
    request_body = RegisterKernel,
    responses(
        (status = 201, description = "Registered", body = CustomKernel),
        (status = 200, description = "The same source and manifest were registered already", body = CustomKernel),
        (status = 400, description = "Body is not a RegisterKernel", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No API key, or not a valid one", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The shader does not compile (`field` is `source`, the detail names line and column) or does not match the manifest (`field` names the manifest's field at fault)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The account holds as many kernels as it may", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn register(
    State(state): State<AppState>,
    Submitter(owner): Submitter,
    JsonBody(request): JsonBody<RegisterKernel>,
) -> Result<(StatusCode, Json<CustomKernel>), ApiError> {
    // naga's work grows with the source; off the async threads.
    let request = tokio::task::spawn_blocking(move || {
        validate::validate(&request.source, &request.manifest).map(|()| request)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("kernel validation panicked: {e}")))?
    .map_err(|refusal| ApiError::Invalid {
        detail: refusal.detail,
        field: Some(refusal.field),
    })?;
    let id = custom_kernels::content_id(&request.source, &request.manifest);
    let stored = state
        .scheduler
        .storage()
        .register_kernel(
            id.clone(),
            owner,
            request.source,
            &request.manifest,
            MAX_KERNELS_PER_ACCOUNT,
        )
        .await?;
    let Some((kernel, created)) = stored else {
        return Err(ApiError::QuotaExceeded {
            detail: format!(
                "this account has registered {MAX_KERNELS_PER_ACCOUNT} kernels, as many as it may"
            ),
            retry_after_secs: 3600,
        });
    };
    if created {
        tracing::info!(kernel = %id, owner = ?owner, "custom kernel registered");
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(wire::custom_kernel(&kernel))))
}

/// `GET /api/v1/kernels/{id}`: a registered kernel with its manifest and source,
/// readable by anyone (volunteers see what they run), and how its units went: the
/// declared FLOPs beside the time volunteers took.
#[utoipa::path(
    get,
    path = "/api/v1/kernels/{id}",
    tag = "kernels",
    params(("id" = String, Path, description = "The kernel's content address (64 hex digits)")),
    responses(
        (status = 200, description = "The kernel", body = CustomKernel),
        (status = 404, description = "No kernel registered under this id", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<CustomKernel>, ApiError> {
    let no_such = || {
        let shown: String = id.chars().take(64).collect();
        ApiError::NotFound(format!("no registered kernel `{shown}`"))
    };
    if !custom_kernels::is_content_id(&id) {
        return Err(no_such());
    }
    let Some(kernel) = state.scheduler.storage().custom_kernel(&id).await? else {
        return Err(no_such());
    };
    let (results, total_ms, flops) = state.scheduler.storage().kernel_runs(&id).await?;
    let mut shown = wire::custom_kernel(&kernel);
    shown.measured = (results > 0).then(|| MeasuredRuns {
        results: results as u64,
        mean_unit_ms: total_ms as f64 / results as f64,
        declared_gflop_per_s: flops as f64 / (total_ms.max(1) as f64 * 1e6),
    });
    Ok(Json(shown))
}
