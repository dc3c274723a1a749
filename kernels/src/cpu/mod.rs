//! CPU implementations of the templates (rayon across rows; `matrixmultiply` for dense blocks).
//! Fused row programs run on a small interpreter over per-thread scratch slots.

mod pivot;
mod simd;

use rayon::prelude::*;
use rgnn_ir::level2::*;
use rgnn_ir::{Activation, BinaryFn, Domain, NormKind, Reduce, RowIndex, SoftmaxGroup, WeightSelect};

/// A parameter: shape and f32 data.
#[derive(Clone, Copy)]
pub struct Param<'a> {
    pub shape: &'a [usize],
    pub data: &'a [f32],
}

/// The graph layouts the templates index through (built once per graph by the runtime).
#[derive(Clone, Copy, Default)]
pub struct GraphIndex<'a> {
    pub num_nodes: usize,
    /// Node id ranges per node type.
    pub type_offsets: &'a [usize],
    pub src: &'a [u32],
    pub dst: &'a [u32],
    pub rel: &'a [u32],
    /// CSR by destination, relation-sorted within a node.
    pub dst_ptr: &'a [usize],
    pub dst_edges: &'a [u32],
    /// (destination, relation) segments: edges `seg_ptr[s]..seg_ptr[s+1]` of `dst_edges`.
    pub seg_ptr: &'a [usize],
    pub seg_dst: &'a [u32],
    pub seg_rel: &'a [u32],
    pub node_seg_ptr: &'a [usize],
    pub edge_segment: &'a [u32],
    /// Compact (source, relation) rows grouped by relation.
    pub compact_ptr: &'a [usize],
    pub compact_src: &'a [u32],
    pub compact_rel: &'a [u32],
    pub edge_compact_row: &'a [u32],
    /// Edges grouped by relation.
    pub rel_ptr: &'a [usize],
    pub rel_edges: &'a [u32],
    /// Pair graphs: batch, nodes, node mask.
    pub pair: Option<(usize, usize, &'a [u8])>,
}

impl GraphIndex<'_> {
    pub fn rows(&self, d: Domain) -> usize {
        match d {
            Domain::Node(None) => self.num_nodes,
            Domain::Node(Some(t)) => self.type_offsets.get(t.0 + 1).map_or(0, |e| e - self.type_offsets[t.0]),
            Domain::Edge => self.src.len(),
            Domain::CompactSrcRel => self.compact_src.len(),
            Domain::CompactDstRel => self.seg_dst.len(),
            Domain::Pair => self.pair.map_or(0, |(b, n, _)| b * n * n),
            Domain::Graph => self.pair.map_or(1, |(b, _, _)| b),
        }
    }

    /// The row of a buffer reached from row `row` of domain `d` through `at`.
    fn resolve(&self, d: Domain, row: usize, at: RowRef) -> usize {
        match at {
            RowRef::Own => row,
            RowRef::EdgeSrc => self.src[row] as usize,
            RowRef::EdgeDst => self.dst[row] as usize,
            RowRef::EdgeCompactSrc => self.edge_compact_row[row] as usize,
            RowRef::EdgeCompactDst => self.edge_segment[row] as usize,
            RowRef::CompactNode => match d {
                Domain::CompactSrcRel => self.compact_src[row] as usize,
                _ => self.seg_dst[row] as usize,
            },
            RowRef::PairTranspose => {
                let n = self.pair.map_or(1, |(_, n, _)| n);
                let (b, i, k) = (row / (n * n), (row / n) % n, row % n);
                b * n * n + k * n + i
            }
            RowRef::TypedToGlobal => match d {
                Domain::Node(Some(t)) => self.type_offsets[t.0] + row,
                _ => row,
            },
        }
    }

    fn relation(&self, d: Domain, row: usize) -> usize {
        match d {
            Domain::Edge => self.rel[row] as usize,
            Domain::CompactSrcRel => self.compact_rel[row] as usize,
            Domain::CompactDstRel => self.seg_rel[row] as usize,
            _ => 0,
        }
    }

    fn node_type(&self, row: usize) -> usize {
        self.type_offsets.partition_point(|&o| o <= row).saturating_sub(1)
    }

    fn weight_type(&self, d: Domain, row: usize, select: WeightSelect) -> usize {
        match select {
            WeightSelect::Shared => 0,
            WeightSelect::Relation => self.relation(d, row),
            WeightSelect::NodeType => self.node_type(row),
        }
    }

    fn table_row(&self, d: Domain, row: usize, r: RowIndex) -> usize {
        match (r, d) {
            (RowIndex::Zero, _) => 0,
            (RowIndex::Src, Domain::Edge) => self.src[row] as usize,
            (RowIndex::Dst, Domain::Edge) => self.dst[row] as usize,
            (RowIndex::Src, Domain::CompactSrcRel) => self.compact_src[row] as usize,
            (RowIndex::Dst, Domain::CompactDstRel) => self.seg_dst[row] as usize,
            _ => row,
        }
    }

    fn pair_mask(&self, row: usize) -> bool {
        let (_, n, mask) = self.pair.expect("pair graph");
        let (b, i, k) = (row / (n * n), (row / n) % n, row % n);
        mask[b * n + i] != 0 && mask[b * n + k] != 0
    }
}

