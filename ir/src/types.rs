use std::fmt;

/// Index of a value in a [`crate::Program`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub usize);

/// Index of a node type in [`crate::Program::node_types`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeTypeId(pub usize);

/// What a value has one row of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Domain {
    /// One row per node: of every type (`None`, global node order) or of one type.
    Node(Option<NodeTypeId>),
    /// One row per edge, in the graph's edge order.
    Edge,
    /// One row per unique (source node, relation) pair among the edges.
    CompactSrcRel,
    /// One row per unique (destination node, relation) pair among the edges.
    CompactDstRel,
    /// One row per ordered node pair (b, i, k) of a batch of dense graphs (FloydNet).
    Pair,
    /// One row per graph of a batch.
    Graph,
}

impl Domain {
    /// Domains whose rows each belong to exactly one relation.
    pub fn has_relation(self) -> bool {
        matches!(self, Domain::Edge | Domain::CompactSrcRel | Domain::CompactDstRel)
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Domain::Node(None) => write!(f, "node"),
            Domain::Node(Some(t)) => write!(f, "node#{}", t.0),
            Domain::Edge => write!(f, "edge"),
            Domain::CompactSrcRel => write!(f, "compact(src,rel)"),
            Domain::CompactDstRel => write!(f, "compact(dst,rel)"),
            Domain::Pair => write!(f, "pair"),
            Domain::Graph => write!(f, "graph"),
        }
    }
}

/// Per-row shape: `heads` groups of `dim` numbers (row width = heads × dim).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shape {
    pub heads: usize,
    pub dim: usize,
}

impl Shape {
    pub const fn new(heads: usize, dim: usize) -> Self {
        Shape { heads, dim }
    }
    /// A single-head row of `width` numbers.
    pub const fn flat(width: usize) -> Self {
        Shape { heads: 1, dim: width }
    }
    pub const fn width(self) -> usize {
        self.heads * self.dim
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.heads, self.dim)
    }
}

/// Which end of an edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Src,
    Dst,
}

/// A value's domain, per-row shape and a readable name.
#[derive(Clone, Debug, PartialEq)]
pub struct ValueInfo {
    pub domain: Domain,
    pub shape: Shape,
    pub name: String,
}
