//! The templates as device kernels, for WGSL and CUDA alike (the languages differ only in the
//! spellings of [`Lang`] and in how a kernel is finished: bindings or parameters).
//!
//! - **map** (and the GEMM's prologue / epilogue passes): one thread per row; in CUDA a warp per
//!   row (lanes over columns, the row's arrays in shared memory, reductions by shuffles) when
//!   one warp's fit a block's static shared memory ([`warps_fitting`]).
//! - **GEMM**: 64×64 output tiles per workgroup of 16×16 threads (4×4 each), operands staged
//!   through workgroup memory in K steps of 16; rows of one weight type per tile (a per-kernel
//!   table), so per-relation weights need no sorting at run time. In CUDA on sm_80+ the tiles run
//!   on tensor cores (`mma.sync`) with two shared-memory stages, the next K step's rows arriving by
//!   `cp.async` during the current one's multiply (plain f32: split tf32, three products per
//!   tile, f32 accuracy). A non-trivial input program runs first as a row pass into scratch
//!   (in CUDA: inside the GEMM as it loads A, when column-separable, or with one norm whose row
//!   statistics a row pass computes first); a non-trivial epilogue runs after as a row pass (in
//!   CUDA: as the GEMM stores, when column-separable).
//! - **traversal**: destination-parallel over relation-sorted CSR segments, with an online
//!   max-subtracted softmax (or the two-pass form), sum / mean / max, per-relation segments, no
//!   atomics. Destinations go by degree class: a thread each for the few in-edges most have; in
//!   CUDA a warp each from [`WARP_ITEMS`] in-edges (lanes split the edges, or segments, and merge
//!   by warp shuffles); a workgroup each from [`HUB_ITEMS`] ("hubs": threads merge through
//!   workgroup memory). In CUDA, messages of [`COLUMN_MIN_WIDTH`] columns or more take a warp
//!   per destination below a hub with the lanes over the columns instead (coalesced rows, the
//!   row arrays in the warp's shared memory), and up to [`HUB_WARPS`] such warps per hub, merging
//!   through their slices.
//! - **pivot attention**: one thread per (pair, head) with an online softmax over pivots; in
//!   CUDA with tensor cores, a block per 16 × 16 query pairs of one head, both score terms and
//!   both halves of P·V as `mma.sync` products (see `Templates::pivot_mma`).

use crate::gpu::{gemm_row_groups, gemm_tiles, grid, ArrayRef, Dispatch, Elem, IndexArray};
use crate::source::{column_loop, column_separable, column_separable_but_one_norm, GenCtx, Lang, Shader, NEG_BIG, WARP_SYNC};
use rgnn_ir::level2::DType;
use rgnn_ir::level2::*;
use rgnn_ir::{Domain, Reduce, SoftmaxGroup};
use std::fmt::Write;

/// Which destinations a traversal dispatch covers.
enum Nodes {
    /// Every node, one thread each.
    All,
    /// The listed nodes, one thread each.
    Listed(Vec<u32>),
    /// The listed nodes, one warp each (CUDA).
    Warps(Vec<u32>),
    /// The listed nodes, one workgroup each.
    Hubs(Vec<u32>),
    /// The listed nodes (`None`: every node), one warp each with the lanes over the message's
    /// columns (CUDA): each edge row is read whole by the warp, the row arrays live in shared
    /// memory, and the warp walks the edges in order (no merge). With the warps per block.
    Columns(Option<Vec<u32>>, usize),
    /// The listed nodes, n column-split warps each (up to [`HUB_WARPS`]): warp w takes every
    /// n-th edge (or segment) from the w-th, and the warps merge through their slices.
    ColumnHubs(Vec<u32>, usize),
}

/// In CUDA, destinations with at least this many in-edges (or segments) get a warp of their own:
/// from here a warp's shuffles cost less than one thread walking the edges alone.
pub const WARP_ITEMS: usize = 32;
/// Warps per block of a warp-per-destination traversal.
const WARPS_PER_GROUP: usize = 4;
/// In CUDA, traversals whose messages have at least this many columns put a warp on every
/// destination below [`HUB_ITEMS`] with its lanes over the columns ([`Nodes::Columns`]), when the
/// rows fit a block's shared memory ([`warps_fitting`]): a thread per destination would read
/// rows uncoalesced and keep them in local memory.
const COLUMN_MIN_WIDTH: usize = 32;
/// Warps of a column-split hub's block.
const HUB_WARPS: usize = 8;
/// Stands for the size of a warp's shared slice (warp-per-row kernels) until the body is written.
const WARP_SLICE_MARK: &str = "RG_WARP_SLICE_FLOATS";
/// Destinations with at least this many in-edges (or segments) get a workgroup of their own.
pub const HUB_ITEMS: usize = 256;
/// Threads of a hub workgroup, and columns combined per step through workgroup memory.
const HUB_THREADS: usize = 64;
const HUB_CHUNK: usize = 16;
/// Widest message a hub workgroup combines (its result row lives in workgroup memory).
const MAX_HUB_WIDTH: usize = 2048;

/// At least the floats of a column-split traversal's shared slice per warp: the destination's
/// accumulators, the softmax statistics (seven arrays at most), the edge program (twice with a
/// two-pass softmax: its logits beside the message) and the epilogue.
fn column_floats(t: &TraversalKernel) -> usize {
    let width = t.edge.widths[t.edge.result()];
    let logits = t.edge.ops.iter().filter_map(|o| if let RowOp::Softmax { x, .. } = o { Some(t.edge.widths[*x]) } else { None }).max();
    let copies = if logits.is_some() && !t.online_softmax { 2 } else { 1 };
    2 * width + 7 * logits.unwrap_or(0) + copies * t.edge.widths.iter().sum::<usize>() + t.epilogue.widths.iter().sum::<usize>()
}

/// Tensor-core pivot attention (CUDA): a block takes this many query rows i × columns k (the
/// rows of an `mma.sync` tile) and this many pivots per step, with [`PIVOT_WARPS`] warps.
const PIVOT_TILE: usize = 16;
const PIVOT_WARPS: usize = 8;
/// Query-row tiles a run of consecutive tensor-core pivot blocks covers (an L2 swizzle).
const PIVOT_GROUP: usize = 8;
// Each warp owns two of the tile's i and two of its k; a thread runs the softmax of one (i, k).
const _: () = assert!(PIVOT_WARPS * 2 == PIVOT_TILE && PIVOT_WARPS * 32 == PIVOT_TILE * PIVOT_TILE);
/// Widest head the tensor-core pivot attention takes (its Q, V fragments and y accumulators live
/// in registers); split tf32 adds its split operands at every product, so it stays at 16 until
/// ptxas on a GPU shows 32 fits without spills.
const PIVOT_MAX_DIM: usize = 32;
const PIVOT_MAX_DIM_SPLIT: usize = 16;

/// How pivot attention uses tensor cores.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum PivotMma {
    /// One product per tile in the operand type (f16, bf16, or tf32 when allowed).
    Single,
    /// f32 storage without tf32: every product as three tf32 products, hi·hi + hi·lo + lo·hi
    /// (each operand split into a tf32 value and a tf32 remainder), which keeps f32 accuracy.
    SplitTf32,
}

/// Whether, and how, pivot attention with heads of `dim` channels runs on tensor cores: the head
/// width must be a whole number of K steps (16 for f16 / bf16, 8 for tf32) and at most
/// [`PIVOT_MAX_DIM`] ([`PIVOT_MAX_DIM_SPLIT`] split); other widths take the SIMT kernel.
fn pivot_tensor_cores(ctx: &GenCtx, dim: usize) -> Option<PivotMma> {
    if ctx.lang != Lang::Cuda || !dim.is_multiple_of(mma_operands(ctx.storage, false).k_step) {
        return None;
    }
    if ctx.tensor_cores && dim <= PIVOT_MAX_DIM {
        Some(PivotMma::Single)
    } else if ctx.split_tf32 && dim <= PIVOT_MAX_DIM_SPLIT {
        Some(PivotMma::SplitTf32)
    } else {
        None
    }
}

/// How a storage type meets the tensor cores (CUDA): the operand's register type in shared
/// memory, the conversion of an f32 value to it, the `mma.sync` wrapper, and its K step.
struct MmaOperands {
    ty: &'static str,
    convert: &'static str,
    mma: &'static str,
    k_step: usize,
}

/// f16 / bf16 storage: 16-bit operands, K = 16; f32: tf32 bit patterns, K = 8, or with `split`
/// whole f32 bits that `rg_mma_tf32x3` splits.
fn mma_operands(storage: DType, split: bool) -> MmaOperands {
    let (ty, convert, mma, k_step) = match storage {
        DType::F16 => ("unsigned short", "rg_f2h", "rg_mma_f16", 16),
        DType::BF16 => ("unsigned short", "rg_f2b", "rg_mma_bf16", 16),
        DType::F32 if split => ("unsigned", "rg_to_bits", "rg_mma_tf32x3", 8),
        DType::F32 => ("unsigned", "rg_f2tf32", "rg_mma_tf32", 8),
    };
    MmaOperands { ty, convert, mma, k_step }
}

/// Threads per workgroup of the row-parallel kernels.
const ROW_GROUP: usize = 64;
/// CUDA kernels with a warp per row: warps per block, when their slices fit.
const ROW_WARPS: usize = 4;
/// Floats of a block's static shared memory (48 KB).
const SHARED_FLOATS: usize = 48 * 1024 / 4;

/// Warps per block (CUDA warp-per-row and column-split kernels) whose slices of `floats` each
/// fit the block's shared memory: `most`, else the largest fewer by halves, None when one warp's
/// slice would not fit (then a thread per row). Fewer warps per block beat a thread per row
/// holding a wide row in local memory (ptxas: thousands of bytes of spills at 512 columns).
fn warps_fitting(floats: usize, most: usize) -> Option<usize> {
    std::iter::successors(Some(most), |w| (*w > 1).then_some(w / 2)).find(|w| w * floats <= SHARED_FLOATS)
}
/// GEMM tile: rows, columns, K step.
const TM: usize = 64;
const TN: usize = 64;
const TK: usize = 16;

/// How a language turns a finished body into a dispatch.
pub trait Finish {
    fn finish(&self, sh: Shader, label: String, workgroups: [u32; 3]) -> Dispatch;
    fn max_workgroups_per_dim(&self) -> u32;
}

/// Every dispatch of the program, in order.
pub fn generate(ctx: &GenCtx, fin: &dyn Finish) -> Result<Vec<Dispatch>, String> {
    let t = Templates { ctx, fin, l: ctx.lang };
    let absorbed = absorbed_slice_maps(ctx.kp, ctx.param_shapes, ctx.lang);
    let skipped: Vec<usize> = absorbed.values().flatten().copied().collect();
    let mut out = vec![];
    for (k, kernel) in ctx.kp.kernels.iter().enumerate() {
        let first = out.len();
        if skipped.contains(&k) {
            continue; // its GEMM stored its rows
        }
        match kernel {
            Kernel::Map(m) => {
                let w = ctx.kp.buffer(m.output).width;
                out.push(t.rowwise(format!("k{k} map"), m.domain, &m.program, None, ArrayRef::Data(m.output), w, m.output_at)?)
            }
            Kernel::Gemm(gk) => t.gemm(k, gk, absorbed.get(&k).cloned().unwrap_or_default(), &mut out)?,
            Kernel::Traversal(tk) => out.extend(t.traversals(k, tk)?),
            Kernel::PivotAttention(p) => out.push(t.pivot(k, p)?),
        }
        out[first..].iter_mut().for_each(|d| d.kernel = k);
    }
    Ok(out)
}

/// What both GEMM bodies take from [`Templates::gemm`]: where A is read (and through which row
/// reference; `None`: each element computed by the input program, see [`fuses_prologue`]) and
/// C written, every row in weight-type order, the tiles `(type, first, count)`, column tiles per
/// block, and the grid's x extent (tiles beyond it go to z).
struct GemmTiling {
    a: Option<(ArrayRef, RowRef)>,
    /// With `a` computed: its one norm takes each row's shift and scale from the stats pass's
    /// scratch (see [`normalizes_on_load`]).
    normalized: bool,
    c_array: ArrayRef,
    /// The epilogue runs on each product as it is stored (see [`fuses_epilogue`]).
    fused_epilogue: bool,
    /// Map kernels whose slices of the product it stores (see [`absorbed_slice_maps`]).
    slice_maps: Vec<usize>,
    row_list: Vec<u32>,
    tiles: Vec<u32>,
    col_tiles: usize,
    grid_x: u32,
}

