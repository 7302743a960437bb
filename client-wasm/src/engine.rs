//! Runs work units: on the GPU when an adapter exists, else on the CPU reference (in the
//! browser, on a Web Worker so the page never freezes).

use crate::platform;
use futures::future::LocalBoxFuture;
use starling_api::manifest::is_content_id;
use starling_kernels::catalog::RunError;
use starling_kernels::custom::CustomKernel;
use starling_kernels::matmul::tune::{self, MatmulShader};
use starling_kernels::matmul::Matmul;
use starling_kernels::{volunteer, Gpu, KernelError, UnitSpec};
use starling_protocol::{Assignment, DeviceInfo, LeaseId};
use std::sync::{Mutex, MutexGuard};

/// Why a unit could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum ComputeError {
    /// The kernel refused the unit, or the GPU failed.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The browser's CPU worker failed (its message says how).
    #[error("{0}")]
    Worker(String),
    /// No GPU, no CPU worker, and this page does not run units on its own thread.
    #[error("no GPU and no CPU worker: this page computes nothing on its own thread")]
    NoCpu,
    /// A kernel a submitter registered, and no GPU (such kernels never run on the CPU)
    /// or no code for them here (the widget).
    #[error("kernel {0} is a submitter's own: it runs only on a GPU of a volunteer that runs registered kernels, not here")]
    GpuOnly(String),
}

/// A unit's CPU reference run on the calling thread: `(kernel, unit, input)` to output.
pub type CpuReference = fn(&str, &str, &[u8]) -> Result<Vec<u8>, KernelError>;

/// The kernels' CPU references, for [`Engine::with_cpu_on_page`]. A browser bundle that
/// never names it links none of them.
pub const CPU_REFERENCE: CpuReference = volunteer::run_cpu;

/// Natively the CPU reference runs on the volunteer's own thread; in a browser only where
/// the page opts in.
#[cfg(not(target_arch = "wasm32"))]
const CPU_HERE: Option<CpuReference> = Some(CPU_REFERENCE);
#[cfg(target_arch = "wasm32")]
const CPU_HERE: Option<CpuReference> = None;

/// Running units of kernels submitters registered: on the GPU only, each unit checked
/// against its kernel's content address. A value of its own, like [`CpuReference`], so
/// a browser bundle that never names [`CUSTOM_KERNELS`] (the widget) links none of it.
#[derive(Clone, Copy)]
pub struct CustomKernels {
    run: CustomRun,
    flops: fn(&Assignment) -> u64,
}

/// Runs one unit of a registered kernel on the GPU.
type CustomRun =
    for<'a> fn(&'a Gpu, &'a Assignment) -> LocalBoxFuture<'a, Result<Vec<u8>, ComputeError>>;

/// Registered kernels, for [`Engine::with_custom_kernels`].
pub const CUSTOM_KERNELS: CustomKernels = CustomKernels {
    run: |gpu, a| {
        Box::pin(async move {
            let (kernel, unit) =
                CustomKernel::from_assignment(&a.kernel, &a.params_json).map_err(RunError::from)?;
            Ok(kernel.run(gpu, &unit, &a.input).await?)
        })
    },
    flops: |a| {
        CustomKernel::from_assignment(&a.kernel, &a.params_json)
            .and_then(|(kernel, unit)| starling_kernels::Kernel::unit_flops(&kernel, &unit))
            .unwrap_or(0)
    },
};

/// Natively every volunteer runs registered kernels (unless told `--builtin-only`); in a
/// browser only where the page opts in.
#[cfg(not(target_arch = "wasm32"))]
const CUSTOM_HERE: Option<CustomKernels> = Some(CUSTOM_KERNELS);
#[cfg(target_arch = "wasm32")]
const CUSTOM_HERE: Option<CustomKernels> = None;

