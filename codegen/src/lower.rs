//! Lowering: an (optimised) level-1 program → a level-2 kernel program.
//!
//! 1. Decide materialisation: graph inputs, outputs, and the results of template operators
//!    (linears → GEMM, aggregations → traversal, pivot attention) are stored, as is any
//!    node/pair value read twice; edge values are never stored (they are recomputed inside the
//!    traversal that reduces them, gathers and softmax included); everything else is fused
//!    into the kernel that reads it.
//! 2. One kernel per stored value, its row programs built by expanding fused operands through
//!    index maps (an edge reads its source's row, a compact row its node's row, ...).
//! 3. Epilogue fusion: row-local glue that only post-processes a GEMM's or traversal's result
//!    (bias, activation, residual, norm, gated skip) moves into that kernel's epilogue.

use rgnn_ir::level2::*;
use rgnn_ir::{Domain, Endpoint, Op, Program, Reduce, ValueId};
use std::collections::HashMap;

/// Why a program could not be lowered (the caller falls back to the level-1 interpreter).
#[derive(Debug, Clone, PartialEq)]
pub struct Unsupported(pub String);

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "not lowered to kernels: {}", self.0)
    }
}

fn unsupported<T>(message: impl Into<String>) -> Result<T, Unsupported> {
    Err(Unsupported(message.into()))
}

struct Lowering<'p> {
    options: LowerOptions,
    p: &'p Program,
    uses: Vec<usize>,
    stored: Vec<bool>,
    /// Edge → compact (destination, relation) aggregations fused into the traversal that sums
    /// them per node.
    fused_segments: Vec<bool>,
    buffers: Vec<Buffer>,
    buffer_of: HashMap<ValueId, BufferId>,
    kernels: Vec<Kernel>,
}

/// Lower `program` to kernels.
pub fn lower(program: &Program) -> Result<KernelProgram, Unsupported> {
    lower_with(program, LowerOptions::default())
}

/// Schedule choices of the lowering (all on by default; switched off to test the alternatives).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LowerOptions {
    /// Attention traversals in one pass with an online softmax where the pattern allows.
    pub online_softmax: bool,
}

impl Default for LowerOptions {
    fn default() -> Self {
        LowerOptions { online_softmax: true }
    }
}

/// Softmax columns (heads × dims) an online-softmax traversal keeps running statistics for.
pub const MAX_ONLINE_SOFTMAX_COLUMNS: usize = 64;

/// Lower `program` to kernels.
pub fn lower_with(program: &Program, options: LowerOptions) -> Result<KernelProgram, Unsupported> {
    let n = program.ops().len();
    let mut l = Lowering {
        options,
        p: program,
        uses: vec![0; n],
        stored: vec![false; n],
        fused_segments: vec![false; n],
        buffers: vec![],
        buffer_of: HashMap::new(),
        kernels: vec![],
    };
    for op in program.ops() {
        for v in op.inputs() {
            l.uses[v.0] += 1;
        }
    }
    l.decide_storage()?;
    for i in 0..n {
        if l.stored[i] {
            l.emit(ValueId(i))?;
        }
    }
    let mut kp = KernelProgram {
        params: program.params().to_vec(),
        buffers: l.buffers,
        kernels: l.kernels,
        outputs: vec![],
        materialization: vec![],
        node_types: program.node_types().to_vec(),
        compaction: vec![],
    };
    for (name, v) in program.outputs() {
        let b = l.buffer_of[v];
        kp.buffers[b.0].role = BufferRole::Output(name.clone());
        kp.buffers[b.0].name = name.clone();
        kp.outputs.push((name.clone(), b));
    }
    fuse_epilogues(&mut kp);
    set_lifetimes(&mut kp);
    kp.materialization = (0..n)
        .map(|i| match kp.buffers.iter().position(|b| b.value == ValueId(i)) {
            Some(b) => Materialization::Stored(BufferId(b)),
            None if l.uses[i] > 0 || program.outputs().iter().any(|(_, v)| v.0 == i) => Materialization::Fused,
            None => Materialization::Unused,
        })
        .collect();
    Ok(kp)
}

