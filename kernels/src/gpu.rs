//! The one wgpu runner every kernel uses: upload inputs, dispatch one compute shader,
//! read the output back. Works on WebGPU in browsers and on Vulkan/Metal/DX12 natively.

#[cfg(feature = "gpu")]
use std::collections::HashMap;
use std::ops::Range;
#[cfg(feature = "gpu")]
use std::sync::Mutex;
#[cfg(feature = "gpu")]
use wgpu::util::DeviceExt;

/// How to run one unit: which shader, which slices of the unit input become storage
/// buffers (bindings 1..), the uniform block (binding 0) and the output size (last binding).
#[derive(Debug, Clone, PartialEq)]
pub struct GpuDispatch {
    /// Pipeline cache key and debug label; one per shader.
    pub label: &'static str,
    /// WGSL source with an entry point named `main`.
    pub shader: &'static str,
    /// Bytes of the uniform block at binding 0.
    pub uniforms: Vec<u8>,
    /// Byte ranges of the unit input, bound in order from binding 1.
    pub inputs: Vec<Range<usize>>,
    /// Size of the read-write output buffer, bound after the inputs.
    pub output_bytes: u64,
    /// Workgroup counts.
    pub workgroups: [u32; 3],
}

/// Why the GPU could not run a unit.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// No adapter: WebGPU missing or disabled, or no Vulkan driver.
    #[error("no GPU adapter available: {0}")]
    NoAdapter(String),
    /// The adapter refused to create a device.
    #[error("could not open the GPU device: {0}")]
    Device(String),
    /// Validation or out-of-memory error reported by wgpu.
    #[error("GPU error: {0}")]
    Dispatch(String),
    /// Reading the output back failed.
    #[error("reading GPU output failed: {0}")]
    Readback(String),
}

/// Facts about the adapter, for display and for the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterSummary {
    /// Adapter name ("llvmpipe", "SwiftShader Device", a GPU model).
    pub name: String,
    /// Backend name ("vulkan", "browserwebgpu" ...).
    pub backend: String,
    /// True for CPU-based adapters.
    pub software: bool,
}

/// Most pipelines a device keeps built: the built-ins and a few custom kernels.
#[cfg(feature = "gpu")]
const MAX_CACHED_PIPELINES: usize = 16;

/// One dispatch as wgpu binds it: a built-in's [`GpuDispatch`] (bindings in order from
/// 0) or a custom kernel's (bindings where its manifest puts them).
#[cfg(feature = "gpu")]
struct Bound<'a> {
    key: &'a str,
    shader: &'a str,
    entry_point: &'a str,
    /// Binding and bytes of the uniform block.
    uniform: (u32, &'a [u8]),
    /// Binding and byte range of the unit input, per input.
    inputs: Vec<(u32, Range<usize>)>,
    /// Binding and size of the output.
    output: (u32, u64),
    workgroups: [u32; 3],
}

/// An open GPU device with a pipeline cache.
#[cfg(feature = "gpu")]
pub struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
    summary: AdapterSummary,
    /// By kernel: a built-in's label, or a custom kernel's content address.
    pipelines: Mutex<HashMap<String, wgpu::ComputePipeline>>,
}