/// See [`Templates::gemm_exprs`].
struct GemmExprs {
    t_type: String,
    t_start: String,
    t_cnt: String,
    r: String,
    a_row: String,
    /// Sets `a` to A's element at the tile's row `m`, column `k0 + kk` of block `blk`.
    a_set: String,
    w_val: String,
    /// Run once per tile row `li` (below `cnt`, `r` its row) before the first barrier: what
    /// `a_set` needs of the row in shared memory.
    row_setup: String,
}

struct Templates<'c, 'a> {
    ctx: &'c GenCtx<'a>,
    fin: &'c dyn Finish,
    l: Lang,
}

impl<'c, 'a> Templates<'c, 'a> {
    /// `let {name} = <flat thread index>; if ({name} >= rows) return;` for `rows` threads.
    fn row_header(&self, sh: &mut Shader, rows: usize, name: &str) -> [u32; 3] {
        let wg = grid(rows.div_ceil(ROW_GROUP), self.fin.max_workgroups_per_dim());
        sh.line(&format!("    {}", self.l.let_(name, &format!("gid_x + gid_y * {}u", wg[0] as usize * ROW_GROUP))));
        sh.line(&format!("    if ({name} >= {rows}u) {{ return; }}"));
        wg
    }

    /// One thread (CUDA: one warp) per row of `domain`: run `program` (its `Acc` read from row
    /// `row` of `acc_from`, when given) and store the result at the output row reached by
    /// `output_at`.
    #[allow(clippy::too_many_arguments)]
    fn rowwise(
        &self,
        label: String,
        domain: Domain,
        program: &RowProgram,
        acc_from: Option<(ArrayRef, usize)>,
        output: ArrayRef,
        out_width: usize,
        output_at: RowRef,
    ) -> Result<Dispatch, String> {
        let l = self.l;
        let acc_w = acc_from.map_or(0, |(_, w)| w);
        let (mut sh, wg, warp) = self.row_kernel(domain, acc_w + program.widths.iter().sum::<usize>());
        let done = if warp { format!("\n    {WARP_SYNC}") } else { String::new() };
        let columns = |w: usize| column_loop(l, warp, "c", w);
        if let Some((a, w)) = acc_from {
            let v = sh.ld(a, &format!("row * {w}u + c"));
            let decl = sh.row_scratch("acc", w);
            sh.line(&format!("    {decl}\n    {} acc[c] = {v}; }}{done}", columns(w)));
        }
        sh.program(program, domain, "row", "acc", "acc", program.ops.len(), "s", "    ");
        let res = program.result();
        if program.widths[res] != out_width {
            return Err(format!("{label}: result width {} but output width {out_width}", program.widths[res]));
        }
        let target = sh.resolve(domain, "row", output_at);
        let st = sh.st(output, &format!("o * {out_width}u + c"), &format!("s{res}[c]"));
        sh.line(&format!("    {}\n    {} {st} }}", l.let_("o", &target), columns(out_width)));
        Ok(self.finish_warp_rows(sh, label, wg))
    }

    /// A kernel over the rows of `domain` whose row arrays take `row_floats` floats, its row
    /// `row`: on CUDA a warp per row when they fit the warp's share of shared memory (lanes over
    /// columns: coalesced loads and stores, no per-thread local arrays; the `bool`), else a
    /// thread per row.
    fn row_kernel(&self, domain: Domain, row_floats: usize) -> (Shader<'c, 'a>, [u32; 3], bool) {
        let rows = self.ctx.g.rows(domain);
        match if self.l == Lang::Cuda { warps_fitting(row_floats, ROW_WARPS) } else { None } {
            Some(warps) => {
                let mut sh = Shader::new(self.ctx, (warps * 32, 1));
                let wg = self.warp_rows_header(&mut sh, rows, "row");
                (sh, wg, true)
            }
            None => {
                let mut sh = Shader::new(self.ctx, (ROW_GROUP, 1));
                let wg = self.row_header(&mut sh, rows, "row");
                (sh, wg, false)
            }
        }
    }

    /// CUDA, for a GEMM whose input program normalises on load ([`normalizes_on_load`]): per
    /// row of `domain`, the program up to its norm at slot `norm`, and the norm's shift and
    /// inverse scale stored to scratch 0 at `2 * row` and `2 * row + 1`.
    fn norm_stats(&self, label: String, domain: Domain, program: &RowProgram, norm: usize) -> Dispatch {
        let (mut sh, wg, warp) = self.row_kernel(domain, program.widths[..=norm].iter().sum());
        sh.program(program, domain, "row", "acc", "acc", norm + 1, "s", "    ");
        let shift = sh.st(ArrayRef::Scratch(0), "row * 2u", &format!("s{norm}_shift"));
        let inv = sh.st(ArrayRef::Scratch(0), "row * 2u + 1u", &format!("s{norm}_inv"));
        // In a warp per row every lane holds the sums; one stores.
        let only = if warp { "if (lane == 0u) " } else { "" };
        sh.line(&format!("    {only}{{ {shift} {inv} }}"));
        self.finish_warp_rows(sh, label, wg)
    }

    /// CUDA, a warp per row of `n` (blocks of `sh.workgroup.0 / 32` warps): `lane`, the warp's
    /// row `{name}` (past `n` the warp leaves), and its slice of shared memory `rg_ws`, from
    /// which [`Shader::row_array`] and [`Shader::program`] take their arrays (sized by
    /// [`Templates::finish_warp_rows`]).
    fn warp_rows_header(&self, sh: &mut Shader, n: usize, name: &str) -> [u32; 3] {
        let warps = sh.workgroup.0 / 32;
        let wg = grid(n.div_ceil(warps), self.fin.max_workgroups_per_dim());
        sh.line(&format!(
            "    const unsigned lane = li & 31u;
    const auto {name} = (wg_x + wg_y * {}u) * {warps}u + (li >> 5u);
    if ({name} >= {n}u) {{ return; }}
    float* rg_ws = rg_ws_all + (li >> 5u) * {WARP_SLICE_MARK}u;",
            wg[0]
        ));
        sh.warp_rows = Some(0);
        wg
    }

    /// Finish a kernel; one with a warp per row gets its warps' shared slices, now that the body
    /// says how large they are.
    fn finish_warp_rows(&self, mut sh: Shader, label: String, wg: [u32; 3]) -> Dispatch {
        if sh.warp_rows.is_some() {
            let floats = sh.warp_rows_peak.max(1);
            let warps = sh.workgroup.0 / 32;
            sh.globals.push_str(&format!("__shared__ float rg_ws_all[{}];\n", warps * floats));
            sh.body = sh.body.replace(WARP_SLICE_MARK, &floats.to_string());
        }
        self.fin.finish(sh, label, wg)
    }

    /// The grouped GEMM (and its input and epilogue row kernels where it does not fuse them);
    /// `slice_maps`: the map kernels it stores its product into instead of its output.
    fn gemm(&self, k: usize, gk: &GemmKernel, slice_maps: Vec<usize>, out: &mut Vec<Dispatch>) -> Result<(), String> {
        let shape = &self.ctx.param_shapes[gk.weight.0];
        let (types, blocks, bin, bout) = (shape[0], shape[1], shape[2], shape[3]);
        let (in_w, out_w) = (blocks * bin, blocks * bout);
        // The A operand: a plain (possibly gathered) buffer row, the input program applied to
        // each element as it is loaded (its norm's row statistics from a pass of their own), or
        // the prologue's scratch rows.
        let normalized = normalizes_on_load(self.l, self.ctx.param_shapes, gk);
        let a = match (&gk.input.ops[..], normalized) {
            ([RowOp::Load { buffer, at }], _) => Some((ArrayRef::Data(*buffer), *at)),
            _ if fuses_prologue(self.l, self.ctx.param_shapes, gk) => None,
            (_, Some(norm)) => {
                out.push(self.norm_stats(format!("k{k} gemm input norm stats"), gk.domain, &gk.input, norm));
                None
            }
            _ => {
                out.push(self.rowwise(format!("k{k} gemm input"), gk.domain, &gk.input, None, ArrayRef::Scratch(0), in_w, RowRef::Own)?);
                Some((ArrayRef::Scratch(0), RowRef::Own))
            }
        };
        let plain_epilogue = matches!(&gk.epilogue.ops[..], [RowOp::Acc]);
        let fused_epilogue = fuses_epilogue(self.l, self.ctx.kp, self.ctx.param_shapes, gk);
        let c_array = if plain_epilogue || fused_epilogue { ArrayRef::Data(gk.output) } else { ArrayRef::Scratch(1) };

        let groups = gemm_row_groups(self.ctx.g, gk.domain, gk.select, types);
        let (row_list, tiles) = gemm_tiles(&groups, TM);
        let n_tiles = tiles.len() / 3;
        let col_tiles = bout.div_ceil(TN);
        let tile_grid = grid(n_tiles, self.fin.max_workgroups_per_dim());
        let workgroups = [tile_grid[0], (blocks * col_tiles) as u32, tile_grid[1]];

        let flops = 2.0 * (row_list.len() * blocks * bin * bout) as f64;
        let gemm_rows = row_list.len();
        let tiling = GemmTiling {
            a,
            normalized: normalized.is_some(),
            c_array,
            fused_epilogue,
            slice_maps,
            row_list,
            tiles,
            col_tiles,
            grid_x: tile_grid[0],
        };
        let (sh, label) = if self.ctx.tensor_cores {
            (self.gemm_mma(gk, tiling, false), format!("k{k} gemm (tensor cores)"))
        } else if self.ctx.split_tf32 {
            (self.gemm_mma(gk, tiling, true), format!("k{k} gemm (tensor cores, split tf32)"))
        } else {
            (self.gemm_simt(gk, tiling), format!("k{k} gemm"))
        };
        let d = self.fin.finish(sh, label, workgroups);
        // Each of its rows reads or writes at most one row of every buffer it binds (its A row,
        // the epilogue's rows, a slice map's output row).
        let touched = d
            .bindings
            .iter()
            .filter_map(|b| match b.array {
                ArrayRef::Data(id) => Some((b.array, gemm_rows * self.ctx.kp.buffer(id).width)).filter(|&(_, elems)| elems < b.len),
                _ => None,
            })
            .collect();
        out.push(Dispatch { flops, touched, ..d });
        if !plain_epilogue && !fused_epilogue {
            let w = self.ctx.kp.buffer(gk.output).width;
            out.push(self.rowwise(
                format!("k{k} gemm epilogue"),
                gk.domain,
                &gk.epilogue,
                Some((ArrayRef::Scratch(1), out_w)),
                ArrayRef::Data(gk.output),
                w,
                RowRef::Own,
            )?);
        }
        Ok(())
    }

    /// What both GEMM bodies read, as expressions over their variable names: the tile's weight
    /// type, first row and row count (`tile`), a row of the tile (`li`) and the A row it reads
    /// (`r`), an element of A (`arow[m]`, `blk`, `k0 + kk`) and of W (`ttype`, `k0 + kb`, `n0 + nb`).
    fn gemm_exprs(
        &self,
        sh: &mut Shader,
        gk: &GemmKernel,
        a: Option<(ArrayRef, RowRef)>,
        normalized: bool,
        rows_t: ArrayRef,
        tiles_t: ArrayRef,
    ) -> GemmExprs {
        let shape = &self.ctx.param_shapes[gk.weight.0];
        let (blocks, bin, bout) = (shape[1], shape[2], shape[3]);
        let in_w = blocks * bin;
        let col = format!("blk * {bin}u + k0 + kk");
        let (a_row, a_set) = match a {
            Some((array, at)) => (sh.resolve(gk.domain, "r", at), format!("a = {};", sh.ld(array, &format!("arow[m] * {in_w}u + {col}")))),
            None => {
                let norm = normalized.then_some(("rstat[2u * m]", "rstat[2u * m + 1u]"));
                let code = sh.column_program(&gk.input, gk.domain, "orow[m]", &self.l.f(0.0), &col, "pr", norm);
                ("r".to_string(), format!("{code} a = pr{};", gk.input.result()))
            }
        };
        // The tile rows' norm shift and scale, from the stats pass.
        let row_setup = if normalized {
            sh.globals.push_str(&self.l.shared("rstat", Elem::F32, 2 * TM));
            sh.globals.push('\n');
            let (shift, inv) = (sh.ld(ArrayRef::Scratch(0), "r * 2u"), sh.ld(ArrayRef::Scratch(0), "r * 2u + 1u"));
            format!("rstat[2u * li] = {shift}; rstat[2u * li + 1u] = {inv};")
        } else {
            String::new()
        };
        GemmExprs {
            t_type: sh.ld(tiles_t, "tile * 3u"),
            t_start: sh.ld(tiles_t, "tile * 3u + 1u"),
            t_cnt: sh.ld(tiles_t, "tile * 3u + 2u"),
            r: sh.ld(rows_t, "start + li"),
            a_row,
            a_set,
            row_setup,
            w_val: sh.ld(ArrayRef::Param(gk.weight), &format!("((ttype * {blocks}u + blk) * {bin}u + k0 + kb) * {bout}u + n0 + nb")),
        }
    }