/// Output rows written from several threads; each row by exactly one task.
struct SharedRows {
    ptr: *mut f32,
    width: usize,
}
unsafe impl Sync for SharedRows {}
impl SharedRows {
    /// SAFETY: callers write disjoint rows, each in bounds.
    #[allow(clippy::mut_from_ref)]
    unsafe fn row(&self, r: usize) -> &mut [f32] {
        std::slice::from_raw_parts_mut(self.ptr.add(r * self.width), self.width)
    }
    /// Columns `start..start + len` of row `r`.
    /// SAFETY: callers write disjoint (row, column range) pairs, each in bounds.
    #[allow(clippy::mut_from_ref)]
    unsafe fn cols(&self, r: usize, start: usize, len: usize) -> &mut [f32] {
        std::slice::from_raw_parts_mut(self.ptr.add(r * self.width + start), len)
    }
}

/// Slot offsets of a row program in a flat scratch row.
fn slot_offsets(p: &RowProgram) -> (Vec<usize>, usize) {
    let mut off = Vec::with_capacity(p.widths.len());
    let mut total = 0;
    for w in &p.widths {
        off.push(total);
        total += w;
    }
    (off, total)
}

fn act(f: Activation, x: f32) -> f32 {
    match f {
        Activation::Relu => x.max(0.0),
        Activation::LeakyRelu(s) => {
            if x >= 0.0 {
                x
            } else {
                x * s
            }
        }
        Activation::Gelu => 0.5 * x * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2)),
        Activation::Silu => x / (1.0 + (-x).exp()),
        Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        Activation::Exp => x.exp(),
        Activation::Tanh => x.tanh(),
        Activation::Elu => {
            if x > 0.0 {
                x
            } else {
                x.exp_m1()
            }
        }
    }
}

/// `out[c] = f(x[c])`, with the function chosen once per row so each loop vectorises.
fn apply_activation(f: Activation, out: &mut [f32], x: &[f32]) {
    let zipped = out.iter_mut().zip(x);
    match f {
        Activation::Relu => zipped.for_each(|(o, &v)| *o = v.max(0.0)),
        Activation::LeakyRelu(s) => zipped.for_each(|(o, &v)| *o = if v >= 0.0 { v } else { v * s }),
        _ => zipped.for_each(|(o, &v)| *o = act(f, v)),
    }
}

/// `Σ f(x)` in f64 over eight independent lanes (one sequential chain would be latency-bound).
#[inline(always)]
fn lane_sum(x: &[f32], f: impl Fn(f64) -> f64) -> f64 {
    let mut lanes = [0f64; 8];
    let chunks = x.chunks_exact(8);
    let tail: f64 = chunks.remainder().iter().map(|&v| f(v as f64)).sum();
    for c in chunks {
        for l in 0..8 {
            lanes[l] += f(c[l] as f64);
        }
    }
    lanes.iter().sum::<f64>() + tail
}

/// Everything a row program can read.
struct Env<'a> {
    buffers: &'a [Option<Vec<f32>>],
    widths: &'a [usize],
    params: &'a [Param<'a>],
    g: &'a GraphIndex<'a>,
}

