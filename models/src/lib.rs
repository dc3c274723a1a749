//! # rgnn-models — from a checkpoint to what it computes
//!
//! Parses the `rgnn.config` document of a model file ([`ModelConfig`]), checks the checkpoint's
//! weights against what each layer needs (names exactly as the source framework's `state_dict`),
//! and emits the level-1 program ([`build_program`]). One module per source layer:
//! PyG `RGCNConv`, `RGATConv`, `HGTConv`; DGL `RelGraphConv`; FloydNet `PivotalAttentionBlock`.
//! A new model goes here, as a builder over `rgnn_ir::ProgramBuilder`.

mod config;
mod error;
mod layers;
mod weights;

pub use config::*;
pub use error::ModelError;
pub use weights::WeightShapes;

use rgnn_ir::{Domain, NodeTypeId, Program, ProgramBuilder, Shape, ValueId};
use std::collections::BTreeMap;
use weights::{ir, Weights};

/// What the graph offers the first layer.
#[derive(Clone, Debug, PartialEq)]
pub enum InputSpec {
    /// One node set with features `x` of this width.
    Nodes { width: usize },
    /// One node set without features (`num_nodes` only): the first layer treats node ids as
    /// one-hot features (PyG's convention), so its `in_channels` must equal `num_nodes`.
    Featureless { num_nodes: usize },
    /// Per node type (in `metadata.node_types` order): feature width, `None` when the type has
    /// no features; and which `metadata.edge_types` the graph has edges of.
    TypedNodes { widths: Vec<Option<usize>>, edge_types_present: Vec<bool> },
    /// Pair state `pair [B, N, N, width]`.
    Pairs { width: usize },
}

/// The value flowing from one layer to the next.
#[derive(Clone, Debug)]
pub(crate) enum Flow {
    /// No features yet: the first layer treats nodes as one-hot (PyG's featureless convention).
    Featureless {
        num_nodes: usize,
    },
    Nodes(ValueId),
    Typed(BTreeMap<NodeTypeId, ValueId>),
    Pairs(ValueId),
}

/// A model ready to run: its config and level-1 program.
#[derive(Clone, Debug)]
pub struct BuiltModel {
    pub config: ModelConfig,
    pub program: Program,
}

/// Build the level-1 program of `config` for a graph offering `input`, validating every weight
/// against `weights` (full key → shape). Extra checkpoint tensors are an error.
pub fn build_program(config: &ModelConfig, weights: &WeightShapes, input: &InputSpec) -> Result<Program, ModelError> {
    let mut b = ProgramBuilder::new();
    let mut w = Weights::new(weights);
    let mut flow = match input {
        InputSpec::Featureless { num_nodes } => Flow::Featureless { num_nodes: *num_nodes },
        InputSpec::Nodes { width } => Flow::Nodes(b.input("x", Domain::Node(None), Shape::flat(*width)).map_err(cfg_ir)?),
        InputSpec::TypedNodes { widths, .. } => {
            let meta = config.metadata.as_ref().ok_or_else(|| {
                ModelError::Config("a heterogeneous graph needs `metadata` (node_types, edge_types) in the model config".into())
            })?;
            b.set_node_types(meta.node_types.clone());
            let mut parts = BTreeMap::new();
            for (t, width) in widths.iter().enumerate() {
                if let Some(f) = width {
                    let name = format!("x.{}", meta.node_types[t]);
                    parts.insert(NodeTypeId(t), b.input(&name, Domain::Node(Some(NodeTypeId(t))), Shape::flat(*f)).map_err(cfg_ir)?);
                }
            }
            Flow::Typed(parts)
        }
        InputSpec::Pairs { width } => Flow::Pairs(b.input("pair", Domain::Pair, Shape::flat(*width)).map_err(cfg_ir)?),
    };
    for layer in &config.layers {
        flow = layers::build_layer(&mut b, &mut w, config, layer, flow, input)?;
        if let Some(act) = layer.activation {
            flow = apply(&mut b, flow, |b, v| b.unary(v, act)).map_err(|e| ir(layer, e))?;
        }
    }
    w.finish()?;
    match flow {
        Flow::Featureless { .. } => return Err(ModelError::Config("the model has no layers".into())),
        Flow::Nodes(v) | Flow::Pairs(v) => b.output("out", v).map_err(cfg_ir)?,
        Flow::Typed(parts) => {
            let names = b.node_types().to_vec();
            for (t, v) in parts {
                b.output(&format!("out.{}", names[t.0]), v).map_err(cfg_ir)?;
            }
        }
    }
    Ok(b.finish())
}

fn cfg_ir(e: rgnn_ir::IrError) -> ModelError {
    ModelError::Config(e.to_string())
}

/// Apply `f` to every value of a flow.
pub(crate) fn apply(
    b: &mut ProgramBuilder,
    flow: Flow,
    mut f: impl FnMut(&mut ProgramBuilder, ValueId) -> Result<ValueId, rgnn_ir::IrError>,
) -> Result<Flow, rgnn_ir::IrError> {
    Ok(match flow {
        Flow::Featureless { num_nodes } => Flow::Featureless { num_nodes },
        Flow::Nodes(v) => Flow::Nodes(f(b, v)?),
        Flow::Pairs(v) => Flow::Pairs(f(b, v)?),
        Flow::Typed(parts) => Flow::Typed(parts.into_iter().map(|(t, v)| Ok((t, f(b, v)?))).collect::<Result<_, _>>()?),
    })
}
