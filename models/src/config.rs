//! The `rgnn.config` document (see docs/model-config.md): parsed by hand from JSON so every
//! error can name the layer and key, and unknown keys can be reported instead of silently lost.

use crate::ModelError;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

pub const FORMAT: &str = "rgnn/1";

/// `metadata`: node types and (src, relation, dst) edge types, in the weights' order.
#[derive(Clone, Debug, PartialEq)]
pub struct Metadata {
    pub node_types: Vec<String>,
    pub edge_types: Vec<(String, String, String)>,
}

impl Metadata {
    /// `src__rel__dst`, as PyG names per-edge-type parameters and rgnn names graph tensors.
    pub fn edge_type_key(et: &(String, String, String)) -> String {
        format!("{}__{}__{}", et.0, et.1, et.2)
    }
}

/// The whole model config.
#[derive(Clone, Debug)]
pub struct ModelConfig {
    pub model: String,
    pub metadata: Option<Metadata>,
    pub layers: Vec<LayerConfig>,
    /// Keys that were present but are not understood (reported as warnings).
    pub warnings: Vec<String>,
}

/// One layer: what is common to every type, and the type's own options.
#[derive(Clone, Debug)]
pub struct LayerConfig {
    pub index: usize,
    pub prefix: String,
    pub activation: Option<rgnn_ir::Activation>,
    pub kind: LayerKind,
}

impl LayerConfig {
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            LayerKind::Rgcn(_) => "RGCNConv",
            LayerKind::RelGraphConv(_) => "RelGraphConv",
            LayerKind::Rgat(_) => "RGATConv",
            LayerKind::Hgt(_) => "HGTConv",
            LayerKind::Pivotal(_) => "PivotalAttentionBlock",
        }
    }
    /// How errors refer to this layer: `layer 0 (RGCNConv "convs.0")`.
    pub fn label(&self) -> String {
        format!("layer {} ({} {:?})", self.index, self.type_name(), self.prefix)
    }
    /// Full checkpoint key of one of this layer's weights.
    pub fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }
}

#[derive(Clone, Debug)]
pub enum LayerKind {
    Rgcn(RgcnConfig),
    RelGraphConv(RelGraphConvConfig),
    Rgat(RgatConfig),
    Hgt(HgtConfig),
    Pivotal(PivotalConfig),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aggr {
    Mean,
    Sum,
    Max,
}

/// PyG `RGCNConv`.
#[derive(Clone, Debug)]
pub struct RgcnConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub num_relations: usize,
    pub num_bases: Option<usize>,
    pub num_blocks: Option<usize>,
    pub aggr: Aggr,
    pub root_weight: bool,
    pub bias: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Regularizer {
    None,
    Basis,
    Bdd,
}

/// DGL `RelGraphConv`.
#[derive(Clone, Debug)]
pub struct RelGraphConvConfig {
    pub in_feat: usize,
    pub out_feat: usize,
    pub num_rels: usize,
    pub regularizer: Regularizer,
    pub num_bases: Option<usize>,
    pub bias: bool,
    pub self_loop: bool,
    pub layer_norm: bool,
    /// `true`: per-relation right normalisation (1 / in-degree within the relation).
    pub norm_right: bool,
}

/// PyG `RGATConv`.
#[derive(Clone, Debug)]
pub struct RgatConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub num_relations: usize,
    pub heads: usize,
    pub dim: usize,
    pub concat: bool,
    pub multiplicative: bool,
    pub within_relation: bool,
    pub negative_slope: f32,
    pub bias: bool,
    pub num_bases: Option<usize>,
    pub num_blocks: Option<usize>,
}

/// PyG `HGTConv`.
#[derive(Clone, Debug)]
pub struct HgtConfig {
    pub in_channels: HgtInChannels,
    pub out_channels: usize,
    pub heads: usize,
}

