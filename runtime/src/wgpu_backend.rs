//! The WGSL backend: kernel programs generated as WGSL (`rgnn_kernels::wgsl`) and run through
//! wgpu on Vulkan, Metal or DX12 — on machines without a GPU through a software adapter such as
//! Mesa's lavapipe.
//!
//! Per session: the program is lowered for the graph, buffers are laid out by the memory plan
//! (one arena for intermediates; inputs, outputs, parameters, index arrays and tables in their
//! own buffers), index arrays, parameters and inputs are uploaded once, and every dispatch gets
//! its pipeline (cached per device by a hash of its source) and bind group up front. A forward
//! pass is then one command buffer: all dispatches in one compute pass, outputs copied to
//! read-back buffers, one submission.
//!
//! wgpu reports validation and allocation failures through error scopes; every call that can
//! fail runs inside one, so failures become errors, never panics.

use crate::arrays::{decode, ArrayLayout};
use crate::backend::{check_finite, compile_kernels, graph_index, Backend, Executable};
use crate::graph::ExecGraph;
use crate::layout::GraphLayout;
use crate::{Result, RuntimeError, Tensor};
use rgnn_ir::level2::{DType, KernelProgram};
use rgnn_ir::Program;
use rgnn_kernels::gpu::Dispatch;
use rgnn_kernels::wgsl::{WgslOptions, WgslProgram};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock};

const NAME: &str = "wgpu";

fn device_error(message: impl Into<String>) -> RuntimeError {
    RuntimeError::Device { backend: NAME.into(), message: message.into() }
}

/// An adapter, its device and the pipelines compiled on it.
pub struct GpuContext {
    pub info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    has_f16: bool,
    device: wgpu::Device,
    queue: wgpu::Queue,
    /// Pipelines by a hash of their WGSL source (identical kernels compile once per process).
    pipelines: Mutex<HashMap<u64, wgpu::ComputePipeline>>,
}

impl GpuContext {
    /// Is the adapter a real GPU (not a software rasteriser)?
    pub fn is_real_gpu(&self) -> bool {
        self.info.device_type != wgpu::DeviceType::Cpu
    }

    /// Can kernels store f16 (`--dtype f16`)?
    pub fn has_f16(&self) -> bool {
        self.has_f16
    }

    pub fn describe(&self) -> String {
        format!("{} ({:?}, {:?})", self.info.name, self.info.backend, self.info.device_type)
    }

    /// The options the WGSL generator needs for this device.
    fn wgsl_options(&self, storage: DType) -> WgslOptions {
        WgslOptions {
            storage,
            max_binding_bytes: self.limits.max_storage_buffer_binding_size.min(self.limits.max_buffer_size),
            offset_alignment: self.limits.min_storage_buffer_offset_alignment as u64,
            max_workgroups_per_dim: self.limits.max_compute_workgroups_per_dimension,
        }
    }

    /// Run `f` inside error scopes; a validation or out-of-memory error becomes `Err`.
    fn checked<T>(&self, what: &str, f: impl FnOnce() -> T) -> Result<T> {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let value = f();
        let v = pollster::block_on(validation.pop());
        let o = pollster::block_on(oom.pop());
        if let Some(e) = o {
            return Err(RuntimeError::OutOfMemory { backend: NAME.into(), message: format!("{what}: {e}") });
        }
        if let Some(e) = v {
            return Err(device_error(format!("{what}: {e}")));
        }
        Ok(value)
    }

    fn pipeline(&self, d: &Dispatch) -> Result<wgpu::ComputePipeline> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        d.source.hash(&mut h);
        let key = h.finish();
        if let Some(p) = self.pipelines.lock().expect("pipeline cache").get(&key) {
            return Ok(p.clone());
        }
        let pipeline = self.checked(&format!("compiling kernel `{}`", d.label), || {
            let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(&d.label),
                source: wgpu::ShaderSource::Wgsl(d.source.as_str().into()),
            });
            self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&d.label),
                layout: None,
                module: &module,
                entry_point: Some(d.entry),
                compilation_options: Default::default(),
                cache: None,
            })
        })?;
        self.pipelines.lock().expect("pipeline cache").insert(key, pipeline.clone());
        Ok(pipeline)
    }
}

