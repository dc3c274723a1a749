//! Defining a new relational layer from rgnn's level-1 operators, without changing rgnn.
//!
//! The layer: a relation-gated convolution,
//!   out_i = x_i + Σ_{e: j→i} sigmoid(x_j · g_r) · (x_j @ W_r),  r = relation of e,
//! built with `ProgramBuilder`, checked by it, printed, and evaluated by the reference
//! interpreter on a small hand-made graph.
//!
//! Run with `cargo run --example custom_layer`.

use rgnn::ir::{Activation, Domain, Endpoint, ProgramBuilder, Reduce, Shape, WeightSelect};
use rgnn::runtime::graph::ExecGraph;
use rgnn::runtime::interpreter;
use rgnn::Tensor;
use std::collections::BTreeMap;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (relations, width) = (2, 3);

    // 1. What the layer computes, as level-1 operators. Weights are named like checkpoint keys.
    let mut b = ProgramBuilder::new();
    let x = b.input("x", Domain::Node(None), Shape::flat(width))?;
    let w = b.load_param("gated.weight", &[relations, 1, width, width])?; // [R, blocks, in, out]
    let g = b.load_param("gated.gate", &[relations, 1, width, 1])?; // one gate vector per relation
    let xj = b.gather(x, Endpoint::Src)?; // node → edge, by source
    let msg = b.linear(xj, w, WeightSelect::Relation, Shape::flat(width))?;
    let gate = b.linear(xj, g, WeightSelect::Relation, Shape::flat(1))?;
    let gate = b.unary(gate, Activation::Sigmoid)?;
    let gated = b.mul(msg, gate)?; // [1, width] × [1, 1] broadcasts
    let agg = b.aggregate(gated, Reduce::Sum, Domain::Node(None))?; // edge → node, by destination
    let out = b.add(agg, x)?;
    b.output("out", out)?;
    let program = b.finish();
    println!("{program}");

    // 2. A graph: 4 nodes, edges 0→1 (relation 0), 2→1 (relation 1), 3→3 (relation 0).
    let graph = ExecGraph {
        num_nodes: 4,
        type_offsets: vec![0, 4],
        src: vec![0, 2, 3],
        dst: vec![1, 1, 3],
        rel: vec![0, 1, 0],
        inputs: BTreeMap::from([("x".to_string(), Tensor::new(vec![4, width], (0..12).map(|v| v as f32 * 0.1).collect()))]),
        ..Default::default() // no pair graph; relation ids given
    };

    // 3. Weights, as a checkpoint would hold them, then run the reference interpreter.
    let weights = BTreeMap::from([
        ("gated.weight".to_string(), Tensor::new(vec![relations, 1, width, width], (0..18).map(|v| (v % 5) as f32 * 0.2 - 0.4).collect())),
        ("gated.gate".to_string(), Tensor::new(vec![relations, 1, width, 1], vec![1.0, -1.0, 0.5, 0.0, 2.0, -0.5])),
    ]);
    let params = interpreter::eval_params(&program, &weights)?;
    for (name, t) in interpreter::run(&program, &params, &graph)? {
        println!("{name} {:?}:", t.shape);
        for r in 0..t.shape[0] {
            println!("  node {r}: {:?}", t.row(r));
        }
    }
    Ok(())
}
