//! The CUDA backend end to end on machines without a GPU: the `rgnn` binary runs with
//! `tests/host_cuda/driver.c` standing in for the CUDA driver and NVRTC. cudarc, the backend's
//! uploads, launches, graph capture and replay, event timing, read-back, PTX cache and
//! out-of-memory path all run for real; the "PTX" is the CUDA C itself, which the stand-in
//! compiles as host C++ (the generated code's host emulation) when it is loaded as a module.
//! The stand-in keeps the rules of the real driver that the backend relies on (no capture on
//! the legacy stream, no synchronising with a capturing stream, every copy and kernel argument
//! inside a live allocation); what it cannot check is the PTX and the hardware, which
//! `tests/cuda.rs` covers where a GPU is.
//!
//! Needs a C and a C++ compiler; without them these tests print why and pass, unless
//! `RGNN_REQUIRE_CLANG=1` (as in CI).

mod common;
use common::*;
use rgnn::codegen::CompileOptions;
use rgnn::runtime::cuda_backend::CudaBackend;
use rgnn::Session;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

struct StandIn {
    /// Holds `libcuda.so` and `libnvrtc.so` (the same library).
    lib: PathBuf,
    /// The C++ compiler the stand-in builds kernels with.
    cxx: String,
    launcher: PathBuf,
    root: PathBuf,
}

fn c_compiler() -> Option<String> {
    ["cc", "gcc", "clang"]
        .iter()
        .find(|c| Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()))
        .map(|c| c.to_string())
}

/// The stand-in driver, built once per test process; `None` (after saying why) without compilers.
fn stand_in() -> Option<&'static StandIn> {
    static BUILT: OnceLock<Option<StandIn>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let (Some(cc), Some(cxx)) = (c_compiler(), rgnn::runtime::cuda_backend::host_emulation::compiler()) else {
                common::skip_unless_required("RGNN_REQUIRE_CLANG", "the host CUDA stand-in needs a C and a C++ compiler");
                return None;
            };
            // Built by the script users run for the same purpose, so CI checks it too.
            let root = std::env::temp_dir().join(format!("rgnn-host-cuda-{}", std::process::id()));
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/host_cuda.sh");
            let o = Command::new("bash").arg(&script).arg(&root).env("CC", &cc).env("RGNN_HOST_CXX", &cxx).output().unwrap();
            assert!(o.status.success(), "{}: {}", script.display(), String::from_utf8_lossy(&o.stderr));
            let (lib, launcher) = (root.join("lib"), root.join("launcher.cpp"));
            let extracted = std::fs::read_to_string(&launcher).unwrap();
            assert_eq!(extracted.trim(), rgnn::kernels::cuda::HOST_LAUNCHER.trim(), "tools/host_cuda.sh copied HOST_LAUNCHER wrongly");
            Some(StandIn { lib, cxx, launcher, root })
        })
        .as_ref()
}

/// `program` set up to load the stand-in: its own PTX cache and module folders under `name`.
fn on_stand_in(s: &StandIn, name: &str, program: &Path) -> Command {
    let dir = s.root.join(name);
    let work = dir.join("modules");
    std::fs::create_dir_all(&work).unwrap();
    let mut c = Command::new(program);
    c.env("LD_LIBRARY_PATH", &s.lib)
        .env("RGNN_HOST_CUDA_LAUNCHER", &s.launcher)
        .env("RGNN_HOST_CUDA_WORKDIR", &work)
        .env("RGNN_CACHE_DIR", dir.join("cache"))
        .env("RGNN_HOST_CXX", &s.cxx)
        // The tensor-core kernels' emulated warps make them slow on the host: most runs take the
        // SIMT kernels (the tensor-core code itself is checked by tests/cuda_codegen.rs).
        .env("RGNN_CUDA_TENSOR_CORES", "0");
    c
}

