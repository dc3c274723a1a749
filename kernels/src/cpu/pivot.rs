//! Pivot attention (FloydNet) on the CPU, fused and cache-blocked.
//!
//! For one batch `b` and head `h`, output pair `(i, k)` attends over pivots `j`:
//! `s_j = scale · q_ik · (k_ij + k_jk)`, `y_ik = Σ_j softmax(s)_j · (v_ij + v_jk)`.
//! A task owns a few micro-blocks of `IB` query rows `i` of one head; it walks the `k` axis in
//! blocks of `KB`, and for each `IB × KB` block of pairs computes all `N` scores (a
//! register-blocked micro-kernel with the pivots in vector lanes), the softmax, and the value sum
//! (channels in vector lanes), then writes the block's outputs. The score tensor is never stored
//! beyond one `IB × KB × N` block (16 KiB at N = 256), so memory is O(N²), and the `k_jk` /
//! `v_jk` packs of a `k` block are loaded into the core's caches once for all the task's rows.
//!
//! Operands are repacked so the micro-kernels read contiguous, zero-padded rows: once per batch
//! the `k_jk` keys as `[k][h][e][j]` and the `v_jk` values as `[k][h][j][e]` (shared by all
//! tasks), and per task its own `k_ij` as `[i][e][j]`, `v_ij` as `[i][j][e]` and scaled queries.
//! The micro-kernels are written once over a 16-float vector type (`simd::Simd`) and compiled
//! once per instruction set (AVX-512, AVX2 + FMA, portable), each with register blocks sized
//! for its register file.

// The micro-kernels index register blocks by position on purpose: `acc[ii][kk][l]` reads as
// the block it is, and fixed trip counts are what the vectoriser unrolls.
#![allow(clippy::needless_range_loop)]

use super::{fast_exp, Env, SharedRows};
use rayon::prelude::*;
use rgnn_ir::level2::PivotKernel;

// `L`: vector lanes of the micro-kernels, pivots per score step, channels per value step. Pivot
// and channel axes of the packs are padded to a multiple of it.
#[cfg(target_arch = "x86_64")]
use super::simd::{Avx2, Avx512};
use super::simd::{Portable, Simd, L};

/// One lane vector.
type Lanes = [f32; L];

/// A `[B·N·N, width]` operand buffer and the column where this operand starts.
#[derive(Clone, Copy)]
struct Operand<'a> {
    data: &'a [f32],
    width: usize,
    col: usize,
}

impl Operand<'_> {
    /// The first `len` channels of this operand at pair `(x, y)` of batch `b`.
    fn row(&self, b: usize, x: usize, y: usize, n: usize, len: usize) -> &[f32] {
        let at = (b * n * n + x * n + y) * self.width + self.col;
        &self.data[at..at + len]
    }

    /// Ask for the cache line holding channel `c` at pair `(x, y)` ahead of its use (where the
    /// CPU has a prefetch hint; `y` past the row is ignored). Rows of one head are a cache line
    /// each, far apart, so the hardware prefetchers, which stop at page ends, miss them.
    #[inline(always)]
    fn prefetch(&self, b: usize, x: usize, y: usize, n: usize, c: usize) {
        if y < n {
            if let Some(v) = self.data.get((b * n * n + x * n + y) * self.width + self.col + c) {
                prefetch_line(v);
            }
        }
    }

    /// The `d` channels of head `h` at pair `(x, y)` of batch `b`.
    fn head(&self, b: usize, x: usize, y: usize, n: usize, h: usize, d: usize) -> &[f32] {
        &self.row(b, x, y, n, (h + 1) * d)[h * d..]
    }
}