#[derive(Clone, Debug)]
pub enum HgtInChannels {
    All(usize),
    PerType(BTreeMap<String, usize>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PivotalNorm {
    LayerNorm,
    Rms,
    Affine,
    None,
}

/// FloydNet `PivotalAttentionBlock`.
#[derive(Clone, Debug)]
pub struct PivotalConfig {
    pub embed_dim: usize,
    pub num_heads: usize,
    pub bias: bool,
    pub ffn_expansion_ratio: usize,
    pub post_norm: bool,
    pub activation_fn: rgnn_ir::Activation,
    pub norm_fn: PivotalNorm,
    pub enable_symmetric_mix: bool,
    pub enable_ffn: bool,
}

/// Reads one layer's keys, remembering which were used.
struct Keys<'a> {
    obj: &'a Map<String, Value>,
    label: String,
    used: Vec<&'static str>,
}

impl<'a> Keys<'a> {
    fn err(&self, message: String) -> ModelError {
        ModelError::Layer { layer: self.label.clone(), message }
    }
    fn raw(&mut self, key: &'static str) -> Option<&'a Value> {
        self.used.push(key);
        self.obj.get(key).filter(|v| !v.is_null())
    }
    fn usize_opt(&mut self, key: &'static str) -> Result<Option<usize>, ModelError> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if n > MAX_SIZE => Err(self.err(format!("`{key}` = {n} is larger than rgnn supports ({MAX_SIZE})"))),
                Some(n) if n > 0 => Ok(Some(n as usize)),
                _ => Err(self.err(format!("`{key}` must be a positive integer or null, found {v}"))),
            },
        }
    }
    fn usize_req(&mut self, key: &'static str) -> Result<usize, ModelError> {
        self.usize_opt(key)?.ok_or_else(|| self.err(format!("missing required key `{key}`")))
    }
    fn usize_or(&mut self, key: &'static str, default: usize) -> Result<usize, ModelError> {
        Ok(self.usize_opt(key)?.unwrap_or(default))
    }
    fn bool_or(&mut self, key: &'static str, default: bool) -> Result<bool, ModelError> {
        match self.raw(key) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| self.err(format!("`{key}` must be true or false, found {v}"))),
        }
    }
    fn f32_or(&mut self, key: &'static str, default: f32) -> Result<f32, ModelError> {
        match self.raw(key) {
            None => Ok(default),
            Some(v) => v.as_f64().map(|x| x as f32).ok_or_else(|| self.err(format!("`{key}` must be a number, found {v}"))),
        }
    }
    fn str_opt(&mut self, key: &'static str) -> Result<Option<&'a str>, ModelError> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(|| self.err(format!("`{key}` must be a string or null, found {v}"))),
        }
    }
    /// Reject an option rgnn does not implement unless it is null.
    fn must_be_null(&mut self, key: &'static str) -> Result<(), ModelError> {
        match self.raw(key) {
            None => Ok(()),
            Some(v) => Err(self.err(format!("`{key}` = {v} is not supported (only null)"))),
        }
    }
}

/// Keys that carry no meaning at inference time (training-only or bookkeeping).
const IGNORED_KEYS: &[&str] =
    &["dropout", "is_sorted", "aggr_kwargs", "node_dim", "flow", "decomposed_layers", "fill_value", "low_mem", "group"];

impl ModelConfig {
    /// Parse the `rgnn.config` JSON text.
    pub fn parse(text: &str) -> Result<Self, ModelError> {
        let v: Value = serde_json::from_str(text).map_err(|e| ModelError::Config(format!("not valid JSON: {e}")))?;
        let obj = v.as_object().ok_or_else(|| ModelError::Config("must be a JSON object".into()))?;
        let mut warnings = vec![];
        match obj.get("format").and_then(Value::as_str) {
            Some(FORMAT) => {}
            Some(other) => return Err(ModelError::Config(format!("format {other:?} is not supported (expected {FORMAT:?})"))),
            None => warnings.push(format!("model config has no `format`; assuming {FORMAT:?}")),
        }
        let model = obj.get("model").and_then(Value::as_str).unwrap_or("model").to_string();
        let metadata = match obj.get("metadata") {
            None | Some(Value::Null) => None,
            Some(m) => Some(parse_metadata(m)?),
        };
        let layers_json = obj
            .get("layers")
            .and_then(Value::as_array)
            .ok_or_else(|| ModelError::Config("`layers` must be a list of layer configs".into()))?;
        if layers_json.is_empty() {
            return Err(ModelError::Config("`layers` is empty".into()));
        }
        let mut layers = vec![];
        for (index, l) in layers_json.iter().enumerate() {
            layers.push(parse_layer(index, l, &mut warnings)?);
        }
        for key in obj.keys() {
            if !["format", "model", "metadata", "layers"].contains(&key.as_str()) {
                warnings.push(format!("model config: unknown key `{key}` ignored"));
            }
        }
        Ok(ModelConfig { model, metadata, layers, warnings })
    }
}

