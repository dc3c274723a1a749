//! Every committed reference fixture (made by PyG 2.8, DGL 2.1 and the official FloydNet package
//! through `tools/make_fixtures.py` / `tools/make_dgl_fixtures.py`) must be reproduced by the
//! CPU backend to a normwise relative error of 1e-5.

mod common;
use common::*;
use rgnn::{BackendKind, Graph, Model, Session};

const TOLERANCE: f64 = 1e-5;

fn run_case(case: &str) -> Result<f64, String> {
    let dir = fixtures_dir();
    let model = Model::load(dir.join(format!("{case}.model.safetensors"))).map_err(|e| e.to_string())?;
    let graph = Graph::load(dir.join(format!("{case}.graph.safetensors"))).map_err(|e| e.to_string())?;
    let mut session = Session::new(&model, &graph, BackendKind::Cpu).map_err(|e| e.to_string())?;
    let outputs = session.run().map_err(|e| e.to_string())?;
    worst_reference_err(case, &outputs.tensors)
}

#[test]
fn every_fixture_matches_its_reference_framework() {
    let cases = fixture_cases();
    assert!(cases.len() >= 40, "expected the full fixture set, found {} cases", cases.len());
    let mut failures = vec![];
    for case in &cases {
        match run_case(case) {
            Ok(err) if err <= TOLERANCE => println!("ok    {case:40} rel err {err:.2e}"),
            Ok(err) => failures.push(format!("{case}: rel err {err:.2e} > {TOLERANCE:e}")),
            Err(e) => failures.push(format!("{case}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{} of {} fixtures failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}
