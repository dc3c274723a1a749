//! The CUDA backend: kernel programs generated as CUDA C (`rgnn_kernels::cuda`), compiled by
//! NVRTC for the device's architecture, run with cudarc.
//!
//! cudarc loads libcuda and libnvrtc at run time, so building rgnn needs no CUDA toolkit, and a
//! machine without the NVIDIA driver gets "backend `cuda` is not available" (checked before any
//! CUDA call: a missing libcuda would panic inside cudarc).
//!
//! Per session: the program is lowered for the graph; buffers follow the memory plan (one
//! arena for intermediates); parameters, index arrays, per-kernel tables (the GEMM's per-relation
//! tile schedule) and inputs are uploaded once; every kernel's PTX comes from the on-disk cache
//! (keyed by a stable hash of its source, the architecture and rgnn's version) or NVRTC. The
//! whole forward pass is captured once as a CUDA graph and replayed; each run is timed with
//! CUDA events around the replay.
//!
//! Status: type-checked and tested for the missing-driver path on machines without a GPU; its
//! differential tests and benchmarks run where a CUDA GPU is present.

use crate::arrays::{decode, ArrayLayout};
use crate::backend::{check_finite, compile_kernels, graph_index, median, Backend, Executable, KernelTime, KernelWork};
use crate::graph::ExecGraph;
use crate::layout::GraphLayout;
use crate::{Result, RuntimeError, Tensor};
use cudarc::driver::{sys, CudaContext, CudaFunction, CudaGraph, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg};
use rgnn_ir::level2::{DType, KernelProgram};
use rgnn_ir::Program;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

const NAME: &str = "cuda";

fn unavailable(reason: impl Into<String>) -> RuntimeError {
    RuntimeError::BackendUnavailable { backend: NAME.into(), reason: reason.into() }
}

fn device_error(what: &str, e: impl std::fmt::Display) -> RuntimeError {
    let message = format!("{what}: {e}");
    if message.contains("OUT_OF_MEMORY") {
        RuntimeError::OutOfMemory { backend: NAME.into(), message }
    } else {
        RuntimeError::Device { backend: NAME.into(), message }
    }
}

/// The process's CUDA device 0, its stream, and the kernels loaded on it.
pub struct CudaGpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    name: String,
    /// Compute capability (major, minor).
    arch: (i32, i32),
    /// Loaded kernels by source hash.
    functions: Mutex<HashMap<u64, CudaFunction>>,
}

impl CudaGpu {
    pub fn describe(&self) -> String {
        format!("{} (sm_{}{})", self.name, self.arch.0, self.arch.1)
    }
}

fn open() -> std::result::Result<CudaGpu, String> {
    // SAFETY: only probes whether the libraries can be loaded.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err("the NVIDIA driver library (libcuda) was not found".into());
    }
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err("NVRTC (libnvrtc, part of the CUDA toolkit) was not found".into());
    }
    let ctx = CudaContext::new(0).map_err(|e| format!("no usable CUDA device: {e}"))?;
    let name = ctx.name().map_err(|e| e.to_string())?;
    let arch = ctx.compute_capability().map_err(|e| e.to_string())?;
    // A stream of our own: the forward pass is captured as a CUDA graph, and capture is refused
    // on the legacy default stream (handle 0, what `default_stream()` gives).
    let stream = ctx.new_stream().map_err(|e| format!("creating a CUDA stream: {e}"))?;
    Ok(CudaGpu { ctx, stream, name, arch, functions: Mutex::new(HashMap::new()) })
}

/// The process's CUDA device (opened once).
pub fn context() -> Result<Arc<CudaGpu>> {
    static GPU: OnceLock<std::result::Result<Arc<CudaGpu>, String>> = OnceLock::new();
    GPU.get_or_init(|| open().map(Arc::new)).clone().map_err(unavailable)
}

/// FNV-1a, 64 bits: a hash that stays the same across Rust versions and runs (cache keys).
fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Where compiled PTX is kept: `$RGNN_CACHE_DIR`, else `$XDG_CACHE_HOME/rgnn`, else
/// `~/.cache/rgnn` (the `ptx/` folder inside).
pub fn ptx_cache_dir() -> Option<std::path::PathBuf> {
    let base = std::env::var_os("RGNN_CACHE_DIR")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| std::path::PathBuf::from(d).join("rgnn")))
        .or_else(|| std::env::var_os("HOME").map(|d| std::path::PathBuf::from(d).join(".cache").join("rgnn")))?;
    Some(base.join("ptx"))
}

