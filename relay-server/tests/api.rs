//! The submitter's REST API through the real router (no socket): listing, cancelling,
//! idempotent submission, multipart upload, limits, readiness, metrics and job events.
//! Every refusal is checked for its status and its problem+json body.

mod common;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use base64::Engine as _;
use common::router::{call, Answer};
use common::TempDir;
use serde_json::{json, Value};
use starling_api::{Job, JobList, JobState, UnitPage, UnitState};
use starling_protocol::{LeaseId, WalletKey};
use starling_relay::app::{self, Limits};
use starling_relay::ledger::MicroCredits;
use starling_relay::middleware::RateLimit;
use starling_relay::storage::{
    Billing, Judging, LeaseRequest, LeaseTerms, PeerId, Pricing, Recorded, ReturnedResult, Storage,
};
use starling_relay::validation::Reference;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

struct Relay {
    router: Router,
    storage: Storage,
}

async fn relay_with(dir: &Path, limits: Limits) -> Relay {
    let storage = Storage::open(dir).await.expect("storage opens");
    relay_over(dir, storage, limits)
}

/// The router over `storage` (opened in `dir`).
fn relay_over(dir: &Path, storage: Storage, limits: Limits) -> Relay {
    Relay {
        router: common::router::router(dir, storage.clone(), limits),
        storage,
    }
}

async fn relay(dir: &Path) -> Relay {
    relay_with(dir, Limits::default()).await
}

fn temp_dir(name: &str) -> TempDir {
    TempDir::new(&format!("api-{name}"))
}

/// A status, content type and body as JSON (or as a string when it is not JSON).
fn get(uri: &str) -> Request<Body> {
    Request::get(uri)
        .body(Body::empty())
        .expect("valid request")
}

fn delete(uri: &str) -> Request<Body> {
    Request::delete(uri)
        .body(Body::empty())
        .expect("valid request")
}

fn post_json(body: &Value, key: Option<&str>) -> Request<Body> {
    let mut request =
        Request::post("/api/v1/jobs").header(header::CONTENT_TYPE, "application/json");
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    request
        .body(Body::from(body.to_string()))
        .expect("valid request")
}

fn f32s(values: impl IntoIterator<Item = f32>) -> Vec<u8> {
    values.into_iter().flat_map(f32::to_le_bytes).collect()
}

/// A 2x2 by 2x2 matmul job as JSON with base64 inputs, plus the raw inputs.
fn matmul(seed: f32) -> (Value, Vec<u8>, Vec<u8>) {
    let a = f32s([seed, 2.0, 3.0, 4.0]);
    let b = f32s([1.0, 0.0, 0.0, 1.0]);
    let b64 = base64::engine::general_purpose::STANDARD;
    let body = json!({
        "kernel": "matmul",
        "params": {"m": 2, "k": 2, "n": 2},
        "input": {"a": b64.encode(&a), "b": b64.encode(&b)},
    });
    (body, a, b)
}

async fn submit(router: &Router, seed: f32) -> String {
    let answer = call(router, post_json(&matmul(seed).0, None)).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.json());
    answer.decode::<Job>().id.to_string()
}

