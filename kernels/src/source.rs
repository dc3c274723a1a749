//! Kernel source text shared by the WGSL and CUDA generators: the few spellings that differ
//! between the two languages ([`Lang`]), a kernel under construction ([`Shader`]: the arrays its
//! body touches, its tables, its body), and the compilation of row programs and graph indexing
//! into straight-line code over per-thread arrays (one array per slot).
//!
//! Bodies call arrays through accessors `ld_<name>(i)` / `st_<name>(i, v)` and math through
//! `rg_*` functions; each language's prelude and `finish` define those (WGSL: bindings and
//! functions that pick a chunk; CUDA: kernel parameters and macros).

use crate::cpu::GraphIndex;
use crate::gpu::{ArrayRef, Elem, IndexArray};
use rgnn_ir::level2::*;
use rgnn_ir::{Activation, BinaryFn, Domain, NormKind, ParamId, RowIndex, WeightSelect};
use std::fmt::Write;

/// Target language of generated kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    Wgsl,
    Cuda,
}

impl Lang {
    /// A per-thread f32 array, zero-filled.
    pub fn arr(self, name: &str, len: usize) -> String {
        match self {
            Lang::Wgsl => format!("var {name}: array<f32, {len}>;"),
            Lang::Cuda => format!("float {name}[{len}] = {{}};"),
        }
    }
    /// An immutable local (type inferred).
    pub fn let_(self, name: &str, value: &str) -> String {
        match self {
            Lang::Wgsl => format!("let {name} = {value};"),
            Lang::Cuda => format!("const auto {name} = {value};"),
        }
    }
    pub fn var_f(self, name: &str, value: &str) -> String {
        match self {
            Lang::Wgsl => format!("var {name}: f32 = {value};"),
            Lang::Cuda => format!("float {name} = {value};"),
        }
    }
    pub fn var_u(self, name: &str, value: &str) -> String {
        match self {
            Lang::Wgsl => format!("var {name}: u32 = {value};"),
            Lang::Cuda => format!("unsigned {name} = {value};"),
        }
    }
    pub fn var_b(self, name: &str, value: &str) -> String {
        match self {
            Lang::Wgsl => format!("var {name}: bool = {value};"),
            Lang::Cuda => format!("bool {name} = {value};"),
        }
    }
    /// `for v in from..to` (u32), opening brace included.
    pub fn for_(self, v: &str, from: &str, to: &str) -> String {
        self.for_step(v, from, to, "1u")
    }
    pub fn for_step(self, v: &str, from: &str, to: &str, step: &str) -> String {
        let init = match self {
            Lang::Wgsl => format!("var {v}: u32 = {from}"),
            Lang::Cuda => format!("unsigned {v} = {from}"),
        };
        let header = if step == "1u" {
            format!("for ({init}; {v} < {to}; {v}++) {{")
        } else {
            format!("for ({init}; {v} < {to}; {v} += {step}) {{")
        };
        // CUDA: unroll short loops with constant bounds fully, so per-thread rows indexed by the
        // loop variable stay in registers instead of local memory.
        let constant_trip = from == "0u" && to.strip_suffix('u').and_then(|n| n.parse::<usize>().ok()).is_some_and(|n| n <= 64);
        match self {
            Lang::Cuda if constant_trip => format!("\n#pragma unroll\n{header}"),
            _ => header,
        }
    }
    /// A float literal that reads back as the same f32 (infinities become ±f32::MAX).
    pub fn f(self, x: f32) -> String {
        let x = if x.is_finite() { x } else { x.signum() * f32::MAX };
        match self {
            Lang::Wgsl => format!("f32({x:e})"),
            Lang::Cuda => format!("{x:e}f"),
        }
    }
    /// A u32 expression as f32.
    pub fn to_f(self, e: &str) -> String {
        match self {
            Lang::Wgsl => format!("f32({e})"),
            Lang::Cuda => format!("((float)({e}))"),
        }
    }
    /// A workgroup (shared-memory) array.
    pub fn shared(self, name: &str, elem: Elem, len: usize) -> String {
        match (self, elem) {
            (Lang::Wgsl, Elem::U32) => format!("var<workgroup> {name}: array<u32, {len}>;"),
            (Lang::Wgsl, _) => format!("var<workgroup> {name}: array<f32, {len}>;"),
            (Lang::Cuda, Elem::U32) => format!("__shared__ unsigned {name}[{len}];"),
            (Lang::Cuda, _) => format!("__shared__ float {name}[{len}];"),
        }
    }
    /// A constant u32 table.
    pub fn table(self, name: &str, values: &[usize]) -> String {
        let list = values.iter().map(|c| format!("{c}u")).collect::<Vec<_>>().join(", ");
        let n = values.len();
        match self {
            Lang::Wgsl => format!("var<private> {name}: array<u32, {n}> = array<u32, {n}>({list});"),
            Lang::Cuda => format!("__device__ const unsigned {name}[{n}] = {{{list}}};"),
        }
    }
    pub fn barrier(self) -> &'static str {
        match self {
            Lang::Wgsl => "workgroupBarrier();",
            Lang::Cuda => "__syncthreads();",
        }
    }
}

