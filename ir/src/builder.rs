use crate::op::*;
use crate::{Domain, Endpoint, IrError, NodeTypeId, ParamDef, ParamExpr, ParamId, Program, Shape, ValueId, ValueInfo};

/// Builds a [`Program`] one validated operator at a time.
///
/// Every method checks its operands' domains and shapes and returns an [`IrError`] naming the
/// operator and the mismatch, so a program that builds is well-formed.
///
/// ```
/// use rgnn_ir::*;
/// let mut b = ProgramBuilder::new();
/// let x = b.input("x", Domain::Node(None), Shape::flat(4)).unwrap();
/// let w = b.load_param("lin.weight", &[1, 1, 4, 2]).unwrap();
/// let xe = b.gather(x, Endpoint::Src).unwrap();
/// let m = b.linear(xe, w, WeightSelect::Shared, Shape::flat(2)).unwrap();
/// let y = b.aggregate(m, Reduce::Sum, Domain::Node(None)).unwrap();
/// b.output("out", y).unwrap();
/// let program = b.finish();
/// assert_eq!(program.ops().len(), 4); // input, gather, linear, aggregate
/// ```
#[derive(Default)]
pub struct ProgramBuilder {
    p: Program,
}

fn shape_eq(op: &'static str, what: &str, a: Shape, b: Shape) -> Result<(), IrError> {
    if a == b {
        Ok(())
    } else {
        Err(IrError::invalid(op, format!("{what}: shapes {a} and {b} differ")))
    }
}

