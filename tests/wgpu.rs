//! The wgpu backend against the CPU backend (and the reference frameworks' outputs): every
//! fixture in f32 (rel ≤ 1e-5) and with f16 storage (rel ≤ 5e-3), the two-pass softmax schedule,
//! and random graphs with empty relations, isolated nodes and a hub with thousands of in-edges.
//!
//! Needs a Vulkan, Metal or DX12 adapter (Mesa's lavapipe is enough). Without one these tests
//! print why and pass, unless `RGNN_REQUIRE_WGPU=1` (as in CI), which makes that a failure.

mod common;
use common::*;
use rgnn::codegen::{CompileOptions, LowerOptions};
use rgnn::ir::level2::DType;
use rgnn::{BackendKind, Graph, Model, Session};
use std::io::Write;

/// CI runs this one with `--nocapture` so its log names the adapter the tests ran on.
#[test]
fn reports_the_adapter() {
    if adapter() {
        let ctx = rgnn::runtime::wgpu_backend::context().unwrap();
        println!("wgpu adapter for these tests: {} (f16 storage: {})", ctx.describe(), ctx.has_f16());
    }
}

/// Is there an adapter? Prints which one.
fn adapter() -> bool {
    match rgnn::runtime::wgpu_backend::context() {
        Ok(ctx) => {
            println!("wgpu adapter: {}", ctx.describe());
            true
        }
        Err(e) => {
            common::skip_unless_required("RGNN_REQUIRE_WGPU", &format!("the wgpu tests need a Vulkan, Metal or DX12 adapter: {e}"));
            false
        }
    }
}

fn outputs(model: &Model, graph: &Graph, backend: BackendKind, options: CompileOptions) -> Result<Vec<(String, rgnn::Tensor)>, String> {
    let mut s = Session::with_options(model, graph, backend, options).map_err(|e| e.to_string())?;
    Ok(s.run().map_err(|e| e.to_string())?.tensors)
}

/// Worst relative error of the wgpu outputs against the CPU backend's (same names and shapes).
fn compare(model: &Model, graph: &Graph, options: CompileOptions) -> Result<f64, String> {
    let cpu = outputs(model, graph, BackendKind::Cpu, CompileOptions { storage: DType::F32, ..options })?;
    let gpu = outputs(model, graph, BackendKind::Wgpu, options)?;
    worst_rel_err("wgpu", &cpu, &gpu)
}