#[inline(always)]
fn prefetch_line(v: &f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch hint has no effect on the program's state; SSE is baseline on x86_64.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(v as *const f32 as *const i8)
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

/// Sizes shared by every task of one kernel.
#[derive(Clone, Copy)]
struct Dims {
    n: usize,
    /// Head dimension, and it padded to lanes.
    d: usize,
    dp: usize,
    /// Pivots padded to whole lane vectors (the loops' bound), and the row pitch of the
    /// pivot-major packs and score rows: `nv`, or one vector more so that a pitch is an odd
    /// number of cache lines. (With a power-of-two pitch the rows that a micro-kernel reads
    /// together all fall in a few sets of the L1 cache and evict each other.)
    nv: usize,
    np: usize,
}

/// Micro-block sizes `(IB, KB)`: `IB · KB` vector accumulators must fit the register file beside
/// the `IB + KB` operand vectors (AVX-512: 32 zmm; AVX2: 16 ymm, two per vector).
const AVX512_BLOCK: (usize, usize) = (4, 4);
const SMALL_BLOCK: (usize, usize) = (2, 2);

/// The micro-kernel flavour the CPU supports, picked once per call.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Isa {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Portable,
}

impl Isa {
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            // Exactly the features `task_avx512` / `task_avx2` are compiled with.
            let avx2 = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
            if avx2 && std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512vl") {
                return Isa::Avx512;
            }
            if avx2 {
                return Isa::Avx2;
            }
        }
        Isa::Portable
    }

    /// Query rows (`IB`) and `k` columns (`KB`) of a micro-block.
    fn block(self) -> (usize, usize) {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => (AVX512_BLOCK.0, AVX512_BLOCK.1),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => (SMALL_BLOCK.0, SMALL_BLOCK.1),
            Isa::Portable => (SMALL_BLOCK.0, SMALL_BLOCK.1),
        }
    }
}

/// The batch-wide packs of the `k_jk` keys `[k][h][e][j]` and `v_jk` values `[k][h][j][e]`.
struct SharedPacks {
    heads: usize,
    k2t: Vec<f32>,
    v2p: Vec<f32>,
}

/// Pivot columns `k` per packing job: each job reads rows `(j, k..k + PACK_COLS)`, which are
/// contiguous, for every `j`, and its packs (`PACK_COLS · heads` × 2 × `N · d` floats) stay in
/// cache while it scatters into them.
const PACK_COLS: usize = 4;

impl SharedPacks {
    fn new(heads: usize, dims: Dims) -> Self {
        let Dims { n, d, dp, np, .. } = dims;
        SharedPacks { heads, k2t: vec![0.0; n * heads * d * np], v2p: vec![0.0; n * heads * np * dp] }
    }

    fn k2t(&self, k: usize, h: usize, dims: Dims) -> &[f32] {
        let len = dims.d * dims.np;
        let at = (k * self.heads + h) * len;
        &self.k2t[at..at + len]
    }

    fn v2p(&self, k: usize, h: usize, dims: Dims) -> &[f32] {
        let len = dims.np * dims.dp;
        let at = (k * self.heads + h) * len;
        &self.v2p[at..at + len]
    }

    fn fill(&mut self, k2: Operand, v2: Operand, b: usize, dims: Dims) {
        let Dims { n, d, dp, np, .. } = dims;
        let heads = self.heads;
        let (kt_len, vp_len) = (heads * d * np, heads * np * dp);
        self.k2t.par_chunks_mut(PACK_COLS * kt_len).zip(self.v2p.par_chunks_mut(PACK_COLS * vp_len)).enumerate().for_each(
            |(job, (kt, vp))| {
                let k0 = job * PACK_COLS;
                for j0 in (0..n).step_by(L) {
                    for kk in 0..PACK_COLS {
                        for l in 0..L {
                            k2.prefetch(b, j0 + L + l, k0 + kk, n, 0);
                            v2.prefetch(b, j0 + L + l, k0 + kk, n, 0);
                        }
                    }
                    for (kk, (kt, vp)) in kt.chunks_mut(kt_len).zip(vp.chunks_mut(vp_len)).enumerate() {
                        let k = (k0 + kk).min(n - 1);
                        for h in 0..heads {
                            pack_pivots(
                                dims,
                                j0,
                                |j| k2.head(b, j, k, n, h, d),
                                |j| v2.head(b, j, k, n, h, d),
                                &mut kt[h * d * np..(h + 1) * d * np],
                                &mut vp[h * np * dp..(h + 1) * np * dp],
                            );
                        }
                    }
                }
            },
        );
    }
}