impl Lowering<'_> {
    fn decide_storage(&mut self) -> Result<(), Unsupported> {
        let p = self.p;
        for (_, v) in p.outputs() {
            if p.value(*v).domain == Domain::Edge {
                return unsupported("an output on edges");
            }
            self.stored[v.0] = true;
        }
        for (i, op) in p.ops().iter().enumerate() {
            let domain = p.values()[i].domain;
            self.stored[i] |= match op {
                Op::Input { .. } | Op::Linear { .. } | Op::PivotAttention { .. } | Op::ConcatNodeTypes { .. } => true,
                Op::Aggregate { .. } => true,
                _ => domain != Domain::Edge && self.uses[i] >= 2,
            };
            // Pivot operands are column ranges of stored buffers.
            if let Op::PivotAttention { q, k_ij, k_jk, v_ij, v_jk, .. } = op {
                for v in [q, k_ij, k_jk, v_ij, v_jk] {
                    let (base, _) = self.column_base(*v);
                    self.stored[base.0] = true;
                }
            }
        }
        // A per-(destination, relation) aggregate read only by a per-node sum is fused into one
        // traversal (reduce per relation segment, then sum the segments).
        for (i, op) in p.ops().iter().enumerate() {
            if let Op::Aggregate { input, reduce: Reduce::Sum, to: Domain::Node(None) } = op {
                if let Op::Aggregate { input: inner, to: Domain::CompactDstRel, .. } = p.op(*input) {
                    if self.uses[input.0] == 1 && p.value(*inner).domain == Domain::Edge && !p.outputs().iter().any(|(_, o)| o == input) {
                        self.stored[input.0] = false;
                        self.fused_segments[input.0] = true;
                    }
                }
                let _ = i;
            }
        }
        // Edge values are stored only when a template produces them (a GEMM per edge, when the
        // linears were not moved before their gathers); other edge values are recomputed inside
        // each traversal that reads them.
        for (i, op) in p.ops().iter().enumerate() {
            if p.values()[i].domain == Domain::Edge && !matches!(op, Op::Linear { .. }) {
                self.stored[i] = false;
            }
        }
        Ok(())
    }

    /// Follow reshapes and column slices down to the value that holds the numbers.
    fn column_base(&self, v: ValueId) -> (ValueId, usize) {
        match self.p.op(v) {
            Op::Reshape { input, .. } if !self.stored[v.0] => self.column_base(*input),
            Op::Slice { input, start, .. } if !self.stored[v.0] => {
                let (b, s) = self.column_base(*input);
                (b, s + start)
            }
            _ => (v, 0),
        }
    }

    fn new_buffer(&mut self, v: ValueId) -> BufferId {
        let info = self.p.value(v);
        let role = match self.p.op(v) {
            Op::Input { name } => BufferRole::Input(name.clone()),
            _ => BufferRole::Intermediate,
        };
        let id = BufferId(self.buffers.len());
        let name = if info.name.starts_with('%') { format!("b{}", id.0) } else { info.name.clone() };
        self.buffers.push(Buffer {
            name,
            domain: info.domain,
            width: info.shape.width(),
            dtype: DType::F32,
            role,
            value: v,
            lifetime: (0, 0),
        });
        self.buffer_of.insert(v, id);
        id
    }

    fn emit(&mut self, v: ValueId) -> Result<(), Unsupported> {
        let out = self.new_buffer(v);
        let info = self.p.value(v).clone();
        let kernel = match self.p.op(v).clone() {
            Op::Input { .. } => return Ok(()),
            Op::Linear { input, weight, select, .. } => {
                let mut prog = RowProgram::default();
                let mut memo = HashMap::new();
                self.expand(input, RowRef::Own, &mut prog, &mut memo)?;
                let mut epilogue = RowProgram::default();
                epilogue.push(RowOp::Acc, info.shape.width());
                Kernel::Gemm(GemmKernel { domain: info.domain, input: prog, weight, select, epilogue, output: out })
            }
            Op::Aggregate { input, reduce, to } => {
                let from = self.p.value(input).domain;
                let (edge_value, reduce, per_relation, over_segments) = match (from, to) {
                    (Domain::Edge, _) => (input, reduce, to == Domain::CompactDstRel, false),
                    (Domain::CompactDstRel, Domain::Node(None)) if self.fused_segments[input.0] => {
                        let Op::Aggregate { input: inner, reduce: r, .. } = *self.p.op(input) else { unreachable!() };
                        (inner, r, true, false)
                    }
                    (Domain::CompactDstRel, Domain::Node(None)) => (input, Reduce::Sum, false, true),
                    _ => return unsupported(format!("aggregation from {from} to {to}")),
                };
                let mut edge = RowProgram::default();
                let mut memo = HashMap::new();
                self.expand(edge_value, RowRef::Own, &mut edge, &mut memo)?;
                let softmaxes = edge.ops.iter().filter(|o| matches!(o, RowOp::Softmax { .. })).count();
                if softmaxes > 1 {
                    return unsupported("two edge softmaxes in one aggregation");
                }
                let mut epilogue = RowProgram::default();
                epilogue.push(RowOp::Acc, info.shape.width());
                let online_softmax = self.options.online_softmax
                    && reduce == Reduce::Sum
                    && !per_relation
                    && !over_segments
                    && to == Domain::Node(None)
                    && edge.softmax_weighting().is_some_and(|(si, _)| match edge.ops[si] {
                        RowOp::Softmax { x, .. } => edge.widths[x] <= MAX_ONLINE_SOFTMAX_COLUMNS,
                        _ => false,
                    });
                Kernel::Traversal(TraversalKernel {
                    edge,
                    reduce,
                    per_relation,
                    domain: to,
                    over_segments,
                    online_softmax,
                    epilogue,
                    output: out,
                })
            }
            Op::PivotAttention { q, k_ij, k_jk, v_ij, v_jk, scale } => {
                let mut operands = [(BufferId(0), 0); 5];
                for (slot, v) in operands.iter_mut().zip([q, k_ij, k_jk, v_ij, v_jk]) {
                    let (base, col) = self.column_base(v);
                    *slot = (self.buffer_of[&base], col);
                }
                Kernel::PivotAttention(PivotKernel { operands, shape: info.shape, scale, output: out })
            }
            Op::ConcatNodeTypes { parts } => {
                for (t, part) in parts {
                    let mut prog = RowProgram::default();
                    let mut memo = HashMap::new();
                    self.expand(part, RowRef::Own, &mut prog, &mut memo)?;
                    self.kernels.push(Kernel::Map(MapKernel {
                        domain: Domain::Node(Some(t)),
                        program: prog,
                        output: out,
                        output_at: RowRef::TypedToGlobal,
                    }));
                }
                return Ok(());
            }
            _ => {
                // Row-local value stored because it is read twice or is an output.
                let mut prog = RowProgram::default();
                let mut memo = HashMap::new();
                self.expand_op(v, RowRef::Own, &mut prog, &mut memo)?;
                Kernel::Map(MapKernel { domain: info.domain, program: prog, output: out, output_at: RowRef::Own })
            }
        };
        self.kernels.push(kernel);
        Ok(())
    }

    /// The slot holding value `v` at row `at` (relative to the kernel's current row).
    fn expand(
        &self,
        v: ValueId,
        at: RowRef,
        prog: &mut RowProgram,
        memo: &mut HashMap<(ValueId, RowRef), usize>,
    ) -> Result<usize, Unsupported> {
        if let Some(&s) = memo.get(&(v, at)) {
            return Ok(s);
        }
        let s = if self.stored[v.0] {
            let buffer =
                *self.buffer_of.get(&v).ok_or_else(|| Unsupported(format!("{} is read before it is computed", self.p.value(v).name)))?;
            prog.push(RowOp::Load { buffer, at }, self.p.value(v).shape.width())
        } else {
            self.expand_op(v, at, prog, memo)?
        };
        memo.insert((v, at), s);
        Ok(s)
    }

    /// Expand the operator defining `v` (its operands through `expand`).
    fn expand_op(
        &self,
        v: ValueId,
        at: RowRef,
        prog: &mut RowProgram,
        memo: &mut HashMap<(ValueId, RowRef), usize>,
    ) -> Result<usize, Unsupported> {
        let width = self.p.value(v).shape.width();
        let shape_of = |x: ValueId| self.p.value(x).shape;
        let own = |what: &str| if at == RowRef::Own { Ok(()) } else { unsupported(format!("{what} read through {at:?}")) };
        Ok(match self.p.op(v).clone() {
            Op::Reshape { input, .. } => self.expand(input, at, prog, memo)?,
            Op::Gather { input, endpoint } => {
                own("gather")?;
                self.expand(input, if endpoint == Endpoint::Src { RowRef::EdgeSrc } else { RowRef::EdgeDst }, prog, memo)?
            }
            Op::EdgeFromCompact { input } => {
                own("edge_from_compact")?;
                let to = if self.p.value(input).domain == Domain::CompactSrcRel { RowRef::EdgeCompactSrc } else { RowRef::EdgeCompactDst };
                self.expand(input, to, prog, memo)?
            }
            Op::CompactGather { input, endpoint } => {
                let to = match (at, endpoint) {
                    (RowRef::Own, _) => RowRef::CompactNode,
                    (RowRef::EdgeCompactSrc, Endpoint::Src) => RowRef::EdgeSrc,
                    (RowRef::EdgeCompactDst, Endpoint::Dst) => RowRef::EdgeDst,
                    _ => return unsupported(format!("compact gather read through {at:?}")),
                };
                self.expand(input, to, prog, memo)?
            }
            Op::SelectNodeType { input, .. } => {
                own("select_node_type")?;
                self.expand(input, RowRef::TypedToGlobal, prog, memo)?
            }
            Op::PairTranspose { input } => {
                let to = match at {
                    RowRef::Own => RowRef::PairTranspose,
                    RowRef::PairTranspose => RowRef::Own,
                    _ => return unsupported("pair transpose through another index map"),
                };
                self.expand(input, to, prog, memo)?
            }
            Op::Embedding { table, select, row, .. } => {
                own("embedding")?;
                prog.push(RowOp::Param { table, select, row }, width)
            }
            Op::Bias { input, bias } => {
                let x = self.expand(input, at, prog, memo)?;
                prog.push(RowOp::Bias { x, bias }, width)
            }
            Op::Scale { input, factor } => {
                let x = self.expand(input, at, prog, memo)?;
                prog.push(RowOp::Scale { x, factor }, width)
            }
            Op::ScaleByParam { input, factor } => {
                let x = self.expand(input, at, prog, memo)?;
                prog.push(RowOp::ScaleByParam { x, factor }, width)
            }
            Op::Unary { input, f } => {
                let x = self.expand(input, at, prog, memo)?;
                prog.push(RowOp::Unary { x, f }, width)
            }
            Op::Binary { lhs, rhs, f } => {
                let a = self.expand(lhs, at, prog, memo)?;
                let b = self.expand(rhs, at, prog, memo)?;
                prog.push(RowOp::Binary { a, b, f, a_shape: shape_of(lhs), b_shape: shape_of(rhs) }, width)
            }
            Op::HeadDot { lhs, rhs } => {
                let a = self.expand(lhs, at, prog, memo)?;
                let b = self.expand(rhs, at, prog, memo)?;
                prog.push(RowOp::HeadDot { a, b, shape: shape_of(lhs) }, width)
            }
            Op::HeadOuter { lhs, rhs } => {
                let a = self.expand(lhs, at, prog, memo)?;
                let b = self.expand(rhs, at, prog, memo)?;
                prog.push(RowOp::HeadOuter { a, b, a_shape: shape_of(lhs), b_shape: shape_of(rhs) }, width)
            }
            Op::HeadMean { input } => {
                let x = self.expand(input, at, prog, memo)?;
                prog.push(RowOp::HeadMean { x, shape: shape_of(input) }, width)
            }
            Op::Slice { input, start, len } => {
                let x = self.expand(input, at, prog, memo)?;
                prog.push(RowOp::Slice { x, start, len }, width)
            }
            Op::Norm { input, kind, weight, bias } => {
                let x = self.expand(input, at, prog, memo)?;
                prog.push(RowOp::Norm { x, kind, weight, bias }, width)
            }
            Op::GatedSkip { update, residual, gate } => {
                let u = self.expand(update, at, prog, memo)?;
                let r = self.expand(residual, at, prog, memo)?;
                prog.push(RowOp::GatedSkip { update: u, residual: r, gate }, width)
            }
            Op::PairMask { input } => {
                own("pair_mask")?;
                let x = self.expand(input, at, prog, memo)?;
                prog.push(RowOp::PairMask { x }, width)
            }
            Op::EdgeSoftmax { input, group } => {
                own("edge_softmax")?;
                let x = self.expand(input, at, prog, memo)?;
                prog.push(RowOp::Softmax { x, group }, width)
            }
            Op::Input { .. } | Op::Linear { .. } | Op::Aggregate { .. } | Op::PivotAttention { .. } | Op::ConcatNodeTypes { .. } => {
                return unsupported(format!("{} is not stored", self.p.value(v).name))
            }
        })
    }
}

