//! Every generated CUDA kernel compiles with NVRTC (the compiler the CUDA backend runs on a GPU
//! machine, with the backend's own options) and assembles with ptxas, for sm_80 and sm_90,
//! within its registers (see [`fits`]): the fixtures (tensor cores and the SIMT
//! fallback) and single layers at the benchmarks' widths (RGCN, RGAT and HGT on the aifb shape at
//! 64 and 128 channels, a FloydNet block at C = 128, H = 8) in every storage type, and at 512
//! channels in bf16. No GPU needed:
//! `tools/cuda_tools.sh` fetches NVRTC and ptxas; then
//! `LD_LIBRARY_PATH=target/cuda-tools/lib RGNN_PTXAS=target/cuda-tools/bin/ptxas cargo test --test nvrtc`.
//!
//! Without NVRTC or ptxas this prints why and passes, unless `RGNN_REQUIRE_NVRTC=1` (as in CI
//! when the download worked).

mod common;
use common::*;
use rgnn::codegen::CompileOptions;
use rgnn::ir::level2::DType;
use rgnn::runtime::cuda_backend::compile_ptx;
use rgnn::runtime::RuntimeError;
use rgnn::{Graph, Model};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn skip_or_fail(why: &str) {
    common::skip_unless_required("RGNN_REQUIRE_NVRTC", &format!("{why} (tools/cuda_tools.sh fetches NVRTC and ptxas)"));
}

/// Whether NVRTC loads (what it lacks said by [`skip_or_fail`] otherwise).
fn nvrtc() -> bool {
    match compile_ptx("extern \"C\" __global__ void probe() {}", "sm_80") {
        Err(RuntimeError::BackendUnavailable { reason, .. }) => {
            skip_or_fail(&reason);
            false
        }
        probe => {
            probe.expect("NVRTC compiles an empty kernel");
            true
        }
    }
}

/// ptxas: `RGNN_PTXAS`, else `ptxas` on the PATH.
fn ptxas() -> Option<String> {
    let path = std::env::var("RGNN_PTXAS").unwrap_or_else(|_| "ptxas".into());
    Command::new(&path).arg("--version").output().is_ok_and(|o| o.status.success()).then_some(path)
}

/// One kernel to check: where it comes from, its CUDA C and the architecture.
struct Job {
    label: String,
    source: String,
    arch: &'static str,
}

/// What ptxas says of one kernel.
#[derive(Default)]
struct Usage {
    registers: usize,
    stack_frame: usize,
    spill_stores: usize,
    spill_loads: usize,
}

/// The number just before `unit` in `text` ("16 bytes stack frame" → 16).
fn number_before(text: &str, unit: &str) -> Option<usize> {
    let (head, _) = text.split_once(unit)?;
    head.split_whitespace().last()?.parse().ok()
}

fn assemble(ptxas: &str, dir: &Path, name: &str, ptx: &str, arch: &str) -> Result<Usage, String> {
    let file = dir.join(format!("{name}.ptx"));
    std::fs::write(&file, ptx).map_err(|e| e.to_string())?;
    let o = Command::new(ptxas).args(["-v", "--gpu-name", arch, "-o", "/dev/null"]).arg(&file).output().map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&file);
    let report = String::from_utf8_lossy(&o.stderr).to_string();
    if !o.status.success() {
        return Err(format!("ptxas: {}", report.chars().take(2000).collect::<String>()));
    }
    let mut usage = Usage::default();
    for line in report.lines() {
        if let Some(r) = number_before(line, "registers") {
            usage.registers = usage.registers.max(r);
        }
        usage.stack_frame += number_before(line, "bytes stack frame").unwrap_or(0);
        usage.spill_stores += number_before(line, "bytes spill stores").unwrap_or(0);
        usage.spill_loads += number_before(line, "bytes spill loads").unwrap_or(0);
    }
    Ok(usage)
}

