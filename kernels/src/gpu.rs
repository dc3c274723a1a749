//! What the GPU generators share: the arrays a generated kernel binds, the graph's index arrays
//! as the device sees them (u32), and the per-kernel tile tables of the grouped GEMM.
//!
//! A generator turns one level-2 kernel into one or more [`Dispatch`]es. Each names the arrays it
//! binds by [`ArrayRef`]; the runtime maps those to device buffers (a range of the memory plan's
//! arena, a parameter, an index array, a table of the dispatch, or a scratch buffer).

use crate::cpu::GraphIndex;
use rgnn_ir::level2::BufferId;
use rgnn_ir::{Domain, ParamId, WeightSelect};

/// A graph index array, uploaded once per graph as u32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IndexArray {
    Src,
    Dst,
    Rel,
    DstEdges,
    SegPtr,
    SegDst,
    SegRel,
    NodeSegPtr,
    EdgeSegment,
    CompactSrc,
    CompactRel,
    EdgeCompactRow,
    /// Pair graphs: the node mask, `[B·N]`, 1 for a real node.
    PairMask,
}

impl IndexArray {
    pub const ALL: [IndexArray; 13] = [
        IndexArray::Src,
        IndexArray::Dst,
        IndexArray::Rel,
        IndexArray::DstEdges,
        IndexArray::SegPtr,
        IndexArray::SegDst,
        IndexArray::SegRel,
        IndexArray::NodeSegPtr,
        IndexArray::EdgeSegment,
        IndexArray::CompactSrc,
        IndexArray::CompactRel,
        IndexArray::EdgeCompactRow,
        IndexArray::PairMask,
    ];

    pub fn name(self) -> &'static str {
        match self {
            IndexArray::Src => "src",
            IndexArray::Dst => "dst",
            IndexArray::Rel => "rel",
            IndexArray::DstEdges => "dst_edges",
            IndexArray::SegPtr => "seg_ptr",
            IndexArray::SegDst => "seg_dst",
            IndexArray::SegRel => "seg_rel",
            IndexArray::NodeSegPtr => "node_seg_ptr",
            IndexArray::EdgeSegment => "edge_segment",
            IndexArray::CompactSrc => "compact_src",
            IndexArray::CompactRel => "compact_rel",
            IndexArray::EdgeCompactRow => "edge_compact_row",
            IndexArray::PairMask => "pair_mask",
        }
    }

    /// The array's contents as the device stores them. Offsets must fit in u32 (checked by the
    /// runtime before upload: a graph that large does not fit in device memory anyway).
    pub fn data(self, g: &GraphIndex) -> Vec<u32> {
        let narrow = |v: &[usize]| v.iter().map(|&x| x as u32).collect();
        match self {
            IndexArray::Src => g.src.to_vec(),
            IndexArray::Dst => g.dst.to_vec(),
            IndexArray::Rel => g.rel.to_vec(),
            IndexArray::DstEdges => g.dst_edges.to_vec(),
            IndexArray::SegPtr => narrow(g.seg_ptr),
            IndexArray::SegDst => g.seg_dst.to_vec(),
            IndexArray::SegRel => g.seg_rel.to_vec(),
            IndexArray::NodeSegPtr => narrow(g.node_seg_ptr),
            IndexArray::EdgeSegment => g.edge_segment.to_vec(),
            IndexArray::CompactSrc => g.compact_src.to_vec(),
            IndexArray::CompactRel => g.compact_rel.to_vec(),
            IndexArray::EdgeCompactRow => g.edge_compact_row.to_vec(),
            IndexArray::PairMask => g.pair.map_or(vec![], |(_, _, m)| m.iter().map(|&x| x as u32).collect()),
        }
    }

    /// Number of elements (without building the data).
    pub fn len(self, g: &GraphIndex) -> usize {
        match self {
            IndexArray::Src => g.src.len(),
            IndexArray::Dst => g.dst.len(),
            IndexArray::Rel => g.rel.len(),
            IndexArray::DstEdges => g.dst_edges.len(),
            IndexArray::SegPtr => g.seg_ptr.len(),
            IndexArray::SegDst => g.seg_dst.len(),
            IndexArray::SegRel => g.seg_rel.len(),
            IndexArray::NodeSegPtr => g.node_seg_ptr.len(),
            IndexArray::EdgeSegment => g.edge_segment.len(),
            IndexArray::CompactSrc => g.compact_src.len(),
            IndexArray::CompactRel => g.compact_rel.len(),
            IndexArray::EdgeCompactRow => g.edge_compact_row.len(),
            IndexArray::PairMask => g.pair.map_or(0, |(_, _, m)| m.len()),
        }
    }
}