/// The device this volunteer computes on.
pub struct Engine {
    gpu: Option<Gpu>,
    gpu_error: Option<String>,
    /// The CPU reference on the calling thread, where a unit may run there: natively
    /// always; in a browser only if the page asked ([`Engine::with_cpu_on_page`]).
    cpu_here: Option<CpuReference>,
    /// Where set (browsers), CPU units run there instead of on the calling thread.
    #[cfg(target_arch = "wasm32")]
    cpu_worker: Option<crate::platform::cpu_worker::CpuWorker>,
    /// Registered kernels, where this engine runs them (see [`CustomKernels`]).
    custom: Option<CustomKernels>,
    /// Choosing the matmul shader by a trial, where this engine does (see
    /// [`MatmulTrials`]); elsewhere matmul runs the scalar shader.
    matmul_trials: Option<MatmulTrials>,
    /// Which matmul shader this device runs, and how far the choice has got.
    matmul: Mutex<MatmulTuning>,
}

/// Choosing this device's matmul shader by a trial on its own units
/// (`starling_kernels::matmul::tune`). A value of its own, like [`CustomKernels`], so a
/// browser bundle that never names [`MATMUL_TRIALS`] (the widget, whose visits are short
/// and whose size is bounded) links neither the trial nor the second shader.
#[derive(Clone, Copy)]
pub struct MatmulTrials {
    run: MatmulRun,
}

/// Runs one matmul unit on the shader chosen so far, trying both when a trial is due.
type MatmulRun = for<'a> fn(
    &'a Gpu,
    &'a Mutex<MatmulTuning>,
    &'a Assignment,
) -> LocalBoxFuture<'a, Result<Vec<u8>, ComputeError>>;

/// Matmul shader trials, for [`Engine::with_matmul_trials`].
pub const MATMUL_TRIALS: MatmulTrials = MatmulTrials {
    run: |gpu, tuning, a| {
        Box::pin(async move {
            match tune::vec4_candidate(&a.params_json) {
                Some(unit) => run_matmul(gpu, tuning, &unit, a).await,
                None => Ok(volunteer::run_gpu(gpu, &a.kernel, &a.params_json, &a.input).await?),
            }
        })
    },
};

/// Natively every volunteer tries both matmul shaders; in a browser only where the page
/// opts in (the app).
#[cfg(not(target_arch = "wasm32"))]
const MATMUL_HERE: Option<MatmulTrials> = Some(MATMUL_TRIALS);
#[cfg(target_arch = "wasm32")]
const MATMUL_HERE: Option<MatmulTrials> = None;

/// How far choosing this device's matmul shader has got ([`tune`]).
#[derive(Clone, Copy, Debug, PartialEq)]
enum MatmulTuning {
    /// No unit both shaders run has been seen, and nothing was remembered.
    Untried,
    /// The scalar shader has run such units this fast (FLOPs per ms, the best seen); a
    /// trial is due at the next unit worth one.
    Due { scalar_flops_per_ms: f64 },
    /// A trial is running (concurrent units run the scalar shader meanwhile).
    Trying,
    /// Chosen, by a trial here or remembered from one.
    Chosen(MatmulShader),
}

impl Engine {
    /// Opens the GPU if there is one; otherwise the engine uses the CPU reference.
    pub async fn detect() -> Self {
        let (gpu, gpu_error) = match Gpu::new().await {
            Ok(gpu) => (Some(gpu), None),
            Err(e) => (None, Some(e.to_string())),
        };
        Self {
            gpu,
            gpu_error,
            cpu_here: CPU_HERE,
            #[cfg(target_arch = "wasm32")]
            cpu_worker: None,
            custom: CUSTOM_HERE,
            matmul_trials: MATMUL_HERE,
            matmul: Mutex::new(MatmulTuning::Untried),
        }
    }

