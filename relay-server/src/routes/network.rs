//! `/api/v1/stats` and `/api/v1/leaderboard`: the network as everyone may see it.

use crate::app::AppState;
use crate::error::ApiError;
use crate::routes::openapi::ProblemDoc;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What the network looks like now.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Stats {
    /// Volunteers connected now.
    pub volunteers: usize,
    /// Results returned per second over the last `window_s` seconds (replicas and
    /// known-answer tests included).
    pub results_per_s: f64,
    /// Units settled (verified) per second over the window.
    pub units_per_s: f64,
    /// The network's aggregate speed: GFLOP of returned results per second over the window.
    pub gflops: f64,
    /// Seconds the rates average over (up to 60; less on a relay that just started).
    pub window_s: f64,
    /// Jobs per state (`queued`, `running`, `done`, `failed`, `cancelled`); states with
    /// no jobs are left out.
    pub jobs: BTreeMap<String, i64>,
    /// Units waiting for a volunteer, over all jobs.
    pub units_queued: i64,
    /// Units per kernel and state (`queued`, `leased`, `done`, `failed`): what the
    /// network works on, in aggregate. No job's id, parameters or owner is public.
    pub units_by_kernel: BTreeMap<String, BTreeMap<String, i64>>,
    /// The ledger's last sequence number: `GET /api/v1/ledger?after=` this minus N reads
    /// the newest N entries.
    pub ledger_seq: u64,
}

/// `GET /api/v1/stats`: volunteers online, the network's pace and its backlog.
#[utoipa::path(get, path = "/api/v1/stats", tag = "network", responses(
    (status = 200, description = "The network now", body = Stats),
))]
pub async fn stats(State(state): State<AppState>) -> Result<Json<Stats>, ApiError> {
    let rates = state.scheduler.throughput();
    let counts = state.scheduler.storage().counts().await?;
    let mut units_by_kernel: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for (kernel, unit_state, n) in &counts.units {
        units_by_kernel
            .entry(kernel.clone())
            .or_default()
            .insert(unit_state.clone(), *n);
    }
    Ok(Json(Stats {
        units_by_kernel,
        volunteers: state.scheduler.volunteers(),
        results_per_s: rates.results_per_s,
        units_per_s: rates.units_per_s,
        gflops: rates.gflops,
        window_s: rates.window_s,
        units_queued: counts
            .units
            .iter()
            .filter(|(_, unit_state, _)| unit_state == "queued")
            .map(|(_, _, n)| n)
            .sum(),
        jobs: counts.jobs.into_iter().collect(),
        ledger_seq: state.scheduler.storage().ledger_tip().await?,
    }))
}

/// The leaderboard's query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LeaderboardQuery {
    /// How many wallets, 1 to 100 (default 10).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

/// One wallet on the leaderboard.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Earner {
    /// 1 for the wallet that earned the most.
    pub rank: usize,
    /// The wallet's address.
    pub address: String,
    /// Credit earned for validated work, decimal credits.
    pub earned: String,
    /// The same in micro-credits.
    pub earned_micro: u64,
    /// Results of this wallet judged valid.
    pub valid_results: u64,
}

/// The leaderboard.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Leaderboard {
    /// Wallets by credit earned for validated work, most first.
    pub wallets: Vec<Earner>,
}

/// `GET /api/v1/leaderboard?limit=`: the wallets paid the most for validated work
/// (their shares of units and site shares; transfers do not count).
#[utoipa::path(get, path = "/api/v1/leaderboard", tag = "network",
    params(LeaderboardQuery),
    responses(
        (status = 200, description = "Wallets by validated credit, most first", body = Leaderboard),
        (status = 422, description = "A query parameter is invalid; `field` names it", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub async fn leaderboard(
    State(state): State<AppState>,
    query: Result<Query<LeaderboardQuery>, QueryRejection>,
) -> Result<Json<Leaderboard>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::Invalid {
        detail: e.body_text(),
        field: None,
    })?;
    let limit = match query.limit {
        None => 10,
        Some(n @ 1..=100) => n,
        Some(n) => {
            return Err(ApiError::Invalid {
                detail: format!("limit must be 1 to 100, got {n}"),
                field: Some("limit".into()),
            })
        }
    };
    let earners = state.scheduler.storage().leaderboard(limit).await?;
    Ok(Json(Leaderboard {
        wallets: earners
            .into_iter()
            .enumerate()
            .map(|(i, e)| Earner {
                rank: i + 1,
                address: e.address,
                earned: e.earned.to_string(),
                earned_micro: e.earned.0,
                valid_results: e.valid_results,
            })
            .collect(),
    }))
}
