//! The OpenAPI 3.1 document, and an offline page that renders it.
//!
//! The document's paths come from the route table (`app::routes`): each handler's
//! `#[utoipa::path]` describes it, with bodies typed by `starling_api`, whose schemas
//! come along. This file adds only the document's introduction and the schemas no
//! handler names.

use axum::http::header;
use axum::response::IntoResponse;
use std::sync::OnceLock;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::OpenApi;

/// The relay's API description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Starling relay API",
        description = include_str!("api_intro.md"),
    ),
    components(schemas(
        starling_api::JobState,
        starling_api::Job,
        starling_api::ProgressEvent,
        starling_api::Problem,
    ))
)]
pub struct ApiDoc;

/// Handler docs are written for readers of the code: they open with "`METHOD /path`: ",
/// wrap at 90 columns and link with rustdoc's `` [`Type`] ``. In the document the method and
/// path are already there, lines wrap where the reader's window does, and links to Rust
/// items mean nothing, so the summary is the first sentence in plain words and the rest
/// becomes the description.
fn tidy_operation(op: &mut utoipa::openapi::path::Operation) {
    let Some(doc) = op.summary.take() else {
        return;
    };
    let doc = doc
        .strip_prefix('`')
        .and_then(|s| s.split_once("`: "))
        .map_or(doc.as_str(), |(_, rest)| rest);
    let doc = plain_prose(doc);
    let (summary, rest) = match doc.find(". ") {
        Some(end) => (&doc[..=end], doc[end + 2..].trim()),
        None => (doc.as_str(), ""),
    };
    let mut summary = summary.to_owned();
    if let Some(first) = summary.get(..1) {
        summary.replace_range(..1, &first.to_uppercase());
    }
    op.summary = Some(summary);
    let description = [rest, op.description.as_deref().unwrap_or("")]
        .into_iter()
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("\n\n");
    op.description = (!description.is_empty()).then_some(description);
}

/// Doc-comment text as a document reader should see it: paragraphs kept, the lines
/// within one joined, and rustdoc links (`` [`X`] ``, `[text](path)`) reduced to their text.
fn plain_prose(doc: &str) -> String {
    let paragraphs: Vec<String> = doc
        .split("\n\n")
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|p| !p.is_empty())
        .collect();
    let mut text = paragraphs.join("\n\n");
    // `[label]` followed by `(target)` or nothing: keep the label only. Brackets that are
    // not links (none in prose today) are left as they are.
    let mut out = String::with_capacity(text.len());
    while let Some(open) = text.find("[`") {
        let Some(close) = text[open..].find("`]").map(|i| open + i) else {
            break;
        };
        out.push_str(&text[..open]);
        out.push_str(&text[open + 1..=close]);
        let mut after = close + 2;
        if text[after..].starts_with('(') {
            if let Some(end) = text[after..].find(')') {
                after += end + 1;
            }
        }
        text.replace_range(..after, "");
    }
    out.push_str(&text);
    out
}

/// [`plain_prose`] over every `description` in the document.
fn tidy_descriptions(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(members) => {
            for (key, member) in members.iter_mut() {
                match member {
                    serde_json::Value::String(text) if key == "description" => {
                        *text = plain_prose(text);
                    }
                    _ => tidy_descriptions(member),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(tidy_descriptions),
        _ => {}
    }
}

/// The scheme every keyed route uses: the API key as a bearer token.
const API_KEY_SCHEME: &str = "api_key";

/// Marks the routes that take an API key. A route that can answer 401 is one that reads
/// the key, so its responses already say which routes these are; deriving the mark from
/// them keeps the two from disagreeing.
fn mark_keyed(op: &mut utoipa::openapi::path::Operation) {
    if op.responses.responses.contains_key("401") {
        op.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new::<
            _,
            _,
            &str,
        >(API_KEY_SCHEME, [])]);
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
        components.add_security_scheme(
            API_KEY_SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("stk_…")
                    .description(Some(
                        "An account's API key: `relay-server keys create` makes one; a relay \
                         started by scripts/run.sh prints a development key.",
                    ))
                    .build(),
            ),
        );
        for item in doc.paths.paths.values_mut() {
            for op in [&mut item.get, &mut item.post, &mut item.delete]
                .into_iter()
                .flatten()
            {
                tidy_operation(op);
                mark_keyed(op);
            }
        }
        // Schemas' descriptions come from the API types' doc comments: the same rustdoc
        // links and wrapping as handlers', deep in nested schemas, so they are tidied on
        // the finished document.
        let mut json = match serde_json::to_value(&doc) {
            Ok(json) => json,
            Err(e) => return format!("{{\"error\":\"cannot serialise the document: {e}\"}}"),
        };
        // The introduction is Markdown written for this document, not a doc comment.
        for part in ["paths", "components"] {
            if let Some(part) = json.get_mut(part) {
                tidy_descriptions(part);
            }
        }
        json.to_string()
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
