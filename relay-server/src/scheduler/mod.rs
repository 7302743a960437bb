//! The scheduler: turns submitted jobs into leases, takes results back, requeues what
//! volunteers drop, and merges finished jobs. State lives in [`Storage`]; this module
//! holds only the policy.

pub mod caps;
pub mod latency;
pub mod probes;
pub mod progress;
pub mod reference;
pub mod throughput;

use crate::storage::{
    Comparison, Judging, LeaseContext, LeaseRequest, LeaseTerms, LeasedUnit, NewJob, PeerId,
    Recorded, ReturnedResult, Storage, StorageError,
};
use crate::validation::quorum::{Policy, Reference};
use crate::validation::{Network, NetworkRule};
use starling_api::manifest::is_content_id;
use starling_kernels::custom::CustomKernel;
use starling_kernels::{Catalog, KernelError, NamedInputs};
use starling_protocol::{Assignment, JobId, LeaseId, WalletAddress};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Tunables of the scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Target FLOPs of one work unit.
    pub unit_flops: u64,
    /// Shortest lease, whatever the unit and the volunteer.
    pub lease: Duration,
    /// Longest lease: a unit is reissued after this even on a very slow volunteer.
    pub max_lease: Duration,
    /// Wrong results, and leases lost by distinct wallets with a valid result on record,
    /// one unit may see before its job fails instead of looping (a fresh wallet's lost
    /// lease counts against that wallet only: see `storage::leases::lose_leases`). With two agreeing results needed and 40% of leases going bad (a fifth of
    /// the volunteers cheating and not yet quarantined, a fifth dropping connections), a
    /// unit sees 8 bad leases before its 2 good ones 0.37% of the time and 10 only 0.06%.
    /// Cheaters are quarantined after a few units, so such losses do not last; a unit
    /// that breaks every volunteer still fails its job after 10 leases.
    pub max_attempts: i64,
    /// Agreeing results from distinct wallets a job's units need unless the job says.
    pub default_quorum: u32,
    /// Results one unit may collect without a quorum before its job fails.
    pub max_results: u32,
    /// Fraction of leases that are known-answer tests (settled units handed out again).
    pub canary_rate: f64,
    /// Share of one core the relay spends computing known-answer units of fresh probe
    /// jobs (see [`probes`]); 0 makes none.
    pub probe_cpu_share: f64,
    /// Fresh probe units kept in stock per kernel in demand.
    pub probe_stock: usize,
    /// Caps on leases held and taken per wallet and per network.
    pub caps: caps::LeaseLimits,
    /// The slowest speed, in FLOPs per second, a lease's deadline allows for, however
    /// slow the volunteer measures (see [`Scheduler::next_assignment`]).
    pub slowest_flops_per_s: f64,
    /// Fraction of a just-trusted wallet's units still replicated when the kernel has no
    /// spot check to stand in for a replica; it falls with the wallet's error rate, to a
    /// tenth of this (see [`Reliability::audit_probability`](crate::validation::trust::Reliability::audit_probability)).
    pub audit_rate: f64,
    /// Most units one job may split into.
    pub max_units_per_job: usize,
    /// How often what verified units earned is paid out into the ledger (also when a job
    /// ends).
    pub payout_interval: Duration,
    /// How long a job with every unit settled may stay unmerged before the housekeeping
    /// takes it for one whose completion no result saw (the last units settled on two
    /// relays at once): longer than a merge under way takes to finish, which the relay
    /// that saw the job complete is running.
    pub merge_missed_after: Duration,
    /// How long an ended job's inputs are kept before they are purged.
    pub retain_inputs: Duration,
    /// How long an ended job's result (and every output behind it) is kept before it is
    /// purged.
    pub retain_results: Duration,
    /// Whether a quorum needs a wallet with a clean record on the kernel, or the relay's
    /// own reference run, behind it (see [`Policy::vet_newcomers`]).
    pub vet_newcomers: bool,
    /// Share of one core the relay may spend running kernels' CPU references for quorums
    /// of newcomers (0 turns them off: such quorums then wait for a vetted wallet).
    pub reference_cpu_share: f64,
    /// How long a result waits for the reference budget before its unit asks for one
    /// more result instead.
    pub reference_patience: Duration,
    /// How volunteers' addresses group into networks (one replica per network).
    pub networks: NetworkRule,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            unit_flops: 64_000_000,
            lease: Duration::from_secs(10),
            max_lease: Duration::from_secs(600),
            max_attempts: 10,
            default_quorum: Policy::DEFAULT.quorum,
            max_results: Policy::DEFAULT.max_results,
            canary_rate: 0.02,
            // A twentieth of a core: at the CPU reference's pace that is a few
            // known-answer units a second of the default size, against a canary rate of 2%.
            probe_cpu_share: 0.05,
            probe_stock: 8,
            caps: caps::LeaseLimits::default(),
            slowest_flops_per_s: Speed::NEWCOMER.0,
            audit_rate: 0.1,
            max_units_per_job: 100_000,
            payout_interval: Duration::from_secs(5),
            merge_missed_after: Duration::from_secs(10),
            retain_inputs: Duration::from_secs(7 * 86_400),
            retain_results: Duration::from_secs(30 * 86_400),
            vet_newcomers: true,
            reference_cpu_share: 0.25,
            reference_patience: Duration::from_secs(20),
            networks: NetworkRule::default(),
        }
    }
}