/// The cache key of a kernel: its source, the target architecture and this rgnn's version.
pub fn ptx_cache_key(source: &str, arch: &str) -> u64 {
    stable_hash(&[source.as_bytes(), arch.as_bytes(), env!("CARGO_PKG_VERSION").as_bytes()])
}

/// NVRTC's options: the architecture, and the language standard spelled out (the generated
/// kernels use C++11 lambdas; NVRTC's default standard differs between CUDA releases).
fn nvrtc_options(arch: &str) -> cudarc::nvrtc::CompileOptions {
    cudarc::nvrtc::CompileOptions { options: vec![format!("--gpu-architecture={arch}"), "--std=c++17".into()], ..Default::default() }
}

/// PTX of a CUDA C source for an architecture (`sm_80`, ...), by NVRTC; needs only libnvrtc.
pub fn compile_ptx(source: &str, arch: &str) -> Result<String> {
    // SAFETY: only probes whether the library can be loaded.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(unavailable("NVRTC (libnvrtc, part of the CUDA toolkit) was not found"));
    }
    cudarc::nvrtc::compile_ptx_with_opts(source, nvrtc_options(arch))
        .map(|p| p.to_src())
        .map_err(|e| RuntimeError::Device { backend: NAME.into(), message: format!("NVRTC: {e}") })
}

impl CudaGpu {
    fn arch_name(&self) -> String {
        format!("sm_{}{}", self.arch.0, self.arch.1)
    }

    /// The kernel of `source`, from memory, the disk cache or NVRTC.
    fn function(&self, label: &str, source: &str) -> Result<CudaFunction> {
        let arch = self.arch_name();
        let key = ptx_cache_key(source, &arch);
        if let Some(f) = self.functions.lock().expect("kernel cache").get(&key) {
            return Ok(f.clone());
        }
        let cached = ptx_cache_dir().map(|d| d.join(format!("{key:016x}.ptx")));
        let ptx = match cached.as_ref().and_then(|p| std::fs::read_to_string(p).ok()) {
            Some(text) => cudarc::nvrtc::Ptx::from_src(text),
            None => {
                let ptx = cudarc::nvrtc::compile_ptx_with_opts(source, nvrtc_options(&arch)).map_err(|e| RuntimeError::Device {
                    backend: NAME.into(),
                    message: format!("NVRTC failed on kernel `{label}`: {e}"),
                })?;
                if let Some(path) = &cached {
                    // A cache that cannot be written only costs a recompile next time.
                    let _ = std::fs::create_dir_all(path.parent().expect("cache file has a folder"));
                    let _ = std::fs::write(path, ptx.to_src());
                }
                ptx
            }
        };
        let module = self.ctx.load_module(ptx).map_err(|e| device_error(&format!("loading kernel `{label}`"), e))?;
        let f = module.load_function(rgnn_kernels::cuda::ENTRY).map_err(|e| device_error(&format!("kernel `{label}`"), e))?;
        self.functions.lock().expect("kernel cache").insert(key, f.clone());
        Ok(f)
    }
}

/// `RGNN_CUDA_PIVOT_BLOCKS`: blocks per SM tensor-core pivot attention asks ptxas to fit (1 to
/// 4; unset: 1, registers left to ptxas). A knob for measuring, see `CudaOptions`.
fn pivot_blocks_per_sm() -> Result<u32> {
    match std::env::var("RGNN_CUDA_PIVOT_BLOCKS") {
        Err(_) => Ok(1),
        Ok(v) => match v.trim().parse::<u32>() {
            Ok(n @ 1..=4) => Ok(n),
            _ => Err(RuntimeError::Invalid(format!("RGNN_CUDA_PIVOT_BLOCKS is {v:?}; expected 1, 2, 3 or 4 (blocks per SM)"))),
        },
    }
}

