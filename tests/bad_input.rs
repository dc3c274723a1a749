//! Bad input must give a clear error naming what and where — never a panic, never a silently
//! wrong answer. Each test writes a small file with one defect and checks the message.

use rgnn::{BackendKind, Graph, Model, Session};
use safetensors::Dtype;
use std::collections::HashMap;
use std::path::PathBuf;

/// A raw tensor for writing: dtype, shape, little-endian bytes.
#[derive(Clone)]
struct Raw(Dtype, Vec<usize>, Vec<u8>);

fn f32s(shape: &[usize], v: &[f32]) -> Raw {
    Raw(Dtype::F32, shape.to_vec(), v.iter().flat_map(|x| x.to_le_bytes()).collect())
}
fn i64s(shape: &[usize], v: &[i64]) -> Raw {
    Raw(Dtype::I64, shape.to_vec(), v.iter().flat_map(|x| x.to_le_bytes()).collect())
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rgnn-bad-input-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn write(name: &str, tensors: Vec<(&str, Raw)>, config: Option<&str>) -> PathBuf {
    let path = tmp(name);
    let views: Vec<(String, safetensors::tensor::TensorView)> =
        tensors.iter().map(|(n, Raw(d, s, b))| (n.to_string(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap())).collect();
    let meta = config.map(|c| HashMap::from([("rgnn.config".to_string(), c.to_string())]));
    safetensors::serialize_to_file(views, meta, &path).unwrap();
    path
}

const RGCN: &str = r#"{"format": "rgnn/1", "model": "tiny", "layers": [
  {"type": "RGCNConv", "prefix": "conv", "in_channels": 2, "out_channels": 3, "num_relations": 2, "activation": null}]}"#;

fn rgcn_weights() -> Vec<(&'static str, Raw)> {
    vec![("conv.weight", f32s(&[2, 2, 3], &[0.1; 12])), ("conv.root", f32s(&[2, 3], &[0.2; 6])), ("conv.bias", f32s(&[3], &[0.3; 3]))]
}

fn good_graph() -> Vec<(&'static str, Raw)> {
    vec![("x", f32s(&[4, 2], &[1.0; 8])), ("edge_index", i64s(&[2, 3], &[0, 1, 2, 1, 2, 3])), ("edge_type", i64s(&[3], &[0, 1, 0]))]
}

fn replace(mut t: Vec<(&'static str, Raw)>, name: &'static str, raw: Raw) -> Vec<(&'static str, Raw)> {
    t.retain(|(n, _)| *n != name);
    t.push((name, raw));
    t
}

/// Run model + graph on the CPU and return the error message (panics if it succeeds).
fn error_of(model: Vec<(&'static str, Raw)>, config: &str, graph: Vec<(&'static str, Raw)>, tag: &str) -> String {
    let m = write(&format!("{tag}.model.safetensors"), model, Some(config));
    let g = write(&format!("{tag}.graph.safetensors"), graph, None);
    let result = Model::load(&m).and_then(|m| Graph::load(&g).and_then(|g| Session::new(&m, &g, BackendKind::Cpu)?.run()));
    match result {
        Ok(_) => panic!("{tag}: expected an error"),
        Err(e) => e.to_string(),
    }
}

fn assert_has(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "message {msg:?} should mention {p:?}");
    }
}

#[test]
fn the_good_case_runs() {
    let m = write("good.model.safetensors", rgcn_weights(), Some(RGCN));
    let g = write("good.graph.safetensors", good_graph(), None);
    let out = Session::new(&Model::load(m).unwrap(), &Graph::load(g).unwrap(), BackendKind::Cpu).unwrap().run().unwrap();
    assert_eq!(out.get("out").unwrap().shape, vec![4, 3]);
}

#[test]
fn corrupt_and_truncated_files() {
    let m = write("trunc.model.safetensors", rgcn_weights(), Some(RGCN));
    let bytes = std::fs::read(&m).unwrap();
    std::fs::write(&m, &bytes[..bytes.len() - 7]).unwrap();
    assert_has(&Model::load(&m).unwrap_err().to_string(), &["trunc.model.safetensors", "not a valid safetensors file"]);

    let junk = tmp("junk.model.safetensors");
    std::fs::write(&junk, b"\xff\xff\xff\xff\xff\xff\xff\x7fjunk").unwrap();
    assert_has(&Model::load(&junk).unwrap_err().to_string(), &["junk.model.safetensors", "not a valid safetensors file"]);

    let missing = tmp("does-not-exist.safetensors");
    assert_has(&Graph::load(&missing).unwrap_err().to_string(), &["cannot read", "does-not-exist"]);

    let no_config = write("noconfig.model.safetensors", rgcn_weights(), None);
    assert_has(&Model::load(&no_config).unwrap_err().to_string(), &["rgnn.config"]);
}