/// Stands for -inf in running maxima (WGSL has no infinities in constants).
pub const NEG_BIG: f32 = -f32::MAX;

/// What every kernel of one program for one graph shares.
pub struct GenCtx<'a> {
    pub lang: Lang,
    pub kp: &'a KernelProgram,
    pub param_shapes: &'a [Vec<usize>],
    pub g: &'a GraphIndex<'a>,
    /// Storage type of data buffers.
    pub storage: DType,
    /// Elements of the two scratch buffers.
    pub scratch_elems: [usize; 2],
    /// CUDA with f16 / bf16 storage (or f32 with tf32 allowed): GEMMs and pivot attention on
    /// tensor cores (`mma.sync`) in the operand type.
    pub tensor_cores: bool,
    /// CUDA with f32 storage, tf32 not allowed, on a device with tensor cores: GEMMs and pivot
    /// attention on tensor cores as split tf32 (three products per tile, f32 accuracy).
    pub split_tf32: bool,
    /// CUDA: blocks per SM tensor-core pivot attention asks ptxas to fit (see `CudaOptions`).
    pub pivot_blocks_per_sm: u32,
}

/// Elements of the scratch buffers: the largest GEMM input rows computed by a prologue pass,
/// and the largest GEMM product kept for an epilogue pass (none where the GEMM fuses them).
pub fn scratch_sizes(kp: &KernelProgram, param_shapes: &[Vec<usize>], g: &GraphIndex, lang: Lang) -> [usize; 2] {
    let mut s = [0, 0];
    for k in &kp.kernels {
        if let Kernel::Gemm(gk) = k {
            let shape = &param_shapes[gk.weight.0];
            let rows = g.rows(gk.domain);
            if crate::templates::normalizes_on_load(lang, param_shapes, gk).is_some() {
                s[0] = s[0].max(rows * 2); // each row's norm shift and scale
            } else if !matches!(&gk.input.ops[..], [RowOp::Load { .. }]) && !crate::templates::fuses_prologue(lang, param_shapes, gk) {
                s[0] = s[0].max(rows * shape[1] * shape[2]);
            }
            if !matches!(&gk.epilogue.ops[..], [RowOp::Acc]) && !crate::templates::fuses_epilogue(lang, kp, param_shapes, gk) {
                s[1] = s[1].max(rows * shape[1] * shape[3]);
            }
        }
    }
    s
}

/// Whether `prog`, of output width `w`, computes each column from the same column of its
/// operands alone (element-wise ops on rows of width `w`, per-column bias, scalar factors, the
/// pair mask), so a GEMM can apply it to each product as it stores it
/// ([`Shader::column_program`]) instead of in a kernel of its own.
pub fn column_separable(prog: &RowProgram, w: usize) -> bool {
    prog.widths.iter().all(|&x| x == w) && prog.ops.iter().all(column_op)
}

