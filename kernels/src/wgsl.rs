//! WGSL generators for the templates. Every kernel of a level-2 program becomes one or more
//! compute shaders specialised for the instance and the graph: widths, heads, epilogues, row
//! counts and the storage dtype are baked in as constants. Fused row programs compile to
//! straight-line code over per-invocation arrays (one array per slot).
//!
//! - **map** (and the GEMM's prologue / epilogue passes): one invocation per row.
//! - **GEMM**: 64×64 output tiles per workgroup of 16×16 invocations (4×4 each), operands staged
//!   through workgroup memory in K steps of 16; rows of one weight type per tile (a per-kernel
//!   table), so per-relation weights need no sorting at run time. A non-trivial input program
//!   runs first as a row pass into scratch; a non-trivial epilogue runs after as a row pass.
//! - **traversal**: one invocation per destination over its relation-sorted CSR segments; an
//!   online max-subtracted softmax (or the two-pass form), sum / mean / max, per-relation
//!   segments; no atomics.
//! - **pivot attention**: one invocation per (pair, head) with an online softmax over pivots.
//!
//! Arrays larger than the device's largest storage binding are bound in chunks behind accessor
//! functions (`ld_*` / `st_*`), so large graphs run on devices with 128 MiB bindings.

use crate::cpu::GraphIndex;
use crate::gpu::{gemm_row_groups, gemm_tiles, grid, ArrayRef, Binding, Dispatch, Elem, IndexArray};
use rgnn_ir::level2::*;
use rgnn_ir::{Activation, BinaryFn, Domain, NormKind, Reduce, RowIndex, SoftmaxGroup, WeightSelect};
use std::fmt::Write;

/// What the generated code may assume about the device.
#[derive(Clone, Copy, Debug)]
pub struct WgslOptions {
    /// Storage type of activations (`F32`, or `F16` with f32 arithmetic; needs SHADER_F16).
    pub storage: DType,
    /// Largest storage binding in bytes (arrays beyond it are chunked).
    pub max_binding_bytes: u64,
    /// Required alignment of binding offsets in bytes.
    pub offset_alignment: u64,
    /// Largest workgroup count per dispatch dimension.
    pub max_workgroups_per_dim: u32,
}

impl Default for WgslOptions {
    /// WebGPU's default limits.
    fn default() -> Self {
        WgslOptions { storage: DType::F32, max_binding_bytes: 128 << 20, offset_alignment: 256, max_workgroups_per_dim: 65535 }
    }
}

/// The shaders of a kernel program for one graph.
#[derive(Clone, Debug)]
pub struct WgslProgram {
    /// In execution order.
    pub dispatches: Vec<Dispatch>,
    /// Elements (f32) of the two scratch buffers (GEMM input rows, GEMM products).
    pub scratch_elems: [usize; 2],
}

/// Which destinations a traversal dispatch covers.
enum Nodes {
    /// Every node, one invocation each.
    All,
    /// The listed nodes, one invocation each.
    Listed(Vec<u32>),
    /// The listed nodes, one workgroup each.
    Hubs(Vec<u32>),
}

/// Destinations with at least this many in-edges (or segments) get a workgroup of their own.
pub const HUB_ITEMS: usize = 256;
/// Invocations of a hub workgroup, and columns combined per step through workgroup memory.
const HUB_THREADS: usize = 64;
const HUB_CHUNK: usize = 16;
/// Widest message a hub workgroup combines (its result row lives in workgroup memory).
const MAX_HUB_WIDTH: usize = 2048;

/// Invocations per workgroup of the row-parallel kernels.
const ROW_GROUP: usize = 64;
/// GEMM tile: rows, columns, K step.
const TM: usize = 64;
const TN: usize = 64;
const TK: usize = 16;

/// Generate every dispatch of `kp` for the graph `g`. `param_shapes` are the evaluated
/// parameters' shapes. Fails on a kernel the templates cannot express (an internal error).
pub fn generate(kp: &KernelProgram, param_shapes: &[Vec<usize>], g: &GraphIndex, opts: &WgslOptions) -> Result<WgslProgram, String> {
    let ctx = Ctx { kp, param_shapes, g, opts, scratch_elems: scratch_sizes(kp, param_shapes, g) };
    let mut out = WgslProgram { dispatches: vec![], scratch_elems: ctx.scratch_elems };
    for (k, kernel) in kp.kernels.iter().enumerate() {
        match kernel {
            Kernel::Map(m) => {
                let w = kp.buffer(m.output).width;
                out.dispatches.push(ctx.rowwise(
                    format!("k{k} map"),
                    m.domain,
                    &m.program,
                    None,
                    ArrayRef::Data(m.output),
                    w,
                    m.output_at,
                )?)
            }
            Kernel::Gemm(gk) => ctx.gemm(k, gk, &mut out)?,
            Kernel::Traversal(t) => out.dispatches.extend(ctx.traversals(k, t)?),
            Kernel::PivotAttention(p) => out.dispatches.push(ctx.pivot(k, p)?),
        }
    }
    Ok(out)
}

/// Elements of the scratch buffers: the largest GEMM input rows computed by a prologue pass,
/// and the largest GEMM product kept for an epilogue pass.
fn scratch_sizes(kp: &KernelProgram, param_shapes: &[Vec<usize>], g: &GraphIndex) -> [usize; 2] {
    let mut s = [0, 0];
    for k in &kp.kernels {
        if let Kernel::Gemm(gk) = k {
            let shape = &param_shapes[gk.weight.0];
            let rows = g.rows(gk.domain);
            if !matches!(&gk.input.ops[..], [RowOp::Load { .. }]) {
                s[0] = s[0].max(rows * shape[1] * shape[2]);
            }
            if !matches!(&gk.epilogue.ops[..], [RowOp::Acc]) {
                s[1] = s[1].max(rows * shape[1] * shape[3]);
            }
        }
    }
    s
}

