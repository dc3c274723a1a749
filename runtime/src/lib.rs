//! # rgnn-runtime — running models
//!
//! Reads model and graph files ([`Model`], [`Graph`]; safetensors, every tensor validated),
//! resolves a graph against a model's metadata, builds the program and runs it on a backend
//! ([`Session`]). Holds the level-1 reference [`interpreter`], the project's oracle, and the
//! [`backend::Backend`] trait with its implementations.
//!
//! ```no_run
//! use rgnn_runtime::{BackendKind, Graph, Model, Session};
//! let model = Model::load("rgcn.model.safetensors")?;
//! let graph = Graph::load("graph.graph.safetensors")?;
//! let mut session = Session::new(&model, &graph, BackendKind::Cpu)?;
//! let out = session.run()?;
//! println!("{:?}", out.get("out").unwrap().shape);
//! # Ok::<(), rgnn_runtime::RuntimeError>(())
//! ```

mod arrays;
pub mod backend;
pub mod cuda_backend;
mod error;
pub mod graph;
pub mod interpreter;
pub mod io;
pub mod layout;
mod model;
mod session;
mod tensor;
pub mod wgpu_backend;

pub use backend::{backend_reports, BackendKind, BackendReport, KernelTime, KernelWork};
pub use error::{Result, RuntimeError};
pub use graph::Graph;
pub use model::Model;
pub use session::{
    compile_for_graph, emit_cuda, emit_wgsl, emit_wgsl_for, program_without_graph, run_cuda_host_emulation, Outputs, Session,
};
pub use tensor::Tensor;
