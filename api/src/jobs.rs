//! `/api/v1/jobs`: submit, list, follow and cancel jobs, list their units.

use serde::{Deserialize, Serialize};
use starling_protocol::JobId;
use std::collections::BTreeMap;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Accepted; no unit handed out yet.
    Queued,
    /// Some units handed out or done.
    Running,
    /// Every unit done and merged; the result is available.
    Done,
    /// Gave up; `error` says why.
    Failed,
    /// Cancelled by its submitter.
    Cancelled,
}

impl JobState {
    /// Every state, in life-cycle order.
    pub const ALL: [Self; 5] = [
        Self::Queued,
        Self::Running,
        Self::Done,
        Self::Failed,
        Self::Cancelled,
    ];

    /// The name on the wire (and in the relay's database).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Done => "done",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether the job can change no more (done, failed or cancelled).
    pub fn ended(self) -> bool {
        matches!(self, Self::Done | Self::Failed | Self::Cancelled)
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad`, not `write_str`: tables align states with `{:<9}`.
        f.pad(self.as_str())
    }
}

/// A name that is not a job state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a job state (queued, running, done, failed, cancelled)")]
pub struct UnknownState(pub String);

impl std::str::FromStr for JobState {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

/// Unit counts of a job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Progress {
    /// Units in the job.
    pub units_total: i64,
    /// Units with an accepted output.
    pub units_done: i64,
    /// Units out on lease now.
    pub units_leased: i64,
}

/// The ledger account holding a job's escrow, and the salt that ties it to the job: the
/// account is `escrow:` and the first 16 bytes, in hex, of `SHA-256("starling escrow
/// v1\0" ‖ job id ‖ salt)`. Only the job's owner sees the salt, so the public ledger does
/// not say whose job an escrow is for unless the owner shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EscrowProof {
    /// The ledger account, `escrow:<32 hex>`.
    pub account: String,
    /// The salt (32 hex characters).
    pub salt: String,
}

/// A job as the API shows it (to its owner only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Job {
    /// Job id.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
    pub id: JobId,
    /// Kernel id.
    pub kernel: String,
    /// Parameters as submitted.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub params: serde_json::Value,
    /// Life-cycle state.
    pub state: JobState,
    /// Unit counts.
    pub progress: Progress,
    /// Total FLOPs.
    pub flops: u64,
    /// Agreeing results from distinct wallets each unit needs.
    pub quorum: u32,
    /// Why the job failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Creation time, Unix ms.
    pub created_ms: i64,
    /// Last change, Unix ms.
    pub updated_ms: i64,
    /// Where the job's escrow sits in the public ledger, with what proves it is this
    /// job's; absent for jobs from before escrows had public names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escrow: Option<EscrowProof>,
    /// When its inputs were erased (by `DELETE …/data` or their retention), Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs_purged_ms: Option<i64>,
    /// When all its data (inputs, outputs, result) was erased, Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purged_ms: Option<i64>,
}

/// Body of `POST /api/v1/jobs` (the JSON form; the multipart form is [`MultipartJob`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SubmitJob {
    /// Kernel id from `GET /api/v1/kernels`.
    pub kernel: String,
    /// Kernel parameters, checked against the kernel's schema.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub params: serde_json::Value,
    /// Named inputs, each base64 (standard alphabet, padded); absent for kernels that
    /// take none (`render`, `montecarlo`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub input: BTreeMap<String, String>,
    /// How units are verified; the relay's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
}

impl SubmitJob {
    /// A job of `kernel` with these parameters, no inputs and the relay's verification.
    pub fn new(kernel: impl Into<String>, params: serde_json::Value) -> Self {
        Self {
            kernel: kernel.into(),
            params,
            input: BTreeMap::new(),
            verification: None,
        }
    }

    /// The same job asking for `quorum` agreeing results per unit.
    pub fn with_quorum(mut self, quorum: u32) -> Self {
        self.verification = Some(Verification { quorum });
        self
    }
}

/// A job's verification settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Verification {
    /// Agreeing results from distinct wallets each unit needs, 1 to 5. With 1, a single
    /// result stands once it passes the kernel's checks: cheaper, and only as safe as
    /// those checks (and the known-answer tests that catch lying wallets).
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 5))]
    pub quorum: u32,
}

/// A `multipart/form-data` submission: a `job` part, and every other part is the raw
/// bytes of the input it is named after (`a`, `b`, `weights`…).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MultipartJob {
    /// JSON `{"kernel": …, "params": …}` (an `input` object of base64 is also accepted).
    pub job: String,
}

/// The header a submitter sets to make retries of `POST /api/v1/jobs` safe.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Jobs per page of `GET /api/v1/jobs` unless `limit` says otherwise.
pub const DEFAULT_PAGE: u32 = 50;
/// The largest `limit` of `GET /api/v1/jobs`.
pub const MAX_PAGE: u32 = 500;

/// A page of `GET /api/v1/jobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobList {
    /// Jobs, newest first.
    pub jobs: Vec<Job>,
    /// Cursor for the next page (pass as `cursor`); null on the last page.
    pub next: Option<String>,
}

