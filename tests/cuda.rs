//! The CUDA backend on a GPU against the CPU backend (and the reference frameworks' outputs):
//! every fixture in f32 (split tf32 on tensor cores, and the SIMT kernels; rel ≤ 1e-5), with
//! TF32 allowed, and in bf16 and f16 storage (rel ≤ 1e-2); the two-pass softmax schedule;
//! single layers on the full aifb shape at the benchmarks' widths (every degree class, hubs of
//! hundreds of in-edges) and a FloydNet block at C = 128, H = 8; a replayed forward pass gives
//! the same outputs bit for bit, and timing by CUDA events works.
//!
//! Needs an NVIDIA GPU with its driver and NVRTC. Without one these tests print why and pass,
//! unless `RGNN_REQUIRE_CUDA=1`, which makes that a failure. The test binary also runs from
//! another checkout: `cargo test --release --test cuda --no-run` names it; run it there with
//! `RGNN_FIXTURES_DIR=<that checkout>/tests/fixtures RGNN_REQUIRE_CUDA=1`.

mod common;
use common::*;
use rgnn::codegen::{CompileOptions, LowerOptions};
use rgnn::ir::level2::DType;
use rgnn::runtime::cuda_backend::CudaBackend;
use rgnn::{BackendKind, Graph, Model, Session};

/// Is there a CUDA device? Prints which one.
fn gpu() -> bool {
    match CudaBackend::new() {
        Ok(b) => {
            println!("cuda: {}", b.report());
            true
        }
        Err(e) => {
            common::skip_unless_required("RGNN_REQUIRE_CUDA", &format!("the CUDA tests need an NVIDIA GPU, its driver and NVRTC: {e}"));
            false
        }
    }
}

/// How a case runs on the GPU.
#[derive(Clone, Copy)]
struct Run {
    what: &'static str,
    options: CompileOptions,
    tensor_cores: bool,
    tolerance: f64,
}

/// f32 storage on tensor cores as split tf32: f32 accuracy.
fn f32_run() -> Run {
    Run { what: "f32", options: CompileOptions::default(), tensor_cores: true, tolerance: 1e-5 }
}

fn runs() -> [Run; 5] {
    let with = |storage, tf32| CompileOptions { storage, tf32, ..Default::default() };
    [
        f32_run(),
        Run { what: "f32 simt", options: CompileOptions::default(), tensor_cores: false, tolerance: 1e-5 },
        Run { what: "tf32", options: with(DType::F32, true), tensor_cores: true, tolerance: 1e-2 },
        Run { what: "bf16", options: with(DType::BF16, false), tensor_cores: true, tolerance: 1e-2 },
        Run { what: "f16", options: with(DType::F16, false), tensor_cores: true, tolerance: 1e-2 },
    ]
}

fn cuda_session(model: &Model, graph: &Graph, run: Run) -> Result<Session, String> {
    let backend = CudaBackend::new().map_err(|e| e.to_string())?.with_tensor_cores(run.tensor_cores);
    Session::with_backend(model, graph, Box::new(backend), run.options).map_err(|e| e.to_string())
}

/// Worst relative error of the CUDA outputs against the CPU backend's, per output.
fn compare(model: &Model, graph: &Graph, run: Run) -> Result<f64, String> {
    let cpu_options = CompileOptions { storage: DType::F32, tf32: false, ..run.options };
    let cpu =
        Session::with_options(model, graph, BackendKind::Cpu, cpu_options).map_err(|e| e.to_string())?.run().map_err(|e| e.to_string())?;
    let gpu = cuda_session(model, graph, run)?.run().map_err(|e| e.to_string())?;
    worst_rel_err("cuda", &cpu.tensors, &gpu.tensors)
}

fn check_all(cases: &[(String, Model, Graph)], run: Run) -> Vec<String> {
    let mut failures = vec![];
    for (case, model, graph) in cases {
        match compare(model, graph, run) {
            Ok(err) if err <= run.tolerance => println!("ok    {:8} {case:40} rel err vs cpu {err:.2e}", run.what),
            Ok(err) => failures.push(format!("{} {case}: rel err {err:.2e} > {:e}", run.what, run.tolerance)),
            Err(e) => failures.push(format!("{} {case}: {e}", run.what)),
        }
    }
    failures
}

fn fixtures() -> Vec<(String, Model, Graph)> {
    fixture_cases()
        .into_iter()
        .map(|case| {
            let (m, g) = load_case(&case);
            (case, m, g)
        })
        .collect()
}

#[test]
fn every_fixture_matches_cpu_in_every_storage_type_and_kernel_form() {
    if !gpu() {
        return;
    }
    let cases = fixtures();
    assert!(cases.len() >= 40);
    let failures: Vec<String> = runs().into_iter().flat_map(|run| check_all(&cases, run)).collect();
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn every_fixture_matches_the_reference_framework_in_f32() {
    if !gpu() {
        return;
    }
    let mut failures = vec![];
    for (case, model, graph) in fixtures() {
        let got = match cuda_session(&model, &graph, f32_run()).and_then(|mut s| s.run().map_err(|e| e.to_string())) {
            Ok(out) => out,
            Err(e) => {
                failures.push(format!("{case}: {e}"));
                continue;
            }
        };
        failures.extend(reference_mismatch(&case, &got.tensors, 1e-5));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn attention_fixtures_match_with_the_two_pass_softmax() {
    if !gpu() {
        return;
    }
    let cases: Vec<_> = fixtures().into_iter().filter(|(c, ..)| c.starts_with("rgat") || c.starts_with("hgt")).collect();
    let two_pass = CompileOptions { lower: LowerOptions { online_softmax: false }, ..Default::default() };
    let failures = check_all(&cases, Run { what: "two-pass", options: two_pass, ..f32_run() });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// RGCN, RGAT and HGT on the full aifb shape at 64 × 1 head, 128 × 8 and 512 × 8 (the
/// benchmarks' generator), and a FloydNet block at C = 128, H = 8, in f32 and bf16.
#[test]
fn benchmark_layers_match_cpu() {
    if !gpu() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("rgnn-cuda-layers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let layers = benchmark_layers(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    let bf16 = runs()[3];
    let failures: Vec<String> = [f32_run(), bf16].into_iter().flat_map(|run| check_all(&layers, run)).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The captured forward pass replays to the same outputs bit for bit (no kernel depends on what
/// an earlier pass left in the arena), and CUDA events time the pass and each kernel.
#[test]
fn replays_are_identical_and_timed() {
    if !gpu() {
        return;
    }
    for case in ["rgcn_mean", "rgat_add_across_h3", "hgt_h4", "floyd_pre_ln"] {
        let Some(name) = fixture_cases().into_iter().find(|c| c.starts_with(case)) else { panic!("no fixture {case}*") };
        let (model, graph) = load_case(&name);
        let mut s = cuda_session(&model, &graph, f32_run()).unwrap();
        let first = s.run().unwrap();
        let second = s.run().unwrap();
        for ((n, a), (_, b)) in first.tensors.iter().zip(&second.tensors) {
            assert!(a.data.iter().zip(&b.data).all(|(x, y)| x.to_bits() == y.to_bits()), "{name} `{n}` differs between replays");
        }
        assert!(s.last_device_seconds().is_some_and(|t| t > 0.0), "{name}: no event time");
        let kernels = s.kernel_seconds(3).unwrap().expect("per-kernel times on cuda");
        assert!(!kernels.is_empty() && kernels.iter().all(|k| k.median_s >= 0.0), "{name}: {kernels:?}");
    }
}
