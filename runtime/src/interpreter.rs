//! The level-1 interpreter: evaluates a program operator by operator, row by row, exactly as the
//! operator documentation says. Sums and dot products accumulate in f64. It is the project's
//! oracle: every compiled path and backend is checked against it, so it favours being obviously
//! right over being fast (rayon only splits independent rows).

use crate::graph::ExecGraph;
use crate::{Result, RuntimeError, Tensor};
use rayon::prelude::*;
use rgnn_ir::*;
use std::collections::BTreeMap;

/// A value: `rows` rows of `width` numbers.
#[derive(Clone, Debug)]
pub struct Rows {
    pub rows: usize,
    pub width: usize,
    pub data: Vec<f32>,
}

impl Rows {
    fn zeros(rows: usize, width: usize) -> Self {
        Rows { rows, width, data: vec![0.0; rows * width] }
    }
    fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.width..(i + 1) * self.width]
    }
}

/// Evaluate every parameter expression to a dense tensor.
pub fn eval_params(program: &Program, weights: &BTreeMap<String, Tensor>) -> Result<Vec<Tensor>> {
    let mut out: Vec<Tensor> = Vec::with_capacity(program.params().len());
    for def in program.params() {
        let t = match &def.expr {
            ParamExpr::Load { key } => {
                let t = weights.get(key).ok_or_else(|| RuntimeError::Invalid(format!("weight `{key}` is missing")))?;
                if let Some(i) = t.data.iter().position(|v| !v.is_finite()) {
                    return Err(RuntimeError::Invalid(format!("weight `{key}` has a non-finite value {} at flat position {i}", t.data[i])));
                }
                Tensor::new(def.shape.clone(), t.data.clone())
            }
            ParamExpr::BasisCompose { coeff, bases } => {
                let (c, b) = (&out[coeff.0], &out[bases.0]);
                let (r, nb) = (c.shape[0], c.shape[1]);
                let inner = b.numel() / nb;
                let mut data = vec![0f32; r * inner];
                for ri in 0..r {
                    for k in 0..inner {
                        let s: f64 = (0..nb).map(|bi| c.data[ri * nb + bi] as f64 * b.data[bi * inner + k] as f64).sum();
                        data[ri * inner + k] = s as f32;
                    }
                }
                Tensor::new(def.shape.clone(), data)
            }
            ParamExpr::Reshape { input, .. } => Tensor::new(def.shape.clone(), out[input.0].data.clone()),
            ParamExpr::Permute { input, axes } => permute(&out[input.0], axes),
            ParamExpr::ComposeLinear { first, second } => compose_linear(&out[first.0], &out[second.0], &def.shape),
            ParamExpr::Stack { inputs } => {
                Tensor::new(def.shape.clone(), inputs.iter().flat_map(|p| out[p.0].data.iter().copied()).collect())
            }
        };
        out.push(t);
    }
    Ok(out)
}

/// `first [T, B, bin, bmid]` (block-diagonal per type) times `second [1, 1, B·bmid, o]`.
fn compose_linear(first: &Tensor, second: &Tensor, shape: &[usize]) -> Tensor {
    let (types, blocks, bin, bmid) = (first.shape[0], first.shape[1], first.shape[2], first.shape[3]);
    let o = second.shape[3];
    let mut data = vec![0f32; types * blocks * bin * o];
    for t in 0..types {
        for b in 0..blocks {
            for i in 0..bin {
                let row = &first.data[((t * blocks + b) * bin + i) * bmid..][..bmid];
                for c in 0..o {
                    let acc: f64 = (0..bmid).map(|m| row[m] as f64 * second.data[(b * bmid + m) * o + c] as f64).sum();
                    data[(t * blocks * bin + b * bin + i) * o + c] = acc as f32;
                }
            }
        }
    }
    Tensor::new(shape.to_vec(), data)
}

fn permute(t: &Tensor, axes: &[usize]) -> Tensor {
    let n = t.shape.len();
    let shape: Vec<usize> = axes.iter().map(|&a| t.shape[a]).collect();
    let mut in_strides = vec![1usize; n];
    for i in (0..n.saturating_sub(1)).rev() {
        in_strides[i] = in_strides[i + 1] * t.shape[i + 1];
    }
    let mut data = Vec::with_capacity(t.numel());
    let mut idx = vec![0usize; n];
    for _ in 0..t.numel() {
        let off: usize = (0..n).map(|i| idx[i] * in_strides[axes[i]]).sum();
        data.push(t.data[off]);
        for i in (0..n).rev() {
            idx[i] += 1;
            if idx[i] < shape[i] {
                break;
            }
            idx[i] = 0;
        }
    }
    Tensor::new(shape, data)
}

