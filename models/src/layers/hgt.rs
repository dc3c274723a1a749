//! PyG `HGTConv`. K, Q, V per node type (`x @ Wᵀ + b`, split in thirds); per edge j→i of type e
//! and head h: `k' = K_j[h] @ k_rel[h·E + e]`, `v' = V_j[h] @ v_rel[h·E + e]`,
//! `logit = (Q_i[h] · k') · p_rel[e][h] / sqrt(D)`, softmax over all in-edges of i; then per
//! destination type `a = gelu(Σ α v') @ out_linᵀ + b` and, when out == in, the gated skip.
//! Edge types are matched to `metadata` by name (the relation id is the metadata position).

use super::{err, torch_linear};
use crate::weights::{ir, Weights};
use crate::{Flow, HgtConfig, HgtInChannels, InputSpec, LayerConfig, Metadata, ModelConfig, ModelError};
use rgnn_ir::{Activation, Domain, Endpoint, NodeTypeId, ProgramBuilder, Reduce, RowIndex, Shape, SoftmaxGroup, WeightSelect};
use std::collections::BTreeMap;

pub(super) fn build(
    b: &mut ProgramBuilder,
    w: &mut Weights,
    model: &ModelConfig,
    layer: &LayerConfig,
    c: &HgtConfig,
    flow: Flow,
    input: &InputSpec,
) -> Result<Flow, ModelError> {
    let meta = model.metadata.as_ref().ok_or_else(|| err(layer, "needs `metadata` (node_types, edge_types) in the model config"))?;
    let xs = match flow {
        Flow::Typed(parts) => parts,
        _ => return Err(err(layer, "needs a heterogeneous graph file (`x.<node_type>`, `edge_index.<src>__<rel>__<dst>`)")),
    };
    let (f, h) = (c.out_channels, c.heads);
    let d = f / h;
    let n_et = meta.edge_types.len();
    let e = |e| ir(layer, e);
    let type_id = |name: &str| NodeTypeId(meta.node_types.iter().position(|t| t == name).expect("validated metadata"));

    // K, Q, V per node type that has features.
    let (mut ks, mut qs, mut vs) = (vec![], vec![], vec![]);
    for (t, name) in meta.node_types.iter().enumerate() {
        let t = NodeTypeId(t);
        let Some(&x) = xs.get(&t) else {
            for k in ["weight", "bias"] {
                w.accept(layer, &format!("kqv_lin.lins.{name}.{k}"));
            }
            continue;
        };
        let width = b.info(x).shape.width();
        let expected = match &c.in_channels {
            HgtInChannels::All(n) => *n,
            HgtInChannels::PerType(m) => {
                *m.get(name).ok_or_else(|| err(layer, &format!("`in_channels` has no entry for node type {name:?}")))?
            }
        };
        if width != expected {
            return Err(err(layer, &format!("node type {name:?} has features of width {width}, but `in_channels` says {expected}")));
        }
        let kqv = torch_linear(b, w, layer, x, &format!("kqv_lin.lins.{name}"), 3 * f, true)?;
        for (i, list) in [&mut ks, &mut qs, &mut vs].into_iter().enumerate() {
            let part = b.slice(kqv, i * f, f).map_err(e)?;
            list.push((t, part));
        }
    }
    if ks.is_empty() {
        return Err(err(layer, "no node type has input features"));
    }
    if let InputSpec::TypedNodes { edge_types_present, .. } = input {
        for (et, present) in meta.edge_types.iter().zip(edge_types_present) {
            if *present && !xs.contains_key(&type_id(&et.0)) {
                return Err(err(
                    layer,
                    &format!("edge type {} has source type {:?}, which has no features at this layer", Metadata::edge_type_key(et), et.0),
                ));
            }
            if *present && !xs.contains_key(&type_id(&et.2)) {
                return Err(err(
                    layer,
                    &format!(
                        "edge type {} has destination type {:?}, which has no features at this layer",
                        Metadata::edge_type_key(et),
                        et.2
                    ),
                ));
            }
        }
    }
    let all = |b: &mut ProgramBuilder, parts: Vec<(NodeTypeId, rgnn_ir::ValueId)>| -> Result<rgnn_ir::ValueId, ModelError> {
        let v = b.concat_node_types(parts).map_err(e)?;
        b.reshape(v, Shape::new(h, d)).map_err(e)
    };
    let (k, q, v) = (all(b, ks)?, all(b, qs)?, all(b, vs)?);

    // Per-relation, per-head D×D transforms: [H·E, D, D] → [E, H, D, D] (H blocks per relation).
    let rel_weight = |b: &mut ProgramBuilder, w: &mut Weights, name: &str| -> Result<rgnn_ir::ParamId, ModelError> {
        let raw = w.load(b, layer, name, &[h * n_et, d, d])?;
        let r = b.reshape_param(raw, &[h, n_et, d, d]).map_err(e)?;
        b.permute_param(r, &[1, 0, 2, 3]).map_err(e)
    };
    let k_rel = rel_weight(b, w, "k_rel.weight")?;
    let v_rel = rel_weight(b, w, "v_rel.weight")?;
    let mut p_rel = vec![];
    for et in &meta.edge_types {
        p_rel.push(w.load(b, layer, &format!("p_rel.{}", Metadata::edge_type_key(et)), &[1, h])?);
    }
    let p_rel = b.stack_params(&p_rel).map_err(e)?; // [E, 1, H]

    let k_src = b.gather(k, Endpoint::Src).map_err(e)?;
    let v_src = b.gather(v, Endpoint::Src).map_err(e)?;
    let q_dst = b.gather(q, Endpoint::Dst).map_err(e)?;
    let k_edge = b.linear(k_src, k_rel, WeightSelect::Relation, Shape::new(h, d)).map_err(e)?;
    let v_edge = b.linear(v_src, v_rel, WeightSelect::Relation, Shape::new(h, d)).map_err(e)?;
    let dot = b.head_dot(q_dst, k_edge).map_err(e)?;
    let prior = b.embedding(p_rel, WeightSelect::Relation, RowIndex::Zero, Domain::Edge, Shape::new(h, 1)).map_err(e)?;
    let logits = b.mul(dot, prior).map_err(e)?;
    let logits = b.scale(logits, 1.0 / (d as f32).sqrt()).map_err(e)?;
    let alpha = b.edge_softmax(logits, SoftmaxGroup::Dst).map_err(e)?;
    let msg = b.mul(v_edge, alpha).map_err(e)?;
    let agg = b.aggregate(msg, Reduce::Sum, Domain::Node(None)).map_err(e)?;
    let agg = b.reshape(agg, Shape::flat(f)).map_err(e)?;

    // Output per destination type (of the metadata) that has features; others are dropped, as in PyG.
    let dst_types: Vec<&String> = meta.edge_types.iter().map(|et| &et.2).collect();
    let mut out = BTreeMap::new();
    for (t, name) in meta.node_types.iter().enumerate() {
        let t = NodeTypeId(t);
        let x = xs.get(&t).copied();
        if x.is_none() || !dst_types.contains(&name) {
            for k in ["weight", "bias"] {
                w.accept(layer, &format!("out_lin.lins.{name}.{k}"));
            }
            w.accept(layer, &format!("skip.{name}"));
            continue;
        }
        let x = x.expect("checked");
        let a = b.select_node_type(agg, t).map_err(e)?;
        let a = b.unary(a, Activation::Gelu).map_err(e)?;
        let a = torch_linear(b, w, layer, a, &format!("out_lin.lins.{name}"), f, true)?;
        let y = if b.info(x).shape.width() == f {
            let gate = w.load(b, layer, &format!("skip.{name}"), &[1])?;
            b.gated_skip(a, x, gate).map_err(e)?
        } else {
            w.accept(layer, &format!("skip.{name}"));
            a
        };
        out.insert(t, b.name(y, format!("{}.out.{name}", layer.prefix)));
    }
    Ok(Flow::Typed(out))
}