fn parse_metadata(m: &Value) -> Result<Metadata, ModelError> {
    let bad = |what: &str| ModelError::Config(format!("metadata: {what}"));
    let obj = m.as_object().ok_or_else(|| bad("must be an object with `node_types` and `edge_types`"))?;
    let node_types = obj
        .get("node_types")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("`node_types` must be a list of names"))?
        .iter()
        .map(|v| v.as_str().map(str::to_string).ok_or_else(|| bad("`node_types` must be a list of names")))
        .collect::<Result<Vec<_>, _>>()?;
    let mut edge_types = vec![];
    for et in obj.get("edge_types").and_then(Value::as_array).ok_or_else(|| bad("`edge_types` must be a list"))? {
        let parts: Vec<&str> = et.as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        if parts.len() != 3 {
            return Err(bad(&format!("edge type {et} must be [src, relation, dst]")));
        }
        for t in [parts[0], parts[2]] {
            if !node_types.iter().any(|n| n == t) {
                return Err(bad(&format!("edge type {et} names node type {t:?}, which is not in node_types")));
            }
        }
        edge_types.push((parts[0].to_string(), parts[1].to_string(), parts[2].to_string()));
    }
    Ok(Metadata { node_types, edge_types })
}

fn parse_layer(index: usize, v: &Value, warnings: &mut Vec<String>) -> Result<LayerConfig, ModelError> {
    let obj = v.as_object().ok_or_else(|| ModelError::Config(format!("layer {index} must be an object")))?;
    let ty = obj.get("type").and_then(Value::as_str).ok_or_else(|| ModelError::Config(format!("layer {index} has no `type`")))?;
    let prefix = match obj.get("prefix") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => return Err(ModelError::Config(format!("layer {index}: `prefix` must be a string, found {other}"))),
    };
    let label = format!("layer {index} ({ty} {prefix:?})");
    let mut k = Keys { obj, label: label.clone(), used: vec!["type", "prefix", "activation"] };
    let activation = match k.str_opt("activation")? {
        None => None,
        Some(name) => Some(
            rgnn_ir::Activation::from_name(name)
                .ok_or_else(|| k.err(format!("`activation` {name:?} is not supported (relu, gelu, silu, tanh, elu, sigmoid)")))?,
        ),
    };
    let kind = match ty {
        "RGCNConv" => LayerKind::Rgcn(rgcn(&mut k)?),
        "RelGraphConv" => LayerKind::RelGraphConv(rel_graph_conv(&mut k)?),
        "RGATConv" => LayerKind::Rgat(rgat(&mut k)?),
        "HGTConv" => LayerKind::Hgt(hgt(&mut k)?),
        "PivotalAttentionBlock" => LayerKind::Pivotal(pivotal(&mut k)?),
        other => {
            return Err(ModelError::Config(format!(
                "layer {index}: unknown layer type {other:?} (supported: RGCNConv, RelGraphConv, RGATConv, HGTConv, PivotalAttentionBlock)"
            )))
        }
    };
    for key in obj.keys() {
        if !k.used.contains(&key.as_str()) && !IGNORED_KEYS.contains(&key.as_str()) {
            warnings.push(format!("{label}: unknown key `{key}` ignored"));
        }
    }
    Ok(LayerConfig { index, prefix, activation, kind })
}