struct Ctx<'a> {
    scratch_elems: [usize; 2],
    kp: &'a KernelProgram,
    param_shapes: &'a [Vec<usize>],
    g: &'a GraphIndex<'a>,
    opts: &'a WgslOptions,
}

/// A float literal WGSL reads back as the same f32.
fn lit(x: f32) -> String {
    if x.is_finite() {
        format!("f32({x:e})")
    } else if x > 0.0 {
        "3.4028235e38".into()
    } else {
        "-3.4028235e38".into()
    }
}

/// Stands for -inf in running maxima (WGSL has no infinities in constants).
const NEG_BIG: &str = "-3.4028235e38";

/// Shared functions every shader may call.
const PRELUDE: &str = "\
// erf by Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7).
fn rgnn_erf(x: f32) -> f32 {
    let ax = abs(x);
    let t = 1.0 / (1.0 + 0.3275911 * ax);
    let y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * exp(-ax * ax);
    return select(-y, y, x >= 0.0);
}
fn rgnn_sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-clamp(x, -80.0, 80.0)));
}
";

/// One shader under construction: its body and the arrays the body touched.
struct Shader<'c, 'a> {
    ctx: &'c Ctx<'a>,
    arrays: Vec<(ArrayRef, bool)>,
    tables: Vec<Vec<u32>>,
    body: String,
    /// Module-scope declarations (workgroup arrays, private tables).
    globals: String,
}

impl<'c, 'a> Shader<'c, 'a> {
    fn new(ctx: &'c Ctx<'a>) -> Self {
        Shader { ctx, arrays: vec![], tables: vec![], body: String::new(), globals: String::new() }
    }

    fn elem(&self, a: ArrayRef) -> Elem {
        match a {
            ArrayRef::Data(_) if self.ctx.opts.storage == DType::F16 => Elem::F16,
            ArrayRef::Data(_) | ArrayRef::Param(_) | ArrayRef::Scratch(_) => Elem::F32,
            ArrayRef::Index(_) | ArrayRef::Table(_) => Elem::U32,
        }
    }

