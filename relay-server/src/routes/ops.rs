//! Operations endpoints: readiness and Prometheus metrics.

use crate::app::AppState;
use crate::error::ApiError;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use starling_api::Problem;
use std::fmt::Write as _;

/// `GET /readyz`: 200 when the database answers, 503 problem+json when it does not.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "Ready", body = String),
    (status = 503, description = "The database does not answer", body = Problem, content_type = "application/problem+json"),
))]
pub async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    state.scheduler.storage().ping().await.map_err(|e| {
        tracing::warn!("not ready: {e}");
        ApiError::Unavailable("the database does not answer".into())
    })?;
    Ok("ready")
}

/// Escapes a Prometheus label value.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `GET /metrics`: Prometheus text exposition (format 0.0.4), written by hand to keep the
/// relay free of a metrics stack for a dozen numbers.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses(
    (status = 200, description = "Prometheus text exposition 0.0.4", body = String, content_type = "text/plain"),
))]
pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let counts = state.scheduler.storage().counts().await?;
    let mut out = String::new();
    // Writing to a String cannot fail; the results are ignored for that reason.
    let _ = writeln!(
        out,
        "# HELP starling_volunteers_connected Volunteers connected now.\n\
         # TYPE starling_volunteers_connected gauge\n\
         starling_volunteers_connected {}",
        state.scheduler.volunteers()
    );
    let rates = state.scheduler.throughput();
    let _ = writeln!(
        out,
        "# HELP starling_network_gflops GFLOP of returned results per second, last minute.\n\
         # TYPE starling_network_gflops gauge\n\
         starling_network_gflops {}\n\
         # HELP starling_units_settled_per_second Units verified per second, last minute.\n\
         # TYPE starling_units_settled_per_second gauge\n\
         starling_units_settled_per_second {}",
        rates.gflops, rates.units_per_s
    );
    out.push_str("# HELP starling_jobs Jobs by state.\n# TYPE starling_jobs gauge\n");
    for job_state in ["queued", "running", "done", "failed", "cancelled"] {
        let n = counts
            .jobs
            .iter()
            .find(|(s, _)| s == job_state)
            .map_or(0, |(_, n)| *n);
        let _ = writeln!(out, "starling_jobs{{state=\"{job_state}\"}} {n}");
    }
    out.push_str(
        "# HELP starling_units Work units by kernel and state.\n# TYPE starling_units gauge\n",
    );
    for (kernel, unit_state, n) in &counts.units {
        let _ = writeln!(
            out,
            "starling_units{{kernel=\"{}\",state=\"{}\"}} {n}",
            label(kernel),
            label(unit_state)
        );
    }
    let (buckets, count, sum) = state.scheduler.lease_latency().snapshot();
    out.push_str(
        "# HELP starling_lease_seconds Time to grant a lease (pick, decide quorum, commit).\n\
         # TYPE starling_lease_seconds histogram\n",
    );
    for (bound, n) in buckets {
        let _ = writeln!(out, "starling_lease_seconds_bucket{{le=\"{bound}\"}} {n}");
    }
    let _ = writeln!(out, "starling_lease_seconds_bucket{{le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "starling_lease_seconds_sum {sum}");
    let _ = writeln!(out, "starling_lease_seconds_count {count}");
    let storage = state.scheduler.storage();
    let mut totals: std::collections::BTreeMap<&str, i128> = std::collections::BTreeMap::new();
    for (account, micro) in storage.balances().await? {
        let kind = match account {
            crate::ledger::Account::Wallet(_) => "wallets",
            crate::ledger::Account::Submitter(_) => "submitters",
            crate::ledger::Account::Escrow(_) => "escrow",
            crate::ledger::Account::Platform => "platform",
            crate::ledger::Account::Issuance => "issuance",
        };
        *totals.entry(kind).or_default() += micro;
    }
    out.push_str(
        "# HELP starling_ledger_micro_credits Ledger balances summed by kind of account (issuance is negative: all balances sum to 0).\n\
         # TYPE starling_ledger_micro_credits gauge\n",
    );
    for (kind, micro) in totals {
        let _ = writeln!(
            out,
            "starling_ledger_micro_credits{{accounts=\"{kind}\"}} {micro}"
        );
    }
    out.push_str(
        "# HELP starling_http_requests_total HTTP requests answered, by method and status.\n\
         # TYPE starling_http_requests_total counter\n",
    );
    for ((method, status), n) in state.http_metrics.snapshot() {
        let _ = writeln!(
            out,
            "starling_http_requests_total{{method=\"{}\",status=\"{status}\"}} {n}",
            label(&method)
        );
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response())
}