fn rgcn(k: &mut Keys) -> Result<RgcnConfig, ModelError> {
    let aggr = match k.str_opt("aggr")?.unwrap_or("mean") {
        "mean" => Aggr::Mean,
        "add" | "sum" => Aggr::Sum,
        "max" => Aggr::Max,
        other => return Err(k.err(format!("`aggr` {other:?} is not supported (mean, add, sum, max)"))),
    };
    let c = RgcnConfig {
        in_channels: k.usize_req("in_channels")?,
        out_channels: k.usize_req("out_channels")?,
        num_relations: k.usize_req("num_relations")?,
        num_bases: k.usize_opt("num_bases")?,
        num_blocks: k.usize_opt("num_blocks")?,
        aggr,
        root_weight: k.bool_or("root_weight", true)?,
        bias: k.bool_or("bias", true)?,
    };
    if c.num_bases.is_some() && c.num_blocks.is_some() {
        return Err(k.err("`num_bases` and `num_blocks` cannot both be set".into()));
    }
    if let Some(b) = c.num_blocks {
        if !c.in_channels.is_multiple_of(b) || !c.out_channels.is_multiple_of(b) {
            return Err(k.err(format!("`num_blocks` {b} must divide in_channels {} and out_channels {}", c.in_channels, c.out_channels)));
        }
    }
    Ok(c)
}

fn rel_graph_conv(k: &mut Keys) -> Result<RelGraphConvConfig, ModelError> {
    let regularizer = match k.str_opt("regularizer")? {
        None => Regularizer::None,
        Some("basis") => Regularizer::Basis,
        Some("bdd") => Regularizer::Bdd,
        Some(other) => return Err(k.err(format!("`regularizer` {other:?} is not supported (null, basis, bdd)"))),
    };
    let norm_right = match k.str_opt("norm")?.unwrap_or("none") {
        "right" => true,
        "none" => false,
        other => return Err(k.err(format!("`norm` {other:?} is not supported (\"right\" or \"none\")"))),
    };
    let num_rels = k.usize_req("num_rels")?;
    let mut c = RelGraphConvConfig {
        in_feat: k.usize_req("in_feat")?,
        out_feat: k.usize_req("out_feat")?,
        num_rels,
        regularizer,
        num_bases: k.usize_opt("num_bases")?,
        bias: k.bool_or("bias", true)?,
        self_loop: k.bool_or("self_loop", true)?,
        layer_norm: k.bool_or("layer_norm", false)?,
        norm_right,
    };
    // DGL: a regulariser without num_bases uses one basis per relation.
    if c.regularizer != Regularizer::None && c.num_bases.is_none() {
        c.num_bases = Some(num_rels);
    }
    if c.regularizer == Regularizer::Bdd {
        let b = c.num_bases.unwrap_or(1);
        if !c.in_feat.is_multiple_of(b) || !c.out_feat.is_multiple_of(b) {
            return Err(k.err(format!("`num_bases` {b} must divide in_feat {} and out_feat {} for bdd", c.in_feat, c.out_feat)));
        }
    }
    Ok(c)
}

fn rgat(k: &mut Keys) -> Result<RgatConfig, ModelError> {
    k.must_be_null("mod")?;
    k.must_be_null("edge_dim")?;
    let multiplicative = match k.str_opt("attention_mode")?.unwrap_or("additive-self-attention") {
        "additive-self-attention" => false,
        "multiplicative-self-attention" => true,
        other => return Err(k.err(format!("`attention_mode` {other:?} is not supported"))),
    };
    let within_relation = match k.str_opt("attention_mechanism")?.unwrap_or("across-relation") {
        "across-relation" => false,
        "within-relation" => true,
        other => return Err(k.err(format!("`attention_mechanism` {other:?} is not supported"))),
    };
    let c = RgatConfig {
        in_channels: k.usize_req("in_channels")?,
        out_channels: k.usize_req("out_channels")?,
        num_relations: k.usize_req("num_relations")?,
        heads: k.usize_or("heads", 1)?,
        dim: k.usize_or("dim", 1)?,
        concat: k.bool_or("concat", true)?,
        multiplicative,
        within_relation,
        negative_slope: k.f32_or("negative_slope", 0.2)?,
        bias: k.bool_or("bias", true)?,
        num_bases: k.usize_opt("num_bases")?,
        num_blocks: k.usize_opt("num_blocks")?,
    };
    if c.num_bases.is_some() && c.num_blocks.is_some() {
        return Err(k.err("`num_bases` and `num_blocks` cannot both be set".into()));
    }
    if !c.multiplicative && c.dim > 1 {
        return Err(k.err(format!("additive attention needs `dim` = 1, found {}", c.dim)));
    }
    if let Some(b) = c.num_blocks {
        let hc = c.heads * c.out_channels;
        if !c.in_channels.is_multiple_of(b) || !hc.is_multiple_of(b) {
            return Err(k.err(format!("`num_blocks` {b} must divide in_channels {} and heads*out_channels {hc}", c.in_channels)));
        }
    }
    Ok(c)
}

