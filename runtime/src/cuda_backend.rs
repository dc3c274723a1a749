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
//! Each session has its own stream, so sessions on different threads neither share nor break
//! each other's captures.
//!
//! Tested without a GPU through a host stand-in for the driver and NVRTC that runs the generated
//! CUDA C on the CPU (`tests/cuda_host_driver.rs`: everything here but the PTX and the
//! hardware); its differential tests on a device (`tests/cuda.rs`) and benchmarks
//! (`benches/gpu.sh`) run where a CUDA GPU is present.

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

/// The process's CUDA device 0 and the kernels loaded on it.
pub struct CudaGpu {
    ctx: Arc<CudaContext>,
    name: String,
    /// Compute capability (major, minor).
    arch: (i32, i32),
    /// The CUDA version the driver supports, and NVRTC's (`major.minor`; `?` if not told).
    driver_version: String,
    nvrtc_version: String,
    /// Loaded kernels by source hash.
    functions: Mutex<HashMap<u64, CudaFunction>>,
}

impl CudaGpu {
    pub fn describe(&self) -> String {
        format!("{} (sm_{}{})", self.name, self.arch.0, self.arch.1)
    }

    /// The device with its memory and the driver's and NVRTC's versions (`rgnn backends`).
    pub fn report(&self) -> String {
        let memory = match self.ctx.mem_get_info() {
            Ok((free, total)) => {
                format!(", {:.1} of {:.1} GiB free", free as f64 / (1u64 << 30) as f64, total as f64 / (1u64 << 30) as f64)
            }
            Err(_) => String::new(),
        };
        let sms = self
            .ctx
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_or(String::new(), |n| format!(", {n} SMs"));
        format!("{}{sms}{memory}; driver for CUDA {}, NVRTC {}", self.describe(), self.driver_version, self.nvrtc_version)
    }
}

fn open() -> std::result::Result<CudaGpu, String> {
    // SAFETY: only probes whether the libraries can be loaded.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err("the NVIDIA driver library (libcuda) was not found".into());
    }
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(nvrtc_not_found());
    }
    let ctx = CudaContext::new(0).map_err(|e| format!("no usable CUDA device: {e}"))?;
    let name = ctx.name().map_err(|e| e.to_string())?;
    let arch = ctx.compute_capability().map_err(|e| e.to_string())?;
    let driver_version = driver_cuda_version().unwrap_or_else(|| "?".into());
    let nvrtc_version = nvrtc_version().unwrap_or_else(|| "?".into());
    Ok(CudaGpu { ctx, name, arch, driver_version, nvrtc_version, functions: Mutex::new(HashMap::new()) })
}

/// The process's CUDA device (opened once).
pub fn context() -> Result<Arc<CudaGpu>> {
    static GPU: OnceLock<std::result::Result<Arc<CudaGpu>, String>> = OnceLock::new();
    GPU.get_or_init(|| open().map(Arc::new)).clone().map_err(unavailable)
}

/// The file names NVRTC is loaded by (cudarc's list, in its order; the Unix ones).
fn nvrtc_names() -> Vec<String> {
    let mut names: Vec<String> = vec![];
    for name in cudarc::get_lib_name_candidates("nvrtc") {
        if name.starts_with("libnvrtc.so") && !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// Folders where a CUDA toolkit usually keeps its libraries: `LD_LIBRARY_PATH`, `$CUDA_HOME`,
/// `$CUDA_PATH`, `/usr/local/cuda*`, the system's library folders.
fn cuda_library_dirs() -> Vec<std::path::PathBuf> {
    use std::path::PathBuf;
    let mut dirs: Vec<PathBuf> = std::env::var_os("LD_LIBRARY_PATH").map(|v| std::env::split_paths(&v).collect()).unwrap_or_default();
    let mut roots: Vec<PathBuf> = ["CUDA_HOME", "CUDA_PATH", "CUDA_ROOT"].iter().filter_map(std::env::var_os).map(PathBuf::from).collect();
    roots.push(PathBuf::from("/usr/local/cuda"));
    if let Ok(entries) = std::fs::read_dir("/usr/local") {
        let mut versions: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("cuda-")))
            .collect();
        versions.sort();
        roots.extend(versions.into_iter().rev());
    }
    for root in roots {
        dirs.extend(["lib64", "lib", "targets/x86_64-linux/lib", "targets/sbsa-linux/lib"].map(|sub| root.join(sub)));
    }
    dirs.extend(["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib"].map(PathBuf::from));
    dirs
}