#[tokio::test]
async fn job_list_pages_newest_first_and_filters_by_state() {
    let dir = temp_dir("list");
    let relay = relay(&dir).await;
    let mut ids = Vec::new();
    for seed in 0..5 {
        ids.push(submit(&relay.router, seed as f32).await);
    }
    let mut seen = Vec::new();
    let mut uri = "/api/v1/jobs?limit=2".to_owned();
    loop {
        let page = call(&relay.router, get(&uri)).await;
        assert_eq!(page.status, StatusCode::OK);
        let page: JobList = page.decode();
        assert!(page.jobs.len() <= 2, "{page:?}");
        seen.extend(page.jobs.iter().map(|j| j.id.to_string()));
        match page.next.as_deref() {
            Some(next) => uri = format!("/api/v1/jobs?limit=2&cursor={next}"),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids, "every job once, newest first");

    let cancelled = call(&relay.router, delete(&format!("/api/v1/jobs/{}", ids[2]))).await;
    assert_eq!(cancelled.status, StatusCode::OK);
    let only: JobList = call(&relay.router, get("/api/v1/jobs?state=cancelled"))
        .await
        .decode();
    assert_eq!(only.jobs.len(), 1, "{only:?}");
    assert_eq!(only.jobs[0].id.to_string(), ids[2]);
    assert_eq!(only.next, None);
    let queued: JobList = call(&relay.router, get("/api/v1/jobs?state=queued&limit=500"))
        .await
        .decode();
    assert_eq!(queued.jobs.len(), 4, "{queued:?}");
}

#[tokio::test]
async fn every_response_carries_the_security_headers_and_only_the_widget_may_be_framed() {
    let dir = temp_dir("security-headers");
    // The app's index.html, so the single-page paths answer as they do in production.
    std::fs::create_dir_all(dir.join("dist")).expect("dist");
    std::fs::write(
        dir.join("dist/index.html"),
        "<!doctype html><title>app</title>",
    )
    .expect("index.html");
    let relay = relay(&dir).await;
    let header = |answer: &Answer, name: &str| {
        answer
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    for path in [
        "/",
        "/console",
        "/widget",
        "/widget/",
        "/api/v1/kernels",
        "/api/v1/docs",
        "/api/v1/no-such-endpoint",
        "/healthz",
    ] {
        let answer = call(&relay.router, get(path)).await;
        assert_eq!(
            header(&answer, "x-content-type-options").as_deref(),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(
            header(&answer, "referrer-policy").as_deref(),
            Some("no-referrer"),
            "{path}"
        );
        let csp = header(&answer, "content-security-policy").unwrap_or_default();
        for directive in [
            "default-src 'self'",
            "script-src 'self' 'unsafe-inline' 'wasm-unsafe-eval'",
            "connect-src 'self'",
            "object-src 'none'",
        ] {
            assert!(
                csp.contains(directive),
                "{path}: {directive} not in {csp:?}"
            );
        }
        let widget = path == "/widget" || path.starts_with("/widget/");
        let framing = csp
            .split(';')
            .map(str::trim)
            .find(|d| d.starts_with("frame-ancestors"));
        if widget {
            // Sites embed the widget in an iframe from their own origin (public/widget.js).
            assert_eq!(framing, Some("frame-ancestors *"), "{path}: {csp}");
            assert_eq!(header(&answer, "x-frame-options"), None, "{path}");
        } else {
            assert_eq!(framing, Some("frame-ancestors 'none'"), "{path}: {csp}");
            assert_eq!(
                header(&answer, "x-frame-options").as_deref(),
                Some("DENY"),
                "{path}"
            );
        }
    }
    // A path that merely starts with the same letters is not the widget.
    let answer = call(&relay.router, get("/widgetry")).await;
    assert_eq!(header(&answer, "x-frame-options").as_deref(), Some("DENY"));
}

#[tokio::test]
async fn a_transfer_outside_its_validity_is_refused_naming_expires_ms() {
    let dir = temp_dir("transfer-expiry");
    let relay_key = WalletKey::from_seed([42; 32]);
    let storage = Storage::open(&dir)
        .await
        .expect("storage opens")
        .with_billing(Billing {
            key: relay_key.clone(),
            pricing: Pricing {
                price_per_gflop: MicroCredits(1_000_000),
                site_share_ppm: 0,
                platform_fee_ppm: 0,
            },
        });
    let relay = relay_over(&dir, storage, Limits::default());
    let now_ms = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis(),
    )
    .expect("fits");
    let (from, to) = (WalletKey::from_seed([1; 32]), WalletKey::from_seed([2; 32]));
    let body = |expires_ms: u64| {
        let signature = from.sign_transfer(&relay_key.address(), &to.address(), 1, 1, expires_ms);
        json!({
            "from": from.address().to_string(),
            "to": to.address().to_string(),
            "amount": "0.000001",
            "nonce": 1,
            "expires_ms": expires_ms,
            "signature": hex::encode(signature.0),
        })
    };
    let post = |body: Value| {
        Request::post("/api/v1/transfers")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .expect("valid request")
    };
    let expired = call(&relay.router, post(body(now_ms - 1_000))).await;
    let detail = expired.problem(422, Some("expires_ms"));
    assert!(detail.contains("expired"), "{detail}");
    let lasting = call(&relay.router, post(body(now_ms + 48 * 3_600_000))).await;
    let detail = lasting.problem(422, Some("expires_ms"));
    assert!(detail.contains("24 hours"), "{detail}");
    // The expiry is required: without it there is no transfer to check.
    let mut missing = body(now_ms + 60_000);
    if let Some(fields) = missing.as_object_mut() {
        fields.remove("expires_ms");
    }
    call(&relay.router, post(missing)).await.problem(400, None);
    // Inside its validity it reaches the ledger (the sender holds nothing).
    call(&relay.router, post(body(now_ms + 60_000)))
        .await
        .problem(402, None);
}

#[tokio::test]
async fn bad_list_queries_are_refused_naming_the_field() {
    let dir = temp_dir("list-errors");
    let relay = relay(&dir).await;
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("state=sleeping", "state"),
        ("cursor=not-ours", "cursor"),
        ("colour=red", "colour"),
    ] {
        let answer = call(&relay.router, get(&format!("/api/v1/jobs?{query}"))).await;
        let detail = answer.problem(422, Some(field));
        assert!(!detail.is_empty(), "{query}");
    }
}

#[tokio::test]
async fn cancel_withdraws_units_so_late_results_are_stale() {
    let dir = temp_dir("cancel");
    let relay = relay(&dir).await;
    let id = submit(&relay.router, 1.0).await;
    let peer = PeerId::new();
    let wallet = WalletKey::from_seed([5; 32]).address();
    let lease = LeaseId::from_uuid(uuid::Uuid::new_v4());
    let request = LeaseRequest {
        custom_ok: true,
        peer,
        wallet,
        site: None,
        lease,
        terms: LeaseTerms::until(i64::MAX / 2),
        network: None,
        draw: 0.0,
    };
    let leased = relay
        .storage
        .lease_work(&request, |_, q| q)
        .await
        .expect("lease query");
    assert!(leased.is_some(), "the job's unit is leased");

    let answer = call(&relay.router, delete(&format!("/api/v1/jobs/{id}"))).await;
    assert_eq!(answer.status, StatusCode::OK);
    let record: Job = answer.decode();
    assert_eq!(record.state, JobState::Cancelled, "{record:?}");
    assert_eq!(record.progress.units_leased, 0, "{record:?}");

    let late = relay
        .storage
        .record_result(
            ReturnedResult {
                lease,
                wallet,
                output: &[0; 16],
                spot_check: None,
            },
            Judging {
                max_results: 6,
                vet_newcomers: true,
            },
            Arc::new(|a: &[u8], b: &[u8]| a == b),
            Reference::NotRun,
        )
        .await
        .expect("result query");
    assert!(
        matches!(late, Recorded::Stale(_)),
        "a result for a withdrawn lease counts for nothing: {late:?}"
    );
    let next = relay
        .storage
        .lease_work(
            &LeaseRequest {
                custom_ok: true,
                lease: LeaseId::from_uuid(uuid::Uuid::new_v4()),
                ..request
            },
            |_, q| q,
        )
        .await
        .expect("lease query");
    assert!(next.is_none(), "nothing of a cancelled job is leased again");

    let again = call(&relay.router, delete(&format!("/api/v1/jobs/{id}"))).await;
    let detail = again.problem(409, None);
    assert!(detail.contains("already cancelled"), "{detail}");
    call(
        &relay.router,
        delete("/api/v1/jobs/00000000-0000-0000-0000-000000000000"),
    )
    .await
    .problem(404, None);
    let result = call(&relay.router, get(&format!("/api/v1/jobs/{id}/result"))).await;
    result.problem(409, None);
}

#[tokio::test]
async fn idempotency_key_returns_the_first_job_and_survives_a_restart() {
    let dir = temp_dir("idempotency");
    let (body, _, _) = matmul(1.0);
    let first_id = {
        let relay = relay(&dir).await;
        let first = call(&relay.router, post_json(&body, Some("order-42"))).await;
        assert_eq!(first.status, StatusCode::CREATED);
        let retry = call(&relay.router, post_json(&body, Some("order-42"))).await;
        assert_eq!(retry.status, StatusCode::OK, "a retry is not a new job");
        assert_eq!(retry.decode::<Job>().id, first.decode::<Job>().id);
        first.decode::<Job>().id
    };
    let relay = relay(&dir).await;
    let after_restart = call(&relay.router, post_json(&body, Some("order-42"))).await;
    assert_eq!(after_restart.status, StatusCode::OK);
    assert_eq!(after_restart.decode::<Job>().id, first_id);

    let (other, _, _) = matmul(2.0);
    let reused = call(&relay.router, post_json(&other, Some("order-42"))).await;
    let detail = reused.problem(422, Some("Idempotency-Key"));
    assert!(detail.contains("different request"), "{detail}");
    let bad_key = call(&relay.router, post_json(&body, Some("two words"))).await;
    bad_key.problem(422, Some("Idempotency-Key"));
    let listed: JobList = call(&relay.router, get("/api/v1/jobs")).await.decode();
    assert_eq!(listed.jobs.len(), 1, "{listed:?}");
}

fn multipart(parts: &[(&str, &[u8])], key: Option<&str>) -> Request<Body> {
    let boundary = "starling-test-boundary";
    let mut body = Vec::new();
    for (name, bytes) in parts {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let mut request = Request::post("/api/v1/jobs").header(
        header::CONTENT_TYPE,
        format!("multipart/form-data; boundary={boundary}"),
    );
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    request.body(Body::from(body)).expect("valid request")
}

#[tokio::test]
async fn multipart_upload_takes_raw_inputs_and_matches_the_json_form() {
    let dir = temp_dir("multipart");
    let relay = relay(&dir).await;
    let (json_body, a, b) = matmul(1.0);
    let job = json!({"kernel": "matmul", "params": {"m": 2, "k": 2, "n": 2}}).to_string();
    let created = call(
        &relay.router,
        multipart(
            &[("job", job.as_bytes()), ("a", &a), ("b", &b)],
            Some("multipart-1"),
        ),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.json());
    assert_eq!(
        created.decode::<Job>().params,
        json!({"m": 2, "k": 2, "n": 2})
    );
    // The same request sent as JSON with the same key is a retry, not a conflict.
    let same = call(&relay.router, post_json(&json_body, Some("multipart-1"))).await;
    assert_eq!(same.status, StatusCode::OK, "{}", same.json());
    assert_eq!(same.decode::<Job>().id, created.decode::<Job>().id);

    let no_job = call(&relay.router, multipart(&[("a", &a), ("b", &b)], None)).await;
    no_job.problem(422, Some("job"));
    let short_b = call(
        &relay.router,
        multipart(&[("job", job.as_bytes()), ("a", &a), ("b", &b[..8])], None),
    )
    .await;
    short_b.problem(422, Some("input.b"));
}

#[tokio::test]
async fn inputs_over_the_limit_get_413() {
    let dir = temp_dir("input-limit");
    let relay = relay_with(
        &dir,
        Limits {
            max_input_bytes: 16,
            ..Limits::default()
        },
    )
    .await;
    let (body, _, _) = matmul(1.0);
    let detail = call(&relay.router, post_json(&body, None))
        .await
        .problem(413, None);
    assert_eq!(
        detail,
        "inputs total 32 bytes, over the 16-byte limit on a job's inputs"
    );
}

#[tokio::test]
async fn clients_over_their_rate_get_429_with_retry_after() {
    let dir = temp_dir("rate");
    let relay = relay_with(
        &dir,
        Limits {
            rate: RateLimit {
                per_second: 0.5,
                burst: 2,
            },
            ..Limits::default()
        },
    )
    .await;
    for _ in 0..2 {
        assert_eq!(
            call(&relay.router, get("/api/v1/kernels")).await.status,
            StatusCode::OK
        );
    }
    let refused = call(&relay.router, get("/api/v1/kernels")).await;
    refused.problem(429, None);
    assert_eq!(
        refused
            .headers
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()),
        Some("2")
    );
    let with_key = Request::get("/api/v1/kernels")
        .header(header::AUTHORIZATION, "Bearer someone-else")
        .body(Body::empty())
        .expect("valid request");
    // Issue 20: a made-up key once got a bucket of its own, so a new token per request
    // escaped the limit. Only a verified key has its own, and the address's still applies.
    call(&relay.router, with_key).await.problem(429, None);
    assert_eq!(
        call(&relay.router, get("/healthz")).await.status,
        StatusCode::OK,
        "probes are not rate limited"
    );
}

#[tokio::test]
async fn readiness_and_metrics_report_the_database_and_counts() {
    let dir = temp_dir("metrics");
    let relay = relay(&dir).await;
    let ready = call(&relay.router, get("/readyz")).await;
    assert_eq!(ready.status, StatusCode::OK);
    let id = submit(&relay.router, 1.0).await;
    call(&relay.router, delete(&format!("/api/v1/jobs/{id}"))).await;
    submit(&relay.router, 2.0).await;
    let metrics = call(&relay.router, get("/metrics")).await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(metrics
        .content_type
        .starts_with("text/plain; version=0.0.4"));
    let text = String::from_utf8_lossy(&metrics.body);
    for line in [
        "starling_volunteers_connected 0",
        "starling_jobs{state=\"queued\"} 1",
        "starling_jobs{state=\"cancelled\"} 1",
        "starling_jobs{state=\"done\"} 0",
        "starling_units{kernel=\"matmul\",state=\"failed\"} 1",
        "starling_units{kernel=\"matmul\",state=\"queued\"} 1",
        "starling_http_requests_total{method=\"POST\",status=\"201\"} 2",
        "# TYPE starling_http_requests_total counter",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in:\n{text}"
        );
    }
}