/// The largest size a config may give (channels, heads, relations, bases, ratios): device kernels
/// index with 32-bit integers, and a product of two such sizes (e.g. `heads * out_channels`)
/// cannot overflow.
const MAX_SIZE: u64 = (1 << 31) - 1;

fn hgt(k: &mut Keys) -> Result<HgtConfig, ModelError> {
    let in_channels = match k.raw("in_channels") {
        Some(Value::Object(m)) => {
            let mut per = BTreeMap::new();
            for (t, v) in m {
                let n = v
                    .as_u64()
                    .filter(|&n| n > 0 && n <= MAX_SIZE)
                    .ok_or_else(|| k.err(format!("`in_channels.{t}` must be a positive integer up to {MAX_SIZE}, found {v}")))?;
                per.insert(t.clone(), n as usize);
            }
            HgtInChannels::PerType(per)
        }
        Some(v) => HgtInChannels::All(v.as_u64().filter(|&n| n > 0 && n <= MAX_SIZE).ok_or_else(|| {
            k.err(format!("`in_channels` must be a positive integer up to {MAX_SIZE} or an object keyed by node type, found {v}"))
        })? as usize),
        None => return Err(k.err("missing required key `in_channels`".into())),
    };
    let c = HgtConfig { in_channels, out_channels: k.usize_req("out_channels")?, heads: k.usize_or("heads", 1)? };
    if !c.out_channels.is_multiple_of(c.heads) {
        return Err(k.err(format!("`out_channels` {} must be divisible by `heads` {}", c.out_channels, c.heads)));
    }
    Ok(c)
}

fn pivotal(k: &mut Keys) -> Result<PivotalConfig, ModelError> {
    let post_norm = match k.str_opt("norm_position")?.unwrap_or("pre").to_ascii_lowercase().as_str() {
        "pre" => false,
        "post" => true,
        other => return Err(k.err(format!("`norm_position` {other:?} is not supported (pre, post)"))),
    };
    let activation_fn = match k.str_opt("activation_fn")?.unwrap_or("relu").to_ascii_lowercase().as_str() {
        "relu" => rgnn_ir::Activation::Relu,
        "gelu" => rgnn_ir::Activation::Gelu,
        "silu" => rgnn_ir::Activation::Silu,
        other => return Err(k.err(format!("`activation_fn` {other:?} is not supported (relu, gelu, silu)"))),
    };
    let norm_fn = match k.str_opt("norm_fn")?.unwrap_or("layernorm").to_ascii_lowercase().as_str() {
        "layernorm" | "ln" => PivotalNorm::LayerNorm,
        "rmsnorm" | "rms" => PivotalNorm::Rms,
        "affine" => PivotalNorm::Affine,
        "none" | "identity" => PivotalNorm::None,
        other => return Err(k.err(format!("`norm_fn` {other:?} is not supported (layernorm, rmsnorm, affine, none)"))),
    };
    let c = PivotalConfig {
        embed_dim: k.usize_req("embed_dim")?,
        num_heads: k.usize_req("num_heads")?,
        bias: k.bool_or("bias", false)?,
        ffn_expansion_ratio: k.usize_or("ffn_expansion_ratio", 4)?,
        post_norm,
        activation_fn,
        norm_fn,
        enable_symmetric_mix: k.bool_or("enable_symmetric_mix", true)?,
        enable_ffn: k.bool_or("enable_ffn", true)?,
    };
    if !c.embed_dim.is_multiple_of(c.num_heads) {
        return Err(k.err(format!("`embed_dim` {} must be divisible by `num_heads` {}", c.embed_dim, c.num_heads)));
    }
    Ok(c)
}
