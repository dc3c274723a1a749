//! Backends behind one trait. Every backend runs the same program; the CPU backend is also the
//! reference for the others. A backend that cannot run here says so as an error value.

use crate::graph::ExecGraph;
use crate::layout::GraphLayout;
use crate::{Result, RuntimeError, Tensor};
use rgnn_ir::level2::{BufferRole, DType, Kernel, KernelProgram};
use rgnn_ir::Program;
use rgnn_kernels::cpu::{GraphIndex, Param};

/// Which backend to use (`--backend`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// CUDA if present, else wgpu on a real GPU, else CPU.
    Auto,
    Cpu,
    Wgpu,
    Cuda,
}

impl std::str::FromStr for BackendKind {
    type Err = RuntimeError;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "auto" => BackendKind::Auto,
            "cpu" => BackendKind::Cpu,
            "wgpu" => BackendKind::Wgpu,
            "cuda" => BackendKind::Cuda,
            other => return Err(RuntimeError::Invalid(format!("unknown backend {other:?} (auto, cpu, wgpu, cuda)"))),
        })
    }
}

/// A program prepared for one graph on one device.
pub trait Executable: Send {
    /// One forward pass; outputs as `[rows, width]` tensors in program output order.
    fn run(&mut self) -> Result<Vec<(String, Tensor)>>;
    /// Bytes of device memory the last run needed at its peak (0 if unknown).
    fn peak_bytes(&self) -> usize;
    /// The kernel program it runs, if it was compiled (`None`: the level-1 interpreter runs).
    fn plan(&self) -> Option<&KernelProgram> {
        None
    }
    /// The memory plan of the kernel program for this graph, if compiled.
    fn memory_plan(&self) -> Option<rgnn_codegen::MemoryPlan> {
        None
    }
    /// Device time of the last run, where the device measures it (CUDA events).
    fn device_seconds(&self) -> Option<f64> {
        None
    }
    /// Each kernel's median device time over `reps` forward passes, in launch order, where the
    /// device measures it (CUDA: an event after every launch); `None` elsewhere.
    fn kernel_seconds(&mut self, reps: usize) -> Result<Option<Vec<KernelTime>>> {
        let _ = reps;
        Ok(None)
    }
    /// Per level-2 kernel, the bytes it must move and the flops of its matrix products, where
    /// the backend generated the kernels it times (CUDA); `None` elsewhere.
    fn kernel_work(&self) -> Option<Vec<KernelWork>> {
        None
    }
}

pub use rgnn_kernels::gpu::KernelWork;

/// One kernel's time (see [`Executable::kernel_seconds`]).
#[derive(Clone, Debug, PartialEq)]
pub struct KernelTime {
    /// The dispatch's label (`k4 traversal (columns)`, ...).
    pub label: String,
    /// The level-2 kernel it is part of.
    pub kernel: usize,
    pub median_s: f64,
}

/// The median of `times` (sorted in place); 0 for none.
pub fn median(times: &mut [f64]) -> f64 {
    times.sort_by(|a, b| a.total_cmp(b));
    match times.len() {
        0 => 0.0,
        n if n % 2 == 1 => times[n / 2],
        n => 0.5 * (times[n / 2 - 1] + times[n / 2]),
    }
}

/// An output with a NaN or infinity is an error naming its first such element and the likely
/// cause: graph files and weights are checked finite when loaded, so what is left is overflow
/// in the computation, most often in f16 storage (largest finite value 65504).
pub(crate) fn check_finite(name: &str, data: &[f32], width: usize, storage: DType) -> Result<()> {
    let Some(i) = data.iter().position(|x| !x.is_finite()) else { return Ok(()) };
    let w = width.max(1);
    let hint = match storage {
        DType::F16 => "; f16 storage holds magnitudes up to 65504 only: store in bf16 or f32 instead",
        _ => "",
    };
    Err(RuntimeError::Invalid(format!(
        "output `{name}` has a non-finite value {} at row {}, column {}: with finite inputs and weights this is \
         overflow in the computation{hint}",
        data[i],
        i / w,
        i % w
    )))
}

/// A device that can run programs.
pub trait Backend {
    /// `cpu`, `wgpu`, `cuda`.
    fn name(&self) -> &'static str;
    /// Human-readable device description.
    fn device(&self) -> String;
    /// Take a program, its evaluated parameters and the graph; return something to run.
    fn prepare(
        &self,
        program: &Program,
        params: Vec<Tensor>,
        graph: ExecGraph,
        options: &rgnn_codegen::CompileOptions,
    ) -> Result<Box<dyn Executable>>;
}