/// Run `prog` for row `row` of domain `d` into `scratch` (slots at `off`). `acc` feeds `Acc`,
/// `alpha` feeds `Softmax`. Ops before `start` are assumed done.
#[allow(clippy::too_many_arguments)]
fn run_row(
    env: &Env,
    prog: &RowProgram,
    off: &[usize],
    scratch: &mut [f32],
    d: Domain,
    row: usize,
    acc: &[f32],
    alpha: &[f32],
    upto: usize,
) {
    for (i, op) in prog.ops.iter().enumerate().take(upto) {
        let w = prog.widths[i];
        let (before, rest) = scratch.split_at_mut(off[i]);
        let out = &mut rest[..w];
        let slot = |s: usize| &before[off[s]..off[s] + prog.widths[s]];
        match op {
            RowOp::Load { buffer, at } => {
                let r = env.g.resolve(d, row, *at);
                let bw = env.widths[buffer.0];
                out.copy_from_slice(&env.buffers[buffer.0].as_ref().expect("live buffer")[r * bw..(r + 1) * bw]);
            }
            RowOp::Acc => out.copy_from_slice(acc),
            RowOp::Param { table, select, row: r } => {
                let p = &env.params[table.0];
                let (m, pw) = (p.shape[1], p.shape[2]);
                let t = env.g.weight_type(d, row, *select);
                let tr = env.g.table_row(d, row, *r);
                out.copy_from_slice(&p.data[(t * m + tr) * pw..(t * m + tr + 1) * pw]);
            }
            RowOp::Unary { x, f } => apply_activation(*f, out, slot(*x)),
            RowOp::Binary { a, b, f, a_shape, b_shape } => {
                let (av, bv) = (slot(*a), slot(*b));
                let op = |x: f32, y: f32| match f {
                    BinaryFn::Add => x + y,
                    BinaryFn::Sub => x - y,
                    BinaryFn::Mul => x * y,
                };
                if a_shape == b_shape {
                    // No broadcast: one loop per function, so each vectorises.
                    match f {
                        BinaryFn::Add => out.iter_mut().zip(av).zip(bv).for_each(|((o, &x), &y)| *o = x + y),
                        BinaryFn::Sub => out.iter_mut().zip(av).zip(bv).for_each(|((o, &x), &y)| *o = x - y),
                        BinaryFn::Mul => out.iter_mut().zip(av).zip(bv).for_each(|((o, &x), &y)| *o = x * y),
                    }
                } else {
                    for h in 0..a_shape.heads {
                        for c in 0..a_shape.dim {
                            let bi = (if b_shape.heads == 1 { 0 } else { h }) * b_shape.dim + if b_shape.dim == 1 { 0 } else { c };
                            out[h * a_shape.dim + c] = op(av[h * a_shape.dim + c], bv[bi]);
                        }
                    }
                }
            }
            RowOp::Bias { x, bias } => out.iter_mut().zip(slot(*x)).zip(env.params[bias.0].data).for_each(|((o, &v), &b)| *o = v + b),
            RowOp::Scale { x, factor } => out.iter_mut().zip(slot(*x)).for_each(|(o, &v)| *o = v * factor),
            RowOp::ScaleByParam { x, factor } => {
                let f = env.params[factor.0].data[0];
                out.iter_mut().zip(slot(*x)).for_each(|(o, &v)| *o = v * f)
            }
            RowOp::HeadDot { a, b, shape } => {
                let (av, bv) = (slot(*a), slot(*b));
                for h in 0..shape.heads {
                    out[h] = (0..shape.dim).map(|c| av[h * shape.dim + c] * bv[h * shape.dim + c]).sum();
                }
            }
            RowOp::HeadOuter { a, b, a_shape, b_shape } => {
                let (av, bv) = (slot(*a), slot(*b));
                for h in 0..a_shape.heads {
                    for x in 0..a_shape.dim {
                        for y in 0..b_shape.dim {
                            out[(h * a_shape.dim + x) * b_shape.dim + y] = av[h * a_shape.dim + x] * bv[h * b_shape.dim + y];
                        }
                    }
                }
            }
            RowOp::HeadMean { x, shape } => {
                let xv = slot(*x);
                for (c, o) in out.iter_mut().enumerate() {
                    *o = (0..shape.heads).map(|h| xv[h * shape.dim + c]).sum::<f32>() / shape.heads as f32;
                }
            }
            RowOp::Slice { x, start, len } => out.copy_from_slice(&slot(*x)[*start..start + len]),
            RowOp::Norm { x, kind, weight, bias } => {
                let xv = slot(*x);
                let (shift, inv) = match kind {
                    NormKind::LayerNorm { eps } => {
                        let mean = lane_sum(xv, |v| v) / w as f64;
                        let var = lane_sum(xv, |v| (v - mean) * (v - mean)) / w as f64;
                        (mean as f32, (1.0 / (var + *eps as f64).sqrt()) as f32)
                    }
                    NormKind::Rms { eps } => (0.0, (1.0 / (lane_sum(xv, |v| v * v) / w as f64 + *eps as f64).sqrt()) as f32),
                    NormKind::Affine => (0.0, 1.0),
                };
                out.iter_mut().zip(xv).for_each(|(o, &v)| *o = (v - shift) * inv);
                if let Some(p) = weight {
                    out.iter_mut().zip(env.params[p.0].data).for_each(|(o, &g)| *o *= g);
                }
                if let Some(p) = bias {
                    out.iter_mut().zip(env.params[p.0].data).for_each(|(o, &b)| *o += b);
                }
            }
            RowOp::GatedSkip { update, residual, gate } => {
                let s = 1.0 / (1.0 + (-env.params[gate.0].data[0]).exp());
                let (u, r) = (slot(*update), slot(*residual));
                for c in 0..w {
                    out[c] = s * u[c] + (1.0 - s) * r[c];
                }
            }
            RowOp::PairMask { x } => {
                let keep = env.g.pair_mask(row);
                out.iter_mut().zip(slot(*x)).for_each(|(o, &v)| *o = if keep { v } else { 0.0 });
            }
            RowOp::Softmax { .. } => out.copy_from_slice(alpha),
        }
    }
}