/// Why a volunteer gets no work.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Its wallet returned too many wrong results.
    #[error(
        "wallet {0} is quarantined after repeated wrong results, or for handing back \
         more units than it computed"
    )]
    Quarantined(WalletAddress),
    /// The database failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Why a job submission was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The kernel refused the parameters or inputs.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// The verification settings are out of range.
    #[error("quorum must be between 1 and 5, got {0}")]
    Quorum(u32),
    /// The job splits into more units than the relay takes.
    /// The submitter reads this; the operator's knob (`--unit-mflops`) is logged instead.
    #[error("the job splits into {units} units, over this relay's limit of {max} a job; make it smaller (fewer pixels or samples, smaller matrices)")]
    TooManyUnits {
        /// Units the job would have.
        units: usize,
        /// The limit.
        max: usize,
    },
    /// A registered kernel's units are always replicated.
    #[error("a registered kernel has no CPU reference and no spot check: its units need at least 2 agreeing wallets, not {0}")]
    SoloCustom(u32),
    /// The registered kernel was suspended.
    #[error("kernel `{id}` is suspended: {reason}")]
    Suspended {
        /// The kernel.
        id: String,
        /// Why.
        reason: String,
    },
    /// The database failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A job as a submitter orders it (see [`Scheduler::submit`]).
#[derive(Debug)]
pub struct JobOrder<'a> {
    /// Kernel id.
    pub kernel: &'a str,
    /// The kernel's parameters.
    pub params: serde_json::Value,
    /// Named inputs.
    pub inputs: &'a NamedInputs,
    /// Agreeing results per unit, where the submitter names it.
    pub quorum: Option<u32>,
    /// Who pays (and alone may see it).
    pub submitter: Option<crate::ledger::AccountId>,
    /// Most jobs the submitter may have open, this one included.
    pub max_active: Option<u64>,
    /// The retry key it claims.
    pub idempotency: Option<crate::storage::IdempotencyClaim>,
}

/// Distinct volunteers (with a record) a registered kernel's units may outlive their
/// leases on, or fail on, before the kernel is suspended: one slow or unlucky device is
/// not the kernel's fault, three are.
pub const SUSPEND_AFTER_WALLETS: i64 = 3;

/// A session's volunteer asking for a lease: who it is, where its data comes from, and
/// what it may be given.
#[derive(Debug, Clone, Copy)]
pub struct Asker {
    /// The connection.
    pub peer: PeerId,
    /// Its proved wallet.
    pub wallet: WalletAddress,
    /// The embedding site it came through, if registered.
    pub site: Option<WalletAddress>,
    /// Its measured speed.
    pub speed: Speed,
    /// The network its data comes from.
    pub network: Option<Network>,
    /// Whether units of kernels submitters registered may go to it (a GPU volunteer).
    pub custom_ok: bool,
}

/// What the relay answers to a returned result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Recorded.
    Accepted,
    /// Not recorded, with the reason told to the volunteer.
    Rejected(String),
}

/// A volunteer's measured speed: FLOPs per second from assignment to result, as the relay
/// sees it (computation plus round trip), smoothed over its recent units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Speed(f64);

impl Speed {
    /// Assumed for a volunteer with no result yet: 0.2 GFLOP/s, a CPU fallback in wasm,
    /// so that a slow newcomer's first lease is generous.
    pub const NEWCOMER: Self = Self(2e8);

    /// FLOPs per second.
    pub fn flops_per_s(self) -> f64 {
        self.0
    }

    /// After a unit of `flops` came back `elapsed` after it was sent: the new estimate
    /// weighs the last unit as much as all before it, so a volunteer that slows down
    /// (a throttled tab) gets longer leases within a unit or two.
    pub fn observe(self, flops: u64, elapsed: Duration) -> Self {
        let secs = elapsed.as_secs_f64().max(1e-3);
        let sample = (flops as f64 / secs).clamp(1e6, 1e15);
        Self((self.0 + sample) / 2.0)
    }
}

/// Something per job, kept for the [`INPUTS_KEPT`] jobs used last, most recent first.
struct RecentJobs<T>(Mutex<Vec<(JobId, Arc<T>)>>);

impl<T> Default for RecentJobs<T> {
    fn default() -> Self {
        Self(Mutex::default())
    }
}

impl<T> RecentJobs<T> {
    fn kept(&self) -> std::sync::MutexGuard<'_, Vec<(JobId, Arc<T>)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `job`'s, if kept (it becomes the most recent).
    fn get(&self, job: JobId) -> Option<Arc<T>> {
        let mut kept = self.kept();
        let at = kept.iter().position(|(cached, _)| *cached == job)?;
        let entry = kept.remove(at);
        let value = entry.1.clone();
        kept.insert(0, entry);
        Some(value)
    }

    /// Keeps `value` as `job`'s, forgetting the least recent job past the limit.
    fn put(&self, job: JobId, value: Arc<T>) {
        let mut kept = self.kept();
        kept.retain(|(cached, _)| *cached != job);
        kept.truncate(INPUTS_KEPT - 1);
        kept.insert(0, (job, value));
    }
}

/// Jobs whose input and parameters [`Scheduler`] keeps: leases mostly come from the oldest open job, but
/// known-answer leases and spot checks reach back into finished ones, and with one input
/// kept each of those read two inputs back from the database.
const INPUTS_KEPT: usize = 4;

/// The scheduler, shared by every peer session and the HTTP layer.
#[derive(Clone)]
pub struct Scheduler {
    pub(crate) storage: Storage,
    catalog: Arc<Catalog>,
    config: SchedulerConfig,
    pub(crate) work: Arc<Notify>,
    pub(crate) volunteers: Arc<AtomicUsize>,
    /// The job inputs last used to build assignments and check results, newest first
    /// (inputs can be large, and consecutive leases almost always share one).
    input_cache: Arc<RecentJobs<Vec<u8>>>,
    /// The parameters of the jobs last leased from, parsed (every lease carries its
    /// job's as text; parsing them per lease cost more than the lease's other reads).
    params_cache: Arc<RecentJobs<serde_json::Value>>,
    /// How long granting a lease takes, for `/metrics`.
    lease_latency: Arc<latency::Histogram>,
    /// Results, settled units and FLOPs of the last minute, for the network page.
    throughput: Arc<throughput::Throughput>,
    /// What each lease this process issued is for, kept until its result comes: a
    /// lease's context never changes, and reading it back from the database cost a pool
    /// query per result. Leases from before a restart, or dropped when the map is full,
    /// are read from the database.
    issued: Arc<Mutex<HashMap<LeaseId, LeaseContext>>>,
    /// Jobs' records pushed to their watchers when the scheduler changes them.
    progress: Arc<progress::Progress>,
    /// CPU time for reference runs.
    references: Arc<reference::ReferenceBudget>,
    /// Results waiting in the background for a reference run.
    deferred_references: Arc<AtomicUsize>,
    /// Leases held and taken per wallet and per network, against their caps.
    caps: Arc<caps::LeaseCaps>,
}

