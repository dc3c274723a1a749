//! # rgnn-kernels — the kernel templates
//!
//! Three templates generate every kernel rgnn runs: a grouped **GEMM** (rows gathered through an
//! index list, weights selected per relation or node type, fused epilogue), a **traversal** over
//! the graph in CSR-by-destination order (gathers, scores, online softmax and aggregation in one
//! pass, no atomics) and **pivot attention** (FloydNet all-pairs attention with an online softmax
//! over pivot tiles). For each template this crate owns the spec type, the CPU implementation
//! and the WGSL and CUDA C source generators. Nothing here knows about RGAT or HGT: templates
//! are instantiated by `rgnn-codegen` from the level-2 program.
//!
//! Status: the templates arrive with the compiler; until then the CPU backend evaluates the
//! level-1 program with the reference interpreter in `rgnn-runtime`.