/// Buffers freed by earlier kernels (or runs), reused for later outputs: a fresh allocation of
/// this size costs a page fault per 4 KiB on first touch, which showed as an eighth of a
/// FloydNet pass. A buffer is reused only for outputs of at least half its size, so the pool
/// holds about what the largest run held.
#[derive(Default)]
pub struct BufferPool {
    free: Vec<Vec<f32>>,
}

impl BufferPool {
    /// A zeroed buffer of `len` floats.
    fn take(&mut self, len: usize) -> Vec<f32> {
        let fit =
            self.free.iter().enumerate().filter(|(_, v)| v.capacity() >= len && v.capacity() / 2 <= len).min_by_key(|(_, v)| v.capacity());
        match fit {
            Some((i, _)) => {
                let mut v = self.free.swap_remove(i);
                v.clear();
                v.resize(len, 0.0);
                v
            }
            None => vec![0.0; len],
        }
    }

    fn give(&mut self, v: Vec<f32>) {
        if v.capacity() > 0 {
            self.free.push(v);
        }
    }
}

/// Execute a kernel program. `buffers` holds the inputs (by buffer id); the rest are taken from
/// `pool` here and returned to it after their last reader. Returns every buffer that is still
/// held (outputs).
pub fn execute(
    kp: &KernelProgram,
    params: &[Param],
    g: &GraphIndex,
    mut buffers: Vec<Option<Vec<f32>>>,
    pool: &mut BufferPool,
) -> Vec<Option<Vec<f32>>> {
    let widths: Vec<usize> = kp.buffers.iter().map(|b| b.width).collect();
    buffers.resize(kp.buffers.len(), None);
    // RGNN_PROFILE=1: time per kernel on stderr (a development aid; benchmarks time whole runs).
    let profile = std::env::var_os("RGNN_PROFILE").is_some();
    for (k, kernel) in kp.kernels.iter().enumerate() {
        let started = std::time::Instant::now();
        let out_id = kernel.output();
        let out_buf = &kp.buffers[out_id.0];
        let mut out = buffers[out_id.0].take().unwrap_or_else(|| pool.take(g.rows(out_buf.domain) * out_buf.width));
        {
            let env = Env { buffers: &buffers, widths: &widths, params, g };
            let shared = SharedRows { ptr: out.as_mut_ptr(), width: out_buf.width };
            match kernel {
                Kernel::Gemm(gk) => gemm(&env, gk, &shared),
                Kernel::Traversal(t) => traversal(&env, t, &shared),
                Kernel::PivotAttention(p) => pivot::pivot(&env, p, &shared),
                Kernel::Map(m) => map(&env, m, &shared),
            }
        }
        buffers[out_id.0] = Some(out);
        if profile {
            eprintln!("k{k:<3} {:<16} {:>9.3} ms -> {}", kernel.template(), started.elapsed().as_secs_f64() * 1e3, out_buf.name);
        }
        // Free buffers whose last reader this was.
        for (i, b) in kp.buffers.iter().enumerate() {
            if b.lifetime.1 == k && !matches!(b.role, BufferRole::Output(_)) && BufferId(i) != out_id {
                if let Some(v) = buffers[i].take() {
                    pool.give(v);
                }
            }
        }
    }
    buffers
}

