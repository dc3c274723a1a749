//! One builder per source-framework layer. Each reads its config, loads and checks its weights,
//! and emits level-1 operators that compute exactly what the framework computes, in the
//! framework's order (e.g. PyG's RGCN aggregates and then transforms; DGL transforms each edge
//! and then aggregates). Reordering for speed is the compiler's job, not the builders'.

mod floydnet;
mod hgt;
mod relgraphconv;
mod rgat;
mod rgcn;

use crate::weights::{ir, Weights};
use crate::{Flow, InputSpec, LayerConfig, LayerKind, ModelConfig, ModelError};
use rgnn_ir::{ParamId, ProgramBuilder, ValueId};

pub(crate) fn build_layer(
    b: &mut ProgramBuilder,
    w: &mut Weights,
    model: &ModelConfig,
    layer: &LayerConfig,
    flow: Flow,
    input: &InputSpec,
) -> Result<Flow, ModelError> {
    match &layer.kind {
        LayerKind::Rgcn(c) => rgcn::build(b, w, layer, c, flow),
        LayerKind::RelGraphConv(c) => relgraphconv::build(b, w, layer, c, flow),
        LayerKind::Rgat(c) => rgat::build(b, w, layer, c, flow),
        LayerKind::Hgt(c) => hgt::build(b, w, model, layer, c, flow, input),
        LayerKind::Pivotal(c) => floydnet::build(b, w, layer, c, flow),
    }
}

/// The node features of a relational layer's input (errors for other kinds of input).
pub(crate) fn node_input(
    layer: &LayerConfig,
    flow: &Flow,
    expected_width: usize,
    b: &ProgramBuilder,
) -> Result<Option<ValueId>, ModelError> {
    let v = match flow {
        Flow::Featureless { num_nodes } if *num_nodes == expected_width => return Ok(None),
        Flow::Featureless { num_nodes } => {
            return Err(err(
                layer,
                &format!("the graph is featureless with {num_nodes} nodes, so the layer's input width (in_channels) must be {num_nodes}, but it is {expected_width}"),
            ))
        }
        Flow::Nodes(v) => *v,
        Flow::Typed(_) => return Err(err(
            layer,
            "takes one node set, but its input is per node type (put it before the heterogeneous layers, or use a relational graph file)",
        )),
        Flow::Pairs(_) => return Err(err(layer, "takes node features, but the graph file is a pair graph (`pair`)")),
    };
    let width = b.info(v).shape.width();
    if width != expected_width {
        return Err(err(layer, &format!("input features have width {width}, but the layer expects {expected_width}")));
    }
    Ok(Some(v))
}

pub(crate) fn err(layer: &LayerConfig, message: &str) -> ModelError {
    ModelError::Layer { layer: layer.label(), message: message.to_string() }
}

/// A `[in, out]` matrix as the `[1, 1, in, out]` shared-weight form of the linear operator.
pub(crate) fn shared_matrix(
    b: &mut ProgramBuilder,
    layer: &LayerConfig,
    m: ParamId,
    rows: usize,
    cols: usize,
) -> Result<ParamId, ModelError> {
    b.reshape_param(m, &[1, 1, rows, cols]).map_err(|e| ir(layer, e))
}

/// A PyTorch `nn.Linear` (`weight [out, in]`, optional `bias [out]`) applied as `x @ Wᵀ + b`;
/// `in` is the width of `x`.
pub(crate) fn torch_linear(
    b: &mut ProgramBuilder,
    w: &mut Weights,
    layer: &LayerConfig,
    x: ValueId,
    name: &str,
    out_dim: usize,
    bias: bool,
) -> Result<ValueId, ModelError> {
    let in_dim = b.info(x).shape.width();
    let weight = w.load(b, layer, &format!("{name}.weight"), &[out_dim, in_dim])?;
    let t = b.transpose_param(weight).map_err(|e| ir(layer, e))?;
    let m = shared_matrix(b, layer, t, in_dim, out_dim)?;
    let mut y = b.linear(x, m, rgnn_ir::WeightSelect::Shared, rgnn_ir::Shape::flat(out_dim)).map_err(|e| ir(layer, e))?;
    if bias {
        let bv = w.load(b, layer, &format!("{name}.bias"), &[out_dim])?;
        y = b.bias(y, bv).map_err(|e| ir(layer, e))?;
    }
    Ok(y)
}