    /// CUDA tensor cores: 64×64 output tiles per block of 4 warps, each warp 32×32 as 2×4 tiles
    /// of 16×8 with f32 accumulators: `mma.sync.m16n8k16` on f16 / bf16 storage, two
    /// `mma.sync.m16n8k8` on tf32 for f32 storage; with `split`, each of those as three tf32
    /// products of the operands' tf32 values and remainders (f32 accuracy).
    ///
    /// Two shared-memory stages: while the warps multiply one K step, the next one's A rows
    /// arrive by `cp.async` (copied as stored, converted when the fragments are read) and its
    /// weights wait in registers, to be converted and stored after the multiply; one barrier per
    /// K step. A computed by the input program, or rows not 4-byte aligned, wait in registers
    /// like the weights. B is kept transposed so
    /// each lane's k values are adjacent; row pitches are padded so the fragment reads of a warp
    /// hit 32 different banks.
    fn gemm_mma(&self, gk: &GemmKernel, tiling: GemmTiling, split: bool) -> Shader<'c, 'a> {
        let GemmTiling { a, normalized, c_array, fused_epilogue, slice_maps, row_list, tiles, col_tiles, grid_x } = tiling;
        let shape = &self.ctx.param_shapes[gk.weight.0];
        let (blocks, bin, bout) = (shape[1], shape[2], shape[3]);
        let in_w = blocks * bin;
        let mut sh = Shader::new(self.ctx, (128, 1));
        // The operand type in shared memory and the conversion to it: 16-bit values (f16 / bf16
        // storage), tf32 bit patterns (f32 storage with tf32 allowed), or whole f32 bits that
        // `rg_mma_tf32x3` splits (`split`: f32 storage, tf32 not allowed). f32 operands take
        // tf32 fragments, K step 8.
        let f32_operands = self.ctx.storage == DType::F32;
        let MmaOperands { ty: op_ty, convert, mma, k_step } = mma_operands(self.ctx.storage, split);
        // A rows by cp.async in the largest copy their alignment allows (16 or 4 bytes; A's rows
        // are `in_w` elements apart and a block starts `bin` in), else (or computed by a fused
        // input program) by plain loads, converted.
        let a_elem = a.map_or(Elem::F32, |(array, _)| sh.elem(array));
        let a_bytes = a_elem.bytes();
        let aligned = |bytes: usize| (in_w * a_bytes).is_multiple_of(bytes) && (bin * a_bytes).is_multiple_of(bytes);
        let copy_bytes = a.and_then(|_| [16, 4].into_iter().find(|&b| aligned(b)));
        let a_ty = match (copy_bytes, a_elem) {
            (Some(_), Elem::F32) => "float",
            (Some(_), _) => "unsigned short",
            (None, _) => op_ty,
        };
        // Row pitches (elements): a warp's fragment reads then fall in distinct banks.
        let pitch = |ty: &str| if ty == "unsigned short" { TK + 8 } else { TK + 4 };
        let (ap, bp) = (pitch(a_ty), pitch(op_ty));
        // A lane's fragments for the K step at `ks`, from its rows r0 / r1 and column c0 (layouts
        // in the prelude's comments): 16-bit operands come in adjacent pairs, tf32 ones singly.
        let a_at_k = |k: &str| -> String {
            let at = |x: &str| format!("sa[cur][{x}]");
            match (f32_operands, a_ty) {
                (true, "float") => format!("{convert}({})", at(k)),
                (true, _) => at(k),
                (false, "float") => format!("rg_pack2({convert}({}), {convert}({}))", at(k), at(&format!("{k} + 1u"))),
                (false, _) => format!("*(const unsigned*)&{}", at(k)),
            }
        };
        let b_at_k = |k: &str| if f32_operands { format!("sbt[cur][{k}]") } else { format!("*(const unsigned*)&sbt[cur][{k}]") };
        let (a_frag, b_frag) = if f32_operands {
            (["r0 + t", "r1 + t", "r0 + t + 4u", "r1 + t + 4u"].map(a_at_k), ["c0 + t", "c0 + t + 4u"].map(b_at_k))
        } else {
            (
                ["r0 + 2u * t", "r1 + 2u * t", "r0 + 2u * t + 8u", "r1 + 2u * t + 8u"].map(a_at_k),
                ["c0 + 2u * t", "c0 + 2u * t + 8u"].map(b_at_k),
            )
        };
        let ([a0, a1, a2, a3], [b0, b1]) = (a_frag, b_frag);
        let fragments_and_mma = format!(
            "        unsigned af[2][4], bf[4][2];
#pragma unroll
        for (unsigned ks = 0u; ks < {TK}u; ks += {k_step}u) {{
#pragma unroll
            for (unsigned i = 0u; i < 2u; i++) {{
                const unsigned r0 = (wm + i * 16u + g) * {ap}u + ks, r1 = r0 + 8u * {ap}u;
                af[i][0] = {a0};
                af[i][1] = {a1};
                af[i][2] = {a2};
                af[i][3] = {a3};
            }}
#pragma unroll
            for (unsigned j = 0u; j < 4u; j++) {{
                const unsigned c0 = (wn + j * 8u + g) * {bp}u + ks;
                bf[j][0] = {b0};
                bf[j][1] = {b1};
            }}
#pragma unroll
            for (unsigned i = 0u; i < 2u; i++) {{
#pragma unroll
                for (unsigned j = 0u; j < 4u; j++) {{ {mma}(acc[i][j], af[i], bf[j]); }}
            }}
        }}"
        );
        let n_tiles = tiles.len() / 3;
        let rows_t = sh.table(row_list);
        let tiles_t = sh.table(tiles);
        sh.globals.push_str(&format!(
            "__shared__ __attribute__((aligned(16))) {a_ty} sa[2][{}];\n__shared__ __attribute__((aligned(16))) {op_ty} sbt[2][{}];\n__shared__ unsigned arow[{TM}];\n__shared__ unsigned orow[{TM}];\n",
            TM * ap,
            TN * bp
        ));
        let GemmExprs { t_type, t_start, t_cnt, r, a_row, a_set, w_val, row_setup } =
            self.gemm_exprs(&mut sh, gk, a, normalized, rows_t, tiles_t);
        let st = self.gemm_store(&mut sh, gk, c_array, fused_epilogue, &slice_maps, "acc[i][j][e]");
        // Stage `s`'s A rows for the K step at `k0`: by cp.async (`store_a` empty), or, computed
        // or not 4-byte aligned, like the weights: loaded into registers `ar` before the multiply
        // and converted into the stage after it, so the loads' latency hides behind the mma.
        let per_a = TM * TK / 128;
        let (load_a, store_a) = match copy_bytes {
            Some(bytes) => {
                let per_copy = bytes / a_bytes;
                let copies = TM * TK / per_copy;
                let (a_array, _) = a.expect("copied A rows are a buffer's");
                let from = sh.ptr(a_array, &format!("rg_selu(0u, arow[m], ok) * {in_w}u + blk * {bin}u + k0 + kk"));
                let copy = format!(
                    "#pragma unroll
        for (unsigned q = 0u; q < {per}u; q++) {{
            const unsigned idx = li + q * 128u;
            const unsigned m = idx / {chunks}u, kk = (idx % {chunks}u) * {per_copy}u;
            const bool ok = m < cnt && k0 + kk < {bin}u;
            rg_cp_async{bytes}(&sa[s][m * {ap}u + kk], {from}, ok ? {bytes}u : 0u);
        }}
        rg_cp_async_commit();",
                    per = copies.div_ceil(128),
                    chunks = TK / per_copy,
                );
                (copy, String::new())
            }
            None => (
                format!(
                    "#pragma unroll
        for (unsigned q = 0u; q < {per_a}u; q++) {{
            const unsigned idx = li + q * 128u;
            const unsigned m = idx / {TK}u, kk = idx % {TK}u;
            float a = 0.0f;
            if (m < cnt && k0 + kk < {bin}u) {{ {a_set} }}
            ar[q] = a;
        }}"
                ),
                format!(
                    "#pragma unroll
        for (unsigned q = 0u; q < {per_a}u; q++) {{
            const unsigned idx = li + q * 128u;
            const unsigned m = idx / {TK}u, kk = idx % {TK}u;
            sa[s][m * {ap}u + kk] = {convert}(ar[q]);
        }}"
                ),
            ),
        };
        let a_regs = if store_a.is_empty() { String::new() } else { format!("float ar[{per_a}];") };
        let per_w = TK * TN / 128;
        let _ = writeln!(
            sh.body,
            "    const unsigned tile = wg_x + wg_z * {grid_x}u;
    if (tile >= {n_tiles}u) {{ return; }}
    const unsigned ttype = {t_type};
    const unsigned start = {t_start};
    const unsigned cnt = {t_cnt};
    const unsigned blk = wg_y / {col_tiles}u;
    const unsigned n0 = (wg_y % {col_tiles}u) * {TN}u;
    const unsigned lane = li & 31u, warp = li >> 5u, g = lane >> 2u, t = lane & 3u;
    const unsigned wm = (warp >> 1u) * 32u, wn = (warp & 1u) * 32u;
    if (li < cnt) {{
        const unsigned r = {r};
        orow[li] = r;
        arow[li] = {a_row};
        {row_setup}
    }}
    __syncthreads();
    float acc[2][4][4] = {{}};
    float wr[{per_w}];
    {a_regs}
    // The weights of the K step at k0, into registers; then converted into stage s.
    auto load_w = [&](unsigned k0) {{
#pragma unroll
        for (unsigned q = 0u; q < {per_w}u; q++) {{
            const unsigned idx = li + q * 128u;
            const unsigned kb = idx / {TN}u, nb = idx % {TN}u;
            float w = 0.0f;
            if (k0 + kb < {bin}u && n0 + nb < {bout}u) {{ w = {w_val}; }}
            wr[q] = w;
        }}
    }};
    auto store_w = [&](unsigned s) {{
#pragma unroll
        for (unsigned q = 0u; q < {per_w}u; q++) {{
            const unsigned idx = li + q * 128u;
            sbt[s][(idx % {TN}u) * {bp}u + idx / {TN}u] = {convert}(wr[q]);
        }}
    }};
    // Stage 0's A rows (written out at both uses, not a lambda: with a fused input program it
    // grows past what compilers inline, and a called lambda keeps its captures in local memory).
    {{
        const unsigned s = 0u, k0 = 0u;
        {load_a}
        {store_a}
    }}
    load_w(0u);
    store_w(0u);
    rg_cp_async_wait_all();
    __syncthreads();
    for (unsigned k0 = 0u, cur = 0u; k0 < {bin}u; k0 += {TK}u, cur ^= 1u) {{
        const bool more = k0 + {TK}u < {bin}u;
        if (more) {{
            const unsigned s = cur ^ 1u, k_next = k0 + {TK}u;
            {{
                const unsigned k0 = k_next;
                {load_a}
            }}
            load_w(k0 + {TK}u);
        }}
{fragments_and_mma}
        if (more) {{
            const unsigned s = cur ^ 1u;
            {store_a}
            store_w(s);
        }}
        rg_cp_async_wait_all();
        __syncthreads();
    }}
#pragma unroll
    for (unsigned i = 0u; i < 2u; i++) {{
#pragma unroll
        for (unsigned j = 0u; j < 4u; j++) {{
#pragma unroll
            for (unsigned e = 0u; e < 4u; e++) {{
                const unsigned m = wm + i * 16u + g + (e >> 1u) * 8u;
                const unsigned n = n0 + wn + j * 8u + 2u * t + (e & 1u);
                if (m < cnt && n < {bout}u) {{ {st} }}
            }}
        }}
    }}"
        );
        sh
    }