/// An array bound by a generated kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ArrayRef {
    /// A level-2 buffer (storage dtype of the program).
    Data(BufferId),
    /// A parameter (f32).
    Param(ParamId),
    /// A graph index array (u32).
    Index(IndexArray),
    /// The dispatch's own table `i` (u32), in [`Dispatch::tables`].
    Table(usize),
    /// Scratch f32 buffer 0 (GEMM input rows) or 1 (GEMM products before their epilogue).
    Scratch(usize),
}

/// Element type of a bound array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elem {
    F32,
    F16,
    BF16,
    U32,
}

impl Elem {
    pub fn bytes(self) -> usize {
        match self {
            Elem::F16 | Elem::BF16 => 2,
            _ => 4,
        }
    }
}

/// One binding of a dispatch: part `chunk` of an array (arrays larger than the device's largest
/// storage binding are bound as several consecutive chunks of `chunk_elems` elements).
#[derive(Clone, Debug, PartialEq)]
pub struct Binding {
    pub array: ArrayRef,
    pub elem: Elem,
    pub chunk: usize,
    pub chunk_elems: usize,
    /// Elements of the whole array.
    pub len: usize,
    pub writable: bool,
}

impl Binding {
    /// Element range of the array this binding covers.
    pub fn range(&self) -> std::ops::Range<usize> {
        let start = self.chunk * self.chunk_elems;
        start..(start + self.chunk_elems).min(self.len)
    }
}

/// One generated compute dispatch.
#[derive(Clone, Debug)]
pub struct Dispatch {
    /// `k3 gemm`, `k3 gemm epilogue`, ...
    pub label: String,
    pub source: String,
    pub entry: &'static str,
    pub bindings: Vec<Binding>,
    /// Workgroups (CUDA: blocks) per dimension.
    pub workgroups: [u32; 3],
    /// Threads per workgroup (x, y).
    pub threads: [u32; 2],
    /// Tables (u32) this dispatch owns, uploaded once per graph (GEMM rows and tiles).
    pub tables: Vec<Vec<u32>>,
    /// The level-2 kernel it belongs to (index into the program's kernels).
    pub kernel: usize,
    /// Floating-point operations of its matrix products, 2 per multiply-add (GEMM, pivot
    /// attention); 0 for dispatches without one.
    pub flops: f64,
    /// Buffers it binds but touches only in part, with the elements it touches at most (a GEMM
    /// over one node type's rows of a buffer over all nodes); [`kernel_work`] counts those.
    pub touched: Vec<(ArrayRef, usize)>,
}

impl Dispatch {
    /// A finished kernel of level-2 kernel 0 with no matrix products; [`crate::templates`]
    /// sets `kernel` and the GEMM and pivot-attention `flops` once a language's finisher made it.
    pub fn new(
        label: String,
        source: String,
        entry: &'static str,
        bindings: Vec<Binding>,
        workgroups: [u32; 3],
        threads: [u32; 2],
        tables: Vec<Vec<u32>>,
    ) -> Self {
        Dispatch { label, source, entry, bindings, workgroups, threads, tables, kernel: 0, flops: 0.0, touched: vec![] }
    }
}

/// What one level-2 kernel must move and compute, the numerators of the rates `rgnn bench
/// --kernels` reports against the device's bandwidth and tensor-core rate.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelWork {
    pub kernel: usize,
    /// Bytes of every array its dispatches bind (buffers, parameters, index arrays, tables),
    /// each counted once: the traffic of reading every input and writing every output once.
    /// Round trips through scratch between its own dispatches are not counted (they are the
    /// implementation's cost, not the kernel's work), nor are gathered rows read again. A
    /// buffer a dispatch touches only in part ([`Dispatch::touched`]: a GEMM over one node
    /// type's rows of a buffer over all nodes, as HGT's per-type GEMMs) counts what it touches.
    pub bytes: u64,
    /// Sum of its dispatches' [`Dispatch::flops`].
    pub flops: f64,
}

