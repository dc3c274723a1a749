//! A session: a model compiled for one graph on one backend, ready to run repeatedly.

use crate::backend::{select_backend, BackendKind, Executable};
use crate::graph::{ExecGraph, Graph};
use crate::model::Model;
use crate::{Result, RuntimeError, Tensor};
use rgnn_ir::Program;
use rgnn_models::{build_program, HgtInChannels, InputSpec, LayerKind, ModelConfig};

/// Named outputs of a run: `out`, or `out.<node_type>` per node type.
#[derive(Clone, Debug)]
pub struct Outputs {
    pub tensors: Vec<(String, Tensor)>,
}

impl Outputs {
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }
    /// Write as a safetensors file (F32).
    pub fn save(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
        crate::io::write_tensors(path, &self.tensors, None)
    }
}

fn has_hetero_layers(config: &ModelConfig) -> bool {
    config.layers.iter().any(|l| matches!(l.kind, LayerKind::Hgt(_)))
}

/// The level-1 program of `model` for `graph`, and the flat graph it runs on.
pub fn compile_for_graph(model: &Model, graph: &Graph) -> Result<(Program, ExecGraph)> {
    let (spec, exec) = graph.resolve(model.config.metadata.as_ref(), has_hetero_layers(&model.config))?;
    let program = build_program(&model.config, &model.weight_shapes(), &spec)
        .map_err(|error| RuntimeError::Model { path: model.source.clone(), error })?;
    Ok((program, exec))
}

/// The level-1 program of `model` for the input its first layer declares (no graph needed):
/// node features of `in_channels`, every node type with features, or a pair state.
pub fn program_without_graph(model: &Model) -> Result<Program> {
    let c = &model.config;
    let first = &c.layers[0];
    let spec = match &first.kind {
        LayerKind::Rgcn(l) => InputSpec::Nodes { width: l.in_channels },
        LayerKind::Rgat(l) => InputSpec::Nodes { width: l.in_channels },
        LayerKind::RelGraphConv(l) => InputSpec::Nodes { width: l.in_feat },
        LayerKind::Pivotal(l) => InputSpec::Pairs { width: l.embed_dim },
        LayerKind::Hgt(l) => {
            let meta = c.metadata.as_ref().ok_or_else(|| RuntimeError::Invalid("HGTConv needs `metadata` in the model config".into()))?;
            let widths = meta
                .node_types
                .iter()
                .map(|t| match &l.in_channels {
                    HgtInChannels::All(n) => Some(*n),
                    HgtInChannels::PerType(m) => m.get(t).copied(),
                })
                .collect();
            InputSpec::TypedNodes { widths, edge_types_present: vec![true; meta.edge_types.len()] }
        }
    };
    build_program(c, &model.weight_shapes(), &spec).map_err(|error| RuntimeError::Model { path: model.source.clone(), error })
}

/// What every backend starts from: the level-1 program for `graph` after the compiler's level-1
/// passes, its evaluated parameters, and the flat graph.
fn optimized_for_graph(model: &Model, graph: &Graph, passes: rgnn_codegen::PassOptions) -> Result<(Program, Vec<Tensor>, ExecGraph)> {
    let (program, exec_graph) = compile_for_graph(model, graph)?;
    // The level-1 passes (linear reordering) preserve the result; each is checked against the
    // unoptimised program on every fixture.
    let program = rgnn_codegen::optimize(&program, passes)
        .map_err(|e| RuntimeError::Invalid(format!("internal compiler error in the level-1 passes: {e}")))?;
    let params = crate::interpreter::eval_params(&program, &model.weights)?;
    Ok((program, params, exec_graph))
}

/// The CUDA kernels `model` runs on `graph` for a device of compute capability `major.x` (no
/// device needed): tensor-core GEMMs from sm_80 on, as the backend chooses them.
pub fn emit_cuda(
    model: &Model,
    graph: &Graph,
    options: rgnn_codegen::CompileOptions,
    major: u32,
) -> Result<rgnn_kernels::cuda::CudaProgram> {
    let (program, params, exec_graph) = optimized_for_graph(model, graph, options.passes)?;
    crate::interpreter::check_relations(&program, &params, &exec_graph)?;
    Ok(crate::cuda_backend::generate_cuda(&program, &params, &exec_graph, &options, major >= 8)?.2)
}

/// Run `model` on `graph` through the generated CUDA C compiled for the host (a test of the
/// CUDA generator on machines without a GPU; see `cuda_backend::host_emulation`).
pub fn run_cuda_host_emulation(
    model: &Model,
    graph: &Graph,
    options: rgnn_codegen::CompileOptions,
    tensor_cores: bool,
    cxx: &str,
    workdir: &std::path::Path,
) -> Result<Vec<(String, Tensor)>> {
    let (program, params, exec_graph) = optimized_for_graph(model, graph, options.passes)?;
    crate::cuda_backend::host_emulation::run(&program, &params, &exec_graph, &options, tensor_cores, cxx, workdir)
}

