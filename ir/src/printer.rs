use crate::{Domain, Op, ParamExpr, Program, RowIndex};
use std::fmt::Write;

fn domain(p: &Program, d: Domain) -> String {
    match d {
        Domain::Node(Some(t)) => format!("node[{}]", p.node_types.get(t.0).map(String::as_str).unwrap_or("?")),
        d => d.to_string(),
    }
}

/// The text form: parameters, then one line per value `%id = op args : domain[heads x dim]`,
/// then the outputs.
pub(crate) fn print(p: &Program) -> String {
    let mut s = String::new();
    if !p.node_types.is_empty() {
        let _ = writeln!(s, "node types: {}", p.node_types.join(", "));
    }
    let _ = writeln!(s, "params:");
    for (i, d) in p.params.iter().enumerate() {
        let e = match &d.expr {
            ParamExpr::Load { key } => format!("load {key:?}"),
            ParamExpr::BasisCompose { coeff, bases } => format!("basis_compose ${} ${}", coeff.0, bases.0),
            ParamExpr::Reshape { input, .. } => format!("reshape ${}", input.0),
            ParamExpr::Permute { input, axes } => format!("permute ${} {axes:?}", input.0),
            ParamExpr::ComposeLinear { first, second } => format!("compose ${} ${}", first.0, second.0),
            ParamExpr::Stack { inputs } => {
                format!("stack {}", inputs.iter().map(|p| format!("${}", p.0)).collect::<Vec<_>>().join(" "))
            }
        };
        let _ = writeln!(s, "  ${i} = {e} {:?}", d.shape);
    }
    let _ = writeln!(s, "values:");
    for (i, (op, v)) in p.ops.iter().zip(&p.values).enumerate() {
        let r = |id: &crate::ValueId| p.values[id.0].name.clone();
        let args = match op {
            Op::Input { name } => format!("{name:?}"),
            Op::Gather { input, endpoint } | Op::CompactGather { input, endpoint } => format!("{:?} {}", endpoint, r(input)).to_lowercase(),
            Op::EdgeFromCompact { input } => r(input),
            Op::Linear { input, weight, select, .. } => format!("{} ${} by {:?}", r(input), weight.0, select),
            Op::Embedding { table, select, row, .. } => {
                let row = match row {
                    RowIndex::Zero => "row 0",
                    RowIndex::Src => "row src",
                    RowIndex::Dst => "row dst",
                    RowIndex::Node => "row node",
                };
                format!("${} by {:?}, {row}", table.0, select)
            }
            Op::Bias { input, bias } => format!("{} + ${}", r(input), bias.0),
            Op::Scale { input, factor } => format!("{} * {factor}", r(input)),
            Op::ScaleByParam { input, factor } => format!("{} * ${}", r(input), factor.0),
            Op::Unary { input, f } => format!("{} {}", f.name(), r(input)),
            Op::Binary { lhs, rhs, f } => format!("{:?} {} {}", f, r(lhs), r(rhs)).to_lowercase(),
            Op::HeadDot { lhs, rhs } | Op::HeadOuter { lhs, rhs } => format!("{} {}", r(lhs), r(rhs)),
            Op::HeadMean { input } | Op::PairTranspose { input } | Op::PairMask { input } => r(input),
            Op::Reshape { input, out } => format!("{} as {out}", r(input)),
            Op::Slice { input, start, len } => format!("{}[{start}..{}]", r(input), start + len),
            Op::EdgeSoftmax { input, group } => format!("{} over {:?}", r(input), group),
            Op::Aggregate { input, reduce, .. } => format!("{:?} {}", reduce, r(input)).to_lowercase(),
            Op::GatedSkip { update, residual, gate } => format!("{} {} gate ${}", r(update), r(residual), gate.0),
            Op::Norm { input, kind, weight, bias } => {
                let w = weight.map(|p| format!(" w=${}", p.0)).unwrap_or_default();
                let b = bias.map(|p| format!(" b=${}", p.0)).unwrap_or_default();
                format!("{kind:?} {}{w}{b}", r(input))
            }
            Op::ConcatNodeTypes { parts } => parts.iter().map(|(_, v)| r(v)).collect::<Vec<_>>().join(" "),
            Op::SelectNodeType { input, .. } => r(input),
            Op::PivotAttention { q, k_ij, k_jk, v_ij, v_jk, scale } => {
                format!("q={} k=({}, {}) v=({}, {}) scale {scale}", r(q), r(k_ij), r(k_jk), r(v_ij), r(v_jk))
            }
        };
        let label = if v.name == format!("%{i}") { v.name.clone() } else { format!("%{i} {}", v.name) };
        let _ = writeln!(s, "  {label} = {} {args} : {}[{}]", op.name(), domain(p, v.domain), v.shape);
    }
    let _ = writeln!(s, "outputs:");
    for (name, v) in &p.outputs {
        let _ = writeln!(s, "  {name} = {}", p.values[v.0].name);
    }
    s
}