/// A column-separable op (see [`column_separable`]).
fn column_op(op: &RowOp) -> bool {
    match op {
        RowOp::Load { .. }
        | RowOp::Acc
        | RowOp::Unary { .. }
        | RowOp::Bias { .. }
        | RowOp::Scale { .. }
        | RowOp::ScaleByParam { .. }
        | RowOp::GatedSkip { .. }
        | RowOp::PairMask { .. } => true,
        RowOp::Binary { a_shape, b_shape, .. } => a_shape == b_shape,
        _ => false,
    }
}

/// For `prog` of width `w` that would be [`column_separable`] but for one norm (a pre-norm
/// `LayerNorm(x + y)`), the norm's slot: given each row's shift and scale, every column is
/// again computed from the same column alone ([`Shader::column_program`] with `norm`).
pub fn column_separable_but_one_norm(prog: &RowProgram, w: usize) -> Option<usize> {
    let mut norms = prog.ops.iter().enumerate().filter(|(_, op)| matches!(op, RowOp::Norm { .. })).map(|(i, _)| i);
    let (norm, None) = (norms.next()?, norms.next()) else { return None };
    let rest_separable = prog.ops.iter().enumerate().all(|(i, op)| i == norm || column_op(op));
    (prog.widths.iter().all(|&x| x == w) && rest_separable).then_some(norm)
}

/// An activation of `v`, as source.
fn activation(l: Lang, func: Activation, v: &str) -> String {
    let f = |x: f32| l.f(x);
    match func {
        Activation::Relu => format!("rg_max({v}, {})", f(0.0)),
        Activation::LeakyRelu(k) => format!("rg_sel({v} * {}, {v}, {v} >= {})", f(k), f(0.0)),
        Activation::Gelu => format!("{} * {v} * ({} + rg_erf({v} * {}))", f(0.5), f(1.0), f(std::f32::consts::FRAC_1_SQRT_2)),
        Activation::Silu => format!("{v} * rg_sigmoid({v})"),
        Activation::Sigmoid => format!("rg_sigmoid({v})"),
        Activation::Exp => format!("rg_exp({v})"),
        Activation::Tanh => format!("rg_tanh({v})"),
        Activation::Elu => format!("rg_sel(rg_exp({v}) - {}, {v}, {v} > {})", f(1.0), f(0.0)),
    }
}

/// The opening of a loop over columns `0..w` of a row (`{` included): all of them, or, in a
/// warp-per-row kernel (`lane_strided`, CUDA), this lane's (lane, lane + 32, ...).
pub fn column_loop(l: Lang, lane_strided: bool, v: &str, w: usize) -> String {
    if lane_strided {
        format!("for (unsigned {v} = lane; {v} < {w}u; {v} += 32u) {{")
    } else {
        l.for_(v, "0u", &format!("{w}u"))
    }
}

/// In a warp-per-row kernel, what follows a lane-strided column loop whose columns the next op
/// may read from other lanes.
pub const WARP_SYNC: &str = "rg_syncwarp();";

/// One kernel under construction.
pub struct Shader<'c, 'a> {
    pub ctx: &'c GenCtx<'a>,
    pub lang: Lang,
    /// Arrays the body touches, in first-use order, and whether it writes them.
    pub arrays: Vec<(ArrayRef, bool)>,
    pub tables: Vec<Vec<u32>>,
    pub body: String,
    /// Declarations outside the kernel function (shared arrays, constant tables).
    pub globals: String,
    /// Threads per workgroup (x, y).
    pub workgroup: (usize, usize),
    /// The kernel loops over data-dependent ranges (edges), so lanes of a SIMD group diverge:
    /// WGSL unrolls its fixed-length column loops (see `wgsl::unroll_column_loops`).
    pub divergent_loops: bool,
    /// CUDA row kernels with a warp per row: [`Shader::program`]'s arrays live in the warp's
    /// slice of shared memory (`rg_ws`), from this offset on (floats), and its column loops are
    /// lane-strided (lane `lane` takes columns lane, lane + 32, ...), each followed by a warp
    /// barrier so the next op may read any lane's columns; reductions end in warp shuffles.
    pub warp_rows: Option<usize>,
    /// The most of the warp's shared slice (floats) any point of the body has used.
    pub warp_rows_peak: usize,
    /// CUDA: blocks per SM the kernel asks ptxas to fit (`__launch_bounds__`' second argument),
    /// which caps its registers; None leaves them to ptxas.
    pub min_blocks_per_sm: Option<u32>,
}

