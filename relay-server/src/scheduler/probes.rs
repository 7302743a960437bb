//! Known-answer units of fresh work (issue 19): the relay keeps a small stock of probe
//! units per kernel in demand, made from random seeds and computed by its own CPU
//! reference, so that a known-answer lease carries parameters and data no wallet was
//! ever sent (see `storage::probes`).

use super::Scheduler;
use crate::storage::{NewProbe, ProbeUnit, StorageError};
use starling_protocol::JobId;
use std::time::{Duration, Instant};

/// Units of one probe job the relay computes: several, so that each probe job's units
/// go to a few wallets (as a real job's do), few, because each costs the relay a unit's
/// CPU time.
pub const UNITS_PER_PROBE: usize = 4;

/// Why a probe was not made.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The kernel makes none, or refused its own probe (a bug in the kernel).
    #[error("kernel `{kernel}` makes no probe: {why}")]
    Kernel {
        /// The kernel.
        kernel: String,
        /// What went wrong.
        why: String,
    },
    /// The database failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl Scheduler {
    /// Makes one probe job of `kernel` from a random seed, computes
    /// [`UNITS_PER_PROBE`] of its units (drawn at random from its split, so they are not
    /// always a job's first units) with the CPU reference on the blocking pool, and
    /// stores them settled. Returns the CPU time the computation took.
    pub async fn make_probe(&self, kernel_id: &str) -> Result<Duration, ProbeError> {
        let fail = |why: String| ProbeError::Kernel {
            kernel: kernel_id.to_owned(),
            why,
        };
        let kernel = self
            .catalog
            .get(kernel_id)
            .map_err(|e| fail(e.to_string()))?;
        let (params, inputs) = kernel
            .probe(rand::random())
            .ok_or_else(|| fail("the kernel has no probe".into()))?;
        let plan = kernel
            .plan(&params, &inputs, self.config.unit_flops)
            .map_err(|e| fail(e.to_string()))?;
        let mut picked: Vec<usize> = (0..plan.units.len()).collect();
        // A partial Fisher-Yates shuffle: the first few are a uniform draw.
        for i in 0..picked.len().min(UNITS_PER_PROBE) {
            let j = i + (rand::random::<u64>() as usize) % (picked.len() - i);
            picked.swap(i, j);
        }
        picked.truncate(UNITS_PER_PROBE);
        picked.sort_unstable();
        let catalog = self.catalog.clone();
        let (kernel_name, job_params) = (kernel_id.to_owned(), params.clone());
        let (input, units, flops) = (plan.input, plan.units, plan.unit_flops);
        let computed = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let kernel = catalog.get(&kernel_name)?;
            let mut done = Vec::with_capacity(picked.len());
            for idx in picked {
                let unit = &units[idx];
                let unit_input = kernel.unit_input(&job_params, &input, unit)?;
                let output = kernel.run_cpu(unit, &unit_input)?;
                kernel.check_output(unit, &output)?;
                done.push(ProbeUnit {
                    idx,
                    params: unit.clone(),
                    flops: flops.get(idx).copied().unwrap_or(0),
                    output,
                });
            }
            Ok::<_, starling_kernels::KernelError>((done, input, started.elapsed()))
        })
        .await
        .map_err(|e| fail(format!("the computation did not finish: {e}")))?;
        let (units, input, spent) = computed.map_err(|e| fail(e.to_string()))?;
        let id = JobId::from_uuid(uuid::Uuid::new_v4());
        self.storage
            .insert_probe(NewProbe {
                id,
                kernel: kernel_id.to_owned(),
                params,
                input,
                units,
            })
            .await?;
        tracing::debug!(job = %id, kernel = kernel_id, ?spent, "probe made");
        Ok(spent)
    }

    /// Keeps [`SchedulerConfig::probe_stock`](super::SchedulerConfig::probe_stock) fresh
    /// probe units of every kernel with real work queued or running, within
    /// [`SchedulerConfig::probe_cpu_share`](super::SchedulerConfig::probe_cpu_share) of a
    /// core: after each probe it rests long enough that its computation is that share
    /// of the time. A share of 0 makes no probes (known-answer leases then re-send
    /// settled units of real jobs).
    pub fn spawn_probes(&self) -> Option<tokio::task::JoinHandle<()>> {
        let share = self.config.probe_cpu_share;
        if share <= 0.0 || self.config.canary_rate <= 0.0 {
            return None;
        }
        let this = self.clone();
        Some(tokio::spawn(async move {
            loop {
                let wanted = match this.storage.probe_stock().await {
                    Ok(stock) => stock
                        .into_iter()
                        .filter(|(_, fresh)| *fresh < this.config.probe_stock as i64)
                        // A registered kernel has no CPU reference to make probes with;
                        // asking would cost the built-ins' probes a 10 s rest each time.
                        .filter(|(kernel, _)| !starling_api::manifest::is_content_id(kernel))
                        .map(|(kernel, _)| kernel)
                        .collect(),
                    Err(e) => {
                        tracing::error!("reading the probe stock failed: {e}");
                        Vec::new()
                    }
                };
                if wanted.is_empty() {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                for kernel in wanted {
                    let rest = match this.make_probe(&kernel).await {
                        Ok(spent) => spent.mul_f64((1.0 / share.min(1.0)) - 1.0),
                        Err(e) => {
                            tracing::warn!("{e}");
                            Duration::from_secs(10)
                        }
                    };
                    tokio::time::sleep(rest.max(Duration::from_millis(10))).await;
                }
            }
        }))
    }
}