#[test]
fn out_of_range_and_negative_indices() {
    let e = error_of(rgcn_weights(), RGCN, replace(good_graph(), "edge_index", i64s(&[2, 3], &[0, 1, 9, 1, 2, 3])), "oor");
    assert_has(&e, &["`edge_index`[0, 2] = 9", "out of range [0, 4)"]);
    let e = error_of(rgcn_weights(), RGCN, replace(good_graph(), "edge_index", i64s(&[2, 3], &[0, 1, 2, 1, -2, 3])), "neg");
    assert_has(&e, &["`edge_index`[1, 1] = -2"]);
    let e = error_of(rgcn_weights(), RGCN, replace(good_graph(), "edge_type", i64s(&[3], &[0, -1, 0])), "negtype");
    assert_has(&e, &["`edge_type`[1] = -1"]);
}

#[test]
fn length_and_shape_mismatches() {
    let e = error_of(rgcn_weights(), RGCN, replace(good_graph(), "edge_type", i64s(&[2], &[0, 1])), "len");
    assert_has(&e, &["`edge_type` must have shape [3]"]);
    let e = error_of(rgcn_weights(), RGCN, replace(good_graph(), "edge_index", i64s(&[3, 2], &[0, 1, 2, 1, 2, 3])), "ei");
    assert_has(&e, &["`edge_index` must have shape [2, E]"]);
    let e = error_of(rgcn_weights(), RGCN, replace(good_graph(), "x", f32s(&[4, 5], &[1.0; 20])), "width");
    assert_has(&e, &["layer 0 (RGCNConv \"conv\")", "width 5", "expects 2"]);
}

#[test]
fn relation_beyond_the_model() {
    let e = error_of(rgcn_weights(), RGCN, replace(good_graph(), "edge_type", i64s(&[3], &[0, 1, 5])), "rel");
    assert_has(&e, &["edge 2 has relation 5", "`conv.weight` has 2 relations", "must lie in [0, 2)"]);
    // No relation ids at all: every edge would silently be relation 0.
    let no_types = good_graph().into_iter().filter(|(n, _)| *n != "edge_type").collect();
    let e = error_of(rgcn_weights(), RGCN, no_types, "notype");
    assert_has(&e, &["the graph has no `edge_type`", "`conv.weight` has 2 relations"]);
}