impl<'c, 'a> Shader<'c, 'a> {
    pub fn new(ctx: &'c GenCtx<'a>, workgroup: (usize, usize)) -> Self {
        Shader {
            ctx,
            lang: ctx.lang,
            arrays: vec![],
            tables: vec![],
            body: String::new(),
            globals: String::new(),
            workgroup,
            divergent_loops: false,
            warp_rows: None,
            warp_rows_peak: 0,
            min_blocks_per_sm: None,
        }
    }

    pub fn elem(&self, a: ArrayRef) -> Elem {
        match a {
            ArrayRef::Data(_) => match self.ctx.storage {
                DType::F32 => Elem::F32,
                DType::F16 => Elem::F16,
                DType::BF16 => Elem::BF16,
            },
            ArrayRef::Param(_) | ArrayRef::Scratch(_) => Elem::F32,
            ArrayRef::Index(_) | ArrayRef::Table(_) => Elem::U32,
        }
    }

    pub fn len(&self, a: ArrayRef) -> usize {
        match a {
            ArrayRef::Data(b) => {
                let buf = self.ctx.kp.buffer(b);
                self.ctx.g.rows(buf.domain) * buf.width
            }
            ArrayRef::Param(p) => self.ctx.param_shapes[p.0].iter().product(),
            ArrayRef::Index(i) => i.len(self.ctx.g),
            ArrayRef::Table(t) => self.tables[t].len(),
            ArrayRef::Scratch(i) => self.ctx.scratch_elems[i],
        }
    }

    pub fn name(a: ArrayRef) -> String {
        match a {
            ArrayRef::Data(b) => format!("buf{}", b.0),
            ArrayRef::Param(p) => format!("par{}", p.0),
            ArrayRef::Index(i) => format!("ix_{}", i.name()),
            ArrayRef::Table(t) => format!("tab{t}"),
            ArrayRef::Scratch(s) => format!("scr{s}"),
        }
    }

    fn touch(&mut self, a: ArrayRef, writable: bool) -> String {
        match self.arrays.iter_mut().find(|(x, _)| *x == a) {
            Some((_, w)) => *w |= writable,
            None => self.arrays.push((a, writable)),
        }
        Self::name(a)
    }

    /// Expression loading element `idx` (as f32, or u32 for index arrays and tables).
    pub fn ld(&mut self, a: ArrayRef, idx: &str) -> String {
        format!("ld_{}({idx})", self.touch(a, false))
    }

    /// CUDA: the address of element `idx` (what `cp.async` copies from).
    pub fn ptr(&mut self, a: ArrayRef, idx: &str) -> String {
        format!("({} + ({idx}))", self.touch(a, false))
    }

    /// Statement storing `value` (f32) at element `idx`.
    pub fn st(&mut self, a: ArrayRef, idx: &str, value: &str) -> String {
        format!("st_{}({idx}, {value});", self.touch(a, true))
    }

    pub fn ix(&mut self, i: IndexArray, idx: &str) -> String {
        self.ld(ArrayRef::Index(i), idx)
    }

    pub fn table(&mut self, data: Vec<u32>) -> ArrayRef {
        self.tables.push(data);
        ArrayRef::Table(self.tables.len() - 1)
    }

    /// Declaration of a zeroed row array of `len` floats: a local array, or in a warp-per-row
    /// kernel the next `len` floats of the warp's shared slice, zeroed by the lanes.
    pub fn row_array(&mut self, name: &str, len: usize) -> String {
        let decl = self.row_scratch(name, len);
        match self.warp_rows {
            Some(_) => format!("{decl} {} {name}[c] = 0.0f; }} {WARP_SYNC}", column_loop(self.lang, true, "c", len)),
            None => decl,
        }
    }

    /// As [`Shader::row_array`] for an array written before it is read: a warp's slice is not
    /// zeroed (local arrays are, as CUDA and WGSL declare them).
    pub fn row_scratch(&mut self, name: &str, len: usize) -> String {
        match self.warp_rows {
            Some(at) => {
                self.warp_rows = Some(at + len);
                self.warp_rows_peak = self.warp_rows_peak.max(at + len);
                format!("float* {name} = rg_ws + {at}u;")
            }
            None => self.lang.arr(name, len),
        }
    }

