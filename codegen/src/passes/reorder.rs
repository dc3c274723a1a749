//! Linear reordering (Hector's idea, applied everywhere it is valid): typed linears move before
//! gathers so they run once per node or per unique (node, relation) pair instead of once per
//! edge, and linear chains fold into one weight so attention logits need only narrow products.

use crate::rewrite::rewrite;
use rgnn_ir::{Domain, IrError, Op, Program, Reduce, WeightSelect};

/// `(x @ W[sel]) @ Q` with a shared `Q` → `x @ (W[sel] @ Q)`. For RGAT this turns
/// `qi = (x_i @ W_r) @ q` into `x_i @ (W_r @ q)`: the logit path never materialises the
/// `[E, H·C]` transformed features, and the folded linear can then move before its gather.
pub fn fold_linear_chains(program: &Program) -> Result<Program, IrError> {
    rewrite(
        program,
        |_| true,
        |r, v| {
            let Op::Linear { input: a, weight: q, select: WeightSelect::Shared, out } = *r.src.op(v) else { return Ok(None) };
            let Op::Linear { input: x, weight: w, select, .. } = *r.src.op(a) else { return Ok(None) };
            let composed = r.b.compose_linear(w, q)?;
            let x = r.get(x);
            Ok(Some(r.b.linear(x, composed, select, out)?))
        },
    )
}

/// `Linear_r(aggregate_{sum|mean}(m))` over (destination, relation) groups →
/// `aggregate(Linear_r(m))`: valid because every member of a group has the group's relation and a
/// linear map commutes with sums and means (PyG's RGCN aggregates first; this is what lets its
/// weights move to the sources). Not valid for max, which is left alone.
pub fn push_linears_through_aggregations(program: &Program) -> Result<Program, IrError> {
    rewrite(
        program,
        |_| true,
        |r, v| {
            let Op::Linear { input: a, weight, select: WeightSelect::Relation, out } = *r.src.op(v) else { return Ok(None) };
            let Op::Aggregate { input: m, reduce, to: Domain::CompactDstRel } = *r.src.op(a) else { return Ok(None) };
            if reduce == Reduce::Max || r.uses[a.0] != 1 || r.src.value(m).domain != Domain::Edge {
                return Ok(None);
            }
            let m = r.get(m);
            let l = r.b.linear(m, weight, WeightSelect::Relation, out)?;
            Ok(Some(r.b.aggregate(l, reduce, Domain::CompactDstRel)?))
        },
    )
}