/// The kernels of `model` on `graph` for `storage` (`tf32`: f32 with TF32 tensor cores;
/// `simt`: the pre-sm_80 kernels, checked for sm_75), labelled `name`.
fn jobs_of(jobs: &mut Vec<Job>, name: &str, model: &Model, graph: &Graph, storage: DType, tf32: bool, simt: bool) {
    let options = CompileOptions { storage, tf32, ..Default::default() };
    let generated = rgnn::runtime::emit_cuda(model, graph, options, if simt { 7 } else { 8 }).unwrap();
    let tag = match (simt, tf32) {
        (true, _) => format!("{storage:?} simt"),
        (false, true) => "tf32".to_string(),
        (false, false) => format!("{storage:?}"),
    };
    let archs: &[&'static str] = if simt { &["sm_75"] } else { &["sm_80", "sm_90"] };
    for d in generated.dispatches {
        for &arch in archs {
            jobs.push(Job { label: format!("{name} {tag} {}", d.label), source: d.source.clone(), arch });
        }
    }
}

/// Whether a kernel fits its registers. ptxas may trade a word or two of spills for occupancy
/// (seen: 4 to 12 bytes in memory-bound traversals at 40 to 48 registers, and in f16 pivot
/// attention held to 128 registers for two blocks per SM), which is its call to make; spills at
/// the 255-register limit, larger spills, or a stack frame beyond the spill slots (an array in
/// local memory) are the generator's to fix.
fn fits(u: &Usage) -> bool {
    let spilled = u.spill_stores.max(u.spill_loads);
    (spilled == 0 || (u.registers < 255 && spilled <= 16)) && u.stack_frame <= u.spill_stores.next_multiple_of(8)
}

#[test]
fn every_generated_cuda_kernel_compiles_with_nvrtc_and_fits_its_registers() {
    if !nvrtc() {
        return;
    }
    let Some(ptxas) = ptxas() else { return skip_or_fail("ptxas was not found (RGNN_PTXAS or the PATH)") };

    let dir: PathBuf = std::env::temp_dir().join(format!("rgnn-nvrtc-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut jobs = vec![];
    let families = ["rgcn_mean", "rgat_add_across_h3", "hgt_h4", "floyd_pre_ln", "dgl_basis_layernorm"];
    for case in fixture_cases() {
        let (model, graph) = load_case(&case);
        jobs_of(&mut jobs, &case, &model, &graph, DType::F32, false, false);
        if families.contains(&case.as_str()) {
            for storage in [DType::F16, DType::BF16] {
                jobs_of(&mut jobs, &case, &model, &graph, storage, false, false);
            }
            jobs_of(&mut jobs, &case, &model, &graph, DType::F32, true, false);
            jobs_of(&mut jobs, &case, &model, &graph, DType::F32, false, true);
        }
    }
    for (name, model, graph) in benchmark_layers(&dir) {
        if name.contains(" 512x") {
            jobs_of(&mut jobs, &name, &model, &graph, DType::BF16, false, false);
            continue;
        }
        for storage in [DType::F32, DType::F16, DType::BF16] {
            jobs_of(&mut jobs, &name, &model, &graph, storage, false, false);
        }
        jobs_of(&mut jobs, &name, &model, &graph, DType::F32, true, false);
        jobs_of(&mut jobs, &name, &model, &graph, DType::F32, false, true);
    }
    // Kernels generated twice (repeated blocks, options that change nothing) are checked once.
    let mut seen = HashSet::new();
    jobs.retain(|j| seen.insert((j.source.clone(), j.arch)));

    // Two at a time: NVRTC in this process, ptxas beside it.
    let chunks: Vec<&[Job]> = jobs.chunks(jobs.len().div_ceil(2).max(1)).collect();
    let results: Vec<(String, Result<Usage, String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .iter()
            .enumerate()
            .map(|(c, chunk)| {
                let (ptxas, dir) = (&ptxas, &dir);
                s.spawn(move || {
                    chunk
                        .iter()
                        .enumerate()
                        .map(|(i, job)| {
                            let usage = compile_ptx(&job.source, job.arch)
                                .map_err(|e| e.to_string())
                                .and_then(|ptx| assemble(ptxas, dir, &format!("k{c}-{i}"), &ptx, job.arch));
                            (format!("{} ({})", job.label, job.arch), usage)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let _ = std::fs::remove_dir_all(&dir);

    // The most registers any kernel of each template takes, per architecture.
    let mut most: BTreeMap<String, (usize, String)> = BTreeMap::new();
    let mut failures = vec![];
    for (label, usage) in &results {
        match usage {
            Err(e) => failures.push(format!("{label}: {e}")),
            Ok(u) => {
                if !fits(u) {
                    failures.push(format!(
                        "{label}: {} registers, {} bytes stack frame, {} bytes spill stores, {} bytes spill loads",
                        u.registers, u.stack_frame, u.spill_stores, u.spill_loads
                    ));
                }
                let template = label
                    .split_whitespace()
                    .find(|w| ["gemm", "traversal", "pivot_attention", "map", "row"].iter().any(|t| w.starts_with(t)));
                let arch = label.rsplit('(').next().unwrap_or("").trim_end_matches(')');
                let key = format!("{} {arch}", template.unwrap_or("other"));
                let entry = most.entry(key).or_insert((0, String::new()));
                if u.registers > entry.0 {
                    *entry = (u.registers, label.clone());
                }
            }
        }
    }
    println!("{} kernels compiled with NVRTC and assembled with ptxas; most registers:", results.len());
    for (key, (registers, label)) in &most {
        println!("  {key:28} {registers:4}  {label}");
    }
    assert!(failures.is_empty(), "{} of {} kernels failed:\n{}", failures.len(), results.len(), failures.join("\n"));
}

/// `rgnn inspect --emit ptx` prints NVRTC's PTX for the named architecture.
#[test]
fn inspect_emits_ptx_through_nvrtc() {
    if !nvrtc() {
        return;
    }
    let dir = fixtures_dir();
    let (model, graph) = (dir.join("rgat_add_across_h3.model.safetensors"), dir.join("rgat_add_across_h3.graph.safetensors"));
    let o = Command::new(env!("CARGO_BIN_EXE_rgnn"))
        .args(["inspect", "--emit", "ptx", "--arch", "sm_90", "--dtype", "bf16", "--model"])
        .arg(&model)
        .arg("--graph")
        .arg(&graph)
        .output()
        .expect("rgnn runs");
    let (text, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{err}");
    assert!(text.contains(".target sm_90") && text.contains(".entry rgnn_kernel") && text.contains("mma.sync.aligned"), "{err}");
}
