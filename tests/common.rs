//! Helpers shared by the integration tests.
#![allow(dead_code)]

use rgnn::runtime::io::TensorFile;
use safetensors::tensor::{serialize, Dtype, TensorView};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A test that cannot run here says why on stderr (past the harness's capture, so a plain
/// `cargo test` shows it) and passes, unless `$require_var=1` (as in CI, or on a GPU machine),
/// which makes it a failure.
pub fn skip_unless_required(require_var: &str, why: &str) {
    if std::env::var(require_var).is_ok_and(|v| v == "1") {
        panic!("{require_var}=1 but {why}");
    }
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
}

/// `tests/fixtures`, or `$RGNN_FIXTURES_DIR` (a test binary run from another checkout, e.g. one
/// built here and run on a GPU machine).
pub fn fixtures_dir() -> PathBuf {
    match std::env::var_os("RGNN_FIXTURES_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"),
    }
}

/// A fixture case's model and graph.
pub fn load_case(case: &str) -> (rgnn::Model, rgnn::Graph) {
    let dir = fixtures_dir();
    let model = rgnn::Model::load(dir.join(format!("{case}.model.safetensors"))).unwrap();
    let graph = rgnn::Graph::load(dir.join(format!("{case}.graph.safetensors"))).unwrap();
    (model, graph)
}

/// Case names from every `manifest*.json` in the fixtures folder.
pub fn fixture_cases() -> Vec<String> {
    let mut cases = vec![];
    let mut manifests: Vec<_> = std::fs::read_dir(fixtures_dir())
        .expect("tests/fixtures exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("manifest") && p.extension().is_some_and(|e| e == "json"))
        .collect();
    manifests.sort();
    for m in manifests {
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&m).unwrap()).unwrap();
        for case in v.as_array().expect("manifest is a list") {
            cases.push(case["name"].as_str().expect("case name").to_string());
        }
    }
    cases
}

/// Normwise relative error: max |a − b| / max |b| (max |b| floored at 1e-6).
pub fn rel_err(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f64, |m, &v| m.max(v.abs() as f64)).max(1e-6);
    let diff = got.iter().zip(want).fold(0f64, |m, (&a, &b)| m.max((a as f64 - b as f64).abs()));
    diff / scale
}

/// Every tensor of a safetensors file (as floats), by name.
pub fn read_tensors(path: &Path) -> Vec<(String, rgnn::Tensor)> {
    let f = TensorFile::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    f.names().into_iter().map(|n| (n.clone(), f.floats(&n).unwrap())).collect()
}

/// Expected outputs of a case, by tensor name.
pub fn expected(case: &str) -> Vec<(String, rgnn::Tensor)> {
    read_tensors(&fixtures_dir().join(format!("{case}.expected.safetensors")))
}

/// Worst relative error of `got` against the case's expected outputs (the reference
/// framework's), each found by name; a missing or extra output or a different shape is an error.
pub fn worst_reference_err(case: &str, got: &[(String, rgnn::Tensor)]) -> Result<f64, String> {
    let want = expected(case);
    let got_names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    let want_names: Vec<&str> = want.iter().map(|(n, _)| n.as_str()).collect();
    if got_names.len() != want_names.len() || !want_names.iter().all(|n| got_names.contains(n)) {
        return Err(format!("{case}: outputs {got_names:?}, expected {want_names:?}"));
    }
    let mut worst = 0f64;
    for (name, want) in want {
        let g = &got.iter().find(|(n, _)| *n == name).expect("every expected output is present (checked above)").1;
        if g.shape != want.shape {
            return Err(format!("{case} `{name}`: shape {:?}, reference {:?}", g.shape, want.shape));
        }
        worst = worst.max(rel_err(&g.data, &want.data));
    }
    Ok(worst)
}

/// Why `got` misses the case's reference outputs at `tolerance` (see [`worst_reference_err`]),
/// if it does.
pub fn reference_mismatch(case: &str, got: &[(String, rgnn::Tensor)], tolerance: f64) -> Option<String> {
    match worst_reference_err(case, got) {
        Ok(err) if err <= tolerance => None,
        Ok(err) => Some(format!("{case}: rel err vs reference {err:.2e} > {tolerance:e}")),
        Err(e) => Some(e),
    }
}

