//! Backends behind one trait. Every backend runs the same program; the CPU backend is also the
//! reference for the others. A backend that cannot run here says so as an error value.

use crate::graph::ExecGraph;
use crate::{Result, RuntimeError, Tensor};
use rgnn_ir::Program;

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
}

/// A device that can run programs.
pub trait Backend {
    /// `cpu`, `wgpu`, `cuda`.
    fn name(&self) -> &'static str;
    /// Human-readable device description.
    fn device(&self) -> String;
    /// Take a program, its evaluated parameters and the graph; return something to run.
    fn prepare(&self, program: &Program, params: Vec<Tensor>, graph: ExecGraph) -> Result<Box<dyn Executable>>;
}

/// The CPU backend. Today it evaluates level 1 with the reference interpreter; compiled
/// template kernels replace that as the compiler lands, with the interpreter kept as the oracle.
pub struct CpuBackend;

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
    fn prepare(&self, program: &Program, params: Vec<Tensor>, graph: ExecGraph) -> Result<Box<dyn Executable>> {
        Ok(Box::new(CpuExecutable { program: program.clone(), params, graph, peak: 0 }))
    }
}

/// The backend for a choice; an unavailable one is an error, never a panic.
pub fn select_backend(kind: BackendKind) -> Result<Box<dyn Backend>> {
    match kind {
        BackendKind::Auto | BackendKind::Cpu => Ok(Box::new(CpuBackend)),
        BackendKind::Wgpu => Err(RuntimeError::BackendUnavailable {
            backend: "wgpu".into(),
            reason: "this build of rgnn has no WGSL backend yet; use --backend cpu".into(),
        }),
        BackendKind::Cuda => Err(RuntimeError::BackendUnavailable {
            backend: "cuda".into(),
            reason: "this build of rgnn has no CUDA backend yet; use --backend cpu".into(),
        }),
    }
}
