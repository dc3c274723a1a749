//! PyG `RGATConv`. Per edge j→i of relation r: `xi = x_i @ W_r`, `xj = x_j @ W_r` (the target is
//! transformed by the edge's relation weight too), `qi = xi @ q`, `kj = xj @ k`; additive
//! `leaky_relu(qi + kj)` or multiplicative `qi * kj` logits; softmax over the destination's
//! in-edges (or those of the same relation); message `alpha · xj` per head; concat or head mean;
//! bias. There is no root weight.

use super::{err, node_input, shared_matrix};
use crate::weights::{ir, Weights};
use crate::{Flow, LayerConfig, ModelError, RgatConfig};
use rgnn_ir::{Activation, Domain, Endpoint, ProgramBuilder, Reduce, Shape, SoftmaxGroup, WeightSelect};

pub(super) fn build(b: &mut ProgramBuilder, w: &mut Weights, layer: &LayerConfig, c: &RgatConfig, flow: Flow) -> Result<Flow, ModelError> {
    let x = node_input(layer, &flow, c.in_channels, b)?
        .ok_or_else(|| err(layer, "needs input features `x` (RGATConv has no featureless mode)"))?;
    let (r, i, h, d, ch) = (c.num_relations, c.in_channels, c.heads, c.dim, c.out_channels);
    let hc = h * ch;
    let e = |e| ir(layer, e);
    let weight = match (c.num_bases, c.num_blocks) {
        (Some(nb), _) => {
            let basis = w.load(b, layer, "basis", &[nb, i, hc])?;
            let att = w.load(b, layer, "att", &[r, nb])?;
            let m = b.basis_compose(att, basis).map_err(e)?;
            b.reshape_param(m, &[r, 1, i, hc]).map_err(e)?
        }
        (None, Some(nb)) => w.load(b, layer, "weight", &[r, nb, i / nb, hc / nb])?,
        (None, None) => {
            let m = w.load(b, layer, "weight", &[r, i, hc])?;
            b.reshape_param(m, &[r, 1, i, hc]).map_err(e)?
        }
    };
    let q = w.load(b, layer, "q", &[hc, h * d])?;
    let k = w.load(b, layer, "k", &[hc, h * d])?;
    let (q, k) = (shared_matrix(b, layer, q, hc, h * d)?, shared_matrix(b, layer, k, hc, h * d)?);
    // Parameters of PyG's `mod` variants; present in every export, unused when `mod` is None.
    for name in ["w", "l1", "b1", "l2", "b2", "e", "lin_edge.weight"] {
        w.accept(layer, name);
    }

    let x_dst = b.gather(x, Endpoint::Dst).map_err(e)?;
    let x_src = b.gather(x, Endpoint::Src).map_err(e)?;
    let out_i = b.linear(x_dst, weight, WeightSelect::Relation, Shape::flat(hc)).map_err(e)?;
    let out_j = b.linear(x_src, weight, WeightSelect::Relation, Shape::flat(hc)).map_err(e)?;
    let qi = b.linear(out_i, q, WeightSelect::Shared, Shape::new(h, d)).map_err(e)?;
    let kj = b.linear(out_j, k, WeightSelect::Shared, Shape::new(h, d)).map_err(e)?;
    let logits = if c.multiplicative {
        b.mul(qi, kj).map_err(e)?
    } else {
        let s = b.add(qi, kj).map_err(e)?;
        b.unary(s, Activation::LeakyRelu(c.negative_slope)).map_err(e)?
    };
    let group = if c.within_relation { SoftmaxGroup::DstRel } else { SoftmaxGroup::Dst };
    let alpha = b.edge_softmax(logits, group).map_err(e)?;
    let xj = b.reshape(out_j, Shape::new(h, ch)).map_err(e)?;
    // additive: alpha [H, 1] scales each head; multiplicative: [H, D] ⊗ [H, C] → [H, D·C].
    let msg = if c.multiplicative { b.head_outer(alpha, xj).map_err(e)? } else { b.mul(xj, alpha).map_err(e)? };
    let agg = b.aggregate(msg, Reduce::Sum, Domain::Node(None)).map_err(e)?;
    let mut out = if c.concat { b.reshape(agg, Shape::flat(h * d * ch)).map_err(e)? } else { b.head_mean(agg).map_err(e)? };
    if c.bias {
        let n = if c.concat { h * d * ch } else { d * ch };
        let bias = w.load(b, layer, "bias", &[n])?;
        out = b.bias(out, bias).map_err(e)?;
    }
    Ok(Flow::Nodes(b.name(out, format!("{}.out", layer.prefix))))
}