/// A small deterministic generator (64-bit LCG) for test graphs and weights.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next_bits(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    /// Uniform in [-1, 1).
    pub fn signed(&mut self) -> f64 {
        self.next_bits() as f64 / (1u64 << 31) as f64 * 2.0 - 1.0
    }
    /// Uniform in 0..m.
    pub fn below(&mut self, m: usize) -> usize {
        (self.next_bits() as usize) % m.max(1)
    }
}

/// A relational graph file: `n` nodes with `f` features, edges `(src, dst, rel)`.
pub fn graph_bytes(n: usize, f: usize, edges: &[(usize, usize, usize)], seed: u64) -> Vec<u8> {
    let mut rng = Lcg(seed);
    let x: Vec<f32> = (0..n * f).map(|_| rng.signed() as f32).collect();
    let mut index: Vec<i64> = edges.iter().map(|e| e.0 as i64).collect();
    index.extend(edges.iter().map(|e| e.1 as i64));
    let types: Vec<i64> = edges.iter().map(|e| e.2 as i64).collect();
    let xb: Vec<u8> = bytemuck::cast_slice(&x).to_vec();
    let ib: Vec<u8> = bytemuck::cast_slice(&index).to_vec();
    let tb: Vec<u8> = bytemuck::cast_slice(&types).to_vec();
    let tensors = HashMap::from([
        ("x".to_string(), TensorView::new(Dtype::F32, vec![n, f], &xb).unwrap()),
        ("edge_index".to_string(), TensorView::new(Dtype::I64, vec![2, edges.len()], &ib).unwrap()),
        ("edge_type".to_string(), TensorView::new(Dtype::I64, vec![edges.len()], &tb).unwrap()),
    ]);
    serialize(tensors, None).unwrap()
}

/// A pair graph file: `pair [b, n, n, c]` pseudo-random in ±1 and `node_mask [b, n]` with the last
/// `padded` nodes of every graph but the first marked as padding.
pub fn pair_graph_bytes(b: usize, n: usize, c: usize, padded: usize, seed: u64) -> Vec<u8> {
    let mut rng = Lcg(seed);
    let pair: Vec<f32> = (0..b * n * n * c).map(|_| rng.signed() as f32).collect();
    let mask: Vec<u8> = (0..b * n).map(|at| u8::from(at < n || at % n < n - padded)).collect();
    let pb: Vec<u8> = bytemuck::cast_slice(&pair).to_vec();
    let tensors = HashMap::from([
        ("pair".to_string(), TensorView::new(Dtype::F32, vec![b, n, n, c], &pb).unwrap()),
        ("node_mask".to_string(), TensorView::new(Dtype::U8, vec![b, n], &mask).unwrap()),
    ]);
    serialize(tensors, None).unwrap()
}

/// Random edges over `relations` relations, leaving relation `empty` unused, nodes at and above
/// `isolated_from` without edges, and node 0 a hub with `hub` extra in-edges.
pub fn random_edges(
    n: usize,
    e: usize,
    relations: usize,
    empty: usize,
    isolated_from: usize,
    hub: usize,
    seed: u64,
) -> Vec<(usize, usize, usize)> {
    let mut rng = Lcg(seed);
    let mut below = |m: usize| rng.below(m);
    let live = isolated_from.min(n).max(1);
    let rel = |below: &mut dyn FnMut(usize) -> usize| loop {
        let r = below(relations);
        if r != empty {
            return r;
        }
    };
    let mut edges = vec![];
    for _ in 0..e {
        let r = rel(&mut below);
        edges.push((below(live), below(live), r));
    }
    for _ in 0..hub {
        let r = rel(&mut below);
        edges.push((below(live), 0, r));
    }
    edges
}

/// A model file from a config and named weight shapes, weights pseudo-random in ±1/√fan_in.
pub fn model_bytes(config: &str, weights: &[(&str, Vec<usize>)], seed: u64) -> Vec<u8> {
    let scaled: Vec<(&str, Vec<usize>, f64)> = weights.iter().map(|(name, shape)| (*name, shape.clone(), 1.0)).collect();
    model_bytes_scaled(config, &scaled, seed)
}