/// Per level-2 kernel (in program order) the work of its dispatches.
pub fn kernel_work(dispatches: &[Dispatch]) -> Vec<KernelWork> {
    let mut out: Vec<(KernelWork, std::collections::BTreeSet<ArrayRef>)> = vec![];
    for d in dispatches {
        if out.last().is_none_or(|(w, _)| w.kernel != d.kernel) {
            out.push((KernelWork { kernel: d.kernel, bytes: 0, flops: 0.0 }, Default::default()));
        }
        let (work, seen) = out.last_mut().expect("just pushed");
        work.flops += d.flops;
        for b in &d.bindings {
            if !matches!(b.array, ArrayRef::Scratch(_)) && seen.insert(b.array) {
                let elems = d.touched.iter().find(|t| t.0 == b.array).map_or(b.len, |t| t.1.min(b.len));
                work.bytes += (elems * b.elem.bytes()) as u64;
            }
        }
    }
    out.into_iter().map(|(w, _)| w).collect()
}

/// Rows of `d` grouped by weight type (the grouped GEMM's work, and its order).
pub fn gemm_row_groups(g: &GraphIndex, d: Domain, select: WeightSelect, types: usize) -> Vec<(usize, Vec<u32>)> {
    crate::cpu::groups(g, d, select, types)
}

/// The GEMM's device tables: every row in type order, and per tile of at most `tile_rows`
/// rows of one type `(type, first index into the rows, count)`.
pub fn gemm_tiles(groups: &[(usize, Vec<u32>)], tile_rows: usize) -> (Vec<u32>, Vec<u32>) {
    let mut rows = vec![];
    let mut tiles = vec![];
    for (t, list) in groups {
        for chunk in list.chunks(tile_rows) {
            tiles.extend_from_slice(&[*t as u32, rows.len() as u32, chunk.len() as u32]);
            rows.extend_from_slice(chunk);
        }
    }
    (rows, tiles)
}

/// Workgroup counts for `groups` workgroups when one dimension holds at most `max_per_dim`:
/// `[x, y, 1]` with `x · y ≥ groups` (kernels skip the surplus).
pub fn grid(groups: usize, max_per_dim: u32) -> [u32; 3] {
    let max = max_per_dim.max(1) as usize;
    if groups <= max {
        [groups.max(1) as u32, 1, 1]
    } else {
        [max as u32, groups.div_ceil(max) as u32, 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dispatch(kernel: usize, flops: f64, arrays: &[(ArrayRef, usize)]) -> Dispatch {
        let bindings = arrays
            .iter()
            .map(|&(array, len)| Binding { array, elem: Elem::F32, chunk: 0, chunk_elems: len, len, writable: false })
            .collect();
        Dispatch { kernel, flops, ..Dispatch::new(String::new(), String::new(), "main", bindings, [1; 3], [1, 1], vec![]) }
    }

    #[test]
    fn kernel_work_counts_each_array_of_a_kernel_once_and_no_scratch() {
        let x = ArrayRef::Data(BufferId(0));
        let src = ArrayRef::Index(IndexArray::Src);
        let work = kernel_work(&[
            dispatch(0, 0.0, &[(x, 100), (ArrayRef::Scratch(0), 1000)]),
            dispatch(0, 50.0, &[(ArrayRef::Scratch(0), 1000), (ArrayRef::Param(ParamId(0)), 10)]),
            dispatch(1, 0.0, &[(x, 100), (src, 7)]),
            dispatch(1, 0.0, &[(x, 100), (src, 7)]),
        ]);
        assert_eq!(work, vec![KernelWork { kernel: 0, bytes: 440, flops: 50.0 }, KernelWork { kernel: 1, bytes: 428, flops: 0.0 }]);
    }
}
