//! Bad requests get precise problem+json errors and change nothing.

use starling_api::{Job, JobState, Problem};
use starling_e2e::{Api, MatmulJob, Relay, TempDir};

async fn problem(api: &Api, body: reqwest::Body) -> anyhow::Result<(u16, String, Problem)> {
    let response = api
        .http()
        .post(format!("{}/api/v1/jobs", api.base()))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Ok((status, content_type, response.json().await?))
}

#[tokio::test]
async fn malformed_and_invalid_jobs_get_problem_json() -> anyhow::Result<()> {
    let data = TempDir::new("errors")?;
    let relay = Relay::start(data.path(), 64)?;
    let api = relay.api();

    let listed = api.client().kernels().await?.kernels;
    let ids: Vec<&str> = listed.iter().map(|k| k.id.as_str()).collect();
    assert_eq!(ids, ["matmul", "mlp", "montecarlo", "render"], "{listed:?}");
    for kernel in &listed {
        // A JSON Schema: read as the JSON it is.
        let schema = &kernel.params_schema;
        assert_eq!(schema["type"], "object", "{kernel:?}");
        assert!(
            schema["properties"]
                .as_object()
                .is_some_and(|p| !p.is_empty()),
            "every kernel documents its parameters: {kernel:?}"
        );
        assert!(kernel.version >= 1, "{kernel:?}");
        assert!(kernel.comparison.len() > 20, "{kernel:?}");
    }
    assert!(listed[0].params_schema["properties"]["m"].is_object());
    assert!(listed[0]
        .spot_check
        .as_deref()
        .is_some_and(|s| s.contains("Freivalds")));
    assert_eq!(listed[3].output_content_type, "image/png");

    let (status, ct, body) = problem(&api, "{not json".into()).await?;
    assert_eq!((status, ct.as_str()), (400, "application/problem+json"));
    assert!(body.detail.contains("not a valid job"), "{body}");

    let mut unknown = MatmulJob::random(2, 2, 2, 1).body;
    unknown.kernel = "fft".into();
    let (status, _, body) = problem(&api, serde_json::to_string(&unknown)?.into()).await?;
    assert_eq!(status, 422);
    assert_eq!(body.field.as_deref(), Some("kernel"));
    assert_eq!(body.detail, "unknown kernel `fft`");

    let mut wrong_size = MatmulJob::random(4, 4, 4, 1).body;
    wrong_size.params["n"] = 5.into();
    let (status, _, body) = problem(&api, serde_json::to_string(&wrong_size)?.into()).await?;
    assert_eq!(status, 422);
    assert_eq!(body.field.as_deref(), Some("input.b"));
    assert_eq!(
        body.detail,
        "invalid input `b`: expected 4x5 f32 = 80 bytes, got 64 bytes"
    );

    let mut out_of_range = MatmulJob::random(1, 1, 1, 1).body;
    out_of_range.params["m"] = 100_000.into();
    let (status, _, body) = problem(&api, serde_json::to_string(&out_of_range)?.into()).await?;
    assert_eq!(status, 422);
    assert_eq!(body.field.as_deref(), Some("params.m"));

    let mut bad_b64 = MatmulJob::random(1, 1, 1, 1).body;
    bad_b64.input.insert("a".into(), "%%%".into());
    let (status, _, body) = problem(&api, serde_json::to_string(&bad_b64)?.into()).await?;
    assert_eq!((status, body.field.as_deref()), (422, Some("input.a")));

    let bad_quorum = MatmulJob::random(1, 1, 1, 1).body.with_quorum(0);
    let (status, _, body) = problem(&api, serde_json::to_string(&bad_quorum)?.into()).await?;
    assert_eq!(
        (status, body.field.as_deref()),
        (422, Some("verification.quorum")),
        "{body}"
    );

    let missing = api
        .http()
        .get(format!(
            "{}/api/v1/jobs/00000000-0000-0000-0000-000000000000",
            api.base()
        ))
        .send()
        .await?;
    assert_eq!(missing.status().as_u16(), 404);
    let not_an_id = api
        .http()
        .get(format!("{}/api/v1/jobs/nope/result", api.base()))
        .send()
        .await?;
    assert_eq!(not_an_id.status().as_u16(), 404);

    // The relay still works normally after the refusals.
    let ok = api.submit(&MatmulJob::random(2, 2, 2, 3).body).await?;
    assert_eq!(api.job(&ok).await?.state, JobState::Queued);
    Ok(())
}