/// Adapters in order of preference: discrete, integrated, virtual, other, software.
fn rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

fn open_context() -> std::result::Result<GpuContext, String> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let mut adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    adapters.sort_by_key(|a| rank(a.get_info().device_type));
    let adapter = adapters.into_iter().next().ok_or_else(|| {
        "no Vulkan, Metal or DX12 adapter found (on Linux without a GPU, install Mesa's software Vulkan driver: \
         `apt-get install mesa-vulkan-drivers libvulkan1`)"
            .to_string()
    })?;
    let info = adapter.get_info();
    let limits = adapter.limits();
    let has_f16 = adapter.features().contains(wgpu::Features::SHADER_F16);
    let features = if has_f16 { wgpu::Features::SHADER_F16 } else { wgpu::Features::empty() };
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("rgnn"),
        required_features: features,
        required_limits: limits.clone(),
        ..Default::default()
    }))
    .map_err(|e| format!("cannot open {}: {e}", info.name))?;
    Ok(GpuContext { info, limits, has_f16, device, queue, pipelines: Mutex::new(HashMap::new()) })
}

/// The process's wgpu device (opened once; every session shares it and its pipeline cache).
pub fn context() -> Result<Arc<GpuContext>> {
    static CONTEXT: OnceLock<std::result::Result<Arc<GpuContext>, String>> = OnceLock::new();
    CONTEXT
        .get_or_init(|| open_context().map(Arc::new))
        .clone()
        .map_err(|reason| RuntimeError::BackendUnavailable { backend: NAME.into(), reason })
}

/// The wgpu backend on the process's device.
pub struct WgpuBackend {
    ctx: Arc<GpuContext>,
    max_binding_bytes: Option<u64>,
}

impl WgpuBackend {
    pub fn new() -> Result<Self> {
        Ok(WgpuBackend { ctx: context()?, max_binding_bytes: None })
    }

    /// Bind at most this many bytes per storage binding (below the device's limit), so that
    /// the chunked binding of large arrays can be exercised on small graphs.
    pub fn with_max_binding_bytes(mut self, bytes: u64) -> Self {
        self.max_binding_bytes = Some(bytes);
        self
    }
    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }
}

struct CompiledWgpu {
    ctx: Arc<GpuContext>,
    plan: KernelProgram,
    memory: rgnn_codegen::MemoryPlan,
    storage: DType,
    steps: Vec<(wgpu::ComputePipeline, wgpu::BindGroup, [u32; 3])>,
    /// Output buffers: (name, device buffer, read-back buffer, rows, width).
    outputs: Vec<(String, Arc<wgpu::Buffer>, wgpu::Buffer, usize, usize)>,
    device_bytes: usize,
}

/// The WGSL a model runs on a graph, for the generator's default limits or a device's.
pub fn generate_wgsl(
    program: &Program,
    params: &[Tensor],
    graph: &ExecGraph,
    options: &rgnn_codegen::CompileOptions,
    wgsl: &WgslOptions,
) -> Result<(KernelProgram, GraphLayout, WgslProgram)> {
    if options.storage == rgnn_ir::level2::DType::BF16 {
        return Err(RuntimeError::Invalid("WGSL has no bf16 type: the wgpu backend stores f32 or f16 (--dtype f16)".into()));
    }
    let (plan, layout) = compile_kernels(program, params, graph, options)
        .map_err(|e| RuntimeError::Invalid(format!("the wgpu backend cannot run this model: {e}")))?;
    let shapes: Vec<Vec<usize>> = params.iter().map(|t| t.shape.clone()).collect();
    let index = graph_index(graph, &layout);
    let generated = rgnn_kernels::wgsl::generate(&plan, &shapes, &index, wgsl)
        .map_err(|e| RuntimeError::Invalid(format!("internal error generating WGSL: {e}")))?;
    Ok((plan, layout, generated))
}