/// The CUDA C a program runs on a graph: lowered for the graph (plan and layouts) and generated
/// (`tensor_cores`: GEMMs and pivot attention on `mma.sync`, in the operand type for f16 / bf16
/// and for f32 with `options.tf32`, as split tf32 for plain f32).
pub fn generate_cuda(
    program: &Program,
    params: &[Tensor],
    graph: &ExecGraph,
    options: &rgnn_codegen::CompileOptions,
    tensor_cores: bool,
) -> Result<(KernelProgram, GraphLayout, rgnn_kernels::cuda::CudaProgram)> {
    let (mut plan, layout) = compile_kernels(program, params, graph, options)
        .map_err(|e| RuntimeError::Invalid(format!("the cuda backend cannot run this model: {e}")))?;
    let shapes: Vec<Vec<usize>> = params.iter().map(|t| t.shape.clone()).collect();
    rgnn_kernels::cuda::absorb_slice_maps(&mut plan, &shapes);
    let index = graph_index(graph, &layout);
    let cuda_options = rgnn_kernels::cuda::CudaOptions {
        storage: options.storage,
        tensor_cores,
        tf32: options.tf32,
        pivot_blocks_per_sm: pivot_blocks_per_sm()?,
    };
    let generated = rgnn_kernels::cuda::generate(&plan, &shapes, &index, &cuda_options)
        .map_err(|e| RuntimeError::Invalid(format!("internal error generating CUDA C: {e}")))?;
    Ok((plan, layout, generated))
}

/// The CUDA backend on device 0.
pub struct CudaBackend {
    gpu: Arc<CudaGpu>,
}

impl CudaBackend {
    pub fn new() -> Result<Self> {
        Ok(CudaBackend { gpu: context()? })
    }
}

/// A captured forward pass. SAFETY of `Send`: a graph exec handle may be launched from any
/// thread once the context is current, which cudarc's `launch` ensures; the session owning it
/// runs one forward pass at a time (`run` takes `&mut self`).
struct ForwardGraph(CudaGraph);
unsafe impl Send for ForwardGraph {}

struct Launch {
    label: String,
    kernel: usize,
    function: CudaFunction,
    config: LaunchConfig,
    /// Device addresses of the kernel's arrays, in parameter order.
    args: Vec<u64>,
}

struct CompiledCuda {
    gpu: Arc<CudaGpu>,
    plan: KernelProgram,
    memory: rgnn_codegen::MemoryPlan,
    storage: DType,
    /// Keeps every device allocation alive (the launches hold raw addresses into them).
    _allocations: Vec<CudaSlice<u8>>,
    launches: Vec<Launch>,
    work: Vec<KernelWork>,
    graph: Option<ForwardGraph>,
    /// (name, device address, bytes, rows, width) of each output.
    outputs: Vec<(String, u64, usize, usize, usize)>,
    device_bytes: usize,
    last_device_seconds: Option<f64>,
}