    /// The store of product `value` at the tile's row `m`, column `n` of block `blk` (the names
    /// both GEMM bodies use): to C, or, with `fused`, the epilogue's result for that column to
    /// the output; with `slice_maps`, into the slice of each map's output that holds that column.
    fn gemm_store(&self, sh: &mut Shader, gk: &GemmKernel, c_array: ArrayRef, fused: bool, slice_maps: &[usize], value: &str) -> String {
        let shape = &self.ctx.param_shapes[gk.weight.0];
        let (out_w, bout) = (shape[1] * shape[3], shape[3]);
        let col = format!("blk * {bout}u + n");
        let (code, value) = if fused {
            let code = sh.column_program(&gk.epilogue, gk.domain, "orow[m]", value, &col, "ep", None);
            (code, format!("ep{}", gk.epilogue.result()))
        } else {
            (String::new(), value.to_string())
        };
        if slice_maps.is_empty() {
            return format!("{code} {}", sh.st(c_array, &format!("orow[m] * {out_w}u + {col}"), &value));
        }
        let mut slices: Vec<_> = slice_maps
            .iter()
            .map(|&j| {
                let (m, start, len) = slice_map(&self.ctx.kp.kernels[j]).expect("an absorbed map is a slice map");
                let target = sh.resolve(m.domain, "orow[m]", m.output_at);
                let w = self.ctx.kp.buffer(m.output).width;
                (start, len, sh.st(ArrayRef::Data(m.output), &format!("({target}) * {w}u + {col} - {start}u"), &value))
            })
            .collect();
        slices.sort_by_key(|s| s.0);
        // Disjoint slices (the usual case: Q, K, V of one product) as one `else if` chain: with
        // separate `if`s ptxas has been seen to spill in the fully unrolled store loop.
        let disjoint = slices.windows(2).all(|w| w[0].0 + w[0].1 <= w[1].0);
        let mut stores = code;
        for (i, (start, len, st)) in slices.iter().enumerate() {
            let chain = if disjoint && i > 0 { " else" } else { "" };
            let lower = if *start == 0 { String::new() } else { format!("{col} >= {start}u && ") };
            let _ = write!(stores, "{chain} if ({lower}{col} < {}u) {{ {st} }}", start + len);
        }
        stores
    }