/// `GET /api/v1/jobs/{id}/units/states`: every unit's state in unit order, as runs of
/// units in one state. Units settle roughly in order, so a running job's map is a few
/// runs: a few hundred bytes for 100,000 units, where the unit listing is megabytes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UnitStates {
    /// Consecutive units in one state, first unit first; the counts add up to the job's
    /// units.
    pub runs: Vec<UnitRun>,
}

/// Consecutive units in one state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UnitRun {
    /// Their state.
    pub state: UnitState,
    /// How many, at least 1.
    pub count: u64,
}

impl UnitStates {
    /// Appends one unit, the next in unit order.
    pub fn push(&mut self, state: UnitState) {
        match self.runs.last_mut() {
            Some(run) if run.state == state => run.count += 1,
            _ => self.runs.push(UnitRun { state, count: 1 }),
        }
    }

    /// How many units the runs cover.
    pub fn units(&self) -> u64 {
        self.runs.iter().map(|run| run.count).sum()
    }

    /// Each unit's state, in unit order.
    pub fn states(&self) -> impl Iterator<Item = UnitState> + '_ {
        self.runs
            .iter()
            .flat_map(|run| std::iter::repeat_n(run.state, run.count as usize))
    }
}

impl FromIterator<UnitState> for UnitStates {
    fn from_iter<I: IntoIterator<Item = UnitState>>(states: I) -> Self {
        let mut map = Self::default();
        for state in states {
            map.push(state);
        }
        map
    }
}

/// Where a unit is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum UnitState {
    /// Waiting for (more) volunteers.
    Queued,
    /// As many leases and pending results as it wants.
    Leased,
    /// Settled: a quorum agreed.
    Done,
    /// Gave up (its job failed or was cancelled).
    Failed,
}

impl UnitState {
    /// Every state.
    pub const ALL: [Self; 4] = [Self::Queued, Self::Leased, Self::Done, Self::Failed];

    /// The name on the wire (and in the relay's database).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Leased => "leased",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }
}

/// Units listed per page of `GET /api/v1/jobs/{id}/units` unless `limit` says.
pub const UNITS_PAGE: u32 = 1000;
/// Most units one page lists.
pub const UNITS_PAGE_MAX: u32 = 5000;

/// Which page of a job's units.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
pub struct UnitsQuery {
    /// List units whose index is greater than this: the `next` of the previous page
    /// (from the first unit when absent).
    pub after: Option<i64>,
    /// Units on the page (default 1000, at most 5000).
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 5000))]
    pub limit: Option<u32>,
}

/// One unit of a job: its state and who computed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UnitSummary {
    /// Position in the job, from 0.
    pub index: i64,
    /// Life-cycle state.
    pub state: UnitState,
    /// Results that came back, judged or not.
    pub results: i64,
    /// Wallets whose results were judged valid, in the order they came.
    pub valid_wallets: Vec<String>,
    /// Leases out now.
    pub leases_out: i64,
}

/// A page of `GET /api/v1/jobs/{id}/units`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UnitPage {
    /// Units in index order.
    pub units: Vec<UnitSummary>,
    /// Pass as `after` for the following page; null on the last page.
    pub next: Option<i64>,
}

/// `POST /api/v1/jobs/quote`: what a job would be, before it is submitted. The body is a
/// submission's ([`SubmitJob`], or its multipart form); the relay checks and splits it as
/// it would on submit, and stores nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Quote {
    /// Units the job would be split into.
    pub units: u64,
    /// Total FLOPs of the job (one replica of each unit).
    pub flops: u64,
    /// Agreeing results from distinct wallets each unit would need.
    pub quorum: u32,
    /// What the job would cost, in decimal credits (`0` where this relay bills no jobs).
    pub price: String,
    /// The same in micro-credits.
    pub price_micro: u64,
    /// Seconds the network would take at its recent pace (every replica counted); absent
    /// while it has computed nothing lately.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_s: Option<f64>,
    /// Volunteers connected now.
    pub volunteers: u64,
}

/// Most bytes of unit output one page of `GET /api/v1/jobs/{id}/units/outputs` carries
/// (before base64), past its first unit: a page always holds at least one.
pub const OUTPUTS_PAGE_BYTES: usize = 1024 * 1024;
/// Most units one page of `GET /api/v1/jobs/{id}/units/outputs` carries.
pub const OUTPUTS_PAGE_UNITS: u32 = 5000;

/// Which settled units' outputs to read: those with an index in `from..to`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct OutputsQuery {
    /// First unit index (0 when absent).
    #[cfg_attr(feature = "openapi", param(minimum = 0))]
    pub from: Option<i64>,
    /// One past the last unit index (the job's end when absent).
    #[cfg_attr(feature = "openapi", param(minimum = 0))]
    pub to: Option<i64>,
}

/// A page of `GET /api/v1/jobs/{id}/units/outputs`: the settled units' outputs in the
/// range asked, in unit order; units not settled yet are left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UnitOutputs {
    /// Settled units and their outputs.
    pub outputs: Vec<UnitOutput>,
    /// Where the page stopped at its size cap: pass it as `from` for the rest of the
    /// range; null when the range is covered.
    pub next: Option<i64>,
}

/// One settled unit's output, the bytes the volunteers agreed on (a render tile's linear
/// RGB as f32 LE, row-major).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UnitOutput {
    /// Position in the job, from 0.
    pub index: i64,
    /// The output, base64 (standard alphabet, padded).
    pub output: String,
}