/// Rows of `d` grouped by weight type.
pub(crate) fn groups(g: &GraphIndex, d: Domain, select: WeightSelect, types: usize) -> Vec<(usize, Vec<u32>)> {
    let rows = g.rows(d);
    match (select, d) {
        (WeightSelect::Shared, _) => vec![(0, (0..rows as u32).collect())],
        (WeightSelect::Relation, Domain::CompactSrcRel) => {
            (0..types).map(|t| (t, (g.compact_ptr[t] as u32..g.compact_ptr[t + 1] as u32).collect())).collect()
        }
        (WeightSelect::Relation, Domain::Edge) => (0..types).map(|t| (t, g.rel_edges[g.rel_ptr[t]..g.rel_ptr[t + 1]].to_vec())).collect(),
        (WeightSelect::NodeType, _) => {
            (0..types).map(|t| (t, (g.type_offsets[t] as u32..g.type_offsets[t + 1] as u32).collect())).collect()
        }
        _ => {
            let mut by: Vec<Vec<u32>> = vec![vec![]; types];
            for r in 0..rows {
                by[g.weight_type(d, r, select)].push(r as u32);
            }
            by.into_iter().enumerate().collect()
        }
    }
}

/// Rows per GEMM work item (a multiple of the micro-kernel height; enough work per task).
const GEMM_ROWS: usize = 256;

fn gemm(env: &Env, k: &GemmKernel, out: &SharedRows) {
    let w = &env.params[k.weight.0];
    let (types, blocks, bin, bout) = (w.shape[0], w.shape[1], w.shape[2], w.shape[3]);
    let (in_w, out_w) = (blocks * bin, blocks * bout);
    let (in_off, in_total) = slot_offsets(&k.input);
    let (ep_off, ep_total) = slot_offsets(&k.epilogue);
    let work: Vec<(usize, Vec<u32>)> = groups(env.g, k.domain, k.select, types)
        .into_iter()
        .flat_map(|(t, rows)| rows.chunks(GEMM_ROWS).map(|c| (t, c.to_vec())).collect::<Vec<_>>())
        .collect();
    work.par_iter().for_each_init(
        || (vec![0f32; in_total], vec![0f32; ep_total], vec![0f32; GEMM_ROWS * in_w], vec![0f32; GEMM_ROWS * out_w]),
        |(sin, sep, a, c), (t, rows)| {
            let m = rows.len();
            let first = rows[0] as usize;
            let contiguous = rows[m - 1] as usize + 1 - first == m;
            // Fast paths: a plain contiguous input is read in place, a plain result written in place.
            let a_ptr = match (&k.input.ops[..], contiguous) {
                ([RowOp::Load { buffer, at: RowRef::Own }], true) => {
                    // SAFETY: rows first..first+m exist in the input buffer of width in_w.
                    unsafe { env.buffers[buffer.0].as_ref().expect("live buffer").as_ptr().add(first * in_w) }
                }
                _ => {
                    for (i, &r) in rows.iter().enumerate() {
                        run_row(env, &k.input, &in_off, sin, k.domain, r as usize, &[], &[], k.input.ops.len());
                        let res = k.input.result();
                        a[i * in_w..(i + 1) * in_w].copy_from_slice(&sin[in_off[res]..in_off[res] + in_w]);
                    }
                    a.as_ptr()
                }
            };
            let direct_out = contiguous && matches!(&k.epilogue.ops[..], [RowOp::Acc]);
            // SAFETY: rows first..first+m of the output belong to this work item only.
            let c_ptr = if direct_out { unsafe { out.ptr.add(first * out_w) } } else { c.as_mut_ptr() };
            let wt = &w.data[t * blocks * bin * bout..(t + 1) * blocks * bin * bout];
            for b in 0..blocks {
                // SAFETY: pointers and strides describe in-bounds row-major blocks.
                unsafe {
                    sgemm(
                        m,
                        bin,
                        bout,
                        1.0,
                        a_ptr.add(b * bin),
                        in_w,
                        1,
                        wt.as_ptr().add(b * bin * bout),
                        bout,
                        1,
                        0.0,
                        c_ptr.add(b * bout),
                        out_w,
                    )
                };
            }
            if direct_out {
                return;
            }
            for (i, &r) in rows.iter().enumerate() {
                run_row(env, &k.epilogue, &ep_off, sep, k.domain, r as usize, &c[i * out_w..(i + 1) * out_w], &[], k.epilogue.ops.len());
                let res = k.epilogue.result();
                // SAFETY: each row belongs to exactly one work item.
                let o = unsafe { out.row(r as usize) };
                o.copy_from_slice(&sep[ep_off[res]..ep_off[res] + o.len()]);
            }
        },
    );
}

