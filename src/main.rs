//! The `rgnn` command line: `run`, `inspect`, `bench`, `demo` (see the README).

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use rgnn::codegen::CompileOptions;
use rgnn::ir::level2::DType;
use rgnn::{BackendKind, Graph, Model, Session};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
#[command(name = "rgnn", version, about = "Inference runtime for relational graph neural networks (RGCN, RGAT, HGT, FloydNet)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Backend {
    Auto,
    Cpu,
    Wgpu,
    Cuda,
}

impl From<Backend> for BackendKind {
    fn from(b: Backend) -> Self {
        match b {
            Backend::Auto => BackendKind::Auto,
            Backend::Cpu => BackendKind::Cpu,
            Backend::Wgpu => BackendKind::Wgpu,
            Backend::Cuda => BackendKind::Cuda,
        }
    }
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Dtype {
    F32,
    F16,
    Bf16,
}

#[derive(Clone, Copy, ValueEnum)]
enum Emit {
    Wgsl,
    Cuda,
    Ptx,
}

#[derive(Subcommand)]
enum Command {
    /// Run a model on a graph and write the outputs.
    Run {
        /// Model file (*.model.safetensors: weights and config, as the exporter writes them).
        #[arg(long)]
        model: PathBuf,
        /// Graph file (*.graph.safetensors: edges and features, or a pair graph).
        #[arg(long)]
        graph: PathBuf,
        /// Where to write the outputs (safetensors, f32: `out` or `out.<node_type>`).
        #[arg(long)]
        out: PathBuf,
        /// auto: cuda where the NVIDIA driver and NVRTC are, else wgpu on a real GPU, else cpu.
        #[arg(long, value_enum, default_value = "auto")]
        backend: Backend,
        /// Storage type of activations (f16: wgpu or cuda; bf16: cuda; arithmetic stays f32).
        #[arg(long, value_enum, default_value = "f32")]
        dtype: Dtype,
        /// With --dtype f32 on the cuda backend: let GEMMs and pivot attention use TF32 tensor cores (10-bit
        /// mantissa operands, f32 accumulation; like PyTorch's allow_tf32). Other backends ignore it.
        #[arg(long)]
        tf32: bool,
    },
    /// Show what a model computes (and, with a graph, how it will run).
    Inspect {
        /// Model file (*.model.safetensors: weights and config, as the exporter writes them).
        #[arg(long)]
        model: PathBuf,
        /// Graph file: build the program, plans and kernels for this graph.
        #[arg(long)]
        graph: Option<PathBuf>,
        /// Print the level-1 program (what plain `inspect` prints).
        #[arg(long)]
        ir: bool,
        /// With --ir: print it after the compiler's level-1 passes (linear reordering).
        #[arg(long)]
        optimized: bool,
        /// Print the level-2 kernel plan.
        #[arg(long)]
        plan: bool,
        /// Print the memory plan.
        #[arg(long)]
        memory: bool,
        /// Print generated kernel source.
        #[arg(long, value_enum)]
        emit: Option<Emit>,
        /// Target architecture for --emit cuda/ptx.
        #[arg(long, default_value = "sm_80")]
        arch: String,
        /// Storage type of the emitted kernels.
        #[arg(long, value_enum, default_value = "f32")]
        dtype: Dtype,
        /// With --emit cuda/ptx and --dtype f32: emit the TF32 tensor-core kernels `run --tf32`
        /// would use.
        #[arg(long)]
        tf32: bool,
    },
    /// Time the whole forward pass (after warm-up).
    Bench {
        /// Model file (*.model.safetensors: weights and config, as the exporter writes them).
        #[arg(long)]
        model: PathBuf,
        /// Graph file (*.graph.safetensors: edges and features, or a pair graph).
        #[arg(long)]
        graph: PathBuf,
        /// auto: cuda where the NVIDIA driver and NVRTC are, else wgpu on a real GPU, else cpu.
        #[arg(long, value_enum, default_value = "auto")]
        backend: Backend,
        /// Timed passes (the median is reported).
        #[arg(long, default_value_t = 10)]
        reps: usize,
        /// Also time each kernel (cuda backend: the same number of passes, launched one kernel at
        /// a time with an event after each; the CUDA graph's replay is what the total times).
        #[arg(long)]
        kernels: bool,
        /// Write the timings as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Storage type of activations (f16: wgpu or cuda; bf16: cuda; arithmetic stays f32).
        #[arg(long, value_enum, default_value = "f32")]
        dtype: Dtype,
        /// With --dtype f32 on the cuda backend: let GEMMs and pivot attention use TF32 tensor cores (10-bit
        /// mantissa operands, f32 accumulation; like PyTorch's allow_tf32). Other backends ignore it.
        #[arg(long)]
        tf32: bool,
    },
    /// Run the embedded demo: an RGCN link predictor trained with PyG on the Kinships graph.
    Demo,
    /// Show which backends can run here, on what device, and which one `--backend auto` takes.
    Backends {
        /// Fail (exit status 1, with the reason) unless this backend can run here.
        #[arg(long, value_enum)]
        require: Option<Backend>,
    },
}

fn main() {
    // Like other command-line tools, stop quietly when the reader of our output goes away
    // (`rgnn inspect --emit cuda | head`); Rust ignores SIGPIPE, so println! would panic instead.
    #[cfg(unix)]
    // SAFETY: restores the default disposition of one signal, before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // Without XDG_RUNTIME_DIR (headless machines, containers, CI) Mesa's Vulkan device-select
    // layer cannot reach a display to rank the GPUs by, and says so with two "error:" lines on
    // every run that looks for a wgpu adapter; rgnn picks its adapter itself, so skip the layer.
    #[cfg(unix)]
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() && std::env::var_os("NODEVICE_SELECT").is_none() {
        // SAFETY: no other thread has started yet.
        unsafe { std::env::set_var("NODEVICE_SELECT", "1") };
    }
    let cli = Cli::parse();
    if let Err(e) = dispatch(cli.command) {
        // One paragraph: the error and its causes, joined.
        let mut msg = e.to_string();
        for cause in e.chain().skip(1) {
            msg.push_str(": ");
            msg.push_str(&cause.to_string());
        }
        eprintln!("error: {msg}");
        std::process::exit(1);
    }
}

fn load(model: &PathBuf, graph: &PathBuf) -> Result<(Model, Graph)> {
    let m = named(Model::load(model), "model", model)?;
    for w in &m.config.warnings {
        eprintln!("warning: {w}");
    }
    let g = named(Graph::load(graph), "graph", graph)?;
    Ok((m, g))
}

/// `loaded`, its error saying which file it is about unless it already does.
fn named<T>(loaded: std::result::Result<T, rgnn::RuntimeError>, what: &str, path: &std::path::Path) -> Result<T> {
    loaded.map_err(|e| {
        let shown = path.display().to_string();
        if e.to_string().contains(&shown) {
            anyhow::Error::new(e)
        } else {
            anyhow::Error::new(e).context(format!("loading {what} {shown}"))
        }
    })
}

/// The major compute capability of an `--arch` name (`sm_80` → 8, `sm_90a` → 9).
fn arch_major(arch: &str) -> Result<u32> {
    let digits: String = arch.strip_prefix("sm_").unwrap_or("").chars().take_while(|c| c.is_ascii_digit()).collect();
    match digits.len() {
        2.. => digits[..digits.len() - 1].parse().map_err(|_| anyhow::anyhow!("--arch {arch}: no such compute capability")),
        _ => bail!("--arch {arch}: expected sm_XY, e.g. sm_80 or sm_90"),
    }
}

/// Compiler options for a storage type (and whether f32 GEMMs may use TF32 on CUDA).
fn options(dtype: Dtype, tf32: bool) -> CompileOptions {
    let storage = match dtype {
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::Bf16 => DType::BF16,
    };
    CompileOptions { storage, tf32, ..Default::default() }
}

fn dispatch(cmd: Command) -> Result<()> {
    match cmd {
        Command::Backends { require } => {
            let (reports, auto) = rgnn::runtime::backend_reports();
            for r in &reports {
                match &r.status {
                    Ok(device) => println!("{:<5} available      {device}", r.name),
                    Err(reason) => println!("{:<5} not available  {reason}", r.name),
                }
            }
            println!("--backend auto runs on: {auto}");
            let required = require.map(|b| match b {
                Backend::Cpu => "cpu",
                Backend::Wgpu => "wgpu",
                Backend::Cuda => "cuda",
                Backend::Auto => auto,
            });
            if let Some(name) = required {
                if let Some(Err(reason)) = reports.iter().find(|r| r.name == name).map(|r| &r.status) {
                    bail!("backend `{name}` is not available: {reason}");
                }
            }
        }
        Command::Run { model, graph, out, backend, dtype, tf32 } => {
            // Writing the output over an input would lose it (checked before any work).
            let same = |a: &PathBuf, b: &PathBuf| std::fs::canonicalize(a).ok().is_some_and(|a| std::fs::canonicalize(b).ok() == Some(a));
            for (what, input) in [("model", &model), ("graph", &graph)] {
                if same(&out, input) {
                    bail!("--out {} is the {what} file: write the output elsewhere", out.display());
                }
            }
            let (m, g) = load(&model, &graph)?;
            let mut s = Session::with_options(&m, &g, backend.into(), options(dtype, tf32))?;
            let t = Instant::now();
            let outputs = s.run()?;
            let secs = t.elapsed().as_secs_f64();
            outputs.save(&out)?;
            let shapes: Vec<String> = outputs.tensors.iter().map(|(n, t)| format!("{n} {:?}", t.shape)).collect();
            let path = match s.plan() {
                Some(kp) => format!("{} kernels", kp.kernels.len()),
                None => "level-1 interpreter".to_string(),
            };
            eprintln!("{} on {} ({path}): {} in {:.3} s -> {}", m.config.model, s.device(), shapes.join(", "), secs, out.display());
        }
        Command::Inspect { model, graph, ir, optimized, plan, memory, emit, arch, dtype, tf32 } => {
            let m = Model::load(&model).with_context(|| format!("loading model {}", model.display()))?;
            for w in &m.config.warnings {
                eprintln!("warning: {w}");
            }
            if let Some(emit) = emit {
                let Some(graph) = &graph else { bail!("--emit needs --graph: kernels are specialised for the graph") };
                let g = Graph::load(graph).with_context(|| format!("loading graph {}", graph.display()))?;
                match emit {
                    Emit::Wgsl => {
                        let generated = rgnn::runtime::emit_wgsl(&m, &g, options(dtype, tf32))?;
                        for d in &generated.dispatches {
                            println!("// ==== {}: workgroups {:?}, {} bindings", d.label, d.workgroups, d.bindings.len());
                            println!("{}", d.source);
                        }
                    }
                    Emit::Cuda => {
                        let generated = rgnn::runtime::emit_cuda(&m, &g, options(dtype, tf32), arch_major(&arch)?)?;
                        let work = rgnn::kernels::gpu::kernel_work(&generated.dispatches);
                        for (i, d) in generated.dispatches.iter().enumerate() {
                            if i == 0 || generated.dispatches[i - 1].kernel != d.kernel {
                                if let Some(w) = work.iter().find(|w| w.kernel == d.kernel) {
                                    println!("// ==== k{}: moves {} bytes, {} flops", w.kernel, w.bytes, w.flops);
                                }
                            }
                            println!(
                                "// ==== {}: grid {:?}, block {:?}, {} parameters",
                                d.label,
                                d.workgroups,
                                d.threads,
                                d.bindings.len()
                            );
                            println!("{}", d.source);
                        }
                    }
                    Emit::Ptx => {
                        let generated = rgnn::runtime::emit_cuda(&m, &g, options(dtype, tf32), arch_major(&arch)?)?;
                        for d in &generated.dispatches {
                            let ptx = rgnn::runtime::cuda_backend::compile_ptx(&d.source, &arch)?;
                            println!("// ==== {} ({arch})\n{ptx}", d.label);
                        }
                    }
                }
                return Ok(());
            }
            if memory && graph.is_none() {
                bail!("--memory needs --graph: buffer sizes depend on the graph");
            }
            let mut session = None;
            let program = match &graph {
                Some(g) => {
                    let g = Graph::load(g).with_context(|| format!("loading graph {}", g.display()))?;
                    println!("# graph: {}", g.summary());
                    if plan || memory {
                        session = Some(Session::new(&m, &g, BackendKind::Cpu)?);
                    }
                    rgnn::runtime::compile_for_graph(&m, &g)?.0
                }
                None => rgnn::runtime::program_without_graph(&m)?,
            };
            let program = if optimized { rgnn::codegen::optimize(&program, rgnn::codegen::PassOptions::default())? } else { program };
            let layers: Vec<String> = m.config.layers.iter().map(|l| l.label()).collect();
            println!("# model {:?}: {}", m.config.model, layers.join(", "));
            if ir || !(plan || memory) {
                print!("{program}");
            }
            if plan {
                // With a graph: the plan the CPU backend runs (with its per-relation compaction).
                match session.as_ref().and_then(|s| s.plan()) {
                    Some(kp) => print!("{}", kp.to_text()),
                    None => match rgnn::codegen::lower(&rgnn::codegen::optimize(&program, rgnn::codegen::PassOptions::default())?) {
                        Ok(kp) => print!("{}", kp.to_text()),
                        Err(e) => println!("# {e}; the level-1 interpreter runs this model"),
                    },
                }
            }
            if memory {
                let s = session.as_ref().expect("a session exists with --graph");
                match (s.plan(), s.memory_plan()) {
                    (Some(kp), Some(mp)) => print!("{}", mp.to_text(kp)),
                    _ => println!("# not lowered to kernels: no memory plan (the level-1 interpreter runs this model)"),
                }
            }
        }
        Command::Bench { model, graph, backend, reps, json, dtype, tf32, kernels } => {
            if reps == 0 {
                bail!("--reps must be at least 1");
            }
            let (m, g) = load(&model, &graph)?;
            let mut s = Session::with_options(&m, &g, backend.into(), options(dtype, tf32))?;
            s.run()?; // warm-up
                      // Device time (CUDA events) where the backend measures it, else wall-clock time.
            let mut times = vec![];
            for _ in 0..reps {
                let t = Instant::now();
                s.run()?;
                times.push(s.last_device_seconds().unwrap_or_else(|| t.elapsed().as_secs_f64()));
            }
            let timing = if s.last_device_seconds().is_some() { "device events" } else { "wall clock" };
            let median = rgnn::runtime::backend::median(&mut times);
            let mut report = serde_json::json!({
                "backend": s.backend(), "device": s.device(), "reps": reps,
                "median_s": median, "min_s": times[0], "max_s": times[reps - 1], "peak_bytes": s.peak_bytes(),
                "model": m.config.model, "graph": g.summary(), "timing": timing,
            });
            println!(
                "{} on {}: median {:.4} s (min {:.4}, max {:.4}) over {reps} reps",
                m.config.model,
                s.device(),
                median,
                times[0],
                times[reps - 1]
            );
            if kernels {
                match s.kernel_seconds(reps)? {
                    Some(list) => {
                        let total: f64 = list.iter().map(|k| k.median_s).sum();
                        println!(
                            "{:>12} {:>6}  kernel (median over {reps} passes launched kernel by kernel; sum {:.4} s)",
                            "ms", "%", total
                        );
                        for k in &list {
                            println!("{:>12.4} {:>6.1}  {}", k.median_s * 1e3, 100.0 * k.median_s / total.max(f64::MIN_POSITIVE), k.label);
                        }
                        report["kernels"] =
                            list.iter().map(|k| serde_json::json!({"label": k.label, "kernel": k.kernel, "median_s": k.median_s})).collect();
                        if let (Some(work), Some(plan)) = (s.kernel_work(), s.plan()) {
                            report["kernel_work"] = kernel_rates(&list, &work, plan).into();
                        }
                    }
                    None => println!(
                        "# per-kernel times: the {} backend does not time kernels one by one (cuda does; on cpu, RGNN_PROFILE=1 prints them)",
                        s.backend()
                    ),
                }
            }
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
        Command::Demo => rgnn::demo::run()?,
    }
    Ok(())
}

/// Per level-2 kernel: its time (the sum of its launches' medians), bytes and flops (see
/// `KernelWork`) and the rates they give; printed as a table, returned for the JSON report.
fn kernel_rates(
    times: &[rgnn::runtime::KernelTime],
    work: &[rgnn::runtime::KernelWork],
    plan: &rgnn::ir::level2::KernelProgram,
) -> Vec<serde_json::Value> {
    println!(
        "{:>6} {:<16} {:>10} {:>10} {:>9} {:>10} {:>9}  (bytes: every bound array once; flops: matrix products)",
        "kernel", "template", "ms", "MB", "GB/s", "GFLOP", "TFLOP/s"
    );
    let rate = |x: f64, s: f64| if s > 0.0 { x / s } else { 0.0 };
    work.iter()
        .map(|w| {
            let seconds: f64 = times.iter().filter(|t| t.kernel == w.kernel).map(|t| t.median_s).sum();
            let template = plan.kernels.get(w.kernel).map_or("?", |k| k.template());
            let (bytes, flops) = (w.bytes as f64, w.flops);
            println!(
                "{:>6} {template:<16} {:>10.4} {:>10.2} {:>9.1} {:>10.3} {:>9.2}",
                format!("k{}", w.kernel),
                seconds * 1e3,
                bytes / 1e6,
                rate(bytes, seconds) / 1e9,
                flops / 1e9,
                rate(flops, seconds) / 1e12
            );
            serde_json::json!({
                "kernel": w.kernel, "template": template, "seconds": seconds, "bytes": w.bytes, "flops": flops,
                "bytes_per_s": rate(bytes, seconds), "flops_per_s": rate(flops, seconds),
            })
        })
        .collect()
}