    fn len(&self, a: ArrayRef) -> usize {
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

    fn name(a: ArrayRef) -> String {
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

    /// Expression loading element `idx` (as f32, or u32 for index arrays).
    fn ld(&mut self, a: ArrayRef, idx: &str) -> String {
        format!("ld_{}({idx})", self.touch(a, false))
    }

    fn st(&mut self, a: ArrayRef, idx: &str, value: &str) -> String {
        format!("st_{}({idx}, {value});", self.touch(a, true))
    }

    fn ix(&mut self, i: IndexArray, idx: &str) -> String {
        self.ld(ArrayRef::Index(i), idx)
    }

    fn table(&mut self, data: Vec<u32>) -> ArrayRef {
        self.tables.push(data);
        ArrayRef::Table(self.tables.len() - 1)
    }

    /// Elements per binding chunk for an element type.
    fn chunk_elems(&self, elem: Elem) -> usize {
        let align = self.ctx.opts.offset_alignment.max(4);
        let bytes = (self.ctx.opts.max_binding_bytes / align).max(1) * align;
        (bytes as usize) / elem.bytes()
    }

    /// The complete module and its bindings.
    fn finish(self, label: String, workgroups: [u32; 3]) -> Dispatch {
        let mut head = String::new();
        if self.ctx.opts.storage == DType::F16 {
            head.push_str("enable f16;\n");
        }
        head.push_str(PRELUDE);
        let mut bindings = vec![];
        for &(a, writable) in &self.arrays {
            let elem = self.elem(a);
            let len = self.len(a);
            let chunk = self.chunk_elems(elem);
            let chunks = len.div_ceil(chunk).max(1);
            let name = Self::name(a);
            let (store_ty, val_ty) = match elem {
                Elem::F32 => ("f32", "f32"),
                Elem::F16 => ("f16", "f32"),
                Elem::U32 => ("u32", "u32"),
            };
            let access = if writable || matches!(a, ArrayRef::Data(_) | ArrayRef::Scratch(_)) { "read_write" } else { "read" };
            for c in 0..chunks {
                let _ = writeln!(head, "@group(0) @binding({}) var<storage, {access}> {name}_{c}: array<{store_ty}>;", bindings.len());
                bindings.push(Binding { array: a, elem, chunk: c, chunk_elems: chunk, len, writable });
            }
            let conv = |e: String| if elem == Elem::F16 { format!("f32({e})") } else { e };
            let _ = write!(head, "fn ld_{name}(i: u32) -> {val_ty} {{");
            for c in 0..chunks {
                let read = conv(format!("{name}_{c}[i - {}u]", c * chunk));
                if c + 1 == chunks {
                    let _ = write!(head, " return {read};");
                } else {
                    let _ = write!(head, " if (i < {}u) {{ return {read}; }}", (c + 1) * chunk);
                }
            }
            head.push_str(" }\n");
            if writable {
                let v = if elem == Elem::F16 { "f16(v)" } else { "v" };
                let _ = write!(head, "fn st_{name}(i: u32, v: {val_ty}) {{");
                for c in 0..chunks {
                    let w = format!("{name}_{c}[i - {}u] = {v};", c * chunk);
                    if c + 1 == chunks {
                        let _ = write!(head, " {w}");
                    } else {
                        let _ = write!(head, " if (i < {}u) {{ {w} return; }}", (c + 1) * chunk);
                    }
                }
                head.push_str(" }\n");
            }
        }
        let source = format!("{head}{}{}", self.globals, self.body);
        Dispatch { label, source, entry: "main", bindings, workgroups, tables: self.tables }
    }

    // ---- graph indexing -------------------------------------------------------------------

    /// The row of a buffer reached from row `row` of domain `d` through `at`.
    fn resolve(&mut self, d: Domain, row: &str, at: RowRef) -> String {
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
                let n = self.ctx.g.pair.map_or(1, |(_, n, _)| n);
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
        let terms: Vec<String> = offs[1..].iter().map(|o| format!("select(0u, 1u, ({row}) >= {o}u)")).collect();
        format!("min({}, {}u)", terms.join(" + "), offs.len() - 2)
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

    /// Is pair row `row` between two real nodes?
    fn pair_keep(&mut self, row: &str) -> String {
        let n = self.ctx.g.pair.map_or(1, |(_, n, _)| n);
        let bi = format!("(({row}) / {n}u)");
        let bk = format!("(({row}) / {nn}u * {n}u + ({row}) % {n}u)", nn = n * n);
        let (a, b) = (self.ix(IndexArray::PairMask, &bi), self.ix(IndexArray::PairMask, &bk));
        format!("({a} != 0u && {b} != 0u)")
    }

    // ---- row programs ---------------------------------------------------------------------

    /// Emit `prog` (ops `..upto`) for row `row` of domain `d`; slot `i` is the array
    /// `{prefix}{i}`. `acc` / `alpha` name the arrays `Acc` / `Softmax` read.
    #[allow(clippy::too_many_arguments)]
    fn program(&mut self, prog: &RowProgram, d: Domain, row: &str, acc: &str, alpha: &str, upto: usize, prefix: &str, indent: &str) {
        let mut b = String::new();
        for (i, op) in prog.ops.iter().enumerate().take(upto) {
            let w = prog.widths[i];
            let o = format!("{prefix}{i}");
            let s = |x: usize| format!("{prefix}{x}");
            let _ = writeln!(b, "{indent}var {o}: array<f32, {w}>;");
            let each = |body: String| format!("{indent}for (var c: u32 = 0u; c < {w}u; c++) {{ {body} }}\n");
            match op {
                RowOp::Load { buffer, at } => {
                    let bw = self.ctx.kp.buffer(*buffer).width;
                    let r = self.resolve(d, row, *at);
                    let _ = writeln!(b, "{indent}let {o}_row = {r};");
                    let v = self.ld(ArrayRef::Data(*buffer), &format!("{o}_row * {bw}u + c"));
                    b += &each(format!("{o}[c] = {v};"));
                }
                RowOp::Acc => b += &each(format!("{o}[c] = {acc}[c];")),
                RowOp::Param { table, select, row: r } => {
                    let shape = &self.ctx.param_shapes[table.0];
                    let (m, pw) = (shape[1], shape[2]);
                    let t = self.weight_type(d, row, *select);
                    let tr = self.table_row(d, row, *r);
                    let _ = writeln!(b, "{indent}let {o}_base = (({t}) * {m}u + ({tr})) * {pw}u;");
                    let v = self.ld(ArrayRef::Param(*table), &format!("{o}_base + c"));
                    b += &each(format!("{o}[c] = {v};"));
                }
                RowOp::Unary { x, f } => {
                    let v = format!("{}[c]", s(*x));
                    let e = match f {
                        Activation::Relu => format!("max({v}, 0.0)"),
                        Activation::LeakyRelu(k) => format!("select({v} * {}, {v}, {v} >= 0.0)", lit(*k)),
                        Activation::Gelu => format!("0.5 * {v} * (1.0 + rgnn_erf({v} * 0.70710678118654752))"),
                        Activation::Silu => format!("{v} * rgnn_sigmoid({v})"),
                        Activation::Sigmoid => format!("rgnn_sigmoid({v})"),
                        Activation::Exp => format!("exp({v})"),
                        Activation::Tanh => format!("tanh(clamp({v}, -15.0, 15.0))"),
                        Activation::Elu => format!("select(exp({v}) - 1.0, {v}, {v} > 0.0)"),
                    };
                    b += &each(format!("{o}[c] = {e};"));
                }
                RowOp::Binary { a, b: bb, f, a_shape, b_shape } => {
                    let bi = format!(
                        "{} * {}u + {}",
                        if b_shape.heads == 1 { "0u".to_string() } else { format!("(c / {}u)", a_shape.dim) },
                        b_shape.dim,
                        if b_shape.dim == 1 { "0u".to_string() } else { format!("(c % {}u)", a_shape.dim) }
                    );
                    let sym = match f {
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
                RowOp::Scale { x, factor } => b += &each(format!("{o}[c] = {}[c] * {};", s(*x), lit(*factor))),
                RowOp::ScaleByParam { x, factor } => {
                    let v = self.ld(ArrayRef::Param(*factor), "0u");
                    b += &each(format!("{o}[c] = {}[c] * {v};", s(*x)));
                }
                RowOp::HeadDot { a, b: bb, shape } => {
                    let _ = writeln!(
                        b,
                        "{indent}for (var h: u32 = 0u; h < {}u; h++) {{ var t = 0.0; for (var c: u32 = 0u; c < {d}u; c++) {{ t += {}[h * {d}u + c] * {}[h * {d}u + c]; }} {o}[h] = t; }}",
                        shape.heads,
                        s(*a),
                        s(*bb),
                        d = shape.dim
                    );
                }
                RowOp::HeadOuter { a, b: bb, a_shape, b_shape } => {
                    let (ad, bd) = (a_shape.dim, b_shape.dim);
                    b += &each(format!(
                        "let h = c / {hd}u; let x = (c / {bd}u) % {ad}u; let y = c % {bd}u; {o}[c] = {}[h * {ad}u + x] * {}[h * {bd}u + y];",
                        s(*a),
                        s(*bb),
                        hd = ad * bd
                    ));
                }
                RowOp::HeadMean { x, shape } => {
                    b += &each(format!(
                        "var t = 0.0; for (var h: u32 = 0u; h < {}u; h++) {{ t += {}[h * {}u + c]; }} {o}[c] = t / {};",
                        shape.heads,
                        s(*x),
                        shape.dim,
                        lit(shape.heads as f32)
                    ));
                }
                RowOp::Slice { x, start, .. } => b += &each(format!("{o}[c] = {}[c + {start}u];", s(*x))),
                RowOp::Norm { x, kind, weight, bias } => {
                    let xs = s(*x);
                    let n = lit(w as f32);
                    match kind {
                        NormKind::LayerNorm { eps } => {
                            let _ = writeln!(
                                b,
                                "{indent}var {o}_mean = 0.0; for (var c: u32 = 0u; c < {w}u; c++) {{ {o}_mean += {xs}[c]; }} {o}_mean = {o}_mean / {n};"
                            );
                            let _ = writeln!(
                                b,
                                "{indent}var {o}_var = 0.0; for (var c: u32 = 0u; c < {w}u; c++) {{ let t = {xs}[c] - {o}_mean; {o}_var += t * t; }}"
                            );
                            let _ =
                                writeln!(b, "{indent}let {o}_shift = {o}_mean; let {o}_inv = 1.0 / sqrt({o}_var / {n} + {});", lit(*eps));
                        }
                        NormKind::Rms { eps } => {
                            let _ = writeln!(
                                b,
                                "{indent}var {o}_ss = 0.0; for (var c: u32 = 0u; c < {w}u; c++) {{ {o}_ss += {xs}[c] * {xs}[c]; }}"
                            );
                            let _ = writeln!(b, "{indent}let {o}_shift = 0.0; let {o}_inv = 1.0 / sqrt({o}_ss / {n} + {});", lit(*eps));
                        }
                        NormKind::Affine => {
                            let _ = writeln!(b, "{indent}let {o}_shift = 0.0; let {o}_inv = 1.0;");
                        }
                    }
                    let mut e = format!("({xs}[c] - {o}_shift) * {o}_inv");
                    if let Some(p) = weight {
                        e = format!("{e} * {}", self.ld(ArrayRef::Param(*p), "c"));
                    }
                    if let Some(p) = bias {
                        e = format!("{e} + {}", self.ld(ArrayRef::Param(*p), "c"));
                    }
                    b += &each(format!("{o}[c] = {e};"));
                }
                RowOp::GatedSkip { update, residual, gate } => {
                    let gv = self.ld(ArrayRef::Param(*gate), "0u");
                    let _ = writeln!(b, "{indent}let {o}_g = rgnn_sigmoid({gv});");
                    b += &each(format!("{o}[c] = {o}_g * {}[c] + (1.0 - {o}_g) * {}[c];", s(*update), s(*residual)));
                }
                RowOp::PairMask { x } => {
                    let keep = self.pair_keep(row);
                    let _ = writeln!(b, "{indent}let {o}_keep = {keep};");
                    b += &each(format!("{o}[c] = select(0.0, {}[c], {o}_keep);", s(*x)));
                }
                RowOp::Softmax { .. } => b += &each(format!("{o}[c] = {alpha}[c];")),
            }
        }
        self.body += &b;
    }

    /// `let row = ...; if (row >= rows) { return; }` for a row-parallel dispatch of `rows` rows.
    fn row_header(&mut self, rows: usize, name: &str) -> [u32; 3] {
        let wg = grid(rows.div_ceil(ROW_GROUP), self.ctx.opts.max_workgroups_per_dim);
        let _ = writeln!(
            self.body,
            "@compute @workgroup_size({ROW_GROUP})\nfn main(@builtin(global_invocation_id) gid: vec3<u32>) {{\n    let {name} = gid.x + gid.y * {}u;\n    if ({name} >= {rows}u) {{ return; }}",
            wg[0] as usize * ROW_GROUP
        );
        wg
    }
}

impl<'a> Ctx<'a> {
    /// One invocation per row of `domain`: run `program` (its `Acc` read from row `row` of
    /// `acc_from`, when given) and store the result at the output row reached by `output_at`.
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
        let mut sh = Shader::new(self);
        let rows = self.g.rows(domain);
        let wg = sh.row_header(rows, "row");
        if let Some((a, w)) = acc_from {
            let v = sh.ld(a, &format!("row * {w}u + c"));
            let _ = writeln!(sh.body, "    var acc: array<f32, {w}>;\n    for (var c: u32 = 0u; c < {w}u; c++) {{ acc[c] = {v}; }}");
        }
        sh.program(program, domain, "row", "acc", "acc", program.ops.len(), "s", "    ");
        let res = program.result();
        if program.widths[res] != out_width {
            return Err(format!("{label}: result width {} but output width {out_width}", program.widths[res]));
        }
        let target = sh.resolve(domain, "row", output_at);
        let st = sh.st(output, &format!("o * {out_width}u + c"), &format!("s{res}[c]"));
        let _ = writeln!(sh.body, "    let o = {target};\n    for (var c: u32 = 0u; c < {out_width}u; c++) {{ {st} }}\n}}");
        Ok(sh.finish(label, wg))
    }

    fn gemm(&self, k: usize, gk: &GemmKernel, out: &mut WgslProgram) -> Result<(), String> {
        let shape = &self.param_shapes[gk.weight.0];
        let (types, blocks, bin, bout) = (shape[0], shape[1], shape[2], shape[3]);
        let (in_w, out_w) = (blocks * bin, blocks * bout);
        // The A operand: a plain (possibly gathered) buffer row, or the prologue's scratch rows.
        let (a_array, a_at) = match &gk.input.ops[..] {
            [RowOp::Load { buffer, at }] => (ArrayRef::Data(*buffer), *at),
            _ => {
                out.dispatches.push(self.rowwise(
                    format!("k{k} gemm input"),
                    gk.domain,
                    &gk.input,
                    None,
                    ArrayRef::Scratch(0),
                    in_w,
                    RowRef::Own,
                )?);
                (ArrayRef::Scratch(0), RowRef::Own)
            }
        };
        let plain_epilogue = matches!(&gk.epilogue.ops[..], [RowOp::Acc]);
        let c_array = if plain_epilogue { ArrayRef::Data(gk.output) } else { ArrayRef::Scratch(1) };

        let groups = gemm_row_groups(self.g, gk.domain, gk.select, types);
        let (row_list, tiles) = gemm_tiles(&groups, TM);
        let n_tiles = tiles.len() / 3;
        let col_tiles = bout.div_ceil(TN);
        let tile_grid = grid(n_tiles, self.opts.max_workgroups_per_dim);
        let workgroups = [tile_grid[0], (blocks * col_tiles) as u32, tile_grid[1]];

        let mut sh = Shader::new(self);
        let rows_t = sh.table(row_list);
        let tiles_t = sh.table(tiles);
        let _ = writeln!(
            sh.globals,
            "var<workgroup> ta: array<f32, {}>;\nvar<workgroup> tb: array<f32, {}>;\nvar<workgroup> arow: array<u32, {TM}>;\nvar<workgroup> orow: array<u32, {TM}>;",
            TM * TK,
            TK * TN
        );
        let t_type = sh.ld(tiles_t, "tile * 3u");
        let t_start = sh.ld(tiles_t, "tile * 3u + 1u");
        let t_cnt = sh.ld(tiles_t, "tile * 3u + 2u");
        let r = sh.ld(rows_t, "start + li");
        let a_row = sh.resolve(gk.domain, "r", a_at);
        let a_val = sh.ld(a_array, &format!("arow[m] * {in_w}u + blk * {bin}u + k0 + kk"));
        let w_val = sh.ld(ArrayRef::Param(gk.weight), &format!("((ttype * {blocks}u + blk) * {bin}u + k0 + kb) * {bout}u + n0 + nb"));
        let st = sh.st(c_array, &format!("orow[m] * {out_w}u + blk * {bout}u + n"), "accm[i * 4u + j]");
        let threads = (TM / 4) * (TN / 4);
        let _ = writeln!(
            sh.body,
            "@compute @workgroup_size({tx}, {ty})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) li: u32) {{
    let tile = wg.x + wg.z * {gx}u;
    if (tile >= {n_tiles}u) {{ return; }}
    let ttype = {t_type};
    let start = {t_start};
    let cnt = {t_cnt};
    let blk = wg.y / {col_tiles}u;
    let n0 = (wg.y % {col_tiles}u) * {TN}u;
    if (li < cnt) {{
        let r = {r};
        orow[li] = r;
        arow[li] = {a_row};
    }}
    workgroupBarrier();
    var accm: array<f32, 16>;
    for (var k0: u32 = 0u; k0 < {bin}u; k0 += {TK}u) {{
        for (var q: u32 = 0u; q < {per}u; q++) {{
            let idx = li + q * {threads}u;
            let m = idx / {TK}u;
            let kk = idx % {TK}u;
            var a = 0.0;
            if (m < cnt && k0 + kk < {bin}u) {{ a = {a_val}; }}
            ta[idx] = a;
            let kb = idx / {TN}u;
            let nb = idx % {TN}u;
            var w = 0.0;
            if (k0 + kb < {bin}u && n0 + nb < {bout}u) {{ w = {w_val}; }}
            tb[idx] = w;
        }}
        workgroupBarrier();
        for (var kk: u32 = 0u; kk < {TK}u; kk++) {{
            var av: array<f32, 4>;
            var bv: array<f32, 4>;
            for (var i: u32 = 0u; i < 4u; i++) {{ av[i] = ta[(lid.y * 4u + i) * {TK}u + kk]; }}
            for (var j: u32 = 0u; j < 4u; j++) {{ bv[j] = tb[kk * {TN}u + lid.x * 4u + j]; }}
            for (var i: u32 = 0u; i < 4u; i++) {{
                for (var j: u32 = 0u; j < 4u; j++) {{ accm[i * 4u + j] = fma(av[i], bv[j], accm[i * 4u + j]); }}
            }}
        }}
        workgroupBarrier();
    }}
    for (var i: u32 = 0u; i < 4u; i++) {{
        for (var j: u32 = 0u; j < 4u; j++) {{
            let m = lid.y * 4u + i;
            let n = n0 + lid.x * 4u + j;
            if (m < cnt && n < {bout}u) {{ {st} }}
        }}
    }}
}}",
            tx = TN / 4,
            ty = TM / 4,
            gx = tile_grid[0],
            per = TM * TK / threads,
        );
        out.dispatches.push(sh.finish(format!("k{k} gemm"), workgroups));
        if !plain_epilogue {
            let w = self.kp.buffer(gk.output).width;
            out.dispatches.push(self.rowwise(
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

    /// The traversal's dispatches: one invocation per destination, or, when some destinations
    /// have at least [`HUB_ITEMS`] in-edges (segments), those ("hubs") one workgroup each and the
    /// rest one invocation each.
    fn traversals(&self, k: usize, t: &TraversalKernel) -> Result<Vec<Dispatch>, String> {
        let g = self.g;
        let items = |v: usize| {
            let (s0, s1) = (g.node_seg_ptr[v], g.node_seg_ptr[v + 1]);
            if t.over_segments {
                s1 - s0
            } else {
                g.seg_ptr[s1] - g.seg_ptr[s0]
            }
        };
        let two_pass_softmax = !t.online_softmax && t.edge.ops.iter().any(|o| matches!(o, RowOp::Softmax { .. }));
        let hub_capable = t.domain == Domain::Node(None) && !two_pass_softmax && t.edge.widths[t.edge.result()] <= MAX_HUB_WIDTH;
        let hubs: Vec<u32> =
            if hub_capable { (0..g.num_nodes).filter(|&v| items(v) >= HUB_ITEMS).map(|v| v as u32).collect() } else { vec![] };
        if hubs.is_empty() {
            return Ok(vec![self.traversal(k, t, Nodes::All)?]);
        }
        let small: Vec<u32> = (0..g.num_nodes).filter(|&v| items(v) < HUB_ITEMS).map(|v| v as u32).collect();
        Ok(vec![self.traversal(k, t, Nodes::Listed(small))?, self.traversal(k, t, Nodes::Hubs(hubs))?])
    }

    fn traversal(&self, k: usize, t: &TraversalKernel, nodes: Nodes) -> Result<Dispatch, String> {
        let mut sh = Shader::new(self);
        let res = t.edge.result();
        let width = t.edge.widths[res];
        let hub = matches!(nodes, Nodes::Hubs(_));
        let label = format!("k{k} traversal{}", if hub { " (hubs)" } else { "" });
        let wg = match nodes {
            Nodes::All => sh.row_header(self.g.num_nodes, "v"),
            Nodes::Listed(list) => {
                let n = list.len();
                let table = sh.table(list);
                let wg = sh.row_header(n, "slot");
                let v = sh.ld(table, "slot");
                let _ = writeln!(sh.body, "    let v = {v};");
                wg
            }
            Nodes::Hubs(list) => {
                let n = list.len();
                let table = sh.table(list);
                let wg = grid(n, self.opts.max_workgroups_per_dim);
                let v = sh.ld(table, "hub");
                let _ = writeln!(
                    sh.globals,
                    "var<workgroup> wsh: array<f32, {}>;\nvar<workgroup> wres: array<f32, {width}>;\nvar<workgroup> wcnt: array<u32, {HUB_THREADS}>;",
                    HUB_THREADS * HUB_CHUNK
                );
                let _ = writeln!(
                    sh.body,
                    "@compute @workgroup_size({HUB_THREADS})\nfn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {{\n    let hub = wg.x + wg.y * {}u;\n    if (hub >= {n}u) {{ return; }}\n    let v = {v};",
                    wg[0]
                );
                wg
            }
        };
        let item_domain = if t.over_segments { Domain::CompactDstRel } else { Domain::Edge };
        let out_w = self.kp.buffer(t.output).width;
        let node_seg = |sh: &mut Shader, x: &str| sh.ix(IndexArray::NodeSegPtr, x);
        let (sb, se) = (node_seg(&mut sh, "v"), node_seg(&mut sh, "v + 1u"));
        let (pa, pb) = if t.over_segments {
            ("sg".to_string(), "sg + 1u".to_string())
        } else {
            (sh.ix(IndexArray::SegPtr, "sg"), sh.ix(IndexArray::SegPtr, "sg + 1u"))
        };
        let item = if t.over_segments { "p".to_string() } else { sh.ix(IndexArray::DstEdges, "p") };
        // In a hub workgroup each invocation takes every HUB_THREADS-th item (edge-parallel) or,
        // when results are per (destination, relation) segment, every HUB_THREADS-th segment.
        let softmax_group = t.edge.ops.iter().find_map(|o| if let RowOp::Softmax { group, .. } = o { Some(*group) } else { None });
        let segment_parallel = t.per_relation || softmax_group == Some(SoftmaxGroup::DstRel);
        let (seg_filter, item_filter) = match (hub, segment_parallel) {
            (false, _) => ("", ""),
            (true, true) => ("        if (sg % HUB_THREADS != lid) { continue; }\n", ""),
            (true, false) => ("", "            if (p % HUB_THREADS != lid) { continue; }\n"),
        };
        if hub {
            let _ = writeln!(sh.globals, "const HUB_THREADS: u32 = {HUB_THREADS}u;");
        }
        let _ = writeln!(
            sh.body,
            "    var acc: array<f32, {width}>;\n    var seg_acc: array<f32, {width}>;\n    var count = 0u;\n    var seen = false;\n    let sb = {sb};\n    let se = {se};"
        );
        let epilogue = |sh: &mut Shader, d: Domain, row: &str, acc: &str| -> Result<(), String> {
            let _ = writeln!(sh.body, "    {{");
            sh.program(&t.epilogue, d, row, acc, acc, t.epilogue.ops.len(), "e", "        ");
            let er = t.epilogue.result();
            if t.epilogue.widths[er] != out_w {
                return Err(format!("k{k} traversal: epilogue width {} but output width {out_w}", t.epilogue.widths[er]));
            }
            let st = sh.st(ArrayRef::Data(t.output), &format!("({row}) * {out_w}u + c"), &format!("e{er}[c]"));
            let _ = writeln!(sh.body, "        for (var c: u32 = 0u; c < {out_w}u; c++) {{ {st} }}\n    }}");
            Ok(())
        };
        // Hubs: combine the invocations' partial results into `acc` of invocation 0, which
        // finishes (mean, epilogue, store).
        let merge = |sh: &mut Shader, op: &str, ident: &str| {
            let _ = writeln!(
                sh.body,
                "    wcnt[lid] = count;
    for (var ch: u32 = 0u; ch < {width}u; ch += {HUB_CHUNK}u) {{
        for (var c: u32 = 0u; c < {HUB_CHUNK}u; c++) {{
            let j = min(ch + c, {last}u);
            wsh[lid * {HUB_CHUNK}u + c] = select({ident}, acc[j], seen);
        }}
        workgroupBarrier();
        if (lid < {HUB_CHUNK}u && ch + lid < {width}u) {{
            var r = {ident};
            for (var i: u32 = 0u; i < HUB_THREADS; i++) {{ let x = wsh[i * {HUB_CHUNK}u + lid]; r = {op}; }}
            wres[ch + lid] = r;
        }}
        workgroupBarrier();
    }}
    if (lid != 0u) {{ return; }}
    count = 0u;
    for (var i: u32 = 0u; i < HUB_THREADS; i++) {{ count += wcnt[i]; }}
    for (var c: u32 = 0u; c < {width}u; c++) {{ acc[c] = select(0.0, wres[c], count > 0u); }}",
                last = width - 1
            );
        };

        if t.online_softmax {
            let (si, cols) = t.edge.softmax_weighting().ok_or_else(|| format!("k{k}: online softmax without a weighted message"))?;
            let RowOp::Softmax { x: logit, group } = t.edge.ops[si] else { unreachable!() };
            let lw = t.edge.widths[logit];
            let _ = writeln!(
                sh.globals,
                "var<private> softmax_col: array<u32, {width}> = array<u32, {width}>({});",
                cols.iter().map(|c| format!("{c}u")).collect::<Vec<_>>().join(", ")
            );
            let _ = writeln!(
                sh.body,
                "    var ones: array<f32, {lw}>;\n    for (var c: u32 = 0u; c < {lw}u; c++) {{ ones[c] = 1.0; }}\n    var m: array<f32, {lw}>;\n    var z: array<f32, {lw}>;\n    for (var c: u32 = 0u; c < {lw}u; c++) {{ m[c] = {NEG_BIG}; }}\n    var start_group = true;\n    for (var sg = sb; sg < se; sg++) {{\n{seg_filter}        for (var p = {pa}; p < {pb}; p++) {{\n{item_filter}            if (start_group) {{\n                for (var c: u32 = 0u; c < {lw}u; c++) {{ m[c] = {NEG_BIG}; z[c] = 0.0; }}\n                for (var c: u32 = 0u; c < {width}u; c++) {{ seg_acc[c] = 0.0; }}\n                start_group = false;\n            }}\n            seen = true;\n            count += 1u;\n            let item = {item};"
            );
            sh.program(&t.edge, item_domain, "item", "acc", "ones", t.edge.ops.len(), "s", "            ");
            let _ = writeln!(
                sh.body,
                "            var scale: array<f32, {lw}>;
            var weight: array<f32, {lw}>;
            for (var c: u32 = 0u; c < {lw}u; c++) {{
                let new_m = max(m[c], s{logit}[c]);
                scale[c] = select(exp(m[c] - new_m), 0.0, m[c] == {NEG_BIG});
                weight[c] = exp(s{logit}[c] - new_m);
                z[c] = z[c] * scale[c] + weight[c];
                m[c] = new_m;
            }}
            for (var j: u32 = 0u; j < {width}u; j++) {{
                let c = softmax_col[j];
                seg_acc[j] = seg_acc[j] * scale[c] + weight[c] * s{res}[j];
            }}
        }}
        if (({rel_group} || sg + 1u == se) && !start_group) {{
            for (var j: u32 = 0u; j < {width}u; j++) {{ acc[j] += seg_acc[j] / (z[softmax_col[j]] + 1e-16); }}
            start_group = true;
        }}
    }}",
                rel_group = group == SoftmaxGroup::DstRel,
            );
            if t.domain == Domain::CompactDstRel || t.reduce != Reduce::Sum {
                return Err(format!("k{k}: online softmax needs a sum over destinations"));
            }
            if hub && !segment_parallel {
                // Each invocation normalised its share by its own (max, sum); reweigh the shares
                // by sum · e^(max − overall max) so they combine into the softmax over all edges.
                let _ = writeln!(sh.globals, "var<workgroup> wm: array<f32, {}>;", HUB_THREADS * lw);
                let _ = writeln!(
                    sh.body,
                    "    for (var c: u32 = 0u; c < {lw}u; c++) {{ wm[lid * {lw}u + c] = m[c]; }}
    workgroupBarrier();
    var share: array<f32, {lw}>;
    for (var c: u32 = 0u; c < {lw}u; c++) {{
        var mx = {NEG_BIG};
        for (var i: u32 = 0u; i < HUB_THREADS; i++) {{ mx = max(mx, wm[i * {lw}u + c]); }}
        share[c] = select(z[c] * exp(m[c] - mx), 0.0, m[c] == {NEG_BIG});
    }}
    workgroupBarrier();
    for (var c: u32 = 0u; c < {lw}u; c++) {{ wm[lid * {lw}u + c] = share[c]; }}
    workgroupBarrier();
    for (var c: u32 = 0u; c < {lw}u; c++) {{
        var total = 0.0;
        for (var i: u32 = 0u; i < HUB_THREADS; i++) {{ total += wm[i * {lw}u + c]; }}
        share[c] = select(share[c] / total, 0.0, total == 0.0);
    }}
    for (var j: u32 = 0u; j < {width}u; j++) {{ acc[j] = acc[j] * share[softmax_col[j]]; }}"
                );
            }
            if hub {
                merge(&mut sh, "r + x", "0.0");
            }
            epilogue(&mut sh, Domain::Node(None), "v", "acc")?;
            sh.body.push_str("}\n");
            return Ok(sh.finish(label, wg));
        }

        // Softmax statistics over a range of items (two-pass form): max, then sum of exponentials.
        let softmax = t.edge.ops.iter().position(|o| matches!(o, RowOp::Softmax { .. }));
        let stats = |sh: &mut Shader, si: usize, from: &str, to: &str| {
            let RowOp::Softmax { x: logit, .. } = t.edge.ops[si] else { unreachable!() };
            let lw = t.edge.widths[logit];
            let item = if t.over_segments { "p".to_string() } else { sh.ix(IndexArray::DstEdges, "p") };
            for pass in 0..2 {
                if pass == 0 {
                    let _ = writeln!(sh.body, "    for (var c: u32 = 0u; c < {lw}u; c++) {{ m[c] = {NEG_BIG}; z[c] = 0.0; }}");
                }
                let _ = writeln!(sh.body, "    for (var p = {from}; p < {to}; p++) {{\n        let item = {item};");
                sh.program(&t.edge, item_domain, "item", "acc", "acc", si, "l", "        ");
                let stmt = if pass == 0 { format!("m[c] = max(m[c], l{logit}[c]);") } else { format!("z[c] += exp(l{logit}[c] - m[c]);") };
                let _ = writeln!(sh.body, "        for (var c: u32 = 0u; c < {lw}u; c++) {{ {stmt} }}\n    }}");
            }
        };
        if let Some(si) = softmax {
            let RowOp::Softmax { x: logit, group } = t.edge.ops[si] else { unreachable!() };
            let lw = t.edge.widths[logit];
            let _ = writeln!(sh.body, "    var m: array<f32, {lw}>;\n    var z: array<f32, {lw}>;\n    var alpha: array<f32, {lw}>;");
            if group == SoftmaxGroup::Dst {
                let (from, to) = if t.over_segments {
                    ("sb".to_string(), "se".to_string())
                } else {
                    (sh.ix(IndexArray::SegPtr, "sb"), sh.ix(IndexArray::SegPtr, "se"))
                };
                stats(&mut sh, si, &from, &to);
            }
        }
        let _ = writeln!(sh.body, "    for (var sg = sb; sg < se; sg++) {{\n{seg_filter}    let pa = {pa};\n    let pb = {pb};");
        if let Some(si) = softmax {
            if matches!(t.edge.ops[si], RowOp::Softmax { group: SoftmaxGroup::DstRel, .. }) {
                stats(&mut sh, si, "pa", "pb");
            }
        }
        let _ = writeln!(
            sh.body,
            "    for (var c: u32 = 0u; c < {width}u; c++) {{ seg_acc[c] = 0.0; }}\n    for (var p = pa; p < pb; p++) {{\n{item_filter}        let item = {item};"
        );
        if let Some(si) = softmax {
            let RowOp::Softmax { x: logit, .. } = t.edge.ops[si] else { unreachable!() };
            let lw = t.edge.widths[logit];
            sh.program(&t.edge, item_domain, "item", "acc", "alpha", si, "l", "        ");
            let _ = writeln!(
                sh.body,
                "        for (var c: u32 = 0u; c < {lw}u; c++) {{ alpha[c] = exp(l{logit}[c] - m[c]) / (z[c] + 1e-16); }}"
            );
        }
        sh.program(&t.edge, item_domain, "item", "acc", "alpha", t.edge.ops.len(), "s", "        ");
        let (target, first) = if t.per_relation { ("seg_acc", "p == pa") } else { ("acc", "!seen") };
        let reduce = match t.reduce {
            Reduce::Sum | Reduce::Mean => format!("{target}[c] += s{res}[c];"),
            Reduce::Max => format!("{target}[c] = select(max({target}[c], s{res}[c]), s{res}[c], {first});"),
        };
        let _ = writeln!(
            sh.body,
            "        for (var c: u32 = 0u; c < {width}u; c++) {{ {reduce} }}\n        seen = true;\n        count += 1u;\n    }}"
        );
        if t.per_relation {
            let _ = writeln!(sh.body, "    if (pb > pa) {{");
            if t.reduce == Reduce::Mean {
                let _ = writeln!(sh.body, "    for (var c: u32 = 0u; c < {width}u; c++) {{ seg_acc[c] = seg_acc[c] / f32(pb - pa); }}");
            }
            if t.domain == Domain::CompactDstRel {
                epilogue(&mut sh, Domain::CompactDstRel, "sg", "seg_acc")?;
            } else {
                let _ = writeln!(sh.body, "    for (var c: u32 = 0u; c < {width}u; c++) {{ acc[c] += seg_acc[c]; }}");
            }
            let _ = writeln!(sh.body, "    }}");
        }
        sh.body.push_str("    }\n");
        if t.domain != Domain::CompactDstRel {
            if hub {
                match (t.per_relation, t.reduce) {
                    (false, Reduce::Max) => merge(&mut sh, "max(r, x)", NEG_BIG),
                    _ => merge(&mut sh, "r + x", "0.0"),
                }
            }
            if !t.per_relation && t.reduce == Reduce::Mean {
                let _ = writeln!(
                    sh.body,
                    "    if (count > 0u) {{ for (var c: u32 = 0u; c < {width}u; c++) {{ acc[c] = acc[c] / f32(count); }} }}"
                );
            }
            epilogue(&mut sh, Domain::Node(None), "v", "acc")?;
        }
        sh.body.push_str("}\n");
        Ok(sh.finish(label, wg))
    }

    fn pivot(&self, k: usize, p: &PivotKernel) -> Result<Dispatch, String> {
        let (batch, n, _) = self.g.pair.ok_or_else(|| format!("k{k}: pivot attention needs a pair graph"))?;
        let (heads, d) = (p.shape.heads, p.shape.dim);
        let mut sh = Shader::new(self);
        let wg = sh.row_header(batch * n * n * heads, "t");
        let out_w = self.kp.buffer(p.output).width;
        // Element c of operand o at pair (b, x, y), head h.
        let el = |sh: &mut Shader, o: usize, x: &str, y: &str| {
            let (buf, col) = p.operands[o];
            let w = self.kp.buffer(buf).width;
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
        let _ = writeln!(
            sh.body,
            "    let h = t % {heads}u;
    let row = t / {heads}u;
    let b = row / {nn}u;
    let i = (row / {n}u) % {n}u;
    let k = row % {n}u;
    var q: array<f32, {d}>;
    for (var c: u32 = 0u; c < {d}u; c++) {{ q[c] = {q}; }}
    let query_real = {mask_i} != 0u;
    var m = {NEG_BIG};
    var z = 0.0;
    var y: array<f32, {d}>;
    for (var j: u32 = 0u; j < {n}u; j++) {{
        var s1 = 0.0;
        var s2 = 0.0;
        for (var c: u32 = 0u; c < {d}u; c++) {{ s1 = fma(q[c], {k1}, s1); s2 = fma(q[c], {k2}, s2); }}
        var s = (s1 + s2) * {scale};
        if (!(query_real && {mask_j} != 0u)) {{ s = -1e9; }}
        let new_m = max(m, s);
        let r = exp(m - new_m);
        let e = exp(s - new_m);
        z = z * r + e;
        for (var c: u32 = 0u; c < {d}u; c++) {{ y[c] = y[c] * r + e * ({v1} + {v2}); }}
        m = new_m;
    }}
    for (var c: u32 = 0u; c < {d}u; c++) {{ {st} }}
}}",
            nn = n * n,
            scale = lit(p.scale),
        );
        Ok(sh.finish(format!("k{k} pivot_attention"), wg))
    }
}
