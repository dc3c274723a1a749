//! # rgnn-codegen — from what a model computes to how it runs
//!
//! The compiler takes a level-1 program (`rgnn-ir`) and the graph it will run on, and produces a
//! level-2 program: passes on level 1 (linear reordering, compact materialisation chosen per
//! relation, fusion into template instances), lowering to kernel instances of the templates in
//! `rgnn-kernels`, memory planning (lifetimes to arena offsets) and the stable kernel cache keys
//! the GPU backends use.
//!
//! Status: the passes arrive with the compiler work; today every backend runs the level-1
//! program through the reference interpreter.