/// Units of at most this many FLOPs have their spot check run on the async thread that
/// received the result: Freivalds' check of a 1 MFLOP matmul unit takes tens of
/// microseconds, about what a hop to the blocking pool costs.
const INLINE_CHECK_FLOPS: u64 = 1 << 20;

/// Results that may wait in the background for a reference run at once (each holds its
/// output): past this, a quorum of newcomers waits for a vetted wallet's result instead.
const MAX_DEFERRED_REFERENCES: usize = 256;

/// How long a deferred result waits for its reference run before its unit asks for
/// another result instead.
const DEFERRED_PATIENCE: Duration = Duration::from_secs(600);

/// Most leases whose context [`Scheduler`] keeps in memory; past this the map is
/// emptied (leases that never come back would otherwise pile up).
const ISSUED_CAP: usize = 1 << 16;

impl Scheduler {
    /// A scheduler over `storage`.
    pub fn new(storage: Storage, catalog: Arc<Catalog>, config: SchedulerConfig) -> Self {
        Self {
            storage,
            catalog,
            caps: Arc::new(caps::LeaseCaps::new(config.caps)),
            work: Arc::new(Notify::new()),
            volunteers: Arc::new(AtomicUsize::new(0)),
            input_cache: Arc::default(),
            params_cache: Arc::default(),
            issued: Arc::default(),
            lease_latency: Arc::default(),
            throughput: Arc::default(),
            progress: Arc::default(),
            references: Arc::new(reference::ReferenceBudget::new(config.reference_cpu_share)),
            deferred_references: Arc::default(),
            config,
        }
    }

    /// Watchers' feed of jobs' records (see [`progress`]).
    pub fn progress(&self) -> &Arc<progress::Progress> {
        &self.progress
    }

    /// `job` changed outside the scheduler (cancelled through the API): its watchers
    /// should see it now.
    pub fn job_changed(&self, job: JobId) {
        self.progress.touched(job);
    }

    /// The kernel catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The database.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// How long granting leases has taken.
    pub fn lease_latency(&self) -> &latency::Histogram {
        &self.lease_latency
    }

    /// The network's pace over the last minute.
    pub fn throughput(&self) -> throughput::Rates {
        self.throughput.rates()
    }

    /// The network's pace minute by minute over the last hour, oldest first.
    pub fn throughput_history(&self) -> Vec<throughput::MinuteRates> {
        self.throughput.history()
    }

    /// Volunteers connected now.
    pub fn volunteers(&self) -> usize {
        self.volunteers.load(Ordering::Relaxed)
    }

    /// Validates, splits and stores a job, then wakes idle volunteers.
    /// `quorum` overrides the default number of agreeing results per unit (1 trusts
    /// every single result that passes the kernel's checks). Where the relay bills jobs,
    /// `submitter` pays: the job's price goes into escrow as it is stored.
    pub async fn submit(
        &self,
        kernel: &str,
        params: serde_json::Value,
        inputs: &NamedInputs,
        quorum: Option<u32>,
        submitter: Option<crate::ledger::AccountId>,
        max_active: Option<u64>,
    ) -> Result<JobId, SubmitError> {
        self.submit_order(JobOrder {
            kernel,
            params,
            inputs,
            quorum,
            submitter,
            max_active,
            idempotency: None,
        })
        .await
    }

    /// [`Scheduler::submit`], with all that a submission may carry.
    /// With an idempotency key that another job took first,
    /// [`StorageError::IdempotencyKeyTaken`] and nothing stored.
    pub async fn submit_order(&self, order: JobOrder<'_>) -> Result<JobId, SubmitError> {
        let JobOrder {
            kernel,
            params,
            inputs,
            quorum,
            submitter,
            max_active,
            idempotency,
        } = order;
        let quorum_explicit = quorum.is_some();
        self.ensure_kernel(kernel).await?;
        let (plan, quorum) = self.plan(kernel, &params, inputs, quorum)?;
        let id = JobId::from_uuid(uuid::Uuid::new_v4());
        self.storage
            .insert_job(&NewJob {
                id,
                kernel: kernel.to_owned(),
                params,
                input: plan.input,
                units: plan.units,
                unit_flops: plan.unit_flops,
                flops: plan.flops,
                quorum,
                quorum_explicit,
                submitter,
                max_active,
                idempotency,
            })
            .await?;
        self.work.notify_waiters();
        self.progress.touched(id);
        tracing::info!(job = %id, kernel, "job accepted");
        Ok(id)
    }