#[tokio::test]
async fn events_stream_progress_then_the_final_state_and_end() {
    let dir = temp_dir("events");
    let relay = relay(&dir).await;
    let id = submit(&relay.router, 1.0).await;
    call(&relay.router, delete(&format!("/api/v1/jobs/{id}"))).await;
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        call(&relay.router, get(&format!("/api/v1/jobs/{id}/events"))),
    )
    .await
    .expect("the stream of an ended job ends");
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.content_type.starts_with("text/event-stream"));
    let text = String::from_utf8_lossy(&answer.body);
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(names, ["progress", "cancelled"], "{text}");
    assert!(text.contains("\"state\":\"cancelled\""), "{text}");
    call(
        &relay.router,
        get("/api/v1/jobs/00000000-0000-0000-0000-000000000000/events"),
    )
    .await
    .problem(404, None);
}

fn keys(value: &Value) -> std::collections::BTreeSet<String> {
    value
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn openapi_document_describes_every_route_and_nothing_else() {
    let dir = temp_dir("openapi");
    let relay = relay(&dir).await;
    let answer = call(&relay.router, get("/api/v1/openapi.json")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.content_type, "application/json");
    let doc = answer.json();
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{doc}"
    );
    let routes: std::collections::BTreeSet<(String, String)> = app::route_table()
        .into_iter()
        .map(|(method, path)| (method.as_str().to_lowercase(), path))
        .collect();
    let mut documented = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in keys(item) {
            documented.insert((method, path.clone()));
        }
    }
    let missing: Vec<_> = routes.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&routes).collect();
    assert!(
        missing.is_empty(),
        "routes missing from the document: {missing:?}"
    );
    assert!(extra.is_empty(), "documented but not routed: {extra:?}");

    // The schemas have exactly the fields the API sends.
    let schemas = &doc["components"]["schemas"];
    let id = submit(&relay.router, 1.0).await;
    let record = call(&relay.router, get(&format!("/api/v1/jobs/{id}")))
        .await
        .json();
    let mut sent = keys(&record);
    sent.insert("error".into()); // Only sent for failed jobs.
                                 // Only sent once the job's data was purged.
    sent.insert("inputs_purged_ms".into());
    sent.insert("purged_ms".into());
    assert_eq!(sent, keys(&schemas["Job"]["properties"]));
    assert_eq!(
        keys(&record["progress"]),
        keys(&schemas["Progress"]["properties"])
    );
    call(&relay.router, delete(&format!("/api/v1/jobs/{id}"))).await;
    let events = call(&relay.router, get(&format!("/api/v1/jobs/{id}/events"))).await;
    let text = String::from_utf8_lossy(&events.body);
    let progress: Value = text
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .and_then(|d| serde_json::from_str(d).ok())
        .expect("a progress event");
    assert_eq!(
        keys(&progress),
        keys(&schemas["ProgressEvent"]["properties"])
    );
    let states: Vec<&str> = schemas["JobState"]["enum"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert_eq!(states, ["queued", "running", "done", "failed", "cancelled"]);

    let page = call(&relay.router, get("/api/v1/docs")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.content_type.starts_with("text/html"));
    let html = String::from_utf8_lossy(&page.body);
    assert!(html.contains("fetch(\"openapi.json\")"));
    assert!(!html.contains("https://"), "the page works offline");
}

