//! The OpenAPI 3.1 document, and an offline page that renders it.
//!
//! The document's paths come from the route table (`app::routes`): each handler's
//! `#[utoipa::path]` describes it, with bodies typed by `starling_api`, whose schemas
//! come along. This file adds only the document's introduction and the schemas no
//! handler names.

use axum::http::header;
use axum::response::IntoResponse;
use std::sync::OnceLock;
use utoipa::OpenApi;

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
    components(schemas(
        starling_api::JobState,
        starling_api::Job,
        starling_api::ProgressEvent,
        starling_api::Problem,
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
        let (paths, schemas) = crate::app::described_routes();
        doc.paths = paths;
        let components = doc.components.get_or_insert_with(Default::default);
        for (name, schema) in schemas {
            components.schemas.entry(name).or_insert(schema);
        }
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