/// A task's own packs and working set.
struct TaskScratch {
    /// For the task's rows: `k_ij` as `[ii][e][j]`, `v_ij` as `[ii][j][e]`, scaled `q_ik` as
    /// `[ii][k][e]`.
    k1t: Vec<f32>,
    v1p: Vec<f32>,
    q: Vec<f32>,
    /// Scores then softmax numerators of one block, `[ii][kk][j]`.
    s: Vec<f32>,
    /// Value sums of one block, `[ii][kk][e]`, and the softmax denominators' inverses.
    y: Vec<f32>,
    inv_z: Vec<f32>,
}

impl TaskScratch {
    fn new(rows: usize, ib: usize, kb: usize, dims: Dims) -> Self {
        let Dims { n, d, dp, np, .. } = dims;
        TaskScratch {
            k1t: vec![0.0; rows * d * np],
            v1p: vec![0.0; rows * np * dp],
            q: vec![0.0; rows * n * d],
            s: vec![0.0; ib * kb * np],
            y: vec![0.0; ib * kb * dp],
            inv_z: vec![0.0; ib * kb],
        }
    }
}

/// Micro-blocks of query rows per task (at most).
const ROW_BLOCKS_PER_TASK: usize = 4;

/// Everything a task reads: the operands, the shared packs, the masks.
struct TaskInput<'a> {
    ops: [Operand<'a>; 5],
    packs: &'a SharedPacks,
    dims: Dims,
    b: usize,
    /// Query rows per task.
    rows: usize,
    scale: f32,
    /// Whether each node of this batch is real (query row `i` is masked by it), and the same
    /// padded to `nv` with zeros: whether pivot `j` takes part.
    real: &'a [u8],
    keep: &'a [u8],
}

pub(super) fn pivot(env: &Env, p: &PivotKernel, out: &SharedRows) {
    pivot_on(Isa::detect(), env, p, out)
}

fn pivot_on(isa: Isa, env: &Env, p: &PivotKernel, out: &SharedRows) {
    let (batch, n, mask) = env.g.pair.expect("pivot attention runs on a pair graph");
    let (heads, d) = (p.shape.heads, p.shape.dim);
    if n == 0 || d == 0 {
        return;
    }
    let ops = p.operands.map(|(buf, col)| Operand {
        data: env.buffers[buf.0].as_ref().expect("pivot operand is live").as_slice(),
        width: env.widths[buf.0],
        col,
    });
    let nv = n.next_multiple_of(L);
    let np = if (nv / L).is_multiple_of(2) { nv + L } else { nv };
    let dims = Dims { n, d, dp: d.next_multiple_of(L), nv, np };
    let (ib, kb) = isa.block();
    // Query rows per task: several micro-blocks, so each block of `k_jk` / `v_jk` packs is
    // loaded into the core's cache once for all of them; fewer where tasks would run short.
    let threads = rayon::current_num_threads();
    let mut rows = ib * ROW_BLOCKS_PER_TASK;
    while rows > ib && n.div_ceil(rows) * heads < 4 * threads {
        rows -= ib;
    }
    let mut packs = SharedPacks::new(heads, dims);
    for b in 0..batch {
        let real = &mask[b * n..(b + 1) * n];
        let mut keep = real.to_vec();
        keep.resize(dims.nv, 0);
        packs.fill(ops[2], ops[4], b, dims);
        let tasks = n.div_ceil(rows);
        let input = TaskInput { ops, packs: &packs, dims, b, rows, scale: p.scale, real, keep: &keep };
        // Heads inner: neighbouring tasks read the same operand rows (other heads' columns).
        (0..tasks * heads).into_par_iter().for_each_init(
            || TaskScratch::new(rows, ib, kb, dims),
            |scratch, task| run_task(isa, &input, task % heads, task / heads * rows, scratch, out),
        );
    }
}

