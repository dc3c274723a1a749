use crate::{Domain, Endpoint, NodeTypeId, ParamId, Shape, ValueId};

/// Which slice of a typed weight a row uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WeightSelect {
    /// One weight for every row (leading weight axis of size 1).
    Shared,
    /// The row's relation (edge and compact domains).
    Relation,
    /// The row's node type (node domain over all types).
    NodeType,
}

/// Which row of an embedding table a value row reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RowIndex {
    /// Row 0 for every value row (broadcast a vector).
    Zero,
    /// The edge's (or compact pair's) source node.
    Src,
    /// The edge's (or compact pair's) destination node.
    Dst,
    /// The node itself (node domain; global id for `Node(None)`, local id for a typed domain).
    Node,
}

/// Elementwise functions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    Relu,
    LeakyRelu(f32),
    /// Exact (erf) GELU, as PyTorch's default.
    Gelu,
    Silu,
    Sigmoid,
    Exp,
    Tanh,
    /// ELU with alpha 1.
    Elu,
}

impl Activation {
    /// Parse a config name (`relu`, `gelu`, `silu`, `tanh`, `elu`, `sigmoid`).
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            "relu" => Activation::Relu,
            "gelu" => Activation::Gelu,
            "silu" | "swish" => Activation::Silu,
            "sigmoid" => Activation::Sigmoid,
            "tanh" => Activation::Tanh,
            "elu" => Activation::Elu,
            "exp" => Activation::Exp,
            _ => return None,
        })
    }
    pub fn name(self) -> String {
        match self {
            Activation::Relu => "relu".into(),
            Activation::LeakyRelu(s) => format!("leaky_relu({s})"),
            Activation::Gelu => "gelu".into(),
            Activation::Silu => "silu".into(),
            Activation::Sigmoid => "sigmoid".into(),
            Activation::Exp => "exp".into(),
            Activation::Tanh => "tanh".into(),
            Activation::Elu => "elu".into(),
        }
    }
}

/// Elementwise binary functions. The right operand may broadcast: its heads and dim are each
/// either equal to the left operand's or 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryFn {
    Add,
    Sub,
    Mul,
}

/// How an aggregation combines rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduce {
    Sum,
    /// Mean over the group; an empty group gives 0.
    Mean,
    /// Elementwise max over the group; an empty group gives 0 (as PyG's scatter).
    Max,
}

/// The groups an edge softmax normalises over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SoftmaxGroup {
    /// All in-edges of the destination.
    Dst,
    /// In-edges of the destination with the edge's relation.
    DstRel,
}

/// Row normalisations (over the whole row).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NormKind {
    /// `(x − mean) / sqrt(var + eps) · w + b` (biased variance).
    LayerNorm { eps: f32 },
    /// `x / sqrt(mean(x²) + eps) · w`.
    Rms { eps: f32 },
    /// `x · w + b`, no statistics.
    Affine,
}

/// A level-1 operator. Each defines exactly one value.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// A graph input (`x`, `x.<node_type>`, `pair`).
    Input {
        name: String,
    },
    /// Node rows copied to edge rows by the edge's source or destination.
    Gather {
        input: ValueId,
        endpoint: Endpoint,
    },
    /// Node rows copied to compact rows: one per unique (source, relation) pair (`Src`) or
    /// (destination, relation) pair (`Dst`).
    CompactGather {
        input: ValueId,
        endpoint: Endpoint,
    },
    /// Compact rows read back per edge: edge e gets the row of its (source, relation) or
    /// (destination, relation) pair.
    EdgeFromCompact {
        input: ValueId,
    },
    /// `y = x @ W[sel]` with weight `[T, blocks, in/blocks, out/blocks]`: block `b` maps input
    /// slice `b` to output slice `b` (blocks = 1 is a dense matrix).
    Linear {
        input: ValueId,
        weight: ParamId,
        select: WeightSelect,
        out: Shape,
    },
    /// Rows read from a table `[T, M, width]`: type slice by `select`, row by `row`.
    Embedding {
        table: ParamId,
        select: WeightSelect,
        row: RowIndex,
        domain: Domain,
        out: Shape,
    },
    /// `y = x + b`, `b` of the row's width.
    Bias {
        input: ValueId,
        bias: ParamId,
    },
    /// `y = x · factor`.
    Scale {
        input: ValueId,
        factor: f32,
    },
    /// `y = x · p` for a one-element parameter `p`.
    ScaleByParam {
        input: ValueId,
        factor: ParamId,
    },
    Unary {
        input: ValueId,
        f: Activation,
    },
    Binary {
        lhs: ValueId,
        rhs: ValueId,
        f: BinaryFn,
    },
    /// Per-head dot product: `[H, D] · [H, D] → [H, 1]`.
    HeadDot {
        lhs: ValueId,
        rhs: ValueId,
    },
    /// Per-head outer product: `[H, D] ⊗ [H, C] → [H, D·C]`.
    HeadOuter {
        lhs: ValueId,
        rhs: ValueId,
    },
    /// Mean over heads: `[H, X] → [1, X]`.
    HeadMean {
        input: ValueId,
    },
    /// The same row read with another `[heads, dim]` split.
    Reshape {
        input: ValueId,
        out: Shape,
    },
    /// Columns `[start, start + len)` of a row (heads must be 1).
    Slice {
        input: ValueId,
        start: usize,
        len: usize,
    },
    /// Softmax over edge groups, per column; max-subtracted, denominator `sum + 1e-16` (PyG).
    EdgeSoftmax {
        input: ValueId,
        group: SoftmaxGroup,
    },
    /// Rows combined into another domain: edge → node (by destination), edge → compact
    /// (destination, relation), compact (destination, relation) → node.
    Aggregate {
        input: ValueId,
        reduce: Reduce,
        to: Domain,
    },
    /// `y = σ(g) · update + (1 − σ(g)) · residual` for a one-element parameter `g`.
    GatedSkip {
        update: ValueId,
        residual: ValueId,
        gate: ParamId,
    },
    /// Row normalisation with optional weight and bias of the row's width.
    Norm {
        input: ValueId,
        kind: NormKind,
        weight: Option<ParamId>,
        bias: Option<ParamId>,
    },
    /// Per-type node values assembled into one value over all nodes (types not listed get 0).
    ConcatNodeTypes {
        parts: Vec<(NodeTypeId, ValueId)>,
    },
    /// The rows of one node type taken from a value over all nodes.
    SelectNodeType {
        input: ValueId,
        node_type: NodeTypeId,
    },
    /// `y[b, i, k] = x[b, k, i]`.
    PairTranspose {
        input: ValueId,
    },
    /// FloydNet pivotal attention: for pair (i, k) and head h, softmax over pivots j of
    /// `scale · q_ik · (k_ij + k_jk)` (pivot masked when node i or j is padding) weighting
    /// `v_ij + v_jk`.
    PivotAttention {
        q: ValueId,
        k_ij: ValueId,
        k_jk: ValueId,
        v_ij: ValueId,
        v_jk: ValueId,
        scale: f32,
    },
    /// `y[b, i, k] = x[b, i, k] · mask[b, i] · mask[b, k]`.
    PairMask {
        input: ValueId,
    },
}

