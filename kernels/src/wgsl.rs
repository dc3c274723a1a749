//! WGSL: the templates ([`crate::templates`]) finished as WGSL compute shaders, specialised for
//! the instance and the graph (widths, heads, epilogues, row counts and the storage dtype are
//! constants).
//!
//! Arrays are storage bindings. An array larger than the device's largest storage binding is
//! bound as several chunks behind its accessor (`ld_*` / `st_*` pick the chunk), so large graphs
//! run on devices with 128 MiB bindings. Data arrays are `read_write` (intermediates share one
//! arena buffer, and a buffer may not be bound read-only and writable in one dispatch).

use crate::cpu::GraphIndex;
use crate::gpu::{ArrayRef, Binding, Dispatch, Elem};
use crate::source::{scratch_sizes, GenCtx, Lang, Shader};
use crate::templates::Finish;
use rgnn_ir::level2::*;
use std::fmt::Write;

pub use crate::templates::HUB_ITEMS;

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

/// Generate every dispatch of `kp` for the graph `g`. `param_shapes` are the evaluated
/// parameters' shapes. Fails on a kernel the templates cannot express (an internal error).
pub fn generate(kp: &KernelProgram, param_shapes: &[Vec<usize>], g: &GraphIndex, opts: &WgslOptions) -> Result<WgslProgram, String> {
    if opts.storage == DType::BF16 {
        return Err("WGSL has no bf16 storage".into());
    }
    let scratch_elems = scratch_sizes(kp, param_shapes, g);
    let ctx = GenCtx { lang: Lang::Wgsl, kp, param_shapes, g, storage: opts.storage, scratch_elems };
    let dispatches = crate::templates::generate(&ctx, &WgslFinish { opts: *opts })?;
    Ok(WgslProgram { dispatches, scratch_elems })
}

/// Math the templates call, and erf (WGSL has none).
const PRELUDE: &str = "\
fn rg_max(a: f32, b: f32) -> f32 { return max(a, b); }
fn rg_minu(a: u32, b: u32) -> u32 { return min(a, b); }
fn rg_sel(f: f32, t: f32, c: bool) -> f32 { return select(f, t, c); }
fn rg_selu(f: u32, t: u32, c: bool) -> u32 { return select(f, t, c); }
fn rg_fma(a: f32, b: f32, c: f32) -> f32 { return fma(a, b, c); }
fn rg_exp(x: f32) -> f32 { return exp(x); }
fn rg_sqrt(x: f32) -> f32 { return sqrt(x); }
fn rg_tanh(x: f32) -> f32 { return tanh(clamp(x, -15.0, 15.0)); }
fn rg_sigmoid(x: f32) -> f32 { return 1.0 / (1.0 + exp(-clamp(x, -80.0, 80.0))); }
// erf by Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7).
fn rg_erf(x: f32) -> f32 {
    let ax = abs(x);
    let t = 1.0 / (1.0 + 0.3275911 * ax);
    let y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * exp(-ax * ax);
    return select(-y, y, x >= 0.0);
}
";

struct WgslFinish {
    opts: WgslOptions,
}

impl WgslFinish {
    /// Elements per binding chunk for an element type.
    fn chunk_elems(&self, elem: Elem) -> usize {
        let align = self.opts.offset_alignment.max(4);
        let bytes = (self.opts.max_binding_bytes / align).max(1) * align;
        (bytes as usize) / elem.bytes()
    }
}

impl Finish for WgslFinish {
    fn max_workgroups_per_dim(&self) -> u32 {
        self.opts.max_workgroups_per_dim
    }

    fn finish(&self, sh: Shader, label: String, workgroups: [u32; 3]) -> Dispatch {
        let mut head = String::new();
        if self.opts.storage == DType::F16 {
            head.push_str("enable f16;\n");
        }
        head.push_str(PRELUDE);
        let mut bindings = vec![];
        for &(a, writable) in &sh.arrays {
            let elem = sh.elem(a);
            let len = sh.len(a);
            let chunk = self.chunk_elems(elem);
            let chunks = len.div_ceil(chunk).max(1);
            let name = Shader::name(a);
            let (store_ty, val_ty) = match elem {
                Elem::F16 => ("f16", "f32"),
                Elem::U32 => ("u32", "u32"),
                _ => ("f32", "f32"),
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
        let (wx, wy) = sh.workgroup;
        let source = format!(
            "{head}{globals}
@compute @workgroup_size({wx}, {wy})
fn main(@builtin(global_invocation_id) rg_gid: vec3<u32>, @builtin(workgroup_id) rg_wg: vec3<u32>, @builtin(local_invocation_id) rg_lid: vec3<u32>, @builtin(local_invocation_index) li: u32) {{
    let gid_x = rg_gid.x; let gid_y = rg_gid.y;
    let wg_x = rg_wg.x; let wg_y = rg_wg.y; let wg_z = rg_wg.z;
    let lid_x = rg_lid.x; let lid_y = rg_lid.y;
{body}}}
",
            globals = sh.globals,
            body = sh.body
        );
        Dispatch { label, source, entry: "main", bindings, workgroups, threads: [wx as u32, wy as u32], tables: sh.tables }
    }
}