    /// The SIMT GEMM (WGSL, CUDA with f32 storage or without tensor cores).
    fn gemm_simt(&self, gk: &GemmKernel, tiling: GemmTiling) -> Shader<'c, 'a> {
        let GemmTiling { a, normalized, c_array, fused_epilogue, slice_maps, row_list, tiles, col_tiles, grid_x } = tiling;
        let l = self.l;
        let shape = &self.ctx.param_shapes[gk.weight.0];
        let (bin, bout) = (shape[2], shape[3]);
        let n_tiles = tiles.len() / 3;
        let mut sh = Shader::new(self.ctx, (TN / 4, TM / 4));
        let rows_t = sh.table(row_list);
        let tiles_t = sh.table(tiles);
        for (name, elem, len) in [("ta", Elem::F32, TM * TK), ("tb", Elem::F32, TK * TN), ("arow", Elem::U32, TM), ("orow", Elem::U32, TM)]
        {
            sh.globals.push_str(&l.shared(name, elem, len));
            sh.globals.push('\n');
        }
        let GemmExprs { t_type, t_start, t_cnt, r, a_row, a_set, w_val, row_setup } =
            self.gemm_exprs(&mut sh, gk, a, normalized, rows_t, tiles_t);
        let st = self.gemm_store(&mut sh, gk, c_array, fused_epilogue, &slice_maps, "accm[i * 4u + j]");
        let threads = (TM / 4) * (TN / 4);
        let zero = l.f(0.0);
        let _ = writeln!(
            sh.body,
            "    {tile}
    if (tile >= {n_tiles}u) {{ return; }}
    {ttype}
    {start}
    {cnt}
    {blk}
    {n0}
    if (li < cnt) {{
        {r_let}
        orow[li] = r;
        arow[li] = {a_row};
        {row_setup}
    }}
    {barrier}
    {accm}
    {k_loop}
        {q_loop}
            {idx}
            {m}
            {kk}
            {a}
            if (m < cnt && k0 + kk < {bin}u) {{ {a_set} }}
            ta[idx] = a;
            {kb}
            {nb}
            {w}
            if (k0 + kb < {bin}u && n0 + nb < {bout}u) {{ w = {w_val}; }}
            tb[idx] = w;
        }}
        {barrier}
        {kk_loop}
            {av}
            {bv}
            {i_loop} av[i] = ta[(lid_y * 4u + i) * {TK}u + kk]; }}
            {j_loop} bv[j] = tb[kk * {TN}u + lid_x * 4u + j]; }}
            {i_loop}
                {j_loop} accm[i * 4u + j] = rg_fma(av[i], bv[j], accm[i * 4u + j]); }}
            }}
        }}
        {barrier}
    }}
    {i_loop}
        {j_loop}
            {m_let}
            {n_let}
            if (m < cnt && n < {bout}u) {{ {st} }}
        }}
    }}",
            tile = l.let_("tile", &format!("wg_x + wg_z * {grid_x}u")),
            ttype = l.let_("ttype", &t_type),
            start = l.let_("start", &t_start),
            cnt = l.let_("cnt", &t_cnt),
            blk = l.let_("blk", &format!("wg_y / {col_tiles}u")),
            n0 = l.let_("n0", &format!("(wg_y % {col_tiles}u) * {TN}u")),
            r_let = l.let_("r", &r),
            barrier = l.barrier(),
            accm = l.arr("accm", 16),
            k_loop = l.for_step("k0", "0u", &format!("{bin}u"), &format!("{TK}u")),
            q_loop = l.for_("q", "0u", &format!("{}u", TM * TK / threads)),
            idx = l.let_("idx", &format!("li + q * {threads}u")),
            m = l.let_("m", &format!("idx / {TK}u")),
            kk = l.let_("kk", &format!("idx % {TK}u")),
            a = l.var_f("a", &zero),
            kb = l.let_("kb", &format!("idx / {TN}u")),
            nb = l.let_("nb", &format!("idx % {TN}u")),
            w = l.var_f("w", &zero),
            kk_loop = l.for_("kk", "0u", &format!("{TK}u")),
            av = l.arr("av", 4),
            bv = l.arr("bv", 4),
            i_loop = l.for_("i", "0u", "4u"),
            j_loop = l.for_("j", "0u", "4u"),
            m_let = l.let_("m", "lid_y * 4u + i"),
            n_let = l.let_("n", "n0 + lid_x * 4u + j"),
        );
        sh
    }

    /// The traversal's dispatches: one thread per destination, or, where the kernel can split a
    /// destination's work, one per degree class: a thread each below [`WARP_ITEMS`] in-edges
    /// (segments), a warp each (CUDA) below [`HUB_ITEMS`], a workgroup each from there. Wide
    /// messages in CUDA take a column-split warp ([`Nodes::Columns`]) in place of the thread and
    /// warp classes.
    fn traversals(&self, k: usize, t: &TraversalKernel) -> Result<Vec<Dispatch>, String> {
        let g = self.ctx.g;
        let items = |v: usize| {
            let (s0, s1) = (g.node_seg_ptr[v], g.node_seg_ptr[v + 1]);
            if t.over_segments {
                s1 - s0
            } else {
                g.seg_ptr[s1] - g.seg_ptr[s0]
            }
        };
        let two_pass_softmax = !t.online_softmax && t.edge.ops.iter().any(|o| matches!(o, RowOp::Softmax { .. }));
        let width = t.edge.widths[t.edge.result()];
        let splittable = t.domain == Domain::Node(None) && !two_pass_softmax && width <= MAX_HUB_WIDTH;
        // Warps per block of the column-split kernels, if they fit.
        let floats = column_floats(t);
        let column_warps = if self.l == Lang::Cuda && width >= COLUMN_MIN_WIDTH { warps_fitting(floats, ROW_WARPS) } else { None };
        let columns = column_warps.is_some();
        let column_nodes = |list| Nodes::Columns(list, column_warps.unwrap_or(1));
        if !splittable {
            return Ok(vec![self.traversal(k, t, if columns { column_nodes(None) } else { Nodes::All })?]);
        }
        // With column-split warps every destination below a hub takes one.
        let warp_from = if columns {
            0
        } else if self.l == Lang::Cuda {
            WARP_ITEMS
        } else {
            HUB_ITEMS
        };
        let (mut threads, mut warps, mut hubs) = (vec![], vec![], vec![]);
        for v in 0..g.num_nodes {
            let n = items(v);
            let class = if n >= HUB_ITEMS {
                &mut hubs
            } else if n >= warp_from {
                &mut warps
            } else {
                &mut threads
            };
            class.push(v as u32);
        }
        if hubs.is_empty() && columns {
            return Ok(vec![self.traversal(k, t, column_nodes(None))?]);
        }
        if warps.is_empty() && hubs.is_empty() {
            return Ok(vec![self.traversal(k, t, Nodes::All)?]);
        }
        let mut out = vec![];
        if !threads.is_empty() {
            out.push(self.traversal(k, t, Nodes::Listed(threads))?);
        }
        // A hub takes up to HUB_WARPS column-split warps, as many as fit; where two do not, a
        // single warp like the others (a workgroup of threads each holding the whole row would
        // keep it in local memory).
        let hub_warps = column_warps.and(warps_fitting(floats, HUB_WARPS)).filter(|&w| w >= 2);
        if columns && hub_warps.is_none() {
            warps.append(&mut hubs);
        }
        if !warps.is_empty() {
            out.push(self.traversal(k, t, if columns { column_nodes(Some(warps)) } else { Nodes::Warps(warps) })?);
        }
        if !hubs.is_empty() {
            let nodes = match hub_warps {
                Some(w) => Nodes::ColumnHubs(hubs, w),
                None => Nodes::Hubs(hubs),
            };
            out.push(self.traversal(k, t, nodes)?);
        }
        Ok(out)
    }

    fn traversal(&self, k: usize, t: &TraversalKernel, nodes: Nodes) -> Result<Dispatch, String> {
        let l = self.l;
        let f = |x: f32| l.f(x);
        let zero = f(0.0);
        let res = t.edge.result();
        let width = t.edge.widths[res];
        // Threads sharing one destination (1, a warp or a workgroup), threads per workgroup.
        let (lanes, group, class) = match nodes {
            Nodes::All | Nodes::Listed(_) => (1, ROW_GROUP, ""),
            Nodes::Warps(_) => (32, 32 * WARPS_PER_GROUP, " (warps)"),
            Nodes::Hubs(_) => (HUB_THREADS, HUB_THREADS, " (hubs)"),
            Nodes::Columns(_, warps) => (1, 32 * warps, " (columns)"),
            Nodes::ColumnHubs(_, warps) => (warps, 32 * warps, " (column hubs)"),
        };
        let label = format!("k{k} traversal{class}");
        let (hub, warp) = (matches!(nodes, Nodes::Hubs(_)), matches!(nodes, Nodes::Warps(_)));
        // Column-split: loops over a row's columns are this lane's columns, each followed by a
        // warp barrier (later loops read other lanes' softmax statistics).
        let column_hub = matches!(nodes, Nodes::ColumnHubs(..));
        let cols = column_hub || matches!(nodes, Nodes::Columns(..));
        let each = |v: &str, w: usize| column_loop(l, cols, v, w);
        let end = if cols { format!("}} {WARP_SYNC}") } else { "}".to_string() };
        let mut sh = Shader::new(self.ctx, (group, 1));
        sh.divergent_loops = true;
        let wg = match nodes {
            Nodes::All => self.row_header(&mut sh, self.ctx.g.num_nodes, "v"),
            Nodes::Listed(list) => {
                let n = list.len();
                let table = sh.table(list);
                let wg = self.row_header(&mut sh, n, "slot");
                let v = sh.ld(table, "slot");
                sh.line(&format!("    {}", l.let_("v", &v)));
                wg
            }
            Nodes::Warps(list) => {
                // Every lane of a warp takes the same destination (or leaves), so the warp stays
                // whole for its shuffles; there are no block barriers.
                let n = list.len();
                let table = sh.table(list);
                let wg = grid(n.div_ceil(WARPS_PER_GROUP), self.fin.max_workgroups_per_dim());
                let v = sh.ld(table, "slot");
                sh.line(&format!("    {}", l.let_("slot", &format!("(wg_x + wg_y * {}u) * {WARPS_PER_GROUP}u + (li >> 5u)", wg[0]))));
                sh.line(&format!("    if (slot >= {n}u) {{ return; }}\n    {}\n    {}", l.let_("v", &v), l.let_("lid", "li & 31u")));
                wg
            }
            Nodes::Hubs(list) => {
                let n = list.len();
                let table = sh.table(list);
                let wg = grid(n, self.fin.max_workgroups_per_dim());
                let v = sh.ld(table, "hub");
                for (name, elem, len) in
                    [("wsh", Elem::F32, HUB_THREADS * HUB_CHUNK), ("wres", Elem::F32, width), ("wcnt", Elem::U32, HUB_THREADS)]
                {
                    sh.globals.push_str(&l.shared(name, elem, len));
                    sh.globals.push('\n');
                }
                sh.line(&format!("    {}", l.let_("hub", &format!("wg_x + wg_y * {}u", wg[0]))));
                sh.line(&format!("    if (hub >= {n}u) {{ return; }}\n    {}\n    {}", l.let_("v", &v), l.let_("lid", "li")));
                wg
            }
            Nodes::Columns(list, _) => {
                let n = list.as_ref().map_or(self.ctx.g.num_nodes, Vec::len);
                let wg = self.warp_rows_header(&mut sh, n, "slot");
                let v = match list {
                    Some(list) => {
                        let table = sh.table(list);
                        sh.ld(table, "slot")
                    }
                    None => "slot".to_string(),
                };
                sh.line(&format!("    {}", l.let_("v", &v)));
                wg
            }
            Nodes::ColumnHubs(list, _) => {
                let n = list.len();
                let table = sh.table(list);
                let wg = grid(n, self.fin.max_workgroups_per_dim());
                let v = sh.ld(table, "hub");
                for name in ["wcnt", "wseen"] {
                    sh.globals.push_str(&l.shared(name, Elem::U32, lanes));
                    sh.globals.push('\n');
                }
                sh.line(&format!(
                    "    const auto hub = wg_x + wg_y * {}u;
    if (hub >= {n}u) {{ return; }}
    const auto v = {v};
    const unsigned lid = li >> 5u;
    const unsigned lane = li & 31u;
    float* rg_ws = rg_ws_all + lid * {WARP_SLICE_MARK}u;",
                    wg[0]
                ));
                sh.warp_rows = Some(0);
                wg
            }
        };
        let item_domain = if t.over_segments { Domain::CompactDstRel } else { Domain::Edge };
        let out_w = self.ctx.kp.buffer(t.output).width;
        let node_seg = |sh: &mut Shader, x: &str| sh.ix(IndexArray::NodeSegPtr, x);
        let (sb, se) = (node_seg(&mut sh, "v"), node_seg(&mut sh, "v + 1u"));
        let (pa, pb) = if t.over_segments {
            ("sg".to_string(), "sg + 1u".to_string())
        } else {
            (sh.ix(IndexArray::SegPtr, "sg"), sh.ix(IndexArray::SegPtr, "sg + 1u"))
        };
        let item = if t.over_segments { "p".to_string() } else { sh.ix(IndexArray::DstEdges, "p") };
        // Threads sharing a destination take every `lanes`-th item (edge-parallel) or, when
        // results are per (destination, relation) segment, every `lanes`-th segment.
        let softmax_group = t.edge.ops.iter().find_map(|o| if let RowOp::Softmax { group, .. } = o { Some(*group) } else { None });
        // A per-relation mean (or sum) summed over relations is a sum over the edges, each message
        // divided by its segment's size: threads sharing a destination then split its edges, not
        // its segments (a hub's edges may all be of one relation).
        let scaled_segments =
            t.per_relation && t.domain == Domain::Node(None) && softmax_group.is_none() && matches!(t.reduce, Reduce::Sum | Reduce::Mean);
        let per_segment = t.per_relation && !scaled_segments;
        let segment_parallel = per_segment || softmax_group == Some(SoftmaxGroup::DstRel);
        let seg_filter =
            if lanes > 1 && segment_parallel { format!("        if (sg % {lanes}u != lid) {{ continue; }}\n") } else { String::new() };
        // The loop over a segment's items `from..to` with `item` bound, and what closes it: a
        // thread's own, the first at or after `from` that is `lid` modulo `lanes`, then every
        // `lanes`-th. A column-split warp takes its edges 32 at a time: each lane loads one edge
        // id, and the warp takes them in turn by shuffles (one index load per 32 edges).
        let batched = cols && !t.over_segments;
        let item_mine = if batched { sh.ix(IndexArray::DstEdges, "p_mine") } else { String::new() };
        let items_loop = |from: &str, to: &str| -> (String, &'static str) {
            let step = if lanes > 1 && !segment_parallel { lanes } else { 1 };
            let first = if step > 1 { format!("{from} + (lid + {step}u - ({from}) % {step}u) % {step}u") } else { from.to_string() };
            if batched {
                let open = format!(
                    "for (unsigned p0 = {first}; p0 < {to}; p0 += {batch}u) {{
        const unsigned p_mine = p0 + lane * {step}u;
        const unsigned item_mine = p_mine < {to} ? {item_mine} : 0u;
        const unsigned p_count = rg_minu(32u, ({to} - p0 + {last}u) / {step}u);
        for (unsigned q = 0u; q < p_count; q++) {{
        const unsigned p = p0 + q * {step}u;
        const auto item = rg_shfl_idx_u(item_mine, q);",
                    batch = 32 * step,
                    last = step - 1,
                );
                (open, "} }")
            } else {
                let open = if step > 1 { l.for_step("p", &first, to, &format!("{step}u")) } else { l.for_("p", from, to) };
                (format!("{open}\n            {}", l.let_("item", &item)), "}")
            }
        };
        // Where `acc` starts in a warp's slice (column hubs merge the slices).
        let acc_at = sh.warp_rows.unwrap_or(0);
        let (acc_decl, seg_acc_decl) = (sh.row_array("acc", width), sh.row_array("seg_acc", width));
        // Warp i's element `at + c` of a column hub.
        let slice_of = |i: &str, at: usize| format!("rg_ws_all[{i} * {WARP_SLICE_MARK}u + {at}u + c]");
        sh.line(&format!(
            "    {}\n    {}\n    {}\n    {}\n    {}\n    {}",
            acc_decl,
            seg_acc_decl,
            l.var_u("count", "0u"),
            l.var_b("seen", "false"),
            l.let_("sb", &sb),
            l.let_("se", &se)
        ));
        let each_w = each("c", width);
        let sum = |a: &str, b: &str| format!("{a} + {b}");
        let max = |a: &str, b: &str| format!("rg_max({a}, {b})");
        let epilogue = |sh: &mut Shader, d: Domain, row: &str, acc: &str| -> Result<(), String> {
            let scope = sh.warp_rows;
            sh.line("    {");
            sh.program(&t.epilogue, d, row, acc, acc, t.epilogue.ops.len(), "e", "        ");
            let er = t.epilogue.result();
            if t.epilogue.widths[er] != out_w {
                return Err(format!("k{k} traversal: epilogue width {} but output width {out_w}", t.epilogue.widths[er]));
            }
            let st = sh.st(ArrayRef::Data(t.output), &format!("({row}) * {out_w}u + c"), &format!("e{er}[c]"));
            sh.line(&format!("        {} {st} {end}\n    }}", each("c", out_w)));
            sh.warp_rows = scope;
            Ok(())
        };
        // A warp: combine the lanes' partial results by butterfly shuffles; lane 0 finishes.
        let warp_merge = |sh: &mut Shader, combine: &Combine, ident: &str| {
            let _ = writeln!(
                sh.body,
                "    {count}
    {each_w}
        {x}
        {x_steps}
        acc[c] = rg_sel({zero}, x, count > 0u);
    }}
    if (lid != 0u) {{ return; }}",
                count = butterfly("count", "rg_shfl_xor_u", &sum, "    "),
                x = l.var_f("x", &format!("rg_sel({ident}, acc[c], seen)")),
                x_steps = butterfly("x", "rg_shfl_xor", combine, "        "),
            );
        };
        // Hubs: combine the threads' partial results into `acc` of thread 0, which finishes
        // (mean, epilogue, store).
        let merge = |sh: &mut Shader, combine: &Combine, ident: &str| {
            let op = combine("r", "x");
            let _ = writeln!(
                sh.body,
                "    wcnt[lid] = count;
    {ch_loop}
        {c_loop}
            {j}
            wsh[lid * {HUB_CHUNK}u + c] = rg_sel({ident}, acc[j], seen);
        }}
        {barrier}
        if (lid < {HUB_CHUNK}u && ch + lid < {width}u) {{
            {r}
            {i_loop} {x} r = {op}; }}
            wres[ch + lid] = r;
        }}
        {barrier}
    }}
    if (lid != 0u) {{ return; }}
    count = 0u;
    {i_loop} count += wcnt[i]; }}
    {each_w} acc[c] = rg_sel({zero}, wres[c], count > 0u); }}",
                ch_loop = l.for_step("ch", "0u", &format!("{width}u"), &format!("{HUB_CHUNK}u")),
                c_loop = l.for_("c", "0u", &format!("{HUB_CHUNK}u")),
                j = l.let_("j", &format!("rg_minu(ch + c, {}u)", width - 1)),
                barrier = l.barrier(),
                r = l.var_f("r", ident),
                i_loop = l.for_("i", "0u", &format!("{HUB_THREADS}u")),
                x = l.let_("x", &format!("wsh[i * {HUB_CHUNK}u + lid]")),
            );
        };
        // Column hubs: warp 0 combines the warps' `acc` from their slices, and finishes.
        let column_merge = |sh: &mut Shader, combine: &Combine, ident: &str| {
            let op = combine("r", "x");
            let _ = writeln!(
                sh.body,
                "    wcnt[lid] = count;
    wseen[lid] = rg_selu(0u, 1u, seen);
    {barrier}
    if (lid != 0u) {{ return; }}
    count = 0u;
    {i_loop} count += wcnt[i]; }}
    {each_w}
        {r}
        {i_loop} {x} r = {op}; }}
        acc[c] = rg_sel({zero}, r, count > 0u);
    {end}",
                barrier = l.barrier(),
                i_loop = l.for_("i", "0u", &format!("{lanes}u")),
                r = l.var_f("r", ident),
                x = l.let_("x", &format!("rg_sel({ident}, {}, wseen[i] != 0u)", slice_of("i", acc_at))),
            );
        };

        if t.online_softmax {
            let (si, weight_cols) = t.edge.softmax_weighting().ok_or_else(|| format!("k{k}: online softmax without a weighted message"))?;
            let RowOp::Softmax { x: logit, group } = t.edge.ops[si] else { unreachable!() };
            if t.domain == Domain::CompactDstRel || t.reduce != Reduce::Sum {
                return Err(format!("k{k}: online softmax needs a sum over destinations"));
            }
            let lw = t.edge.widths[logit];
            sh.globals.push_str(&l.table("softmax_col", &weight_cols));
            sh.globals.push('\n');
            let each_l = each("c", lw);
            let ones = sh.row_array("ones", lw);
            let m_at = sh.warp_rows.unwrap_or(0);
            let m = sh.row_array("m", lw);
            let z_at = sh.warp_rows.unwrap_or(0);
            let z = sh.row_array("z", lw);
            let (p_loop, p_close) = items_loop(&pa, &pb);
            let _ = writeln!(
                sh.body,
                "    {ones}
    {each_l} ones[c] = {one}; {end}
    {m}
    {z}
    {each_l} m[c] = {neg}; {end}
    {start_group}
    {sg_loop}
{seg_filter}        {p_loop}
            if (start_group) {{
                {each_l} m[c] = {neg}; z[c] = {zero}; {end}
                {each_w} seg_acc[c] = {zero}; {end}
                start_group = false;
            }}
            seen = true;
            count += 1u;",
                one = f(1.0),
                neg = f(NEG_BIG),
                start_group = l.var_b("start_group", "true"),
                sg_loop = l.for_("sg", "sb", "se"),
            );
            let scope = sh.warp_rows;
            sh.program(&t.edge, item_domain, "item", "acc", "ones", t.edge.ops.len(), "s", "            ");
            let (scale, weight) = (sh.row_scratch("scale", lw), sh.row_scratch("weight", lw));
            sh.warp_rows = scope;
            let _ = writeln!(
                sh.body,
                "            {scale}
            {weight}
            {each_l}
                {new_m}
                scale[c] = rg_sel(rg_exp(m[c] - new_m), {zero}, m[c] == {neg});
                weight[c] = rg_exp(s{logit}[c] - new_m);
                z[c] = z[c] * scale[c] + weight[c];
                m[c] = new_m;
            {end}
            {j_loop}
                {col}
                seg_acc[j] = seg_acc[j] * scale[col] + weight[col] * s{res}[j];
            {end}
        {p_close}
        if (({rel_group} || sg + 1u == se) && !start_group) {{
            {j_loop} acc[j] += seg_acc[j] / (z[softmax_col[j]] + {tiny}); {end}
            start_group = true;
        }}
    }}",
                new_m = l.let_("new_m", &format!("rg_max(m[c], s{logit}[c])")),
                neg = f(NEG_BIG),
                j_loop = each("j", width),
                col = l.let_("col", "softmax_col[j]"),
                rel_group = group == SoftmaxGroup::DstRel,
                tiny = f(1e-16),
            );
            if warp && !segment_parallel {
                // As for hubs below, by shuffles.
                let _ = writeln!(
                    sh.body,
                    "    {share}
    {each_l}
        {mx}
        {mx_steps}
        share[c] = rg_sel(z[c] * rg_exp(m[c] - mx), {zero}, m[c] == {neg});
        {total}
        {total_steps}
        share[c] = rg_sel(share[c] / total, {zero}, total == {zero});
    }}
    {j_loop} acc[j] = acc[j] * share[softmax_col[j]]; }}",
                    share = l.arr("share", lw),
                    mx = l.var_f("mx", "m[c]"),
                    mx_steps = butterfly("mx", "rg_shfl_xor", &max, "        "),
                    neg = f(NEG_BIG),
                    total = l.var_f("total", "share[c]"),
                    total_steps = butterfly("total", "rg_shfl_xor", &sum, "        "),
                    j_loop = l.for_("j", "0u", &format!("{width}u")),
                );
            }
            if hub && !segment_parallel {
                // Each thread normalised its share by its own (max, sum); reweigh the shares by
                // sum · e^(max − overall max) so they combine into the softmax over all edges.
                sh.globals.push_str(&l.shared("wm", Elem::F32, HUB_THREADS * lw));
                sh.globals.push('\n');
                let _ = writeln!(
                    sh.body,
                    "    {each_l} wm[lid * {lw}u + c] = m[c]; }}
    {barrier}
    {share}
    {each_l}
        {mx}
        {i_loop} mx = rg_max(mx, wm[i * {lw}u + c]); }}
        share[c] = rg_sel(z[c] * rg_exp(m[c] - mx), {zero}, m[c] == {neg});
    }}
    {barrier}
    {each_l} wm[lid * {lw}u + c] = share[c]; }}
    {barrier}
    {each_l}
        {total}
        {i_loop} total += wm[i * {lw}u + c]; }}
        share[c] = rg_sel(share[c] / total, {zero}, total == {zero});
    }}
    {j_loop} acc[j] = acc[j] * share[softmax_col[j]]; }}",
                    barrier = l.barrier(),
                    share = l.arr("share", lw),
                    mx = l.var_f("mx", &f(NEG_BIG)),
                    neg = f(NEG_BIG),
                    i_loop = l.for_("i", "0u", &format!("{HUB_THREADS}u")),
                    total = l.var_f("total", &zero),
                    j_loop = l.for_("j", "0u", &format!("{width}u")),
                );
            }
            if column_hub && !segment_parallel {
                // As for hubs, each warp reading the others' statistics from their slices.
                let share = sh.row_array("share", lw);
                let _ = writeln!(
                    sh.body,
                    "    {barrier}
    {share}
    {each_l}
        {mx}
        {i_loop} mx = rg_max(mx, {m_i}); }}
        {total}
        {i_loop} {mi} total += rg_sel({z_i} * rg_exp(mi - mx), {zero}, mi == {neg}); }}
        share[c] = rg_sel(rg_sel(z[c] * rg_exp(m[c] - mx), {zero}, m[c] == {neg}) / total, {zero}, total == {zero});
    {end}
    {j_loop} acc[j] = acc[j] * share[softmax_col[j]]; {end}",
                    barrier = l.barrier(),
                    mx = l.var_f("mx", &f(NEG_BIG)),
                    i_loop = l.for_("i", "0u", &format!("{lanes}u")),
                    m_i = slice_of("i", m_at),
                    total = l.var_f("total", &zero),
                    mi = l.let_("mi", &slice_of("i", m_at)),
                    z_i = slice_of("i", z_at),
                    neg = f(NEG_BIG),
                    j_loop = each("j", width),
                );
            }
            if hub {
                merge(&mut sh, &sum, &zero);
            }
            if warp {
                warp_merge(&mut sh, &sum, &zero);
            }
            if column_hub {
                column_merge(&mut sh, &sum, &zero);
            }
            epilogue(&mut sh, Domain::Node(None), "v", "acc")?;
            return Ok(self.finish_warp_rows(sh, label, wg));
        }

        // Softmax statistics over a range of items (two-pass form): max, then sum of exponentials.
        let softmax = t.edge.ops.iter().position(|o| matches!(o, RowOp::Softmax { .. }));
        let stats = |sh: &mut Shader, si: usize, from: &str, to: &str| {
            let RowOp::Softmax { x: logit, .. } = t.edge.ops[si] else { unreachable!() };
            let lw = t.edge.widths[logit];
            let item = if t.over_segments { "p".to_string() } else { sh.ix(IndexArray::DstEdges, "p") };
            let each_l = each("c", lw);
            for pass in 0..2 {
                if pass == 0 {
                    sh.line(&format!("    {each_l} m[c] = {}; z[c] = {zero}; {end}", f(NEG_BIG)));
                }
                let scope = sh.warp_rows;
                sh.line(&format!("    {}\n        {}", l.for_("p", from, to), l.let_("item", &item)));
                sh.program(&t.edge, item_domain, "item", "acc", "acc", si, "l", "        ");
                let stmt =
                    if pass == 0 { format!("m[c] = rg_max(m[c], l{logit}[c]);") } else { format!("z[c] += rg_exp(l{logit}[c] - m[c]);") };
                sh.line(&format!("        {each_l} {stmt} {end}\n    }}"));
                sh.warp_rows = scope;
            }
        };
        if let Some(si) = softmax {
            let RowOp::Softmax { x: logit, group } = t.edge.ops[si] else { unreachable!() };
            let lw = t.edge.widths[logit];
            let arrays = [sh.row_array("m", lw), sh.row_array("z", lw), sh.row_array("alpha", lw)];
            sh.line(&format!("    {}", arrays.join("\n    ")));
            if group == SoftmaxGroup::Dst {
                let (from, to) = if t.over_segments {
                    ("sb".to_string(), "se".to_string())
                } else {
                    (sh.ix(IndexArray::SegPtr, "sb"), sh.ix(IndexArray::SegPtr, "se"))
                };
                stats(&mut sh, si, &from, &to);
            }
        }
        sh.line(&format!("    {}\n{seg_filter}    {}\n    {}", l.for_("sg", "sb", "se"), l.let_("pa", &pa), l.let_("pb", &pb)));
        if let Some(si) = softmax {
            if matches!(t.edge.ops[si], RowOp::Softmax { group: SoftmaxGroup::DstRel, .. }) {
                stats(&mut sh, si, "pa", "pb");
            }
        }
        let (p_loop, p_close) = items_loop("pa", "pb");
        sh.line(&format!("    {each_w} seg_acc[c] = {zero}; {end}\n    {p_loop}"));
        let scope = sh.warp_rows;
        if let Some(si) = softmax {
            let RowOp::Softmax { x: logit, .. } = t.edge.ops[si] else { unreachable!() };
            let lw = t.edge.widths[logit];
            sh.program(&t.edge, item_domain, "item", "acc", "alpha", si, "l", "        ");
            sh.line(&format!("        {} alpha[c] = rg_exp(l{logit}[c] - m[c]) / (z[c] + {}); {end}", each("c", lw), f(1e-16)));
        }
        sh.program(&t.edge, item_domain, "item", "acc", "alpha", t.edge.ops.len(), "s", "        ");
        sh.warp_rows = scope;
        let (target, first) = if per_segment { ("seg_acc", "p == pa") } else { ("acc", "!seen") };
        let reduce = match t.reduce {
            Reduce::Mean if scaled_segments => format!("{target}[c] += s{res}[c] / {};", l.to_f("pb - pa")),
            Reduce::Sum | Reduce::Mean => format!("{target}[c] += s{res}[c];"),
            Reduce::Max => format!("{target}[c] = rg_sel(rg_max({target}[c], s{res}[c]), s{res}[c], {first});"),
        };
        sh.line(&format!("        {each_w} {reduce} {end}\n        seen = true;\n        count += 1u;\n    {p_close}"));
        if per_segment {
            sh.line("    if (pb > pa) {");
            if t.reduce == Reduce::Mean {
                sh.line(&format!("    {each_w} seg_acc[c] = seg_acc[c] / {}; {end}", l.to_f("pb - pa")));
            }
            if t.domain == Domain::CompactDstRel {
                epilogue(&mut sh, Domain::CompactDstRel, "sg", "seg_acc")?;
            } else {
                sh.line(&format!("    {each_w} acc[c] += seg_acc[c]; {end}"));
            }
            sh.line("    }");
        }
        sh.line("    }");
        if t.domain != Domain::CompactDstRel {
            let (combine, ident): (&Combine, String) = match (t.per_relation, t.reduce) {
                (false, Reduce::Max) => (&max, f(NEG_BIG)),
                _ => (&sum, zero.clone()),
            };
            if hub {
                merge(&mut sh, combine, &ident);
            }
            if warp {
                warp_merge(&mut sh, combine, &ident);
            }
            if column_hub {
                column_merge(&mut sh, combine, &ident);
            }
            if !t.per_relation && t.reduce == Reduce::Mean {
                sh.line(&format!("    if (count > 0u) {{ {each_w} acc[c] = acc[c] / {}; {end} }}", l.to_f("count")));
            }
            epilogue(&mut sh, Domain::Node(None), "v", "acc")?;
        }
        Ok(self.finish_warp_rows(sh, label, wg))
    }

    /// Pivot attention, on tensor cores where its heads fit; either way its flops are the four
    /// products per (b, i, j, k) triple and column: q·k_ij, q·k_jk, p·v_ij, p·v_jk.
    fn pivot(&self, k: usize, p: &PivotKernel) -> Result<Dispatch, String> {
        let (batch, n, _) = self.ctx.g.pair.ok_or_else(|| format!("k{k}: pivot attention needs a pair graph"))?;
        let flops = 8.0 * (batch * n * n) as f64 * (n * p.shape.heads * p.shape.dim) as f64;
        Ok(Dispatch { flops, ..self.pivot_body(k, p)? })
    }

    fn pivot_body(&self, k: usize, p: &PivotKernel) -> Result<Dispatch, String> {
        if let Some(mode) = pivot_tensor_cores(self.ctx, p.shape.dim) {
            return self.pivot_mma(k, p, mode);
        }
        let l = self.l;
        let f = |x: f32| l.f(x);
        let (batch, n, _) = self.ctx.g.pair.ok_or_else(|| format!("k{k}: pivot attention needs a pair graph"))?;
        let (heads, d) = (p.shape.heads, p.shape.dim);
        let mut sh = Shader::new(self.ctx, (ROW_GROUP, 1));
        let wg = self.row_header(&mut sh, batch * n * n * heads, "t");
        let out_w = self.ctx.kp.buffer(p.output).width;
        // Element c of operand o at pair (b, x, y), head h.
        let el = |sh: &mut Shader, o: usize, x: &str, y: &str| {
            let (buf, col) = p.operands[o];
            let w = self.ctx.kp.buffer(buf).width;
            sh.ld(ArrayRef::Data(buf), &format!("((b * {n}u + {x}) * {n}u + {y}) * {w}u + {col}u + h * {d}u + c"))
        };
        let q = el(&mut sh, 0, "i", "k");
        let k1 = el(&mut sh, 1, "i", "j");
        let k2 = el(&mut sh, 2, "j", "k");
        let v1 = el(&mut sh, 3, "i", "j");
        let v2 = el(&mut sh, 4, "j", "k");
        let mask_i = sh.ix(IndexArray::PairMask, &format!("b * {n}u + i"));
        let mask_j = sh.ix(IndexArray::PairMask, &format!("b * {n}u + j"));
        let st = sh.st(ArrayRef::Data(p.output), &format!("row * {out_w}u + h * {d}u + c"), "y[c] / z");
        let each_d = l.for_("c", "0u", &format!("{d}u"));
        let _ = writeln!(
            sh.body,
            "    {h}
    {row}
    {b}
    {i}
    {kk}
    {qa}
    {each_d} q[c] = {q}; }}
    {query_real}
    {m}
    {z}
    {y}
    {j_loop}
        {s1}
        {s2}
        {each_d} s1 = rg_fma(q[c], {k1}, s1); s2 = rg_fma(q[c], {k2}, s2); }}
        {s}
        if (!(query_real && {mask_j} != 0u)) {{ s = {masked}; }}
        {new_m}
        {r}
        {e}
        z = z * r + e;
        {each_d} y[c] = y[c] * r + e * ({v1} + {v2}); }}
        m = new_m;
    }}
    {each_d} {st} }}",
            h = l.let_("h", &format!("t % {heads}u")),
            row = l.let_("row", &format!("t / {heads}u")),
            // (N = 0: no rows pass the header; a divisor of 1 keeps the shader valid.)
            b = l.let_("b", &format!("row / {}u", (n * n).max(1))),
            i = l.let_("i", &format!("(row / {nd}u) % {nd}u", nd = n.max(1))),
            kk = l.let_("k", &format!("row % {}u", n.max(1))),
            qa = l.arr("q", d),
            query_real = l.let_("query_real", &format!("{mask_i} != 0u")),
            m = l.var_f("m", &f(NEG_BIG)),
            z = l.var_f("z", &f(0.0)),
            y = l.arr("y", d),
            j_loop = l.for_("j", "0u", &format!("{n}u")),
            s1 = l.var_f("s1", &f(0.0)),
            s2 = l.var_f("s2", &f(0.0)),
            s = l.var_f("s", &format!("(s1 + s2) * {}", f(p.scale))),
            masked = f(-1e9),
            new_m = l.let_("new_m", "rg_max(m, s)"),
            r = l.let_("r", "rg_exp(m - new_m)"),
            e = l.let_("e", "rg_exp(s - new_m)"),
        );
        Ok(self.fin.finish(sh, format!("k{k} pivot_attention"), wg))
    }

    /// Pivot attention on tensor cores (CUDA, sm_80+; see [`PIVOT_TILE`]). For head h of graph b,
    /// a block takes 16 query rows i × 16 query columns k and walks the pivots j 16 at a time.
    /// Both score terms are matrix products: at fixed i, `q_ik · k_ij` is Q_i [k × d] · K1_iᵀ
    /// [d × j]; at fixed k, `q_ik · k_jk` is Q_k [i × d] · K2_kᵀ. Each of the 8 warps owns two i
    /// (the first term, and P·V1) and two k (the second term, and P·V2): every k / v element is
    /// read by one warp (each q twice: by the warps of its i and of its k), straight from global
    /// memory into fragments, and reused across the 16
    /// rows of its product. The two terms meet in shared memory, where a thread per (i, k) runs the
    /// online softmax and leaves P and its rescale factor for the P·V products; the two halves of
    /// y meet there again at the end.
    fn pivot_mma(&self, k: usize, p: &PivotKernel, mode: PivotMma) -> Result<Dispatch, String> {
        let (batch, n, _) = self.ctx.g.pair.ok_or_else(|| format!("k{k}: pivot attention needs a pair graph"))?;
        let (heads, d) = (p.shape.heads, p.shape.dim);
        // f32 storage: tf32 fragments, K step 8 (rounded, or split in `SplitTf32`).
        let f32_operands = self.ctx.storage == DType::F32;
        let split = mode == PivotMma::SplitTf32;
        let MmaOperands { convert, mma, k_step, .. } = mma_operands(self.ctx.storage, split);
        // P is rounded to the operand type before it is summed, so that y's weights and their
        // normaliser agree (the P·V products then see P exactly); split tf32 keeps it whole.
        let p_value = match self.ctx.storage {
            DType::F16 => "rg_h2f(rg_f2h(rg_exp(sv[j] - mx)))",
            DType::BF16 => "rg_b2f(rg_f2b(rg_exp(sv[j] - mx)))",
            DType::F32 if split => "rg_exp(sv[j] - mx)",
            DType::F32 => "rg_from_bits(rg_f2tf32(rg_exp(sv[j] - mx)))",
        };
        let mut sh = Shader::new(self.ctx, (PIVOT_WARPS * 32, 1));
        sh.min_blocks_per_sm = Some(self.ctx.pivot_blocks_per_sm).filter(|&b| b > 1);
        let row_tiles = n.div_ceil(PIVOT_TILE);
        let tiles = batch * heads * row_tiles * row_tiles;
        let wg = grid(tiles, self.fin.max_workgroups_per_dim());
        let out_w = self.ctx.kp.buffer(p.output).width;
        // Shared layouts (floats): scores / P at [i][k][j], y at [i][k][c]; padded so that a
        // warp's fragment rows, whether they run over i or over k, spread over the banks (at most
        // 2-way conflicts for fragments; the softmax's row reads are 4-way, unmeasured so far).
        let (jp, yp) = (PIVOT_TILE + 4, d + 4);
        let (s_is, y_is) = (PIVOT_TILE * jp + 4, PIVOT_TILE * yp + 4);
        let s_len = PIVOT_TILE * s_is;
        let shared = (2 * s_len).max(PIVOT_TILE * y_is);
        sh.globals.push_str(&format!("__shared__ float sm[{shared}];\n__shared__ float rs[{}];\n", PIVOT_TILE * PIVOT_TILE));
        // One accessor per operand: element c of head h at pair (b, x, y), 0 outside the graph,
        // as the tensor cores take it: 16-bit bits (read as stored when the storage type is the
        // operand type) or f32 (rounded to tf32 at the fragment).
        let (op_ty, zero) = if f32_operands { ("float", "0.0f") } else { ("unsigned short", "0") };
        let encode = |x: String| if f32_operands { x } else { format!("{convert}({x})") };
        let mut accessors = String::new();
        for (name, &(buf, col)) in ["q", "k1", "k2", "v1", "v2"].iter().zip(&p.operands) {
            let w = self.ctx.kp.buffer(buf).width;
            let at = format!("((b * {n}u + x) * {n}u + y) * {w}u + {col}u + h * {d}u + c");
            let as_stored = matches!((self.ctx.storage, sh.elem(ArrayRef::Data(buf))), (DType::F16, Elem::F16) | (DType::BF16, Elem::BF16));
            let value = if as_stored { format!("*{}", sh.ptr(ArrayRef::Data(buf), &at)) } else { encode(sh.ld(ArrayRef::Data(buf), &at)) };
            let _ = writeln!(
                accessors,
                "    auto {name} = [&](unsigned x, unsigned y, unsigned c) -> {op_ty} {{ return x < {n}u && y < {n}u ? {value} : {zero}; }};"
            );
        }
        let mask = sh.ix(IndexArray::PairMask, &format!("b * {n}u + x"));
        let st =
            sh.st(ArrayRef::Data(p.output), &format!("row * {out_w}u + h * {d}u + c"), &format!("sm[si * {y_is}u + sk * {yp}u + c] / z"));
        // Fragments (layouts in the prelude's comments) of a 16-row operand whose element at
        // (row, kk) is `val(row, kk)` (encoded as the accessors' values), for the K step starting
        // at `kb`: 16-bit values packed in pairs along K, tf32 singly.
        let pair = |val: &dyn Fn(&str, &str) -> String, r: &str, kk: &str| {
            if split {
                // Whole f32 bits: rg_mma_tf32x3 splits them.
                format!("rg_to_bits({})", val(r, kk))
            } else if f32_operands {
                format!("rg_f2tf32({})", val(r, kk))
            } else {
                format!("rg_pack2({}, {})", val(r, kk), val(r, &format!("{kk} + 1u")))
            }
        };
        let (lo, hi) = if f32_operands { ("t", "t + 4u") } else { ("2u * t", "2u * t + 8u") };
        let frag_a = |val: &dyn Fn(&str, &str) -> String, kb: &str| -> String {
            [("g", lo), ("g + 8u", lo), ("g", hi), ("g + 8u", hi)]
                .iter()
                .map(|(r, c)| pair(val, r, &format!("{kb} + {c}")))
                .collect::<Vec<_>>()
                .join(", ")
        };
        // B is K × 8 stored by column: `val(col, kk)`.
        let frag_b = |val: &dyn Fn(&str, &str) -> String, kb: &str| -> String {
            [lo, hi].iter().map(|c| pair(val, "g", &format!("{kb} + {c}"))).collect::<Vec<_>>().join(", ")
        };
        let mine = "warp * 2u + u";
        // Q, for the whole walk: rows k at this warp's i (first term), rows i at its k (second).
        let q_rows_k = frag_a(&|r, c| format!("q(wi, k0 + {r}, {c})"), "kb");
        let q_rows_i = frag_a(&|r, c| format!("q(i0 + {r}, wk, {c})"), "kb");
        let k1_frag = frag_b(&|col, c| format!("k1(wi, j0 + jn * 8u + {col}, {c})"), "kb");
        let k2_frag = frag_b(&|col, c| format!("k2(j0 + jn * 8u + {col}, wk, {c})"), "kb");
        let v1_frag = frag_b(&|col, j| format!("v1(wi, j0 + {j}, dn * 8u + {col})"), "jb");
        let v2_frag = frag_b(&|col, j| format!("v2(j0 + {j}, wk, dn * 8u + {col})"), "jb");
        // P as an A operand: rows k at this warp's i, rows i at its k.
        let p_rows_k = frag_a(&|r, j| encode(format!("sm[({mine}) * {s_is}u + ({r}) * {jp}u + {j}]")), "jb");
        let p_rows_i = frag_a(&|r, j| encode(format!("sm[({r}) * {s_is}u + ({mine}) * {jp}u + {j}]")), "jb");
        let (ks, dn, js) = (d / k_step, d / 8, PIVOT_TILE / k_step);
        // A half of y from its accumulator fragments into shared memory at `[i][k][c]` (`at`
        // from the fragment row r and channel c), stored or added.
        let y_to_shared = |acc: &str, at: &str, assign: &str| {
            format!(
                "#pragma unroll
    for (unsigned u = 0u; u < 2u; u++) {{
#pragma unroll
        for (unsigned dn = 0u; dn < {dn}u; dn++) {{
#pragma unroll
            for (unsigned e = 0u; e < 4u; e++) {{
                const unsigned r = g + (e >> 1u) * 8u, c = dn * 8u + 2u * t + (e & 1u);
                sm[{at}] {assign} {acc}[u][dn][e];
            }}
        }}
    }}"
            )
        };
        // y1's rows are k at this warp's i, y2's are i at its k.
        let y1_to_shared = y_to_shared("y1", &format!("({mine}) * {y_is}u + r * {yp}u + c"), "=");
        let y2_to_shared = y_to_shared("y2", &format!("r * {y_is}u + ({mine}) * {yp}u + c"), "+=");
        let _ = writeln!(
            sh.body,
            "    const unsigned tile = wg_x + wg_y * {gx}u;
    if (tile >= {tiles}u) {{ return; }}
    const unsigned h = tile / {rt2}u % {heads}u, b = tile / {rt2h}u;
    // Consecutive blocks go down {PIVOT_GROUP} query-row tiles before moving to the next column
    // tile, so blocks running together share their rows' operands and their columns' in L2.
    const unsigned id = tile % {rt2}u, first = id / {group_len}u * {PIVOT_GROUP}u, local = id % {group_len}u;
    const unsigned rows = rg_minu({PIVOT_GROUP}u, {row_tiles}u - first);
    const unsigned i0 = (first + local % rows) * {PIVOT_TILE}u, k0 = local / rows * {PIVOT_TILE}u;
    const unsigned lane = li & 31u, warp = li >> 5u, g = lane >> 2u, t = lane & 3u;
{accessors}    auto node_real = [&](unsigned x) -> bool {{ return x < {n}u && {mask} != 0u; }};
    unsigned qa[2][{ks}][4], qb[2][{ks}][4];
#pragma unroll
    for (unsigned u = 0u; u < 2u; u++) {{
        const unsigned wi = i0 + {mine}, wk = k0 + {mine};
#pragma unroll
        for (unsigned s = 0u; s < {ks}u; s++) {{
            const unsigned kb = s * {k_step}u;
            const unsigned fa[4] = {{ {q_rows_k} }}, fb[4] = {{ {q_rows_i} }};
#pragma unroll
            for (unsigned e = 0u; e < 4u; e++) {{ qa[u][s][e] = fa[e]; qb[u][s][e] = fb[e]; }}
        }}
    }}
    // This thread's softmax row (si, sk), and its running max and sum.
    const unsigned si = li / {PIVOT_TILE}u, sk = li % {PIVOT_TILE}u;
    const bool query_real = node_real(i0 + si);
    float m = {neg_big}, z = 0.0f;
    float y1[2][{dn}][4] = {{}}, y2[2][{dn}][4] = {{}};
    for (unsigned j0 = 0u; j0 < {n}u; j0 += {PIVOT_TILE}u) {{
        unsigned v1f[2][{dn}][{js}][2], v2f[2][{dn}][{js}][2];
#pragma unroll
        for (unsigned u = 0u; u < 2u; u++) {{
            const unsigned wi = i0 + {mine}, wk = k0 + {mine};
{jn_unroll}
            for (unsigned jn = 0u; jn < {jn}u; jn++) {{
                float c1[4] = {{}}, c2[4] = {{}};
#pragma unroll
                for (unsigned s = 0u; s < {ks}u; s++) {{
                    const unsigned kb = s * {k_step}u;
                    const unsigned f1[2] = {{ {k1_frag} }}, f2[2] = {{ {k2_frag} }};
                    {mma}(c1, qa[u][s], f1);
                    {mma}(c2, qb[u][s], f2);
                }}
#pragma unroll
                for (unsigned e = 0u; e < 4u; e++) {{
                    const unsigned r = g + (e >> 1u) * 8u, j = jn * 8u + 2u * t + (e & 1u);
                    sm[({mine}) * {s_is}u + r * {jp}u + j] = c1[e];
                    sm[{s_len}u + r * {s_is}u + ({mine}) * {jp}u + j] = c2[e];
                }}
            }}
            // V's fragments now, so that their loads overlap the softmax.
#pragma unroll
            for (unsigned dn = 0u; dn < {dn}u; dn++) {{
#pragma unroll
                for (unsigned s = 0u; s < {js}u; s++) {{
                    const unsigned jb = s * {k_step}u;
                    const unsigned f1[2] = {{ {v1_frag} }}, f2[2] = {{ {v2_frag} }};
                    v1f[u][dn][s][0] = f1[0]; v1f[u][dn][s][1] = f1[1];
                    v2f[u][dn][s][0] = f2[0]; v2f[u][dn][s][1] = f2[1];
                }}
            }}
        }}
        __syncthreads();
        {{
            // Online softmax over this step's pivots: P in place of the first term's scores.
            float sv[{PIVOT_TILE}];
            float mx = m;
#pragma unroll
            for (unsigned j = 0u; j < {PIVOT_TILE}u; j++) {{
                const unsigned at = si * {s_is}u + sk * {jp}u + j;
                float s = (sm[at] + sm[{s_len}u + at]) * {scale};
                if (!(query_real && node_real(j0 + j))) {{ s = {masked}; }}
                sv[j] = s;
                if (j0 + j < {n}u) {{ mx = rg_max(mx, s); }}
            }}
            const float r = rg_exp(m - mx);
            float sum = 0.0f;
#pragma unroll
            for (unsigned j = 0u; j < {PIVOT_TILE}u; j++) {{
                const float e = j0 + j < {n}u ? {p_value} : 0.0f;
                sm[si * {s_is}u + sk * {jp}u + j] = e;
                sum += e;
            }}
            z = z * r + sum;
            m = mx;
            rs[li] = r;
        }}
        __syncthreads();
#pragma unroll
        for (unsigned u = 0u; u < 2u; u++) {{
#pragma unroll
            for (unsigned e = 0u; e < 4u; e++) {{
                const unsigned r = g + (e >> 1u) * 8u;
                const float r1 = rs[({mine}) * {PIVOT_TILE}u + r], r2 = rs[r * {PIVOT_TILE}u + {mine}];
#pragma unroll
                for (unsigned dn = 0u; dn < {dn}u; dn++) {{ y1[u][dn][e] *= r1; y2[u][dn][e] *= r2; }}
            }}
#pragma unroll
            for (unsigned s = 0u; s < {js}u; s++) {{
                const unsigned jb = s * {k_step}u;
                const unsigned pa[4] = {{ {p_rows_k} }}, pb[4] = {{ {p_rows_i} }};
#pragma unroll
                for (unsigned dn = 0u; dn < {dn}u; dn++) {{
                    {mma}(y1[u][dn], pa, v1f[u][dn][s]);
                    {mma}(y2[u][dn], pb, v2f[u][dn][s]);
                }}
            }}
        }}
        __syncthreads();
    }}
    // y = (y1 + y2) / z: the first halves into shared memory, the second added, a row per thread.
{y1_to_shared}
    __syncthreads();
{y2_to_shared}
    __syncthreads();
    if (i0 + si < {n}u && k0 + sk < {n}u) {{
        const unsigned row = (b * {n}u + i0 + si) * {n}u + k0 + sk;
        for (unsigned c = 0u; c < {d}u; c++) {{ {st} }}
    }}",
            gx = wg[0],
            rt2 = row_tiles * row_tiles,
            group_len = PIVOT_GROUP * row_tiles,
            rt2h = row_tiles * row_tiles * heads,
            neg_big = self.l.f(NEG_BIG),
            jn = PIVOT_TILE / 8,
            // Split tf32 unrolled over both score column blocks runs past 255 registers into
            // spills (ptxas, sm_80 and sm_90); one block at a time it fits.
            jn_unroll = if split { "#pragma unroll 1" } else { "#pragma unroll" },
            scale = self.l.f(p.scale),
            masked = self.l.f(-1e9),
        );
        let label = if split { "tensor cores, split tf32" } else { "tensor cores" };
        Ok(self.fin.finish(sh, format!("k{k} pivot_attention ({label})"), wg))
    }
}