fn align_up(n: u64, a: u64) -> u64 {
    n.div_ceil(a) * a
}

impl Backend for WgpuBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn device(&self) -> String {
        self.ctx.describe()
    }

    fn prepare(
        &self,
        program: &Program,
        params: Vec<Tensor>,
        graph: ExecGraph,
        options: &rgnn_codegen::CompileOptions,
    ) -> Result<Box<dyn Executable>> {
        let ctx = &self.ctx;
        match options.storage {
            DType::F32 => {}
            DType::F16 if ctx.has_f16 => {}
            DType::F16 => {
                return Err(RuntimeError::BackendUnavailable {
                    backend: NAME.into(),
                    reason: format!("{} has no SHADER_F16 support; use --dtype f32", ctx.info.name),
                })
            }
            DType::BF16 => return Err(RuntimeError::Invalid("WGSL has no bf16; the wgpu backend stores f32 or f16".into())),
        }
        crate::interpreter::check_relations(program, &params, &graph)?;
        let mut wgsl_opts = ctx.wgsl_options(options.storage);
        if let Some(cap) = self.max_binding_bytes {
            wgsl_opts.max_binding_bytes = wgsl_opts.max_binding_bytes.min(cap);
        }
        let (plan, layout, generated) = generate_wgsl(program, &params, &graph, options, &wgsl_opts)?;
        let index = graph_index(&graph, &layout);
        let memory = rgnn_codegen::plan_memory(&plan, |d| index.rows(d));
        let device = &ctx.device;
        let max_buffer = ctx.limits.max_buffer_size;
        let mut device_bytes = 0usize;

        // Every allocation is padded so a binding of an empty array still has 4 bytes to cover.
        let mut alloc = |what: &str, bytes: u64, usage: wgpu::BufferUsages, contents: Option<&[u8]>| -> Result<Arc<wgpu::Buffer>> {
            let size = align_up(bytes, 256) + 256;
            if size > max_buffer {
                return Err(RuntimeError::OutOfMemory {
                    backend: NAME.into(),
                    message: format!("{what} needs {size} bytes in one buffer; the device allows at most {max_buffer}"),
                });
            }
            device_bytes += size as usize;
            let buffer = ctx.checked(&format!("allocating {size} bytes for {what}"), || {
                let b = device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(what),
                    size,
                    usage: usage | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                if let Some(data) = contents {
                    // Writes go in multiples of 4 bytes (an odd count of f16 values is not
                    // one): the whole words, then the last bytes zero-padded into the
                    // allocation's padding.
                    let whole = data.len() / 4 * 4;
                    if whole > 0 {
                        ctx.queue.write_buffer(&b, 0, &data[..whole]);
                    }
                    if whole < data.len() {
                        let mut tail = [0u8; 4];
                        tail[..data.len() - whole].copy_from_slice(&data[whole..]);
                        ctx.queue.write_buffer(&b, whole as u64, &tail);
                    }
                }
                b
            })?;
            Ok(Arc::new(buffer))
        };
        // Every array as the memory plan and the generated dispatches place it.
        let arrays =
            ArrayLayout::new(&plan, &memory, &generated.dispatches, generated.scratch_elems, &params, &graph, &index, options.storage)?;
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC;
        let buffers: Vec<Arc<wgpu::Buffer>> = arrays
            .uploads
            .iter()
            .map(|(what, contents, bytes)| alloc(what, *bytes as u64, usage, Some(contents)))
            .collect::<Result<_>>()?;
        let mut outputs = vec![];
        for (name, slot, bytes, rows, width) in &arrays.outputs_at {
            let readback = ctx.checked(&format!("allocating the read-back buffer of `{name}`"), || {
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(name),
                    size: align_up((*bytes as u64).max(4), 4),
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            })?;
            outputs.push((name.clone(), buffers[*slot].clone(), readback, *rows, *width));
        }

        // Pipelines and bind groups.
        let mut steps = vec![];
        for (di, d) in generated.dispatches.iter().enumerate() {
            let pipeline = ctx.pipeline(d)?;
            let ranges: Vec<(Arc<wgpu::Buffer>, u64, u64)> = d
                .bindings
                .iter()
                .map(|b| {
                    let (slot, offset) = arrays.place(b.array, di);
                    let eb = b.elem.bytes() as u64;
                    let r = b.range();
                    let start = offset as u64 + r.start as u64 * eb;
                    let size = align_up(((r.end.saturating_sub(r.start)) as u64 * eb).max(4), 4);
                    (buffers[slot].clone(), start, size)
                })
                .collect();
            let layout = pipeline.get_bind_group_layout(0);
            let bind_group = ctx.checked(&format!("binding the buffers of `{}`", d.label), || {
                let entries: Vec<wgpu::BindGroupEntry> = ranges
                    .iter()
                    .enumerate()
                    .map(|(i, (buffer, offset, size))| wgpu::BindGroupEntry {
                        binding: i as u32,
                        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer,
                            offset: *offset,
                            size: std::num::NonZeroU64::new(*size),
                        }),
                    })
                    .collect();
                device.create_bind_group(&wgpu::BindGroupDescriptor { label: Some(&d.label), layout: &layout, entries: &entries })
            })?;
            steps.push((pipeline, bind_group, d.workgroups));
        }
        Ok(Box::new(CompiledWgpu { ctx: self.ctx.clone(), plan, memory, storage: options.storage, steps, outputs, device_bytes }))
    }
}

