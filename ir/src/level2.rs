//! Level 2: how a level-1 program runs on a graph — which values are stored (and in which
//! buffer, dtype, lifetime), which are fused away, and the kernels that compute them, each an
//! instance of one of the templates (grouped GEMM, destination-parallel traversal, pivot
//! attention) or row-local glue ("map").
//!
//! Fused computation inside a kernel is a [`RowProgram`]: a straight-line list of row-local
//! operators over slots, whose loads name a buffer and how the kernel's current row reaches the
//! buffer's row ([`RowRef`]). The CPU templates interpret row programs; the WGSL and CUDA
//! generators compile them into straight-line code (`rgnn_kernels::source`).

use crate::{Activation, BinaryFn, Domain, NormKind, ParamDef, ParamId, Reduce, RowIndex, Shape, SoftmaxGroup, ValueId, WeightSelect};
use std::fmt::Write;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BufferId(pub usize);

/// Storage type of a buffer (arithmetic is f32 whatever the storage).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DType {
    #[default]
    F32,
    F16,
    BF16,
}

impl DType {
    pub fn bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum BufferRole {
    /// A graph input, by name (`x`, `x.<type>`, `pair`).
    Input(String),
    Intermediate,
    /// A program output, by name.
    Output(String),
}

/// A stored tensor: one row of `width` numbers per row of `domain`.
#[derive(Clone, Debug, PartialEq)]
pub struct Buffer {
    pub name: String,
    pub domain: Domain,
    pub width: usize,
    pub dtype: DType,
    pub role: BufferRole,
    /// The level-1 value it holds.
    pub value: ValueId,
    /// First and last kernel that touch it (inputs start at 0, outputs end at the last kernel).
    pub lifetime: (usize, usize),
}

/// How a level-1 value is materialised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Materialization {
    /// Stored, one row per row of its domain.
    Stored(BufferId),
    /// Recomputed inside the kernel(s) that read it; never stored.
    Fused,
    /// Not needed (removed by the passes or unused).
    Unused,
}

/// How a kernel's current row reaches the row of a buffer it loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RowRef {
    /// The same row (same domain).
    Own,
    /// From an edge: its source / destination node.
    EdgeSrc,
    EdgeDst,
    /// From an edge: its (source, relation) / (destination, relation) compact row.
    EdgeCompactSrc,
    EdgeCompactDst,
    /// From a compact row: its node.
    CompactNode,
    /// From a pair (b, i, k): the pair (b, k, i).
    PairTranspose,
    /// From a row of a node type: the same node in a value over all nodes.
    TypedToGlobal,
}

/// One row-local operator of a [`RowProgram`]; each defines the next slot.
#[derive(Clone, Debug, PartialEq)]
pub enum RowOp {
    /// A buffer row.
    Load {
        buffer: BufferId,
        at: RowRef,
    },
    /// The kernel's main result (a GEMM's product row, a traversal's aggregate).
    Acc,
    /// A row of a parameter table `[T, M, width]` (type by `select`, row by `row`).
    Param {
        table: ParamId,
        select: WeightSelect,
        row: RowIndex,
    },
    Unary {
        x: usize,
        f: Activation,
    },
    Binary {
        a: usize,
        b: usize,
        f: BinaryFn,
        a_shape: Shape,
        b_shape: Shape,
    },
    Bias {
        x: usize,
        bias: ParamId,
    },
    Scale {
        x: usize,
        factor: f32,
    },
    ScaleByParam {
        x: usize,
        factor: ParamId,
    },
    HeadDot {
        a: usize,
        b: usize,
        shape: Shape,
    },
    HeadOuter {
        a: usize,
        b: usize,
        a_shape: Shape,
        b_shape: Shape,
    },
    HeadMean {
        x: usize,
        shape: Shape,
    },
    Slice {
        x: usize,
        start: usize,
        len: usize,
    },
    Norm {
        x: usize,
        kind: NormKind,
        weight: Option<ParamId>,
        bias: Option<ParamId>,
    },
    GatedSkip {
        update: usize,
        residual: usize,
        gate: ParamId,
    },
    /// Multiply by the pair mask of the current pair row.
    PairMask {
        x: usize,
    },
    /// Inside a traversal: the edge softmax of slot `x` over `group` (computed by the template).
    Softmax {
        x: usize,
        group: SoftmaxGroup,
    },
}