impl Backend for CudaBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn device(&self) -> String {
        self.gpu.describe()
    }

    fn prepare(
        &self,
        program: &Program,
        params: Vec<Tensor>,
        graph: ExecGraph,
        options: &rgnn_codegen::CompileOptions,
    ) -> Result<Box<dyn Executable>> {
        let gpu = &self.gpu;
        crate::interpreter::check_relations(program, &params, &graph)?;
        // mma.sync with bf16 / tf32 operands needs sm_80; older GPUs get the SIMT kernels, as
        // does RGNN_CUDA_TENSOR_CORES=0 (to compare the two on one device).
        let tensor_cores = gpu.arch.0 >= 8 && std::env::var("RGNN_CUDA_TENSOR_CORES").map_or(true, |v| v != "0");
        let (plan, layout, generated) = generate_cuda(program, &params, &graph, options, tensor_cores)?;
        let index = graph_index(&graph, &layout);
        let memory = rgnn_codegen::plan_memory(&plan, |d| index.rows(d));
        let arrays =
            ArrayLayout::new(&plan, &memory, &generated.dispatches, generated.scratch_elems, &params, &graph, &index, options.storage)?;
        let ArrayLayout { uploads, slot_of, table_slots, outputs_at } = arrays;
        let needed: usize = uploads.iter().map(|u| u.2.max(4)).sum();
        let (free, total) = gpu.ctx.mem_get_info().map_err(|e| device_error("querying free device memory", e))?;
        if needed > free {
            return Err(RuntimeError::OutOfMemory {
                backend: NAME.into(),
                message: format!(
                    "this model on this graph needs {:.1} MiB of device memory; {:.1} MiB of {:.1} MiB are free",
                    needed as f64 / 1048576.0,
                    free as f64 / 1048576.0,
                    total as f64 / 1048576.0
                ),
            });
        }
        let stream = &gpu.stream;
        let mut allocations = vec![];
        let mut base = vec![];
        for (what, contents, bytes) in &uploads {
            let mut slice =
                stream.alloc_zeros::<u8>((*bytes).max(4)).map_err(|e| device_error(&format!("allocating {bytes} bytes for {what}"), e))?;
            if !contents.is_empty() {
                stream.memcpy_htod(contents, &mut slice).map_err(|e| device_error(&format!("uploading {what}"), e))?;
            }
            let ptr = slice.device_ptr(stream).0;
            base.push(ptr);
            allocations.push(slice);
        }
        let layout = ArrayLayout { uploads: vec![], slot_of, table_slots, outputs_at: vec![] };
        let mut launches = vec![];
        for (di, d) in generated.dispatches.iter().enumerate() {
            let function = gpu.function(&d.label, &d.source)?;
            let config = LaunchConfig {
                grid_dim: (d.workgroups[0], d.workgroups[1], d.workgroups[2]),
                block_dim: (d.threads[0], d.threads[1], 1),
                shared_mem_bytes: 0,
            };
            let args = d.bindings.iter().map(|b| layout.address(b.array, di, &base)).collect();
            launches.push(Launch { label: d.label.clone(), kernel: d.kernel, function, config, args });
        }
        let outputs = outputs_at.into_iter().map(|(name, slot, bytes, rows, width)| (name, base[slot], bytes, rows, width)).collect();
        let mut exec = CompiledCuda {
            gpu: gpu.clone(),
            plan,
            memory,
            storage: options.storage,
            _allocations: allocations,
            launches,
            work: rgnn_kernels::gpu::kernel_work(&generated.dispatches),
            graph: None,
            outputs,
            device_bytes: needed,
            last_device_seconds: None,
        };
        exec.capture()?;
        Ok(Box::new(exec))
    }
}

impl CompiledCuda {
    fn enqueue(&self) -> Result<()> {
        self.launches.iter().try_for_each(|l| self.launch(l))
    }

    fn launch(&self, l: &Launch) -> Result<()> {
        let mut builder = self.gpu.stream.launch_builder(&l.function);
        for a in &l.args {
            builder.arg(a);
        }
        // SAFETY: every argument is the address of a live allocation of the size the generated
        // kernel indexes (sizes come from the same plan the kernel was built for).
        unsafe { builder.launch(l.config) }.map_err(|e| device_error(&format!("launching {}", l.label), e))?;
        Ok(())
    }

    /// Record the forward pass once as a CUDA graph.
    fn capture(&mut self) -> Result<()> {
        let stream = &self.gpu.stream;
        stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(|e| device_error("starting graph capture", e))?;
        let enqueued = self.enqueue();
        let graph = stream.end_capture(sys::CUgraphInstantiate_flags(0)).map_err(|e| device_error("capturing the forward pass", e))?;
        enqueued?;
        self.graph = graph.map(ForwardGraph);
        Ok(())
    }
}

