//! # rgnn-codegen — from what a model computes to how it runs
//!
//! The compiler takes a level-1 program (`rgnn-ir`) and the graph it will run on, and produces a
//! level-2 program: passes on level 1 ([`passes`]: linear reordering, common values, dead
//! values), compact materialisation chosen per relation ([`compaction`]), lowering with fusion
//! into instances of the templates in `rgnn-kernels` ([`lower`]) and memory planning
//! ([`memory`]: lifetimes to arena offsets). The GPU backends key their kernel caches by a hash
//! of the generated source (`rgnn-kernels` writes it; `rgnn-runtime` caches it).
//!
//! Every pass is a named function from program to program; each preserves what the program
//! computes, which the test suite checks with the level-1 interpreter on every fixture, pass by
//! pass. A program the lowering does not cover runs on the level-1 interpreter (CPU backend).

pub mod compaction;
pub mod lower;
pub mod memory;
pub mod passes;
mod rewrite;

pub use compaction::{choose_compaction, RelationCompaction};
pub use lower::{lower, lower_with, LowerOptions, Unsupported};

/// Everything the compiler can be told: which level-1 passes run, the lowering's schedule, the
/// storage type of activations (`F32`; `F16` / `BF16` on GPU backends that support them), and
/// whether f32 GEMMs may use TF32 tensor cores (CUDA only; other backends ignore it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompileOptions {
    pub passes: PassOptions,
    pub lower: LowerOptions,
    pub storage: rgnn_ir::level2::DType,
    pub tf32: bool,
}
pub use memory::{plan_memory, MemoryPlan};
pub use passes::{optimize, PassOptions};