/// A straight-line row program; slot `i` is defined by `ops[i]`, the result is the last slot.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct RowProgram {
    pub ops: Vec<RowOp>,
    /// Width of each slot.
    pub widths: Vec<usize>,
}

impl RowProgram {
    pub fn push(&mut self, op: RowOp, width: usize) -> usize {
        self.ops.push(op);
        self.widths.push(width);
        self.ops.len() - 1
    }
    pub fn result(&self) -> usize {
        self.ops.len() - 1
    }
    pub fn loads(&self) -> impl Iterator<Item = BufferId> + '_ {
        self.ops.iter().filter_map(|o| if let RowOp::Load { buffer, .. } = o { Some(*buffer) } else { None })
    }
    /// For an edge program whose result is `value ⊙ softmax` (the softmax used nowhere else and the
    /// value independent of it) — the shape of every attention message — the softmax column each
    /// result column is scaled by. Such traversals run in one pass with an online softmax.
    pub fn softmax_weighting(&self) -> Option<(usize, Vec<usize>)> {
        let prog = self;
        let si = prog.ops.iter().position(|o| matches!(o, RowOp::Softmax { .. }))?;
        let res = prog.result();
        // Slots that depend on the softmax.
        let mut dep = vec![false; prog.ops.len()];
        dep[si] = true;
        for (i, op) in prog.ops.iter().enumerate().skip(si + 1) {
            dep[i] = op.slots().iter().any(|&x| dep[x]);
            if dep[i] && i != res {
                return None;
            }
        }
        let cols = match &prog.ops[res] {
            RowOp::Binary { a, b, f: BinaryFn::Mul, a_shape, b_shape } if *b == si && !dep[*a] => (0..a_shape.width())
                .map(|i| {
                    let (h, c) = (i / a_shape.dim, i % a_shape.dim);
                    (if b_shape.heads == 1 { 0 } else { h }) * b_shape.dim + if b_shape.dim == 1 { 0 } else { c }
                })
                .collect(),
            RowOp::Binary { a, b, f: BinaryFn::Mul, a_shape, b_shape } if *a == si && !dep[*b] && a_shape == b_shape => {
                (0..a_shape.width()).collect()
            }
            RowOp::HeadOuter { a, b, a_shape, b_shape } if *a == si && !dep[*b] => {
                (0..a_shape.heads * a_shape.dim * b_shape.dim).map(|i| i / b_shape.dim).collect()
            }
            _ => return None,
        };
        Some((si, cols))
    }
}

impl RowOp {
    /// The same operator reading other slots (`f` gives each operand slot's replacement, called
    /// once per operand in operand order).
    pub fn map_slots(&self, mut f: impl FnMut(usize) -> usize) -> RowOp {
        let mut op = self.clone();
        match &mut op {
            RowOp::Load { .. } | RowOp::Acc | RowOp::Param { .. } => {}
            RowOp::Unary { x, .. }
            | RowOp::Bias { x, .. }
            | RowOp::Scale { x, .. }
            | RowOp::ScaleByParam { x, .. }
            | RowOp::HeadMean { x, .. }
            | RowOp::Slice { x, .. }
            | RowOp::Norm { x, .. }
            | RowOp::PairMask { x }
            | RowOp::Softmax { x, .. } => *x = f(*x),
            RowOp::Binary { a, b, .. } | RowOp::HeadDot { a, b, .. } | RowOp::HeadOuter { a, b, .. } => {
                *a = f(*a);
                *b = f(*b);
            }
            RowOp::GatedSkip { update, residual, .. } => {
                *update = f(*update);
                *residual = f(*residual);
            }
        }
        op
    }

    /// The slots this operator reads.
    pub fn slots(&self) -> Vec<usize> {
        let mut read = vec![];
        self.map_slots(|s| {
            read.push(s);
            s
        });
        read
    }
}

/// Grouped GEMM: for each row of `domain`, `out = epilogue(input_row @ W[type(row)])`.
#[derive(Clone, Debug, PartialEq)]
pub struct GemmKernel {
    pub domain: Domain,
    /// The input row (gathers and prologue ops fused in).
    pub input: RowProgram,
    /// `[T, blocks, in/blocks, out/blocks]`.
    pub weight: ParamId,
    pub select: WeightSelect,
    /// Applied to the product row (`Acc`) before the store.
    pub epilogue: RowProgram,
    pub output: BufferId,
}

