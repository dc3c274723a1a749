//! Per-graph data layouts for compiled execution, built once per graph and shared by every run
//! on it (Hector recomputes its per-relation schedule on the host every call; we do not).
//!
//! - **CSR by destination with relation-sorted segments**: the in-edges of each node, ordered by
//!   (relation, edge id), plus one segment per unique (destination, relation) pair. A
//!   destination-parallel traversal reads a node's edges contiguously (no atomics), and
//!   per-relation means or softmaxes read one segment.
//! - **Relation-sorted COO**: edge ids grouped by relation, so a grouped GEMM over edges reads one
//!   contiguous range per relation.
//! - **Compact (source, relation) rows**: per relation, either one row per unique source
//!   (compacted; sorted by source) or one row per edge (not compacted), as the
//!   compiler decides per relation from the unique-source / edge ratio; rows are grouped by
//!   relation, and every edge has a direct row index (no binary search at run time).
//!
//! Construction is counting sorts, O(E + N + R).

use crate::graph::ExecGraph;

/// Layouts of one graph. Edge ids are positions in the graph's edge list.
#[derive(Clone, Debug, PartialEq)]
pub struct GraphLayout {
    pub num_nodes: usize,
    pub num_relations: usize,
    /// In-edges of node `v`: `dst_edges[dst_ptr[v]..dst_ptr[v + 1]]`, sorted by (relation, edge id).
    pub dst_ptr: Vec<usize>,
    pub dst_edges: Vec<u32>,
    /// Unique (destination, relation) segments in CSR order: segment `s` is
    /// `dst_edges[seg_ptr[s]..seg_ptr[s + 1]]`, all edges into `seg_dst[s]` of relation `seg_rel[s]`.
    pub seg_ptr: Vec<usize>,
    pub seg_dst: Vec<u32>,
    pub seg_rel: Vec<u32>,
    /// Node `v`'s segments: `node_seg_ptr[v]..node_seg_ptr[v + 1]`.
    pub node_seg_ptr: Vec<usize>,
    /// Edges of relation `r`: `rel_edges[rel_ptr[r]..rel_ptr[r + 1]]`, in edge order.
    pub rel_ptr: Vec<usize>,
    pub rel_edges: Vec<u32>,
    /// Unique (source, relation) rows grouped by relation: rows `compact_ptr[r]..compact_ptr[r + 1]`
    /// have relation `r`; `compact_src[row]` is the source node, sorted within a relation.
    pub compact_ptr: Vec<usize>,
    pub compact_src: Vec<u32>,
    /// The compact row of each edge.
    pub edge_compact_row: Vec<u32>,
    /// The relation of each compact row.
    pub compact_rel: Vec<u32>,
    /// The (destination, relation) segment of each edge.
    pub edge_segment: Vec<u32>,
}

/// Stable counting sort of `items` by `key(item) < buckets`: returns (bucket offsets, items).
fn counting_sort(items: impl Iterator<Item = u32> + Clone, buckets: usize, key: impl Fn(u32) -> usize) -> (Vec<usize>, Vec<u32>) {
    let mut ptr = vec![0usize; buckets + 1];
    for i in items.clone() {
        ptr[key(i) + 1] += 1;
    }
    for b in 0..buckets {
        ptr[b + 1] += ptr[b];
    }
    let mut next = ptr.clone();
    let mut out = vec![0u32; ptr[buckets]];
    for i in items {
        let k = key(i);
        out[next[k]] = i;
        next[k] += 1;
    }
    (ptr, out)
}

impl GraphLayout {
    /// Build every layout for `graph`, every relation compacted. `num_relations` must exceed
    /// every relation id.
    pub fn new(graph: &ExecGraph, num_relations: usize) -> Self {
        Self::with_compaction(graph, num_relations, &vec![true; num_relations])
    }

    /// Unique sources per relation, without building the layout (for the compaction decision).
    pub fn unique_sources_per_relation(graph: &ExecGraph, num_relations: usize) -> (Vec<usize>, Vec<usize>) {
        let mut edges = vec![0usize; num_relations];
        let mut pairs: Vec<u64> = graph.src.iter().zip(&graph.rel).map(|(&s, &r)| ((r as u64) << 32) | s as u64).collect();
        for &r in &graph.rel {
            edges[r as usize] += 1;
        }
        pairs.sort_unstable();
        pairs.dedup();
        let mut unique = vec![0usize; num_relations];
        for p in pairs {
            unique[(p >> 32) as usize] += 1;
        }
        (edges, unique)
    }

