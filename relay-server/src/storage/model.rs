//! Row types of the storage layer.

use super::sql::Row;
use super::{parse_id, StorageError};
use starling_protocol::{JobId, LeaseId, UnitId, WalletAddress};
use std::fmt;

/// A connected volunteer's channel, for the life of that connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerId(pub uuid::Uuid);

impl PeerId {
    /// A fresh id for a new connection.
    pub fn new() -> Self {
        Self(uuid::Uuid::new_v4())
    }
}

impl Default for PeerId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Where a job is in its life: the API's type, whose names the database stores too.
pub use starling_api::JobState;

/// A job state as the database stores it.
pub(crate) fn parse_job_state(s: &str) -> Result<JobState, StorageError> {
    s.parse()
        .map_err(|_| StorageError::Corrupt(format!("job state {s:?}")))
}

/// A unit state as the database stores it (the API's names).
pub(crate) fn parse_unit_state(s: &str) -> Result<starling_api::UnitState, StorageError> {
    starling_api::UnitState::ALL
        .into_iter()
        .find(|state| state.as_str() == s)
        .ok_or_else(|| StorageError::Corrupt(format!("unit state {s:?}")))
}

/// What the result endpoint needs of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobOutput {
    /// Life-cycle state.
    pub state: JobState,
    /// Kernel id (for the result's content type).
    pub kernel: String,
    /// Merged result, present once done (and until purged).
    pub result: Option<Vec<u8>>,
    /// When its data was purged, Unix ms.
    pub purged_ms: Option<i64>,
}

/// A job about to be stored.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Its id.
    pub id: JobId,
    /// Kernel id.
    pub kernel: String,
    /// Job parameters.
    pub params: serde_json::Value,
    /// Packed input blob.
    pub input: Vec<u8>,
    /// Unit parameters (JSON text), in merge order.
    pub units: Vec<String>,
    /// Each unit's FLOPs, in the same order (missing entries count as 0).
    pub unit_flops: Vec<u64>,
    /// Total FLOPs.
    pub flops: u64,
    /// Agreeing results from distinct wallets each unit needs (1 to 5).
    pub quorum: u32,
    /// Whether the submitter named the quorum: then trust never lowers it.
    pub quorum_explicit: bool,
    /// The submitter account paying for it (escrowed at insert where jobs are billed).
    pub submitter: Option<crate::ledger::AccountId>,
    /// Most jobs its submitter may have queued or running, this one included; checked
    /// in the transaction that inserts it, so concurrent submissions cannot overshoot.
    pub max_active: Option<u64>,
    /// The `Idempotency-Key` this job claims, recorded in the transaction that inserts it:
    /// of two submissions with one key (on any relays), one job is stored.
    pub idempotency: Option<IdempotencyClaim>,
}

/// An `Idempotency-Key` (scoped to its account) and the digest of the request it came
/// with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyClaim {
    /// The key, as stored.
    pub key: String,
    /// SHA-256 of the request, hex.
    pub request_sha256: String,
}

/// What a lease was for, with what is needed to check a result for it.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseContext {
    /// The unit's job.
    pub job: JobId,
    /// Kernel id.
    pub kernel: String,
    /// The job's parameters.
    pub job_params: std::sync::Arc<serde_json::Value>,
    /// The unit's parameters (JSON text).
    pub unit_params: String,
    /// The wallet the lease was issued to.
    pub wallet: WalletAddress,
}

/// A job's record as stored (`routes::wire` turns it into the API's `Job`).
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    /// Job id.
    pub id: JobId,
    /// Kernel id.
    pub kernel: String,
    /// Parameters as submitted.
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
    pub error: Option<String>,
    /// Creation time, Unix ms.
    pub created_ms: i64,
    /// Last change, Unix ms.
    pub updated_ms: i64,
    /// Where the job's escrow sits in the public ledger, with what proves it is this
    /// job's; absent for jobs from before escrows had public names.
    pub escrow: Option<EscrowProof>,
    /// When its inputs were erased (by `DELETE …/data` or their retention), Unix ms.
    pub inputs_purged_ms: Option<i64>,
    /// When all its data (inputs, outputs, result) was erased, Unix ms.
    pub purged_ms: Option<i64>,
}

/// The ledger account holding a job's escrow, and the salt that ties it to the job: the
/// account is `escrow:` and the first 16 bytes, in hex, of `SHA-256("starling escrow
/// v1\0" ‖ job id ‖ salt)`. Only the job's owner sees the salt, so the public ledger does
/// not say whose job an escrow is for unless the owner shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscrowProof {
    /// The ledger account, `escrow:<32 hex>`.
    pub account: String,
    /// The salt (32 hex characters).
    pub salt: String,
}

/// Unit counts of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Units in the job.
    pub units_total: i64,
    /// Units with an accepted output.
    pub units_done: i64,
    /// Units out on lease now.
    pub units_leased: i64,
}

impl JobRecord {
    pub(crate) fn from_row(r: &dyn Row) -> Result<Self, StorageError> {
        Ok(Self {
            id: parse_id(&r.named::<String>("id")?)?,
            kernel: r.named("kernel")?,
            params: serde_json::from_str(&r.named::<String>("params")?)
                .map_err(|e| StorageError::Corrupt(e.to_string()))?,
            state: parse_job_state(&r.named::<String>("state")?)?,
            progress: Progress {
                units_total: r.named("units_total")?,
                units_done: r.named("units_done")?,
                units_leased: r.named("units_leased")?,
            },
            flops: r.named::<i64>("flops")? as u64,
            quorum: r.named::<i64>("quorum")? as u32,
            error: r.named("error")?,
            created_ms: r.named("created_ms")?,
            updated_ms: r.named("updated_ms")?,
            escrow: match (
                r.named::<Option<String>>("escrow_account")?,
                r.named::<Option<String>>("escrow_salt")?,
            ) {
                (Some(account), Some(salt)) => Some(EscrowProof { account, salt }),
                _ => None,
            },
            inputs_purged_ms: r.named("inputs_purged_ms")?,
            purged_ms: r.named("purged_ms")?,
        })
    }
}

/// A unit just leased, with what is needed to build its assignment.
#[derive(Debug, Clone)]
pub struct LeasedUnit {
    /// When its job was submitted (ms since the Unix epoch).
    pub job_created_ms: i64,
    /// The new lease.
    pub lease: LeaseId,
    /// The unit.
    pub unit: UnitId,
    /// Its job.
    pub job: JobId,
    /// Kernel id.
    pub kernel: String,
    /// The job's parameters (JSON text, parsed by the caller, which can keep them per job).
    pub job_params: String,
    /// The unit's parameters (JSON text).
    pub unit_params: String,
    /// The unit's FLOPs.
    pub flops: u64,
    /// When the lease expires, Unix milliseconds.
    pub deadline_ms: i64,
    /// Whether this is a known-answer (canary) lease of a settled unit.
    pub canary: bool,
}
