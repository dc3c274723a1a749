//! Level-1 → level-1 passes. Each is a named function that returns a program computing the same
//! outputs (up to floating-point reassociation), so each can be checked on its own against the
//! interpreter.

mod cse;
mod dce;
mod reorder;

pub use cse::merge_common_values;
pub use dce::eliminate_dead_values;
pub use reorder::{fold_linear_chains, move_linears_before_gathers, push_linears_through_aggregations};

use rgnn_ir::{IrError, Program};

/// Which passes [`optimize`] runs (all by default; switch one off to isolate it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PassOptions {
    pub fold_linear_chains: bool,
    pub push_linears_through_aggregations: bool,
    pub move_linears_before_gathers: bool,
}

impl Default for PassOptions {
    fn default() -> Self {
        PassOptions { fold_linear_chains: true, push_linears_through_aggregations: true, move_linears_before_gathers: true }
    }
}

impl PassOptions {
    pub fn none() -> Self {
        PassOptions { fold_linear_chains: false, push_linears_through_aggregations: false, move_linears_before_gathers: false }
    }
}

/// The level-1 pipeline. Order matters: folding first (so `W_r @ q` becomes one weight applied to
/// the gathered input), then linears pushed through sum/mean aggregations (so they meet their
/// gathers), then linears moved before gathers (once per node or per (node, relation)), then
/// values computed twice merged, and dead values removed after each step.
pub fn optimize(program: &Program, options: PassOptions) -> Result<Program, IrError> {
    let mut p = program.clone();
    if options.fold_linear_chains {
        p = eliminate_dead_values(&fold_linear_chains(&p)?)?;
    }
    if options.push_linears_through_aggregations {
        p = eliminate_dead_values(&push_linears_through_aggregations(&p)?)?;
    }
    if options.move_linears_before_gathers {
        p = eliminate_dead_values(&move_linears_before_gathers(&p)?)?;
    }
    eliminate_dead_values(&merge_common_values(&p)?)
}
