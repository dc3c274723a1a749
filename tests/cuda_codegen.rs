//! Every CUDA C kernel generated for every fixture compiles to PTX with clang, without CUDA
//! headers or libdevice (`clang -x cuda --cuda-device-only -nocudainc -nocudalib`), and the PTX
//! calls nothing external. f32 storage for every fixture; f16, bf16 and f32 with TF32 tensor cores
//! for one fixture per model family. The generated code also runs on the host (one host thread per
//! CUDA thread, `mma.sync` emulated) against the CPU backend. No GPU or CUDA toolkit needed.
//!
//! Without clang these tests print why and pass, unless `RGNN_REQUIRE_CLANG=1` (as in CI).

mod common;
use common::*;
use rgnn::codegen::{CompileOptions, LowerOptions};
use rgnn::ir::level2::DType;
use rgnn::{Graph, Model};
use std::path::PathBuf;
use std::process::Command;

fn clang() -> Option<String> {
    for name in ["clang", "clang-19", "clang-18", "clang-17", "clang-16", "clang-15", "clang-14"] {
        if Command::new(name).arg("--version").output().is_ok_and(|o| o.status.success()) {
            return Some(name.to_string());
        }
    }
    common::skip_unless_required("RGNN_REQUIRE_CLANG", "the CUDA code checks need clang (apt-get install clang)");
    None
}

/// The C++ compiler the host emulation uses; without one, says why (a failure when
/// `RGNN_REQUIRE_CLANG=1`, as in CI).
fn host_compiler() -> Option<String> {
    let cxx = rgnn::runtime::cuda_backend::host_emulation::compiler();
    if cxx.is_none() {
        common::skip_unless_required("RGNN_REQUIRE_CLANG", "the CUDA host emulation needs a C++ compiler");
    }
    cxx
}

/// Compile one source; the PTX on success, clang's message otherwise.
fn compile(clang: &str, dir: &std::path::Path, name: &str, source: &str) -> Result<String, String> {
    let cu = dir.join(format!("{name}.cu"));
    let ptx = dir.join(format!("{name}.ptx"));
    std::fs::write(&cu, source).unwrap();
    let o = Command::new(clang)
        .args(["-x", "cuda", "--cuda-device-only", "-nocudainc", "-nocudalib", "--cuda-gpu-arch=sm_80", "-O2", "-S", "-o"])
        .arg(&ptx)
        .arg(&cu)
        .output()
        .map_err(|e| e.to_string())?;
    if !o.status.success() {
        return Err(String::from_utf8_lossy(&o.stderr).chars().take(3000).collect());
    }
    Ok(std::fs::read_to_string(&ptx).unwrap())
}

/// Compile one source expecting `instruction` in its PTX; what went wrong, if anything.
fn ptx_lacking(clang: &str, dir: &std::path::Path, name: &str, source: &str, instruction: &str, what: &str) -> Option<String> {
    match compile(clang, dir, name, source) {
        Ok(ptx) if !ptx.contains(instruction) => Some(format!("{what}: no `{instruction}` in the PTX")),
        Ok(_) => None,
        Err(e) => Some(format!("{what}: {e}")),
    }
}