/// The WGSL dispatches `model` runs on `graph` (for WebGPU's default limits; no device needed).
pub fn emit_wgsl(model: &Model, graph: &Graph, options: rgnn_codegen::CompileOptions) -> Result<rgnn_kernels::wgsl::WgslProgram> {
    let wgsl = rgnn_kernels::wgsl::WgslOptions { storage: options.storage, ..Default::default() };
    emit_wgsl_for(model, graph, options, &wgsl)
}

/// As [`emit_wgsl`], for given device limits.
pub fn emit_wgsl_for(
    model: &Model,
    graph: &Graph,
    options: rgnn_codegen::CompileOptions,
    wgsl: &rgnn_kernels::wgsl::WgslOptions,
) -> Result<rgnn_kernels::wgsl::WgslProgram> {
    let (program, params, exec_graph) = optimized_for_graph(model, graph, options.passes)?;
    crate::interpreter::check_relations(&program, &params, &exec_graph)?;
    Ok(crate::wgpu_backend::generate_wgsl(&program, &params, &exec_graph, &options, wgsl)?.2)
}

/// A model prepared for one graph on one backend.
pub struct Session {
    program: Program,
    exec: Box<dyn Executable>,
    backend: &'static str,
    device: String,
    /// Pair graphs: outputs are reshaped to `[B, N, N, C]`.
    pair_shape: Option<(usize, usize)>,
}

impl Session {
    /// Build the program for this graph, evaluate parameters, and hand both to the backend.
    pub fn new(model: &Model, graph: &Graph, backend: BackendKind) -> Result<Self> {
        Self::with_options(model, graph, backend, rgnn_codegen::CompileOptions::default())
    }

    /// As [`Session::new`], choosing the compiler's passes and schedule (for testing and comparison).
    pub fn with_options(model: &Model, graph: &Graph, backend: BackendKind, options: rgnn_codegen::CompileOptions) -> Result<Self> {
        Self::with_backend(model, graph, select_backend(backend)?, options)
    }

    /// As [`Session::with_options`], on a backend the caller configured.
    pub fn with_backend(
        model: &Model,
        graph: &Graph,
        backend: Box<dyn crate::backend::Backend>,
        options: rgnn_codegen::CompileOptions,
    ) -> Result<Self> {
        let (program, params, exec_graph) = optimized_for_graph(model, graph, options.passes)?;
        let pair_shape = exec_graph.pair.as_ref().map(|(b, n, _)| (*b, *n));
        let exec = backend.prepare(&program, params, exec_graph, &options)?;
        Ok(Session { program, exec, backend: backend.name(), device: backend.device(), pair_shape })
    }

    /// The program this session runs (level 1 after the compiler's level-1 passes).
    pub fn program(&self) -> &Program {
        &self.program
    }
    pub fn backend(&self) -> &'static str {
        self.backend
    }
    pub fn device(&self) -> &str {
        &self.device
    }
    pub fn peak_bytes(&self) -> usize {
        self.exec.peak_bytes()
    }
    /// Device time of the last run where the backend measures it (CUDA events), else `None`.
    pub fn last_device_seconds(&self) -> Option<f64> {
        self.exec.device_seconds()
    }
    /// Each kernel's median device time over `reps` forward passes, where the backend times
    /// kernels one by one (CUDA), else `None`.
    pub fn kernel_seconds(&mut self, reps: usize) -> Result<Option<Vec<crate::KernelTime>>> {
        self.exec.kernel_seconds(reps)
    }

    /// Per level-2 kernel, its bytes and flops (see [`crate::KernelWork`]), where known.
    pub fn kernel_work(&self) -> Option<Vec<crate::KernelWork>> {
        self.exec.kernel_work()
    }
    /// The memory plan for this graph, when the model was lowered to kernels.
    pub fn memory_plan(&self) -> Option<rgnn_codegen::MemoryPlan> {
        self.exec.memory_plan()
    }
    /// The kernel program this session runs, when the model was lowered to kernels.
    pub fn plan(&self) -> Option<&rgnn_ir::level2::KernelProgram> {
        self.exec.plan()
    }

    /// One forward pass.
    pub fn run(&mut self) -> Result<Outputs> {
        let mut tensors = self.exec.run()?;
        if let Some((b, n)) = self.pair_shape {
            for (_, t) in tensors.iter_mut() {
                let c = t.rows_width().1;
                t.shape = vec![b, n, n, c];
            }
        }
        Ok(Outputs { tensors })
    }
}