/// The first NVRTC library in `dirs` (`libnvrtc.so.<version>`, not its builtins).
fn find_nvrtc(dirs: &[std::path::PathBuf]) -> Option<std::path::PathBuf> {
    dirs.iter().find_map(|dir| {
        let mut found: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("libnvrtc.so.")))
            .collect();
        found.sort();
        found.into_iter().next()
    })
}

/// Why NVRTC cannot be loaded, and what to do. cudarc loads it by a fixed list of names
/// (`libnvrtc.so`, `libnvrtc.so.12`, ...); a CUDA 13 toolkit without its development links has
/// only `libnvrtc.so.13`, so where such a file is seen the message says how to link it.
fn nvrtc_not_found() -> String {
    nvrtc_not_found_message(&nvrtc_names(), find_nvrtc(&cuda_library_dirs()).as_deref())
}

fn nvrtc_not_found_message(names: &[String], elsewhere: Option<&std::path::Path>) -> String {
    let names = names.join(", ");
    match elsewhere {
        Some(path) => {
            let dir = path.parent().map_or(String::new(), |d| format!("{}:", d.display()));
            format!(
                "NVRTC was not found under the names rgnn loads it by ({names}), but {} is there: link it under one of them \
                 on the library path, e.g. `mkdir -p ~/.local/lib/rgnn-nvrtc && ln -sf {} ~/.local/lib/rgnn-nvrtc/libnvrtc.so` \
                 and `export LD_LIBRARY_PATH=~/.local/lib/rgnn-nvrtc:{dir}$LD_LIBRARY_PATH`",
                path.display(),
                path.display()
            )
        }
        None => format!(
            "NVRTC (libnvrtc, part of the CUDA toolkit, 12.x or 13.x) was not found under the names {names}: install it \
             (e.g. `pip install nvidia-cuda-nvrtc-cu12`, or the toolkit's cuda-nvrtc package) and put its folder on LD_LIBRARY_PATH"
        ),
    }
}

/// `major.minor` of a CUDA version number as the driver reports it (12080 → 12.8).
fn cuda_version_text(v: i32) -> String {
    format!("{}.{}", v / 1000, (v % 1000) / 10)
}

/// The CUDA version the driver supports (`cuDriverGetVersion`), as `major.minor`.
fn driver_cuda_version() -> Option<String> {
    let mut v = 0i32;
    // SAFETY: only called once libcuda is known to load; writes one int.
    let status = unsafe { sys::cuDriverGetVersion(&mut v) };
    (status == sys::CUresult::CUDA_SUCCESS).then(|| cuda_version_text(v))
}