/// Destination-parallel traversal over CSR-by-destination (relation-sorted segments): per
/// destination, evaluate `edge` for each in-edge (logits and softmax fused in), reduce, then
/// `epilogue` (with `Acc` = the reduced row). No atomics.
#[derive(Clone, Debug, PartialEq)]
pub struct TraversalKernel {
    pub edge: RowProgram,
    pub reduce: Reduce,
    /// Reduce within each (destination, relation) segment first, then sum the segments
    /// (per-relation means); otherwise reduce over all in-edges.
    pub per_relation: bool,
    /// `Node(None)`: one row per destination; `CompactDstRel`: one row per segment.
    pub domain: Domain,
    /// Iterate each destination's (destination, relation) segments instead of its edges: `edge`
    /// then runs once per segment row (reading compact (destination, relation) buffers).
    pub over_segments: bool,
    /// One pass with an online (running-max) softmax instead of logits first, then messages;
    /// valid when the message is a value weighted by the softmax and the reduction a sum.
    pub online_softmax: bool,
    pub epilogue: RowProgram,
    pub output: BufferId,
}

/// FloydNet pivot attention over pair buffers (operands are column ranges of stored buffers).
#[derive(Clone, Debug, PartialEq)]
pub struct PivotKernel {
    /// (buffer, first column) of q_ik, k_ij, k_jk, v_ij, v_jk.
    pub operands: [(BufferId, usize); 5],
    pub shape: Shape,
    pub scale: f32,
    pub output: BufferId,
}

/// Row-local glue: `program` per row of `domain`, stored at the output buffer's row reached by
/// `output_at` (`Own`, or `TypedToGlobal` when a node type's rows fill a value over all nodes).
#[derive(Clone, Debug, PartialEq)]
pub struct MapKernel {
    pub domain: Domain,
    pub program: RowProgram,
    pub output: BufferId,
    pub output_at: RowRef,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Kernel {
    Gemm(GemmKernel),
    Traversal(TraversalKernel),
    PivotAttention(PivotKernel),
    Map(MapKernel),
}

impl Kernel {
    pub fn output(&self) -> BufferId {
        match self {
            Kernel::Gemm(k) => k.output,
            Kernel::Traversal(k) => k.output,
            Kernel::PivotAttention(k) => k.output,
            Kernel::Map(k) => k.output,
        }
    }
    pub fn template(&self) -> &'static str {
        match self {
            Kernel::Gemm(_) => "gemm",
            Kernel::Traversal(_) => "traversal",
            Kernel::PivotAttention(_) => "pivot_attention",
            Kernel::Map(_) => "map",
        }
    }
    /// Buffers read.
    pub fn reads(&self) -> Vec<BufferId> {
        let mut r: Vec<BufferId> = match self {
            Kernel::Gemm(k) => k.input.loads().chain(k.epilogue.loads()).collect(),
            Kernel::Traversal(k) => k.edge.loads().chain(k.epilogue.loads()).collect(),
            Kernel::PivotAttention(k) => k.operands.iter().map(|(b, _)| *b).collect(),
            Kernel::Map(k) => k.program.loads().collect(),
        };
        r.sort();
        r.dedup();
        r
    }
}

/// A level-2 program: parameters (level 1's plus any the passes derived), buffers, kernels in
/// execution order, outputs, and each level-1 value's materialisation.
#[derive(Clone, Debug, Default)]
pub struct KernelProgram {
    pub params: Vec<ParamDef>,
    pub buffers: Vec<Buffer>,
    pub kernels: Vec<Kernel>,
    pub outputs: Vec<(String, BufferId)>,
    pub materialization: Vec<Materialization>,
    pub node_types: Vec<String>,
    /// Per relation, for the graph at hand: (edges, unique sources, compacted). Compacted
    /// relations store compact (source, relation) values once per unique source, the others
    /// once per edge.
    pub compaction: Vec<(usize, usize, bool)>,
}

impl KernelProgram {
    pub fn buffer(&self, b: BufferId) -> &Buffer {
        &self.buffers[b.0]
    }