    /// An engine that always uses the CPU reference.
    pub fn cpu_only() -> Self {
        Self {
            gpu: None,
            gpu_error: Some("CPU requested".into()),
            cpu_here: CPU_HERE,
            #[cfg(target_arch = "wasm32")]
            cpu_worker: None,
            custom: CUSTOM_HERE,
            matmul_trials: MATMUL_HERE,
            matmul: Mutex::new(MatmulTuning::Untried),
        }
    }

    /// Runs units of registered kernels too (the app; never the widget, whose visitors
    /// agreed to run the network's own kernels on a site that is not the network's).
    pub fn with_custom_kernels(mut self, custom: CustomKernels) -> Self {
        self.custom = Some(custom);
        self
    }

    /// Chooses the matmul shader by a trial on this device (the app; never the widget).
    pub fn with_matmul_trials(mut self, trials: MatmulTrials) -> Self {
        self.matmul_trials = Some(trials);
        self
    }

    /// Whether this engine may be given units of registered kernels: it has a GPU and
    /// the code to run them.
    pub fn runs_custom_kernels(&self) -> bool {
        self.gpu.is_some() && self.custom.is_some()
    }

    /// Whether units run on the CPU (no GPU adapter, or the CPU was asked for).
    pub fn on_cpu(&self) -> bool {
        self.gpu.is_none()
    }

    /// Runs this engine's CPU units on `worker` from now on.
    #[cfg(target_arch = "wasm32")]
    pub fn with_cpu_worker(mut self, worker: crate::platform::cpu_worker::CpuWorker) -> Self {
        self.cpu_worker = Some(worker);
        self
    }

    /// Lets CPU units run on the page's own thread when there is no worker: a unit then
    /// freezes the page while it runs. The app opts in as a last resort; the widget does
    /// not, since it would freeze the embedding site's page and carry the CPU references
    /// in its wasm.
    #[cfg(target_arch = "wasm32")]
    pub fn with_cpu_on_page(mut self, reference: CpuReference) -> Self {
        self.cpu_here = Some(reference);
        self
    }

    /// Why there is no GPU, when there is none.
    pub fn gpu_error(&self) -> Option<&str> {
        self.gpu_error.as_deref()
    }

    /// What the relay and the page show about this device.
    pub fn device_info(&self) -> DeviceInfo {
        match &self.gpu {
            Some(gpu) => DeviceInfo {
                adapter: gpu.adapter().name.clone(),
                backend: gpu.adapter().backend.clone(),
                fallback: gpu.adapter().software,
            },
            None => DeviceInfo {
                adapter: self.cpu_label().into(),
                backend: "cpu".into(),
                fallback: true,
            },
        }
    }

