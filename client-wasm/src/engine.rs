//! Runs work units: on the GPU when an adapter exists, else on the CPU reference.

use starling_kernels::catalog::RunError;
use starling_kernels::{Catalog, Gpu};
use starling_protocol::{Assignment, DeviceInfo};

/// The device this volunteer computes on.
pub struct Engine {
    catalog: Catalog,
    gpu: Option<Gpu>,
    gpu_error: Option<String>,
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
        }
    }

    /// An engine that always uses the CPU reference.
    pub fn cpu_only() -> Self {
        Self {
            catalog: Catalog::builtin(),
            gpu: None,
            gpu_error: Some("CPU requested".into()),
        }
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
                adapter: "CPU fallback".into(),
                backend: "cpu".into(),
                fallback: true,
            },
        }
    }

    /// Runs one assignment and returns its output.
    pub async fn run(&self, a: &Assignment) -> Result<Vec<u8>, RunError> {
        self.catalog
            .run_unit(self.gpu.as_ref(), &a.kernel, &a.params_json, &a.input)
            .await
    }

    /// FLOPs of an assignment, for the meter.
    pub fn flops(&self, a: &Assignment) -> u64 {
        self.catalog
            .get(&a.kernel)
            .and_then(|k| k.unit_flops(&a.params_json))
            .unwrap_or(0)
    }
}