impl Op {
    /// Short operator name, as printed.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Gather { .. } => "gather",
            Op::CompactGather { .. } => "compact_gather",
            Op::EdgeFromCompact { .. } => "edge_from_compact",
            Op::Linear { .. } => "linear",
            Op::Embedding { .. } => "embedding",
            Op::Bias { .. } => "bias",
            Op::Scale { .. } => "scale",
            Op::ScaleByParam { .. } => "scale_by",
            Op::Unary { .. } => "unary",
            Op::Binary { .. } => "binary",
            Op::HeadDot { .. } => "head_dot",
            Op::HeadOuter { .. } => "head_outer",
            Op::HeadMean { .. } => "head_mean",
            Op::Reshape { .. } => "reshape",
            Op::Slice { .. } => "slice",
            Op::EdgeSoftmax { .. } => "edge_softmax",
            Op::Aggregate { .. } => "aggregate",
            Op::GatedSkip { .. } => "gated_skip",
            Op::Norm { .. } => "norm",
            Op::ConcatNodeTypes { .. } => "concat_node_types",
            Op::SelectNodeType { .. } => "select_node_type",
            Op::PairTranspose { .. } => "pair_transpose",
            Op::PivotAttention { .. } => "pivot_attention",
            Op::PairMask { .. } => "pair_mask",
        }
    }

    /// The values this operator reads.
    pub fn inputs(&self) -> Vec<ValueId> {
        let mut read = vec![];
        self.map_inputs(|v| {
            read.push(v);
            v
        });
        read
    }

    /// The same operator reading other values (`map` gives each operand's replacement, called
    /// once per operand in operand order).
    pub fn map_inputs(&self, mut map: impl FnMut(ValueId) -> ValueId) -> Op {
        let mut op = self.clone();
        match &mut op {
            Op::Input { .. } | Op::Embedding { .. } => {}
            Op::Gather { input, .. }
            | Op::CompactGather { input, .. }
            | Op::EdgeFromCompact { input }
            | Op::Linear { input, .. }
            | Op::Bias { input, .. }
            | Op::Scale { input, .. }
            | Op::ScaleByParam { input, .. }
            | Op::Unary { input, .. }
            | Op::HeadMean { input }
            | Op::Reshape { input, .. }
            | Op::Slice { input, .. }
            | Op::EdgeSoftmax { input, .. }
            | Op::Aggregate { input, .. }
            | Op::Norm { input, .. }
            | Op::SelectNodeType { input, .. }
            | Op::PairTranspose { input }
            | Op::PairMask { input } => *input = map(*input),
            Op::Binary { lhs, rhs, .. } | Op::HeadDot { lhs, rhs } | Op::HeadOuter { lhs, rhs } => {
                *lhs = map(*lhs);
                *rhs = map(*rhs);
            }
            Op::GatedSkip { update, residual, .. } => {
                *update = map(*update);
                *residual = map(*residual);
            }
            Op::ConcatNodeTypes { parts } => parts.iter_mut().for_each(|(_, v)| *v = map(*v)),
            Op::PivotAttention { q, k_ij, k_jk, v_ij, v_jk, .. } => {
                for v in [q, k_ij, k_jk, v_ij, v_jk] {
                    *v = map(*v);
                }
            }
        }
        op
    }

    /// The parameters this operator reads.
    pub fn params(&self) -> Vec<ParamId> {
        match self {
            Op::Linear { weight, .. } => vec![*weight],
            Op::Embedding { table, .. } => vec![*table],
            Op::Bias { bias, .. } => vec![*bias],
            Op::ScaleByParam { factor, .. } => vec![*factor],
            Op::GatedSkip { gate, .. } => vec![*gate],
            Op::Norm { weight, bias, .. } => weight.iter().chain(bias.iter()).copied().collect(),
            _ => vec![],
        }
    }
}