/// Whether a GEMM applies its epilogue (not a plain store) as it stores each product instead
/// of in a row kernel of its own after a round trip through scratch: CUDA, an epilogue that
/// keeps the product's width and is [`column_separable`]. WGSL keeps the row kernel (every
/// array the epilogue loads would be one more storage binding of the GEMM's, against WebGPU's
/// limit).
pub fn fuses_epilogue(l: Lang, kp: &KernelProgram, param_shapes: &[Vec<usize>], gk: &GemmKernel) -> bool {
    let shape = &param_shapes[gk.weight.0];
    let out_w = shape[1] * shape[3];
    l == Lang::Cuda
        && !matches!(&gk.epilogue.ops[..], [RowOp::Acc])
        && out_w == kp.buffer(gk.output).width
        && column_separable(&gk.epilogue, out_w)
}

/// A map kernel `[load B @Own; B[start..start + len]]`: (the map, B, start, len).
fn slice_map(k: &Kernel) -> Option<(&MapKernel, usize, usize)> {
    let Kernel::Map(m) = k else { return None };
    match &m.program.ops[..] {
        [RowOp::Load { at: RowRef::Own, .. }, RowOp::Slice { x: 0, start, len }] => Some((m, *start, *len)),
        _ => None,
    }
}

/// CUDA: per GEMM (by kernel index), the map kernels it absorbs. A GEMM whose epilogue is plain
/// or fused, and whose product is read by nothing but later slice maps over its own domain,
/// stores each product column straight into the slice of those maps' outputs that holds it (HGT's
/// per-type K, Q and V projection, split into global K, Q and V buffers): neither the product
/// nor the copies move through memory. No kernel between the GEMM and a map may read that map's
/// output or write its rows, since they are now written earlier; [`crate::cuda::absorb_slice_maps`]
/// extends the outputs' lifetimes to match for the memory plan.
pub fn absorbed_slice_maps(kp: &KernelProgram, param_shapes: &[Vec<usize>], l: Lang) -> std::collections::BTreeMap<usize, Vec<usize>> {
    let mut absorbed = std::collections::BTreeMap::new();
    if l != Lang::Cuda {
        return absorbed;
    }
    for (k, kernel) in kp.kernels.iter().enumerate() {
        let Kernel::Gemm(gk) = kernel else { continue };
        let product = gk.output;
        let plain = matches!(&gk.epilogue.ops[..], [RowOp::Acc]);
        if kp.buffer(product).role != BufferRole::Intermediate || !(plain || fuses_epilogue(l, kp, param_shapes, gk)) {
            continue;
        }
        let readers: Vec<usize> = (0..kp.kernels.len()).filter(|&j| j != k && kp.kernels[j].reads().contains(&product)).collect();
        // Between the GEMM and the map, nothing may read the map's output or write rows of it
        // (other node types' slice maps write other rows).
        let other_rows = |m: &MapKernel, b: usize| {
            slice_map(&kp.kernels[b]).is_some_and(|(o, _, _)| {
                o.output_at == RowRef::TypedToGlobal
                    && m.output_at == RowRef::TypedToGlobal
                    && matches!((o.domain, m.domain), (Domain::Node(Some(x)), Domain::Node(Some(y))) if x != y)
            })
        };
        let slices_of_product = |j: usize| {
            slice_map(&kp.kernels[j]).is_some_and(|(m, _, _)| {
                j > k
                    && m.domain == gk.domain
                    && m.program.loads().all(|b| b == product)
                    && (k + 1..j)
                        .all(|b| !kp.kernels[b].reads().contains(&m.output) && (kp.kernels[b].output() != m.output || other_rows(m, b)))
            })
        };
        let written_elsewhere = kp.kernels.iter().enumerate().any(|(j, other)| j != k && other.output() == product);
        if !readers.is_empty() && !written_elsewhere && readers.iter().all(|&j| slices_of_product(j)) {
            absorbed.insert(k, readers);
        }
    }
    absorbed
}

