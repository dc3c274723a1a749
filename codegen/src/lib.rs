//! # rgnn-codegen — from what a model computes to how it runs
//!
//! The compiler takes a level-1 program (`rgnn-ir`) and the graph it will run on, and produces a
//! level-2 program: passes on level 1 (linear reordering, compact materialisation chosen per
//! relation, fusion into template instances), lowering to kernel instances of the templates in
//! `rgnn-kernels`, memory planning (lifetimes to arena offsets) and the stable kernel cache keys
//! the GPU backends use.
//!
//! Every pass is a named function from program to program; each preserves what the program
//! computes, which the test suite checks with the level-1 interpreter on every fixture, pass by
//! pass. Status: the level-1 passes ([`passes`]) are in place; lowering to level 2, fusion and
//! memory planning come next, and until then backends run the (optimised) level-1 program.

pub mod compaction;
pub mod lower;
pub mod memory;
pub mod passes;
mod rewrite;

pub use compaction::{choose_compaction, RelationCompaction};
pub use lower::{lower, lower_with, LowerOptions, Unsupported};

/// Everything the compiler can be told: which level-1 passes run, the lowering's schedule, and
/// the storage type of activations (`F32`; `F16` on GPU backends that support it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompileOptions {
    pub passes: PassOptions,
    pub lower: LowerOptions,
    pub storage: rgnn_ir::level2::DType,
}
pub use memory::{plan_memory, MemoryPlan};
pub use passes::{optimize, PassOptions};