fn run_task(isa: Isa, t: &TaskInput, h: usize, i0: usize, s: &mut TaskScratch, out: &SharedRows) {
    // SAFETY: the target features were detected at run time by `Isa::detect`.
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { task_avx512(t, h, i0, s, out) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { task_avx2(t, h, i0, s, out) },
        Isa::Portable => task::<Portable, { SMALL_BLOCK.0 }, { SMALL_BLOCK.1 }>(t, h, i0, s, out),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn task_avx512(t: &TaskInput, h: usize, i0: usize, s: &mut TaskScratch, out: &SharedRows) {
    task::<Avx512, { AVX512_BLOCK.0 }, { AVX512_BLOCK.1 }>(t, h, i0, s, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn task_avx2(t: &TaskInput, h: usize, i0: usize, s: &mut TaskScratch, out: &SharedRows) {
    task::<Avx2, { SMALL_BLOCK.0 }, { SMALL_BLOCK.1 }>(t, h, i0, s, out)
}

/// One task: query rows `i0 .. i0 + rows` of head `h` against every `k`, in micro-blocks of
/// `IB × KB` pairs. Rows and columns past `N` repeat the last one and are not written.
#[inline(always)]
fn task<S: Simd, const IB: usize, const KB: usize>(t: &TaskInput, h: usize, i0: usize, s: &mut TaskScratch, out: &SharedRows) {
    let Dims { n, d, dp, np, .. } = t.dims;
    let b = t.b;
    let [q_op, k1_op, _, v1_op, _] = t.ops;
    for ii in 0..t.rows {
        let i = (i0 + ii).min(n - 1);
        for j0 in (0..n).step_by(L) {
            for l in 0..L {
                k1_op.prefetch(b, i, j0 + L + l, n, h * d);
                v1_op.prefetch(b, i, j0 + L + l, n, h * d);
            }
            pack_pivots(
                t.dims,
                j0,
                |j| k1_op.head(b, i, j, n, h, d),
                |j| v1_op.head(b, i, j, n, h, d),
                &mut s.k1t[ii * d * np..(ii + 1) * d * np],
                &mut s.v1p[ii * np * dp..(ii + 1) * np * dp],
            );
        }
        for k in 0..n {
            q_op.prefetch(b, i, k + L, n, h * d);
            let q = &mut s.q[(ii * n + k) * d..(ii * n + k + 1) * d];
            q.iter_mut().zip(q_op.head(b, i, k, n, h, d)).for_each(|(o, &x)| *o = x * t.scale);
        }
    }
    // One micro-block's queries `[e][ii][kk]` and softmax numerators `[j][ii][kk]`: the
    // micro-kernels broadcast them from one base address at fixed offsets.
    let mut qb = vec![[[0f32; KB]; IB]; d];
    let mut pt = vec![[[0f32; KB]; IB]; t.dims.nv];
    for k0 in (0..n).step_by(KB) {
        let cols: [usize; KB] = std::array::from_fn(|kk| (k0 + kk).min(n - 1));
        let k2t: [&[f32]; KB] = cols.map(|k| t.packs.k2t(k, h, t.dims));
        let v2p: [&[f32]; KB] = cols.map(|k| t.packs.v2p(k, h, t.dims));
        for r0 in (0..t.rows).step_by(IB) {
            let rows: [usize; IB] = std::array::from_fn(|ii| (i0 + r0 + ii).min(n - 1));
            let query_real: [bool; IB] = rows.map(|i| t.real[i] != 0);
            for (e, qe) in qb.iter_mut().enumerate() {
                *qe = std::array::from_fn(|ii| cols.map(|k| s.q[((r0 + ii) * n + k) * d + e]));
            }
            scores::<S, IB, KB>(t.dims, &qb, &s.k1t[r0 * d * np..], &k2t, &mut s.s);
            softmax_numerators::<IB, KB>(t.dims, &query_real, t.keep, &s.s, &mut pt, &mut s.inv_z);
            values::<S, IB, KB>(t.dims, &pt, &s.v1p[r0 * np * dp..], &v2p, &mut s.y);
            for (ii, &i) in rows.iter().enumerate().filter(|&(ii, _)| i0 + r0 + ii < n) {
                for (kk, &k) in cols.iter().enumerate().filter(|&(kk, _)| k0 + kk < n) {
                    let pair = ii * KB + kk;
                    let inv = s.inv_z[pair];
                    // SAFETY: the (pair, head) column range is written by this task only.
                    let o = unsafe { out.cols(b * n * n + i * n + k, h * d, d) };
                    o.iter_mut().zip(&s.y[pair * dp..pair * dp + d]).for_each(|(o, &y)| *o = y * inv);
                }
            }
        }
    }
}

/// Pack pivots `j0 .. j0 + L` of one key / value row (fixed `i` or fixed `k`) and head: the keys
/// transposed into `kt` (`[e][j]`, pitch `np`; pivots past `N` repeat the last one, which the
/// softmax masks) and the values into `vp` (`[j][e]`, pitch `dp`).
#[inline(always)]
fn pack_pivots<'a>(
    dims: Dims,
    j0: usize,
    key: impl Fn(usize) -> &'a [f32],
    value: impl Fn(usize) -> &'a [f32],
    kt: &mut [f32],
    vp: &mut [f32],
) {
    let Dims { n, dp, np, .. } = dims;
    let keys: [&[f32]; L] = std::array::from_fn(|l| key((j0 + l).min(n - 1)));
    transpose_rows(&keys, kt, np, j0);
    for j in j0..(j0 + L).min(n) {
        copy_channels(&mut vp[j * dp..], value(j));
    }
}

/// `dst[e · pitch + j0 + l] = rows[l][e]`: `L` pivots' channels, transposed into lane vectors.
#[inline(always)]
fn transpose_rows(rows: &[&[f32]; L], dst: &mut [f32], pitch: usize, j0: usize) {
    let d = rows[0].len();
    assert!(rows.iter().all(|r| r.len() == d) && dst.len() >= (d.max(1) - 1) * pitch + j0 + L);
    for e in 0..d {
        let v: Lanes = std::array::from_fn(|l| rows[l][e]);
        dst[e * pitch + j0..e * pitch + j0 + L].copy_from_slice(&v);
    }
}

/// `dst[..src.len()] = src`, inlined as one vector move for a head of `L` channels (the
/// common head size) rather than a call to `memcpy`.
#[inline(always)]
fn copy_channels(dst: &mut [f32], src: &[f32]) {
    if src.len() == L {
        let v: Lanes = src.try_into().expect("L channels");
        dst[..L].copy_from_slice(&v);
    } else {
        dst[..src.len()].copy_from_slice(src);
    }
}

/// `S[ii][kk][j] = Σ_e q[e][ii][kk] · (k1t[ii][e][j] + k2t[kk][e][j])` for the pivots in whole
/// lane vectors.
#[inline(always)]
fn scores<S: Simd, const IB: usize, const KB: usize>(dims: Dims, q: &[[[f32; KB]; IB]], k1t: &[f32], k2t: &[&[f32]; KB], s: &mut [f32]) {
    let Dims { d, nv, np, .. } = dims;
    // Every load below is in bounds by these (checked once, not per element).
    assert!(q.len() == d && d > 0 && nv <= np);
    assert!(k1t.len() >= ((IB - 1) * d + d - 1) * np + nv && k2t.iter().all(|k| k.len() >= (d - 1) * np + nv));
    assert!(s.len() >= (IB * KB - 1) * np + nv);
    for j in (0..nv).step_by(L) {
        let mut acc = [[S::zero(); KB]; IB];
        for (e, qe) in q.iter().enumerate() {
            // SAFETY: the offsets are at most the bounds asserted above.
            let a: [S::V; IB] = std::array::from_fn(|ii| unsafe { S::load(k1t.as_ptr().add((ii * d + e) * np + j)) });
            let c: [S::V; KB] = std::array::from_fn(|kk| unsafe { S::load(k2t[kk].as_ptr().add(e * np + j)) });
            for ii in 0..IB {
                for kk in 0..KB {
                    acc[ii][kk] = S::madd(qe[ii][kk], S::add(a[ii], c[kk]), acc[ii][kk]);
                }
            }
        }
        for ii in 0..IB {
            for kk in 0..KB {
                // SAFETY: in bounds by the assert above.
                unsafe { S::store(s.as_mut_ptr().add((ii * KB + kk) * np + j), acc[ii][kk]) };
            }
        }
    }
}

/// Softmax numerators `p[j][ii][kk] = e^(s_j − max)` (masked pivots: 0) from the scores
/// `s[ii][kk][j]`, and `1 / Σ_j` per pair. A padding query row scores every pivot −1e9 in the
/// reference, so its softmax is uniform over all `N` pivots.
#[inline(always)]
fn softmax_numerators<const IB: usize, const KB: usize>(
    dims: Dims,
    query_real: &[bool; IB],
    keep: &[u8],
    s: &[f32],
    p: &mut [[[f32; KB]; IB]],
    inv_z: &mut [f32],
) {
    let Dims { n, nv, np, .. } = dims;
    assert!(keep.len() == nv && p.len() == nv);
    for ii in 0..IB {
        for kk in 0..KB {
            let pair = ii * KB + kk;
            if !query_real[ii] {
                (0..nv).for_each(|j| p[j][ii][kk] = if j < n { 1.0 } else { 0.0 });
                inv_z[pair] = 1.0 / n as f32;
                continue;
            }
            // Whole lane vectors (padding pivots are not kept) and lane-wise partial max and
            // sum keep both loops vectorised.
            let row = &s[pair * np..pair * np + nv];
            let mut m = [f32::NEG_INFINITY; L];
            for (c, r) in row.chunks_exact(L).zip(keep.chunks_exact(L)) {
                for l in 0..L {
                    m[l] = if r[l] != 0 { m[l].max(c[l]) } else { m[l] };
                }
            }
            let m = m.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let mut z = [0f32; L];
            for ((c, r), pc) in row.chunks_exact(L).zip(keep.chunks_exact(L)).zip(p.chunks_exact_mut(L)) {
                let mut e: Lanes = [0.0; L];
                for l in 0..L {
                    let x = fast_exp(c[l] - m);
                    e[l] = if r[l] != 0 { x } else { 0.0 };
                    z[l] += e[l];
                }
                for l in 0..L {
                    pc[l][ii][kk] = e[l];
                }
            }
            inv_z[pair] = 1.0 / z.iter().sum::<f32>();
        }
    }
}

/// `Y[ii][kk][e] = Σ_j p[j][ii][kk] · (v1p[ii][j][e] + v2p[kk][j][e])` over real pivots.
#[inline(always)]
fn values<S: Simd, const IB: usize, const KB: usize>(dims: Dims, p: &[[[f32; KB]; IB]], v1p: &[f32], v2p: &[&[f32]; KB], y: &mut [f32]) {
    let Dims { n, dp, np, .. } = dims;
    // Every load below is in bounds by these (checked once, not per element).
    assert!(p.len() >= n && n > 0 && n <= np);
    assert!(v1p.len() >= ((IB - 1) * np + n - 1) * dp + dp && v2p.iter().all(|v| v.len() >= (n - 1) * dp + dp));
    for e in (0..dp).step_by(L) {
        let mut acc = [[S::zero(); KB]; IB];
        for (j, pj) in p[..n].iter().enumerate() {
            // SAFETY: the offsets are at most the bounds asserted above.
            let a: [S::V; IB] = std::array::from_fn(|ii| unsafe { S::load(v1p.as_ptr().add((ii * np + j) * dp + e)) });
            let c: [S::V; KB] = std::array::from_fn(|kk| unsafe { S::load(v2p[kk].as_ptr().add(j * dp + e)) });
            for ii in 0..IB {
                for kk in 0..KB {
                    acc[ii][kk] = S::madd(pj[ii][kk], S::add(a[ii], c[kk]), acc[ii][kk]);
                }
            }
        }
        assert!(y.len() >= (IB * KB - 1) * dp + e + L);
        for ii in 0..IB {
            for kk in 0..KB {
                // SAFETY: in bounds by the assert above.
                unsafe { S::store(y.as_mut_ptr().add((ii * KB + kk) * dp + e), acc[ii][kk]) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::GraphIndex;
    use rgnn_ir::level2::BufferId;
    use rgnn_ir::Shape;

    /// Every micro-kernel flavour this CPU can run.
    fn available() -> Vec<Isa> {
        let mut all = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                all.push(Isa::Avx2);
            }
            if Isa::detect() == Isa::Avx512 {
                all.push(Isa::Avx512);
            }
        }
        all
    }

    /// The reference's definition, in f64: masked pivots score −1e9, softmax over all `N`.
    fn naive(x: &[f32], width: usize, (batch, n, heads, d): (usize, usize, usize, usize), scale: f64, mask: &[u8]) -> Vec<f64> {
        let c = heads * d;
        let at = |b: usize, r: usize, col: usize, op: usize, h: usize, e: usize| {
            x[((b * n * n) + r * n + col) * width + op * c + h * d + e] as f64
        };
        let mut y = vec![0f64; batch * n * n * c];
        for b in 0..batch {
            for h in 0..heads {
                for i in 0..n {
                    for k in 0..n {
                        let s: Vec<f64> = (0..n)
                            .map(|j| {
                                if mask[b * n + i] == 0 || mask[b * n + j] == 0 {
                                    return -1e9;
                                }
                                (0..d).map(|e| at(b, i, k, 0, h, e) * (at(b, i, j, 1, h, e) + at(b, j, k, 2, h, e))).sum::<f64>() * scale
                            })
                            .collect();
                        let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                        let w: Vec<f64> = s.iter().map(|v| (v - m).exp()).collect();
                        let z: f64 = w.iter().sum();
                        for e in 0..d {
                            y[(b * n * n + i * n + k) * c + h * d + e] =
                                (0..n).map(|j| w[j] / z * (at(b, i, j, 3, h, e) + at(b, j, k, 4, h, e))).sum::<f64>();
                        }
                    }
                }
            }
        }
        y
    }

    #[test]
    fn every_flavour_matches_the_definition() {
        // N not a multiple of the lanes or of the blocks; head sizes below, at and above one
        // lane vector; padding nodes in one graph of the batch.
        for &(n, heads, d) in &[(5, 1, 3), (19, 2, 16), (37, 3, 8), (24, 2, 20)] {
            let batch = 2;
            let width = 5 * heads * d + 3; // operands share one buffer, as `c_qkv` makes them
            let mut seed = 0x2545_f491_u32 ^ (n * 131 + d) as u32;
            let x: Vec<f32> = (0..batch * n * n * width)
                .map(|_| {
                    seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (seed >> 8) as f32 / (1u32 << 24) as f32 * 4.0 - 2.0
                })
                .collect();
            let mut mask = vec![1u8; batch * n];
            for v in &mut mask[n + n * 2 / 3..] {
                *v = 0;
            }
            let scale = 1.0 / ((2 * d) as f32).sqrt();
            let want = naive(&x, width, (batch, n, heads, d), scale as f64, &mask);
            let kernel = PivotKernel {
                operands: std::array::from_fn(|o| (BufferId(0), o * heads * d)),
                shape: Shape::new(heads, d),
                scale,
                output: BufferId(1),
            };
            let g = GraphIndex { pair: Some((batch, n, &mask)), ..GraphIndex::default() };
            let buffers = vec![Some(x.clone()), None];
            let widths = [width, heads * d];
            let env = Env { buffers: &buffers, widths: &widths, params: &[], g: &g };
            for isa in available() {
                let mut got = vec![f32::NAN; batch * n * n * heads * d];
                pivot_on(isa, &env, &kernel, &SharedRows { ptr: got.as_mut_ptr(), width: heads * d });
                // Relative to the largest output, as the fixture comparisons measure.
                let top = want.iter().fold(0f64, |a, w| a.max(w.abs()));
                let worst = got.iter().zip(&want).map(|(&g, &w)| (g as f64 - w).abs()).fold(0f64, f64::max) / top;
                assert!(worst < 1e-5, "{isa:?} N={n} heads={heads} d={d}: max error {worst:e} of the largest output");
            }
        }
    }
}