#[test]
fn config_sizes_beyond_32_bit_indexing() {
    let huge = RGCN.replace(r#""out_channels": 3"#, r#""out_channels": 4611686018427387904"#);
    let e = error_of(rgcn_weights(), &huge, good_graph(), "huge");
    assert_has(&e, &["`out_channels` = 4611686018427387904 is larger than rgnn supports"]);
}

#[test]
fn non_finite_features_and_weights() {
    let mut x = [1.0f32; 8];
    x[5] = f32::NAN;
    let e = error_of(rgcn_weights(), RGCN, replace(good_graph(), "x", f32s(&[4, 2], &x)), "nan");
    assert_has(&e, &["non-finite value NaN at `x`[2, 1]"]);
    let e = error_of(
        replace(rgcn_weights(), "conv.root", f32s(&[2, 3], &[0.2, f32::INFINITY, 0.2, 0.2, 0.2, 0.2])),
        RGCN,
        good_graph(),
        "infw",
    );
    assert_has(&e, &["`conv.root`", "non-finite"]);
}

/// Finite inputs and weights whose sums overflow: the error names the output element and the
/// cause, and with f16 storage (on wgpu, where it runs here) points at its range.
#[test]
fn overflow_in_the_computation_is_named() {
    let huge = replace(rgcn_weights(), "conv.root", f32s(&[2, 3], &[3e38; 6]));
    let e = error_of(huge, RGCN, good_graph(), "overflow");
    assert_has(&e, &["output", "non-finite value inf at row 0, column 0", "overflow in the computation"]);
    assert!(!e.contains("65504"), "an f32 overflow needs no f16 hint: {e}");

    let Ok(ctx) = rgnn::runtime::wgpu_backend::context() else { return };
    if !ctx.has_f16() {
        return;
    }
    // 10 · 1e4 · 2 = 2e5 > 65504: finite in f32, infinite once stored as f16.
    let m = write("f16.model.safetensors", replace(rgcn_weights(), "conv.root", f32s(&[2, 3], &[1e4; 6])), Some(RGCN));
    let g = write("f16.graph.safetensors", replace(good_graph(), "x", f32s(&[4, 2], &[10.0; 8])), None);
    let (m, g) = (Model::load(m).unwrap(), Graph::load(g).unwrap());
    let f32_out = Session::new(&m, &g, BackendKind::Wgpu).and_then(|mut s| s.run());
    assert!(f32_out.is_ok(), "2e5 is finite in f32: {:?}", f32_out.err());
    let options = rgnn::codegen::CompileOptions { storage: rgnn::ir::level2::DType::F16, ..Default::default() };
    let e = match Session::with_options(&m, &g, BackendKind::Wgpu, options).and_then(|mut s| s.run()) {
        Ok(_) => panic!("2e5 overflows f16 storage"),
        Err(e) => e.to_string(),
    };
    assert_has(&e, &["non-finite value inf", "overflow in the computation", "f16 storage holds magnitudes up to 65504"]);
}

#[test]
fn wrong_dtypes() {
    let g = replace(good_graph(), "edge_index", f32s(&[2, 3], &[0.0, 1.0, 2.0, 1.0, 2.0, 3.0]));
    assert_has(&error_of(rgcn_weights(), RGCN, g, "fidx"), &["`edge_index`", "dtype F32", "expected an integer dtype (I64, I32"]);
    let g = replace(good_graph(), "x", i64s(&[4, 2], &[1; 8]));
    assert_has(&error_of(rgcn_weights(), RGCN, g, "ix"), &["`x`", "dtype I64"]);
}

#[test]
fn missing_extra_and_misshaped_weights() {
    let mut w = rgcn_weights();
    w.retain(|(n, _)| *n != "conv.root");
    assert_has(&error_of(w, RGCN, good_graph(), "miss"), &["layer 0 (RGCNConv \"conv\")", "missing weight `conv.root`", "[2, 3]"]);
    let w = replace(rgcn_weights(), "conv.weight", f32s(&[2, 3, 3], &[0.1; 18]));
    assert_has(&error_of(w, RGCN, good_graph(), "shape"), &["`conv.weight` has shape [2, 3, 3], expected [2, 2, 3]"]);
    let mut w = rgcn_weights();
    w.push(("conv.extra", f32s(&[1], &[0.0])));
    assert_has(&error_of(w, RGCN, good_graph(), "extra"), &["unexpected weight", "conv.extra"]);
}

#[test]
fn bad_configs() {
    let cfg = RGCN.replace("RGCNConv", "GraphSAGE");
    assert_has(&error_of(rgcn_weights(), &cfg, good_graph(), "type"), &["unknown layer type \"GraphSAGE\""]);
    let cfg = RGCN.replace("\"activation\": null", "\"aggr\": \"median\"");
    assert_has(&error_of(rgcn_weights(), &cfg, good_graph(), "aggr"), &["`aggr` \"median\" is not supported"]);
    let cfg = RGCN.replace("\"in_channels\": 2,", "");
    assert_has(&error_of(rgcn_weights(), &cfg, good_graph(), "req"), &["missing required key `in_channels`"]);
    assert_has(&error_of(rgcn_weights(), "{not json", good_graph(), "json"), &["not valid JSON"]);
}

#[test]
fn featureless_node_count_must_match_in_channels() {
    let g = vec![("num_nodes", i64s(&[], &[5])), ("edge_index", i64s(&[2, 2], &[0, 4, 1, 1])), ("edge_type", i64s(&[2], &[0, 1]))];
    // in_channels = 2 but the graph has 5 nodes (and the other way round).
    assert_has(&error_of(rgcn_weights(), RGCN, g, "featureless"), &["featureless with 5 nodes", "must be 5, but it is 2"]);
    let g = vec![("num_nodes", i64s(&[], &[1])), ("edge_index", i64s(&[2, 1], &[0, 0])), ("edge_type", i64s(&[1], &[0]))];
    assert_has(&error_of(rgcn_weights(), RGCN, g, "featureless_small"), &["featureless with 1 nodes", "must be 1, but it is 2"]);
    let g = vec![("edge_index", i64s(&[2, 1], &[0, 1])), ("edge_type", i64s(&[1], &[0]))];
    assert_has(&error_of(rgcn_weights(), RGCN, g, "nonodes"), &["needs `num_nodes`"]);
}

#[test]
fn cli_errors_do_not_repeat_themselves() {
    let m = write("rep.model.safetensors", vec![("conv.weight", f32s(&[2, 2, 3], &[0.1; 12]))], Some(RGCN));
    let g = write("rep.graph.safetensors", good_graph(), None);
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_rgnn"))
        .args(["run", "--model", m.to_str().unwrap(), "--graph", g.to_str().unwrap(), "--out", tmp("rep.out").to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert_eq!(err.matches("missing weight").count(), 1, "{err}");
}

#[test]
fn unavailable_backend_is_an_error() {
    let m = Model::load(write("b.model.safetensors", rgcn_weights(), Some(RGCN))).unwrap();
    let g = Graph::load(write("b.graph.safetensors", good_graph(), None)).unwrap();
    // CUDA is unavailable exactly when the driver or a device is missing, and then says which.
    match rgnn::runtime::cuda_backend::context() {
        Ok(_) => assert!(Session::new(&m, &g, BackendKind::Cuda).is_ok()),
        Err(_) => {
            let e = Session::new(&m, &g, BackendKind::Cuda).err().expect("unavailable").to_string();
            assert_has(&e, &["backend `cuda` is not available"]);
        }
    }
    // wgpu is unavailable exactly when there is no adapter, and then says why.
    match rgnn::runtime::wgpu_backend::context() {
        Ok(_) => assert!(Session::new(&m, &g, BackendKind::Wgpu).is_ok()),
        Err(_) => {
            let e = Session::new(&m, &g, BackendKind::Wgpu).err().expect("unavailable").to_string();
            assert_has(&e, &["backend `wgpu` is not available", "mesa-vulkan-drivers"]);
        }
    }
}

#[test]
fn pair_graph_checks() {
    let cfg = r#"{"format": "rgnn/1", "model": "f", "layers": [{"type": "PivotalAttentionBlock", "prefix": "b", "embed_dim": 4, "num_heads": 2, "norm_fn": "none", "enable_ffn": false, "enable_symmetric_mix": false}]}"#;
    let w = vec![("b.c_qkv.weight", f32s(&[20, 4], &[0.1; 80])), ("b.c_proj.weight", f32s(&[4, 4], &[0.1; 16]))];
    let pair = f32s(&[1, 3, 3, 4], &[0.5; 36]);
    let bad_mask = Raw(Dtype::U8, vec![1, 3], vec![1, 2, 0]);
    assert_has(&error_of(w.clone(), cfg, vec![("pair", pair), ("node_mask", bad_mask)], "mask"), &["`node_mask` must hold 0 or 1"]);
    // A header-only file declaring 2^32 pairs (B = 0 holds no data, but N × N scores would be).
    let huge = f32s(&[0, 65536, 65536, 4], &[]);
    assert_has(&error_of(w, cfg, vec![("pair", huge)], "hugepair"), &["more than 2^32 - 1 (B × N × N) pairs"]);
}

#[test]
fn heterogeneous_graph_edge_types_must_be_in_metadata() {
    let cfg = r#"{"format": "rgnn/1", "model": "h", "metadata": {"node_types": ["a", "b"], "edge_types": [["a", "to", "b"]]},
      "layers": [{"type": "HGTConv", "prefix": "c", "in_channels": 2, "out_channels": 2, "heads": 1}]}"#;
    let g = vec![("x.a", f32s(&[2, 2], &[1.0; 4])), ("x.b", f32s(&[2, 2], &[1.0; 4])), ("edge_index.b__back__a", i64s(&[2, 1], &[0, 1]))];
    assert_has(&error_of(vec![], cfg, g, "hetero"), &["edge type \"b__back__a\" is not in the model's metadata.edge_types"]);
}
