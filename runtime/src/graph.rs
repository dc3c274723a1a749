//! Graph files (relational, heterogeneous, pair) and their validation, and the flat form the
//! executors use: global node ids, per-edge (source, destination, relation) and named inputs.

use crate::io::TensorFile;
use crate::{Result, RuntimeError, Tensor};
use rgnn_models::{InputSpec, Metadata};
use std::collections::BTreeMap;
use std::path::Path;

/// A loaded graph file.
#[derive(Clone, Debug)]
pub enum Graph {
    Relational(RelationalGraph),
    Hetero(HeteroGraph),
    Pair(PairGraph),
}

/// One node set, edges with relation ids (`edge_index`, `edge_type`, `x` or `num_nodes`).
#[derive(Clone, Debug)]
pub struct RelationalGraph {
    pub num_nodes: usize,
    pub src: Vec<u32>,
    pub dst: Vec<u32>,
    pub rel: Vec<u32>,
    /// The file had no `edge_type`: `rel` is all 0, which only a single-relation model may take.
    pub rel_missing: bool,
    pub x: Option<Tensor>,
    pub node_type: Option<Vec<u32>>,
}

/// Node sets per type and edges per (src, relation, dst) type, indices local to each type.
#[derive(Clone, Debug)]
pub struct HeteroGraph {
    pub x: BTreeMap<String, Tensor>,
    pub num_nodes: BTreeMap<String, usize>,
    /// `src__rel__dst` → (sources, destinations).
    pub edges: BTreeMap<String, (Vec<u32>, Vec<u32>)>,
}

/// A batch of dense graphs for all-pairs models.
#[derive(Clone, Debug)]
pub struct PairGraph {
    pub batch: usize,
    pub nodes: usize,
    /// `[B, N, N, C]`.
    pub pair: Tensor,
    /// `[B, N]`, 1 for real nodes.
    pub node_mask: Vec<u8>,
}

/// The graph as every executor sees it.
#[derive(Clone, Debug, Default)]
pub struct ExecGraph {
    pub num_nodes: usize,
    /// Global node id ranges per node type (`[0, N]` for one node set).
    pub type_offsets: Vec<usize>,
    pub src: Vec<u32>,
    pub dst: Vec<u32>,
    pub rel: Vec<u32>,
    /// No relation ids were given (see [`RelationalGraph::rel_missing`]).
    pub rel_missing: bool,
    /// Named inputs: `x`, `x.<type>`, `pair`.
    pub inputs: BTreeMap<String, Tensor>,
    /// Pair graphs: batch, nodes, mask.
    pub pair: Option<(usize, usize, Vec<u8>)>,
}

impl ExecGraph {
    pub fn num_edges(&self) -> usize {
        self.src.len()
    }
}

fn bad(file: &TensorFile, message: String) -> RuntimeError {
    RuntimeError::BadTensor { path: file.path.clone(), message }
}

fn check_finite(file: &TensorFile, name: &str, t: &Tensor) -> Result<()> {
    if let Some(i) = t.data.iter().position(|v| !v.is_finite()) {
        // The position as a full index, e.g. `x`[3, 2] or `pair`[1, 2, 3, 4].
        let mut index = vec![0; t.shape.len()];
        let mut rest = i;
        for (axis, &n) in t.shape.iter().enumerate().rev() {
            index[axis] = rest % n.max(1);
            rest /= n.max(1);
        }
        let index: Vec<String> = index.iter().map(usize::to_string).collect();
        return Err(bad(file, format!("tensor `{name}` has a non-finite value {} at `{name}`[{}]", t.data[i], index.join(", "))));
    }
    Ok(())
}

fn scalar_count(file: &TensorFile, name: &str) -> Result<usize> {
    let (shape, v) = file.ints(name)?;
    if v.len() != 1 || shape.len() > 1 {
        return Err(bad(file, format!("`{name}` must be one non-negative integer, found shape {shape:?}")));
    }
    // Node ids are 32-bit in every executor.
    if v[0] < 0 || v[0] > u32::MAX as i64 {
        return Err(bad(file, format!("`{name}` = {} is not a node count rgnn supports (0 to 2^32 - 1)", v[0])));
    }
    Ok(v[0] as usize)
}

/// An `[2, E]` index tensor as (sources, destinations), each checked against its node count.
fn edge_index(file: &TensorFile, name: &str, n_src: usize, n_dst: usize) -> Result<(Vec<u32>, Vec<u32>)> {
    let (shape, v) = file.ints(name)?;
    if shape.len() != 2 || shape[0] != 2 {
        return Err(bad(file, format!("`{name}` must have shape [2, E], found {shape:?}")));
    }
    let e = shape[1];
    let check = |row: usize, n: usize, what: &str| -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(e);
        for (i, &x) in v[row * e..(row + 1) * e].iter().enumerate() {
            if x < 0 || x as usize >= n {
                return Err(bad(file, format!("`{name}`[{row}, {i}] = {x}: {what} index out of range [0, {n})")));
            }
            out.push(x as u32);
        }
        Ok(out)
    };
    Ok((check(0, n_src, "source")?, check(1, n_dst, "target")?))
}