/// Lower `program` to kernels for `graph`: choose compaction per relation, build the layouts,
/// record the decisions in the plan. Buffers get the requested storage type.
pub fn compile_kernels(
    program: &Program,
    params: &[Tensor],
    graph: &ExecGraph,
    options: &rgnn_codegen::CompileOptions,
) -> std::result::Result<(KernelProgram, GraphLayout), rgnn_codegen::Unsupported> {
    let mut plan = rgnn_codegen::lower_with(program, options.lower)?;
    // Relations: every id in the graph and every slice of a per-relation weight.
    let mut num_relations = graph.rel.iter().max().map_or(1, |&m| m as usize + 1);
    for k in &plan.kernels {
        if let Kernel::Gemm(g) = k {
            if g.select == rgnn_ir::WeightSelect::Relation {
                num_relations = num_relations.max(params[g.weight.0].shape[0]);
            }
        }
    }
    let (edges, unique) = GraphLayout::unique_sources_per_relation(graph, num_relations);
    let compaction = rgnn_codegen::choose_compaction(&edges, &unique);
    let compact: Vec<bool> = compaction.iter().map(|c| c.compacted).collect();
    let layout = GraphLayout::with_compaction(graph, num_relations, &compact);
    plan.compaction = compaction.iter().map(|c| (c.edges, c.unique_sources, c.compacted)).collect();
    for b in &mut plan.buffers {
        b.dtype = options.storage;
    }
    Ok((plan, layout))
}

/// The CPU backend: the program lowered to kernel templates (`rgnn-kernels`) over the graph's
/// layouts; a program the lowering does not cover yet runs on the level-1 interpreter.
pub struct CpuBackend;

/// A kernel program with its graph layouts and parameters, ready to run on the CPU.
struct CompiledCpu {
    plan: KernelProgram,
    params: Vec<Tensor>,
    graph: ExecGraph,
    layout: GraphLayout,
    /// Planned once per graph: sizes depend only on the plan and the graph.
    memory: rgnn_codegen::MemoryPlan,
    /// Intermediate buffers kept from one run to the next.
    pool: rgnn_kernels::cpu::BufferPool,
}

/// The templates' view of a graph and its layouts.
pub(crate) fn graph_index<'a>(g: &'a ExecGraph, l: &'a GraphLayout) -> GraphIndex<'a> {
    GraphIndex {
        num_nodes: g.num_nodes,
        type_offsets: &g.type_offsets,
        src: &g.src,
        dst: &g.dst,
        rel: &g.rel,
        dst_ptr: &l.dst_ptr,
        dst_edges: &l.dst_edges,
        seg_ptr: &l.seg_ptr,
        seg_dst: &l.seg_dst,
        seg_rel: &l.seg_rel,
        node_seg_ptr: &l.node_seg_ptr,
        edge_segment: &l.edge_segment,
        compact_ptr: &l.compact_ptr,
        compact_src: &l.compact_src,
        compact_rel: &l.compact_rel,
        edge_compact_row: &l.edge_compact_row,
        rel_ptr: &l.rel_ptr,
        rel_edges: &l.rel_edges,
        pair: g.pair.as_ref().map(|(b, n, m)| (*b, *n, m.as_slice())),
    }
}

impl Executable for CompiledCpu {
    fn run(&mut self) -> Result<Vec<(String, Tensor)>> {
        let index = graph_index(&self.graph, &self.layout);
        let params: Vec<Param> = self.params.iter().map(|t| Param { shape: &t.shape, data: &t.data }).collect();
        let mut buffers = vec![None; self.plan.buffers.len()];
        for (i, b) in self.plan.buffers.iter().enumerate() {
            if let BufferRole::Input(name) = &b.role {
                let x = self.graph.inputs.get(name).ok_or_else(|| RuntimeError::Mismatch(format!("the graph has no input `{name}`")))?;
                buffers[i] = Some(x.data.clone());
            }
        }
        let mut buffers = rgnn_kernels::cpu::execute(&self.plan, &params, &index, buffers, &mut self.pool);
        let mut out = vec![];
        for (k, (name, b)) in self.plan.outputs.iter().enumerate() {
            let info = &self.plan.buffers[b.0];
            let named_again = self.plan.outputs[k + 1..].iter().any(|(_, later)| later == b);
            let data = if named_again { buffers[b.0].clone() } else { buffers[b.0].take() };
            let data = data.ok_or_else(|| RuntimeError::Invalid(format!("output `{name}` was not computed")))?;
            check_finite(name, &data, info.width, DType::F32)?;
            out.push((name.clone(), Tensor::new(vec![data.len() / info.width.max(1), info.width], data)));
        }
        Ok(out)
    }
    /// The planned arena plus the persistent pool (inputs, outputs); the CPU executor frees each
    /// buffer after its last reader, so a run stays at or below this.
    fn peak_bytes(&self) -> usize {
        self.memory.planned_bytes + self.memory.persistent_bytes
    }
    fn plan(&self) -> Option<&KernelProgram> {
        Some(&self.plan)
    }
    fn memory_plan(&self) -> Option<rgnn_codegen::MemoryPlan> {
        Some(self.memory.clone())
    }
}

