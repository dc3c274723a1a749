//! Whole forward passes of committed fixture models on the CPU backend, as criterion benches.
//! `cargo bench -p rgnn-benches`. (Comparisons with PyG live in `docs/BENCHMARKS.md`.)

use criterion::{criterion_group, criterion_main, Criterion};
use rgnn_runtime::{BackendKind, Graph, Model, Session};
use std::path::Path;

fn forward(c: &mut Criterion) {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    for case in ["rgcn_kinships_features", "rgat_nations_within", "hgt_h4", "dgl_stack2", "floyd_pre_ln"] {
        let model = Model::load(fixtures.join(format!("{case}.model.safetensors"))).expect("fixture model");
        let graph = Graph::load(fixtures.join(format!("{case}.graph.safetensors"))).expect("fixture graph");
        let mut session = Session::new(&model, &graph, BackendKind::Cpu).expect("session");
        c.bench_function(&format!("cpu/{case}"), |b| b.iter(|| session.run().expect("forward pass")));
    }
}

criterion_group!(benches, forward);
criterion_main!(benches);