impl Graph {
    /// Load and validate a graph file; which kind it is follows from its tensor names.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_file(&TensorFile::open(path)?)
    }

    pub fn from_bytes(name: &str, bytes: Vec<u8>) -> Result<Self> {
        Self::from_file(&TensorFile::from_bytes(name, crate::io::FileBytes::Owned(bytes))?)
    }

    fn from_file(f: &TensorFile) -> Result<Self> {
        let names = f.names();
        if f.contains("pair") {
            return Self::pair(f);
        }
        if f.contains("edge_index") {
            return Self::relational(f);
        }
        if names.iter().any(|n| n.starts_with("edge_index.") || n.starts_with("x.") || n.starts_with("num_nodes.")) {
            return Self::hetero(f, &names);
        }
        Err(bad(f, format!("not a graph file: expected `edge_index` (relational), `edge_index.<src>__<rel>__<dst>` (heterogeneous) or `pair` (pair graph); found {names:?}")))
    }

    fn relational(f: &TensorFile) -> Result<Self> {
        let x = if f.contains("x") {
            let x = f.floats("x")?;
            if x.shape.len() != 2 {
                return Err(bad(f, format!("`x` must have shape [N, F], found {:?}", x.shape)));
            }
            check_finite(f, "x", &x)?;
            Some(x)
        } else {
            None
        };
        let num_nodes = match (&x, f.contains("num_nodes")) {
            (Some(x), true) => {
                let n = scalar_count(f, "num_nodes")?;
                if n != x.shape[0] {
                    return Err(bad(f, format!("`num_nodes` = {n} but `x` has {} rows", x.shape[0])));
                }
                n
            }
            (Some(x), false) => x.shape[0],
            (None, true) => scalar_count(f, "num_nodes")?,
            (None, false) => return Err(bad(f, "a graph without `x` needs `num_nodes`".into())),
        };
        let (src, dst) = edge_index(f, "edge_index", num_nodes, num_nodes)?;
        let rel_missing = !f.contains("edge_type");
        let rel = if !rel_missing {
            let (shape, v) = f.ints("edge_type")?;
            if shape.len() != 1 || shape[0] != src.len() {
                return Err(bad(f, format!("`edge_type` must have shape [{}] (one per edge), found {shape:?}", src.len())));
            }
            v.iter()
                .enumerate()
                .map(|(i, &r)| {
                    if r < 0 || r > u32::MAX as i64 {
                        Err(bad(f, format!("`edge_type`[{i}] = {r} is negative or too large")))
                    } else {
                        Ok(r as u32)
                    }
                })
                .collect::<Result<Vec<_>>>()?
        } else {
            vec![0; src.len()]
        };
        let node_type = if f.contains("node_type") {
            let (shape, v) = f.ints("node_type")?;
            if shape.len() != 1 || shape[0] != num_nodes {
                return Err(bad(f, format!("`node_type` must have shape [{num_nodes}], found {shape:?}")));
            }
            if let Some(i) = v.iter().position(|&t| t < 0) {
                return Err(bad(f, format!("`node_type`[{i}] is negative")));
            }
            Some(v.iter().map(|&t| t as u32).collect())
        } else {
            None
        };
        Ok(Graph::Relational(RelationalGraph { num_nodes, src, dst, rel, rel_missing, x, node_type }))
    }

    fn hetero(f: &TensorFile, names: &[String]) -> Result<Self> {
        let mut x = BTreeMap::new();
        let mut num_nodes = BTreeMap::new();
        for n in names {
            if let Some(t) = n.strip_prefix("x.") {
                let v = f.floats(n)?;
                if v.shape.len() != 2 {
                    return Err(bad(f, format!("`{n}` must have shape [N, F], found {:?}", v.shape)));
                }
                check_finite(f, n, &v)?;
                num_nodes.insert(t.to_string(), v.shape[0]);
                x.insert(t.to_string(), v);
            }
        }
        for n in names {
            if let Some(t) = n.strip_prefix("num_nodes.") {
                let c = scalar_count(f, n)?;
                if let Some(&have) = num_nodes.get(t) {
                    if have != c {
                        return Err(bad(f, format!("`{n}` = {c} but `x.{t}` has {have} rows")));
                    }
                }
                num_nodes.insert(t.to_string(), c);
            }
        }
        let mut edges = BTreeMap::new();
        for n in names {
            if let Some(key) = n.strip_prefix("edge_index.") {
                let parts: Vec<&str> = key.split("__").collect();
                if parts.len() != 3 {
                    return Err(bad(f, format!("`{n}`: edge type must be written <src>__<rel>__<dst>")));
                }
                let count = |t: &str| {
                    num_nodes
                        .get(t)
                        .copied()
                        .ok_or_else(|| bad(f, format!("`{n}` uses node type {t:?}, which has neither `x.{t}` nor `num_nodes.{t}`")))
                };
                let (s, d) = edge_index(f, n, count(parts[0])?, count(parts[2])?)?;
                edges.insert(key.to_string(), (s, d));
            } else if !(n.starts_with("x.") || n.starts_with("num_nodes.")) {
                return Err(bad(f, format!("unexpected tensor `{n}` in a heterogeneous graph file")));
            }
        }
        Ok(Graph::Hetero(HeteroGraph { x, num_nodes, edges }))
    }

    fn pair(f: &TensorFile) -> Result<Self> {
        let pair = f.floats("pair")?;
        if pair.shape.len() != 4 || pair.shape[1] != pair.shape[2] {
            return Err(bad(f, format!("`pair` must have shape [B, N, N, C], found {:?}", pair.shape)));
        }
        check_finite(f, "pair", &pair)?;
        let (batch, nodes) = (pair.shape[0], pair.shape[1]);
        // Pair rows (b, i, j) are indexed with 32-bit integers on the devices (and a graph's
        // N × N scores are kept whole whatever B is).
        if (nodes as u64) * (nodes as u64) > u32::MAX as u64 || (batch as u64) * (nodes as u64) * (nodes as u64) > u32::MAX as u64 {
            return Err(bad(
                f,
                format!("`pair` of shape {:?} has more than 2^32 - 1 (B × N × N) pairs, which rgnn does not support", pair.shape),
            ));
        }
        let node_mask = if f.contains("node_mask") {
            let (shape, v) = f.ints("node_mask")?;
            if shape != [batch, nodes] {
                return Err(bad(f, format!("`node_mask` must have shape [{batch}, {nodes}], found {shape:?}")));
            }
            if let Some(i) = v.iter().position(|&m| m != 0 && m != 1) {
                return Err(bad(f, format!("`node_mask` must hold 0 or 1; position {i} holds {}", v[i])));
            }
            v.iter().map(|&m| m as u8).collect()
        } else {
            vec![1; batch * nodes]
        };
        Ok(Graph::Pair(PairGraph { batch, nodes, pair, node_mask }))
    }

    /// Short description for messages and the command line.
    pub fn summary(&self) -> String {
        match self {
            Graph::Relational(g) => format!(
                "{} nodes, {} edges, {} relations, {}",
                g.num_nodes,
                g.src.len(),
                g.rel.iter().max().map_or(0, |m| m + 1),
                g.x.as_ref().map_or("featureless".to_string(), |x| format!("{} features", x.shape[1]))
            ),
            Graph::Hetero(g) => format!(
                "{} node types ({} nodes), {} edge types ({} edges)",
                g.num_nodes.len(),
                g.num_nodes.values().sum::<usize>(),
                g.edges.len(),
                g.edges.values().map(|e| e.0.len()).sum::<usize>()
            ),
            Graph::Pair(g) => format!("{} graphs of {} nodes, {} channels", g.batch, g.nodes, g.pair.shape[3]),
        }
    }

    /// Resolve against a model's metadata into what the model builder needs and the flat graph.
    /// `wants_types`: the model has heterogeneous layers (HGT), so inputs stay per node type.
    pub fn resolve(&self, metadata: Option<&Metadata>, wants_types: bool) -> Result<(InputSpec, ExecGraph)> {
        match self {
            Graph::Relational(g) => {
                if wants_types {
                    return Err(RuntimeError::Mismatch(
                        "the model has heterogeneous layers (HGTConv), which need a heterogeneous graph file (`x.<type>`, `edge_index.<src>__<rel>__<dst>`)".into(),
                    ));
                }
                let mut inputs = BTreeMap::new();
                if let Some(x) = &g.x {
                    inputs.insert("x".to_string(), x.clone());
                }
                let spec = match &g.x {
                    Some(x) => InputSpec::Nodes { width: x.shape[1] },
                    None => InputSpec::Featureless { num_nodes: g.num_nodes },
                };
                Ok((
                    spec,
                    ExecGraph {
                        num_nodes: g.num_nodes,
                        type_offsets: vec![0, g.num_nodes],
                        src: g.src.clone(),
                        dst: g.dst.clone(),
                        rel: g.rel.clone(),
                        rel_missing: g.rel_missing && !g.src.is_empty(),
                        inputs,
                        pair: None,
                    },
                ))
            }
            Graph::Hetero(g) => resolve_hetero(g, metadata, wants_types),
            Graph::Pair(g) => {
                if wants_types {
                    return Err(RuntimeError::Mismatch("the model needs a heterogeneous graph file, not a pair graph".into()));
                }
                let mut inputs = BTreeMap::new();
                let c = g.pair.shape[3];
                let rows = g.batch * g.nodes * g.nodes;
                inputs.insert("pair".to_string(), Tensor::new(vec![rows, c], g.pair.data.clone()));
                Ok((
                    InputSpec::Pairs { width: c },
                    ExecGraph { pair: Some((g.batch, g.nodes, g.node_mask.clone())), inputs, ..Default::default() },
                ))
            }
        }
    }
}