    fn cpu_label(&self) -> &'static str {
        #[cfg(target_arch = "wasm32")]
        if self.cpu_worker.is_some() {
            return "CPU fallback (Web Worker)";
        }
        "CPU fallback"
    }

    /// Runs one assignment and returns its output.
    pub async fn run(&self, a: &Assignment) -> Result<Vec<u8>, ComputeError> {
        if is_content_id(&a.kernel) {
            let (Some(gpu), Some(custom)) = (&self.gpu, self.custom) else {
                return Err(ComputeError::GpuOnly(a.kernel.chars().take(12).collect()));
            };
            return (custom.run)(gpu, a).await;
        }
        if let Some(gpu) = &self.gpu {
            if let Some(trials) = self.matmul_trials.filter(|_| a.kernel == Matmul::ID) {
                return (trials.run)(gpu, &self.matmul, a).await;
            }
            return Ok(volunteer::run_gpu(gpu, &a.kernel, &a.params_json, &a.input).await?);
        }
        #[cfg(target_arch = "wasm32")]
        if let Some(worker) = &self.cpu_worker {
            return worker
                .run(&a.kernel, &a.params_json, &a.input)
                .await
                .map_err(ComputeError::Worker);
        }
        let run = self.cpu_here.ok_or(ComputeError::NoCpu)?;
        Ok(run(&a.kernel, &a.params_json, &a.input).map_err(RunError::from)?)
    }

    /// The matmul shader this device chose, once it has (by a trial or remembered).
    pub fn matmul_shader(&self) -> Option<MatmulShader> {
        match *self.tuning() {
            MatmulTuning::Chosen(shader) => Some(shader),
            _ => None,
        }
    }

    fn tuning(&self) -> MutexGuard<'_, MatmulTuning> {
        lock(&self.matmul)
    }

    /// Measures this device's matmul speed in GFLOP/s on a local n-cubed unit of zeros
    /// (the page's is [`BENCHMARK_N`]): one run to build the pipeline (and, where this
    /// engine chooses its shader, to start choosing), then the best of three. Nothing is
    /// sent anywhere. The volunteer page's "Measure" runs it, and
    /// `e2e/benches/browser_native.rs` runs it natively and in the browser on one device.
    pub async fn benchmark(&self, n: u32) -> Result<f64, ComputeError> {
        let unit = local_matmul(n);
        self.run(&unit).await?;
        let mut best = f64::INFINITY;
        for _ in 0..3 {
            let started = platform::now_ms();
            self.run(&unit).await?;
            best = best.min(platform::now_ms() - started);
        }
        let flops = 2.0 * f64::from(n).powi(3);
        Ok(flops / best.max(0.01) / 1e6)
    }

    /// FLOPs of an assignment, for the meter.
    pub fn flops(&self, a: &Assignment) -> u64 {
        if is_content_id(&a.kernel) {
            return self.custom.map_or(0, |custom| (custom.flops)(a));
        }
        volunteer::unit_flops(&a.kernel, &a.params_json).unwrap_or(0)
    }
}

/// Side of the volunteer page's benchmark ([`Engine::benchmark`]): 2 x 128^3 = 4.2 MFLOP,
/// a blink on a real GPU and well under a second on software ones.
pub const BENCHMARK_N: u32 = 128;

/// The benchmark's side a page's link asks for (`?benchmark=N`, which
/// `e2e/benches/browser_native.rs` uses to measure a unit the size of the relay's too):
/// a multiple of 16 from 16 to 1024, else [`BENCHMARK_N`]. Anyone can link to the page
/// with any query, and a huge side would hold a visitor's software adapter for minutes.
pub fn benchmark_side(asked: Option<&str>) -> u32 {
    asked
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| (16..=1024).contains(n) && n % 16 == 0)
        .unwrap_or(BENCHMARK_N)
}