    /// What submitting this job would store: the same checks and split as
    /// [`Self::submit`], and the quorum its units would need, with nothing stored. A
    /// quote and a submission are refused by this one function, so a quote costs no more
    /// than the submission it prices.
    pub fn plan(
        &self,
        kernel: &str,
        params: &serde_json::Value,
        inputs: &NamedInputs,
        quorum: Option<u32>,
    ) -> Result<(starling_kernels::catalog::JobPlan, u32), SubmitError> {
        let custom = is_content_id(kernel);
        let quorum = match quorum {
            Some(1) if custom => return Err(SubmitError::SoloCustom(1)),
            Some(quorum) => quorum,
            // Nothing checks a registered kernel's single result: replicas always.
            None if custom => self.config.default_quorum.max(2),
            None => self.config.default_quorum,
        };
        if !(1..=5).contains(&quorum) {
            return Err(SubmitError::Quorum(quorum));
        }
        let kernel = self.catalog.get(kernel)?;
        // Counted before planning: writing out every unit of a job far over the limit
        // cost seconds (4.2 s for 131,072 render tiles in a debug build) only to refuse it.
        let units = kernel.unit_count(params, self.config.unit_flops)?;
        if units > self.config.max_units_per_job {
            return Err(SubmitError::TooManyUnits {
                units,
                max: self.config.max_units_per_job,
            });
        }
        let plan = kernel.plan(params, inputs, self.config.unit_flops)?;
        Ok((plan, quorum))
    }

    /// Makes a registered kernel (`id`, a content address) available to the catalog,
    /// loading it from the database if this process has not met it: before planning a
    /// job of it (refused while it is suspended), and before leasing or judging its
    /// units (another relay, or this one before a restart, may have taken the job).
    pub async fn ensure_kernel(&self, id: &str) -> Result<(), SubmitError> {
        if !is_content_id(id) {
            return Ok(());
        }
        let Some(stored) = self.storage.custom_kernel(id).await? else {
            return Err(KernelError::UnknownKernel(id.to_owned()).into());
        };
        if let Some(reason) = stored.suspended {
            return Err(SubmitError::Suspended {
                id: id.to_owned(),
                reason,
            });
        }
        if self.catalog.custom(id).is_none() {
            self.add_custom(stored)?;
        }
        Ok(())
    }

    /// Loads `id` into the catalog if it is a registered kernel this process lacks.
    async fn load_custom(&self, id: &str) -> Result<(), StorageError> {
        if !is_content_id(id) || self.catalog.custom(id).is_some() {
            return Ok(());
        }
        if let Some(stored) = self.storage.custom_kernel(id).await? {
            self.add_custom(stored)
                .map_err(|e| StorageError::Corrupt(format!("kernel {id}: {e}")))?;
        }
        Ok(())
    }

    fn add_custom(&self, stored: crate::storage::StoredKernel) -> Result<(), KernelError> {
        let kernel = CustomKernel::new(stored.id, stored.manifest, stored.source)?;
        self.catalog.add_custom(kernel);
        Ok(())
    }

    async fn job_input(&self, job: JobId) -> Result<Arc<Vec<u8>>, StorageError> {
        if let Some(input) = self.input_cache.get(job) {
            return Ok(input);
        }
        let input = Arc::new(self.storage.job_input(job).await?);
        self.input_cache.put(job, input.clone());
        Ok(input)
    }

    /// `job`'s parameters, parsed from `text` unless kept from an earlier lease.
    fn job_params(&self, job: JobId, text: &str) -> Result<Arc<serde_json::Value>, StorageError> {
        if let Some(params) = self.params_cache.get(job) {
            return Ok(params);
        }
        let params: Arc<serde_json::Value> = Arc::new(
            serde_json::from_str(text)
                .map_err(|e| StorageError::Corrupt(format!("job {job}'s parameters: {e}")))?,
        );
        self.params_cache.put(job, params.clone());
        Ok(params)
    }

    /// How this relay groups volunteers' addresses into networks.
    pub fn networks(&self) -> NetworkRule {
        self.config.networks
    }

    /// The caps on leases held and taken.
    pub fn caps(&self) -> &caps::LeaseCaps {
        &self.caps
    }

    /// [`Self::next_assignment`] for a session's volunteer on `network`, within the caps
    /// on leases held and taken per wallet and per network: over a cap, no lease now
    /// (`Ok(None)`, as when there is no work; the session asks again later). The lease
    /// counts against the caps until [`Self::lease_ended`], [`Self::peer_gone`] or its
    /// deadline.
    pub async fn next_capped_assignment(
        &self,
        asker: Asker,
        caps_network: caps::Network,
    ) -> Result<Option<(Assignment, u64)>, LeaseError> {
        let (peer, wallet) = (asker.peer, asker.wallet);
        let lease = LeaseId::from_uuid(uuid::Uuid::now_v7());
        let now = Instant::now();
        if let Err(refusal) = self.caps.hold(
            lease,
            peer,
            wallet,
            caps_network,
            now,
            now + self.config.max_lease,
        ) {
            tracing::debug!(%peer, %wallet, ?refusal, "no lease now: over a cap");
            return Ok(None);
        }
        let leased = self.lease(lease, asker).await;
        match &leased {
            Ok(Some((assignment, _))) => self.caps.granted(
                lease,
                now + Duration::from_millis(u64::from(assignment.deadline_ms)),
            ),
            _ => self.caps.not_granted(lease),
        }
        leased
    }

    /// `lease`, held by a session, ended: its result came, or the volunteer gave it up.
    pub fn lease_ended(&self, lease: LeaseId) {
        self.caps.ended(lease);
    }