    pub fn line(&mut self, text: &str) {
        self.body.push_str(text);
        self.body.push('\n');
    }

    // ---- graph indexing -------------------------------------------------------------------

    /// The row of a buffer reached from row `row` of domain `d` through `at`.
    pub fn resolve(&mut self, d: Domain, row: &str, at: RowRef) -> String {
        match at {
            RowRef::Own => row.to_string(),
            RowRef::EdgeSrc => self.ix(IndexArray::Src, row),
            RowRef::EdgeDst => self.ix(IndexArray::Dst, row),
            RowRef::EdgeCompactSrc => self.ix(IndexArray::EdgeCompactRow, row),
            RowRef::EdgeCompactDst => self.ix(IndexArray::EdgeSegment, row),
            RowRef::CompactNode => match d {
                Domain::CompactSrcRel => self.ix(IndexArray::CompactSrc, row),
                _ => self.ix(IndexArray::SegDst, row),
            },
            RowRef::PairTranspose => {
                let n = self.pair_nodes();
                format!("(({row}) / {nn}u * {nn}u + (({row}) % {n}u) * {n}u + (({row}) / {n}u) % {n}u)", nn = n * n)
            }
            RowRef::TypedToGlobal => match d {
                Domain::Node(Some(t)) => format!("(({row}) + {}u)", self.ctx.g.type_offsets[t.0]),
                _ => row.to_string(),
            },
        }
    }

    fn relation(&mut self, d: Domain, row: &str) -> String {
        match d {
            Domain::Edge => self.ix(IndexArray::Rel, row),
            Domain::CompactSrcRel => self.ix(IndexArray::CompactRel, row),
            Domain::CompactDstRel => self.ix(IndexArray::SegRel, row),
            _ => "0u".into(),
        }
    }

    /// The node type of global node `row` (a comparison chain over the type offsets).
    fn node_type(&self, row: &str) -> String {
        let offs = self.ctx.g.type_offsets;
        if offs.len() <= 2 {
            return "0u".into();
        }
        let terms: Vec<String> = offs[1..].iter().map(|o| format!("rg_selu(0u, 1u, ({row}) >= {o}u)")).collect();
        format!("rg_minu({}, {}u)", terms.join(" + "), offs.len() - 2)
    }

    fn weight_type(&mut self, d: Domain, row: &str, select: WeightSelect) -> String {
        match select {
            WeightSelect::Shared => "0u".into(),
            WeightSelect::Relation => self.relation(d, row),
            WeightSelect::NodeType => self.node_type(row),
        }
    }

    fn table_row(&mut self, d: Domain, row: &str, r: RowIndex) -> String {
        match (r, d) {
            (RowIndex::Zero, _) => "0u".into(),
            (RowIndex::Src, Domain::Edge) => self.ix(IndexArray::Src, row),
            (RowIndex::Dst, Domain::Edge) => self.ix(IndexArray::Dst, row),
            (RowIndex::Src, Domain::CompactSrcRel) => self.ix(IndexArray::CompactSrc, row),
            (RowIndex::Dst, Domain::CompactDstRel) => self.ix(IndexArray::SegDst, row),
            _ => row.to_string(),
        }
    }

    /// N of a pair graph, the divisor of pair row arithmetic: at least 1, so that with N = 0
    /// (no rows, nothing ever divided) the shader stays valid.
    fn pair_nodes(&self) -> usize {
        self.ctx.g.pair.map_or(1, |(_, n, _)| n).max(1)
    }

    /// A norm's output at column `col`: `x` shifted and scaled by its row's statistics, then the
    /// norm's weight and bias (one expression for the row pass and for a GEMM normalising A as
    /// it loads it).
    fn normalized(&mut self, x: &str, shift: &str, inv: &str, weight: Option<ParamId>, bias: Option<ParamId>, col: &str) -> String {
        let mut e = format!("({x} - {shift}) * {inv}");
        if let Some(p) = weight {
            e = format!("{e} * {}", self.ld(ArrayRef::Param(p), col));
        }
        if let Some(p) = bias {
            e = format!("{e} + {}", self.ld(ArrayRef::Param(p), col));
        }
        e
    }

