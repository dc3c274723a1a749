//! # rgnn-benches — measuring rgnn against the reference frameworks
//!
//! Criterion benches of whole layers, a deterministic generator of synthetic graphs with the
//! statistics of Hector's datasets, and the scripts that run PyTorch Geometric and the official
//! FloydNet package on the same model and graph files. Results live in `docs/BENCHMARKS.md`.
//!
//! - [`synth`]: synthetic graphs with the node / edge / relation counts of Hector's datasets
//!   (Zipf relation frequencies, heavy-tailed in-degrees, duplicates, isolated nodes, INVENTED node
//!   types for the heterogeneous files) and random RGCN / RGAT / HGT / FloydNet model files; the
//!   `rgnn-synth` binary writes them.
//! - `benches/compare_pyg.py`, `benches/compare_floydnet.py`, `benches/run_all.sh`: the side-by-side
//!   comparisons (output equality and timings) that produce the tables in `docs/BENCHMARKS.md`.
//!
//! Speed is never asserted by tests.

pub mod synth;
