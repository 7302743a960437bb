//! `GET /api/v1/jobs/{id}/events`: the payloads of a job's Server-Sent Events.
//!
//! A stream sends `progress` ([`ProgressEvent`]) on every change, then one of `done`,
//! `failed` or `cancelled` carrying the [`Job`], then ends; `error` (plain text) when
//! the relay can no longer follow the job.

use crate::jobs::{Job, JobState};
use serde::{Deserialize, Serialize};

/// Data of a `progress` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProgressEvent {
    /// Life-cycle state.
    pub state: JobState,
    /// Units in the job.
    pub units_total: i64,
    /// Units with an accepted output.
    pub units_done: i64,
    /// Units out on lease now.
    pub units_leased: i64,
    /// Total FLOPs of the job.
    pub flops: u64,
    /// Last change, Unix ms.
    pub updated_ms: i64,
}

impl From<&Job> for ProgressEvent {
    fn from(job: &Job) -> Self {
        Self {
            state: job.state,
            units_total: job.progress.units_total,
            units_done: job.progress.units_done,
            units_leased: job.progress.units_leased,
            flops: job.flops,
            updated_ms: job.updated_ms,
        }
    }
}

/// Event names on the stream.
pub mod names {
    /// A [`super::ProgressEvent`].
    pub const PROGRESS: &str = "progress";
    /// The job is done; data is the job.
    pub const DONE: &str = "done";
    /// The job failed; data is the job.
    pub const FAILED: &str = "failed";
    /// The job was cancelled; data is the job.
    pub const CANCELLED: &str = "cancelled";
    /// The relay cannot follow the job any more; data is plain text.
    pub const ERROR: &str = "error";
}

/// One event of a job's stream, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum JobEvent {
    /// The job changed.
    Progress(ProgressEvent),
    /// The job ended (done, failed or cancelled: see its `state`); the stream ends.
    Ended(Box<Job>),
    /// The relay cannot follow the job (it vanished, or the relay failed); the stream ends.
    Error(String),
}

/// An event that is not one a job stream sends, or whose data does not decode.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// An event name the stream does not use.
    #[error("unknown event `{0}`")]
    UnknownName(String),
    /// The data is not what the event's name promises.
    #[error("event `{name}`: {source}")]
    Data {
        /// The event's name.
        name: String,
        /// Why it did not decode.
        source: serde_json::Error,
    },
}

impl JobEvent {
    /// Decodes an event from its name and data.
    pub fn parse(name: &str, data: &str) -> Result<Self, EventError> {
        let decode_error = |source| EventError::Data {
            name: name.to_owned(),
            source,
        };
        match name {
            names::PROGRESS => serde_json::from_str(data)
                .map(Self::Progress)
                .map_err(decode_error),
            names::DONE | names::FAILED | names::CANCELLED => serde_json::from_str(data)
                .map(|job| Self::Ended(Box::new(job)))
                .map_err(decode_error),
            names::ERROR => Ok(Self::Error(data.to_owned())),
            other => Err(EventError::UnknownName(other.to_owned())),
        }
    }

    /// The event's name on the stream.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Progress(_) => names::PROGRESS,
            Self::Ended(job) => match job.state {
                JobState::Failed => names::FAILED,
                JobState::Cancelled => names::CANCELLED,
                _ => names::DONE,
            },
            Self::Error(_) => names::ERROR,
        }
    }
}