fn reduce_into(acc: &mut [f32], x: &[f32], reduce: Reduce, first: bool) {
    match reduce {
        Reduce::Sum | Reduce::Mean => acc.iter_mut().zip(x).for_each(|(a, &v)| *a += v),
        Reduce::Max => acc.iter_mut().zip(x).for_each(|(a, &v)| *a = if first { v } else { a.max(v) }),
    }
}

/// One pass over each destination's edges with a running max per softmax column: on a new
/// maximum the sum and the accumulated messages are rescaled, so logits are computed once.
/// Equal to `Σ_e softmax(l)_e · value_e` with PyG's `sum + 1e-16` denominator.
fn traversal_online(env: &Env, t: &TraversalKernel, out: &SharedRows, si: usize, cols: &[usize]) {
    let g = env.g;
    let (off, total) = slot_offsets(&t.edge);
    let (ep_off, ep_total) = slot_offsets(&t.epilogue);
    let res = t.edge.result();
    let width = t.edge.widths[res];
    let RowOp::Softmax { x: logit_slot, group } = t.edge.ops[si] else { unreachable!() };
    let lw = t.edge.widths[logit_slot];
    let ones = vec![1f32; lw];
    (0..g.num_nodes).into_par_iter().for_each_init(
        || (vec![0f32; total], vec![0f32; ep_total], vec![0f32; width], vec![0f32; width], vec![0f32; lw], vec![0f32; lw]),
        |(s, sep, acc, group_acc, m, z), v| {
            acc.iter_mut().for_each(|x| *x = 0.0);
            let mut start_group = true;
            let segs = g.node_seg_ptr[v]..g.node_seg_ptr[v + 1];
            let last_seg = segs.end;
            for sg in segs {
                for p in g.seg_ptr[sg]..g.seg_ptr[sg + 1] {
                    if start_group {
                        m.iter_mut().for_each(|x| *x = f32::NEG_INFINITY);
                        z.iter_mut().for_each(|x| *x = 0.0);
                        group_acc.iter_mut().for_each(|x| *x = 0.0);
                        start_group = false;
                    }
                    // The value with alpha = 1 is the message before weighting.
                    run_row(env, &t.edge, &off, s, Domain::Edge, g.dst_edges[p] as usize, &[], &ones, t.edge.ops.len());
                    let logits = &s[off[logit_slot]..off[logit_slot] + lw];
                    let msg = &s[off[res]..off[res] + width];
                    let mut scale = [1f32; 64];
                    let mut weight = [0f32; 64];
                    let (scale, weight) =
                        if lw <= 64 { (&mut scale[..lw], &mut weight[..lw]) } else { unreachable!("at most 64 softmax columns") };
                    for c in 0..lw {
                        let new_m = m[c].max(logits[c]);
                        scale[c] = if m[c] == f32::NEG_INFINITY { 0.0 } else { (m[c] - new_m).exp() };
                        weight[c] = (logits[c] - new_m).exp();
                        z[c] = z[c] * scale[c] + weight[c];
                        m[c] = new_m;
                    }
                    for (j, a) in group_acc.iter_mut().enumerate() {
                        *a = *a * scale[cols[j]] + weight[cols[j]] * msg[j];
                    }
                }
                // A group ends with the segment (within-relation softmax) or with the node.
                if (group == SoftmaxGroup::DstRel || sg + 1 == last_seg) && !start_group {
                    for (j, a) in acc.iter_mut().enumerate() {
                        *a += group_acc[j] / (z[cols[j]] + 1e-16);
                    }
                    start_group = true;
                }
            }
            run_row(env, &t.epilogue, &ep_off, sep, Domain::Node(None), v, acc, &[], t.epilogue.ops.len());
            // SAFETY: node rows are written by their own task.
            let o = unsafe { out.row(v) };
            o.copy_from_slice(&sep[ep_off[t.epilogue.result()]..ep_off[t.epilogue.result()] + o.len()]);
        },
    );
}

