//! # rgnn-ir — what a model computes
//!
//! Level 1 describes a relational GNN as a straight-line program of operators over values that
//! live on a *domain* (one row per node, edge, unique (source, relation) pair, unique
//! (destination, relation) pair, node pair, or graph) with a per-row shape `[heads, dim]`.
//! Nothing here knows about threads, GPUs or memory layout: the compiler (`rgnn-codegen`) turns a
//! level-1 [`Program`] into a level-2 kernel program for the graph at hand, and the level-1
//! interpreter in `rgnn-runtime` evaluates it directly as the project's oracle.
//!
//! Programs are built with [`ProgramBuilder`], which validates every operator's domains and shapes
//! as it is added, so a malformed program cannot be constructed. Weights are [`ParamExpr`]s:
//! checkpoint tensors plus the shape algebra the models need (basis composition, reshapes,
//! permutations, stacking), so every parameter stays traceable to a checkpoint key.

mod builder;
mod error;
pub mod level2;
mod op;
mod param;
mod printer;
mod types;

pub use builder::ProgramBuilder;
pub use error::IrError;
pub use op::{Activation, BinaryFn, NormKind, Op, Reduce, RowIndex, SoftmaxGroup, WeightSelect};
pub use param::{ParamDef, ParamExpr, ParamId};
pub use types::{Domain, Endpoint, NodeTypeId, Shape, ValueId, ValueInfo};

/// A validated level-1 program: values, the operators that define them (one per value, in
/// evaluation order), parameters and named outputs.
#[derive(Clone, Debug, Default)]
pub struct Program {
    pub(crate) values: Vec<ValueInfo>,
    pub(crate) ops: Vec<Op>,
    pub(crate) params: Vec<ParamDef>,
    pub(crate) outputs: Vec<(String, ValueId)>,
    pub(crate) node_types: Vec<String>,
}

impl Program {
    /// Every value, indexed by [`ValueId`].
    pub fn values(&self) -> &[ValueInfo] {
        &self.values
    }
    /// The operator defining each value (same index as [`Program::values`]).
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }
    pub fn value(&self, id: ValueId) -> &ValueInfo {
        &self.values[id.0]
    }
    pub fn op(&self, id: ValueId) -> &Op {
        &self.ops[id.0]
    }
    /// Parameters, indexed by [`ParamId`].
    pub fn params(&self) -> &[ParamDef] {
        &self.params
    }
    pub fn param(&self, id: ParamId) -> &ParamDef {
        &self.params[id.0]
    }
    /// Named outputs (`out`, or `out.<node_type>` for heterogeneous models).
    pub fn outputs(&self) -> &[(String, ValueId)] {
        &self.outputs
    }
    /// Node type names, indexed by [`NodeTypeId`] (empty for homogeneous programs).
    pub fn node_types(&self) -> &[String] {
        &self.node_types
    }
    /// The readable text form (also `Display`).
    pub fn to_text(&self) -> String {
        printer::print(self)
    }
}

impl std::fmt::Display for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_text())
    }
}