/// `rgnn args...` on the stand-in (see [`on_stand_in`]), `env` on top.
fn rgnn(s: &StandIn, name: &str, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = on_stand_in(s, name, Path::new(env!("CARGO_BIN_EXE_rgnn")));
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn fixture(case: &str, kind: &str) -> String {
    fixtures_dir().join(format!("{case}.{kind}.safetensors")).display().to_string()
}

/// `rgnn run --backend cuda` on a fixture; the worst relative error of its outputs against the
/// reference framework's.
fn run_case(s: &StandIn, case: &str, env: &[(&str, &str)], extra: &[&str]) -> f64 {
    let out = s.root.join(format!("{case}-{}.out.safetensors", extra.join("")));
    let (model, graph) = (fixture(case, "model"), fixture(case, "graph"));
    let mut args = vec!["run", "--backend", "cuda", "--model", &model, "--graph", &graph, "--out", out.to_str().unwrap()];
    args.extend(extra);
    let o = rgnn(s, case, env, &args);
    assert!(o.status.success(), "{case} {extra:?}: {}", String::from_utf8_lossy(&o.stderr));
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(said.contains(&format!("{case} on rgnn host stand-in (no GPU) (sm_80)")), "{said}");
    worst_reference_err(case, &read_tensors(&out)).unwrap()
}

#[test]
fn every_model_family_runs_through_the_cuda_backend_and_matches_its_reference() {
    let Some(s) = stand_in() else { return };
    for case in ["rgcn_mean", "rgat_add_across_h3", "hgt_h4", "floyd_pre_ln", "dgl_basis_layernorm"] {
        let e = run_case(s, case, &[], &[]);
        assert!(e <= 1e-5, "{case}: relative error {e:.2e} against the reference");
    }
}

#[test]
fn tensor_core_kernels_run_through_the_cuda_backend() {
    let Some(s) = stand_in() else { return };
    let on = [("RGNN_CUDA_TENSOR_CORES", "1")];
    let e = run_case(s, "rgcn_mean", &on, &[]);
    assert!(e <= 1e-5, "split tf32: relative error {e:.2e}");
    for extra in [&["--dtype", "bf16"][..], &["--dtype", "f16"], &["--tf32"]] {
        let e = run_case(s, "rgcn_mean", &on, extra);
        assert!(e <= 1e-2, "{extra:?}: relative error {e:.2e}");
    }
}

#[test]
fn bench_replays_the_captured_forward_pass_and_times_it_with_events() {
    let Some(s) = stand_in() else { return };
    let json = s.root.join("bench.json");
    let (model, graph) = (fixture("rgat_add_across_h3", "model"), fixture("rgat_add_across_h3", "graph"));
    let o = rgnn(
        s,
        "bench",
        &[],
        &["bench", "--backend", "cuda", "--model", &model, "--graph", &graph, "--reps", "3", "--kernels", "--json", json.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["backend"], "cuda");
    assert_eq!(report["timing"], "device events");
    assert!(report["median_s"].as_f64().is_some_and(|t| t > 0.0), "{report}");
    let kernels = report["kernel_work"].as_array().expect("per-kernel times");
    assert!(!kernels.is_empty() && kernels.iter().all(|k| k["seconds"].as_f64().is_some_and(|t| t > 0.0)), "{report}");
}

#[test]
fn device_out_of_memory_says_what_was_needed_and_what_was_free() {
    let Some(s) = stand_in() else { return };
    let (model, graph) = (fixture("hgt_h4", "model"), fixture("hgt_h4", "graph"));
    let out = s.root.join("oom.safetensors");
    let o = rgnn(
        s,
        "oom",
        &[("RGNN_HOST_CUDA_MEMORY", "65536")],
        &["run", "--backend", "cuda", "--model", &model, "--graph", &graph, "--out", out.to_str().unwrap()],
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("needs") && err.contains("MiB of device memory") && err.contains("0.1 MiB are free"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!out.exists());
}

#[test]
fn a_ptx_cache_that_does_not_load_is_compiled_again() {
    let Some(s) = stand_in() else { return };
    assert!(run_case(s, "rgcn_no_root", &[], &[]) <= 1e-5);
    let cache = s.root.join("rgcn_no_root").join("cache").join("ptx");
    let files: Vec<PathBuf> = std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(!files.is_empty() && files.iter().all(|f| f.extension().is_some_and(|e| e == "ptx")), "{files:?}");
    for f in &files {
        std::fs::write(f, "not PTX").unwrap();
    }
    assert!(run_case(s, "rgcn_no_root", &[], &[]) <= 1e-5);
    for f in &files {
        assert!(std::fs::read_to_string(f).unwrap().starts_with("// rgnn host stand-in PTX"), "{} was not replaced", f.display());
    }
}

#[test]
fn backends_reports_the_device_and_its_versions() {
    let Some(s) = stand_in() else { return };
    let o = rgnn(s, "backends", &[], &["backends", "--require", "cuda"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("rgnn host stand-in (no GPU) (sm_80), 4 SMs, 1.0 of 1.0 GiB free; driver for CUDA 12.8, NVRTC 12.8"), "{text}");
}

/// Sessions prepared and run at the same time on three threads: each captures its forward pass on
/// a stream of its own, so neither capture takes in (or is broken by) the other's uploads and
/// launches. The stand-in is only loaded at a process's start, so the test runs again in a child.
#[test]
fn sessions_on_three_threads_do_not_disturb_each_other() {
    let Some(s) = stand_in() else { return };
    let name = "sessions_on_three_threads_do_not_disturb_each_other";
    if std::env::var_os("RGNN_HOST_CUDA_CHILD").is_none() {
        let o = on_stand_in(s, "threads", &std::env::current_exe().unwrap())
            .args(["--exact", name, "--test-threads", "1"])
            .env("RGNN_HOST_CUDA_CHILD", "1")
            .env("RGNN_HOST_CUDA_CAPTURE_DELAY_MS", "20")
            .output()
            .unwrap();
        let said = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(o.status.success() && said.contains("1 passed"), "{said}");
        return;
    }
    std::thread::scope(|threads| {
        for case in ["rgat_add_across_h3", "hgt_h4", "rgcn_mean"] {
            threads.spawn(move || {
                let (model, graph) = load_case(case);
                for _ in 0..3 {
                    let backend = CudaBackend::new().unwrap().with_tensor_cores(false);
                    let mut session = Session::with_backend(&model, &graph, Box::new(backend), CompileOptions::default()).unwrap();
                    for _ in 0..2 {
                        let out = session.run().unwrap_or_else(|e| panic!("{case}: {e}"));
                        assert_eq!(reference_mismatch(case, &out.tensors, 1e-5), None);
                    }
                }
            });
        }
    });
}
