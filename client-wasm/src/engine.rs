//! Runs work units: on the GPU when an adapter exists, else on the CPU reference (in the
//! browser, on a Web Worker so the page never freezes).

use starling_kernels::catalog::RunError;
use starling_kernels::{Catalog, Gpu};
use starling_protocol::{Assignment, DeviceInfo};

/// Why a unit could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum ComputeError {
    /// The kernel refused the unit, or the GPU failed.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The browser's CPU worker failed (its message says how).
    #[error("{0}")]
    Worker(String),
}

/// The device this volunteer computes on.
pub struct Engine {
    catalog: Catalog,
    gpu: Option<Gpu>,
    gpu_error: Option<String>,
    /// Where set (browsers), CPU units run there instead of on the calling thread.
    #[cfg(target_arch = "wasm32")]
    cpu_worker: Option<crate::platform::cpu_worker::CpuWorker>,
}

impl Engine {
    /// Opens the GPU if there is one; otherwise the engine uses the CPU reference.
    pub async fn detect() -> Self {
        let (gpu, gpu_error) = match Gpu::new().await {
            Ok(gpu) => (Some(gpu), None),
            Err(e) => (None, Some(e.to_string())),
        };
        Self {
            catalog: Catalog::builtin(),
            gpu,
            gpu_error,
            #[cfg(target_arch = "wasm32")]
            cpu_worker: None,
        }
    }

    /// An engine that always uses the CPU reference.
    pub fn cpu_only() -> Self {
        Self {
            catalog: Catalog::builtin(),
            gpu: None,
            gpu_error: Some("CPU requested".into()),
            #[cfg(target_arch = "wasm32")]
            cpu_worker: None,
        }
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
        #[cfg(target_arch = "wasm32")]
        if let (None, Some(worker)) = (&self.gpu, &self.cpu_worker) {
            return worker
                .run(&a.kernel, &a.params_json, &a.input)
                .await
                .map_err(ComputeError::Worker);
        }
        Ok(self
            .catalog
            .run_unit(self.gpu.as_ref(), &a.kernel, &a.params_json, &a.input)
            .await?)
    }

    /// FLOPs of an assignment, for the meter.
    pub fn flops(&self, a: &Assignment) -> u64 {
        self.catalog
            .get(&a.kernel)
            .and_then(|k| k.unit_flops(&a.params_json))
            .unwrap_or(0)
    }
}