/// As [`model_bytes`], each weight times its own factor.
pub fn model_bytes_scaled(config: &str, weights: &[(&str, Vec<usize>, f64)], seed: u64) -> Vec<u8> {
    let mut rng = Lcg(seed);
    let data: Vec<Vec<u8>> = weights
        .iter()
        .map(|(_, shape, factor)| {
            let fan_in = if shape.len() >= 2 { shape[shape.len() - 2] } else { shape.first().copied().unwrap_or(1) } as f64;
            let n: usize = shape.iter().product();
            let v: Vec<f32> = (0..n).map(|_| (factor * rng.signed() / fan_in.sqrt()) as f32).collect();
            bytemuck::cast_slice(&v).to_vec()
        })
        .collect();
    let tensors: HashMap<String, TensorView> = weights
        .iter()
        .zip(&data)
        .map(|((name, shape, _), d)| (name.to_string(), TensorView::new(Dtype::F32, shape.clone(), d).unwrap()))
        .collect();
    serialize(tensors, Some(HashMap::from([("rgnn.config".to_string(), config.to_string())]))).unwrap()
}

/// Layers at the benchmarks' widths, and at 512 channels (rows too wide for the usual warps per
/// block), written by the benchmarks' own generator into `dir`.
pub fn benchmark_layers(dir: &Path) -> Vec<(String, rgnn::Model, rgnn::Graph)> {
    use rgnn_benches::synth;
    let mut layers = vec![];
    for (channels, heads) in [(64, 1), (128, 8), (512, 8)] {
        let opts = synth::SynthOptions { features: channels, ..Default::default() };
        let g = synth::SynthGraph::generate(synth::shape("aifb").unwrap(), &opts);
        let (graph, hetero) =
            (dir.join(format!("aifb{channels}.graph.safetensors")), dir.join(format!("aifb{channels}.hetero.safetensors")));
        g.write_relational(&graph).unwrap();
        g.write_hetero(&hetero).unwrap();
        let models = [("rgcn", &graph), ("rgat", &graph), ("hgt", &hetero)];
        for (family, graph_file) in models {
            let file = dir.join(format!("aifb{channels}.{family}.safetensors"));
            match family {
                "rgcn" => synth::write_rgcn_model(&file, channels, channels, g.num_relations, 0).unwrap(),
                "rgat" => synth::write_rgat_model(&file, channels, channels, g.num_relations, 0).unwrap(),
                _ => synth::write_hgt_model(&file, &g, channels, channels, heads, 0).unwrap(),
            }
            let name = format!("{family} aifb {channels}x{heads}");
            layers.push((name, rgnn::Model::load(&file).unwrap(), rgnn::Graph::load(graph_file).unwrap()));
        }
    }
    let (model, graph) = (dir.join("floydnet.model.safetensors"), dir.join("floydnet.graph.safetensors"));
    synth::write_floydnet_model(&model, 128, 8, 1, 0).unwrap();
    synth::write_pair_graph(&graph, 1, 40, 128, 0).unwrap();
    layers.push(("floydnet C128 H8".into(), rgnn::Model::load(&model).unwrap(), rgnn::Graph::load(&graph).unwrap()));
    layers
}

/// Worst relative error of a GPU backend's outputs (`backend`: its name for messages) against
/// the CPU backend's; differing output names or shapes are an error.
pub fn worst_rel_err(backend: &str, cpu: &[(String, rgnn::Tensor)], gpu: &[(String, rgnn::Tensor)]) -> Result<f64, String> {
    if cpu.len() != gpu.len() {
        return Err(format!("{} outputs on {backend}, {} on cpu", gpu.len(), cpu.len()));
    }
    let mut worst = 0f64;
    for ((cn, c), (gn, g)) in cpu.iter().zip(gpu) {
        if cn != gn || c.shape != g.shape {
            return Err(format!("{backend} gave `{gn}` {:?}, cpu `{cn}` {:?}", g.shape, c.shape));
        }
        worst = worst.max(rel_err(&g.data, &c.data));
    }
    Ok(worst)
}
