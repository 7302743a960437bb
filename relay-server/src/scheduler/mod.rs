//! The scheduler: turns submitted jobs into leases, takes results back, requeues what
//! volunteers drop, and merges finished jobs. State lives in [`Storage`]; this module
//! holds only the policy.

pub mod session;

use crate::storage::{Completion, LeasedUnit, NewJob, PeerId, Storage, StorageError};
use starling_kernels::{Catalog, KernelError, NamedInputs};
use starling_protocol::{Assignment, JobId, LeaseId};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Tunables of the scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Target FLOPs of one work unit.
    pub unit_flops: u64,
    /// How long a volunteer has to return a unit.
    pub lease: Duration,
    /// Leases of one unit before its job fails instead of looping.
    pub max_attempts: i64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            unit_flops: 64_000_000,
            lease: Duration::from_secs(60),
            max_attempts: 8,
        }
    }
}

/// Why a job submission was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The kernel refused the parameters or inputs.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// The database failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What the relay answers to a returned result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Recorded.
    Accepted,
    /// Not recorded, with the reason told to the volunteer.
    Rejected(String),
}

/// The input blob of the job most recently leased from.
type InputCache = Arc<Mutex<Option<(JobId, Arc<Vec<u8>>)>>>;

/// The scheduler, shared by every peer session and the HTTP layer.
#[derive(Clone)]
pub struct Scheduler {
    storage: Storage,
    catalog: Arc<Catalog>,
    config: SchedulerConfig,
    work: Arc<Notify>,
    volunteers: Arc<AtomicUsize>,
    /// The last job input used to build assignments; consecutive leases almost always
    /// come from the same job, and its input can be large.
    input_cache: InputCache,
}

impl Scheduler {
    /// A scheduler over `storage`.
    pub fn new(storage: Storage, catalog: Arc<Catalog>, config: SchedulerConfig) -> Self {
        Self {
            storage,
            catalog,
            config,
            work: Arc::new(Notify::new()),
            volunteers: Arc::new(AtomicUsize::new(0)),
            input_cache: Arc::new(Mutex::new(None)),
        }
    }

    /// The kernel catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The database.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Volunteers connected now.
    pub fn volunteers(&self) -> usize {
        self.volunteers.load(Ordering::Relaxed)
    }

    /// Validates, splits and stores a job, then wakes idle volunteers.
    pub async fn submit(
        &self,
        kernel: &str,
        params: serde_json::Value,
        inputs: &NamedInputs,
    ) -> Result<JobId, SubmitError> {
        let plan = self
            .catalog
            .get(kernel)?
            .plan(&params, inputs, self.config.unit_flops)?;
        let id = JobId::from_uuid(uuid::Uuid::new_v4());
        self.storage
            .insert_job(&NewJob {
                id,
                kernel: kernel.to_owned(),
                params,
                input: plan.input,
                units: plan.units,
                flops: plan.flops,
            })
            .await?;
        self.work.notify_waiters();
        tracing::info!(job = %id, kernel, "job accepted");
        Ok(id)
    }