/// The loaded NVRTC's version, as `major.minor`.
fn nvrtc_version() -> Option<String> {
    let (mut major, mut minor) = (0i32, 0i32);
    // SAFETY: only called once libnvrtc is known to load; writes two ints.
    let status = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    (status == cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS).then(|| format!("{major}.{minor}"))
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

/// The cache key of a kernel: its source, the target architecture, the NVRTC version that
/// compiles it (PTX from a newer NVRTC may need a newer driver) and this rgnn's version.
pub fn ptx_cache_key(source: &str, arch: &str, nvrtc_version: &str) -> u64 {
    stable_hash(&[source.as_bytes(), arch.as_bytes(), nvrtc_version.as_bytes(), env!("CARGO_PKG_VERSION").as_bytes()])
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
        return Err(unavailable(nvrtc_not_found()));
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
        let key = ptx_cache_key(source, &arch, &self.nvrtc_version);
        if let Some(f) = self.functions.lock().expect("kernel cache").get(&key) {
            return Ok(f.clone());
        }
        let cached = ptx_cache_dir().map(|d| d.join(format!("{key:016x}.ptx")));
        // A cached file that does not load (truncated, corrupt, or written by another driver
        // setup) is compiled again and replaced.
        let from_cache = cached
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .filter(|text| !text.contains('\0'))
            .and_then(|text| self.load(label, cudarc::nvrtc::Ptx::from_src(text)).ok());
        let f = match from_cache {
            Some(f) => f,
            None => {
                let ptx = cudarc::nvrtc::compile_ptx_with_opts(source, nvrtc_options(&arch)).map_err(|e| RuntimeError::Device {
                    backend: NAME.into(),
                    message: format!("NVRTC failed on kernel `{label}`: {e}"),
                })?;
                let text = ptx.to_src();
                let f = self.load(label, ptx)?;
                if let Some(path) = &cached {
                    // A cache that cannot be written only costs a recompile next time. Written
                    // aside and renamed, so another process never reads half a file.
                    let _ = std::fs::create_dir_all(path.parent().expect("cache file has a folder"));
                    let partial = path.with_extension(format!("ptx.{}.partial", std::process::id()));
                    if std::fs::write(&partial, text).is_ok() && std::fs::rename(&partial, path).is_err() {
                        let _ = std::fs::remove_file(&partial);
                    }
                }
                f
            }
        };
        self.functions.lock().expect("kernel cache").insert(key, f.clone());
        Ok(f)
    }

    /// The kernel of every dispatch, in order. Distinct sources not yet loaded are compiled and
    /// loaded on as many threads as the machine has (NVRTC and the driver's PTX compiler are
    /// thread-safe): a model's first run on a graph would otherwise wait for each in turn.
    fn functions_of(&self, dispatches: &[rgnn_kernels::gpu::Dispatch]) -> Result<Vec<CudaFunction>> {
        let mut seen = std::collections::HashSet::new();
        let pending: Vec<&rgnn_kernels::gpu::Dispatch> = dispatches.iter().filter(|d| seen.insert(d.source.as_str())).collect();
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, pending.len().max(1));
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers)
                .map(|w| {
                    let pending = &pending;
                    s.spawn(move || pending.iter().skip(w).step_by(workers).try_for_each(|d| self.function(&d.label, &d.source).map(drop)))
                })
                .collect();
            handles.into_iter().try_for_each(|h| h.join().expect("kernel compile thread"))
        })?;
        dispatches.iter().map(|d| self.function(&d.label, &d.source)).collect()
    }

    /// Load PTX as a module and find the kernel's entry point in it.
    fn load(&self, label: &str, ptx: cudarc::nvrtc::Ptx) -> Result<CudaFunction> {
        let module = self.ctx.load_module(ptx).map_err(|e| {
            let mut what = format!("loading kernel `{label}`");
            if e.to_string().contains("UNSUPPORTED_PTX_VERSION") {
                what.push_str(&format!(
                    " (its PTX comes from NVRTC {}, newer than this driver's CUDA {}: use an NVRTC no newer than the driver, or update the driver)",
                    self.nvrtc_version, self.driver_version
                ));
            }
            device_error(&what, e)
        })?;
        module.load_function(rgnn_kernels::cuda::ENTRY).map_err(|e| device_error(&format!("kernel `{label}`"), e))
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

/// The generated kernels index arrays with 32-bit unsigned integers: an array of more elements
/// (a wide per-row buffer on a very large graph) is an error naming it, never a wrapped index.
fn check_u32_elements(plan: &KernelProgram, dispatches: &[rgnn_kernels::gpu::Dispatch]) -> Result<()> {
    use rgnn_kernels::gpu::ArrayRef;
    for d in dispatches {
        if let Some(b) = d.bindings.iter().find(|b| b.len > u32::MAX as usize) {
            let what = match b.array {
                ArrayRef::Data(id) => {
                    let buffer = &plan.buffers[id.0];
                    format!("buffer `{}` ({} wide)", buffer.name, buffer.width)
                }
                ArrayRef::Param(p) => format!("parameter {}", p.0),
                ArrayRef::Index(ix) => format!("index array `{}`", ix.name()),
                ArrayRef::Table(t) => format!("table {t}"),
                ArrayRef::Scratch(s) => format!("scratch {s}"),
            };
            return Err(RuntimeError::Invalid(format!(
                "{what} of kernel `{}` holds {} elements; the CUDA kernels index arrays with 32-bit integers (at most {}): \
                 run this graph in parts, or with fewer channels or heads",
                d.label,
                b.len,
                u32::MAX
            )));
        }
    }
    Ok(())
}

/// The CUDA backend on device 0.
pub struct CudaBackend {
    gpu: Arc<CudaGpu>,
    /// GEMMs and pivot attention on tensor cores (sm_80+); `None`: unless
    /// `RGNN_CUDA_TENSOR_CORES=0`.
    tensor_cores: Option<bool>,
}

impl CudaBackend {
    pub fn new() -> Result<Self> {
        Ok(CudaBackend { gpu: context()?, tensor_cores: None })
    }

    /// Choose the tensor-core kernels (on sm_80+) or the SIMT ones, whatever the environment says.
    pub fn with_tensor_cores(mut self, on: bool) -> Self {
        self.tensor_cores = Some(on);
        self
    }

    /// The device, its free memory and the driver's and NVRTC's versions.
    pub fn report(&self) -> String {
        self.gpu.report()
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
    /// This session's own stream: its forward pass is captured on it, and capture is refused
    /// on the legacy default stream (what cudarc's `default_stream()` gives) and would take in
    /// other sessions' work if they shared one.
    stream: Arc<CudaStream>,
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
        let wanted = self.tensor_cores.unwrap_or_else(|| std::env::var("RGNN_CUDA_TENSOR_CORES").map_or(true, |v| v != "0"));
        let tensor_cores = gpu.arch.0 >= 8 && wanted;
        let (plan, layout, generated) = generate_cuda(program, &params, &graph, options, tensor_cores)?;
        check_u32_elements(&plan, &generated.dispatches)?;
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
        let stream = gpu.ctx.new_stream().map_err(|e| device_error("creating a CUDA stream", e))?;
        let mut allocations = vec![];
        let mut base = vec![];
        for (what, contents, bytes) in &uploads {
            let mut slice = stream.alloc_zeros::<u8>((*bytes).max(4)).map_err(|e| {
                let free = gpu.ctx.mem_get_info().map_or(String::new(), |(free, _)| format!(" ({:.1} MiB free)", free as f64 / 1048576.0));
                device_error(&format!("allocating {bytes} bytes for {what}{free}, {needed} bytes in all for this session"), e)
            })?;
            if !contents.is_empty() {
                stream.memcpy_htod(contents, &mut slice).map_err(|e| device_error(&format!("uploading {what}"), e))?;
            }
            let ptr = slice.device_ptr(&stream).0;
            base.push(ptr);
            allocations.push(slice);
        }
        let layout = ArrayLayout { uploads: vec![], slot_of, table_slots, outputs_at: vec![] };
        let mut launches = vec![];
        let functions = gpu.functions_of(&generated.dispatches)?;
        for (di, (d, function)) in generated.dispatches.iter().zip(functions).enumerate() {
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
            stream,
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
        exec.warm_up()?;
        exec.capture()?;
        Ok(Box::new(exec))
    }
}

impl CompiledCuda {
    fn enqueue(&self) -> Result<()> {
        self.launches.iter().try_for_each(|l| self.launch(l))
    }

    fn launch(&self, l: &Launch) -> Result<()> {
        let mut builder = self.stream.launch_builder(&l.function);
        for a in &l.args {
            builder.arg(a);
        }
        // SAFETY: every argument is the address of a live allocation of the size the generated
        // kernel indexes (sizes come from the same plan the kernel was built for).
        unsafe { builder.launch(l.config) }.map_err(|e| device_error(&format!("launching {}", l.label), e))?;
        Ok(())
    }

    /// One forward pass launched kernel by kernel before the capture. Drivers before CUDA 12.3
    /// cannot load a lazily loaded kernel (the default since 12.2) inside a stream capture; this
    /// loads every kernel first. A launch the device refuses is named here, and a kernel that
    /// faults fails `prepare`, not the first run.
    fn warm_up(&self) -> Result<()> {
        self.enqueue()?;
        self.stream.synchronize().map_err(|e| device_error("running the forward pass once before capturing it", e))
    }

    /// Record the forward pass once as a CUDA graph, and upload it so that the first replay
    /// costs what the others do.
    fn capture(&mut self) -> Result<()> {
        let stream = &self.stream;
        stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(|e| device_error("starting graph capture", e))?;
        let enqueued = self.enqueue();
        let graph = stream.end_capture(sys::CUgraphInstantiate_flags(0));
        // A launch that failed explains more than the capture it invalidated.
        enqueued?;
        let graph = graph.map_err(|e| device_error("capturing the forward pass", e))?;
        if let Some(g) = &graph {
            g.upload().map_err(|e| device_error("uploading the captured forward pass", e))?;
        }
        self.graph = graph.map(ForwardGraph);
        Ok(())
    }
}

impl Executable for CompiledCuda {
    fn run(&mut self) -> Result<Vec<(String, Tensor)>> {
        let stream = self.stream.clone();
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
                // SAFETY: `ptr` addresses a live allocation of `bytes` bytes; the copy is on this
                // session's stream, after the forward pass, and waited for below.
                unsafe { cudarc::driver::result::memcpy_dtoh_async(&mut host, *ptr, stream.cu_stream()) }
                    .map_err(|e| device_error(&format!("reading `{name}` back"), e))?;
                stream.synchronize().map_err(|e| device_error(&format!("reading `{name}` back"), e))?;
            }
            let data = decode(&host, self.storage);
            check_finite(name, &data, *width, self.storage)?;
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
        let stream = self.stream.clone();
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
        assert_ne!(ptx_cache_key("k", "sm_80", "12.9"), ptx_cache_key("k", "sm_90", "12.9"));
        assert_ne!(ptx_cache_key("k1", "sm_80", "12.9"), ptx_cache_key("k2", "sm_80", "12.9"));
        assert_ne!(ptx_cache_key("k", "sm_90", "12.9"), ptx_cache_key("k", "sm_90", "13.0"));
        assert_eq!(stable_hash(&[]), 0xcbf2_9ce4_8422_2325);
    }

    #[test]
    fn arrays_beyond_u32_indexing_are_an_error_naming_them() {
        use rgnn_kernels::gpu::{ArrayRef, Binding, Dispatch, Elem};
        let binding = |len: usize| Binding {
            array: ArrayRef::Param(rgnn_ir::ParamId(3)),
            elem: Elem::F32,
            chunk: 0,
            chunk_elems: len,
            len,
            writable: false,
        };
        let dispatch = |len: usize| Dispatch::new("k2 gemm".into(), String::new(), "k", vec![binding(len)], [1, 1, 1], [32, 1], vec![]);
        let plan = KernelProgram::default();
        assert!(check_u32_elements(&plan, &[dispatch(u32::MAX as usize)]).is_ok());
        let e = check_u32_elements(&plan, &[dispatch(u32::MAX as usize + 1)]).unwrap_err().to_string();
        assert!(e.contains("parameter 3 of kernel `k2 gemm` holds 4294967296 elements"), "{e}");
    }

    #[test]
    fn nvrtc_under_another_name_is_found_and_named_in_the_error() {
        let dir = std::env::temp_dir().join(format!("rgnn-nvrtc-search-{}", std::process::id()));
        let (empty, lib) = (dir.join("empty"), dir.join("lib64"));
        std::fs::create_dir_all(&empty).unwrap();
        std::fs::create_dir_all(&lib).unwrap();
        for f in ["libnvrtc-builtins.so.13.0", "libnvrtc.so.13", "libcudart.so.13"] {
            std::fs::write(lib.join(f), b"").unwrap();
        }
        let found = find_nvrtc(&[dir.join("missing"), empty.clone(), lib.clone()]);
        assert_eq!(found.as_deref(), Some(lib.join("libnvrtc.so.13").as_path()));
        assert_eq!(find_nvrtc(&[empty]), None);

        let names = vec!["libnvrtc.so".to_string(), "libnvrtc.so.12".to_string()];
        let linked = nvrtc_not_found_message(&names, found.as_deref());
        assert!(linked.contains("libnvrtc.so, libnvrtc.so.12"), "{linked}");
        assert!(linked.contains(&format!("ln -sf {}", lib.join("libnvrtc.so.13").display())), "{linked}");
        assert!(linked.contains(&format!("LD_LIBRARY_PATH=~/.local/lib/rgnn-nvrtc:{}:$LD_LIBRARY_PATH", lib.display())), "{linked}");
        let missing = nvrtc_not_found_message(&names, None);
        assert!(missing.contains("was not found under the names libnvrtc.so, libnvrtc.so.12"), "{missing}");
        assert_eq!(cuda_version_text(12080), "12.8");
        assert_eq!(cuda_version_text(13000), "13.0");
        std::fs::remove_dir_all(&dir).unwrap();
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
        check_u32_elements(&plan, &generated.dispatches)?;
        let index = graph_index(graph, &layout);
        let memory = rgnn_codegen::plan_memory(&plan, |d| index.rows(d));
        let arrays =
            ArrayLayout::new(&plan, &memory, &generated.dispatches, generated.scratch_elems, params, graph, &index, options.storage)?;
        // Host "device memory": u64 words keep every array 8-byte aligned. What no upload fills
        // (the arena, outputs, scratch) starts as all ones, a NaN in f32, f16 and bf16: on the
        // device the arena holds earlier kernels' and runs' values, so a kernel that reads
        // what no kernel wrote must show as a wrong output here, not pass on zeros.
        let mut memory_words: Vec<Vec<u64>> = arrays
            .uploads
            .iter()
            .map(|(_, contents, bytes)| {
                let fill = if contents.is_empty() { u64::MAX } else { 0 };
                let mut words = vec![fill; (*bytes).max(contents.len()).div_ceil(8).max(1)];
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
            let args: Vec<u64> = d.bindings.iter().map(|b| arrays.address(b.array, di, &base)).collect();
            // As `cuLaunchKernel` takes them: a pointer to each parameter's value.
            let mut params: Vec<*mut std::ffi::c_void> = args.iter().map(|a| a as *const u64 as *mut std::ffi::c_void).collect();
            // SAFETY: the library was just built from the generated source; its entry point has
            // this signature, and every address points into `memory_words`, sized by the same
            // plan the kernel was generated for.
            unsafe {
                let library = libloading::Library::new(&lib).map_err(|e| fail(e.to_string()))?;
                let launch: libloading::Symbol<unsafe extern "C" fn(u32, u32, u32, u32, u32, *mut *mut std::ffi::c_void) -> i32> =
                    library.get(b"rgnn_host_launch").map_err(|e| fail(e.to_string()))?;
                let [gx, gy, gz] = d.workgroups;
                if launch(gx, gy, gz, d.threads[0], d.threads[1], params.as_mut_ptr()) != 0 {
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