fn resolve_hetero(g: &HeteroGraph, metadata: Option<&Metadata>, wants_types: bool) -> Result<(InputSpec, ExecGraph)> {
    let meta = metadata.ok_or_else(|| {
        RuntimeError::Mismatch(
            "a heterogeneous graph needs `metadata` (node_types, edge_types) in the model config to fix node order and relation ids".into(),
        )
    })?;
    for t in g.num_nodes.keys() {
        if !meta.node_types.contains(t) {
            return Err(RuntimeError::Mismatch(format!(
                "graph node type {t:?} is not in the model's metadata.node_types {:?}",
                meta.node_types
            )));
        }
    }
    // Global ids: node types in metadata order (as PyG's to_homogeneous).
    let mut type_offsets = vec![0];
    for t in &meta.node_types {
        type_offsets.push(type_offsets.last().unwrap() + g.num_nodes.get(t).copied().unwrap_or(0));
    }
    let total = *type_offsets.last().expect("starts at 0");
    if total > u32::MAX as usize {
        return Err(RuntimeError::Mismatch(format!(
            "the graph's node types hold {total} nodes; rgnn's node ids are 32-bit (at most 2^32 - 1)"
        )));
    }
    let type_index = |t: &str| meta.node_types.iter().position(|n| n == t).expect("checked");
    let (mut src, mut dst, mut rel) = (vec![], vec![], vec![]);
    let mut present = vec![false; meta.edge_types.len()];
    // Edge types matched to metadata by name; relation id = metadata position.
    for (r, et) in meta.edge_types.iter().enumerate() {
        if let Some((s, d)) = g.edges.get(&Metadata::edge_type_key(et)) {
            present[r] = true;
            let (so, dof) = (type_offsets[type_index(&et.0)] as u32, type_offsets[type_index(&et.2)] as u32);
            src.extend(s.iter().map(|&i| i + so));
            dst.extend(d.iter().map(|&i| i + dof));
            rel.extend(std::iter::repeat_n(r as u32, s.len()));
        }
    }
    for key in g.edges.keys() {
        if !meta.edge_types.iter().any(|et| &Metadata::edge_type_key(et) == key) {
            return Err(RuntimeError::Mismatch(format!("graph edge type {key:?} is not in the model's metadata.edge_types")));
        }
    }
    let num_nodes = *type_offsets.last().unwrap();
    let mut inputs = BTreeMap::new();
    let spec = if wants_types {
        let widths = meta.node_types.iter().map(|t| g.x.get(t).map(|x| x.shape[1])).collect();
        for (t, x) in &g.x {
            inputs.insert(format!("x.{t}"), x.clone());
        }
        InputSpec::TypedNodes { widths, edge_types_present: present }
    } else {
        // A relational model sees one node set: features concatenated in metadata order.
        let widths: Vec<usize> = g.x.values().map(|x| x.shape[1]).collect();
        if !g.x.is_empty() {
            if g.x.len() != g.num_nodes.len() || widths.iter().any(|&w| w != widths[0]) {
                return Err(RuntimeError::Mismatch(
                    "a relational model on a heterogeneous graph needs features of one width for every node type (or none)".into(),
                ));
            }
            let mut data = Vec::with_capacity(num_nodes * widths[0]);
            for t in &meta.node_types {
                if let Some(x) = g.x.get(t) {
                    data.extend_from_slice(&x.data);
                }
            }
            inputs.insert("x".into(), Tensor::new(vec![num_nodes, widths[0]], data));
        }
        match widths.first() {
            Some(&width) => InputSpec::Nodes { width },
            None => InputSpec::Featureless { num_nodes },
        }
    };
    Ok((spec, ExecGraph { num_nodes, type_offsets, src, dst, rel, rel_missing: false, inputs, pair: None }))
}