#[tokio::test]
async fn oversized_bodies_get_413_problem_json() -> anyhow::Result<()> {
    let data = TempDir::new("too-large")?;
    let relay = Relay::start(data.path(), 64)?;
    let api = relay.api();
    let huge = vec![b' '; 65 * 1024 * 1024];
    let (status, ct, body) = problem(&api, huge.into()).await?;
    assert_eq!((status, ct.as_str()), (413, "application/problem+json"));
    assert!(body.detail.contains("limit"), "{body}");
    Ok(())
}

#[tokio::test]
async fn clients_over_their_rate_get_429_by_address() -> anyhow::Result<()> {
    let data = TempDir::new("rate-limit")?;
    let relay = Relay::start_with(
        data.path(),
        64,
        &["--rate-limit-per-s", "0.2", "--rate-limit-burst", "3"],
    )?;
    let api = relay.api();
    let kernels = format!("{}/api/v1/kernels", api.base());
    for _ in 0..3 {
        let ok = api.http().get(&kernels).send().await?;
        assert_eq!(ok.status().as_u16(), 200);
    }
    let refused = api.http().get(&kernels).send().await?;
    assert_eq!(refused.status().as_u16(), 429);
    let retry_after = refused
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    assert_eq!(retry_after, Some(5));
    let body: Problem = refused.json().await?;
    assert_eq!(body.status, 429, "{body}");
    assert_eq!(body.kind, "/problems/rate-limited", "{body}");
    let ready = api
        .http()
        .get(format!("{}/readyz", api.base()))
        .send()
        .await?;
    assert_eq!(ready.status().as_u16(), 200, "probes are not rate limited");
    Ok(())
}

#[tokio::test]
async fn cancelled_jobs_refuse_a_second_cancel_and_their_result() -> anyhow::Result<()> {
    let data = TempDir::new("cancel")?;
    let relay = Relay::start(data.path(), 64)?;
    let api = relay.api();
    let id = api.submit(&MatmulJob::random(4, 4, 4, 2).body).await?;
    let url = format!("{}/api/v1/jobs/{id}", api.base());
    let cancelled = api.http().delete(&url).send().await?;
    assert_eq!(cancelled.status().as_u16(), 200);
    let record: Job = cancelled.json().await?;
    assert_eq!(record.state, JobState::Cancelled, "{record:?}");
    let again = api.http().delete(&url).send().await?;
    assert_eq!(again.status().as_u16(), 409);
    let body: Problem = again.json().await?;
    assert!(body.detail.contains("already cancelled"), "{body}");
    let (status, _) = api.result(&id).await?;
    assert_eq!(status, 409);
    let listed = api
        .client()
        .jobs(Some(JobState::Cancelled), 50, None)
        .await?;
    let first = listed.jobs.first().map(|job| job.id.to_string());
    assert_eq!(first.as_deref(), Some(id.as_str()), "{listed:?}");
    let bad = api
        .http()
        .get(format!("{}/api/v1/jobs?state=paused", api.base()))
        .send()
        .await?;
    assert_eq!(bad.status().as_u16(), 422);
    let body: Problem = bad.json().await?;
    assert_eq!(body.field.as_deref(), Some("state"), "{body}");
    // The leaderboard's page size is bounded the same way; the stats count this job.
    let bad = api
        .http()
        .get(format!("{}/api/v1/leaderboard?limit=1000", api.base()))
        .send()
        .await?;
    assert_eq!(bad.status().as_u16(), 422);
    let body: Problem = bad.json().await?;
    assert_eq!(body.field.as_deref(), Some("limit"), "{body}");
    let stats = api.stats().await?;
    assert_eq!(stats.jobs.get("cancelled"), Some(&1), "{stats:?}");
    Ok(())
}

