//! `/api/v1/stats` and `/api/v1/leaderboard`: the network as everyone may see it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What the network looks like now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Stats {
    /// Volunteers connected now.
    pub volunteers: u64,
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

/// The query of `GET /api/v1/leaderboard`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct LeaderboardQuery {
    /// How many wallets, 1 to 100 (default 10).
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 100))]
    pub limit: Option<u32>,
}

/// One wallet on the leaderboard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Earner {
    /// 1 for the wallet that earned the most.
    pub rank: u64,
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Leaderboard {
    /// Wallets by credit earned for validated work, most first.
    pub wallets: Vec<Earner>,
}

/// `GET /api/v1/stats/history`: the network's pace minute by minute over the last hour
/// of this relay process, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatsHistory {
    /// One entry per minute, the current (partial) minute last; at most 60, fewer on a
    /// relay younger than an hour. Minutes without work are present, with zeros.
    pub minutes: Vec<MinuteRates>,
}

/// The network's pace over one minute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MinuteRates {
    /// How long ago the minute began, in whole minutes: 0 for the current one.
    pub minutes_ago: u32,
    /// Seconds of the minute that have passed (60 except for the current minute).
    pub seconds: f64,
    /// Units settled (verified) in the minute.
    pub units: u64,
    /// Units settled per second over the minute's `seconds`.
    pub units_per_s: f64,
    /// GFLOP of returned results per second over the minute's `seconds`.
    pub gflops: f64,
}
