//! DGL `RelGraphConv`: `h_i = Σ_{e: j→i} norm_e · x_j @ W_{type(e)}`, then LayerNorm, `+ h_bias`,
//! `+ x_i @ loop_weight`. DGL transforms each edge's message before summing.

use super::{err, node_input, shared_matrix};
use crate::weights::{ir, Weights};
use crate::{Flow, LayerConfig, ModelError, Regularizer, RelGraphConvConfig};
use rgnn_ir::{Domain, Endpoint, NormKind, ProgramBuilder, Reduce, Shape, WeightSelect};

pub(super) fn build(
    b: &mut ProgramBuilder,
    w: &mut Weights,
    layer: &LayerConfig,
    c: &RelGraphConvConfig,
    flow: Flow,
) -> Result<Flow, ModelError> {
    let x = node_input(layer, &flow, c.in_feat, b)?
        .ok_or_else(|| err(layer, "needs input features `x` (DGL's RelGraphConv has no featureless mode)"))?;
    let (r, i, o) = (c.num_rels, c.in_feat, c.out_feat);
    let e = |e| ir(layer, e);
    let weight = match c.regularizer {
        Regularizer::None => {
            let m = w.load(b, layer, "linear_r.W", &[r, i, o])?;
            b.reshape_param(m, &[r, 1, i, o]).map_err(e)?
        }
        Regularizer::Basis => {
            let nb = c.num_bases.unwrap_or(r);
            let bases = w.load(b, layer, "linear_r.W", &[nb, i, o])?;
            let coeff = w.load(b, layer, "linear_r.coeff", &[r, nb])?;
            let m = b.basis_compose(coeff, bases).map_err(e)?;
            b.reshape_param(m, &[r, 1, i, o]).map_err(e)?
        }
        Regularizer::Bdd => {
            let nb = c.num_bases.unwrap_or(r);
            let m = w.load(b, layer, "linear_r.W", &[r, nb * (i / nb) * (o / nb)])?;
            b.reshape_param(m, &[r, nb, i / nb, o / nb]).map_err(e)?
        }
    };
    let xe = b.gather(x, Endpoint::Src).map_err(e)?;
    let msg = b.linear(xe, weight, WeightSelect::Relation, Shape::flat(o)).map_err(e)?;
    let mut h = if c.norm_right {
        let per_rel = b.aggregate(msg, Reduce::Mean, Domain::CompactDstRel).map_err(e)?;
        b.aggregate(per_rel, Reduce::Sum, Domain::Node(None)).map_err(e)?
    } else {
        b.aggregate(msg, Reduce::Sum, Domain::Node(None)).map_err(e)?
    };
    if c.layer_norm {
        let lw = w.load(b, layer, "layer_norm_weight.weight", &[o])?;
        let lb = w.load(b, layer, "layer_norm_weight.bias", &[o])?;
        h = b.norm(h, NormKind::LayerNorm { eps: 1e-5 }, Some(lw), Some(lb)).map_err(e)?;
    }
    if c.bias {
        let hb = w.load(b, layer, "h_bias", &[o])?;
        h = b.bias(h, hb).map_err(e)?;
    }
    if c.self_loop {
        let lw = w.load(b, layer, "loop_weight", &[i, o])?;
        let m = shared_matrix(b, layer, lw, i, o)?;
        let s = b.linear(x, m, WeightSelect::Shared, Shape::flat(o)).map_err(e)?;
        h = b.add(h, s).map_err(e)?;
    }
    Ok(Flow::Nodes(b.name(h, format!("{}.out", layer.prefix))))
}
