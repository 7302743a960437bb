//! `GET /api/v1/jobs/{id}/events`: a job's progress as Server-Sent Events.
//!
//! The stream follows the scheduler's [`Progress`](crate::scheduler::progress::Progress)
//! feed: one reader per watched job reads its record when the scheduler changes it, and
//! every stream on that job gets the same record. Streams are capped, across the relay
//! and per account, since each holds a connection open.

use crate::app::AppState;
use crate::error::ApiError;
use crate::ledger::AccountId;
use crate::routes::auth::Submitter;
use crate::routes::jobs::owned_job;
use crate::routes::wire;
use crate::scheduler::progress::Snapshot;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use starling_api::events::names;
use starling_api::{JobState, Problem, ProgressEvent};
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

/// Event streams open now, in all and per account.
#[derive(Debug, Default)]
pub struct StreamSlots {
    open: Mutex<(usize, HashMap<Option<AccountId>, usize>)>,
}

/// One open stream's place; given back when the stream is dropped.
pub struct StreamSlot {
    slots: Arc<StreamSlots>,
    owner: Option<AccountId>,
}

impl StreamSlots {
    /// A place for `owner`'s new stream, or why there is none.
    pub fn take(
        self: &Arc<Self>,
        owner: Option<AccountId>,
        max: usize,
        max_per_account: usize,
    ) -> Result<StreamSlot, ApiError> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let (total, per_owner) = &mut *open;
        let mine = per_owner.entry(owner).or_default();
        let detail = if *total >= max {
            format!("the relay has {max} event streams open; retry shortly")
        } else if *mine >= max_per_account {
            format!(
                "this account has {max_per_account} event streams open; close one, or poll \
                 GET /api/v1/jobs/{{id}} instead"
            )
        } else {
            *total += 1;
            *mine += 1;
            return Ok(StreamSlot {
                slots: self.clone(),
                owner,
            });
        };
        if *mine == 0 {
            per_owner.remove(&owner);
        }
        Err(ApiError::TooManyStreams {
            detail,
            retry_after_secs: 5,
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|p| p.into_inner());
        let (total, per_owner) = &mut *open;
        *total = total.saturating_sub(1);
        if let Some(mine) = per_owner.get_mut(&self.owner) {
            *mine = mine.saturating_sub(1);
            if *mine == 0 {
                per_owner.remove(&self.owner);
            }
        }
    }
}

struct Watch {
    state: AppState,
    records: tokio::sync::watch::Receiver<Snapshot>,
    last: Option<ProgressEvent>,
    pending: VecDeque<Event>,
    ended: bool,
    _slot: StreamSlot,
}

fn json_event(name: &str, data: &impl serde::Serialize) -> Event {
    Event::default()
        .event(name)
        .json_data(data)
        .unwrap_or_else(|e| Event::default().event("error").data(e.to_string()))
}

impl Watch {
    /// Queues what changed in the latest record: a `progress` event, and when the job
    /// has ended, its final event (`done`, `failed` or `cancelled`) with the full record.
    fn look(&mut self) {
        let snapshot = self.records.borrow_and_update().clone();
        let job = match snapshot {
            Snapshot::Pending => return,
            Snapshot::Record(record) => wire::job(&record),
            Snapshot::Missing => {
                self.pending.push_back(
                    Event::default()
                        .event(names::ERROR)
                        .data("job no longer exists"),
                );
                self.ended = true;
                return;
            }
            Snapshot::Failed => {
                self.pending
                    .push_back(Event::default().event(names::ERROR).data("internal error"));
                self.ended = true;
                return;
            }
        };
        let now = ProgressEvent::from(&job);
        if self.last.as_ref() != Some(&now) {
            self.pending.push_back(json_event(names::PROGRESS, &now));
            self.last = Some(now);
        }
        let end = match job.state {
            JobState::Queued | JobState::Running => return,
            JobState::Done => names::DONE,
            JobState::Failed => names::FAILED,
            JobState::Cancelled => names::CANCELLED,
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
        (status = 200, description = "Server-Sent Events: `progress` (data: ProgressEvent) on every change, then `done`, `failed` or `cancelled` (data: Job); then the stream ends", content_type = "text/event-stream", body = ProgressEvent),
        (status = 401, description = "No API key (`Authorization: Bearer …`), or not a valid one", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many event streams open (the relay's or the account's limit); see Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn events(
    State(state): State<AppState>,
    Submitter(owner): Submitter,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    // A missing (or someone else's) job is a 404 now, not an event later.
    let id = owned_job(&state, owner, &id).await?;
    let slot = state.event_streams.take(
        owner,
        state.limits.max_event_streams,
        state.limits.max_event_streams_per_account,
    )?;
    let records = state
        .scheduler
        .progress()
        .watch(state.scheduler.storage(), id);
    let watch = Watch {
        state,
        records,
        last: None,
        pending: VecDeque::new(),
        ended: false,
        _slot: slot,
    };
    let stream = futures::stream::unfold(watch, |mut watch| async move {
        loop {
            if let Some(event) = watch.pending.pop_front() {
                return Some((Ok::<_, Infallible>(event), watch));
            }
            if watch.ended {
                return None;
            }
            watch.look();
            if !watch.pending.is_empty() || watch.ended {
                continue;
            }
            let shutdown = watch.state.shutdown.clone();
            tokio::select! {
                changed = watch.records.changed() => {
                    if changed.is_err() {
                        // The job's reader stopped: its last record is all there is.
                        watch.look();
                        if !watch.ended {
                            return None;
                        }
                    }
                }
                () = shutdown.wait() => return None,
            }
        }
    });
    // Proxies such as nginx buffer responses unless told not to, which would hold
    // events back until the buffer fills.
    Ok((
        [("x-accel-buffering", "no")],
        Sse::new(stream).keep_alive(KeepAlive::default()),
    ))
}