    async fn job_input(&self, job: JobId) -> Result<Arc<Vec<u8>>, StorageError> {
        if let Some((cached, input)) = self
            .input_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            if *cached == job {
                return Ok(input.clone());
            }
        }
        let input = Arc::new(self.storage.job_input(job).await?);
        *self.input_cache.lock().unwrap_or_else(|p| p.into_inner()) = Some((job, input.clone()));
        Ok(input)
    }

    /// Leases the next queued unit to `peer`, if any.
    pub async fn next_assignment(&self, peer: PeerId) -> Result<Option<Assignment>, StorageError> {
        let lease = LeaseId::from_uuid(uuid::Uuid::new_v4());
        let deadline = crate::storage::now_ms() + self.config.lease.as_millis() as i64;
        let Some(leased) = self.storage.lease_next(peer, lease, deadline).await? else {
            return Ok(None);
        };
        let LeasedUnit {
            job,
            kernel,
            job_params,
            unit_params,
            ..
        } = leased;
        let input = self.job_input(job).await?;
        let unit_input = self
            .catalog
            .get(&kernel)
            .and_then(|k| k.unit_input(&job_params, &input, &unit_params));
        match unit_input {
            Ok(unit_input) => {
                tracing::debug!(%job, %lease, %peer, "unit leased");
                Ok(Some(Assignment {
                    lease,
                    kernel,
                    params_json: unit_params,
                    input: unit_input,
                    deadline_ms: self.config.lease.as_millis() as u32,
                }))
            }
            Err(e) => {
                // Stored jobs were validated at submission, so this means the kernel
                // changed under a stored job: fail it rather than lease it forever.
                self.storage
                    .fail_job(job, &format!("cannot build unit input: {e}"))
                    .await?;
                Ok(None)
            }
        }
    }

    /// Takes a volunteer's result for `lease`.
    pub async fn accept_result(
        &self,
        peer: PeerId,
        lease: LeaseId,
        output: &[u8],
    ) -> Result<Verdict, StorageError> {
        let Some((kernel, unit)) = self.storage.leased_unit(lease, peer).await? else {
            return Ok(Verdict::Rejected(
                "lease is not current (expired, reissued or already answered)".into(),
            ));
        };
        let shape = self
            .catalog
            .get(&kernel)
            .and_then(|k| k.check_output(&unit, output));
        if let Err(e) = shape {
            tracing::warn!(%peer, %lease, "malformed result: {e}");
            self.storage.release_lease(lease, peer).await?;
            self.work.notify_waiters();
            return Ok(Verdict::Rejected(e.to_string()));
        }
        match self.storage.complete_lease(lease, peer, output).await? {
            Completion::Stale => Ok(Verdict::Rejected("lease is not current".into())),
            Completion::Accepted { .. } => Ok(Verdict::Accepted),
            Completion::JobComplete { job } => {
                self.merge(job).await?;
                Ok(Verdict::Accepted)
            }
        }
    }

    /// A volunteer gave up on a unit it holds: requeue it at once.
    pub async fn abandon(
        &self,
        peer: PeerId,
        lease: LeaseId,
        reason: &str,
    ) -> Result<(), StorageError> {
        if let Some((job, attempts)) = self.storage.release_lease(lease, peer).await? {
            tracing::info!(%job, %lease, attempts, "volunteer failed a unit: {reason}");
            self.fail_stuck_jobs().await?;
            self.work.notify_waiters();
        }
        Ok(())
    }

    async fn merge(&self, job: JobId) -> Result<(), StorageError> {
        let Some(record) = self.storage.job(job).await? else {
            return Ok(());
        };
        let outputs = self.storage.unit_outputs(job).await?;
        let merged = self
            .catalog
            .get(&record.kernel)
            .and_then(|k| k.merge(&record.params, &outputs));
        match merged {
            Ok(result) => {
                if self.storage.finish_job(job, &result).await? {
                    tracing::info!(%job, bytes = result.len(), "job done");
                }
            }
            Err(e) => {
                self.storage
                    .fail_job(job, &format!("merge failed: {e}"))
                    .await?
            }
        }
        Ok(())
    }

    /// A peer disconnected: its leases go back to the queue for others.
    pub async fn peer_gone(&self, peer: PeerId) -> Result<(), StorageError> {
        let released = self.storage.release_peer(peer).await?;
        if released > 0 {
            tracing::info!(%peer, released, "peer left; units requeued");
            self.fail_stuck_jobs().await?;
            self.work.notify_waiters();
        }
        Ok(())
    }

    async fn fail_stuck_jobs(&self) -> Result<(), StorageError> {
        for job in self
            .storage
            .jobs_over_attempts(self.config.max_attempts)
            .await?
        {
            let reason = format!(
                "a unit was handed out {} times without a valid result",
                self.config.max_attempts
            );
            tracing::warn!(%job, "{reason}");
            self.storage.fail_job(job, &reason).await?;
        }
        Ok(())
    }

    /// Start-up recovery: void leases of the previous process and merge jobs that were
    /// complete but not merged when it stopped.
    pub async fn recover(&self) -> Result<(), StorageError> {
        let requeued = self.storage.recover_leases().await?;
        for job in self.storage.jobs_awaiting_merge().await? {
            self.merge(job).await?;
        }
        if requeued > 0 {
            tracing::info!(requeued, "recovered leases from the previous run");
        }
        Ok(())
    }

    /// Background upkeep: requeue expired leases and fail jobs that cannot finish.
    pub fn spawn_housekeeping(&self) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                let expired = this.storage.expire_leases(crate::storage::now_ms()).await;
                match expired {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(requeued = n, "leases expired");
                        this.work.notify_waiters();
                    }
                    Err(e) => tracing::error!("lease expiry failed: {e}"),
                }
                if let Err(e) = this.fail_stuck_jobs().await {
                    tracing::error!("failing stuck jobs failed: {e}");
                }
            }
        })
    }
}
