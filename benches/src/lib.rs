//! # rgnn-benches — measuring rgnn against the reference frameworks
//!
//! Criterion benches of whole layers, a deterministic generator of synthetic graphs with the
//! statistics of Hector's datasets, and the scripts that run PyTorch Geometric and the official
//! FloydNet package on the same model and graph files. Results live in `docs/BENCHMARKS.md`.
//!
//! Status: the benches arrive with the compiler work; speed is never asserted by tests.