    /// Leases the next unit to `peer` and its `wallet`, whose measured speed is `speed`
    /// and whose data comes from `network`.
    /// The lease lasts four times what that speed predicts for the unit, plus two
    /// seconds, within the configured bounds: long enough for an honest volunteer having
    /// a slow moment, short enough that a vanished one holds up its job for seconds, not
    /// minutes. A fraction of leases are known-answer tests, built exactly like real ones.
    ///
    /// The speed a deadline assumes is never below
    /// [`SchedulerConfig::slowest_flops_per_s`] (by default a wasm CPU fallback's, the
    /// slowest device the network is built for): speed is measured from how long results
    /// take, so a wallet that answers late on purpose would otherwise earn itself leases
    /// of up to `max_lease` and sit on units that long. A volunteer truly slower than
    /// that loses nothing by it: its lease expires (not held against it), its late
    /// result still counts while the unit is open, and the unit meanwhile goes to
    /// someone who can finish it, which is all the network needs.
    pub async fn next_assignment(
        &self,
        peer: PeerId,
        wallet: WalletAddress,
        site: Option<WalletAddress>,
        speed: Speed,
        network: Option<Network>,
    ) -> Result<Option<(Assignment, u64)>, LeaseError> {
        // Time-ordered: leases and results are keyed by it, and new keys landing at the
        // end of their indexes keep each commit's page writes few.
        let lease = LeaseId::from_uuid(uuid::Uuid::now_v7());
        let asker = Asker {
            peer,
            wallet,
            site,
            speed,
            network,
            custom_ok: true,
        };
        self.lease(lease, asker).await
    }

    async fn lease(
        &self,
        lease: LeaseId,
        asker: Asker,
    ) -> Result<Option<(Assignment, u64)>, LeaseError> {
        let Asker {
            peer,
            wallet,
            site,
            speed,
            network,
            custom_ok,
        } = asker;
        let started = std::time::Instant::now();
        // From memory where this process has it (a pool query per lease cost more CPU
        // than the lease's writes), not the hello's upsert.
        let (reliability, quarantined) = self.storage.standing(&wallet).await?;
        let trusted = reliability.trusted();
        if quarantined {
            return Err(LeaseError::Quarantined(wallet));
        }
        let now = crate::storage::now_ms();
        let (roll, pick, audit, draw): (f64, f64, f64, f64) = rand::random();
        let request = LeaseRequest {
            peer,
            wallet,
            site,
            network,
            draw,
            lease,
            custom_ok,
            terms: LeaseTerms {
                start_ms: now,
                min_ms: self.config.lease.as_millis() as i64,
                max_ms: self.config.max_lease.as_millis() as i64,
                slack_ms: 2_000,
                ms_per_flop: 4.0 * 1e3
                    / speed
                        .flops_per_s()
                        .max(self.config.slowest_flops_per_s)
                        .max(1.0),
            },
        };
        let mut leased = None;
        if roll < self.config.canary_rate {
            leased = self.storage.lease_canary(&request, pick).await?;
        }
        if leased.is_none() {
            let catalog = self.catalog.clone();
            let audit_rate = reliability.audit_probability(self.config.audit_rate);
            // BOINC's adaptive replication: a trusted wallet's unit needs one result when
            // the kernel's spot check stands in for the replica (or, without one, unless
            // it is audited, the less often the longer its clean record); everyone else's
            // needs the job's quorum.
            let quorum_for = move |kernel: &str, job_quorum: u32| {
                let checkable = catalog
                    .info(kernel)
                    .is_ok_and(|info| info.spot_check.is_some());
                // A registered kernel's result is never taken alone, however trusted
                // its wallet: nothing else would ever check it.
                if trusted && (checkable || audit >= audit_rate) && !is_content_id(kernel) {
                    1
                } else {
                    job_quorum
                }
            };
            leased = self.storage.lease_work(&request, quorum_for).await?;
        }
        let Some(leased) = leased else {
            return Ok(None);
        };
        self.lease_latency.observe(started.elapsed());
        self.progress.touched(leased.job);
        let LeasedUnit {
            job,
            job_created_ms,
            kernel,
            job_params,
            unit_params,
            flops,
            deadline_ms,
            lease,
            canary,
            ..
        } = leased;
        let input = self.job_input(job).await?;
        let job_params = self.job_params(job, &job_params)?;
        self.load_custom(&kernel).await?;
        let unit_input = self
            .catalog
            .get(&kernel)
            .and_then(|k| k.unit_input(&job_params, &input, &unit_params));
        match unit_input {
            Ok(unit_input) => {
                self.remember_issued(
                    lease,
                    LeaseContext {
                        job,
                        kernel: kernel.clone(),
                        job_params,
                        unit_params: unit_params.clone(),
                        wallet,
                    },
                );
                tracing::debug!(%job, %lease, %peer, canary, "unit leased");
                // A registered kernel's unit carries the kernel itself: the volunteer
                // checks it against the content address before it runs anything.
                let params_json = match self.catalog.custom(&kernel) {
                    Some(custom) => custom.assignment_params(&unit_params),
                    None => unit_params,
                };
                let assignment = Assignment {
                    lease,
                    kernel,
                    params_json,
                    input: unit_input,
                    deadline_ms: u32::try_from((deadline_ms - now).max(0)).unwrap_or(u32::MAX),
                    job_age_s: u32::try_from((now - job_created_ms).max(0) / 1000)
                        .unwrap_or(u32::MAX),
                };
                Ok(Some((assignment, flops)))
            }
            Err(e) => {
                // Stored jobs were validated at submission, so this means the kernel
                // changed under a stored job: fail it rather than lease it forever.
                self.storage
                    .fail_job(job, &format!("cannot build unit input: {e}"))
                    .await?;
                self.progress.touched(job);
                Ok(None)
            }
        }
    }