/// Graph-derived row tables: unique (source, relation) and (destination, relation) pairs and
/// each edge's row among them, in-edge lists per destination.
struct Tables<'g> {
    g: &'g ExecGraph,
    /// (node, relation) per compact row, sorted; and edge → compact row.
    src_rel: (Vec<(u32, u32)>, Vec<usize>),
    dst_rel: (Vec<(u32, u32)>, Vec<usize>),
    /// In-edges of each node, in edge order.
    in_edges: Vec<Vec<usize>>,
    node_type: Vec<usize>,
}

fn compact(nodes: &[u32], rel: &[u32]) -> (Vec<(u32, u32)>, Vec<usize>) {
    let mut pairs: Vec<(u32, u32)> = nodes.iter().zip(rel).map(|(&n, &r)| (n, r)).collect();
    pairs.sort_unstable();
    pairs.dedup();
    let map = nodes.iter().zip(rel).map(|(&n, &r)| pairs.binary_search(&(n, r)).expect("present")).collect();
    (pairs, map)
}

impl<'g> Tables<'g> {
    fn new(g: &'g ExecGraph) -> Self {
        let mut in_edges = vec![vec![]; g.num_nodes];
        for (e, &d) in g.dst.iter().enumerate() {
            in_edges[d as usize].push(e);
        }
        let mut node_type = vec![0; g.num_nodes];
        for t in 0..g.type_offsets.len().saturating_sub(1) {
            node_type[g.type_offsets[t]..g.type_offsets[t + 1]].iter_mut().for_each(|x| *x = t);
        }
        Tables { g, src_rel: compact(&g.src, &g.rel), dst_rel: compact(&g.dst, &g.rel), in_edges, node_type }
    }

    fn rows(&self, d: Domain) -> Result<usize> {
        Ok(match d {
            Domain::Node(None) => self.g.num_nodes,
            Domain::Node(Some(t)) => self.g.type_offsets.get(t.0 + 1).map(|e| e - self.g.type_offsets[t.0]).unwrap_or(0),
            Domain::Edge => self.g.num_edges(),
            Domain::CompactSrcRel => self.src_rel.0.len(),
            Domain::CompactDstRel => self.dst_rel.0.len(),
            Domain::Pair => self.g.pair.as_ref().map_or(0, |(b, n, _)| b * n * n),
            Domain::Graph => self.g.pair.as_ref().map_or(1, |(b, _, _)| *b),
        })
    }

    /// The relation of row `i` of a relation-carrying domain.
    fn relation(&self, d: Domain, i: usize) -> usize {
        match d {
            Domain::Edge => self.g.rel[i] as usize,
            Domain::CompactSrcRel => self.src_rel.0[i].1 as usize,
            Domain::CompactDstRel => self.dst_rel.0[i].1 as usize,
            _ => unreachable!("validated by the builder"),
        }
    }

    fn type_of_row(&self, d: Domain, select: WeightSelect, i: usize) -> usize {
        match select {
            WeightSelect::Shared => 0,
            WeightSelect::Relation => self.relation(d, i),
            WeightSelect::NodeType => self.node_type[i],
        }
    }

    fn node_of_row(&self, d: Domain, row: RowIndex, i: usize) -> Result<usize> {
        Ok(match (row, d) {
            (RowIndex::Zero, _) => 0,
            (RowIndex::Src, Domain::Edge) => self.g.src[i] as usize,
            (RowIndex::Dst, Domain::Edge) => self.g.dst[i] as usize,
            (RowIndex::Src, Domain::CompactSrcRel) => self.src_rel.0[i].0 as usize,
            (RowIndex::Dst, Domain::CompactDstRel) => self.dst_rel.0[i].0 as usize,
            (RowIndex::Node, Domain::Node(_)) => i,
            (row, d) => return Err(RuntimeError::Invalid(format!("embedding rows {row:?} are not defined on {d}"))),
        })
    }
}

fn param_name(program: &Program, p: ParamId) -> String {
    // Follow the expression back to a checkpoint key, for messages.
    match &program.param(p).expr {
        ParamExpr::Load { key } => key.clone(),
        ParamExpr::BasisCompose { bases, .. } => param_name(program, *bases),
        ParamExpr::Reshape { input, .. } | ParamExpr::Permute { input, .. } => param_name(program, *input),
        ParamExpr::ComposeLinear { first, .. } => param_name(program, *first),
        ParamExpr::Stack { inputs } => inputs.first().map_or("?".into(), |p| param_name(program, *p)),
    }
}

