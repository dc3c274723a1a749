//! Every level-1 pass preserves what each fixture model computes: the interpreter gives the same
//! numbers before and after, pass by pass and all together, and both match the framework's
//! reference output.

mod common;
use common::*;
use rgnn::codegen::{optimize, PassOptions};
use rgnn::ir::{Domain, Op, Program};
use rgnn::runtime::{compile_for_graph, interpreter};
use rgnn::{Model, Tensor};

fn outputs(program: &Program, model: &Model, graph: &rgnn::runtime::graph::ExecGraph) -> Vec<(String, Tensor)> {
    let params = interpreter::eval_params(program, &model.weights).unwrap();
    interpreter::run(program, &params, graph).unwrap()
}

fn variants() -> Vec<(&'static str, PassOptions)> {
    let none = PassOptions::none();
    vec![
        ("fold_linear_chains", PassOptions { fold_linear_chains: true, ..none }),
        ("push_linears_through_aggregations", PassOptions { push_linears_through_aggregations: true, ..none }),
        ("move_linears_before_gathers", PassOptions { move_linears_before_gathers: true, ..none }),
        ("all", PassOptions::default()),
    ]
}

#[test]
fn every_pass_preserves_every_fixture() {
    let mut failures = vec![];
    for case in fixture_cases() {
        let (model, graph) = load_case(&case);
        let (program, exec) = compile_for_graph(&model, &graph).unwrap();
        let before = outputs(&program, &model, &exec);
        let want = expected(&case);
        for (name, options) in variants() {
            let optimized = optimize(&program, options).unwrap();
            let after = outputs(&optimized, &model, &exec);
            for ((n, b), (_, a)) in before.iter().zip(&after) {
                let w = &want.iter().find(|(wn, _)| wn == n).unwrap().1;
                let (e_before, e_ref) = (rel_err(&a.data, &b.data), rel_err(&a.data, &w.data));
                if e_before > 1e-5 || e_ref > 1e-5 {
                    failures
                        .push(format!("{case} with {name}: `{n}` differs by {e_before:.2e} from before, {e_ref:.2e} from the reference"));
                }
            }
            if name == "all" {
                // Nothing is transformed per edge any more.
                let per_edge = optimized
                    .ops()
                    .iter()
                    .zip(optimized.values())
                    .filter(|(op, v)| matches!(op, Op::Linear { .. }) && v.domain == Domain::Edge)
                    .count();
                if per_edge > 0 {
                    failures.push(format!("{case}: {per_edge} linears still run per edge:\n{optimized}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