/// Append `glue` to the epilogue `prefix`, its loads of `b` at its own row redirected to the slot
/// holding the producer's result.
fn splice_epilogue(prefix: &RowProgram, glue: &RowProgram, b: BufferId) -> RowProgram {
    // The producer's epilogue computes its stored row in its last slot; the glue reads that row
    // through `Load b @Own`. Append the glue with those loads redirected to that slot.
    let mut out = prefix.clone();
    let acc_slot = out.result();
    // map[s]: the slot of `out` that holds the glue's slot s.
    let mut map: Vec<usize> = vec![];
    for (op, w) in glue.ops.iter().zip(&glue.widths) {
        let slot = match op {
            RowOp::Load { buffer, at: RowRef::Own } if *buffer == b => acc_slot,
            op => out.push(op.map_slots(|s| map[s]), *w),
        };
        map.push(slot);
    }
    // The glue's result must be the program's result.
    let last = map[glue.result()];
    if last != out.result() {
        let w = out.widths[last];
        out.push(RowOp::Slice { x: last, start: 0, len: w }, w);
    }
    out
}

/// Move row-local glue into the epilogue of the GEMM or traversal whose result it reads, when that
/// result is read by nothing else and the glue's other loads exist by then.
fn fuse_epilogues(kp: &mut KernelProgram) {
    loop {
        let mut fused = false;
        for m in 0..kp.kernels.len() {
            let Kernel::Map(map) = &kp.kernels[m] else { continue };
            if map.output_at != RowRef::Own {
                continue;
            }
            // A producer whose row the glue reads: only at the glue's own row (its other rows do
            // not exist yet inside the producer), an intermediate of the same domain, written by a
            // GEMM or traversal and read by nothing else; the glue's other loads must exist before
            // that kernel runs.
            let mut candidates: Vec<BufferId> = map.program.loads().collect();
            candidates.sort();
            candidates.dedup();
            let fusable = |b: BufferId| -> Option<usize> {
                let only_own =
                    map.program.ops.iter().all(|o| !matches!(o, RowOp::Load { buffer, at } if *buffer == b && *at != RowRef::Own));
                if !only_own || kp.buffers[b.0].role != BufferRole::Intermediate || kp.buffers[b.0].domain != map.domain {
                    return None;
                }
                let k = kp.kernels.iter().position(|k| k.output() == b && matches!(k, Kernel::Gemm(_) | Kernel::Traversal(_)))?;
                let readers = kp.kernels.iter().filter(|kk| kk.reads().contains(&b)).count();
                let produced_before =
                    |x: BufferId| matches!(kp.buffers[x.0].role, BufferRole::Input(_)) || kp.kernels[..k].iter().any(|kk| kk.output() == x);
                (readers == 1 && map.program.loads().filter(|x| *x != b).all(produced_before)).then_some(k)
            };
            let Some((b, k)) = candidates.iter().find_map(|&b| fusable(b).map(|k| (b, k))) else { continue };
            let (glue, out) = (map.program.clone(), map.output);
            match &mut kp.kernels[k] {
                Kernel::Gemm(g) => {
                    g.epilogue = splice_epilogue(&g.epilogue, &glue, b);
                    g.output = out;
                }
                Kernel::Traversal(t) => {
                    t.epilogue = splice_epilogue(&t.epilogue, &glue, b);
                    t.output = out;
                }
                _ => unreachable!(),
            }
            kp.kernels.remove(m);
            // The producer's old buffer is now fused away.
            kp.buffers[b.0].role = BufferRole::Intermediate;
            kp.buffers[b.0].lifetime = (usize::MAX, usize::MAX);
            fused = true;
            break;
        }
        if !fused {
            break;
        }
    }
    // Drop buffers nobody writes any more (fused away), renumbering ids.
    let alive: Vec<bool> = (0..kp.buffers.len())
        .map(|i| matches!(kp.buffers[i].role, BufferRole::Input(_)) || kp.kernels.iter().any(|k| k.output() == BufferId(i)))
        .collect();
    let mut new_id = vec![usize::MAX; kp.buffers.len()];
    let mut kept = vec![];
    for (i, b) in kp.buffers.drain(..).enumerate() {
        if alive[i] {
            new_id[i] = kept.len();
            kept.push(b);
        }
    }
    kp.buffers = kept;
    let fix = |b: &mut BufferId| b.0 = new_id[b.0];
    for k in &mut kp.kernels {
        let progs: Vec<&mut RowProgram> = match k {
            Kernel::Gemm(g) => {
                fix(&mut g.output);
                vec![&mut g.input, &mut g.epilogue]
            }
            Kernel::Traversal(t) => {
                fix(&mut t.output);
                vec![&mut t.edge, &mut t.epilogue]
            }
            Kernel::Map(m) => {
                fix(&mut m.output);
                vec![&mut m.program]
            }
            Kernel::PivotAttention(p) => {
                fix(&mut p.output);
                p.operands.iter_mut().for_each(|(b, _)| fix(b));
                vec![]
            }
        };
        for prog in progs {
            for op in &mut prog.ops {
                if let RowOp::Load { buffer, .. } = op {
                    fix(buffer);
                }
            }
        }
    }
    for (_, b) in &mut kp.outputs {
        fix(b);
    }
}

/// Each buffer lives from the kernel that writes it (inputs: 0) to the last kernel that reads
/// it (outputs: the last kernel).
fn set_lifetimes(kp: &mut KernelProgram) {
    let last = kp.kernels.len().saturating_sub(1);
    for (i, b) in kp.buffers.iter_mut().enumerate() {
        let id = BufferId(i);
        let first = kp.kernels.iter().position(|k| k.output() == id).unwrap_or(0);
        let first = if matches!(b.role, BufferRole::Input(_)) { 0 } else { first };
        let mut end = kp.kernels.iter().rposition(|k| k.reads().contains(&id) || k.output() == id).unwrap_or(first);
        if matches!(b.role, BufferRole::Output(_)) {
            end = last;
        }
        b.lifetime = (first, end.max(first));
    }
}