    /// Takes a result for `lease` from `wallet`, which the session's hello proved holds
    /// this connection (see `starling_protocol::channel`). A result checks out when the
    /// lease is that wallet's, its shape is right and the kernel's spot check (if any)
    /// passes; then it counts towards its unit's quorum. Results for leases that expired
    /// count too, as long as the unit is still open.
    pub async fn accept_result(
        &self,
        peer: PeerId,
        wallet: WalletAddress,
        lease: LeaseId,
        output: &[u8],
    ) -> Result<Verdict, StorageError> {
        let issued = self
            .issued
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&lease);
        let context = match issued {
            Some(context) => context,
            None => match self.storage.lease_context(lease).await? {
                Some(context) => context,
                None => return Ok(Verdict::Rejected("no such lease".into())),
            },
        };
        if context.wallet != wallet {
            return Ok(Verdict::Rejected(
                "the lease was issued to another wallet".into(),
            ));
        }
        self.load_custom(&context.kernel).await?;
        let kernel = match self.catalog.get(&context.kernel) {
            Ok(kernel) => kernel,
            Err(e) => return Ok(Verdict::Rejected(e.to_string())),
        };
        let unit_flops = kernel.unit_flops(&context.unit_params).unwrap_or(0);
        let spot_check = match kernel.check_output(&context.unit_params, output) {
            // A malformed output is as wrong as a wrong one.
            Err(_) => Some(false),
            Ok(()) => self.spot_check(&context, unit_flops, output).await?,
        };
        let (catalog, kernel_id) = (self.catalog.clone(), context.kernel.clone());
        let unit_params = context.unit_params.clone();
        let agree: Comparison = Arc::new(move |a: &[u8], b: &[u8]| {
            catalog
                .get(&kernel_id)
                .and_then(|kernel| kernel.outputs_agree(&unit_params, a, b))
                .unwrap_or(false)
        });
        let judging = Judging {
            max_results: self.config.max_results,
            vet_newcomers: self.config.vet_newcomers,
        };
        // A registered kernel has no CPU reference: a quorum of its newcomers waits for
        // an anchor (a wallet trusted over all kernels, see `decide_settle`) instead.
        let reference = if is_content_id(&context.kernel) {
            Reference::Unavailable
        } else {
            Reference::NotRun
        };
        let result = ReturnedResult {
            lease,
            wallet,
            output,
            spot_check,
        };
        let recorded = self
            .storage
            .record_result(result, judging, agree.clone(), reference)
            .await?;
        if recorded != Recorded::NeedsReference {
            return self
                .recorded(peer, wallet, lease, unit_flops, recorded)
                .await;
        }
        // Only wallets without a record agree on this unit: the relay's own run of the
        // unit decides. With the budget free, now; otherwise the check waits its turn in
        // the background and the result is recorded then (the volunteer goes on; a lease
        // that expires meanwhile still counts), unless too many already wait.
        if let Some(turn) = self.references.turn(self.config.reference_patience).await {
            let reference = self.reference(&context, turn).await;
            let recorded = self
                .storage
                .record_result(result, judging, agree, reference)
                .await?;
            return self
                .recorded(peer, wallet, lease, unit_flops, recorded)
                .await;
        }
        if self.deferred_references.fetch_add(1, Ordering::Relaxed) >= MAX_DEFERRED_REFERENCES {
            self.deferred_references.fetch_sub(1, Ordering::Relaxed);
            tracing::info!(job = %context.job, "no CPU time for a reference run: the unit asks for another result");
            let recorded = self
                .storage
                .record_result(result, judging, agree, Reference::Unavailable)
                .await?;
            return self
                .recorded(peer, wallet, lease, unit_flops, recorded)
                .await;
        }
        let this = self.clone();
        let output = output.to_vec();
        tokio::spawn(async move {
            let result = ReturnedResult {
                lease,
                wallet,
                output: &output,
                spot_check,
            };
            let deferred = async {
                let turn = this.references.turn(DEFERRED_PATIENCE).await;
                let reference = match turn {
                    Some(turn) => this.reference(&context, turn).await,
                    None => Reference::Unavailable,
                };
                let recorded = this
                    .storage
                    .record_result(result, judging, agree, reference)
                    .await?;
                this.recorded(peer, wallet, lease, unit_flops, recorded)
                    .await
            };
            if let Err(e) = deferred.await {
                tracing::error!(%lease, "recording a result after its reference run failed: {e}");
            }
            this.deferred_references.fetch_sub(1, Ordering::Relaxed);
        });
        Ok(Verdict::Accepted)
    }

    /// What a recorded result means for its volunteer and its job: merges a job whose
    /// last unit settled, wakes volunteers for units that need more results, fails jobs
    /// that cannot finish.
    async fn recorded(
        &self,
        peer: PeerId,
        wallet: WalletAddress,
        lease: LeaseId,
        unit_flops: u64,
        recorded: Recorded,
    ) -> Result<Verdict, StorageError> {
        tracing::debug!(%peer, %lease, ?recorded, "result recorded");
        match &recorded {
            Recorded::Pending { job }
            | Recorded::Valid { job, .. }
            | Recorded::Invalid { job, .. }
            | Recorded::JobFailed { job, .. } => self.progress.touched(*job),
            _ => {}
        }
        match &recorded {
            Recorded::Stale(_) => {}
            Recorded::Valid { .. } => self.throughput.record(unit_flops, true),
            _ => self.throughput.record(unit_flops, false),
        }
        Ok(match recorded {
            Recorded::Stale(why) => Verdict::Rejected(why.into()),
            // Judged with a reference (or its absence), a unit never asks for one again.
            Recorded::NeedsReference => {
                return Err(StorageError::Corrupt(format!(
                    "judging the result for {lease} asked for a reference twice"
                )))
            }
            Recorded::Pending { .. } => {
                // Replicas that disagreed put the unit back in the queue.
                self.work.notify_waiters();
                Verdict::Accepted
            }
            Recorded::Canary { passed: true } => Verdict::Accepted,
            Recorded::Valid { job, job_complete } => {
                if job_complete {
                    self.merge(job).await?;
                    self.progress.touched(job);
                }
                Verdict::Accepted
            }
            Recorded::Invalid { job, reason } => {
                tracing::warn!(%peer, %wallet, %lease, %job, "result refused: {reason}");
                self.fail_stuck_jobs().await?;
                self.work.notify_waiters();
                Verdict::Rejected(reason.into())
            }
            Recorded::Canary { passed: false } => {
                tracing::warn!(%peer, %wallet, %lease, "known-answer test failed");
                Verdict::Rejected("the result is wrong".into())
            }
            Recorded::JobFailed { job, reason } => {
                tracing::warn!(%job, "{reason}");
                Verdict::Rejected(reason)
            }
        })
    }

    /// The unit's output by the kernel's CPU reference, run on the blocking pool in the
    /// budget's `turn`; [`Reference::Unavailable`] when the run fails.
    async fn reference(&self, context: &LeaseContext, turn: reference::Turn<'_>) -> Reference {
        let input = match self.job_input(context.job).await {
            Ok(input) => input,
            Err(e) => {
                tracing::warn!(job = %context.job, "no input for a reference run: {e}");
                return Reference::Unavailable;
            }
        };
        let (catalog, context) = (self.catalog.clone(), context.clone());
        let job = context.job;
        let started = Instant::now();
        let run = tokio::task::spawn_blocking(move || {
            let kernel = catalog.get(&context.kernel)?;
            let unit_input =
                kernel.unit_input(&context.job_params, &input, &context.unit_params)?;
            kernel.run_cpu(&context.unit_params, &unit_input)
        })
        .await;
        let took = started.elapsed();
        self.references.spent(took);
        drop(turn);
        match run {
            Ok(Ok(output)) => {
                tracing::debug!(%job, ?took, "reference run");
                Reference::Output(output)
            }
            Ok(Err(e)) => {
                tracing::warn!(%job, "a reference run failed: {e}");
                Reference::Unavailable
            }
            Err(e) => {
                tracing::error!(%job, "a reference run did not finish: {e}");
                Reference::Unavailable
            }
        }
    }

    fn remember_issued(&self, lease: LeaseId, context: LeaseContext) {
        let mut issued = self.issued.lock().unwrap_or_else(|p| p.into_inner());
        if issued.len() >= ISSUED_CAP {
            issued.clear();
        }
        issued.insert(lease, context);
    }

    /// Runs the kernel's cheap check of one result (Freivalds' for matmul) where it has
    /// one, with a challenge the volunteer cannot predict: `Some(passed)`, or `None`
    /// where the kernel has no check.
    ///
    /// It runs on every result of such a kernel, off the async threads for units over
    /// [`INLINE_CHECK_FLOPS`] (`unit_flops`): for a matmul unit it costs
    /// 8 (rows k + k n + rows n) multiply-adds against the unit's 2 rows k n, and it
    /// catches a wrong result before any replica is spent on it.
    async fn spot_check(
        &self,
        context: &LeaseContext,
        unit_flops: u64,
        output: &[u8],
    ) -> Result<Option<bool>, StorageError> {
        let has_check = self
            .catalog
            .info(&context.kernel)
            .is_ok_and(|info| info.spot_check.is_some());
        if !has_check {
            return Ok(None);
        }
        let input = self.job_input(context.job).await?;
        let seed: u64 = rand::random();
        let check = move |catalog: &Catalog, context: &LeaseContext, output: &[u8]| {
            let kernel = catalog.get(&context.kernel)?;
            let unit_input =
                kernel.unit_input(&context.job_params, &input, &context.unit_params)?;
            kernel.spot_check(&context.unit_params, &unit_input, output, seed)
        };
        let verdict = if unit_flops <= INLINE_CHECK_FLOPS {
            // Handing a check of microseconds to the blocking pool cost more than the
            // check (a thread wake-up and copies of the context and output).
            Ok(check(&self.catalog, context, output))
        } else {
            let catalog = self.catalog.clone();
            let context = context.clone();
            let output = output.to_vec();
            tokio::task::spawn_blocking(move || check(&catalog, &context, &output)).await
        };
        Ok(match verdict {
            Ok(Ok(passed)) => passed,
            Ok(Err(e)) => {
                tracing::warn!("a result could not be checked: {e}");
                Some(false)
            }
            Err(e) => {
                tracing::error!("a spot check did not finish: {e}");
                Some(false)
            }
        })
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
            self.progress.touched(job);
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
    pub async fn peer_gone(&self, peer: PeerId, by_relay: bool) -> Result<(), StorageError> {
        self.caps.peer_gone(peer);
        let released = if by_relay {
            self.storage.void_peer(peer).await?
        } else {
            self.storage.release_peer(peer).await?
        };
        if released > 0 {
            tracing::info!(%peer, released, "peer left; units requeued");
            self.progress.touched_all();
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
                "no volunteer could compute a unit: {} distinct wallets with a record of \
                 valid work handed it back, or returned wrong results for it",
                self.config.max_attempts
            );
            tracing::warn!(%job, "{reason}");
            self.storage.fail_job(job, &reason).await?;
            self.progress.touched(job);
        }
        Ok(())
    }

    /// Suspends registered kernels whose units outlived their leases or failed on the
    /// devices of [`SUSPEND_AFTER_WALLETS`] distinct volunteers with a record (a kernel
    /// that hangs, loops or loses the device), and
    /// fails their jobs with the reason, which refunds what their escrow has left. The
    /// volunteers go on with other work once their devices finish or give up.
    async fn suspend_hung_kernels(&self) -> Result<(), StorageError> {
        for (kernel, wallets) in self
            .storage
            .hung_custom_kernels(SUSPEND_AFTER_WALLETS)
            .await?
        {
            let reason = format!(
                "kernel {kernel} was suspended: its units ran past their deadlines or failed \
                 on the devices of {wallets} distinct volunteers (a loop that does not end, \
                 far more work than its declared FLOPs, or a lost device)"
            );
            tracing::warn!(%kernel, "{reason}");
            for job in self.storage.suspend_kernel(&kernel, &reason).await? {
                self.storage.fail_job(job, &reason).await?;
                self.progress.touched(job);
            }
        }
        Ok(())
    }

    /// Start-up recovery: void leases of the previous process and merge jobs that were
    /// complete but not merged when it stopped.
    pub async fn recover(&self) -> Result<(), StorageError> {
        let requeued = self.storage.recover_leases().await?;
        for job in self.storage.jobs_awaiting_merge(i64::MAX).await? {
            self.merge(job).await?;
        }
        if requeued > 0 {
            tracing::info!(requeued, "recovered leases from the previous run");
        }
        Ok(())
    }

    /// Purges ended jobs' inputs and results whose retention ran out, a batch at a time.
    async fn purge_expired(&self) -> Result<(), StorageError> {
        let now = crate::storage::now_ms();
        let before = |kept: Duration| {
            now.saturating_sub(i64::try_from(kept.as_millis()).unwrap_or(i64::MAX))
        };
        let (inputs, all) = self
            .storage
            .purge_expired(
                before(self.config.retain_inputs),
                before(self.config.retain_results),
                100,
            )
            .await?;
        if inputs + all > 0 {
            tracing::info!(inputs, all, "purged job data past its retention");
        }
        Ok(())
    }

    /// Background upkeep: the relay's heartbeat (requeueing a stopped relay's leases,
    /// where relays share a database), requeue expired leases, fail jobs that cannot finish, pay out
    /// what verified units earned every [`SchedulerConfig::payout_interval`], and purge
    /// data past its retention.
    pub fn spawn_housekeeping(&self) -> tokio::task::JoinHandle<()> {
        self.spawn_following_others();
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            let mut paid_at = Instant::now();
            // Retention runs a few times per its shortest period, at most once a minute.
            let retention_every = (this.config.retain_inputs.min(this.config.retain_results) / 4)
                .clamp(Duration::from_millis(500), Duration::from_secs(60));
            let mut retained_at = Instant::now();
            loop {
                tick.tick().await;
                if retained_at.elapsed() >= retention_every {
                    retained_at = Instant::now();
                    if let Err(e) = this.purge_expired().await {
                        tracing::error!("purging data past its retention failed: {e}");
                    }
                }
                if paid_at.elapsed() >= this.config.payout_interval {
                    paid_at = Instant::now();
                    match this.storage.pay_out_all().await {
                        Ok(entries) if !entries.is_empty() => {
                            tracing::debug!(entries = entries.len(), "paid out");
                        }
                        Ok(_) => {}
                        Err(e) => tracing::error!("paying out failed: {e}"),
                    }
                }
                // Relays sharing a database take a stopped relay's leases for lost.
                match this.storage.heartbeat(crate::storage::now_ms()).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::warn!(requeued = n, "leases of a relay that stopped requeued");
                        this.progress.touched_all();
                        this.work.notify_waiters();
                    }
                    Err(e) => tracing::error!("heartbeat failed: {e}"),
                }
                let expired = this.storage.expire_leases(crate::storage::now_ms()).await;
                match expired {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(requeued = n, "leases expired");
                        this.progress.touched_all();
                        this.work.notify_waiters();
                    }
                    Err(e) => tracing::error!("lease expiry failed: {e}"),
                }
                if let Err(e) = this.fail_stuck_jobs().await {
                    tracing::error!("failing stuck jobs failed: {e}");
                }
                // Relays judge results at once: the groups that settled a job's last units
                // on two relays each read the other's progress from before, and neither
                // saw the job complete. Whichever relay looks first merges it, once the
                // job's row has been still a while (`updated_ms` lags by up to 500 ms).
                let missed =
                    i64::try_from(this.config.merge_missed_after.as_millis()).unwrap_or(i64::MAX);
                let still_since = crate::storage::now_ms().saturating_sub(missed);
                match this.storage.jobs_awaiting_merge(still_since).await {
                    Ok(jobs) => {
                        for job in jobs {
                            match this.merge(job).await {
                                Ok(()) => this.progress.touched(job),
                                Err(e) => {
                                    tracing::error!(%job, "merging a complete job failed: {e}")
                                }
                            }
                        }
                    }
                    Err(e) => tracing::error!("looking for complete jobs failed: {e}"),
                }
                if let Err(e) = this.suspend_hung_kernels().await {
                    tracing::error!("suspending hung kernels failed: {e}");
                }
            }
        })
    }
}