#[cfg(feature = "gpu")]
impl Gpu {
    /// Opens the default high-performance adapter.
    pub async fn new() -> Result<Self, GpuError> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::NoAdapter(e.to_string()))?;
        let info = adapter.get_info();
        let summary = AdapterSummary {
            // Browsers hide adapter names unless asked; fall back to what is reported.
            name: [&info.name, &info.driver, &info.driver_info]
                .into_iter()
                .find(|s| !s.is_empty())
                .cloned()
                .unwrap_or_else(|| {
                    if info.device_type == wgpu::DeviceType::Cpu {
                        "software adapter".to_owned()
                    } else {
                        "GPU adapter".to_owned()
                    }
                }),
            backend: info.backend.to_string(),
            // ASCII lowercasing: both names are ASCII, and `str::to_lowercase` would link
            // Unicode's case tables (17 KB) into the browser's wasm for this one test.
            software: info.device_type == wgpu::DeviceType::Cpu
                || info.name.to_ascii_lowercase().contains("swiftshader")
                || info.name.to_ascii_lowercase().contains("llvmpipe"),
        };
        // Ask for the adapter's own limits: the defaults cap storage bindings at 128 MiB
        // and workgroup storage at 16 KiB, less than most GPUs offer.
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("starling"),
                required_limits: adapter.limits(),
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::Device(e.to_string()))?;
        Ok(Self {
            device,
            queue,
            summary,
            pipelines: Mutex::new(HashMap::new()),
        })
    }

    /// The adapter behind this device.
    pub fn adapter(&self) -> &AdapterSummary {
        &self.summary
    }

    fn pipeline(&self, key: &str, shader: &str, entry_point: &str) -> wgpu::ComputePipeline {
        let mut cache = self
            .pipelines
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(pipeline) = cache.get(key) {
            return pipeline.clone();
        }
        // Custom kernels are many: a volunteer that met more than this starts over
        // rather than holding every pipeline it ever built.
        if cache.len() >= MAX_CACHED_PIPELINES {
            cache.clear();
        }
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(key),
                source: wgpu::ShaderSource::Wgsl(shader.into()),
            });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(key),
                layout: None,
                module: &module,
                entry_point: Some(entry_point),
                compilation_options: Default::default(),
                cache: None,
            });
        cache.insert(key.to_owned(), pipeline.clone());
        pipeline
    }

    /// Runs one dispatch over `input` and returns the output buffer's bytes.
    pub async fn run(&self, d: &GpuDispatch, input: &[u8]) -> Result<Vec<u8>, GpuError> {
        self.run_repeated(d, input, 1).await
    }

    /// Like [`Gpu::run`], but dispatches the shader `dispatches` times (at least once) in
    /// one pass before reading back. Benchmarks time the shader alone from the difference
    /// between runs of different counts, since upload and read-back cost the same in both.
    /// Only for shaders whose output does not depend on its previous contents.
    pub async fn run_repeated(
        &self,
        d: &GpuDispatch,
        input: &[u8],
        dispatches: u32,
    ) -> Result<Vec<u8>, GpuError> {
        let count = d.inputs.len() as u32;
        let bound = Bound {
            key: d.label,
            shader: d.shader,
            entry_point: "main",
            uniform: (0, &d.uniforms),
            inputs: (1..).zip(d.inputs.iter().cloned()).collect(),
            output: (count + 1, d.output_bytes),
            workgroups: d.workgroups,
        };
        self.run_bound(&bound, input, dispatches).await
    }

    /// Runs one unit of a custom kernel over `input`, bound as its manifest says.
    pub async fn run_custom(
        &self,
        d: &crate::custom::CustomDispatch<'_>,
        input: &[u8],
    ) -> Result<Vec<u8>, GpuError> {
        let bound = Bound {
            key: d.label,
            shader: d.shader,
            entry_point: d.entry_point,
            uniform: (d.unit_binding, &d.uniform),
            inputs: d.inputs.clone(),
            output: (d.output_binding, d.output_bytes),
            workgroups: d.workgroups,
        };
        self.run_bound(&bound, input, 1).await
    }

    async fn run_bound(
        &self,
        d: &Bound<'_>,
        input: &[u8],
        dispatches: u32,
    ) -> Result<Vec<u8>, GpuError> {
        if d.inputs
            .iter()
            .any(|(_, r)| r.end > input.len() || r.start > r.end)
        {
            return Err(GpuError::Dispatch(
                "input range outside the unit input".into(),
            ));
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let oom_scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let pipeline = self.pipeline(d.key, d.shader, d.entry_point);
        let storage = |label, contents: &[u8]| {
            // wgpu refuses zero-sized bindings; an empty slice still gets 4 bytes.
            let contents = if contents.is_empty() {
                &[0u8; 4][..]
            } else {
                contents
            };
            self.device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(label),
                    contents,
                    usage: wgpu::BufferUsages::STORAGE,
                })
        };
        let uniforms = self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("uniforms"),
                contents: d.uniform.1,
                usage: wgpu::BufferUsages::UNIFORM,
            });
        let inputs: Vec<(u32, wgpu::Buffer)> = d
            .inputs
            .iter()
            .map(|(binding, r)| (*binding, storage("input", &input[r.clone()])))
            .collect();
        let (output_binding, output_bytes) = d.output;
        let out_size = output_bytes.max(4).next_multiple_of(4);
        let output = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("output"),
            size: out_size,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("staging"),
            size: out_size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: d.uniform.0,
            resource: uniforms.as_entire_binding(),
        }];
        for (binding, buffer) in &inputs {
            entries.push(wgpu::BindGroupEntry {
                binding: *binding,
                resource: buffer.as_entire_binding(),
            });
        }
        entries.push(wgpu::BindGroupEntry {
            binding: output_binding,
            resource: output.as_entire_binding(),
        });
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(d.key),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(d.key) });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(d.key),
                timestamp_writes: None,
            });
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            let [x, y, z] = d.workgroups;
            for _ in 0..dispatches.max(1) {
                pass.dispatch_workgroups(x, y, z);
            }
        }
        encoder.copy_buffer_to_buffer(&output, 0, &staging, 0, out_size);
        self.queue.submit([encoder.finish()]);
        // Both scopes are popped before either is awaited: on the web the awaits yield,
        // and another run on this device (the device card's benchmark while a unit
        // computes, or the GPU warm-up beside the first unit) pushing its scopes in
        // between would make these pops out of order, which wgpu answers with a panic.
        // From push to pop nothing awaits, so runs on one thread never interleave here.
        let oom = oom_scope.pop();
        let validation = scope.pop();
        if let Some(e) = oom.await {
            return Err(GpuError::Dispatch(e.to_string()));
        }
        if let Some(e) = validation.await {
            return Err(GpuError::Dispatch(e.to_string()));
        }

        let (tx, rx) = futures_channel::oneshot::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |result| {
            // The receiver only disappears if this future was dropped; nothing to tell then.
            let _ = tx.send(result);
        });
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| GpuError::Readback(e.to_string()))?;
        rx.await
            .map_err(|_| GpuError::Readback("map callback dropped".into()))?
            .map_err(|e| GpuError::Readback(e.to_string()))?;
        let bytes = {
            let view = staging
                .get_mapped_range(..)
                .map_err(|e| GpuError::Readback(e.to_string()))?;
            view[..output_bytes as usize].to_vec()
        };
        staging.unmap();
        Ok(bytes)
    }
}