#[tokio::test]
async fn jobs_need_a_valid_api_key_and_enough_credit() -> anyhow::Result<()> {
    let data = TempDir::new("auth")?;
    let relay = Relay::start(data.path(), 64)?;
    let job = starling_e2e::KernelJob::montecarlo(1_000_000, 1)?;
    let body = serde_json::to_string(&job.body)?;
    let submit = |key: Option<String>| {
        let body = body.clone();
        let url = format!("{}/api/v1/jobs", relay.url());
        async move {
            let mut request = reqwest::Client::new()
                .post(url)
                .header("content-type", "application/json")
                .body(body);
            if let Some(key) = key {
                request = request.bearer_auth(key);
            }
            let response = request.send().await?;
            let status = response.status().as_u16();
            let auth = response
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap_or("").to_owned());
            let body: serde_json::Value = response.json().await?;
            anyhow::Ok((status, auth, body))
        }
    };
    let (status, auth, body) = submit(None).await?;
    assert_eq!((status, auth.as_deref()), (401, Some("Bearer")), "{body}");
    assert!(
        body["detail"].as_str().unwrap_or("").contains("API key"),
        "{body}"
    );
    let (status, _, body) = submit(Some("stk_not-a-key".into())).await?;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["detail"], "the API key is not valid");

    // A fresh account with no credit cannot pay for a million samples.
    let created = std::process::Command::new(starling_e2e::binary("relay-server")?)
        .args(["keys", "create", "--balance", "0", "--data-dir"])
        .arg(data.path())
        .output()?;
    assert!(created.status.success(), "{created:?}");
    let poor = String::from_utf8(created.stdout)?.trim().to_owned();
    assert!(poor.starts_with("stk_"), "{poor}");
    let (status, _, body) = submit(Some(poor)).await?;
    assert_eq!(status, 402, "{body}");
    assert_eq!(body["type"], "/problems/insufficient-credit");
    assert!(
        body["detail"].as_str().unwrap_or("").contains("holds 0"),
        "{body}"
    );

    // The development key pays, and its balance went into the job's escrow.
    let (status, _, body) = submit(relay.dev_key().map(str::to_owned)).await?;
    assert_eq!(status, 201, "{body}");
    Ok(())
}

#[tokio::test]
async fn quotas_limits_and_metrics() -> anyhow::Result<()> {
    let data = TempDir::new("quotas")?;
    let relay = Relay::start_with(
        data.path(),
        1,
        &["--max-active-jobs", "1", "--max-units-per-job", "8"],
    )?;
    let api = relay.api();
    // 2048 rows at 1 MFLOP a unit is 17 units: over the limit of 8.
    let (status, _, body) = problem(
        &api,
        serde_json::to_string(&MatmulJob::random(2048, 64, 64, 1).body)?.into(),
    )
    .await?;
    assert_eq!(
        (status, body.field.as_deref()),
        (422, Some("params")),
        "{body}"
    );
    assert!(body.detail.contains("limit of 8"), "{body}");
    // One job may be active (no volunteer: it stays queued); the next is refused.
    api.submit(&MatmulJob::random(4, 4, 4, 2).body).await?;
    let response = api
        .http()
        .post(format!("{}/api/v1/jobs", api.base()))
        .json(&MatmulJob::random(4, 4, 4, 3).body)
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let body: Problem = response.json().await?;
    assert_eq!(body.kind, "/problems/quota-exceeded", "{body}");

    let metrics = api
        .http()
        .get(format!("{}/metrics", api.base()))
        .send()
        .await?
        .text()
        .await?;
    for line in [
        "starling_lease_seconds_count 0",
        "starling_ledger_micro_credits{accounts=\"submitters\"}",
        "starling_jobs{state=\"queued\"} 1",
    ] {
        assert!(metrics.contains(line), "no `{line}` in:\n{metrics}");
    }
    Ok(())
}
