//! The compiled CPU path (level-1 passes, lowering to GEMM / traversal / pivot-attention / map
//! kernels, CPU templates) against the level-1 interpreter on the unoptimised program, for every
//! fixture and with each level-1 pass on and off: every fixture model must be lowered (no
//! interpreter fallback) and agree to 1e-5, with a valid memory plan within 1.10 x its lower bound.

mod common;
use common::*;
use rgnn::codegen::{CompileOptions, LowerOptions, PassOptions};
use rgnn::runtime::{compile_for_graph, interpreter};
use rgnn::{BackendKind, Session};

/// Every level-1 pass off, each alone, and all on; and the two-pass softmax schedule.
fn pass_variants() -> Vec<(&'static str, CompileOptions)> {
    let none = PassOptions::none();
    let with = |passes| CompileOptions { passes, ..Default::default() };
    vec![
        ("no passes", with(none)),
        ("fold only", with(PassOptions { fold_linear_chains: true, ..none })),
        ("push only", with(PassOptions { push_linears_through_aggregations: true, ..none })),
        ("move only", with(PassOptions { move_linears_before_gathers: true, ..none })),
        ("all passes", with(PassOptions::default())),
        ("all passes, two-pass softmax", CompileOptions { lower: LowerOptions { online_softmax: false }, ..Default::default() }),
    ]
}

#[test]
fn every_fixture_is_compiled_and_matches_the_interpreter() {
    let mut failures = vec![];
    let mut templates = std::collections::BTreeMap::<&str, usize>::new();
    let mut worst_ratio = 0f64;
    for case in fixture_cases() {
        let (model, graph) = load_case(&case);
        let (program, exec) = compile_for_graph(&model, &graph).unwrap();
        let params = interpreter::eval_params(&program, &model.weights).unwrap();
        let oracle = interpreter::run(&program, &params, &exec).unwrap();
        for (pass_name, passes) in pass_variants() {
            let mut session = Session::with_options(&model, &graph, BackendKind::Cpu, passes).unwrap();
            let Some(plan) = session.plan().cloned() else {
                failures.push(format!("{case} ({pass_name}): not lowered to kernels"));
                continue;
            };
            for k in &plan.kernels {
                *templates.entry(k.template()).or_default() += 1;
                if let rgnn::ir::level2::Kernel::Traversal(t) = k {
                    if t.online_softmax {
                        *templates.entry("traversal with online softmax").or_default() += 1;
                    }
                }
            }
            let mem = session.memory_plan().expect("compiled sessions have a memory plan");
            if !mem.is_valid(session.plan().unwrap()) {
                failures.push(format!("{case} ({pass_name}): memory plan overlaps live buffers"));
            }
            if mem.planned_bytes as f64 > 1.10 * mem.lower_bound_bytes as f64 {
                failures.push(format!(
                    "{case} ({pass_name}): planned {} bytes > 1.10 x lower bound {}",
                    mem.planned_bytes, mem.lower_bound_bytes
                ));
            }
            worst_ratio = worst_ratio.max(mem.planned_bytes as f64 / mem.lower_bound_bytes.max(1) as f64);
            let got = session.run().unwrap();
            for (name, want) in &oracle {
                let g = got.get(name).unwrap();
                let e = rel_err(&g.data, &want.data);
                if e > 1e-5 {
                    failures.push(format!("{case} ({pass_name}): `{name}` differs from the interpreter by {e:.2e}"));
                }
            }
        }
    }
    println!("kernels instantiated across fixtures: {templates:?}; worst planned/lower-bound memory ratio {worst_ratio:.3}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    for t in ["gemm", "traversal", "pivot_attention", "traversal with online softmax"] {
        assert!(templates.contains_key(t), "no {t} kernel instantiated: {templates:?}");
    }
}