    /// Is pair row `row` between two real nodes?
    fn pair_keep(&mut self, row: &str) -> String {
        let n = self.pair_nodes();
        let bi = format!("(({row}) / {n}u)");
        let bk = format!("(({row}) / {nn}u * {n}u + ({row}) % {n}u)", nn = n * n);
        let (a, b) = (self.ix(IndexArray::PairMask, &bi), self.ix(IndexArray::PairMask, &bk));
        format!("({a} != 0u && {b} != 0u)")
    }

    // ---- row programs ---------------------------------------------------------------------

    /// Emit a [`column_separable`] `prog` for one column `col` of row `row` of domain `d`, every
    /// slot a scalar `{prefix}{i}` (`acc`: the product at that column). Returns the code; the
    /// result is `{prefix}{prog.result()}`. A GEMM applies its epilogue this way as it stores.
    /// `norm`: the row's shift and inverse scale, as expressions, for a program with one norm
    /// ([`column_separable_but_one_norm`]).
    #[allow(clippy::too_many_arguments)]
    pub fn column_program(
        &mut self,
        prog: &RowProgram,
        d: Domain,
        row: &str,
        acc: &str,
        col: &str,
        prefix: &str,
        norm: Option<(&str, &str)>,
    ) -> String {
        let l = self.lang;
        let f = |x: f32| l.f(x);
        let s = |x: usize| format!("{prefix}{x}");
        let mut lines = vec![];
        for (i, op) in prog.ops.iter().enumerate() {
            let e = match op {
                RowOp::Load { buffer, at } => {
                    let bw = self.ctx.kp.buffer(*buffer).width;
                    let r = self.resolve(d, row, *at);
                    self.ld(ArrayRef::Data(*buffer), &format!("({r}) * {bw}u + {col}"))
                }
                RowOp::Acc => acc.to_string(),
                RowOp::Unary { x, f: func } => activation(l, *func, &s(*x)),
                RowOp::Binary { a, b, f: func, .. } => {
                    let sym = match func {
                        BinaryFn::Add => "+",
                        BinaryFn::Sub => "-",
                        BinaryFn::Mul => "*",
                    };
                    format!("{} {sym} {}", s(*a), s(*b))
                }
                RowOp::Bias { x, bias } => format!("{} + {}", s(*x), self.ld(ArrayRef::Param(*bias), col)),
                RowOp::Scale { x, factor } => format!("{} * {}", s(*x), f(*factor)),
                RowOp::ScaleByParam { x, factor } => format!("{} * {}", s(*x), self.ld(ArrayRef::Param(*factor), "0u")),
                RowOp::GatedSkip { update, residual, gate } => {
                    let g = format!("rg_sigmoid({})", self.ld(ArrayRef::Param(*gate), "0u"));
                    format!("{g} * {} + ({} - {g}) * {}", s(*update), f(1.0), s(*residual))
                }
                RowOp::PairMask { x } => format!("rg_sel({}, {}, {})", f(0.0), s(*x), self.pair_keep(row)),
                RowOp::Norm { x, weight, bias, .. } => match norm {
                    Some((shift, inv)) => self.normalized(&s(*x), shift, inv, *weight, *bias, col),
                    None => unreachable!("column_program of a norm without its row statistics"),
                },
                other => unreachable!("column_program of a program that is not column-separable ({other:?})"),
            };
            lines.push(l.let_(&s(i), &e));
        }
        lines.join(" ")
    }