impl Executable for CompiledWgpu {
    fn run(&mut self) -> Result<Vec<(String, Tensor)>> {
        let ctx = &self.ctx;
        let submission = ctx.checked("recording the forward pass", || {
            let mut encoder = ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("rgnn forward") });
            {
                let mut pass =
                    encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("rgnn forward"), timestamp_writes: None });
                for (pipeline, bind_group, [x, y, z]) in &self.steps {
                    pass.set_pipeline(pipeline);
                    pass.set_bind_group(0, bind_group, &[]);
                    pass.dispatch_workgroups(*x, *y, *z);
                }
            }
            for (_, buffer, readback, _, _) in &self.outputs {
                encoder.copy_buffer_to_buffer(buffer, 0, readback, 0, readback.size());
            }
            ctx.queue.submit([encoder.finish()])
        })?;
        for (_, _, readback, _, _) in &self.outputs {
            readback.slice(..).map_async(wgpu::MapMode::Read, |_| {});
        }
        ctx.device
            .poll(wgpu::PollType::Wait { submission_index: Some(submission), timeout: None })
            .map_err(|e| device_error(format!("waiting for the forward pass: {e}")))?;
        let mut out = vec![];
        for (name, _, readback, rows, width) in &self.outputs {
            let data: Vec<f32> = {
                let view = readback.slice(..).get_mapped_range().map_err(|e| device_error(format!("reading `{name}` back: {e}")))?;
                // The read-back buffer is padded to 4 bytes: decode exactly rows × width values.
                decode(&view[..rows * width * self.storage.bytes()], self.storage)
            };
            readback.unmap();
            check_finite(name, &data, *width, self.storage)?;
            out.push((name.clone(), Tensor::new(vec![*rows, *width], data)));
        }
        Ok(out)
    }

    /// Every byte this session holds on the device (arena, inputs, outputs, parameters, index
    /// arrays, tables, scratch).
    fn peak_bytes(&self) -> usize {
        self.device_bytes
    }
    fn plan(&self) -> Option<&KernelProgram> {
        Some(&self.plan)
    }
    fn memory_plan(&self) -> Option<rgnn_codegen::MemoryPlan> {
        Some(self.memory.clone())
    }
}