/// `Linear(gather(x))` → a linear before the gather: a shared weight runs once per node
/// (`gather(Linear(x))`); a per-relation weight runs once per unique (node, relation) pair and
/// edges read their pair's row (`edge_from_compact(Linear_r(compact_gather(x)))`).
pub fn move_linears_before_gathers(program: &Program) -> Result<Program, IrError> {
    rewrite(
        program,
        |_| true,
        |r, v| {
            let Op::Linear { input: g, weight, select, out } = *r.src.op(v) else { return Ok(None) };
            let Op::Gather { input: x, endpoint } = *r.src.op(g) else { return Ok(None) };
            let x = r.get(x);
            Ok(Some(match select {
                WeightSelect::Shared => {
                    let y = r.b.linear(x, weight, WeightSelect::Shared, out)?;
                    r.b.gather(y, endpoint)?
                }
                WeightSelect::Relation => {
                    let c = r.b.compact_gather(x, endpoint)?;
                    let y = r.b.linear(c, weight, WeightSelect::Relation, out)?;
                    r.b.edge_from_compact(y)?
                }
                WeightSelect::NodeType => return Ok(None),
            }))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rgnn_ir::{Activation, Endpoint, ProgramBuilder, Shape, SoftmaxGroup};

    fn count(p: &Program, f: impl Fn(&Op, Domain) -> bool) -> usize {
        p.ops().iter().zip(p.values()).filter(|(op, v)| f(op, v.domain)).count()
    }
    fn edge_linears(p: &Program) -> usize {
        count(p, |op, d| matches!(op, Op::Linear { .. }) && d == Domain::Edge)
    }

    /// An RGAT-shaped program: per-edge relation linears on both ends, q/k, softmax, message.
    fn rgat_like() -> Program {
        let mut b = ProgramBuilder::new();
        let x = b.input("x", Domain::Node(None), Shape::flat(4)).unwrap();
        let w = b.load_param("w", &[3, 1, 4, 6]).unwrap();
        let q = b.load_param("q", &[1, 1, 6, 2]).unwrap();
        let xi = b.gather(x, Endpoint::Dst).unwrap();
        let xj = b.gather(x, Endpoint::Src).unwrap();
        let oi = b.linear(xi, w, WeightSelect::Relation, Shape::flat(6)).unwrap();
        let oj = b.linear(xj, w, WeightSelect::Relation, Shape::flat(6)).unwrap();
        let qi = b.linear(oi, q, WeightSelect::Shared, Shape::new(2, 1)).unwrap();
        let kj = b.linear(oj, q, WeightSelect::Shared, Shape::new(2, 1)).unwrap();
        let s = b.add(qi, kj).unwrap();
        let s = b.unary(s, Activation::LeakyRelu(0.2)).unwrap();
        let a = b.edge_softmax(s, SoftmaxGroup::Dst).unwrap();
        let vj = b.reshape(oj, Shape::new(2, 3)).unwrap();
        let m = b.mul(vj, a).unwrap();
        let o = b.aggregate(m, Reduce::Sum, Domain::Node(None)).unwrap();
        b.output("out", o).unwrap();
        b.finish()
    }

    #[test]
    fn folding_removes_the_destination_side_transform() {
        let p = rgat_like();
        let folded = crate::passes::eliminate_dead_values(&fold_linear_chains(&p).unwrap()).unwrap();
        // out_i was only used by q_i: after folding it is gone; out_j stays for the message.
        assert_eq!(edge_linears(&p), 4);
        assert_eq!(edge_linears(&folded), 3);
        assert!(folded.params().iter().any(|d| matches!(d.expr, rgnn_ir::ParamExpr::ComposeLinear { .. })));
    }

    #[test]
    fn all_edge_linears_move_to_compact_rows() {
        let p = crate::optimize(&rgat_like(), crate::PassOptions::default()).unwrap();
        assert_eq!(edge_linears(&p), 0, "{p}");
        assert_eq!(count(&p, |op, d| matches!(op, Op::Linear { .. }) && d == Domain::CompactSrcRel), 2, "{p}");
        assert_eq!(count(&p, |op, d| matches!(op, Op::Linear { .. }) && d == Domain::CompactDstRel), 1, "{p}");
    }

    #[test]
    fn max_aggregation_is_not_reordered() {
        let mut b = ProgramBuilder::new();
        let x = b.input("x", Domain::Node(None), Shape::flat(4)).unwrap();
        let w = b.load_param("w", &[2, 1, 4, 4]).unwrap();
        let g = b.gather(x, Endpoint::Src).unwrap();
        for (name, reduce) in [("max", Reduce::Max), ("mean", Reduce::Mean)] {
            let a = b.aggregate(g, reduce, Domain::CompactDstRel).unwrap();
            let l = b.linear(a, w, WeightSelect::Relation, Shape::flat(4)).unwrap();
            let o = b.aggregate(l, Reduce::Sum, Domain::Node(None)).unwrap();
            b.output(name, o).unwrap();
        }
        let p = crate::optimize(&b.finish(), crate::PassOptions::default()).unwrap();
        // The mean branch now transforms compact source rows; the max branch still transforms
        // its (destination, relation) aggregate.
        assert_eq!(count(&p, |op, d| matches!(op, Op::Linear { .. }) && d == Domain::CompactSrcRel), 1, "{p}");
        assert_eq!(count(&p, |op, d| matches!(op, Op::Linear { .. }) && d == Domain::CompactDstRel), 1, "{p}");
    }
}