struct CpuExecutable {
    program: Program,
    params: Vec<Tensor>,
    graph: ExecGraph,
    peak: usize,
}

impl Executable for CpuExecutable {
    fn run(&mut self) -> Result<Vec<(String, Tensor)>> {
        let out = crate::interpreter::run(&self.program, &self.params, &self.graph)?;
        self.peak = out.iter().map(|(_, t)| t.numel() * 4).sum();
        Ok(out)
    }
    fn peak_bytes(&self) -> usize {
        self.peak
    }
}

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }
    fn device(&self) -> String {
        format!("CPU ({} threads)", rayon::current_num_threads())
    }
    fn prepare(
        &self,
        program: &Program,
        params: Vec<Tensor>,
        graph: ExecGraph,
        options: &rgnn_codegen::CompileOptions,
    ) -> Result<Box<dyn Executable>> {
        crate::interpreter::check_relations(program, &params, &graph)?;
        if options.storage != rgnn_ir::level2::DType::F32 {
            return Err(RuntimeError::Invalid(format!(
                "the cpu backend stores and computes in f32; {:?} storage needs a GPU backend (wgpu or cuda)",
                options.storage
            )));
        }
        match compile_kernels(program, &params, &graph, options) {
            Ok((plan, layout)) => {
                let index = graph_index(&graph, &layout);
                let memory = rgnn_codegen::plan_memory(&plan, |d| index.rows(d));
                check_host_memory(memory.planned_bytes.saturating_add(memory.persistent_bytes))?;
                Ok(Box::new(CompiledCpu { plan, params, graph, layout, memory, pool: Default::default() }))
            }
            Err(_) => Ok(Box::new(CpuExecutable { program: program.clone(), params, graph, peak: 0 })),
        }
    }
}

/// Whether `bytes` (the memory plan's peak with inputs and outputs) can be had at all: an
/// allocation the system refuses outright is an error here, where the executor's own would abort
/// the process. (Reserved, never touched, then given back.)
fn check_host_memory(bytes: usize) -> Result<()> {
    let mut probe: Vec<u8> = Vec::new();
    probe.try_reserve_exact(bytes).map_err(|_| RuntimeError::OutOfMemory {
        backend: "cpu".into(),
        message: format!("this graph needs about {} MiB of host memory, and the system refuses that much", bytes >> 20),
    })
}

/// The backend for a choice; an unavailable one is an error, never a panic. `Auto` takes CUDA when
/// the driver and a device are there, else wgpu on a real GPU (a software adapter is slower than
/// the CPU backend), else the CPU.
pub fn select_backend(kind: BackendKind) -> Result<Box<dyn Backend>> {
    match kind {
        BackendKind::Cpu => Ok(Box::new(CpuBackend)),
        BackendKind::Auto => {
            if let Ok(b) = crate::cuda_backend::CudaBackend::new() {
                return Ok(Box::new(b));
            }
            match crate::wgpu_backend::WgpuBackend::new() {
                Ok(b) if b.context().is_real_gpu() => Ok(Box::new(b)),
                _ => Ok(Box::new(CpuBackend)),
            }
        }
        BackendKind::Wgpu => Ok(Box::new(crate::wgpu_backend::WgpuBackend::new()?)),
        BackendKind::Cuda => Ok(Box::new(crate::cuda_backend::CudaBackend::new()?)),
    }
}

/// One backend's state on this machine (`rgnn backends`).
#[derive(Clone, Debug)]
pub struct BackendReport {
    /// `cpu`, `wgpu`, `cuda`.
    pub name: &'static str,
    /// The device it would run on and what it offers, or why it cannot run here.
    pub status: std::result::Result<String, String>,
}

/// Every backend's state here, and the one `BackendKind::Auto` picks. Opens each device (as a
/// session would; the contexts are kept for the process).
pub fn backend_reports() -> (Vec<BackendReport>, &'static str) {
    let reason = |e: RuntimeError| match e {
        RuntimeError::BackendUnavailable { reason, .. } => reason,
        other => other.to_string(),
    };
    let wgpu = crate::wgpu_backend::WgpuBackend::new().map_err(reason).map(|b| {
        let ctx = b.context();
        let mut s = ctx.describe();
        if !ctx.is_real_gpu() {
            s.push_str("; a software adapter: `auto` does not pick it");
        }
        if !ctx.has_f16() {
            s.push_str("; no f16 storage");
        }
        s
    });
    let cuda = crate::cuda_backend::CudaBackend::new().map_err(reason).map(|b| b.report());
    let reports = vec![
        BackendReport { name: "cpu", status: Ok(CpuBackend.device()) },
        BackendReport { name: "wgpu", status: wgpu },
        BackendReport { name: "cuda", status: cuda },
    ];
    let auto = select_backend(BackendKind::Auto).map_or("cpu", |b| b.name());
    (reports, auto)
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_even_and_no_samples() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }
}