impl ProgramBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Declare the node types (for heterogeneous programs); ids follow this order.
    pub fn set_node_types(&mut self, names: Vec<String>) {
        self.p.node_types = names;
    }

    pub fn node_types(&self) -> &[String] {
        &self.p.node_types
    }

    /// Look up a value's domain and shape.
    pub fn info(&self, v: ValueId) -> &ValueInfo {
        &self.p.values[v.0]
    }

    pub fn param_shape(&self, p: ParamId) -> &[usize] {
        &self.p.params[p.0].shape
    }

    pub fn finish(self) -> Program {
        self.p
    }

    fn check(&self, op: &'static str, v: ValueId) -> Result<&ValueInfo, IrError> {
        self.p.values.get(v.0).ok_or(IrError::UnknownValue { op, value: v.0 })
    }

    fn check_param(&self, op: &'static str, p: ParamId) -> Result<&ParamDef, IrError> {
        self.p.params.get(p.0).ok_or(IrError::UnknownParam { op, param: p.0 })
    }

    fn check_node_type(&self, op: &'static str, t: NodeTypeId) -> Result<(), IrError> {
        if t.0 < self.p.node_types.len() {
            Ok(())
        } else {
            Err(IrError::invalid(op, format!("node type #{} is not declared", t.0)))
        }
    }

    fn push(&mut self, op: Op, domain: Domain, shape: Shape) -> ValueId {
        let id = ValueId(self.p.values.len());
        let name = format!("%{}", id.0);
        self.p.values.push(ValueInfo { domain, shape, name });
        self.p.ops.push(op);
        id
    }

    /// Give a value a readable name (shown by the printer).
    pub fn name(&mut self, v: ValueId, name: impl Into<String>) -> ValueId {
        self.p.values[v.0].name = name.into();
        v
    }

    fn push_param(&mut self, expr: ParamExpr, shape: Vec<usize>) -> ParamId {
        self.p.params.push(ParamDef { expr, shape });
        ParamId(self.p.params.len() - 1)
    }

    // ---- parameters ----------------------------------------------------------------------

    /// A checkpoint tensor of the given shape.
    pub fn load_param(&mut self, key: &str, shape: &[usize]) -> Result<ParamId, IrError> {
        Ok(self.push_param(ParamExpr::Load { key: key.to_string() }, shape.to_vec()))
    }

    /// `out[r] = Σ_b coeff[r, b] · bases[b]`.
    pub fn basis_compose(&mut self, coeff: ParamId, bases: ParamId) -> Result<ParamId, IrError> {
        const OP: &str = "basis_compose";
        let c = self.check_param(OP, coeff)?.shape.clone();
        let b = self.check_param(OP, bases)?.shape.clone();
        if c.len() != 2 || b.is_empty() || c[1] != b[0] {
            return Err(IrError::invalid(OP, format!("coefficients {c:?} do not match bases {b:?}")));
        }
        let mut shape = vec![c[0]];
        shape.extend_from_slice(&b[1..]);
        Ok(self.push_param(ParamExpr::BasisCompose { coeff, bases }, shape))
    }

    pub fn reshape_param(&mut self, input: ParamId, shape: &[usize]) -> Result<ParamId, IrError> {
        const OP: &str = "reshape_param";
        let from = self.check_param(OP, input)?;
        if from.numel() != shape.iter().product::<usize>() {
            return Err(IrError::invalid(OP, format!("cannot reshape {:?} to {shape:?}", from.shape)));
        }
        Ok(self.push_param(ParamExpr::Reshape { input, shape: shape.to_vec() }, shape.to_vec()))
    }

    pub fn permute_param(&mut self, input: ParamId, axes: &[usize]) -> Result<ParamId, IrError> {
        const OP: &str = "permute_param";
        let from = self.check_param(OP, input)?.shape.clone();
        let mut seen = vec![false; from.len()];
        if axes.len() != from.len() || axes.iter().any(|&a| a >= from.len() || std::mem::replace(&mut seen[a], true)) {
            return Err(IrError::invalid(OP, format!("{axes:?} is not a permutation of {} axes", from.len())));
        }
        let shape = axes.iter().map(|&a| from[a]).collect::<Vec<_>>();
        Ok(self.push_param(ParamExpr::Permute { input, axes: axes.to_vec() }, shape))
    }

    /// `first [T, B, i/B, m/B]` then `second [1, 1, m, o]` as one `[T, 1, i, o]` weight.
    pub fn compose_linear(&mut self, first: ParamId, second: ParamId) -> Result<ParamId, IrError> {
        const OP: &str = "compose_linear";
        let f = self.check_param(OP, first)?.shape.clone();
        let s = self.check_param(OP, second)?.shape.clone();
        if f.len() != 4 || s.len() != 4 || s[0] != 1 || s[1] != 1 || f[1] * f[3] != s[2] {
            return Err(IrError::invalid(OP, format!("cannot compose {f:?} with {s:?}")));
        }
        Ok(self.push_param(ParamExpr::ComposeLinear { first, second }, vec![f[0], 1, f[1] * f[2], s[3]]))
    }

    /// Swap the last two axes.
    pub fn transpose_param(&mut self, input: ParamId) -> Result<ParamId, IrError> {
        let n = self.check_param("transpose_param", input)?.shape.len();
        if n < 2 {
            return Err(IrError::invalid("transpose_param", "needs at least two axes"));
        }
        let mut axes: Vec<usize> = (0..n).collect();
        axes.swap(n - 2, n - 1);
        self.permute_param(input, &axes)
    }

    pub fn stack_params(&mut self, inputs: &[ParamId]) -> Result<ParamId, IrError> {
        const OP: &str = "stack_params";
        let first = inputs.first().ok_or_else(|| IrError::invalid(OP, "nothing to stack"))?;
        let s = self.check_param(OP, *first)?.shape.clone();
        for p in inputs {
            let t = &self.check_param(OP, *p)?.shape;
            if *t != s {
                return Err(IrError::invalid(OP, format!("shapes {s:?} and {t:?} differ")));
            }
        }
        let mut shape = vec![inputs.len()];
        shape.extend(s);
        Ok(self.push_param(ParamExpr::Stack { inputs: inputs.to_vec() }, shape))
    }

    // ---- values ----------------------------------------------------------------------------

    pub fn input(&mut self, name: &str, domain: Domain, shape: Shape) -> Result<ValueId, IrError> {
        if let Domain::Node(Some(t)) = domain {
            self.check_node_type("input", t)?;
        }
        let v = self.push(Op::Input { name: name.to_string() }, domain, shape);
        Ok(self.name(v, name))
    }

    pub fn gather(&mut self, input: ValueId, endpoint: Endpoint) -> Result<ValueId, IrError> {
        let i = self.check("gather", input)?.clone();
        if i.domain != Domain::Node(None) {
            return Err(IrError::invalid("gather", format!("input is on {}, expected node", i.domain)));
        }
        Ok(self.push(Op::Gather { input, endpoint }, Domain::Edge, i.shape))
    }

    pub fn compact_gather(&mut self, input: ValueId, endpoint: Endpoint) -> Result<ValueId, IrError> {
        let i = self.check("compact_gather", input)?.clone();
        if i.domain != Domain::Node(None) {
            return Err(IrError::invalid("compact_gather", format!("input is on {}, expected node", i.domain)));
        }
        let to = if endpoint == Endpoint::Src { Domain::CompactSrcRel } else { Domain::CompactDstRel };
        Ok(self.push(Op::CompactGather { input, endpoint }, to, i.shape))
    }

    pub fn edge_from_compact(&mut self, input: ValueId) -> Result<ValueId, IrError> {
        let i = self.check("edge_from_compact", input)?.clone();
        if !matches!(i.domain, Domain::CompactSrcRel | Domain::CompactDstRel) {
            return Err(IrError::invalid("edge_from_compact", format!("input is on {}, expected compact rows", i.domain)));
        }
        Ok(self.push(Op::EdgeFromCompact { input }, Domain::Edge, i.shape))
    }

    fn check_select(&self, op: &'static str, domain: Domain, select: WeightSelect, types: usize) -> Result<(), IrError> {
        match select {
            WeightSelect::Shared if types != 1 => {
                Err(IrError::invalid(op, format!("a shared weight needs a leading axis of 1, found {types}")))
            }
            WeightSelect::Relation if !domain.has_relation() => {
                Err(IrError::invalid(op, format!("per-relation weights need edge or compact rows, not {domain}")))
            }
            WeightSelect::NodeType if domain != Domain::Node(None) => {
                Err(IrError::invalid(op, format!("per-node-type weights need rows over all nodes, not {domain}")))
            }
            WeightSelect::NodeType if types != self.p.node_types.len() => {
                Err(IrError::invalid(op, format!("{} node types but the weight has {types}", self.p.node_types.len())))
            }
            _ => Ok(()),
        }
    }

    /// `y = x @ W[sel]`, weight `[T, blocks, in/blocks, out/blocks]`.
    pub fn linear(&mut self, input: ValueId, weight: ParamId, select: WeightSelect, out: Shape) -> Result<ValueId, IrError> {
        const OP: &str = "linear";
        let i = self.check(OP, input)?.clone();
        let w = self.check_param(OP, weight)?.shape.clone();
        if w.len() != 4 {
            return Err(IrError::invalid(OP, format!("weight must be [types, blocks, in, out], found {w:?}")));
        }
        let (types, blocks, bin, bout) = (w[0], w[1], w[2], w[3]);
        if blocks * bin != i.shape.width() {
            return Err(IrError::invalid(
                OP,
                format!("input width {} does not match weight {w:?} ({blocks} blocks of {bin})", i.shape.width()),
            ));
        }
        if blocks * bout != out.width() {
            return Err(IrError::invalid(OP, format!("output {out} does not match weight {w:?}")));
        }
        self.check_select(OP, i.domain, select, types)?;
        Ok(self.push(Op::Linear { input, weight, select, out }, i.domain, out))
    }

    /// Rows read from a table `[T, M, width]`.
    pub fn embedding(
        &mut self,
        table: ParamId,
        select: WeightSelect,
        row: RowIndex,
        domain: Domain,
        out: Shape,
    ) -> Result<ValueId, IrError> {
        const OP: &str = "embedding";
        let t = self.check_param(OP, table)?.shape.clone();
        if t.len() != 3 || t[2] != out.width() {
            return Err(IrError::invalid(OP, format!("table must be [types, rows, {}], found {t:?}", out.width())));
        }
        self.check_select(OP, domain, select, t[0])?;
        match row {
            RowIndex::Zero if t[1] != 1 => return Err(IrError::invalid(OP, "a broadcast table needs exactly one row")),
            RowIndex::Src | RowIndex::Dst if !domain.has_relation() => {
                return Err(IrError::invalid(OP, format!("source/destination rows need edge or compact rows, not {domain}")))
            }
            RowIndex::Node if !matches!(domain, Domain::Node(_)) => {
                return Err(IrError::invalid(OP, format!("node rows need a node domain, not {domain}")))
            }
            _ => {}
        }
        if let Domain::Node(Some(nt)) = domain {
            self.check_node_type(OP, nt)?;
        }
        Ok(self.push(Op::Embedding { table, select, row, domain, out }, domain, out))
    }

    pub fn bias(&mut self, input: ValueId, bias: ParamId) -> Result<ValueId, IrError> {
        let i = self.check("bias", input)?.clone();
        let b = self.check_param("bias", bias)?;
        if b.numel() != i.shape.width() {
            return Err(IrError::invalid("bias", format!("bias {:?} does not match row width {}", b.shape, i.shape.width())));
        }
        Ok(self.push(Op::Bias { input, bias }, i.domain, i.shape))
    }

    pub fn scale(&mut self, input: ValueId, factor: f32) -> Result<ValueId, IrError> {
        let i = self.check("scale", input)?.clone();
        Ok(self.push(Op::Scale { input, factor }, i.domain, i.shape))
    }

    pub fn scale_by_param(&mut self, input: ValueId, factor: ParamId) -> Result<ValueId, IrError> {
        let i = self.check("scale_by", input)?.clone();
        if self.check_param("scale_by", factor)?.numel() != 1 {
            return Err(IrError::invalid("scale_by", "the factor must have exactly one element"));
        }
        Ok(self.push(Op::ScaleByParam { input, factor }, i.domain, i.shape))
    }

    pub fn unary(&mut self, input: ValueId, f: Activation) -> Result<ValueId, IrError> {
        let i = self.check("unary", input)?.clone();
        Ok(self.push(Op::Unary { input, f }, i.domain, i.shape))
    }

    pub fn binary(&mut self, lhs: ValueId, rhs: ValueId, f: BinaryFn) -> Result<ValueId, IrError> {
        const OP: &str = "binary";
        let a = self.check(OP, lhs)?.clone();
        let b = self.check(OP, rhs)?.clone();
        if a.domain != b.domain {
            return Err(IrError::invalid(OP, format!("operands on {} and {}", a.domain, b.domain)));
        }
        let fits = |x: usize, y: usize| y == x || y == 1;
        if !fits(a.shape.heads, b.shape.heads) || !fits(a.shape.dim, b.shape.dim) {
            return Err(IrError::invalid(OP, format!("right operand {} does not broadcast to {}", b.shape, a.shape)));
        }
        Ok(self.push(Op::Binary { lhs, rhs, f }, a.domain, a.shape))
    }

    pub fn add(&mut self, lhs: ValueId, rhs: ValueId) -> Result<ValueId, IrError> {
        self.binary(lhs, rhs, BinaryFn::Add)
    }

    pub fn mul(&mut self, lhs: ValueId, rhs: ValueId) -> Result<ValueId, IrError> {
        self.binary(lhs, rhs, BinaryFn::Mul)
    }

    pub fn head_dot(&mut self, lhs: ValueId, rhs: ValueId) -> Result<ValueId, IrError> {
        let a = self.check("head_dot", lhs)?.clone();
        let b = self.check("head_dot", rhs)?.clone();
        if a.domain != b.domain {
            return Err(IrError::invalid("head_dot", format!("operands on {} and {}", a.domain, b.domain)));
        }
        shape_eq("head_dot", "operands", a.shape, b.shape)?;
        Ok(self.push(Op::HeadDot { lhs, rhs }, a.domain, Shape::new(a.shape.heads, 1)))
    }

    pub fn head_outer(&mut self, lhs: ValueId, rhs: ValueId) -> Result<ValueId, IrError> {
        let a = self.check("head_outer", lhs)?.clone();
        let b = self.check("head_outer", rhs)?.clone();
        if a.domain != b.domain || a.shape.heads != b.shape.heads {
            return Err(IrError::invalid(
                "head_outer",
                format!("operands {} on {} and {} on {} need the same domain and heads", a.shape, a.domain, b.shape, b.domain),
            ));
        }
        Ok(self.push(Op::HeadOuter { lhs, rhs }, a.domain, Shape::new(a.shape.heads, a.shape.dim * b.shape.dim)))
    }

    pub fn head_mean(&mut self, input: ValueId) -> Result<ValueId, IrError> {
        let i = self.check("head_mean", input)?.clone();
        Ok(self.push(Op::HeadMean { input }, i.domain, Shape::flat(i.shape.dim)))
    }

    pub fn reshape(&mut self, input: ValueId, out: Shape) -> Result<ValueId, IrError> {
        let i = self.check("reshape", input)?.clone();
        if i.shape.width() != out.width() {
            return Err(IrError::invalid("reshape", format!("cannot read {} as {out}", i.shape)));
        }
        Ok(self.push(Op::Reshape { input, out }, i.domain, out))
    }

    pub fn slice(&mut self, input: ValueId, start: usize, len: usize) -> Result<ValueId, IrError> {
        let i = self.check("slice", input)?.clone();
        if i.shape.heads != 1 || start + len > i.shape.dim || len == 0 {
            return Err(IrError::invalid("slice", format!("columns {start}..{} of {}", start + len, i.shape)));
        }
        Ok(self.push(Op::Slice { input, start, len }, i.domain, Shape::flat(len)))
    }

    pub fn edge_softmax(&mut self, input: ValueId, group: SoftmaxGroup) -> Result<ValueId, IrError> {
        let i = self.check("edge_softmax", input)?.clone();
        if i.domain != Domain::Edge {
            return Err(IrError::invalid("edge_softmax", format!("input is on {}, expected edge", i.domain)));
        }
        Ok(self.push(Op::EdgeSoftmax { input, group }, Domain::Edge, i.shape))
    }

    pub fn aggregate(&mut self, input: ValueId, reduce: Reduce, to: Domain) -> Result<ValueId, IrError> {
        let i = self.check("aggregate", input)?.clone();
        let ok = matches!(
            (i.domain, to, reduce),
            (Domain::Edge, Domain::Node(None), _)
                | (Domain::Edge, Domain::CompactDstRel, _)
                | (Domain::CompactDstRel, Domain::Node(None), Reduce::Sum)
        );
        if !ok {
            return Err(IrError::invalid("aggregate", format!("{reduce:?} from {} to {to} is not defined", i.domain)));
        }
        Ok(self.push(Op::Aggregate { input, reduce, to }, to, i.shape))
    }

    pub fn gated_skip(&mut self, update: ValueId, residual: ValueId, gate: ParamId) -> Result<ValueId, IrError> {
        const OP: &str = "gated_skip";
        let a = self.check(OP, update)?.clone();
        let b = self.check(OP, residual)?.clone();
        if a.domain != b.domain {
            return Err(IrError::invalid(OP, format!("operands on {} and {}", a.domain, b.domain)));
        }
        if a.shape.width() != b.shape.width() {
            return Err(IrError::invalid(OP, format!("widths {} and {} differ", a.shape, b.shape)));
        }
        if self.check_param(OP, gate)?.numel() != 1 {
            return Err(IrError::invalid(OP, "the gate must have exactly one element"));
        }
        Ok(self.push(Op::GatedSkip { update, residual, gate }, a.domain, a.shape))
    }

    pub fn norm(&mut self, input: ValueId, kind: NormKind, weight: Option<ParamId>, bias: Option<ParamId>) -> Result<ValueId, IrError> {
        const OP: &str = "norm";
        let i = self.check(OP, input)?.clone();
        for p in weight.iter().chain(bias.iter()) {
            let n = self.check_param(OP, *p)?.numel();
            if n != i.shape.width() {
                return Err(IrError::invalid(OP, format!("parameter of {n} elements for rows of width {}", i.shape.width())));
            }
        }
        Ok(self.push(Op::Norm { input, kind, weight, bias }, i.domain, i.shape))
    }

    pub fn concat_node_types(&mut self, parts: Vec<(NodeTypeId, ValueId)>) -> Result<ValueId, IrError> {
        const OP: &str = "concat_node_types";
        let mut shape = None;
        for (t, v) in &parts {
            self.check_node_type(OP, *t)?;
            let i = self.check(OP, *v)?;
            if i.domain != Domain::Node(Some(*t)) {
                return Err(IrError::invalid(OP, format!("part for node#{} is on {}", t.0, i.domain)));
            }
            if *shape.get_or_insert(i.shape) != i.shape {
                return Err(IrError::invalid(OP, format!("parts of shapes {} and {}", shape.unwrap(), i.shape)));
            }
        }
        let shape = shape.ok_or_else(|| IrError::invalid(OP, "no parts"))?;
        Ok(self.push(Op::ConcatNodeTypes { parts }, Domain::Node(None), shape))
    }

    pub fn select_node_type(&mut self, input: ValueId, node_type: NodeTypeId) -> Result<ValueId, IrError> {
        self.check_node_type("select_node_type", node_type)?;
        let i = self.check("select_node_type", input)?.clone();
        if i.domain != Domain::Node(None) {
            return Err(IrError::invalid("select_node_type", format!("input is on {}, expected node", i.domain)));
        }
        Ok(self.push(Op::SelectNodeType { input, node_type }, Domain::Node(Some(node_type)), i.shape))
    }

    fn pair_input(&self, op: &'static str, v: ValueId) -> Result<ValueInfo, IrError> {
        let i = self.check(op, v)?.clone();
        if i.domain != Domain::Pair {
            return Err(IrError::invalid(op, format!("input is on {}, expected pair", i.domain)));
        }
        Ok(i)
    }

    pub fn pair_transpose(&mut self, input: ValueId) -> Result<ValueId, IrError> {
        let i = self.pair_input("pair_transpose", input)?;
        Ok(self.push(Op::PairTranspose { input }, Domain::Pair, i.shape))
    }

    pub fn pair_mask(&mut self, input: ValueId) -> Result<ValueId, IrError> {
        let i = self.pair_input("pair_mask", input)?;
        Ok(self.push(Op::PairMask { input }, Domain::Pair, i.shape))
    }

    pub fn pivot_attention(
        &mut self,
        q: ValueId,
        k_ij: ValueId,
        k_jk: ValueId,
        v_ij: ValueId,
        v_jk: ValueId,
        scale: f32,
    ) -> Result<ValueId, IrError> {
        const OP: &str = "pivot_attention";
        let s = self.pair_input(OP, q)?.shape;
        for v in [k_ij, k_jk, v_ij, v_jk] {
            shape_eq(OP, "operands", s, self.pair_input(OP, v)?.shape)?;
        }
        Ok(self.push(Op::PivotAttention { q, k_ij, k_jk, v_ij, v_jk, scale }, Domain::Pair, s))
    }

    /// A builder holding `program`'s parameters (same ids) and node types, and no values: the
    /// starting point of a rewrite.
    pub fn with_params_of(program: &Program) -> Self {
        let mut b = ProgramBuilder::new();
        b.p.params = program.params.clone();
        b.p.node_types = program.node_types.clone();
        b
    }

    /// Add any operator (its operands already in this builder), with the same validation as the
    /// operator's own method.
    pub fn push_op(&mut self, op: &Op) -> Result<ValueId, IrError> {
        match op.clone() {
            Op::Input { name } => Err(IrError::invalid("push_op", format!("input {name:?} needs a domain; use `input`"))),
            Op::Gather { input, endpoint } => self.gather(input, endpoint),
            Op::CompactGather { input, endpoint } => self.compact_gather(input, endpoint),
            Op::EdgeFromCompact { input } => self.edge_from_compact(input),
            Op::Linear { input, weight, select, out } => self.linear(input, weight, select, out),
            Op::Embedding { table, select, row, domain, out } => self.embedding(table, select, row, domain, out),
            Op::Bias { input, bias } => self.bias(input, bias),
            Op::Scale { input, factor } => self.scale(input, factor),
            Op::ScaleByParam { input, factor } => self.scale_by_param(input, factor),
            Op::Unary { input, f } => self.unary(input, f),
            Op::Binary { lhs, rhs, f } => self.binary(lhs, rhs, f),
            Op::HeadDot { lhs, rhs } => self.head_dot(lhs, rhs),
            Op::HeadOuter { lhs, rhs } => self.head_outer(lhs, rhs),
            Op::HeadMean { input } => self.head_mean(input),
            Op::Reshape { input, out } => self.reshape(input, out),
            Op::Slice { input, start, len } => self.slice(input, start, len),
            Op::EdgeSoftmax { input, group } => self.edge_softmax(input, group),
            Op::Aggregate { input, reduce, to } => self.aggregate(input, reduce, to),
            Op::GatedSkip { update, residual, gate } => self.gated_skip(update, residual, gate),
            Op::Norm { input, kind, weight, bias } => self.norm(input, kind, weight, bias),
            Op::ConcatNodeTypes { parts } => self.concat_node_types(parts),
            Op::SelectNodeType { input, node_type } => self.select_node_type(input, node_type),
            Op::PairTranspose { input } => self.pair_transpose(input),
            Op::PivotAttention { q, k_ij, k_jk, v_ij, v_jk, scale } => self.pivot_attention(q, k_ij, k_jk, v_ij, v_jk, scale),
            Op::PairMask { input } => self.pair_mask(input),
        }
    }

    /// Mark a value as a named program output.
    pub fn output(&mut self, name: &str, v: ValueId) -> Result<(), IrError> {
        self.check("output", v)?;
        if self.p.outputs.iter().any(|(n, _)| n == name) {
            return Err(IrError::DuplicateOutput(name.to_string()));
        }
        self.p.outputs.push((name.to_string(), v));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_input(b: &mut ProgramBuilder, width: usize) -> ValueId {
        b.input("x", Domain::Node(None), Shape::flat(width)).unwrap()
    }

    #[test]
    fn linear_checks_input_and_output_widths() {
        let mut b = ProgramBuilder::new();
        let x = node_input(&mut b, 4);
        let w = b.load_param("w", &[1, 1, 4, 6]).unwrap();
        assert!(b.linear(x, w, WeightSelect::Shared, Shape::flat(6)).is_ok());
        let err = b.linear(x, w, WeightSelect::Shared, Shape::flat(5)).unwrap_err().to_string();
        assert!(err.contains("output 1x5 does not match weight [1, 1, 4, 6]"), "{err}");
        let y = node_input(&mut b, 3);
        let err = b.linear(y, w, WeightSelect::Shared, Shape::flat(6)).unwrap_err().to_string();
        assert!(err.contains("input width 3"), "{err}");
    }

    #[test]
    fn per_relation_weights_need_relation_rows() {
        let mut b = ProgramBuilder::new();
        let x = node_input(&mut b, 2);
        let w = b.load_param("w", &[3, 1, 2, 2]).unwrap();
        let err = b.linear(x, w, WeightSelect::Relation, Shape::flat(2)).unwrap_err().to_string();
        assert!(err.contains("per-relation weights need edge or compact rows, not node"), "{err}");
        let e = b.gather(x, Endpoint::Src).unwrap();
        let m = b.linear(e, w, WeightSelect::Relation, Shape::flat(2)).unwrap();
        assert_eq!(b.info(m).domain, Domain::Edge);
        let err = b.linear(e, w, WeightSelect::Shared, Shape::flat(2)).unwrap_err().to_string();
        assert!(err.contains("shared weight needs a leading axis of 1"), "{err}");
    }

    #[test]
    fn block_diagonal_weights() {
        let mut b = ProgramBuilder::new();
        let x = b.input("x", Domain::Node(None), Shape::new(4, 2)).unwrap();
        let w = b.load_param("w", &[1, 4, 2, 3]).unwrap();
        let y = b.linear(x, w, WeightSelect::Shared, Shape::new(4, 3)).unwrap();
        assert_eq!(b.info(y).shape.width(), 12);
    }

    #[test]
    fn domains_must_agree() {
        let mut b = ProgramBuilder::new();
        let x = node_input(&mut b, 2);
        let e = b.gather(x, Endpoint::Dst).unwrap();
        assert!(b.add(x, e).unwrap_err().to_string().contains("operands on node and edge"));
        assert!(b.gather(e, Endpoint::Src).unwrap_err().to_string().contains("expected node"));
        assert!(b.edge_softmax(x, SoftmaxGroup::Dst).is_err());
        assert!(b.aggregate(x, Reduce::Sum, Domain::Node(None)).is_err());
        assert!(b.pair_transpose(x).unwrap_err().to_string().contains("expected pair"));
    }

    #[test]
    fn broadcasting_is_per_head_or_per_row() {
        let mut b = ProgramBuilder::new();
        let x = b.input("x", Domain::Pair, Shape::new(2, 3)).unwrap();
        let s = b.input("s", Domain::Pair, Shape::new(2, 1)).unwrap();
        let t = b.input("t", Domain::Pair, Shape::new(3, 1)).unwrap();
        assert!(b.mul(x, s).is_ok());
        assert!(b.mul(x, t).unwrap_err().to_string().contains("does not broadcast"));
    }

    #[test]
    fn param_algebra_shapes() {
        let mut b = ProgramBuilder::new();
        let bases = b.load_param("bases", &[2, 3, 4]).unwrap();
        let coeff = b.load_param("coeff", &[5, 2]).unwrap();
        let w = b.basis_compose(coeff, bases).unwrap();
        assert_eq!(b.param_shape(w), &[5, 3, 4]);
        let bad = b.load_param("bad", &[5, 3]).unwrap();
        assert!(b.basis_compose(bad, bases).is_err());
        let p = b.permute_param(w, &[2, 0, 1]).unwrap();
        assert_eq!(b.param_shape(p), &[4, 5, 3]);
        assert!(b.permute_param(w, &[0, 0, 1]).is_err());
        assert!(b.reshape_param(w, &[7]).is_err());
        let s = b.stack_params(&[coeff, coeff]).unwrap();
        assert_eq!(b.param_shape(s), &[2, 5, 2]);
    }

    #[test]
    fn outputs_are_unique_and_printed() {
        let mut b = ProgramBuilder::new();
        let x = node_input(&mut b, 2);
        let y = b.unary(x, Activation::Gelu).unwrap();
        b.output("out", y).unwrap();
        assert_eq!(b.output("out", x).unwrap_err(), IrError::DuplicateOutput("out".into()));
        let text = b.finish().to_text();
        assert!(text.contains("%1 = unary gelu x : node[1x2]"), "{text}");
        assert!(text.contains("out = %1"), "{text}");
    }

    #[test]
    fn node_types_must_be_declared() {
        let mut b = ProgramBuilder::new();
        assert!(b.input("x.a", Domain::Node(Some(NodeTypeId(0))), Shape::flat(2)).is_err());
        b.set_node_types(vec!["a".into(), "b".into()]);
        let a = b.input("x.a", Domain::Node(Some(NodeTypeId(0))), Shape::flat(2)).unwrap();
        let all = b.concat_node_types(vec![(NodeTypeId(0), a)]).unwrap();
        assert_eq!(b.info(all).domain, Domain::Node(None));
        let back = b.select_node_type(all, NodeTypeId(1)).unwrap();
        assert_eq!(b.info(back).domain, Domain::Node(Some(NodeTypeId(1))));
    }
}
