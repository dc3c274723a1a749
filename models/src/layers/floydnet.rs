//! FloydNet `PivotalAttentionBlock` on the pair state `x [B, N, N, C]`, followed by the pair mask.
//! Pre-norm: `x += c_proj(PA(norm1(x + c_mix(xᵀ))))`, `x += ffn(norm2(x)) · ffn_scale`.
//! Post-norm: `x = norm1(x + c_proj(PA(x + c_mix(xᵀ))))`, `x = norm2(x + ffn(x)) · ffn_scale`.

use super::{err, torch_linear};
use crate::weights::{ir, Weights};
use crate::{Flow, LayerConfig, ModelError, PivotalConfig, PivotalNorm};
use rgnn_ir::{NormKind, ProgramBuilder, Shape, ValueId};

pub(super) fn build(
    b: &mut ProgramBuilder,
    w: &mut Weights,
    layer: &LayerConfig,
    c: &PivotalConfig,
    flow: Flow,
) -> Result<Flow, ModelError> {
    let Flow::Pairs(x) = flow else {
        return Err(err(layer, "needs a pair graph file (`pair [B, N, N, C]`)"));
    };
    let ch = c.embed_dim;
    let width = b.info(x).shape.width();
    if width != ch {
        return Err(err(layer, &format!("pair state has {width} channels, but `embed_dim` is {ch}")));
    }
    let e = |e| ir(layer, e);
    let mixed = if c.enable_symmetric_mix {
        let xt = b.pair_transpose(x).map_err(e)?;
        let xt = torch_linear(b, w, layer, xt, "c_mix", ch, c.bias)?;
        b.add(x, xt).map_err(e)?
    } else {
        x
    };
    let mut x = x;
    if !c.post_norm {
        let hn = norm(b, w, layer, c, "norm1", mixed)?;
        let a = attention(b, w, layer, c, hn)?;
        x = b.add(x, a).map_err(e)?;
        if c.enable_ffn {
            let hn = norm(b, w, layer, c, "norm2", x)?;
            let f = ffn(b, w, layer, c, hn)?;
            let scale = w.load(b, layer, "ffn_scale", &[])?;
            let f = b.scale_by_param(f, scale).map_err(e)?;
            x = b.add(x, f).map_err(e)?;
        }
    } else {
        let a = attention(b, w, layer, c, mixed)?;
        let s = b.add(x, a).map_err(e)?;
        x = norm(b, w, layer, c, "norm1", s)?;
        if c.enable_ffn {
            let f = ffn(b, w, layer, c, x)?;
            let s = b.add(x, f).map_err(e)?;
            let n = norm(b, w, layer, c, "norm2", s)?;
            let scale = w.load(b, layer, "ffn_scale", &[])?;
            x = b.scale_by_param(n, scale).map_err(e)?;
        }
    }
    let x = b.pair_mask(x).map_err(e)?;
    Ok(Flow::Pairs(b.name(x, format!("{}.out", layer.prefix))))
}

fn norm(
    b: &mut ProgramBuilder,
    w: &mut Weights,
    layer: &LayerConfig,
    c: &PivotalConfig,
    name: &str,
    x: ValueId,
) -> Result<ValueId, ModelError> {
    let ch = c.embed_dim;
    let (kind, has_bias) = match c.norm_fn {
        PivotalNorm::None => return Ok(x),
        PivotalNorm::LayerNorm => (NormKind::LayerNorm { eps: 1e-5 }, true),
        PivotalNorm::Rms => (NormKind::Rms { eps: 1e-5 }, false),
        PivotalNorm::Affine => (NormKind::Affine, true),
    };
    let weight = w.load(b, layer, &format!("{name}.weight"), &[ch])?;
    let bias = if has_bias { Some(w.load(b, layer, &format!("{name}.bias"), &[ch])?) } else { None };
    b.norm(x, kind, Some(weight), bias).map_err(|e| ir(layer, e))
}

fn attention(b: &mut ProgramBuilder, w: &mut Weights, layer: &LayerConfig, c: &PivotalConfig, x: ValueId) -> Result<ValueId, ModelError> {
    let (ch, h) = (c.embed_dim, c.num_heads);
    let d = ch / h;
    let e = |e| ir(layer, e);
    let qkv = torch_linear(b, w, layer, x, "c_qkv", 5 * ch, c.bias)?;
    // Output blocks in order q_ik, k_ij, k_jk, v_ij, v_jk; channel = head·d + e.
    let mut parts = vec![];
    for i in 0..5 {
        let s = b.slice(qkv, i * ch, ch).map_err(e)?;
        parts.push(b.reshape(s, Shape::new(h, d)).map_err(e)?);
    }
    let y = b.pivot_attention(parts[0], parts[1], parts[2], parts[3], parts[4], 1.0 / (2.0 * d as f32).sqrt()).map_err(e)?;
    let y = b.reshape(y, Shape::flat(ch)).map_err(e)?;
    torch_linear(b, w, layer, y, "c_proj", ch, c.bias)
}

fn ffn(b: &mut ProgramBuilder, w: &mut Weights, layer: &LayerConfig, c: &PivotalConfig, x: ValueId) -> Result<ValueId, ModelError> {
    let ch = c.embed_dim;
    let hidden = c.ffn_expansion_ratio * ch;
    let y = torch_linear(b, w, layer, x, "ffn.0", hidden, c.bias)?;
    let y = b.unary(y, c.activation_fn).map_err(|e| ir(layer, e))?;
    torch_linear(b, w, layer, y, "ffn.2", ch, c.bias)
}
