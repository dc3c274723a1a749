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
    let scratch_elems = scratch_sizes(kp, param_shapes, g, Lang::Wgsl);
    let ctx = GenCtx {
        lang: Lang::Wgsl,
        kp,
        param_shapes,
        g,
        storage: opts.storage,
        scratch_elems,
        tensor_cores: false,
        split_tf32: false,
        pivot_blocks_per_sm: 1,
    };
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

/// Column loops up to this long are unrolled in kernels with divergent loops (traversals; see
/// [`unroll_column_loops`]). Kernels whose loops all have fixed trip counts keep them: unrolling
/// their wide rows (FloydNet's 4C-wide FFN rows) only lengthens compilation.
const MAX_UNROLL: usize = 1024;

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
            body = if sh.divergent_loops { unroll_column_loops(&sh.body, MAX_UNROLL) } else { sh.body.clone() }
        );
        Dispatch::new(label, source, "main", bindings, workgroups, [wx as u32, wy as u32], sh.tables)
    }
}

/// Unroll every loop `for (var c: u32 = 0u; c < Nu; c++) { ... }` (and over `j`, `h`) with
/// N ≤ `max` into N copies of its body with the variable replaced by the literal: per-thread
/// arrays are then indexed by constants only and live in registers. (Mesa's lavapipe mis-executes dynamically indexed per-thread arrays
/// of 64 floats and more inside loops whose trip counts differ between the lanes of a SIMD group;
/// constant indices avoid that, and help real GPUs too.)
pub fn unroll_column_loops(body: &str, max: usize) -> String {
    ["c", "j", "h"].iter().fold(body.to_string(), |text, var| unroll_loops_over(&text, var, max))
}

fn unroll_loops_over(body: &str, var: &str, max: usize) -> String {
    let head = format!("for (var {var}: u32 = 0u; {var} < ");
    let tail = format!("u; {var}++) {{");
    let (head, tail) = (head.as_str(), tail.as_str());
    let mut out = String::with_capacity(body.len());
    let mut rest = body;
    while let Some(at) = rest.find(head) {
        out.push_str(&rest[..at]);
        let after = &rest[at + head.len()..];
        let digits: String = after.chars().take_while(|ch| ch.is_ascii_digit()).collect();
        let (Ok(n), true) = (digits.parse::<usize>(), after[digits.len()..].starts_with(tail)) else {
            out.push_str(head);
            rest = after;
            continue;
        };
        let body_start = digits.len() + tail.len();
        // The matching closing brace.
        let mut depth = 1;
        let mut end = None;
        for (i, ch) in after[body_start..].char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(body_start + i);
                        break;
                    }
                }
                _ => {}
            }
        }
        let Some(end) = end else {
            out.push_str(head);
            rest = after;
            continue;
        };
        let inner = &after[body_start..end];
        if n > max || inner.contains("continue") || inner.contains("break") || inner.contains("return") {
            out.push_str(&rest[at..at + head.len() + end + 1]);
        } else {
            let inner = unroll_loops_over(inner, var, max);
            out.push('{');
            for k in 0..n {
                out.push_str(" {");
                out.push_str(&replace_ident(&inner, var, &format!("{k}u")));
                out.push('}');
            }
            out.push_str(" }");
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// `text` with every identifier token `name` replaced by `with`.
fn replace_ident(text: &str, name: &str, with: &str) -> String {
    let is_ident = |ch: char| ch.is_ascii_alphanumeric() || ch == '_';
    let mut out = String::with_capacity(text.len());
    let chars: Vec<char> = text.chars().collect();
    let name: Vec<char> = name.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i..].starts_with(&name) && (i == 0 || !is_ident(chars[i - 1])) && chars.get(i + name.len()).is_none_or(|&ch| !is_ident(ch))
        {
            out.push_str(with);
            i += name.len();
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::unroll_column_loops;

    #[test]
    fn column_loops_unroll_into_constant_indices() {
        let body = "for (var c: u32 = 0u; c < 2u; c++) { a[c] = b[c] + cc; }";
        assert_eq!(unroll_column_loops(body, 8), "{ { a[0u] = b[0u] + cc; } { a[1u] = b[1u] + cc; } }");
        // Nested loops over h and c, and a loop too long to unroll, which stays.
        let nested = "for (var h: u32 = 0u; h < 2u; h++) { for (var c: u32 = 0u; c < 1u; c++) { t += x[h * 1u + c]; } }";
        assert_eq!(unroll_column_loops(nested, 8), "{ { { { t += x[0u * 1u + 0u]; } } } { { { t += x[1u * 1u + 0u]; } } } }");
        let long = "for (var c: u32 = 0u; c < 9u; c++) { a[c] = 0.0; }";
        assert_eq!(unroll_column_loops(long, 8), long);
        // Loops with control flow out of the body are left alone.
        let early = "for (var j: u32 = 0u; j < 2u; j++) { if (x) { continue; } }";
        assert_eq!(unroll_column_loops(early, 8), early);
    }
}
