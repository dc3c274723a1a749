//! PyG `RGCNConv`: `out_i = Σ_r AGG_{j ∈ N_r(i)}(x_j) @ W_r + x_i @ root + bias`.
//! PyG aggregates per relation first and transforms the aggregate (this matters for `max`).

use super::{err, node_input, shared_matrix};
use crate::weights::{ir, Weights};
use crate::{Aggr, Flow, LayerConfig, ModelError, RgcnConfig};
use rgnn_ir::{Domain, Endpoint, ProgramBuilder, Reduce, RowIndex, Shape, WeightSelect};

pub(super) fn build(b: &mut ProgramBuilder, w: &mut Weights, layer: &LayerConfig, c: &RgcnConfig, flow: Flow) -> Result<Flow, ModelError> {
    let x = node_input(layer, &flow, c.in_channels, b)?;
    let (r, i, o) = (c.num_relations, c.in_channels, c.out_channels);
    let e = |e| ir(layer, e);
    let reduce = match c.aggr {
        Aggr::Mean => Reduce::Mean,
        Aggr::Sum => Reduce::Sum,
        Aggr::Max => Reduce::Max,
    };
    // Relation weights as [R, in, out] (plain, or composed from bases) or block-diagonal.
    let weight = match (c.num_bases, c.num_blocks) {
        (Some(nb), _) => {
            let bases = w.load(b, layer, "weight", &[nb, i, o])?;
            let comp = w.load(b, layer, "comp", &[r, nb])?;
            b.basis_compose(comp, bases).map_err(e)?
        }
        (None, Some(nb)) => w.load(b, layer, "weight", &[r, nb, i / nb, o / nb])?,
        (None, None) => w.load(b, layer, "weight", &[r, i, o])?,
    };
    let per_relation = match x {
        Some(x) => {
            let weight = if c.num_blocks.is_some() { weight } else { b.reshape_param(weight, &[r, 1, i, o]).map_err(e)? };
            let xe = b.gather(x, Endpoint::Src).map_err(e)?;
            let agg = b.aggregate(xe, reduce, Domain::CompactDstRel).map_err(e)?;
            b.linear(agg, weight, WeightSelect::Relation, Shape::flat(o)).map_err(e)?
        }
        None => {
            // Featureless: node j's message under relation r is row j of W_r.
            if c.num_blocks.is_some() {
                return Err(err(layer, "block-diagonal weights need input features (PyG rejects featureless input here too)"));
            }
            let msg = b.embedding(weight, WeightSelect::Relation, RowIndex::Src, Domain::Edge, Shape::flat(o)).map_err(e)?;
            b.aggregate(msg, reduce, Domain::CompactDstRel).map_err(e)?
        }
    };
    let mut out = b.aggregate(per_relation, Reduce::Sum, Domain::Node(None)).map_err(e)?;
    if c.root_weight {
        let root = w.load(b, layer, "root", &[i, o])?;
        let self_term = match x {
            Some(x) => {
                let m = shared_matrix(b, layer, root, i, o)?;
                b.linear(x, m, WeightSelect::Shared, Shape::flat(o)).map_err(e)?
            }
            None => {
                let table = b.reshape_param(root, &[1, i, o]).map_err(e)?;
                b.embedding(table, WeightSelect::Shared, RowIndex::Node, Domain::Node(None), Shape::flat(o)).map_err(e)?
            }
        };
        out = b.add(out, self_term).map_err(e)?;
    }
    if c.bias {
        let bias = w.load(b, layer, "bias", &[o])?;
        out = b.bias(out, bias).map_err(e)?;
    }
    Ok(Flow::Nodes(b.name(out, format!("{}.out", layer.prefix))))
}