impl Scheduler {
    /// Passes on what other relays on the database changed: their volunteers' progress
    /// to this relay's event streams, their new jobs to this relay's idle volunteers.
    /// Ends when the storage does.
    fn spawn_following_others(&self) {
        let mut changes = self.storage.others_changes();
        let (progress, work) = (self.progress.clone(), self.work.clone());
        tokio::spawn(async move {
            loop {
                match changes.recv().await {
                    Ok(crate::storage::Changed::Jobs(jobs)) => {
                        for job in jobs {
                            progress.touched(job);
                        }
                    }
                    Ok(crate::storage::Changed::NewWork) => work.notify_waiters(),
                    Ok(crate::storage::Changed::Everything)
                    | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        progress.touched_all();
                        work.notify_waiters();
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speed_follows_measured_units_and_stays_sane() {
        let s = Speed::NEWCOMER.observe(1_000_000_000, Duration::from_secs(1));
        assert_eq!(s.flops_per_s(), 6e8, "halfway from 0.2 to 1 GFLOP/s");
        let s = s.observe(1_000_000_000, Duration::from_secs(1));
        assert_eq!(s.flops_per_s(), 8e8);
        // A zero-time or absurd report cannot make leases vanish or explode.
        let fast = Speed::NEWCOMER.observe(u64::MAX, Duration::ZERO);
        assert!(fast.flops_per_s() <= 1e15);
        let slow = Speed::NEWCOMER.observe(0, Duration::from_secs(3600));
        assert!(slow.flops_per_s() >= 1e6 / 2.0);
    }
}