/// A local n x n x n matmul of zeros, run on this device only (never sent anywhere): the
/// benchmark's unit, and the page's warm-up.
pub fn local_matmul(n: u32) -> Assignment {
    Assignment {
        lease: LeaseId::from_uuid(uuid::Uuid::nil()),
        kernel: Matmul::ID.into(),
        params_json: format!(r#"{{"row_start":0,"rows":{n},"k":{n},"n":{n}}}"#),
        input: vec![0u8; 2 * n as usize * n as usize * 4],
        deadline_ms: u32::MAX,
        job_age_s: 0,
    }
}

/// A matmul unit both shaders can run: on the shader this device chose; before it has
/// chosen, on the scalar shader, timed, and at the first unit worth it on both (a
/// trial, whose output is the unit's), keeping and remembering the faster.
async fn run_matmul(
    gpu: &Gpu,
    tuning: &Mutex<MatmulTuning>,
    unit: &starling_kernels::matmul::MatmulUnit,
    a: &Assignment,
) -> Result<Vec<u8>, ComputeError> {
    let tuning = || lock(tuning);
    let key = || tune::remembered_key(&gpu.adapter().name, &gpu.adapter().backend);
    let flops = tune::flops(unit);
    let state = {
        let mut state = tuning();
        if *state == MatmulTuning::Untried {
            if let Some(shader) = platform::remembered(&key())
                .as_deref()
                .and_then(MatmulShader::parse)
            {
                *state = MatmulTuning::Chosen(shader);
            }
        }
        let now = *state;
        if let MatmulTuning::Due {
            scalar_flops_per_ms,
        } = now
        {
            if tune::worth_a_trial(flops, scalar_flops_per_ms) {
                *state = MatmulTuning::Trying;
            }
        }
        now
    };
    match state {
        MatmulTuning::Chosen(MatmulShader::Vec4) => {
            match tune::run_vec4(gpu, unit, &a.input).await {
                Ok(Some(output)) => return Ok(output),
                Ok(None) => {}
                // A remembered choice this adapter no longer runs (a driver update):
                // back to the scalar shader for good, and this unit on it.
                Err(e) => {
                    tracing::warn!("the vec4 matmul shader failed, back to scalar: {e}");
                    *tuning() = MatmulTuning::Chosen(MatmulShader::Scalar);
                    platform::remember(&key(), MatmulShader::Scalar.as_str());
                }
            }
        }
        MatmulTuning::Due {
            scalar_flops_per_ms,
        } if tune::worth_a_trial(flops, scalar_flops_per_ms) => {
            let trial = tune::trial(gpu, unit, &a.input, platform::now_ms).await;
            let chosen = match &trial {
                Ok(Some(t)) => t.chosen,
                // A vec4 shader this adapter cannot build or run: never again here.
                Ok(None) | Err(_) => Some(MatmulShader::Scalar),
            };
            // A trial that could not tell keeps the scalar shader for this session only:
            // the next one tries again, perhaps on bigger units.
            *tuning() = MatmulTuning::Chosen(chosen.unwrap_or(MatmulShader::Scalar));
            if let Some(chosen) = chosen {
                platform::remember(&key(), chosen.as_str());
            }
            if let Ok(Some(t)) = trial {
                tracing::info!(
                    scalar_ms = t.scalar_ms,
                    vec4_ms = t.vec4_ms,
                    dispatches = t.dispatches,
                    chosen = chosen.map_or("undecided", MatmulShader::as_str),
                    "matmul shader trial on this device"
                );
                return Ok(t.output);
            }
        }
        _ => {}
    }
    let started = platform::now_ms();
    let output = volunteer::run_gpu(gpu, &a.kernel, &a.params_json, &a.input).await?;
    let rate = flops as f64 / (platform::now_ms() - started).max(0.001);
    let mut state = tuning();
    match *state {
        MatmulTuning::Untried => {
            *state = MatmulTuning::Due {
                scalar_flops_per_ms: rate,
            }
        }
        MatmulTuning::Due {
            scalar_flops_per_ms,
        } => {
            *state = MatmulTuning::Due {
                scalar_flops_per_ms: scalar_flops_per_ms.max(rate),
            }
        }
        MatmulTuning::Trying | MatmulTuning::Chosen(_) => {}
    }
    Ok(output)
}

/// The tuning state, whatever a panicking holder left: a trial's state is only ever a
/// speed choice, never worth failing units over.
fn lock(tuning: &Mutex<MatmulTuning>) -> MutexGuard<'_, MatmulTuning> {
    tuning
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::{benchmark_side, BENCHMARK_N};

    #[test]
    fn a_linked_benchmark_side_stays_within_seconds_of_a_software_adapter() {
        assert_eq!(benchmark_side(None), BENCHMARK_N);
        assert_eq!(benchmark_side(Some("512")), 512);
        assert_eq!(benchmark_side(Some("1024")), 1024);
        // A huge, odd or garbage side is the default, never a matmul that would hold the
        // visitor's device for minutes.
        for hostile in [
            "1040",
            "4096",
            "4294967295",
            "99999999999",
            "500",
            "0",
            "-512",
            "1e3",
            "",
            "512 ",
        ] {
            assert_eq!(benchmark_side(Some(hostile)), BENCHMARK_N, "{hostile:?}");
        }
    }
}