    /// Build every layout; relation `r` gets one compact row per unique source when
    /// `compact[r]`, else one row per edge.
    pub fn with_compaction(graph: &ExecGraph, num_relations: usize, compact: &[bool]) -> Self {
        let (n, e) = (graph.num_nodes, graph.num_edges());
        let (src, dst, rel) = (&graph.src, &graph.dst, &graph.rel);
        debug_assert!(rel.iter().all(|&r| (r as usize) < num_relations));

        // Relation-sorted COO (stable: edge order within a relation).
        let (rel_ptr, rel_edges) = counting_sort(0..e as u32, num_relations, |i| rel[i as usize] as usize);
        // CSR by destination, relation-sorted within a node: a stable sort by destination of the
        // relation-sorted list keeps (relation, edge id) order inside each node.
        let (dst_ptr, dst_edges) = counting_sort(rel_edges.iter().copied(), n, |i| dst[i as usize] as usize);

        let (mut seg_ptr, mut seg_dst, mut seg_rel, mut node_seg_ptr) = (vec![], vec![], vec![], vec![0]);
        for v in 0..n {
            let mut last = None;
            for p in dst_ptr[v]..dst_ptr[v + 1] {
                let r = rel[dst_edges[p] as usize];
                if last != Some(r) {
                    seg_ptr.push(p);
                    seg_dst.push(v as u32);
                    seg_rel.push(r);
                    last = Some(r);
                }
            }
            node_seg_ptr.push(seg_dst.len());
        }
        seg_ptr.push(e);

        // Compact (source, relation) rows: within each relation, sort its edges by source
        // (counting sort over the relation-sorted list) and number the distinct sources.
        let (_, by_src) = counting_sort(rel_edges.iter().copied(), n, |i| src[i as usize] as usize);
        let (_, by_rel_then_src) = counting_sort(by_src.iter().copied(), num_relations, |i| rel[i as usize] as usize);
        let mut compact_ptr = vec![0usize; num_relations + 1];
        let mut compact_src = vec![];
        let mut edge_compact_row = vec![0u32; e];
        let mut prev: Option<(u32, u32)> = None;
        for &i in &by_rel_then_src {
            let key = (rel[i as usize], src[i as usize]);
            // A relation that is not compacted gets a row per edge.
            if prev != Some(key) || !compact[key.0 as usize] {
                compact_src.push(key.1);
                compact_ptr[key.0 as usize + 1] += 1;
                prev = Some(key);
            }
            edge_compact_row[i as usize] = (compact_src.len() - 1) as u32;
        }
        for r in 0..num_relations {
            compact_ptr[r + 1] += compact_ptr[r];
        }
        let mut compact_rel = vec![0u32; compact_src.len()];
        for r in 0..num_relations {
            compact_rel[compact_ptr[r]..compact_ptr[r + 1]].iter_mut().for_each(|x| *x = r as u32);
        }
        let mut edge_segment = vec![0u32; e];
        for s in 0..seg_dst.len() {
            for p in seg_ptr[s]..seg_ptr[s + 1] {
                edge_segment[dst_edges[p] as usize] = s as u32;
            }
        }

        GraphLayout {
            num_nodes: n,
            num_relations,
            dst_ptr,
            dst_edges,
            seg_ptr,
            seg_dst,
            seg_rel,
            node_seg_ptr,
            rel_ptr,
            rel_edges,
            compact_ptr,
            compact_src,
            edge_compact_row,
            compact_rel,
            edge_segment,
        }
    }

    pub fn num_edges(&self) -> usize {
        self.dst_edges.len()
    }

    /// Edges of relation `r`.
    pub fn relation_edges(&self, r: usize) -> usize {
        self.rel_ptr[r + 1] - self.rel_ptr[r]
    }

    /// Unique sources of relation `r` (compact rows).
    pub fn relation_unique_sources(&self, r: usize) -> usize {
        self.compact_ptr[r + 1] - self.compact_ptr[r]
    }

    /// Unique sources per edge of relation `r` (1.0 for an empty relation): compaction pays off
    /// when this is well below 1.
    pub fn compaction_ratio(&self, r: usize) -> f64 {
        match self.relation_edges(r) {
            0 => 1.0,
            e => self.relation_unique_sources(r) as f64 / e as f64,
        }
    }

