//! The command line as a user meets it: exit codes, outputs on disk, one-paragraph errors.

mod common;
use common::*;
use std::io::Write;
use std::process::Command;

fn rgnn(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rgnn")).args(args).output().expect("rgnn runs")
}

/// An output path in the system's temporary directory (runs that fail never write it).
fn scratch_out() -> String {
    std::env::temp_dir().join(format!("rgnn-cli-unwritten-{}.safetensors", std::process::id())).display().to_string()
}

fn fixture(case: &str, kind: &str) -> String {
    fixtures_dir().join(format!("{case}.{kind}.safetensors")).display().to_string()
}

/// `rgnn run --backend B` on an RGAT, an HGT and a FloydNet fixture: outputs on disk within 1e-5
/// of the reference framework's.
fn run_matches_the_reference(backend: &str) {
    let out = std::env::temp_dir().join(format!("rgnn-cli-{backend}-{}.safetensors", std::process::id()));
    for case in ["rgat_mul_across_h2_d3", "hgt_h4", "floyd_pre_ln"] {
        let o = rgnn(&[
            "run",
            "--model",
            &fixture(case, "model"),
            "--graph",
            &fixture(case, "graph"),
            "--out",
            out.to_str().unwrap(),
            "--backend",
            backend,
        ]);
        assert!(o.status.success(), "{case}: {}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(reference_mismatch(case, &read_tensors(&out), 1e-5), None);
    }
}

#[test]
fn run_writes_outputs_that_match_the_reference() {
    run_matches_the_reference("cpu");
}

#[test]
fn inspect_prints_the_level1_program_of_every_fixture_model() {
    for case in fixture_cases() {
        let o = rgnn(&["inspect", "--model", &fixture(&case, "model"), "--ir"]);
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{case}: {}", String::from_utf8_lossy(&o.stderr));
        assert!(text.contains("params:") && text.contains("values:") && text.contains("outputs:"), "{case}: {text}");
    }
    let o = rgnn(&["inspect", "--model", &fixture("hgt_h1", "model"), "--graph", &fixture("hgt_h1", "graph"), "--ir"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("edge_softmax") && text.contains("gated_skip") && text.contains("# graph:"), "{text}");
}

#[test]
fn errors_are_one_paragraph_with_nonzero_exit() {
    let o = rgnn(&["run", "--model", "/nonexistent/m.safetensors", "--graph", "g", "--out", "o"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.starts_with("error: cannot read /nonexistent/m.safetensors"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let o =
        rgnn(&["run", "--model", &fixture("rgcn_mean", "model"), "--graph", &fixture("hgt_h1", "graph"), "--out", scratch_out().as_str()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("heterogeneous graph needs `metadata`"), "{err}");

    let o = rgnn(&[
        "run",
        "--model",
        &fixture("rgcn_mean", "model"),
        "--graph",
        &fixture("rgcn_mean", "graph"),
        "--out",
        scratch_out().as_str(),
        "--backend",
        "cuda",
    ]);
    if rgnn::runtime::cuda_backend::context().is_err() {
        assert!(!o.status.success());
        assert!(String::from_utf8_lossy(&o.stderr).contains("backend `cuda` is not available"));
    }
}

/// `rgnn bench --json` on a fixture with `backend`: the JSON it wrote.
fn bench_json(backend: &str) -> serde_json::Value {
    let json = std::env::temp_dir().join(format!("rgnn-bench-{backend}-{}.json", std::process::id()));
    let o = rgnn(&[
        "bench",
        "--model",
        &fixture("rgcn_mean", "model"),
        "--graph",
        &fixture("rgcn_mean", "graph"),
        "--backend",
        backend,
        "--reps",
        "3",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap()
}

#[test]
fn bench_writes_json() {
    let v = bench_json("cpu");
    for key in ["backend", "device", "reps", "median_s", "min_s", "max_s", "peak_bytes"] {
        assert!(v.get(key).is_some(), "missing {key} in {v}");
    }
    assert_eq!(v["reps"], 3);
    assert!(v["min_s"].as_f64().unwrap() <= v["median_s"].as_f64().unwrap());
}

/// `--kernels` where the backend does not time kernels one by one: the pass is still timed, and
/// the output says why there are no per-kernel times.
#[test]
fn bench_kernels_without_per_kernel_timing_says_so() {
    let (model, graph) = (fixture("rgcn_mean", "model"), fixture("rgcn_mean", "graph"));
    let o = rgnn(&["bench", "--model", &model, "--graph", &graph, "--backend", "cpu", "--reps", "2", "--kernels"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("median") && out.contains("does not time kernels one by one"), "{out}");
}

#[test]
fn demo_needs_no_arguments_and_reports_a_metric() {
    let o = rgnn(&["demo"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("MRR") && text.contains("Hits@10") && text.contains("inference"), "{text}");
}

#[test]
fn inspect_emits_the_generated_wgsl() {
    let o = rgnn(&[
        "inspect",
        "--model",
        &fixture("rgat_add_across_h3", "model"),
        "--graph",
        &fixture("rgat_add_across_h3", "graph"),
        "--emit",
        "wgsl",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("// ==== k0 map") && text.contains("traversal") && text.contains("@compute"), "{text}");
    let o = rgnn(&["inspect", "--model", &fixture("rgat_add_across_h3", "model"), "--emit", "wgsl"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--emit needs --graph"));
}

#[test]
fn inspect_emits_cuda_for_the_named_architecture() {
    let emit = |extra: &[&str]| {
        let (model, graph) = (fixture("rgcn_mean", "model"), fixture("rgcn_mean", "graph"));
        let mut args = vec!["inspect", "--model", &model, "--graph", &graph, "--emit", "cuda"];
        args.extend_from_slice(extra);
        let o = rgnn(&args);
        (o.status.success(), String::from_utf8_lossy(&o.stdout).to_string(), String::from_utf8_lossy(&o.stderr).to_string())
    };
    // Tensor-core GEMMs from sm_80 on (bf16 storage, or f32 with --tf32); the SIMT GEMM before.
    let (ok, text, err) = emit(&["--dtype", "bf16"]);
    assert!(ok && text.contains("gemm (tensor cores)") && text.contains("mma.sync.aligned.m16n8k16"), "{err}");
    // Each level-2 kernel's work (what `bench --kernels` turns into rates) heads its dispatches.
    assert!(text.contains("// ==== k0: moves ") && text.contains("// ==== k1: moves ") && text.contains(" flops\n"), "{text}");
    let (ok, text, err) = emit(&["--tf32"]);
    assert!(ok && text.contains("gemm (tensor cores)"), "{err}");
    let (ok, text, err) = emit(&["--dtype", "bf16", "--arch", "sm_75"]);
    assert!(ok && !text.contains("gemm (tensor cores)") && text.contains("gemm"), "{err}");
    let (ok, text, err) = emit(&[]);
    assert!(ok && !text.contains("gemm (tensor cores)"), "{err}");
    let (ok, _, err) = emit(&["--arch", "volta"]);
    assert!(!ok && err.contains("expected sm_XY"), "{err}");
}

/// `RGNN_CUDA_PIVOT_BLOCKS` sets the launch bound of tensor-core pivot attention, and only its.
#[test]
fn pivot_blocks_per_sm_reach_the_launch_bounds() {
    // Heads of 16 channels: pivot attention on tensor cores (the fixtures' heads are narrower).
    let dir = std::env::temp_dir().join(format!("rgnn-pivot-blocks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (model, graph) = (dir.join("floydnet.model.safetensors"), dir.join("floydnet.graph.safetensors"));
    rgnn_benches::synth::write_floydnet_model(&model, 32, 2, 1, 0).unwrap();
    rgnn_benches::synth::write_pair_graph(&graph, 1, 20, 32, 0).unwrap();
    let (model, graph) = (model.to_string_lossy().to_string(), graph.to_string_lossy().to_string());
    let emit = |blocks: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_rgnn"))
            .args(["inspect", "--model", &model, "--graph", &graph, "--emit", "cuda", "--dtype", "bf16"])
            .env("RGNN_CUDA_PIVOT_BLOCKS", blocks)
            .output()
            .expect("rgnn runs");
        (o.status.success(), String::from_utf8_lossy(&o.stdout).to_string(), String::from_utf8_lossy(&o.stderr).to_string())
    };
    let (ok, text, err) = emit("2");
    assert!(ok, "{err}");
    let pivots = text.split("// ==== ").filter(|k| k.contains("pivot_attention (tensor cores)")).collect::<Vec<_>>();
    assert!(!pivots.is_empty() && pivots.iter().all(|k| k.contains("__launch_bounds__(256, 2)")), "{text}");
    assert_eq!(text.matches(", 2) rgnn_kernel(").count(), pivots.len());
    let (ok, text, _) = emit("1");
    assert!(ok && !text.contains(", 2) rgnn_kernel("));
    let (ok, _, err) = emit("9");
    assert!(!ok && err.contains("RGNN_CUDA_PIVOT_BLOCKS is \"9\"; expected 1, 2, 3 or 4"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn f16_storage_is_a_clear_error_on_the_cpu_backend() {
    let o = rgnn(&[
        "run",
        "--model",
        &fixture("rgcn_mean", "model"),
        "--graph",
        &fixture("rgcn_mean", "graph"),
        "--out",
        scratch_out().as_str(),
        "--backend",
        "cpu",
        "--dtype",
        "f16",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("cpu backend stores and computes in f32"), "{err}");
}

/// Is there a wgpu adapter? (Without one, `RGNN_REQUIRE_WGPU=1` makes that a failure.)
fn wgpu_adapter() -> bool {
    let ok = rgnn::runtime::wgpu_backend::context().is_ok();
    if !ok {
        assert!(std::env::var("RGNN_REQUIRE_WGPU").map_or(true, |v| v != "1"), "RGNN_REQUIRE_WGPU=1 but no wgpu adapter");
        let _ = writeln!(std::io::stderr(), "SKIPPED: wgpu CLI test: no wgpu adapter");
    }
    ok
}

#[test]
fn run_and_bench_on_the_wgpu_backend() {
    if !wgpu_adapter() {
        return;
    }
    run_matches_the_reference("wgpu");
    let v = bench_json("wgpu");
    assert_eq!(v["backend"], "wgpu");
}

/// A reader that stops early (`rgnn inspect --emit cuda | head`) ends rgnn quietly, not in a panic.
#[cfg(unix)]
#[test]
fn a_closed_output_pipe_ends_rgnn_without_a_panic() {
    use std::io::Read;
    use std::process::Stdio;
    let (model, graph) = (fixture("floyd_pre_ln", "model"), fixture("floyd_pre_ln", "graph"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_rgnn"))
        .args(["inspect", "--model", &model, "--graph", &graph, "--emit", "cuda"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rgnn runs");
    let mut first = [0u8; 16];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // stdout is closed here; rgnn has far more than a pipe's buffer still to write.
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
    use std::os::unix::process::ExitStatusExt;
    const SIGPIPE: i32 = 13; // Linux and macOS
    assert_eq!(o.status.signal(), Some(SIGPIPE), "{:?}: {err}", o.status);
}

#[test]
fn backends_lists_each_backend_and_what_auto_takes() {
    let o = rgnn(&["backends", "--require", "cpu"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}\n{}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("cpu   available"), "{out}");
    assert!(lines[1].starts_with("wgpu  "), "{out}");
    assert!(lines[2].starts_with("cuda  "), "{out}");
    assert!(["cpu", "wgpu", "cuda"].iter().any(|b| lines[3] == format!("--backend auto runs on: {b}")), "{out}");

    // Where CUDA cannot run, requiring it fails with the reason; where it can, it passes.
    let o = rgnn(&["backends", "--require", "cuda"]);
    let err = String::from_utf8_lossy(&o.stderr);
    if String::from_utf8_lossy(&o.stdout).contains("cuda  available") {
        assert!(o.status.success(), "{err}");
    } else {
        assert_eq!(o.status.code(), Some(1));
        assert!(err.contains("error: backend `cuda` is not available: "), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// `--out` is written in place: an input given as the output is refused before any work, and a
/// symlink keeps pointing at the file it names, which receives the output.
#[test]
fn the_output_never_replaces_an_input_or_a_link() {
    let dir = std::env::temp_dir().join(format!("rgnn-cli-out-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let graph = dir.join("g.graph.safetensors");
    std::fs::copy(fixture("rgcn_mean", "graph"), &graph).unwrap();
    let before = std::fs::read(&graph).unwrap();
    let g = graph.display().to_string();
    let o = rgnn(&["run", "--model", &fixture("rgcn_mean", "model"), "--graph", &g, "--out", &g]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("is the graph file"), "{err}");
    assert_eq!(std::fs::read(&graph).unwrap(), before, "the graph file was overwritten");

    #[cfg(unix)]
    {
        let (target, link) = (dir.join("target.safetensors"), dir.join("link.safetensors"));
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let o = rgnn(&["run", "--model", &fixture("rgcn_mean", "model"), "--graph", &g, "--out", &link.display().to_string()]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link was replaced");
        assert!(rgnn::runtime::io::TensorFile::open(&target).is_ok(), "the link's target holds no output");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