fn act(f: Activation, x: f32) -> f32 {
    let x64 = x as f64;
    (match f {
        Activation::Relu => x64.max(0.0),
        Activation::LeakyRelu(s) => {
            if x64 >= 0.0 {
                x64
            } else {
                x64 * s as f64
            }
        }
        Activation::Gelu => 0.5 * x64 * (1.0 + libm::erf(x64 / std::f64::consts::SQRT_2)),
        Activation::Silu => x64 / (1.0 + (-x64).exp()),
        Activation::Sigmoid => 1.0 / (1.0 + (-x64).exp()),
        Activation::Exp => x64.exp(),
        Activation::Tanh => x64.tanh(),
        Activation::Elu => {
            if x64 > 0.0 {
                x64
            } else {
                x64.exp_m1()
            }
        }
    }) as f32
}

/// Evaluate `program` on `graph` with evaluated parameters; returns the named outputs as
/// `[rows, width]` tensors.
pub fn run(program: &Program, params: &[Tensor], graph: &ExecGraph) -> Result<Vec<(String, Tensor)>> {
    let tables = Tables::new(graph);
    check_relations(program, params, graph)?;
    let mut vals: Vec<Option<Rows>> = vec![None; program.ops().len()];
    // Free each value after its last use: keeps memory near the live set on big graphs.
    let mut last_use = vec![usize::MAX; program.ops().len()];
    for (i, op) in program.ops().iter().enumerate() {
        for v in op.inputs() {
            last_use[v.0] = i;
        }
    }
    for (_, v) in program.outputs() {
        last_use[v.0] = usize::MAX;
    }
    for (i, op) in program.ops().iter().enumerate() {
        let info = &program.values()[i];
        let get = |v: &ValueId| vals[v.0].as_ref().expect("defined before use");
        let rows = tables.rows(info.domain)?;
        let width = info.shape.width();
        let out = eval(program, op, info, rows, width, params, graph, &tables, &get)?;
        debug_assert_eq!(out.data.len(), out.rows * out.width);
        vals[i] = Some(out);
        for v in op.inputs() {
            if last_use[v.0] == i {
                vals[v.0] = None;
            }
        }
    }
    let mut outputs = vec![];
    for (name, v) in program.outputs() {
        let r = vals[v.0].clone().expect("outputs are kept");
        crate::backend::check_finite(name, &r.data, r.width, rgnn_ir::level2::DType::F32)?;
        outputs.push((name.clone(), Tensor::new(vec![r.rows, r.width], r.data)));
    }
    Ok(outputs)
}

