//! # rgnn-kernels — the kernel templates
//!
//! Three templates generate every kernel rgnn runs: a grouped **GEMM** (rows gathered through an
//! index map, weights selected per relation or node type, fused prologue and epilogue), a
//! **traversal** over the graph in CSR-by-destination order (gathers, logits, softmax and
//! aggregation in one kernel, no atomics) and **pivot attention** (FloydNet all-pairs
//! attention), plus row-local glue (**map**). The instances are the level-2 kernels of
//! `rgnn_ir::level2`; this crate executes them ([`cpu`]) or generates device code for them:
//! [`templates`] writes each template once over the spellings of [`source`], and [`wgsl`] and
//! [`cuda`] finish the kernels for their language ([`gpu`] holds what they share). Nothing here
//! knows about RGAT or HGT.

pub mod cpu;
pub mod cuda;
pub mod gpu;
pub mod source;
pub mod templates;
pub mod wgsl;