/// Whether a GEMM computes each element of A by its input program (not a plain load) as it
/// loads it, instead of in a row kernel writing scratch first: CUDA, a [`column_separable`]
/// program of the GEMM's input width (so not a norm over the row, which needs the whole row).
pub fn fuses_prologue(l: Lang, param_shapes: &[Vec<usize>], gk: &GemmKernel) -> bool {
    let shape = &param_shapes[gk.weight.0];
    l == Lang::Cuda && !matches!(&gk.input.ops[..], [RowOp::Load { .. }]) && column_separable(&gk.input, shape[1] * shape[2])
}

/// For a GEMM whose input program is column-separable but for one norm (FloydNet's pre-norm
/// `LayerNorm(x + y)` ahead of its projections), on CUDA: the norm's slot. A pass computes each
/// row's shift and scale ([`Templates::norm_stats`]) and the GEMM each element of A as it loads
/// it, instead of the normalised rows going through scratch (a write and a read of the whole
/// input traded for two floats a row).
pub fn normalizes_on_load(l: Lang, param_shapes: &[Vec<usize>], gk: &GemmKernel) -> Option<usize> {
    let shape = &param_shapes[gk.weight.0];
    if l != Lang::Cuda || fuses_prologue(l, param_shapes, gk) {
        return None;
    }
    column_separable_but_one_norm(&gk.input, shape[1] * shape[2])
}

/// How two partial results combine, as source: `a + b`, `rg_max(a, b)`.
type Combine = dyn Fn(&str, &str) -> String;

/// CUDA: `var = combine(var, <var of lane ^ o>)` for o = 16, 8, 4, 2, 1: every lane of the warp
/// ends with the combination over all 32 (`shuffle` is `rg_shfl_xor` or `rg_shfl_xor_u`). Lines
/// after the first start with `indent`.
fn butterfly(var: &str, shuffle: &str, combine: &Combine, indent: &str) -> String {
    let steps: Vec<String> =
        [16, 8, 4, 2, 1].iter().map(|o| format!("{var} = {};", combine(var, &format!("{shuffle}({var}, {o}u)")))).collect();
    steps.join(&format!("\n{indent}"))
}