    /// Bytes held by the layout's index arrays.
    pub fn bytes(&self) -> usize {
        let words =
            self.dst_edges.len() + self.seg_dst.len() * 2 + self.rel_edges.len() + self.compact_src.len() + self.edge_compact_row.len();
        let ptrs = self.dst_ptr.len() + self.seg_ptr.len() + self.node_seg_ptr.len() + self.rel_ptr.len() + self.compact_ptr.len();
        words * 4 + ptrs * std::mem::size_of::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// A deterministic pseudo-random graph with duplicates, self loops, isolated nodes, an empty
    /// relation and a hub.
    fn graph(n: usize, e: usize, r: usize, seed: u64) -> ExecGraph {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let mut next = |m: usize| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 33) as usize) % m
        };
        let active = (n * 3 / 4).max(1); // the last quarter of nodes stays isolated
        let (mut src, mut dst, mut rel) = (vec![], vec![], vec![]);
        for i in 0..e {
            let hub = i % 7 == 0;
            src.push(next(active) as u32);
            dst.push(if hub { 0 } else { next(active) as u32 });
            // Skewed relations; relation 1 (if it exists) never used.
            let mut rr = next(r).min(next(r));
            if r > 2 && rr == 1 {
                rr = 0;
            }
            rel.push(rr as u32);
        }
        if e > 2 {
            (src[1], dst[1], rel[1]) = (src[2], dst[2], rel[2]); // a duplicate edge
            dst[3 % e] = src[3 % e]; // a self loop
        }
        ExecGraph { num_nodes: n, type_offsets: vec![0, n], src, dst, rel, ..Default::default() }
    }

    fn check(g: &ExecGraph, r: usize, compact: &[bool]) {
        let l = GraphLayout::with_compaction(g, r, compact);
        let e = g.num_edges();
        // CSR: each node's in-edges, exactly, sorted by (relation, edge id).
        assert_eq!(l.dst_edges.len(), e);
        for v in 0..g.num_nodes {
            let got: Vec<u32> = l.dst_edges[l.dst_ptr[v]..l.dst_ptr[v + 1]].to_vec();
            let mut want: Vec<u32> = (0..e as u32).filter(|&i| g.dst[i as usize] as usize == v).collect();
            want.sort_by_key(|&i| (g.rel[i as usize], i));
            assert_eq!(got, want, "in-edges of node {v}");
            // Segments of this node cover its edges, one per relation present.
            let rels: BTreeSet<u32> = want.iter().map(|&i| g.rel[i as usize]).collect();
            let segs = l.node_seg_ptr[v]..l.node_seg_ptr[v + 1];
            assert_eq!(segs.len(), rels.len());
            for s in segs {
                assert_eq!(l.seg_dst[s] as usize, v);
                for p in l.seg_ptr[s]..l.seg_ptr[s + 1] {
                    assert_eq!(g.rel[l.dst_edges[p] as usize], l.seg_rel[s]);
                }
            }
        }
        assert_eq!(*l.seg_ptr.last().unwrap(), e);
        // COO by relation: a permutation of the edges, grouped, in edge order inside a group.
        for rr in 0..r {
            let got = &l.rel_edges[l.rel_ptr[rr]..l.rel_ptr[rr + 1]];
            let want: Vec<u32> = (0..e as u32).filter(|&i| g.rel[i as usize] as usize == rr).collect();
            assert_eq!(got, want.as_slice(), "edges of relation {rr}");
        }
        // Compact rows grouped by relation: unique sources where compacted, one per edge (sorted
        // by source) where not; and the direct map.
        let unique: BTreeSet<(u32, u32)> = (0..e).map(|i| (g.rel[i], g.src[i])).collect();
        for (rr, &compacted) in compact.iter().enumerate().take(r) {
            let rows = &l.compact_src[l.compact_ptr[rr]..l.compact_ptr[rr + 1]];
            let want: Vec<u32> = if compacted {
                unique.iter().filter(|(x, _)| *x as usize == rr).map(|(_, s)| *s).collect()
            } else {
                let mut v: Vec<u32> = (0..e).filter(|&i| g.rel[i] as usize == rr).map(|i| g.src[i]).collect();
                v.sort();
                v
            };
            assert_eq!(rows, want.as_slice(), "compact rows of relation {rr}");
        }
        let mut seen = vec![false; l.compact_src.len()];
        for i in 0..e {
            let row = l.edge_compact_row[i] as usize;
            if !compact[g.rel[i] as usize] {
                assert!(!std::mem::replace(&mut seen[row], true), "uncompacted rows belong to one edge");
            }
        }
        for i in 0..e {
            let seg = l.edge_segment[i] as usize;
            assert_eq!((l.seg_dst[seg], l.seg_rel[seg]), (g.dst[i], g.rel[i]));
            let row = l.edge_compact_row[i] as usize;
            assert_eq!(l.compact_rel[row], g.rel[i]);
            assert_eq!(l.compact_src[row], g.src[i]);
            assert!(l.compact_ptr[g.rel[i] as usize] <= row && row < l.compact_ptr[g.rel[i] as usize + 1]);
        }
    }

    #[test]
    fn layouts_match_naive_constructions() {
        for (n, e, r, seed) in [(1, 0, 1, 1), (5, 0, 3, 2), (10, 40, 3, 3), (200, 1500, 7, 4), (64, 3000, 1, 5), (1000, 5000, 40, 6)] {
            check(&graph(n, e, r, seed), r, &vec![true; r]);
            let alternating: Vec<bool> = (0..r).map(|x| x % 2 == 0).collect();
            check(&graph(n, e, r, seed), r, &alternating);
        }
    }

    #[test]
    fn compaction_ratio_per_relation() {
        // Relation 0: 4 edges from one source; relation 1: 2 edges from 2 sources; relation 2: none.
        let g = ExecGraph {
            num_nodes: 5,
            src: vec![0, 0, 0, 0, 1, 2],
            dst: vec![1, 2, 3, 4, 0, 0],
            rel: vec![0, 0, 0, 0, 1, 1],
            ..Default::default()
        };
        let l = GraphLayout::new(&g, 3);
        assert_eq!(l.compaction_ratio(0), 0.25);
        assert_eq!(l.compaction_ratio(1), 1.0);
        assert_eq!(l.compaction_ratio(2), 1.0);
        assert_eq!(l.relation_unique_sources(0), 1);
    }
}
