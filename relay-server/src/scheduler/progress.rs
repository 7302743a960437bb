//! Jobs' records pushed to whoever watches them (event streams), read once per change
//! for all of a job's watchers instead of polled by each.
//!
//! Why: each event stream used to read its job every 200 ms, so a thousand idle watchers
//! cost five thousand queries a second. Now the scheduler announces which job it touched
//! ([`Progress::touched`]); one task per watched job reads that job's record at most every
//! [`COALESCE`] after a change (and every [`FALLBACK`] regardless, in case a change went
//! unannounced) and hands it to every watcher through a `watch` channel.

use crate::storage::{JobRecord, Storage};
use starling_protocol::JobId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// How long a job's reader waits after an announced change before reading, so a burst of
/// changes (a volunteer's results) costs one read.
pub const COALESCE: Duration = Duration::from_millis(200);

/// How often a watched job is read with no change announced: a change made without
/// [`Progress::touched`] (none is known) shows within this.
pub const FALLBACK: Duration = Duration::from_secs(5);

/// What a job's watchers see.
#[derive(Debug, Clone)]
pub enum Snapshot {
    /// Not read yet.
    Pending,
    /// The job's record as last read.
    Record(Arc<JobRecord>),
    /// The job no longer exists.
    Missing,
    /// Reading it failed (logged); watchers should give up.
    Failed,
}

/// A change to announce.
#[derive(Debug, Clone, Copy)]
enum Change {
    Job(JobId),
    /// Leases of many jobs changed at once (a peer left, leases expired).
    All,
}

/// The hub: announcements in, one reader per watched job, records out.
pub struct Progress {
    changes: broadcast::Sender<Change>,
    watched: Mutex<HashMap<JobId, watch::Sender<Snapshot>>>,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            // Readers that fall behind treat the gap as "everything changed".
            changes: broadcast::channel(1024).0,
            watched: Mutex::default(),
        }
    }
}

impl Progress {
    /// Announces that `job`'s progress or state may have changed.
    pub fn touched(&self, job: JobId) {
        // No receiver means no job is watched: nothing to do.
        let _ = self.changes.send(Change::Job(job));
    }

    /// Announces that any job's progress may have changed.
    pub fn touched_all(&self) {
        let _ = self.changes.send(Change::All);
    }

    fn watched(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, watch::Sender<Snapshot>>> {
        self.watched.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `job`'s record as it changes, starting a reader for it unless one runs.
    pub fn watch(self: &Arc<Self>, storage: &Storage, job: JobId) -> watch::Receiver<Snapshot> {
        let mut watched = self.watched();
        if let Some(sender) = watched.get(&job) {
            return sender.subscribe();
        }
        let (sender, receiver) = watch::channel(Snapshot::Pending);
        watched.insert(job, sender.clone());
        // Subscribed before the first read, so no change after it is missed.
        let changes = self.changes.subscribe();
        tokio::spawn(read_job(
            self.clone(),
            storage.clone(),
            job,
            sender,
            changes,
        ));
        receiver
    }

    /// Jobs with a reader now (for tests and metrics).
    pub fn readers(&self) -> usize {
        self.watched().len()
    }
}

/// One watched job's reader: reads on announced changes and every [`FALLBACK`], until the
/// job ends or nobody watches it.
async fn read_job(
    hub: Arc<Progress>,
    storage: Storage,
    job: JobId,
    sender: watch::Sender<Snapshot>,
    mut changes: broadcast::Receiver<Change>,
) {
    loop {
        let snapshot = match storage.job(job).await {
            Ok(Some(record)) => Snapshot::Record(Arc::new(record)),
            Ok(None) => Snapshot::Missing,
            Err(e) => {
                tracing::warn!(%job, "cannot read a watched job: {e}");
                Snapshot::Failed
            }
        };
        let last = match &snapshot {
            Snapshot::Record(record) => !matches!(
                record.state,
                crate::storage::JobState::Queued | crate::storage::JobState::Running
            ),
            _ => true,
        };
        sender.send_replace(snapshot);
        if last {
            break;
        }
        // Waits for an announcement about this job, the fallback, or the last watcher.
        let fallback = tokio::time::sleep(FALLBACK);
        tokio::pin!(fallback);
        loop {
            tokio::select! {
                change = changes.recv() => match change {
                    Ok(Change::Job(changed)) if changed != job => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                    // This job, all jobs, or announcements missed.
                    _ => break,
                },
                () = &mut fallback => break,
                () = sender.closed() => {
                    let mut watched = hub.watched();
                    // Under the lock, so a watcher arriving now either got this sender
                    // (and the reader goes on) or will start a new reader.
                    if sender.receiver_count() == 0 {
                        watched.remove(&job);
                        return;
                    }
                }
            }
        }
        tokio::time::sleep(COALESCE).await;
        // Announcements during the pause are covered by the read that follows.
        changes = changes.resubscribe();
    }
    hub.watched().remove(&job);
}
