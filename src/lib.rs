//! # rgnn — inference for relational graph neural networks
//!
//! Run RGCN, RGAT, HGT, DGL RelGraphConv and FloydNet models trained in PyTorch Geometric, DGL or
//! the official FloydNet code, from their safetensors weights.
//!
//! ```no_run
//! use rgnn::{BackendKind, Graph, Model, Session};
//! let model = Model::load("model.model.safetensors")?;
//! let graph = Graph::load("graph.graph.safetensors")?;
//! let mut session = Session::new(&model, &graph, BackendKind::Auto)?;
//! let outputs = session.run()?;
//! let out = outputs.get("out").expect("homogeneous models write `out`");
//! println!("{} x {}", out.shape[0], out.shape[1]);
//! # Ok::<(), rgnn::RuntimeError>(())
//! ```
//!
//! The pieces, by crate: [`ir`] (what a model computes), [`models`] (configs and builders),
//! [`codegen`] (the compiler), [`kernels`] (kernel templates), [`runtime`] (files, graphs,
//! backends, sessions, the reference interpreter).

pub mod demo;

pub use rgnn_codegen as codegen;
pub use rgnn_ir as ir;
pub use rgnn_kernels as kernels;
pub use rgnn_models as models;
pub use rgnn_runtime as runtime;

pub use rgnn_runtime::{BackendKind, Graph, Model, Outputs, RuntimeError, Session, Tensor};

// The README's code blocks are doctests: its Rust example must keep compiling.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