    /// The readable plan: one line per kernel, then the per-relation compaction decisions.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        self.write_kernels(&mut s);
        if !self.compaction.is_empty() {
            let compacted: Vec<String> = self.compaction.iter().enumerate().filter(|(_, c)| c.2).map(|(r, _)| r.to_string()).collect();
            let _ = writeln!(s, "compact (source, relation) rows: {} of {} relations compacted", compacted.len(), self.compaction.len());
            for (r, (e, u, c)) in self.compaction.iter().enumerate() {
                let ratio = if *e == 0 { 1.0 } else { *u as f64 / *e as f64 };
                let _ = writeln!(
                    s,
                    "  relation {r:>4}: {e:>8} edges, {u:>8} unique sources (ratio {ratio:.2}): {}",
                    if *c { "compacted" } else { "per edge" }
                );
            }
        }
        s
    }

    fn write_kernels(&self, s: &mut String) {
        let buf = |b: &BufferId| self.buffers[b.0].name.clone();
        let prog = |p: &RowProgram| -> String {
            p.ops
                .iter()
                .enumerate()
                .map(|(i, op)| {
                    let t = match op {
                        RowOp::Load { buffer, at } => format!("load {} @{at:?}", buf(buffer)),
                        RowOp::Acc => "acc".into(),
                        RowOp::Param { table, select, row } => format!("param ${} by {select:?} row {row:?}", table.0),
                        RowOp::Unary { x, f } => format!("{} s{x}", f.name()),
                        RowOp::Binary { a, b, f, .. } => format!("{f:?} s{a} s{b}").to_lowercase(),
                        RowOp::Bias { x, bias } => format!("s{x} + ${}", bias.0),
                        RowOp::Scale { x, factor } => format!("s{x} * {factor}"),
                        RowOp::ScaleByParam { x, factor } => format!("s{x} * ${}", factor.0),
                        RowOp::HeadDot { a, b, .. } => format!("head_dot s{a} s{b}"),
                        RowOp::HeadOuter { a, b, .. } => format!("head_outer s{a} s{b}"),
                        RowOp::HeadMean { x, .. } => format!("head_mean s{x}"),
                        RowOp::Slice { x, start, len } => format!("s{x}[{start}..{}]", start + len),
                        RowOp::Norm { x, kind, .. } => format!("{kind:?} s{x}"),
                        RowOp::GatedSkip { update, residual, gate } => format!("gated_skip s{update} s{residual} ${}", gate.0),
                        RowOp::PairMask { x } => format!("pair_mask s{x}"),
                        RowOp::Softmax { x, group } => format!("softmax s{x} over {group:?}"),
                    };
                    format!("s{i}={t}")
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        for (i, k) in self.kernels.iter().enumerate() {
            let _ = match k {
                Kernel::Gemm(g) => writeln!(
                    s,
                    "k{i} gemm over {} by {:?}, weight ${}: input [{}] epilogue [{}] -> {}",
                    g.domain,
                    g.select,
                    g.weight.0,
                    prog(&g.input),
                    prog(&g.epilogue),
                    buf(&g.output)
                ),
                Kernel::Traversal(t) => writeln!(
                    s,
                    "k{i} traversal to {} ({:?}{}{}{}): edge [{}] epilogue [{}] -> {}",
                    t.domain,
                    t.reduce,
                    if t.per_relation && t.domain == Domain::Node(None) {
                        " per relation, then sum"
                    } else if t.per_relation {
                        " per relation"
                    } else {
                        ""
                    },
                    if t.over_segments { ", over segments" } else { "" },
                    if t.online_softmax { ", online softmax" } else { "" },
                    prog(&t.edge),
                    prog(&t.epilogue),
                    buf(&t.output)
                ),
                Kernel::PivotAttention(p) => writeln!(
                    s,
                    "k{i} pivot_attention {} heads x {}, scale {}: {} -> {}",
                    p.shape.heads,
                    p.shape.dim,
                    p.scale,
                    p.operands.iter().map(|(b, c)| format!("{}[{c}..]", buf(b))).collect::<Vec<_>>().join(" "),
                    buf(&p.output)
                ),
                Kernel::Map(m) => writeln!(s, "k{i} map over {}: [{}] -> {}", m.domain, prog(&m.program), buf(&m.output)),
            };
        }
    }
}