#[test]
fn every_generated_cuda_kernel_compiles_to_ptx() {
    let Some(clang) = clang() else { return };
    let dir: PathBuf = std::env::temp_dir().join(format!("rgnn-cuda-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut jobs = vec![];
    for case in fixture_cases() {
        let (model, graph) = load_case(&case);
        let mut variants = vec![(DType::F32, false)];
        if ["rgcn_mean", "rgat_add_across_h3", "hgt_h4", "floyd_pre_ln", "dgl_basis_layernorm"].contains(&case.as_str()) {
            variants.extend([(DType::F16, false), (DType::BF16, false), (DType::F32, true)]);
        }
        for (storage, tf32) in variants {
            let options = CompileOptions { storage, tf32, ..Default::default() };
            let generated = rgnn::runtime::emit_cuda(&model, &graph, options, 8).unwrap();
            let tag = if tf32 { "tf32".to_string() } else { format!("{storage:?}") };
            for (i, d) in generated.dispatches.into_iter().enumerate() {
                jobs.push((format!("{case}-{tag}-{i}"), format!("{case} ({tag}) {}", d.label), d.source));
            }
        }
    }
    // Two compilers at a time.
    let chunks: Vec<Vec<_>> = jobs.chunks(jobs.len().div_ceil(2).max(1)).map(|c| c.to_vec()).collect();
    let failures: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .iter()
            .map(|chunk| {
                let (clang, dir) = (&clang, &dir);
                s.spawn(move || {
                    let mut failures = vec![];
                    for (file, label, source) in chunk {
                        match compile(clang, dir, file, source) {
                            Ok(ptx) if !ptx.contains(".visible .entry rgnn_kernel(") => {
                                failures.push(format!("{label}: no rgnn_kernel entry"))
                            }
                            Ok(ptx) if ptx.contains(".extern .func") => failures.push(format!("{label}: calls an external function")),
                            Ok(_) => {}
                            Err(e) => failures.push(format!("{label}: {e}")),
                        }
                    }
                    failures
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let _ = std::fs::remove_dir_all(&dir);
    println!("{} CUDA kernels compiled to PTX (sm_80)", jobs.len());
    assert!(failures.is_empty(), "{} of {} kernels failed:\n{}", failures.len(), jobs.len(), failures.join("\n\n"));
}

/// The generated CUDA C, compiled for the host (one host thread per CUDA thread), against the
/// CPU backend: f32 within 1e-5 on fixtures covering every template and option family; f16 /
/// bf16 storage and TF32 within 1e-2, on the SIMT GEMM and on tensor cores (`mma.sync` emulated
/// from the fragment layouts, so a layout mistake in the GEMM template shows here); f32 pivot
/// attention as split tf32 on tensor cores within 1e-5.
#[test]
fn generated_cuda_c_computes_what_the_cpu_backend_computes() {
    let Some(cxx) = host_compiler() else { return };
    // (case, storage, tf32, tensor cores, tolerance)
    let f32 = |case| (case, DType::F32, false, false, 1e-5);
    let cases: &[(&str, DType, bool, bool, f64)] = &[
        f32("rgcn_mean"),
        f32("rgcn_basis_max"),
        f32("rgcn_blocks_add"),
        f32("rgcn_featureless"),
        f32("rgcn_stack3_acts"),
        f32("rgat_add_across_h3"),
        f32("rgat_mul_within_h2_d2_mean"),
        f32("rgat_nations_within"),
        f32("hgt_h4"),
        f32("hgt_h2_empty_edge_type"),
        f32("hgt_stack2"),
        f32("dgl_basis_layernorm"),
        f32("floyd_pre_ln"),
        f32("floyd_post_rms_noffn_nomix"),
        f32("floyd_pre_affine_gelu_ratio2"),
        ("rgat_add_across_h3", DType::F16, false, false, 1e-2),
        ("hgt_h4", DType::BF16, false, false, 1e-2),
        ("rgat_add_across_h3", DType::F16, false, true, 1e-2),
        ("hgt_h4", DType::BF16, false, true, 1e-2),
        ("hgt_stack2", DType::F16, false, true, 1e-2),
        ("rgcn_blocks_add", DType::BF16, false, true, 1e-2),
        ("rgcn_mean", DType::F32, true, true, 1e-2),
        ("floyd_pre_ln", DType::F32, true, true, 1e-2),
        ("floyd_pre_ln", DType::F32, false, true, 1e-5),
        ("hgt_h4", DType::F32, false, true, 1e-5),
        ("dgl_basis_layernorm", DType::F32, true, true, 1e-2),
    ];
    let dir = std::env::temp_dir().join(format!("rgnn-cuda-host-{}", std::process::id()));
    let mut failures = vec![];
    for (i, &(case, storage, tf32, tensor_cores, tolerance)) in cases.iter().enumerate() {
        let what = format!("{case} ({storage:?}{}{})", if tf32 { ", tf32" } else { "" }, if tensor_cores { ", tensor cores" } else { "" });
        let (model, graph) = load_case(case);
        let options = CompileOptions { storage, tf32, ..Default::default() };
        failures.extend(host_emulation_against_cpu(
            &what,
            &model,
            &graph,
            options,
            tensor_cores,
            tolerance,
            &cxx,
            &dir.join(i.to_string()),
        ));
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Run `model` on `graph` through the host-compiled CUDA C and on the CPU backend; what differs
/// by more than `tolerance`, or fails.
#[allow(clippy::too_many_arguments)]
fn host_emulation_against_cpu(
    what: &str,
    model: &Model,
    graph: &Graph,
    options: CompileOptions,
    tensor_cores: bool,
    tolerance: f64,
    cxx: &str,
    dir: &std::path::Path,
) -> Vec<String> {
    let mut cpu = rgnn::Session::new(model, graph, rgnn::BackendKind::Cpu).unwrap();
    let want = cpu.run().unwrap().tensors;
    let mut failures = vec![];
    match rgnn::runtime::run_cuda_host_emulation(model, graph, options, tensor_cores, cxx, dir) {
        Ok(got) => {
            for ((name, w), (_, g)) in want.iter().zip(&got) {
                let err = rel_err(&g.data, &w.data);
                println!("{what} `{name}`: rel err vs cpu {err:.2e}");
                if err.is_nan() || err > tolerance {
                    failures.push(format!("{what} `{name}`: rel err {err:.2e} > {tolerance:e}"));
                }
            }
        }
        Err(e) => failures.push(format!("{what}: {e}")),
    }
    failures
}

/// Destinations of all three degree classes in one graph (a few in-edges: a thread each; tens
/// to a hundred: a warp each, lanes merging by shuffles; hundreds: a block each), for every
/// traversal form: per-relation mean and max, attention across and within relations (online
/// softmax reweighed across lanes, and per segment), HGT. (RGCN with max reduces per
/// (destination, relation) segment first, a thread each: there for the thread class alone.)
#[test]
fn every_degree_class_of_the_traversal_matches_the_cpu_backend() {
    let Some(cxx) = host_compiler() else { return };
    let clang = clang();
    let dir = std::env::temp_dir().join(format!("rgnn-cuda-classes-{}", std::process::id()));
    let mut failures = vec![];
    for (i, case) in DEGREE_CLASS_CASES.iter().enumerate() {
        // The multiplicative attention fixture's messages (heads × dim × channels) are 32 wide,
        // which takes column-split warps: narrower here, for the warps that split the segments.
        let model = if *case == "rgat_mul_within_h2_d2_mean" {
            model_of_width(case, 8, 5, 16)
        } else {
            Model::load(fixtures_dir().join(format!("{case}.model.safetensors"))).unwrap()
        };
        let graph = degree_class_graph(case, i as u64, None);
        let generated = rgnn::runtime::emit_cuda(&model, &graph, CompileOptions::default(), 8).unwrap();
        let labels: Vec<&str> = generated.dispatches.iter().map(|d| d.label.as_str()).collect();
        for class in ["(warps)", "(hubs)"] {
            if *case != "rgcn_max" && !labels.iter().any(|l| l.contains(class)) {
                failures.push(format!("{case}: no traversal {class} in {labels:?}"));
            }
        }
        // The shuffles are inline PTX, which the host emulation replaces: compile them for the device.
        if let Some(clang) = &clang {
            std::fs::create_dir_all(&dir).unwrap();
            for (j, d) in generated.dispatches.iter().enumerate().filter(|(_, d)| d.label.contains("(warps)")) {
                let what = format!("{case} {}", d.label);
                failures.extend(ptx_lacking(clang, &dir, &format!("{case}-{j}"), &d.source, "shfl.sync.bfly.b32", &what));
            }
        }
        failures.extend(host_emulation_against_cpu(
            case,
            &model,
            &graph,
            CompileOptions::default(),
            false,
            1e-5,
            &cxx,
            &dir.join(i.to_string()),
        ));
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Wide messages (64 columns) take a column-split warp for every destination below a hub (lanes
/// over the columns, the row arrays in the warp's shared memory) and column-split warps merging
/// through their slices for hubs, in blocks of fewer warps where rows are wider (512, 1024): every traversal form on the degree-class graphs against the
/// CPU backend (f32 within 1e-5), and the kernels' PTX has the warp barriers and no local memory.
/// (RGCN with max reduces per (destination, relation) segment, a warp each: no hubs there; nor
/// with the two-pass softmax, also run for the attention forms.)
#[test]
fn column_split_traversal_matches_the_cpu_backend() {
    let Some(cxx) = host_compiler() else { return };
    let clang = clang();
    let dir = std::env::temp_dir().join(format!("rgnn-cuda-columns-{}", std::process::id()));
    let mut failures = vec![];
    let two_pass = CompileOptions { lower: LowerOptions { online_softmax: false }, ..Default::default() };
    // 512 columns (RGCN: 1024): rows too wide for the usual warps per block (four, a hub's
    // eight), so blocks of fewer warps.
    let runs = DEGREE_CLASS_CASES
        .iter()
        .map(|c| (*c, CompileOptions::default(), "", 64))
        .chain(["rgat_add_across_h3", "rgat_mul_within_h2_d2_mean", "hgt_h4"].into_iter().map(|c| (c, two_pass, ", two-pass softmax", 64)))
        .chain(
            [("rgcn_mean", 1024), ("rgat_add_across_h3", 512), ("hgt_h4", 512)]
                .map(|(c, w)| (c, CompileOptions::default(), ", fewer warps", w)),
        );
    for (i, (case, options, how, width)) in runs.enumerate() {
        // 12 relations: a hub's segments reach every warp of its block. 40 input features:
        // RGCN with max reduces them per segment in a column-split warp too.
        let model = model_of_width(case, width, 12, 40);
        let graph = degree_class_graph(case, i as u64, Some(12));
        let generated = rgnn::runtime::emit_cuda(&model, &graph, options, 8).unwrap();
        let labels: Vec<&str> = generated.dispatches.iter().map(|d| d.label.as_str()).collect();
        for class in ["(columns)", "(column hubs)"] {
            let expected = !((case == "rgcn_max" || how.contains("two-pass")) && class == "(column hubs)");
            if expected && !labels.iter().any(|l| l.contains(class)) {
                failures.push(format!("{case} (wide{how}): no traversal {class} in {labels:?}"));
            }
        }
        if let Some(l) = labels.iter().find(|l| l.contains("traversal") && !l.contains("(column")) {
            failures.push(format!("{case} (wide{how}): `{l}` is not column-split"));
        }
        let columns: Vec<_> = generated.dispatches.iter().filter(|d| d.label.contains("(column")).collect();
        let fewer = |d: &&rgnn::kernels::gpu::Dispatch| d.threads[0] < if d.label.contains("hubs") { 256 } else { 128 };
        if width > 64 && !columns.iter().any(fewer) {
            failures.push(format!("{case} (wide{how}): no block of fewer than four warps in {labels:?}"));
        }
        if let Some(clang) = &clang {
            std::fs::create_dir_all(&dir).unwrap();
            for (j, d) in columns.iter().enumerate() {
                let what = format!("{case} (wide{how}) {}", d.label);
                match compile(clang, &dir, &format!("{case}-wide-{i}-{j}"), &d.source) {
                    Ok(ptx) if !ptx.contains("bar.warp.sync") => failures.push(format!("{what}: no warp barrier in the PTX")),
                    Ok(ptx) if ptx.contains(".local") => failures.push(format!("{what}: local memory in the PTX")),
                    Ok(_) => {}
                    Err(e) => failures.push(format!("{what}: {e}")),
                }
            }
        }
        let what = format!("{case} (wide{how})");
        failures.extend(host_emulation_against_cpu(&what, &model, &graph, options, false, 1e-5, &cxx, &dir.join(i.to_string())));
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The traversal forms the degree-class tests cover (fixture names).
const DEGREE_CLASS_CASES: [&str; 6] = ["rgcn_mean", "rgcn_max", "rgcn_add", "rgat_add_across_h3", "rgat_mul_within_h2_d2_mean", "hgt_h4"];

/// `case`'s fixture graph, remade so that all three degree classes occur: 300 nodes with 3
/// in-edges on average; nodes 1..=12 get 20 to 130 more, node 0 400 (HGT: the same in-degrees for
/// papers 0..=12, through citations); over `relations` relations, or the fixture's. With
/// `relations` given, node 0 gets 600 more in-edges of relation 0 and node 13 100 of relation 1
/// (segments longer than a warp walks in one batch of edges, in a hub and below), and nodes have
/// 40 features.
fn degree_class_graph(case: &str, seed: u64, relations: Option<usize>) -> Graph {
    match Graph::load(fixtures_dir().join(format!("{case}.graph.safetensors"))).unwrap() {
        Graph::Relational(g) => {
            let long_segments = relations.is_some();
            let f = if long_segments { 40 } else { g.x.as_ref().map_or(0, |x| x.shape[1]) };
            let relations = relations.unwrap_or_else(|| g.rel.iter().copied().max().map_or(1, |m| m as usize + 1));
            let n = 300;
            let mut edges = random_edges(n, 900, relations, relations, n, 0, 1 + seed);
            for v in 0..=12usize {
                let extra = if v == 0 { 400 } else { 20 + 10 * v };
                edges.extend(random_edges(n, extra, relations, relations, n, 0, 100 + v as u64).into_iter().map(|(s, _, r)| (s, v, r)));
            }
            if long_segments {
                for (v, r, extra) in [(0, 0, 600), (13, 1, 100)] {
                    edges.extend(random_edges(n, extra, 1, 1, n, 0, 200 + v as u64).into_iter().map(|(s, _, _)| (s, v, r)));
                }
            }
            Graph::from_bytes("degree classes", graph_bytes(n, f, &edges, 7)).unwrap()
        }
        Graph::Hetero(mut g) => {
            let papers = g.num_nodes["paper"];
            let (src, dst) = g.edges.get_mut("paper__cites__paper").expect("the HGT fixture has citations");
            let mut rng = Lcg(5);
            for v in 0..=12u32 {
                for _ in 0..if v == 0 { 400 } else { 20 + 10 * v } {
                    src.push(rng.below(papers) as u32);
                    dst.push(v);
                }
            }
            Graph::Hetero(g)
        }
        Graph::Pair(_) => unreachable!("{case} is not a FloydNet case"),
    }
}

/// A model of `case`'s form (the fixture's inputs, attention and heads; random weights) whose
/// layer outputs `w` columns: RGCN `w` channels, RGAT two heads of `w / 2`, HGT four heads of
/// `w / 4`; RGCN and RGAT over `r` relations from `f` features.
fn model_of_width(case: &str, w: usize, r: usize, f: usize) -> Model {
    let layer = |body: &str| format!(r#"{{"format": "rgnn/1", "model": "{case}_{w}", "layers": [{{"prefix": "c", {body}}}]}}"#);
    let rgcn = |aggr: &str| {
        let config = layer(&format!(
            r#""type": "RGCNConv", "in_channels": {f}, "out_channels": {w}, "num_relations": {r}, "num_bases": null, "num_blocks": null, "aggr": "{aggr}", "root_weight": true, "bias": true, "activation": null"#
        ));
        let weights = [("c.weight", vec![r, f, w]), ("c.root", vec![f, w]), ("c.bias", vec![w])];
        (config, weights.map(|(n, s)| (n.to_string(), s)).to_vec())
    };
    let rgat = |mode: &str, mechanism: &str, dim: usize, concat: bool| {
        let h = w / 2;
        let config = layer(&format!(
            r#""type": "RGATConv", "in_channels": {f}, "out_channels": {h}, "num_relations": {r}, "heads": 2, "dim": {dim}, "concat": {concat}, "attention_mode": "{mode}", "attention_mechanism": "{mechanism}", "negative_slope": 0.2, "bias": true, "num_bases": null, "num_blocks": null, "mod": null, "edge_dim": null, "activation": null"#
        ));
        let weights = vec![
            ("c.weight", vec![r, f, w]),
            ("c.q", vec![w, 2 * dim]),
            ("c.k", vec![w, 2 * dim]),
            ("c.bias", vec![w]),
            ("c.l1", vec![1, h]),
            ("c.b1", vec![1, h]),
            ("c.l2", vec![h, h]),
            ("c.b2", vec![1, h]),
            ("c.w", vec![h]),
        ];
        (config, weights.into_iter().map(|(n, s)| (n.to_string(), s)).collect())
    };
    let (config, weights) = match case {
        "rgcn_mean" => rgcn("mean"),
        "rgcn_max" => rgcn("max"),
        "rgcn_add" => rgcn("add"),
        "rgat_add_across_h3" => rgat("additive-self-attention", "across-relation", 1, true),
        "rgat_mul_within_h2_d2_mean" => rgat("multiplicative-self-attention", "within-relation", 2, false),
        "hgt_h4" => {
            let config = format!(
                r#"{{"format": "rgnn/1", "model": "hgt_h4_{w}", "layers": [{{"type": "HGTConv", "prefix": "c", "in_channels": {{"paper": 16, "author": 12, "institution": 8}}, "out_channels": {w}, "heads": 4, "activation": "relu"}}], "metadata": {{"node_types": ["paper", "author", "institution"], "edge_types": [["paper", "cites", "paper"], ["author", "writes", "paper"], ["paper", "written_by", "author"], ["institution", "employs", "author"]]}}}}"#
            );
            let d = w / 4;
            let mut weights = vec![("c.k_rel.weight".to_string(), vec![16, d, d]), ("c.v_rel.weight".to_string(), vec![16, d, d])];
            for (t, f) in [("paper", 16), ("author", 12), ("institution", 8)] {
                weights.extend([
                    (format!("c.kqv_lin.lins.{t}.weight"), vec![3 * w, f]),
                    (format!("c.kqv_lin.lins.{t}.bias"), vec![3 * w]),
                    (format!("c.out_lin.lins.{t}.weight"), vec![w, w]),
                    (format!("c.out_lin.lins.{t}.bias"), vec![w]),
                    (format!("c.skip.{t}"), vec![1]),
                ]);
            }
            for e in ["paper__cites__paper", "author__writes__paper", "paper__written_by__author", "institution__employs__author"] {
                weights.push((format!("c.p_rel.{e}"), vec![1, 4]));
            }
            (config, weights)
        }
        _ => unreachable!("no model of {case}'s form"),
    };
    let weights: Vec<(&str, Vec<usize>)> = weights.iter().map(|(n, s)| (n.as_str(), s.clone())).collect();
    Model::from_bytes(case, model_bytes(&config, &weights, 11)).unwrap()
}

/// The tensor-core GEMM on each way its A operand arrives (`cp.async` of 16 or 4 bytes, plain
/// loads where rows are not 4-byte aligned) and over several K steps with a partial last one, so
/// both shared-memory stages are used: RGCN layers with 37, 38 and 40 input channels on a graph
/// of 200 nodes (four row tiles of the busiest relation); f16, bf16, tf32 (within 1e-2) and
/// split tf32 (plain f32, within 1e-5).
#[test]
fn tensor_core_gemm_matches_on_every_operand_path() {
    let Some(cxx) = host_compiler() else { return };
    let dir = std::env::temp_dir().join(format!("rgnn-cuda-gemm-{}", std::process::id()));
    let (n, r, out) = (200, 3, 10);
    let edges = random_edges(n, 900, r, r, n, 0, 3);
    let mut failures = vec![];
    // (input channels, storage, tf32, what A's loads must be)
    let cases = [
        (37, DType::F16, false, "sa[s][m * 24u + kk] = rg_f2h("),
        (38, DType::BF16, false, "rg_cp_async4(&sa"),
        (40, DType::F16, false, "rg_cp_async16(&sa"),
        (37, DType::F32, true, "rg_cp_async4(&sa"),
        (40, DType::F32, true, "rg_cp_async16(&sa"),
        (37, DType::F32, false, "rg_cp_async4(&sa"),
        (40, DType::F32, false, "rg_cp_async16(&sa"),
    ];
    for (i, (f, storage, tf32, load)) in cases.into_iter().enumerate() {
        let config = format!(
            r#"{{"format": "rgnn/1", "model": "rgcn_{f}", "layers": [{{"type": "RGCNConv", "prefix": "c", "in_channels": {f}, "out_channels": {out}, "num_relations": {r}, "aggr": "add"}}]}}"#
        );
        let weights = [("c.weight", vec![r, f, out]), ("c.root", vec![f, out]), ("c.bias", vec![out])];
        let model = Model::from_bytes("rgcn", model_bytes(&config, &weights, 9)).unwrap();
        let graph = Graph::from_bytes("random graph", graph_bytes(n, f, &edges, 4)).unwrap();
        let options = CompileOptions { storage, tf32, ..Default::default() };
        // f32 without tf32 runs as split tf32, held to f32's tolerance.
        let split = storage == DType::F32 && !tf32;
        let what = format!(
            "{f} channels, {storage:?}{}",
            if tf32 {
                " (tf32)"
            } else if split {
                " (split tf32)"
            } else {
                ""
            }
        );
        let generated = rgnn::runtime::emit_cuda(&model, &graph, options, 8).unwrap();
        if !generated.dispatches.iter().any(|d| d.label.contains("tensor cores") && d.source.contains(load)) {
            failures.push(format!("{what}: no tensor-core GEMM loading A by `{load}`"));
        }
        let tolerance = if split { 1e-5 } else { 1e-2 };
        failures.extend(host_emulation_against_cpu(&what, &model, &graph, options, true, tolerance, &cxx, &dir.join(i.to_string())));
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Pivot attention on tensor cores against the CPU backend: FloydNet blocks with heads of 16 and
/// 32 channels (f16, bf16: one and two K steps) and of 8 and 16 (tf32; split tf32 at 16), on
/// 37 nodes (three query tiles and three pivot steps, the last of each partial) with padded
/// nodes in the second graph, so masked queries, masked pivots and pivots past the last node all
/// occur.
#[test]
fn tensor_core_pivot_attention_matches_the_cpu_backend() {
    let Some(cxx) = host_compiler() else { return };
    let clang = clang();
    let dir = std::env::temp_dir().join(format!("rgnn-cuda-pivot-{}", std::process::id()));
    let mut failures = vec![];
    // (channels, heads, storage, tf32, tolerance). bf16 gets a wider tolerance: on a softmax
    // this sharp, the tensor-core GEMMs' weights rounded to bf16 move the scores enough to cost
    // 1.1e-2 (4.6e-3 with SIMT GEMMs, with or without the tensor-core pivot attention).
    // N = 130 has nine query tiles a side: a full run of eight and a partial one. f32 without
    // tf32 runs as split tf32 and is held to f32's tolerance.
    let cases = [
        (32, 2, 37, DType::F16, false, 1e-2),
        (64, 2, 37, DType::BF16, false, 2e-2),
        (16, 2, 37, DType::F32, true, 1e-2),
        (32, 2, 37, DType::F32, true, 1e-2),
        (16, 1, 130, DType::F16, false, 1e-2),
        (32, 2, 37, DType::F32, false, 1e-5),
    ];
    for (i, (c, heads, n, storage, tf32, tolerance)) in cases.into_iter().enumerate() {
        // No norms and no FFN, and q, k, v eight times the usual scale: the attention term
        // dominates the output and its softmax is sharp, so the running max moves between steps.
        let config = format!(
            r#"{{"format": "rgnn/1", "model": "floyd_c{c}", "layers": [{{"type": "PivotalAttentionBlock", "prefix": "b", "embed_dim": {c}, "num_heads": {heads}, "bias": false, "ffn_expansion_ratio": 4, "norm_position": "pre", "activation_fn": "relu", "norm_fn": "none", "enable_symmetric_mix": true, "enable_ffn": false, "activation": null}}]}}"#
        );
        let weights = [("b.c_mix.weight", vec![c, c], 1.0), ("b.c_qkv.weight", vec![5 * c, c], 8.0), ("b.c_proj.weight", vec![c, c], 1.0)];
        let model = Model::from_bytes("floydnet", model_bytes_scaled(&config, &weights, 11)).unwrap();
        let graph = Graph::from_bytes("pair graph", pair_graph_bytes(2, n, c, 5, 12)).unwrap();
        let options = CompileOptions { storage, tf32, ..Default::default() };
        let what = format!("N={n} C={c} H={heads}, {storage:?}{}", if tf32 { " (tf32)" } else { "" });
        let generated = rgnn::runtime::emit_cuda(&model, &graph, options, 8).unwrap();
        let Some(pivot) = generated.dispatches.iter().find(|d| d.label.contains("pivot_attention")) else {
            failures.push(format!("{what}: no pivot attention"));
            continue;
        };
        let want = if storage == DType::F32 && !tf32 { "tensor cores, split tf32" } else { "tensor cores" };
        if !pivot.label.contains(want) {
            failures.push(format!("{what}: pivot attention not on tensor cores ({})", pivot.label));
        }
        if let Some(clang) = &clang {
            std::fs::create_dir_all(&dir).unwrap();
            failures.extend(ptx_lacking(clang, &dir, &format!("pivot-{i}"), &pivot.source, "mma.sync.aligned", &what));
        }
        failures.extend(host_emulation_against_cpu(&what, &model, &graph, options, true, tolerance, &cxx, &dir.join(i.to_string())));
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The work `rgnn bench --kernels` divides its times by: a GEMM's flops are 2 · rows · in · out
/// over the rows of its domain (compact (source, relation) rows as the plan's compaction decided,
/// or nodes), a pivot attention's are 8 · B · N³ · C, a traversal has none and moves at least its
/// input rows, its output rows and an index per edge.
#[test]
fn kernel_work_counts_products_and_arrays() {
    use rgnn::ir::level2::{BufferRole, Kernel, RowOp};
    use rgnn::kernels::gpu::ArrayRef;
    let (m, g) = load_case("rgcn_mean");
    let work = rgnn::kernels::gpu::kernel_work(&rgnn::runtime::emit_cuda(&m, &g, CompileOptions::default(), 8).unwrap().dispatches);
    let session = rgnn::Session::new(&m, &g, rgnn::BackendKind::Cpu).unwrap();
    let plan = session.plan().unwrap();
    assert_eq!(work.iter().map(|w| w.kernel).collect::<Vec<_>>(), (0..plan.kernels.len()).collect::<Vec<_>>());
    let nodes = expected("rgcn_mean")[0].1.shape[0];
    let edges: usize = plan.compaction.iter().map(|c| c.0).sum();
    let compact_rows: usize = plan.compaction.iter().map(|&(e, u, c)| if c { u } else { e }).sum();
    let (Kernel::Gemm(k0), Kernel::Traversal(k1), Kernel::Gemm(k2)) = (&plan.kernels[0], &plan.kernels[1], &plan.kernels[2]) else {
        panic!("rgcn_mean lowers to gemm, traversal, gemm:\n{}", plan.to_text())
    };
    let RowOp::Load { buffer: x, .. } = k0.input.ops[0] else { panic!("the first GEMM loads x") };
    let (features, out) = (plan.buffer(x).width, plan.buffer(k0.output).width);
    assert_eq!(work[0].flops, 2.0 * (compact_rows * features * out) as f64);
    assert_eq!(work[2].flops, 2.0 * (nodes * features * plan.buffer(k2.output).width) as f64);
    assert_eq!(work[1].flops, 0.0);
    let floor = 4 * (compact_rows * out + nodes * plan.buffer(k1.output).width + edges);
    let traversal = work[1].bytes as usize;
    assert!(
        traversal >= floor && traversal <= floor + 4 * 8 * (edges + nodes + compact_rows),
        "traversal moves {traversal} bytes, floor {floor}"
    );

    let (m, g) = load_case("floyd_pre_ln");
    let work = rgnn::kernels::gpu::kernel_work(&rgnn::runtime::emit_cuda(&m, &g, CompileOptions::default(), 8).unwrap().dispatches);
    let session = rgnn::Session::new(&m, &g, rgnn::BackendKind::Cpu).unwrap();
    let plan = session.plan().unwrap();
    let (batch, n) = (2, 8); // the fixture's pair graphs
    let mut pivots = 0;
    for (k, kernel) in plan.kernels.iter().enumerate() {
        if let Kernel::PivotAttention(p) = kernel {
            let out = plan.buffer(p.output);
            let shape = &expected("floyd_pre_ln")[0].1.shape;
            assert_eq!(shape[..shape.len() - 1].iter().product::<usize>(), batch * n * n, "B · N² pair rows");
            assert_eq!(work[k].flops, 8.0 * (batch * n * n * n * out.width) as f64, "k{k}");
            pivots += 1;
        }
    }
    assert_eq!(pivots, 2, "two blocks, one pivot attention each");

    // HGT's first per-type GEMM reads its node type's rows of x and stores their K, Q and V
    // slices into buffers over all nodes: it moves those rows, not the whole buffers.
    let (m, g) = load_case("hgt_h4");
    let dispatches = rgnn::runtime::emit_cuda(&m, &g, CompileOptions::default(), 8).unwrap().dispatches;
    let work = rgnn::kernels::gpu::kernel_work(&dispatches);
    let session = rgnn::Session::new(&m, &g, rgnn::BackendKind::Cpu).unwrap();
    let plan = session.plan().unwrap();
    let gemm = dispatches.iter().find(|d| d.kernel == 0).expect("k0 is a per-type GEMM");
    let (mut expected_bytes, mut whole_bytes, mut partial) = (0, 0, 0);
    let x = plan.buffers.iter().find(|b| b.name == "x.paper").expect("x.paper");
    let rows =
        gemm.bindings.iter().find(|b| matches!(b.array, ArrayRef::Data(id) if plan.buffers[id.0].name == "x.paper")).unwrap().len / x.width;
    for b in &gemm.bindings {
        whole_bytes += b.len * 4;
        expected_bytes += 4 * match b.array {
            ArrayRef::Data(id) if plan.buffers[id.0].role == BufferRole::Intermediate => {
                partial += 1;
                rows * plan.buffers[id.0].width
            }
            _ => b.len,
        };
    }
    assert_eq!(partial, 3, "K, Q and V over all nodes:\n{}", gemm.source);
    assert_eq!(work[0].bytes as usize, expected_bytes);
    assert!(expected_bytes < whole_bytes);
}

/// CUDA GEMMs apply column-separable input and epilogue programs as they load and store (no row
/// kernel, no scratch round trip), and HGT's per-type K/Q/V GEMMs store straight into the global
/// K, Q and V buffers (no slice maps); an epilogue with a norm keeps its row kernel, and WGSL
/// keeps all of them.
#[test]
fn cuda_gemms_fuse_separable_row_programs_and_slice_maps() {
    let cuda = |case: &str| {
        let (m, g) = load_case(case);
        let p = rgnn::runtime::emit_cuda(&m, &g, CompileOptions::default(), 8).unwrap();
        (p.dispatches.iter().map(|d| d.label.clone()).collect::<Vec<_>>(), p.scratch_elems)
    };
    let wgsl = |case: &str| {
        let (m, g) = load_case(case);
        rgnn::runtime::emit_wgsl(&m, &g, CompileOptions::default()).unwrap().dispatches.iter().map(|d| d.label.clone()).collect::<Vec<_>>()
    };
    let count = |labels: &[String], what: &str| labels.iter().filter(|l| l.contains(what)).count();

    let (hgt, scratch) = cuda("hgt_h4");
    assert_eq!(count(&hgt, " map") + count(&hgt, "gemm input") + count(&hgt, "gemm epilogue"), 0, "{hgt:?}");
    assert_eq!(scratch, [0, 0], "nothing goes through scratch");
    let hgt_wgsl = wgsl("hgt_h4");
    assert!(count(&hgt_wgsl, " map") >= 3 && count(&hgt_wgsl, "gemm epilogue") > 0 && count(&hgt_wgsl, "gemm input") > 0, "{hgt_wgsl:?}");

    let (rgcn, _) = cuda("rgcn_mean");
    assert_eq!(count(&rgcn, "gemm epilogue"), 0, "{rgcn:?}");
    let (norm, scratch) = cuda("dgl_basis_layernorm");
    assert_eq!(count(&norm, "gemm epilogue"), 1, "{norm:?}");
    assert!(scratch[1] > 0);
    // FloydNet: the relu before the FFN's second GEMM fuses; the layer norms before the others
    // need whole rows: a pass computes each row's statistics, the GEMM normalises as it loads,
    // and only the statistics (two floats a row) go through scratch.
    let (floyd, scratch) = cuda("floyd_pre_ln");
    let norm_stats = count(&floyd, "gemm input norm stats");
    assert!(norm_stats > 0 && count(&floyd, "gemm input") == norm_stats, "{floyd:?}");
    assert!(count(&floyd, "gemm input") < count(&wgsl("floyd_pre_ln"), "gemm input"), "{floyd:?}");
    let (m, g) = load_case("floyd_pre_ln");
    let wgsl_scratch = rgnn::runtime::emit_wgsl(&m, &g, CompileOptions::default()).unwrap().scratch_elems;
    assert!(scratch[0] > 0 && scratch[0] < wgsl_scratch[0], "scratch {scratch:?}, WGSL's {wgsl_scratch:?}");
}