/// Every relation id must select an existing weight slice.
pub(crate) fn check_relations(program: &Program, params: &[Tensor], graph: &ExecGraph) -> Result<()> {
    let max_rel = match graph.rel.iter().max() {
        Some(&m) => m as usize,
        None => return Ok(()),
    };
    for op in program.ops() {
        let p = match op {
            Op::Linear { weight, select: WeightSelect::Relation, .. } => *weight,
            Op::Embedding { table, select: WeightSelect::Relation, .. } => *table,
            _ => continue,
        };
        let types = params[p.0].shape[0];
        if graph.rel_missing && types > 1 {
            return Err(RuntimeError::Mismatch(format!(
                "the graph has no `edge_type`, but the model's weight `{}` has {types} relations: give each edge its relation id",
                param_name(program, p)
            )));
        }
        if max_rel >= types {
            let e = graph.rel.iter().position(|&r| r as usize >= types).expect("exists");
            return Err(RuntimeError::Mismatch(format!(
                "edge {e} has relation {} (`edge_type`[{e}]), but the model's weight `{}` has {types} relations \
                 (its layer's num_relations): relation ids must lie in [0, {types})",
                graph.rel[e],
                param_name(program, p)
            )));
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn eval<'a>(
    program: &Program,
    op: &Op,
    info: &ValueInfo,
    rows: usize,
    width: usize,
    params: &[Tensor],
    graph: &ExecGraph,
    t: &Tables,
    get: &dyn Fn(&ValueId) -> &'a Rows,
) -> Result<Rows> {
    let map_rows = |f: &(dyn Fn(usize, &mut [f32]) + Sync)| -> Rows {
        let mut out = Rows::zeros(rows, width);
        if width > 0 {
            out.data.par_chunks_mut(width).enumerate().for_each(|(i, row)| f(i, row));
        }
        out
    };
    Ok(match op {
        Op::Input { name } => {
            let x = graph.inputs.get(name).ok_or_else(|| RuntimeError::Mismatch(format!("the graph has no input `{name}`")))?;
            let (r, w) = x.rows_width();
            if r != rows || w != width {
                return Err(RuntimeError::Mismatch(format!("input `{name}` is [{r}, {w}], the program expects [{rows}, {width}]")));
            }
            Rows { rows, width, data: x.data.clone() }
        }
        Op::Gather { input, endpoint } => {
            let x = get(input);
            let idx = if *endpoint == Endpoint::Src { &graph.src } else { &graph.dst };
            map_rows(&|e, row| row.copy_from_slice(x.row(idx[e] as usize)))
        }
        Op::CompactGather { input, endpoint } => {
            let x = get(input);
            let pairs = if *endpoint == Endpoint::Src { &t.src_rel.0 } else { &t.dst_rel.0 };
            map_rows(&|i, row| row.copy_from_slice(x.row(pairs[i].0 as usize)))
        }
        Op::EdgeFromCompact { input } => {
            let x = get(input);
            let map = if program.value(*input).domain == Domain::CompactSrcRel { &t.src_rel.1 } else { &t.dst_rel.1 };
            map_rows(&|e, row| row.copy_from_slice(x.row(map[e])))
        }
        Op::Linear { input, weight, select, .. } => {
            let x = get(input);
            let w = &params[weight.0];
            let (blocks, bin, bout) = (w.shape[1], w.shape[2], w.shape[3]);
            let per_type = blocks * bin * bout;
            map_rows(&|i, row| {
                let ty = t.type_of_row(info.domain, *select, i);
                let wt = &w.data[ty * per_type..(ty + 1) * per_type];
                let xr = x.row(i);
                for b in 0..blocks {
                    for o in 0..bout {
                        let mut s = 0f64;
                        for k in 0..bin {
                            s += xr[b * bin + k] as f64 * wt[(b * bin + k) * bout + o] as f64;
                        }
                        row[b * bout + o] = s as f32;
                    }
                }
            })
        }
        Op::Embedding { table, select, row, domain, .. } => {
            let tb = &params[table.0];
            let (m, w) = (tb.shape[1], tb.shape[2]);
            let mut idx = Vec::with_capacity(rows);
            for i in 0..rows {
                let r = t.node_of_row(*domain, *row, i)?;
                if r >= m {
                    return Err(RuntimeError::Mismatch(format!(
                        "`{}` has {m} rows (one per node for featureless input), but the graph has node {r}",
                        param_name(program, *table)
                    )));
                }
                idx.push((t.type_of_row(*domain, *select, i), r));
            }
            map_rows(&|i, out| {
                let (ty, r) = idx[i];
                out.copy_from_slice(&tb.data[(ty * m + r) * w..(ty * m + r + 1) * w]);
            })
        }
        Op::Bias { input, bias } => {
            let (x, b) = (get(input), &params[bias.0].data);
            map_rows(&|i, row| row.iter_mut().zip(x.row(i)).zip(b).for_each(|((o, &v), &bv)| *o = v + bv))
        }
        Op::Scale { input, factor } => {
            let x = get(input);
            map_rows(&|i, row| row.iter_mut().zip(x.row(i)).for_each(|(o, &v)| *o = v * factor))
        }
        Op::ScaleByParam { input, factor } => {
            let (x, f) = (get(input), params[factor.0].data[0]);
            map_rows(&|i, row| row.iter_mut().zip(x.row(i)).for_each(|(o, &v)| *o = v * f))
        }
        Op::Unary { input, f } => {
            let x = get(input);
            map_rows(&|i, row| row.iter_mut().zip(x.row(i)).for_each(|(o, &v)| *o = act(*f, v)))
        }
        Op::Binary { lhs, rhs, f } => {
            let (a, b) = (get(lhs), get(rhs));
            let (sa, sb) = (info.shape, program.value(*rhs).shape);
            map_rows(&|i, row| {
                let (ar, br) = (a.row(i), b.row(i));
                for h in 0..sa.heads {
                    for d in 0..sa.dim {
                        let bi = (if sb.heads == 1 { 0 } else { h }) * sb.dim + if sb.dim == 1 { 0 } else { d };
                        let (x, y) = (ar[h * sa.dim + d], br[bi]);
                        row[h * sa.dim + d] = match f {
                            BinaryFn::Add => x + y,
                            BinaryFn::Sub => x - y,
                            BinaryFn::Mul => x * y,
                        };
                    }
                }
            })
        }
        Op::HeadDot { lhs, rhs } => {
            let (a, b) = (get(lhs), get(rhs));
            let d = program.value(*lhs).shape.dim;
            map_rows(&|i, row| {
                let (ar, br) = (a.row(i), b.row(i));
                for (h, o) in row.iter_mut().enumerate() {
                    *o = (0..d).map(|k| ar[h * d + k] as f64 * br[h * d + k] as f64).sum::<f64>() as f32;
                }
            })
        }
        Op::HeadOuter { lhs, rhs } => {
            let (a, b) = (get(lhs), get(rhs));
            let (da, db) = (program.value(*lhs).shape.dim, program.value(*rhs).shape.dim);
            map_rows(&|i, row| {
                let (ar, br) = (a.row(i), b.row(i));
                for h in 0..info.shape.heads {
                    for x in 0..da {
                        for y in 0..db {
                            row[(h * da + x) * db + y] = ar[h * da + x] * br[h * db + y];
                        }
                    }
                }
            })
        }
        Op::HeadMean { input } => {
            let x = get(input);
            let h = program.value(*input).shape.heads;
            map_rows(&|i, row| {
                let xr = x.row(i);
                for (d, o) in row.iter_mut().enumerate() {
                    *o = ((0..h).map(|k| xr[k * width + d] as f64).sum::<f64>() / h as f64) as f32;
                }
            })
        }
        Op::Reshape { input, .. } => get(input).clone(),
        Op::Slice { input, start, len } => {
            let x = get(input);
            map_rows(&|i, row| row.copy_from_slice(&x.row(i)[*start..start + len]))
        }
        Op::EdgeSoftmax { input, group } => {
            let x = get(input);
            let mut out = Rows::zeros(rows, width);
            // Groups: in-edges of each destination, split by relation for DstRel.
            let mut groups: Vec<Vec<usize>> = vec![];
            for edges in &t.in_edges {
                match group {
                    SoftmaxGroup::Dst => groups.push(edges.clone()),
                    SoftmaxGroup::DstRel => {
                        let mut by_rel: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
                        for &e in edges {
                            by_rel.entry(graph.rel[e]).or_default().push(e);
                        }
                        groups.extend(by_rel.into_values());
                    }
                }
            }
            for g in groups.iter().filter(|g| !g.is_empty()) {
                for c in 0..width {
                    let m = g.iter().map(|&e| x.row(e)[c] as f64).fold(f64::NEG_INFINITY, f64::max);
                    let s: f64 = g.iter().map(|&e| (x.row(e)[c] as f64 - m).exp()).sum::<f64>() + 1e-16;
                    for &e in g {
                        out.data[e * width + c] = ((x.row(e)[c] as f64 - m).exp() / s) as f32;
                    }
                }
            }
            out
        }
        Op::Aggregate { input, reduce, to } => {
            let x = get(input);
            let from = program.value(*input).domain;
            // Members of each output row, in a fixed order (edge order; relation order for compact rows).
            let mut members: Vec<Vec<usize>> = vec![vec![]; rows];
            match (from, to) {
                (Domain::Edge, Domain::Node(None)) => members = t.in_edges.clone(),
                (Domain::Edge, Domain::CompactDstRel) => {
                    for (e, &r) in t.dst_rel.1.iter().enumerate() {
                        members[r].push(e);
                    }
                }
                (Domain::CompactDstRel, Domain::Node(None)) => {
                    for (r, &(d, _)) in t.dst_rel.0.iter().enumerate() {
                        members[d as usize].push(r);
                    }
                }
                _ => unreachable!("validated by the builder"),
            }
            map_rows(&|i, row| {
                let m = &members[i];
                if m.is_empty() {
                    return;
                }
                for (c, o) in row.iter_mut().enumerate() {
                    *o = match reduce {
                        Reduce::Sum => m.iter().map(|&j| x.row(j)[c] as f64).sum::<f64>() as f32,
                        Reduce::Mean => (m.iter().map(|&j| x.row(j)[c] as f64).sum::<f64>() / m.len() as f64) as f32,
                        Reduce::Max => m.iter().map(|&j| x.row(j)[c]).fold(f32::NEG_INFINITY, f32::max),
                    };
                }
            })
        }
        Op::GatedSkip { update, residual, gate } => {
            let (a, x) = (get(update), get(residual));
            let g = params[gate.0].data[0] as f64;
            let s = 1.0 / (1.0 + (-g).exp());
            map_rows(&|i, row| {
                for (c, o) in row.iter_mut().enumerate() {
                    *o = (s * a.row(i)[c] as f64 + (1.0 - s) * x.row(i)[c] as f64) as f32;
                }
            })
        }
        Op::Norm { input, kind, weight, bias } => {
            let x = get(input);
            let w = weight.map(|p| &params[p.0].data);
            let b = bias.map(|p| &params[p.0].data);
            map_rows(&|i, row| {
                let xr = x.row(i);
                let n = width as f64;
                let (shift, inv) = match kind {
                    NormKind::LayerNorm { eps } => {
                        let mean = xr.iter().map(|&v| v as f64).sum::<f64>() / n;
                        let var = xr.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
                        (mean, 1.0 / (var + *eps as f64).sqrt())
                    }
                    NormKind::Rms { eps } => (0.0, 1.0 / (xr.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / n + *eps as f64).sqrt()),
                    NormKind::Affine => (0.0, 1.0),
                };
                for (c, o) in row.iter_mut().enumerate() {
                    let mut v = (xr[c] as f64 - shift) * inv;
                    if let Some(w) = w {
                        v *= w[c] as f64;
                    }
                    if let Some(b) = b {
                        v += b[c] as f64;
                    }
                    *o = v as f32;
                }
            })
        }
        Op::ConcatNodeTypes { parts } => {
            let mut out = Rows::zeros(rows, width);
            for (ty, v) in parts {
                let x = get(v);
                let off = graph.type_offsets[ty.0];
                out.data[off * width..(off + x.rows) * width].copy_from_slice(&x.data);
            }
            out
        }
        Op::SelectNodeType { input, node_type } => {
            let x = get(input);
            let off = graph.type_offsets[node_type.0];
            Rows { rows, width, data: x.data[off * width..(off + rows) * width].to_vec() }
        }
        Op::PairTranspose { input } => {
            let x = get(input);
            let (_, n, _) = graph.pair.as_ref().expect("pair graph");
            let n = *n;
            map_rows(&|r, row| {
                let (b, i, k) = (r / (n * n), (r / n) % n, r % n);
                row.copy_from_slice(x.row(b * n * n + k * n + i));
            })
        }
        Op::PairMask { input } => {
            let x = get(input);
            let (_, n, mask) = graph.pair.as_ref().expect("pair graph");
            let n = *n;
            map_rows(&|r, row| {
                let (b, i, k) = (r / (n * n), (r / n) % n, r % n);
                if mask[b * n + i] != 0 && mask[b * n + k] != 0 {
                    row.copy_from_slice(x.row(r));
                }
            })
        }
        Op::PivotAttention { q, k_ij, k_jk, v_ij, v_jk, scale } => {
            let (q, k1, k2, v1, v2) = (get(q), get(k_ij), get(k_jk), get(v_ij), get(v_jk));
            let (_, n, mask) = graph.pair.as_ref().expect("pair graph");
            let n = *n;
            let (heads, d) = (info.shape.heads, info.shape.dim);
            let scale = *scale as f64;
            map_rows(&|r, row| {
                let (b, i, k) = (r / (n * n), (r / n) % n, r % n);
                let at = |bb: usize, x: usize, y: usize| bb * n * n + x * n + y;
                for h in 0..heads {
                    let qr = &q.row(r)[h * d..(h + 1) * d];
                    // Scores over pivots j; a pivot is masked when node i or node j is padding.
                    let scores: Vec<f64> = (0..n)
                        .map(|j| {
                            if mask[b * n + i] == 0 || mask[b * n + j] == 0 {
                                return -1e9;
                            }
                            let (ka, kb) = (&k1.row(at(b, i, j))[h * d..(h + 1) * d], &k2.row(at(b, j, k))[h * d..(h + 1) * d]);
                            (0..d).map(|e| qr[e] as f64 * (ka[e] as f64 + kb[e] as f64)).sum::<f64>() * scale
                        })
                        .collect();
                    let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let p: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                    let z: f64 = p.iter().sum();
                    for e in 0..d {
                        let y: f64 =
                            (0..n).map(|j| p[j] * (v1.row(at(b, i, j))[h * d + e] as f64 + v2.row(at(b, j, k))[h * d + e] as f64)).sum();
                        row[h * d + e] = (y / z) as f32;
                    }
                }
            })
        }
    })
}
