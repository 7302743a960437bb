//! `GET /api/v1/jobs/{id}/events`: a job's progress as Server-Sent Events.
//!
//! The stream polls the job's record rather than hooking into the scheduler: progress
//! changes a few times a second at most, a poll is one indexed query, and the scheduler
//! stays unaware of who is watching.

use crate::app::AppState;
use crate::error::ApiError;
use crate::routes::auth::Submitter;
use crate::routes::jobs::owned_job;
use crate::routes::openapi::{ProblemDoc, ProgressEventDoc};
use crate::storage::{JobRecord, JobState};
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use serde_json::json;
use starling_protocol::JobId;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

/// How often the job record is read.
pub const POLL: Duration = Duration::from_millis(200);

struct Watch {
    state: AppState,
    id: JobId,
    last: Option<serde_json::Value>,
    pending: VecDeque<Event>,
    ended: bool,
}

fn progress(job: &JobRecord) -> serde_json::Value {
    json!({
        "state": job.state,
        "units_total": job.progress.units_total,
        "units_done": job.progress.units_done,
        "units_leased": job.progress.units_leased,
        "flops": job.flops,
        "updated_ms": job.updated_ms,
    })
}

fn json_event(name: &str, data: &impl serde::Serialize) -> Event {
    Event::default()
        .event(name)
        .json_data(data)
        .unwrap_or_else(|e| Event::default().event("error").data(e.to_string()))
}

impl Watch {
    /// Reads the job once and queues what changed: a `progress` event, and when the job
    /// has ended, its final event (`done`, `failed` or `cancelled`) with the full record.
    async fn poll(&mut self) {
        let job = match self.state.scheduler.storage().job(self.id).await {
            Ok(Some(job)) => job,
            Ok(None) => {
                self.pending
                    .push_back(Event::default().event("error").data("job no longer exists"));
                self.ended = true;
                return;
            }
            Err(e) => {
                tracing::warn!(job = %self.id, "event stream cannot read the job: {e}");
                self.pending
                    .push_back(Event::default().event("error").data("internal error"));
                self.ended = true;
                return;
            }
        };
        let now = progress(&job);
        if self.last.as_ref() != Some(&now) {
            self.pending.push_back(json_event("progress", &now));
            self.last = Some(now);
        }
        let end = match job.state {
            JobState::Queued | JobState::Running => return,
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        };
        self.pending.push_back(json_event(end, &job));
        self.ended = true;
    }
}

/// `GET /api/v1/jobs/{id}/events`: `progress` events on every change, then one of
/// `done`, `failed` or `cancelled` carrying the job record, then the stream ends.
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}/events",
    tag = "jobs",
    params(("id" = String, Path, format = Uuid, description = "Job id")),
    responses(
        (status = 200, description = "Server-Sent Events: `progress` (data: ProgressEvent) on every change, then `done`, `failed` or `cancelled` (data: JobRecord); then the stream ends", content_type = "text/event-stream", body = ProgressEventDoc),
        (status = 404, description = "No such job", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub async fn events(
    State(state): State<AppState>,
    Submitter(owner): Submitter,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    // A missing (or someone else's) job is a 404 now, not an event later.
    let id = owned_job(&state, owner, &id).await?;
    let watch = Watch {
        state,
        id,
        last: None,
        pending: VecDeque::new(),
        ended: false,
    };
    let stream = futures::stream::unfold(watch, |mut watch| async move {
        loop {
            if let Some(event) = watch.pending.pop_front() {
                return Some((Ok::<_, Infallible>(event), watch));
            }
            if watch.ended {
                return None;
            }
            if watch.last.is_some() {
                let shutdown = watch.state.shutdown.clone();
                tokio::select! {
                    () = tokio::time::sleep(POLL) => {}
                    () = shutdown.wait() => return None,
                }
            }
            watch.poll().await;
        }
    });
    // Proxies such as nginx buffer responses unless told not to, which would hold
    // events back until the buffer fills.
    Ok((
        [("x-accel-buffering", "no")],
        Sse::new(stream).keep_alive(KeepAlive::default()),
    ))
}