fn check_all(cases: &[String], options: CompileOptions, tolerance: f64) {
    let mut failures = vec![];
    for case in cases {
        let (model, graph) = load_case(case);
        match compare(&model, &graph, options) {
            Ok(err) if err <= tolerance => println!("ok    {case:40} rel err vs cpu {err:.2e}"),
            Ok(err) => failures.push(format!("{case}: rel err {err:.2e} > {tolerance:e}")),
            Err(e) => failures.push(format!("{case}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn every_fixture_matches_cpu_and_reference_in_f32() {
    if !adapter() {
        return;
    }
    let cases = fixture_cases();
    assert!(cases.len() >= 40);
    check_all(&cases, CompileOptions::default(), 1e-5);
    // And the framework's own outputs, directly.
    let mut failures = vec![];
    for case in &cases {
        let (model, graph) = load_case(case);
        let got = outputs(&model, &graph, BackendKind::Wgpu, CompileOptions::default()).unwrap();
        failures.extend(reference_mismatch(case, &got, 1e-5));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn attention_fixtures_match_with_the_two_pass_softmax() {
    if !adapter() {
        return;
    }
    let cases: Vec<String> = fixture_cases().into_iter().filter(|c| c.starts_with("rgat") || c.starts_with("hgt")).collect();
    check_all(&cases, CompileOptions { lower: LowerOptions { online_softmax: false }, ..Default::default() }, 1e-5);
}

#[test]
fn every_fixture_matches_cpu_with_f16_storage() {
    if !adapter() {
        return;
    }
    let ctx = rgnn::runtime::wgpu_backend::context().unwrap();
    let cases = fixture_cases();
    let options = CompileOptions { storage: DType::F16, ..Default::default() };
    if !ctx.has_f16() {
        let (model, graph) = load_case(&cases[0]);
        let e = outputs(&model, &graph, BackendKind::Wgpu, options).unwrap_err();
        assert!(e.contains("SHADER_F16"), "{e}");
        let _ = writeln!(std::io::stderr(), "SKIPPED: f16 storage: {} has no SHADER_F16", ctx.describe());
        return;
    }
    // An odd number of f16 values (x [51, 3]: 306 bytes) still uploads: in whole 4-byte words.
    let config = r#"{"format": "rgnn/1", "model": "odd", "layers": [{"type": "RGCNConv", "prefix": "c",
        "in_channels": 3, "out_channels": 2, "num_relations": 2, "aggr": "mean"}]}"#;
    let weights = [("c.weight", vec![2, 3, 2]), ("c.root", vec![3, 2]), ("c.bias", vec![2])];
    let model = Model::from_bytes("odd", model_bytes(config, &weights, 5)).unwrap();
    let graph = Graph::from_bytes("odd graph", graph_bytes(51, 3, &random_edges(51, 200, 2, 1, 45, 0, 3), 6)).unwrap();
    match compare(&model, &graph, options) {
        Ok(err) => assert!(err <= 5e-3, "odd-sized f16 arrays: rel err {err:.2e}"),
        Err(e) => panic!("odd-sized f16 arrays: {e}"),
    }
    check_all(&cases, options, 5e-3);
}

#[test]
fn random_graphs_of_several_sizes_match_cpu() {
    if !adapter() {
        return;
    }
    // Models from the fixtures (their relation counts and widths), on new graphs.
    let models = ["rgcn_mean", "rgcn_max", "rgcn_blocks", "rgat_add_across_h3", "rgat_mul_within_h2_d2_mean", "dgl_bdd_right"];
    let mut failures = vec![];
    for (mi, name) in models.iter().enumerate() {
        let (model, fixture_graph) = load_case(name);
        let Graph::Relational(g) = &fixture_graph else { panic!("{name} has a relational graph") };
        let f = g.x.as_ref().map_or(0, |x| x.shape[1]);
        let relations = g.rel.iter().copied().max().map_or(1, |m| m as usize + 1);
        for (si, &(n, e, hub)) in [(1usize, 0usize, 0usize), (50, 200, 0), (700, 3000, 2500), (3000, 12000, 4000)].iter().enumerate() {
            let edges = random_edges(n, e, relations, relations / 2, n * 9 / 10, hub, (mi * 10 + si) as u64 + 1);
            let graph = Graph::from_bytes("random graph", graph_bytes(n, f, &edges, si as u64 + 7)).unwrap();
            if hub > 0 && *name != "rgcn_max" {
                // The hub's in-edges go to a workgroup of their own (rgcn_max reduces per
                // (destination, relation) segment first, which stays one invocation each).
                let generated = rgnn::runtime::emit_wgsl(&model, &graph, CompileOptions::default()).unwrap();
                assert!(generated.dispatches.iter().any(|d| d.label.contains("(hubs)")), "{name}: no hub dispatch");
            }
            match compare(&model, &graph, CompileOptions::default()) {
                Ok(err) if err <= 1e-5 => println!("ok    {name} on {n} nodes, {} edges: rel err {err:.2e}", edges.len()),
                Ok(err) => failures.push(format!("{name} on {n} nodes: rel err {err:.2e}")),
                Err(e) => failures.push(format!("{name} on {n} nodes: {e}")),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn arrays_beyond_the_binding_limit_are_bound_in_chunks() {
    if !adapter() {
        return;
    }
    use rgnn::runtime::wgpu_backend::WgpuBackend;
    // 16 KiB bindings: inputs, intermediates, parameters and index arrays split into chunks.
    let mut failures = vec![];
    for case in ["rgcn_kinships_features", "rgat_add_across_h3", "hgt_h4", "floyd_pre_ln", "dgl_basis_layernorm"] {
        let (model, graph) = load_case(case);
        let small = rgnn::kernels::wgsl::WgslOptions { max_binding_bytes: 16 << 10, ..Default::default() };
        let generated = rgnn::runtime::emit_wgsl_for(&model, &graph, CompileOptions::default(), &small).unwrap();
        assert!(generated.dispatches.iter().any(|d| d.bindings.iter().any(|b| b.chunk > 0)), "{case}: nothing was chunked");
        let cpu = outputs(&model, &graph, BackendKind::Cpu, CompileOptions::default()).unwrap();
        let backend = Box::new(WgpuBackend::new().unwrap().with_max_binding_bytes(16 << 10));
        let mut s = Session::with_backend(&model, &graph, backend, CompileOptions::default()).unwrap();
        let gpu = s.run().unwrap().tensors;
        for ((name, c), (_, g)) in cpu.iter().zip(&gpu) {
            let err = rel_err(&g.data, &c.data);
            println!("{case} `{name}` with 16 KiB bindings: rel err {err:.2e}");
            if err > 1e-5 {
                failures.push(format!("{case} `{name}`: {err:.2e}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// 64-wide rows and destinations with thousands of in-edges next to ones with a few: the rows
/// the thread-per-destination kernel keeps per thread are 64 floats and more, and lanes of one
/// SIMD group loop very different numbers of times (lavapipe once got this wrong; see
/// `rgnn_kernels::wgsl::unroll_column_loops`).
#[test]
fn wide_rows_next_to_hubs_match_cpu() {
    if !adapter() {
        return;
    }
    let r = 6;
    let rgcn = format!(
        r#"{{"format": "rgnn/1", "model": "wide_rgcn", "layers": [{{"type": "RGCNConv", "prefix": "c", "in_channels": 64, "out_channels": 64, "num_relations": {r}, "aggr": "mean"}}]}}"#
    );
    let rgcn_w = [("c.weight", vec![r, 64, 64]), ("c.root", vec![64, 64]), ("c.bias", vec![64])];
    let rgat = format!(
        r#"{{"format": "rgnn/1", "model": "wide_rgat", "layers": [{{"type": "RGATConv", "prefix": "c", "in_channels": 64, "out_channels": 32, "num_relations": {r}, "heads": 2, "dim": 1, "concat": true, "attention_mode": "additive-self-attention", "attention_mechanism": "across-relation"}}]}}"#
    );
    let rgat_w = [
        ("c.weight", vec![r, 64, 64]),
        ("c.q", vec![64, 2]),
        ("c.k", vec![64, 2]),
        ("c.bias", vec![64]),
        ("c.l1", vec![1, 32]),
        ("c.l2", vec![32, 32]),
        ("c.b1", vec![1, 32]),
        ("c.b2", vec![1, 32]),
        ("c.w", vec![32]),
    ];
    // Hubs at nodes 0, 9 and 700 (in-degrees in the thousands), everyone else a handful.
    let n = 2000;
    let mut edges = random_edges(n, 8000, r, r, n, 0, 5);
    for (i, &hub) in [0usize, 9, 700].iter().enumerate() {
        edges.extend(random_edges(n, 1500 + 700 * i, r, r, n, 0, 50 + i as u64).into_iter().map(|(s, _, rel)| (s, hub, rel)));
    }
    let graph = Graph::from_bytes("hub graph", graph_bytes(n, 64, &edges, 3)).unwrap();
    let mut failures = vec![];
    for (name, config, weights) in [("wide_rgcn", &rgcn, &rgcn_w[..]), ("wide_rgat", &rgat, &rgat_w[..])] {
        let model = Model::from_bytes(name, model_bytes(config, weights, 11)).unwrap();
        match compare(&model, &graph, CompileOptions::default()) {
            Ok(err) if err <= 1e-5 => println!("ok    {name}: rel err {err:.2e}"),
            Ok(err) => failures.push(format!("{name}: rel err {err:.2e}")),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