fn traversal(env: &Env, t: &TraversalKernel, out: &SharedRows) {
    if t.online_softmax {
        let (si, cols) = t.edge.softmax_weighting().expect("lowering checked the pattern");
        return traversal_online(env, t, out, si, &cols);
    }
    let g = env.g;
    let (off, total) = slot_offsets(&t.edge);
    let (ep_off, ep_total) = slot_offsets(&t.epilogue);
    let res = t.edge.result();
    let width = t.edge.widths[res];
    let softmax = t.edge.ops.iter().position(|o| matches!(o, RowOp::Softmax { .. }));
    let item_domain = if t.over_segments { Domain::CompactDstRel } else { Domain::Edge };
    (0..g.num_nodes).into_par_iter().for_each_init(
        || (vec![0f32; total], vec![0f32; ep_total], vec![0f32; width], vec![0f32; width], Vec::<f32>::new(), Vec::<f32>::new()),
        |(s, sep, acc, seg_acc, logits, stats), v| {
            // Items: the node's in-edges, or its segments; grouped into segments per relation.
            let segs: Vec<(usize, usize, usize)> = if t.over_segments {
                (g.node_seg_ptr[v]..g.node_seg_ptr[v + 1]).map(|sg| (sg, sg, sg + 1)).collect()
            } else {
                (g.node_seg_ptr[v]..g.node_seg_ptr[v + 1]).map(|sg| (sg, g.seg_ptr[sg], g.seg_ptr[sg + 1])).collect()
            };
            let item = |p: usize| if t.over_segments { p } else { g.dst_edges[p] as usize };
            // Softmax statistics (max, sum per column) per group: the node, or each segment.
            let mut alpha_of: Option<(usize, SoftmaxGroup, usize)> = None;
            if let Some(si) = softmax {
                let RowOp::Softmax { x, group } = t.edge.ops[si] else { unreachable!() };
                let lw = t.edge.widths[x];
                let n_items: usize = segs.iter().map(|(_, a, b)| b - a).sum();
                logits.clear();
                logits.resize(n_items * lw, 0.0);
                let mut i = 0;
                for &(_, a, b) in &segs {
                    for p in a..b {
                        run_row(env, &t.edge, &off, s, item_domain, item(p), &[], &[], si);
                        logits[i * lw..(i + 1) * lw].copy_from_slice(&s[off[x]..off[x] + lw]);
                        i += 1;
                    }
                }
                // stats: per group, max (from -inf) then sum per column.
                let n_groups = if group == SoftmaxGroup::Dst { 1 } else { segs.len() };
                stats.clear();
                stats.resize(n_groups * 2 * lw, 0.0);
                for g in stats.chunks_mut(2 * lw) {
                    g[..lw].fill(f32::NEG_INFINITY);
                }
                let mut i = 0;
                for (gi_seg, &(_, a, b)) in segs.iter().enumerate() {
                    let gi = if group == SoftmaxGroup::Dst { 0 } else { gi_seg };
                    for _ in a..b {
                        for c in 0..lw {
                            let m = &mut stats[gi * 2 * lw + c];
                            *m = m.max(logits[i * lw + c]);
                        }
                        i += 1;
                    }
                }
                let mut i = 0;
                for (gi_seg, &(_, a, b)) in segs.iter().enumerate() {
                    let gi = if group == SoftmaxGroup::Dst { 0 } else { gi_seg };
                    for _ in a..b {
                        for c in 0..lw {
                            let m = stats[gi * 2 * lw + c];
                            stats[gi * 2 * lw + lw + c] += (logits[i * lw + c] - m).exp();
                        }
                        i += 1;
                    }
                }
                alpha_of = Some((si, group, lw));
            }
            acc.iter_mut().for_each(|a| *a = 0.0);
            let mut alpha = vec![0f32; alpha_of.map_or(0, |(_, _, lw)| lw)];
            let mut i = 0;
            let mut any = false;
            for (gi_seg, &(sg, a, b)) in segs.iter().enumerate() {
                seg_acc.iter_mut().for_each(|x| *x = 0.0);
                for (j, p) in (a..b).enumerate() {
                    if let Some((_, group, lw)) = alpha_of {
                        let gi = if group == SoftmaxGroup::Dst { 0 } else { gi_seg };
                        for c in 0..lw {
                            let (m, z) = (stats[gi * 2 * lw + c], stats[gi * 2 * lw + lw + c]);
                            alpha[c] = ((logits[i * lw + c] - m).exp() as f64 / (z as f64 + 1e-16)) as f32;
                        }
                    }
                    run_row(env, &t.edge, &off, s, item_domain, item(p), &[], &alpha, t.edge.ops.len());
                    let x = &s[off[res]..off[res] + width];
                    if t.per_relation {
                        reduce_into(seg_acc, x, t.reduce, j == 0);
                    } else {
                        reduce_into(acc, x, t.reduce, !any);
                    }
                    any = true;
                    i += 1;
                }
                if t.per_relation && b > a {
                    if t.reduce == Reduce::Mean {
                        let n = (b - a) as f32;
                        seg_acc.iter_mut().for_each(|x| *x /= n);
                    }
                    if t.domain == Domain::CompactDstRel {
                        run_row(env, &t.epilogue, &ep_off, sep, Domain::CompactDstRel, sg, seg_acc, &[], t.epilogue.ops.len());
                        // SAFETY: segment rows belong to this node only.
                        let o = unsafe { out.row(sg) };
                        o.copy_from_slice(&sep[ep_off[t.epilogue.result()]..ep_off[t.epilogue.result()] + o.len()]);
                    } else {
                        acc.iter_mut().zip(seg_acc.iter()).for_each(|(x, &y)| *x += y);
                    }
                }
            }
            if t.domain == Domain::CompactDstRel {
                return;
            }
            if !t.per_relation && t.reduce == Reduce::Mean && i > 0 {
                let n = i as f32;
                acc.iter_mut().for_each(|x| *x /= n);
            }
            run_row(env, &t.epilogue, &ep_off, sep, Domain::Node(None), v, acc, &[], t.epilogue.ops.len());
            // SAFETY: node rows are written by their own task.
            let o = unsafe { out.row(v) };
            o.copy_from_slice(&sep[ep_off[t.epilogue.result()]..ep_off[t.epilogue.result()] + o.len()]);
        },
    );
}