impl Executable for CompiledCuda {
    fn run(&mut self) -> Result<Vec<(String, Tensor)>> {
        let stream = self.gpu.stream.clone();
        let start = stream.record_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT)).map_err(|e| device_error("recording an event", e))?;
        match &self.graph {
            Some(g) => g.0.launch().map_err(|e| device_error("replaying the forward pass", e))?,
            None => self.enqueue()?,
        }
        let end = stream.record_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT)).map_err(|e| device_error("recording an event", e))?;
        end.synchronize().map_err(|e| device_error("running the forward pass", e))?;
        self.last_device_seconds = start.elapsed_ms(&end).ok().map(|ms| ms as f64 / 1e3);
        let mut out = vec![];
        for (name, ptr, bytes, rows, width) in &self.outputs {
            let mut host = vec![0u8; *bytes];
            if *bytes > 0 {
                // SAFETY: `ptr` addresses a live allocation of `bytes` bytes.
                unsafe { cudarc::driver::result::memcpy_dtoh_sync(&mut host, *ptr) }
                    .map_err(|e| device_error(&format!("reading `{name}` back"), e))?;
            }
            let data = decode(&host, self.storage);
            check_finite(name, &data, *width)?;
            out.push((name.clone(), Tensor::new(vec![*rows, *width], data)));
        }
        Ok(out)
    }
    fn peak_bytes(&self) -> usize {
        self.device_bytes
    }
    fn plan(&self) -> Option<&KernelProgram> {
        Some(&self.plan)
    }
    fn memory_plan(&self) -> Option<rgnn_codegen::MemoryPlan> {
        Some(self.memory.clone())
    }
    fn device_seconds(&self) -> Option<f64> {
        self.last_device_seconds
    }
    /// Whole forward passes launched one kernel at a time (not the graph), an event recorded
    /// before the first launch and after each, so every kernel reads what the kernels before it
    /// wrote, as in a real run.
    fn kernel_seconds(&mut self, reps: usize) -> Result<Option<Vec<KernelTime>>> {
        let stream = self.gpu.stream.clone();
        let record = || stream.record_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT)).map_err(|e| device_error("recording an event", e));
        let mut times = vec![vec![]; self.launches.len()];
        for _ in 0..reps {
            let mut events = vec![record()?];
            for l in &self.launches {
                self.launch(l)?;
                events.push(record()?);
            }
            events.last().expect("the first event").synchronize().map_err(|e| device_error("running the forward pass", e))?;
            for (k, pair) in events.windows(2).enumerate() {
                let ms = pair[0].elapsed_ms(&pair[1]).map_err(|e| device_error("reading an event's time", e))?;
                times[k].push(ms as f64 / 1e3);
            }
        }
        Ok(Some(
            self.launches
                .iter()
                .zip(&mut times)
                .map(|(l, t)| KernelTime { label: l.label.clone(), kernel: l.kernel, median_s: median(t) })
                .collect(),
        ))
    }
    fn kernel_work(&self) -> Option<Vec<KernelWork>> {
        Some(self.work.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_keys_are_stable_and_separate_architectures() {
        // The FNV-1a offset basis: the hash is the documented function, not a per-process one.
        assert_eq!(stable_hash(&[b"abc"]), stable_hash(&[b"abc"]));
        assert_ne!(ptx_cache_key("k", "sm_80"), ptx_cache_key("k", "sm_90"));
        assert_ne!(ptx_cache_key("k1", "sm_80"), ptx_cache_key("k2", "sm_80"));
        assert_eq!(stable_hash(&[]), 0xcbf2_9ce4_8422_2325);
    }
}

/// The generated CUDA C run on the host: every kernel compiled as plain C++ by a host compiler
/// (`RGNN_HOST_CXX`, default `c++`) with one host thread per CUDA thread, over host buffers laid
/// out exactly as on the device. Slow, and only for testing the CUDA generator where no GPU is:
/// it checks what the generated code computes; what it cannot check is the PTX intrinsics, the
/// launch and the graph capture.
pub mod host_emulation {
    use super::*;

    /// The host C++ compiler: `$RGNN_HOST_CXX`, else the first of `c++`, `g++`, `clang++` that runs.
    pub fn compiler() -> Option<String> {
        let candidates: Vec<String> = match std::env::var("RGNN_HOST_CXX") {
            Ok(cxx) => vec![cxx],
            Err(_) => ["c++", "g++", "clang++"].iter().map(|s| s.to_string()).collect(),
        };
        candidates.into_iter().find(|cxx| std::process::Command::new(cxx).arg("--version").output().is_ok_and(|o| o.status.success()))
    }

    /// Run `program` for `graph` through the CUDA C kernels on the host; outputs as the backends
    /// return them. `tensor_cores`: GEMMs and pivot attention on (emulated) `mma.sync` as the
    /// device backend runs them on sm_80+; otherwise SIMT.
    pub fn run(
        program: &Program,
        params: &[Tensor],
        graph: &ExecGraph,
        options: &rgnn_codegen::CompileOptions,
        tensor_cores: bool,
        cxx: &str,
        workdir: &std::path::Path,
    ) -> Result<Vec<(String, Tensor)>> {
        let fail = |m: String| RuntimeError::Device { backend: "cuda (host emulation)".into(), message: m };
        crate::interpreter::check_relations(program, params, graph)?;
        let (plan, layout, generated) = generate_cuda(program, params, graph, options, tensor_cores)?;
        let index = graph_index(graph, &layout);
        let memory = rgnn_codegen::plan_memory(&plan, |d| index.rows(d));
        let arrays =
            ArrayLayout::new(&plan, &memory, &generated.dispatches, generated.scratch_elems, params, graph, &index, options.storage)?;
        // Host "device memory": u64 words keep every array 8-byte aligned.
        let mut memory_words: Vec<Vec<u64>> = arrays
            .uploads
            .iter()
            .map(|(_, contents, bytes)| {
                let mut words = vec![0u64; (*bytes).max(contents.len()).div_ceil(8).max(1)];
                bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..contents.len()].copy_from_slice(contents);
                words
            })
            .collect();
        let base: Vec<u64> = memory_words.iter_mut().map(|w| w.as_mut_ptr() as u64).collect();
        std::fs::create_dir_all(workdir).map_err(|e| fail(format!("{}: {e}", workdir.display())))?;
        // Compile every kernel (two at a time), then run them in order.
        let libraries: Vec<Result<std::path::PathBuf>> = std::thread::scope(|s| {
            let jobs: Vec<_> = generated
                .dispatches
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    let (cpp, so) = (workdir.join(format!("k{i}.cpp")), workdir.join(format!("k{i}.so")));
                    let source = rgnn_kernels::cuda::host_emulation_source(d);
                    (i, cpp, so, source)
                })
                .collect();
            let halves: Vec<Vec<_>> = jobs.chunks(jobs.len().div_ceil(2).max(1)).map(|c| c.to_vec()).collect();
            let handles: Vec<_> = halves
                .into_iter()
                .map(|half| {
                    s.spawn(move || {
                        half.into_iter()
                            .map(|(i, cpp, so, source)| {
                                std::fs::write(&cpp, source).map_err(|e| fail(e.to_string()))?;
                                let o = std::process::Command::new(cxx)
                                    .args(["-std=c++17", "-O1", "-shared", "-fPIC", "-w", "-o"])
                                    .arg(&so)
                                    .arg(&cpp)
                                    .arg("-lpthread")
                                    .output()
                                    .map_err(|e| fail(e.to_string()))?;
                                if !o.status.success() {
                                    return Err(fail(format!(
                                        "kernel {i} does not compile on the host:\n{}",
                                        String::from_utf8_lossy(&o.stderr)
                                    )));
                                }
                                Ok(so)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().expect("compile thread")).collect()
        });
        for (di, (d, lib)) in generated.dispatches.iter().zip(libraries).enumerate() {
            let lib = lib?;
            let mut args: Vec<u64> = d.bindings.iter().map(|b| arrays.address(b.array, di, &base)).collect();
            // SAFETY: the library was just built from the generated source; its entry point has
            // this signature, and every address points into `memory_words`, sized by the same
            // plan the kernel was generated for.
            unsafe {
                let library = libloading::Library::new(&lib).map_err(|e| fail(e.to_string()))?;
                let launch: libloading::Symbol<unsafe extern "C" fn(u32, u32, u32, u32, u32, *mut u64) -> i32> =
                    library.get(b"rgnn_host_launch").map_err(|e| fail(e.to_string()))?;
                let [gx, gy, gz] = d.workgroups;
                if launch(gx, gy, gz, d.threads[0], d.threads[1], args.as_mut_ptr()) != 0 {
                    return Err(fail(format!("`{}`: could not start its threads", d.label)));
                }
            }
        }
        let mut out = vec![];
        for (name, slot, bytes, rows, width) in &arrays.outputs_at {
            let raw = &bytemuck::cast_slice::<u64, u8>(&memory_words[*slot])[..*bytes];
            out.push((name.clone(), Tensor::new(vec![*rows, *width], decode(raw, options.storage))));
        }
        Ok(out)
    }
}
