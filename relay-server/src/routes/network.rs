//! `/api/v1/stats`, `/api/v1/stats/history` and `/api/v1/leaderboard`: the network as
//! everyone may see it.

use crate::app::AppState;
use crate::error::ApiError;
use crate::routes::extract::Query;
use crate::routes::wire;
use axum::extract::State;
use axum::Json;
use starling_api::network::LeaderboardQuery;
use starling_api::{Leaderboard, Problem, Stats, StatsHistory};

/// `GET /api/v1/stats`: volunteers online, the network's pace and its backlog.
#[utoipa::path(get, path = "/api/v1/stats", tag = "network", responses(
    (status = 200, description = "The network now", body = Stats),
))]
pub async fn stats(State(state): State<AppState>) -> Result<Json<Stats>, ApiError> {
    let counts = state.scheduler.storage().counts().await?;
    let ledger_seq = state.scheduler.storage().ledger_tip().await?;
    Ok(Json(wire::stats(
        state.scheduler.volunteers(),
        state.scheduler.throughput(),
        counts,
        ledger_seq,
    )))
}

/// `GET /api/v1/stats/history`: units verified per second and GFLOP/s, minute by minute
/// over the last hour of this relay process (kept in memory: a restart starts it afresh).
#[utoipa::path(get, path = "/api/v1/stats/history", tag = "network", responses(
    (status = 200, description = "The last hour, oldest minute first", body = StatsHistory),
))]
pub async fn stats_history(State(state): State<AppState>) -> Json<StatsHistory> {
    Json(StatsHistory {
        minutes: state
            .scheduler
            .throughput_history()
            .into_iter()
            .map(wire::minute_rates)
            .collect(),
    })
}

/// `GET /api/v1/leaderboard?limit=`: the wallets paid the most for validated work
/// (their shares of units and site shares; transfers do not count).
#[utoipa::path(get, path = "/api/v1/leaderboard", tag = "network",
    params(LeaderboardQuery),
    responses(
        (status = 200, description = "Wallets by validated credit, most first", body = Leaderboard),
        (status = 422, description = "A query parameter is invalid; `field` names it", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn leaderboard(
    State(state): State<AppState>,
    Query(query): Query<LeaderboardQuery>,
) -> Result<Json<Leaderboard>, ApiError> {
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
            .zip(1..)
            .map(|(earner, rank)| wire::earner(rank, earner))
            .collect(),
    }))
}