/// `C = alpha·A·B + beta·C` for strided row-major operands (thin wrapper over matrixmultiply).
/// SAFETY: every (row, col) reached through the strides must be in bounds of its slice.
#[allow(clippy::too_many_arguments)]
unsafe fn sgemm(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: *const f32,
    rsa: usize,
    csa: usize,
    b: *const f32,
    rsb: usize,
    csb: usize,
    beta: f32,
    c: *mut f32,
    rsc: usize,
) {
    matrixmultiply::sgemm(m, k, n, alpha, a, rsa as isize, csa as isize, b, rsb as isize, csb as isize, beta, c, rsc as isize, 1);
}

/// `e^x` for softmax weights, branch-free so loops over it vectorise: `x = n·ln2 + r` with
/// `|r| ≤ ln2/2` (ln2 split in two constants so `r` stays exact, Cody and Waite), `e^r` by its
/// degree-6 Taylor polynomial, `2^n` through the exponent bits; relative error below 5e-7.
/// `n` is rounded by adding 1.5·2²³, which leaves it in the low mantissa bits: no float → int
/// conversion, whose saturating semantics would keep the loop scalar.
/// Inputs below -87 clamp there (≈ 1.6e-38; masked scores of -1e9 thus weigh 1.6e-38, not 0,
/// which no f32 sum can notice), above 88 saturate.
#[inline(always)]
fn fast_exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const SHIFTER: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let t = x * std::f32::consts::LOG2_E + SHIFTER;
    let n = t - SHIFTER;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // |n| ≤ 127 after the clamp, so the shifted bits are exactly n plus the shifter's.
    let n_bits = t.to_bits().wrapping_sub(SHIFTER.to_bits()).wrapping_add(127);
    p * f32::from_bits(n_bits << 23)
}

fn map(env: &Env, m: &MapKernel, out: &SharedRows) {
    let (off, total) = slot_offsets(&m.program);
    let res = m.program.result();
    (0..env.g.rows(m.domain)).into_par_iter().for_each_init(
        || vec![0f32; total],
        |s, r| {
            run_row(env, &m.program, &off, s, m.domain, r, &[], &[], m.program.ops.len());
            let target = env.g.resolve(m.domain, r, m.output_at);
            // SAFETY: distinct rows map to distinct target rows.
            let o = unsafe { out.row(target) };
            o.copy_from_slice(&s[off[res]..off[res] + o.len()]);
        },
    );
}

#[cfg(test)]
mod tests {
    use super::fast_exp;

    #[test]
    fn fast_exp_is_accurate_where_softmax_uses_it() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x <= 0.0 {
            let (got, want) = (fast_exp(x) as f64, (x as f64).exp());
            worst = worst.max((got - want).abs() / want);
            x += 0.013;
        }
        assert!(worst < 5e-7, "worst relative error {worst:e}");
        assert!(fast_exp(-1e9) < 1e-37);
        assert_eq!(fast_exp(0.0), 1.0);
    }
}