    /// Emit `prog` (ops `..upto`) for row `row` of domain `d`; slot `i` is the array
    /// `{prefix}{i}`. `acc` / `alpha` name the arrays `Acc` / `Softmax` read.
    #[allow(clippy::too_many_arguments)]
    pub fn program(&mut self, prog: &RowProgram, d: Domain, row: &str, acc: &str, alpha: &str, upto: usize, prefix: &str, indent: &str) {
        let l = self.lang;
        let f = |x: f32| l.f(x);
        let mut b = String::new();
        let warp = self.warp_rows.is_some();
        let columns = move |v: &str, w: usize| column_loop(l, warp, v, w);
        let done = if warp { format!("{indent}{WARP_SYNC}\n") } else { String::new() };
        // `var`, summed so far over this lane's columns, summed over the warp.
        let warp_sum = |var: &str| {
            if warp {
                format!("{indent}for (unsigned m = 16u; m > 0u; m >>= 1u) {{ {var} += rg_shfl_xor({var}, m); }}\n")
            } else {
                String::new()
            }
        };
        for (i, op) in prog.ops.iter().enumerate().take(upto) {
            let w = prog.widths[i];
            let o = format!("{prefix}{i}");
            let s = |x: usize| format!("{prefix}{x}");
            let _ = writeln!(b, "{indent}{}", self.row_scratch(&o, w));
            let each = |body: String| format!("{indent}{} {body} }}\n{done}", columns("c", w));
            match op {
                RowOp::Load { buffer, at } => {
                    let bw = self.ctx.kp.buffer(*buffer).width;
                    let r = self.resolve(d, row, *at);
                    let _ = writeln!(b, "{indent}{}", l.let_(&format!("{o}_row"), &r));
                    let v = self.ld(ArrayRef::Data(*buffer), &format!("{o}_row * {bw}u + c"));
                    b += &each(format!("{o}[c] = {v};"));
                }
                RowOp::Acc => b += &each(format!("{o}[c] = {acc}[c];")),
                RowOp::Param { table, select, row: r } => {
                    let shape = &self.ctx.param_shapes[table.0];
                    let (m, pw) = (shape[1], shape[2]);
                    let t = self.weight_type(d, row, *select);
                    let tr = self.table_row(d, row, *r);
                    let _ = writeln!(b, "{indent}{}", l.let_(&format!("{o}_base"), &format!("(({t}) * {m}u + ({tr})) * {pw}u")));
                    let v = self.ld(ArrayRef::Param(*table), &format!("{o}_base + c"));
                    b += &each(format!("{o}[c] = {v};"));
                }
                RowOp::Unary { x, f: func } => {
                    let e = activation(l, *func, &format!("{}[c]", s(*x)));
                    b += &each(format!("{o}[c] = {e};"));
                }
                RowOp::Binary { a, b: bb, f: func, a_shape, b_shape } => {
                    let bi = format!(
                        "{} * {}u + {}",
                        if b_shape.heads == 1 { "0u".to_string() } else { format!("(c / {}u)", a_shape.dim) },
                        b_shape.dim,
                        if b_shape.dim == 1 { "0u".to_string() } else { format!("(c % {}u)", a_shape.dim) }
                    );
                    let sym = match func {
                        BinaryFn::Add => "+",
                        BinaryFn::Sub => "-",
                        BinaryFn::Mul => "*",
                    };
                    b += &each(format!("{o}[c] = {}[c] {sym} {}[{bi}];", s(*a), s(*bb)));
                }
                RowOp::Bias { x, bias } => {
                    let v = self.ld(ArrayRef::Param(*bias), "c");
                    b += &each(format!("{o}[c] = {}[c] + {v};", s(*x)));
                }
                RowOp::Scale { x, factor } => b += &each(format!("{o}[c] = {}[c] * {};", s(*x), f(*factor))),
                RowOp::ScaleByParam { x, factor } => {
                    let v = self.ld(ArrayRef::Param(*factor), "0u");
                    b += &each(format!("{o}[c] = {}[c] * {v};", s(*x)));
                }
                RowOp::HeadDot { a, b: bb, shape } => {
                    let d = shape.dim;
                    let _ = writeln!(
                        b,
                        "{indent}{} {} {} t += {}[h * {d}u + c] * {}[h * {d}u + c]; }} {o}[h] = t; }}",
                        columns("h", shape.heads),
                        l.var_f("t", &f(0.0)),
                        l.for_("c", "0u", &format!("{d}u")),
                        s(*a),
                        s(*bb),
                    );
                    b += &done;
                }
                RowOp::HeadOuter { a, b: bb, a_shape, b_shape } => {
                    let (ad, bd) = (a_shape.dim, b_shape.dim);
                    b += &each(format!(
                        "{} {} {} {o}[c] = {}[h * {ad}u + x] * {}[h * {bd}u + y];",
                        l.let_("h", &format!("c / {}u", ad * bd)),
                        l.let_("x", &format!("(c / {bd}u) % {ad}u")),
                        l.let_("y", &format!("c % {bd}u")),
                        s(*a),
                        s(*bb),
                    ));
                }
                RowOp::HeadMean { x, shape } => {
                    b += &each(format!(
                        "{} {} t += {}[h * {}u + c]; }} {o}[c] = t / {};",
                        l.var_f("t", &f(0.0)),
                        l.for_("h", "0u", &format!("{}u", shape.heads)),
                        s(*x),
                        shape.dim,
                        f(shape.heads as f32)
                    ));
                }
                RowOp::Slice { x, start, .. } => b += &each(format!("{o}[c] = {}[c + {start}u];", s(*x))),
                RowOp::Norm { x, kind, weight, bias } => {
                    let xs = s(*x);
                    let n = f(w as f32);
                    let over = columns("c", w);
                    match kind {
                        NormKind::LayerNorm { eps } => {
                            let _ = writeln!(b, "{indent}{} {over} {o}_mean += {xs}[c]; }}", l.var_f(&format!("{o}_mean"), &f(0.0)));
                            b += &warp_sum(&format!("{o}_mean"));
                            let _ = writeln!(
                                b,
                                "{indent}{} {over} {} {o}_var += t * t; }}",
                                l.var_f(&format!("{o}_var"), &f(0.0)),
                                l.let_("t", &format!("{xs}[c] - {o}_mean / {n}"))
                            );
                            b += &warp_sum(&format!("{o}_var"));
                            let _ = writeln!(
                                b,
                                "{indent}{} {}",
                                l.let_(&format!("{o}_shift"), &format!("{o}_mean / {n}")),
                                l.let_(&format!("{o}_inv"), &format!("{} / rg_sqrt({o}_var / {n} + {})", f(1.0), f(*eps)))
                            );
                        }
                        NormKind::Rms { eps } => {
                            let _ = writeln!(b, "{indent}{} {over} {o}_ss += {xs}[c] * {xs}[c]; }}", l.var_f(&format!("{o}_ss"), &f(0.0)));
                            b += &warp_sum(&format!("{o}_ss"));
                            let _ = writeln!(
                                b,
                                "{indent}{} {}",
                                l.let_(&format!("{o}_shift"), &f(0.0)),
                                l.let_(&format!("{o}_inv"), &format!("{} / rg_sqrt({o}_ss / {n} + {})", f(1.0), f(*eps)))
                            );
                        }
                        NormKind::Affine => {
                            let _ =
                                writeln!(b, "{indent}{} {}", l.let_(&format!("{o}_shift"), &f(0.0)), l.let_(&format!("{o}_inv"), &f(1.0)));
                        }
                    }
                    let e = self.normalized(&format!("{xs}[c]"), &format!("{o}_shift"), &format!("{o}_inv"), *weight, *bias, "c");
                    b += &each(format!("{o}[c] = {e};"));
                }
                RowOp::GatedSkip { update, residual, gate } => {
                    let gv = self.ld(ArrayRef::Param(*gate), "0u");
                    let _ = writeln!(b, "{indent}{}", l.let_(&format!("{o}_g"), &format!("rg_sigmoid({gv})")));
                    b += &each(format!("{o}[c] = {o}_g * {}[c] + ({} - {o}_g) * {}[c];", s(*update), f(1.0), s(*residual)));
                }
                RowOp::PairMask { x } => {
                    let keep = self.pair_keep(row);
                    let _ = writeln!(b, "{indent}{}", l.let_(&format!("{o}_keep"), &keep));
                    b += &each(format!("{o}[c] = rg_sel({}, {}[c], {o}_keep);", f(0.0), s(*x)));
                }
                RowOp::Softmax { .. } => b += &each(format!("{o}[c] = {alpha}[c];")),
            }
        }
        self.body += &b;
    }
}