/// Every string a reader of the document sees, with where it is.
fn prose(value: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(o) => {
            for (key, v) in o {
                let at = format!("{at}/{key}");
                match v {
                    Value::String(s) if key == "summary" || key == "description" => {
                        out.push((at, s.clone()));
                    }
                    _ => prose(v, &at, out),
                }
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                prose(v, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[tokio::test]
async fn openapi_document_is_one_a_submitter_can_start_from() {
    let dir = temp_dir("openapi-start");
    let relay = relay(&dir).await;
    let doc = call(&relay.router, get("/api/v1/openapi.json"))
        .await
        .json();

    // The key is a declared bearer scheme, required exactly where a route reads it.
    let scheme = &doc["components"]["securitySchemes"]["api_key"];
    assert_eq!(scheme["type"], "http", "{scheme}");
    assert_eq!(scheme["scheme"], "bearer", "{scheme}");
    let keyed = |path: &str, method: &str| {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is documented");
        op["security"] == json!([{"api_key": []}])
    };
    for (path, method) in [
        ("/api/v1/jobs", "post"),
        ("/api/v1/jobs", "get"),
        ("/api/v1/jobs/{id}", "get"),
        ("/api/v1/jobs/{id}", "delete"),
        ("/api/v1/jobs/{id}/result", "get"),
        ("/api/v1/account", "get"),
    ] {
        assert!(keyed(path, method), "{method} {path} needs a key");
    }
    for (path, method) in [
        ("/api/v1/kernels", "get"),
        ("/api/v1/stats", "get"),
        ("/api/v1/stats/history", "get"),
        ("/api/v1/ledger", "get"),
        ("/healthz", "get"),
    ] {
        assert!(!keyed(path, method), "{method} {path} is public");
    }

    // No Rust doc-comment syntax reaches the reader, and summaries are one line.
    let mut texts = Vec::new();
    prose(&doc, "", &mut texts);
    assert!(texts.len() > 20, "{}", texts.len());
    for (at, text) in &texts {
        for leak in ["[`", "`]", "](crate", "](Self", "///"] {
            assert!(!text.contains(leak), "{at} shows {leak:?}: {text}");
        }
        if at.ends_with("/summary") {
            let restates_route = ["`GET ", "`POST ", "`DELETE "]
                .iter()
                .any(|m| text.starts_with(m));
            assert!(!text.contains('\n') && !restates_route, "{at}: {text:?}");
        }
    }

    // The quick start's example job is one the relay takes as written.
    let intro = doc["info"]["description"].as_str().unwrap_or_default();
    assert!(
        intro.contains("## Quick start") && intro.contains("curl"),
        "{intro}"
    );
    let example = intro
        .lines()
        .find_map(|l| l.trim().strip_prefix("-d '"))
        .and_then(|l| l.strip_suffix('\''))
        .expect("a -d '…' job in the quick start");
    let job: Value = serde_json::from_str(example).expect("the example is JSON");
    let created = call(&relay.router, post_json(&job, None)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.json());

    // The page renders descriptions and lists the kernels' parameters.
    let html =
        String::from_utf8_lossy(&call(&relay.router, get("/api/v1/docs")).await.body).into_owned();
    assert!(html.contains("fetch(\"kernels\")") && html.contains("function markdown"));
}

#[tokio::test]
async fn unit_listing_pages_with_a_next_cursor() {
    let dir = temp_dir("unit-pages");
    let relay = relay(&dir).await;
    let job = json!({"kernel": "montecarlo", "params": {"samples": 1_500_000, "seed": 1}});
    let created = call(&relay.router, post_json(&job, None)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.json());
    let id = created.decode::<Job>().id;
    let total = call(&relay.router, get(&format!("/api/v1/jobs/{id}")))
        .await
        .decode::<Job>()
        .progress
        .units_total;
    assert!(total >= 5, "the job has {total} units; make it bigger");

    // The default page holds them all, and says there is no next page.
    let whole = call(&relay.router, get(&format!("/api/v1/jobs/{id}/units"))).await;
    assert_eq!(whole.status, StatusCode::OK, "{}", whole.json());
    let whole: UnitPage = whole.decode();
    assert_eq!(whole.units.len(), total as usize);
    assert_eq!(whole.next, None);

    // Pages of two follow the cursor through every unit, in order, once.
    let mut seen = Vec::new();
    let mut uri = format!("/api/v1/jobs/{id}/units?limit=2");
    let mut pages = 0;
    loop {
        let page: UnitPage = call(&relay.router, get(&uri)).await.decode();
        assert!(page.units.len() <= 2, "{page:?}");
        seen.extend(page.units.iter().map(|u| u.index));
        pages += 1;
        match page.next {
            Some(next) => {
                assert_eq!(Some(next), seen.last().copied(), "{page:?}");
                uri = format!("/api/v1/jobs/{id}/units?limit=2&after={next}");
            }
            None => break,
        }
        assert!(pages <= total, "the cursor does not advance");
    }
    assert_eq!(seen, (0..total).collect::<Vec<_>>());
    assert_eq!(pages, (total + 1) / 2);
    let first = &whole.units[0];
    assert_eq!(first.state, UnitState::Queued, "{first:?}");
    assert_eq!(first.results, 0, "{first:?}");
    assert_eq!(first.leases_out, 0, "{first:?}");
    assert!(first.valid_wallets.is_empty(), "{first:?}");

    for bad in ["limit=0", "limit=5001", "limit=many", "after=x"] {
        call(
            &relay.router,
            get(&format!("/api/v1/jobs/{id}/units?{bad}")),
        )
        .await
        .problem(
            422,
            if bad.starts_with("limit=") && bad != "limit=many" {
                Some("limit")
            } else {
                None
            },
        );
    }
}

#[tokio::test]
async fn a_jobs_unit_map_agrees_with_its_unit_listing_in_a_few_runs() {
    let dir = temp_dir("unit-map");
    let relay = relay(&dir).await;
    let job = json!({"kernel": "montecarlo", "params": {"samples": 1_500_000, "seed": 1}});
    let created = call(&relay.router, post_json(&job, None)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.json());
    let id = created.decode::<Job>().id;
    let map_of = |id| {
        let router = relay.router.clone();
        async move {
            let answer = call(&router, get(&format!("/api/v1/jobs/{id}/units/states"))).await;
            assert_eq!(answer.status, StatusCode::OK, "{}", answer.json());
            answer.decode::<starling_api::UnitStates>()
        }
    };
    let listing: UnitPage = call(&relay.router, get(&format!("/api/v1/jobs/{id}/units")))
        .await
        .decode();
    let map = map_of(id).await;
    assert!(listing.units.len() >= 5, "{}", listing.units.len());
    assert_eq!(
        map.states().collect::<Vec<_>>(),
        listing.units.iter().map(|u| u.state).collect::<Vec<_>>()
    );
    assert_eq!(map.runs.len(), 1, "every unit queued is one run: {map:?}");

    // Cancelled, every unit failed: still one run, as many units.
    call(&relay.router, delete(&format!("/api/v1/jobs/{id}"))).await;
    let cancelled = map_of(id).await;
    assert_eq!(cancelled.units(), map.units());
    assert!(
        cancelled.states().all(|s| s == UnitState::Failed),
        "{cancelled:?}"
    );

    // A job that does not exist (or is another account's) is not found.
    call(
        &relay.router,
        get(&format!(
            "/api/v1/jobs/{}/units/states",
            uuid::Uuid::new_v4()
        )),
    )
    .await
    .problem(404, None);
}

#[tokio::test]
async fn stats_history_is_public_and_covers_the_relays_minutes_so_far() {
    let dir = temp_dir("stats-history");
    let relay = relay(&dir).await;
    let answer = call(&relay.router, get("/api/v1/stats/history")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.json());
    let history: starling_api::StatsHistory = answer.decode();
    // A relay started a moment ago has one minute, the current one, with no work.
    assert_eq!(history.minutes.len(), 1, "{history:?}");
    let now = &history.minutes[0];
    assert_eq!((now.minutes_ago, now.units), (0, 0));
    assert!((1.0..=60.0).contains(&now.seconds), "{now:?}");
    // A query string is not an error, and the answer stays the same small shape.
    let answer = call(&relay.router, get("/api/v1/stats/history?minutes=100000")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.body.len() < 4_096, "{}", answer.body.len());
}
