//! Deterministic synthetic graphs with the shapes of Hector's datasets, and random model files.
//!
//! Hector (ASPLOS'24) evaluates RGCN, RGAT and HGT on aifb, mutag, bgs, am, ogbn-mag, FB15k-237,
//! ogbl-biokg and ogbl-wikikg2. The real datasets need network downloads and preprocessing; this
//! module makes stand-ins with the same node / edge / relation counts (from
//! the project's reference notes on Hector) and the awkward statistics such graphs have:
//!
//! - relation frequencies are Zipf-skewed (a few relations carry most edges, every relation has at
//!   least one edge); which relation id gets which rank is random;
//! - in-degrees are heavy-tailed (destinations drawn with probability ∝ rank^-0.8 over a random
//!   permutation of the nodes, so a few hubs receive thousands of edges); out-degrees are milder
//!   (∝ rank^-0.5);
//! - a fraction of the nodes (5 %) is isolated: no edge at all; many more get no in-edges by chance;
//! - a fraction of the edges (2 %) are exact duplicates (same source, target and relation);
//! - where the table says "with reverse", half the relations are the reverses of the other half:
//!   edge (s, r, d) comes with (d, r + R/2, s), duplicates included;
//! - edges are in no particular order (shuffled).
//!
//! **Node types are invented.** The RDF graphs have many node types and ogbn-mag / ogbl-biokg have
//! 4 / 5 real ones, but none of the stand-ins reproduces them: every shape gets `node_types`
//! (default 4) invented types `t0`, `t1`, ... with sizes ∝ 1/(k+1), nodes numbered contiguously by
//! type, and every relation gets a random (source type, destination type) pair (a reverse relation
//! the swapped pair of its forward relation). The heterogeneous file (for HGT) names edge types
//! `(t<s>, r<r>, t<d>)` (reverses `r<r>_rev`).
//!
//! Everything is drawn from a small built-in PRNG (xoshiro256++ seeded by SplitMix64), so a
//! (shape, scale, features, seed, node_types) tuple always gives the same bytes.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, View};
use serde_json::{json, Value};

// ------------------------------------------------------------------------------------------------
// PRNG
// ------------------------------------------------------------------------------------------------

/// xoshiro256++ seeded through SplitMix64: fast, deterministic, good enough for benchmarks.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut z = seed;
        let mut next = || {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            x ^ (x >> 31)
        };
        Rng { s: [next(), next(), next(), next()] }
    }

    /// An independent stream derived from this seed and a label.
    pub fn derive(seed: u64, label: u64) -> Self {
        Rng::new(seed ^ label.wrapping_mul(0xD6E8_FEB8_6659_FD93))
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = (s[0].wrapping_add(s[3])).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    #[inline]
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [0, n).
    #[inline]
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// Standard normal (Box–Muller; one value per call, simple and deterministic).
    #[inline]
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.f64(); // (0, 1]
        let u2 = self.f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Dataset shapes
// ------------------------------------------------------------------------------------------------

/// Counts of one of Hector's datasets (references.md).
#[derive(Clone, Copy, Debug)]
pub struct ShapeSpec {
    pub name: &'static str,
    pub nodes: u64,
    /// Edges as stored, reverse edges included when `reverse`.
    pub edges: u64,
    /// Relations as stored, reverse relations included when `reverse`.
    pub relations: u64,
    /// Half the edges / relations are reverses of the other half.
    pub reverse: bool,
    pub note: &'static str,
}

/// Hector's eight datasets. ogbn-mag is listed with Hector's reverse edges added (2 × 21,111,007
/// edges, 2 × 4 relations); ogbl-biokg and ogbl-wikikg2 are the train triples without reverses.
pub const SHAPES: &[ShapeSpec] = &[
    ShapeSpec {
        name: "aifb",
        nodes: 7_262,
        edges: 48_810,
        relations: 104,
        reverse: true,
        note: "48,810 edges with reverse, 104 relations",
    },
    ShapeSpec {
        name: "mutag",
        nodes: 27_163,
        edges: 148_100,
        relations: 50,
        reverse: true,
        note: "148,100 edges with reverse, 50 relations",
    },
    ShapeSpec {
        name: "bgs",
        nodes: 94_806,
        edges: 672_884,
        relations: 122,
        reverse: true,
        note: "672,884 edges with reverse, 122 relations",
    },
    ShapeSpec {
        name: "am",
        nodes: 881_680,
        edges: 5_668_682,
        relations: 108,
        reverse: true,
        note: "5,668,682 edges with reverse, 108 relations",
    },
    ShapeSpec {
        name: "ogbn-mag",
        nodes: 1_939_743,
        edges: 42_222_014,
        relations: 8,
        reverse: true,
        note: "21,111,007 edges before reverse, 4 relations; Hector adds reverses (here: 2x)",
    },
    ShapeSpec {
        name: "fb15k-237",
        nodes: 14_541,
        edges: 544_230,
        relations: 474,
        reverse: true,
        note: "272,115 train triples + reverse, 237 relations + reverse",
    },
    ShapeSpec {
        name: "ogbl-biokg",
        nodes: 93_773,
        edges: 4_762_678,
        relations: 51,
        reverse: false,
        note: "4,762,678 train edges, 51 relations (real graph: 5 node types)",
    },
    ShapeSpec {
        name: "ogbl-wikikg2",
        nodes: 2_500_604,
        edges: 16_109_182,
        relations: 535,
        reverse: false,
        note: "16,109,182 train edges, 535 relations",
    },
];

pub fn shape(name: &str) -> Option<&'static ShapeSpec> {
    let n = name.to_ascii_lowercase();
    SHAPES.iter().find(|s| s.name == n || s.name.replace('-', "_") == n)
}

/// Knobs of the generator; the defaults are what `rgnn-synth` uses.
#[derive(Clone, Debug)]
pub struct SynthOptions {
    /// Shrinks nodes, edges and (unless `scale_relations` is false) relations proportionally
    /// (1.0 = the full dataset shape).
    pub scale: f64,
    /// Whether `scale` also shrinks the number of relations (true) or keeps the dataset's count.
    pub scale_relations: bool,
    /// Width F of the features `x [N, F]`.
    pub features: usize,
    pub seed: u64,
    /// Number of invented node types.
    pub node_types: usize,
    /// Fraction of nodes with no edge at all.
    pub isolated_frac: f64,
    /// Fraction of (forward) edges that are verbatim duplicates of other edges.
    pub dup_frac: f64,
    /// Zipf exponent of relation frequencies.
    pub relation_zipf: f64,
    /// Zipf exponent over nodes for destinations (in-degree) and sources (out-degree).
    pub in_degree_zipf: f64,
    pub out_degree_zipf: f64,
}

impl Default for SynthOptions {
    fn default() -> Self {
        SynthOptions {
            scale: 1.0,
            scale_relations: true,
            features: 64,
            seed: 0,
            node_types: 4,
            isolated_frac: 0.05,
            dup_frac: 0.02,
            relation_zipf: 1.1,
            in_degree_zipf: 0.8,
            out_degree_zipf: 0.5,
        }
    }
}

/// A generated graph: nodes numbered contiguously by (invented) node type.
#[derive(Clone, Debug)]
pub struct SynthGraph {
    pub name: String,
    pub num_nodes: usize,
    pub num_relations: usize,
    /// `type_offsets[t]..type_offsets[t + 1]` are the global ids of node type `t`.
    pub type_offsets: Vec<usize>,
    pub type_names: Vec<String>,
    /// (source type, destination type) of every relation.
    pub rel_types: Vec<(usize, usize)>,
    pub rel_names: Vec<String>,
    pub src: Vec<i64>,
    pub dst: Vec<i64>,
    pub etype: Vec<i64>,
    pub features: usize,
    /// Row-major `[num_nodes, features]`.
    pub x: Vec<f32>,
    pub isolated: usize,
    pub duplicates: usize,
}

/// Cumulative-weight sampler over a list of items (binary search).
struct Sampler {
    items: Vec<i64>,
    cdf: Vec<f64>,
}

impl Sampler {
    fn zipf(mut items: Vec<i64>, exponent: f64, rng: &mut Rng) -> Self {
        rng.shuffle(&mut items);
        let mut acc = 0.0;
        let cdf = (0..items.len())
            .map(|k| {
                acc += 1.0 / ((k + 1) as f64).powf(exponent);
                acc
            })
            .collect();
        Sampler { items, cdf }
    }

    #[inline]
    fn sample(&self, rng: &mut Rng) -> i64 {
        let total = *self.cdf.last().expect("non-empty sampler");
        let u = rng.f64() * total;
        let k = self.cdf.partition_point(|&c| c <= u).min(self.items.len() - 1);
        self.items[k]
    }
}

fn scaled(count: u64, scale: f64, min: u64) -> u64 {
    ((count as f64 * scale).round() as u64).max(min)
}

impl SynthGraph {
    /// Generate `spec` with `opts`. Deterministic in (spec, opts).
    pub fn generate(spec: &ShapeSpec, opts: &SynthOptions) -> Self {
        assert!(opts.node_types >= 1, "need at least one node type");
        let seed = opts.seed;
        let t_count = opts.node_types;
        let num_nodes = scaled(spec.nodes, opts.scale, 4 * t_count as u64) as usize;
        let rel_scale = if opts.scale_relations { opts.scale } else { 1.0 };
        let (fwd_rel, fwd_edges) = if spec.reverse {
            (scaled(spec.relations / 2, rel_scale, 1), scaled(spec.edges / 2, opts.scale, 1))
        } else {
            (scaled(spec.relations, rel_scale, 1), scaled(spec.edges, opts.scale, 1))
        };
        let (fwd_rel, fwd_edges) = (fwd_rel as usize, fwd_edges as usize);
        let num_relations = if spec.reverse { 2 * fwd_rel } else { fwd_rel };

        // Invented node types: sizes ∝ 1/(k+1), at least 4 nodes each.
        let weights: Vec<f64> = (0..t_count).map(|k| 1.0 / (k + 1) as f64).collect();
        let wsum: f64 = weights.iter().sum();
        let mut sizes: Vec<usize> = weights.iter().map(|w| ((w / wsum) * num_nodes as f64).floor().max(4.0) as usize).collect();
        let assigned: usize = sizes.iter().sum();
        if assigned <= num_nodes {
            sizes[0] += num_nodes - assigned;
        } else {
            sizes[0] -= assigned - num_nodes; // only for tiny scales; sizes[0] is the largest
        }
        let mut type_offsets = vec![0usize];
        for s in &sizes {
            type_offsets.push(type_offsets.last().unwrap() + s);
        }
        let type_names: Vec<String> = (0..t_count).map(|t| format!("t{t}")).collect();

        // Relations: random (src type, dst type); reverses swap them.
        let mut rrng = Rng::derive(seed, 1);
        let mut rel_types = Vec::with_capacity(num_relations);
        let mut rel_names = Vec::with_capacity(num_relations);
        for r in 0..fwd_rel {
            rel_types.push((rrng.below(t_count), rrng.below(t_count)));
            rel_names.push(format!("r{r}"));
        }
        if spec.reverse {
            for r in 0..fwd_rel {
                let (s, d) = rel_types[r];
                rel_types.push((d, s));
                rel_names.push(format!("r{r}_rev"));
            }
        }

        // Isolated nodes (per type, at least 2 active nodes kept), then per-type samplers.
        let mut nrng = Rng::derive(seed, 2);
        let mut isolated = 0usize;
        let mut src_samplers = Vec::with_capacity(t_count);
        let mut dst_samplers = Vec::with_capacity(t_count);
        for t in 0..t_count {
            let mut ids: Vec<i64> = (type_offsets[t] as i64..type_offsets[t + 1] as i64).collect();
            nrng.shuffle(&mut ids);
            let n_iso = ((ids.len() as f64 * opts.isolated_frac) as usize).min(ids.len().saturating_sub(2));
            isolated += n_iso;
            let active = ids.split_off(n_iso);
            dst_samplers.push(Sampler::zipf(active.clone(), opts.in_degree_zipf, &mut nrng));
            src_samplers.push(Sampler::zipf(active, opts.out_degree_zipf, &mut nrng));
        }

        // Relation counts among the base (non-duplicate) forward edges: Zipf over a random ranking,
        // at least one edge per relation, the remainder on the most frequent relation.
        let duplicates = (fwd_edges as f64 * opts.dup_frac) as usize;
        let base = fwd_edges - duplicates;
        let mut rank: Vec<usize> = (0..fwd_rel).collect();
        rrng.shuffle(&mut rank);
        let zw: Vec<f64> = (0..fwd_rel).map(|k| 1.0 / ((k + 1) as f64).powf(opts.relation_zipf)).collect();
        let zsum: f64 = zw.iter().sum();
        let mut counts = vec![0usize; fwd_rel];
        for (k, &r) in rank.iter().enumerate() {
            counts[r] = ((zw[k] / zsum) * base as f64).floor().max(1.0) as usize;
        }
        let total: usize = counts.iter().sum();
        let top = rank[0];
        if total <= base {
            counts[top] += base - total;
        } else {
            counts[top] = counts[top].saturating_sub(total - base).max(1);
        }

        // Forward edges.
        let mut erng = Rng::derive(seed, 3);
        let n_fwd: usize = counts.iter().sum::<usize>() + duplicates;
        let n_all = if spec.reverse { 2 * n_fwd } else { n_fwd };
        let mut src = Vec::with_capacity(n_all);
        let mut dst = Vec::with_capacity(n_all);
        let mut etype = Vec::with_capacity(n_all);
        for (r, &c) in counts.iter().enumerate() {
            let (st, dt) = rel_types[r];
            for _ in 0..c {
                src.push(src_samplers[st].sample(&mut erng));
                dst.push(dst_samplers[dt].sample(&mut erng));
                etype.push(r as i64);
            }
        }
        let n_base = src.len();
        for _ in 0..duplicates {
            let k = erng.below(n_base);
            src.push(src[k]);
            dst.push(dst[k]);
            etype.push(etype[k]);
        }
        if spec.reverse {
            for k in 0..n_fwd {
                src.push(dst[k]);
                dst.push(src[k]);
                etype.push(etype[k] + fwd_rel as i64);
            }
        }
        // No particular order: one random permutation applied to all three arrays.
        let mut perm: Vec<u32> = (0..src.len() as u32).collect();
        erng.shuffle(&mut perm);
        let src: Vec<i64> = perm.iter().map(|&p| src[p as usize]).collect();
        let dst: Vec<i64> = perm.iter().map(|&p| dst[p as usize]).collect();
        let etype: Vec<i64> = perm.iter().map(|&p| etype[p as usize]).collect();

        // Features: standard normal.
        let mut xrng = Rng::derive(seed, 4);
        let x: Vec<f32> = (0..num_nodes * opts.features).map(|_| xrng.normal() as f32).collect();

        SynthGraph {
            name: spec.name.to_string(),
            num_nodes,
            num_relations,
            type_offsets,
            type_names,
            rel_types,
            rel_names,
            src,
            dst,
            etype,
            features: opts.features,
            x,
            isolated,
            duplicates: if spec.reverse { 2 * duplicates } else { duplicates },
        }
    }

    pub fn num_edges(&self) -> usize {
        self.src.len()
    }

    /// Node type index of a global node id.
    pub fn type_of(&self, node: i64) -> usize {
        self.type_offsets.partition_point(|&o| o as i64 <= node) - 1
    }

    /// `{"node_types": [...], "edge_types": [[src, rel, dst], ...]}` in relation-id order: the
    /// metadata for HGT (and what makes a relational model see this graph's relation ids).
    pub fn metadata(&self) -> Value {
        let ets: Vec<Value> = (0..self.num_relations)
            .map(|r| {
                let (s, d) = self.rel_types[r];
                json!([self.type_names[s], self.rel_names[r], self.type_names[d]])
            })
            .collect();
        json!({"node_types": self.type_names, "edge_types": ets})
    }

    /// Summary statistics (for the generator's printout and BENCHMARKS.md).
    pub fn stats(&self) -> Value {
        let mut indeg = vec![0u32; self.num_nodes];
        let mut touched = vec![false; self.num_nodes];
        for (&s, &d) in self.src.iter().zip(&self.dst) {
            indeg[d as usize] += 1;
            touched[s as usize] = true;
            touched[d as usize] = true;
        }
        let mut relc = vec![0u64; self.num_relations];
        for &r in &self.etype {
            relc[r as usize] += 1;
        }
        let no_in = indeg.iter().filter(|&&d| d == 0).count();
        let untouched = touched.iter().filter(|&&t| !t).count();
        let mut sorted = indeg.clone();
        sorted.sort_unstable();
        let p = |q: f64| sorted[((sorted.len() - 1) as f64 * q) as usize];
        let mut rs = relc.clone();
        rs.sort_unstable_by(|a, b| b.cmp(a));
        let top_rel_share = rs[0] as f64 / self.num_edges().max(1) as f64;
        json!({
            "shape": self.name, "nodes": self.num_nodes, "edges": self.num_edges(),
            "relations": self.num_relations, "node_types": self.type_names.len(),
            "node_type_sizes": self.type_offsets.windows(2).map(|w| w[1] - w[0]).collect::<Vec<_>>(),
            "isolated_nodes": untouched, "nodes_without_in_edges": no_in,
            "duplicate_edges": self.duplicates,
            "in_degree": {"median": p(0.5), "p99": p(0.99), "max": sorted[sorted.len() - 1]},
            "relation_edges": {"max": rs[0], "min": rs[rs.len() - 1], "top_share": top_rel_share},
        })
    }

    /// Relational graph file: `edge_index [2, E]`, `edge_type [E]`, `x [N, F]`, `node_type [N]`.
    pub fn write_relational(&self, path: &Path) -> Result<(), String> {
        let mut ei = Vec::with_capacity(2 * self.num_edges());
        ei.extend_from_slice(&self.src);
        ei.extend_from_slice(&self.dst);
        let mut node_type = vec![0i64; self.num_nodes];
        for t in 0..self.type_names.len() {
            for v in &mut node_type[self.type_offsets[t]..self.type_offsets[t + 1]] {
                *v = t as i64;
            }
        }
        let tensors = vec![
            ("edge_index".to_string(), Tensor::i64(vec![2, self.num_edges()], &ei)),
            ("edge_type".to_string(), Tensor::i64(vec![self.num_edges()], &self.etype)),
            ("x".to_string(), Tensor::f32(vec![self.num_nodes, self.features], &self.x)),
            ("node_type".to_string(), Tensor::i64(vec![self.num_nodes], &node_type)),
        ];
        write_safetensors(path, tensors, None)
    }

    /// Heterogeneous graph file: `x.<t>`, `edge_index.<s>__<r>__<d>` (local indices).
    pub fn write_hetero(&self, path: &Path) -> Result<(), String> {
        let mut per_rel: Vec<(Vec<i64>, Vec<i64>)> = vec![(Vec::new(), Vec::new()); self.num_relations];
        for k in 0..self.num_edges() {
            let r = self.etype[k] as usize;
            let (st, dt) = self.rel_types[r];
            per_rel[r].0.push(self.src[k] - self.type_offsets[st] as i64);
            per_rel[r].1.push(self.dst[k] - self.type_offsets[dt] as i64);
        }
        let mut tensors = Vec::new();
        for (t, name) in self.type_names.iter().enumerate() {
            let (a, b) = (self.type_offsets[t], self.type_offsets[t + 1]);
            tensors.push((format!("x.{name}"), Tensor::f32(vec![b - a, self.features], &self.x[a * self.features..b * self.features])));
        }
        for (r, (s, d)) in per_rel.into_iter().enumerate() {
            let (st, dt) = self.rel_types[r];
            let n = s.len();
            let mut ei = s;
            ei.extend_from_slice(&d);
            tensors.push((
                format!("edge_index.{}__{}__{}", self.type_names[st], self.rel_names[r], self.type_names[dt]),
                Tensor::i64(vec![2, n], &ei),
            ));
        }
        write_safetensors(path, tensors, None)
    }
}

// ------------------------------------------------------------------------------------------------
// safetensors writing
// ------------------------------------------------------------------------------------------------

/// An owned tensor ready for `safetensors::serialize_to_file`.
pub struct Tensor {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl Tensor {
    pub fn f32(shape: Vec<usize>, v: &[f32]) -> Self {
        assert_eq!(shape.iter().product::<usize>(), v.len());
        Tensor { dtype: Dtype::F32, shape, bytes: bytemuck::cast_slice(v).to_vec() }
    }
    pub fn i64(shape: Vec<usize>, v: &[i64]) -> Self {
        assert_eq!(shape.iter().product::<usize>(), v.len());
        Tensor { dtype: Dtype::I64, shape, bytes: bytemuck::cast_slice(v).to_vec() }
    }
    pub fn u8(shape: Vec<usize>, v: &[u8]) -> Self {
        assert_eq!(shape.iter().product::<usize>(), v.len());
        Tensor { dtype: Dtype::U8, shape, bytes: v.to_vec() }
    }
}

impl View for &Tensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

pub fn write_safetensors(path: &Path, tensors: Vec<(String, Tensor)>, config: Option<&Value>) -> Result<(), String> {
    let meta = config.map(|c| HashMap::from([("rgnn.config".to_string(), c.to_string())]));
    let views: Vec<(String, &Tensor)> = tensors.iter().map(|(n, t)| (n.clone(), t)).collect();
    safetensors::tensor::serialize_to_file(views, meta, path).map_err(|e| format!("{}: {e}", path.display()))
}

// ------------------------------------------------------------------------------------------------
// Random model files (rgnn format: PyG / FloydNet state_dict names + rgnn.config)
// ------------------------------------------------------------------------------------------------

fn normal_vec(rng: &mut Rng, n: usize, std: f64, mean: f64) -> Vec<f32> {
    (0..n).map(|_| (mean + std * rng.normal()) as f32).collect()
}

fn model_config(model: &str, layers: Vec<Value>, metadata: Option<Value>) -> Value {
    let mut c = json!({"format": "rgnn/1", "model": model, "layers": layers});
    if let Some(m) = metadata {
        c["metadata"] = m;
    }
    c
}

/// One-layer PyG `RGCNConv(in, out, R)`: plain weights, per-relation mean, root weight, bias.
/// Prefix `convs.0`.
pub fn write_rgcn_model(path: &Path, in_c: usize, out_c: usize, num_relations: usize, seed: u64) -> Result<(), String> {
    let mut rng = Rng::derive(seed, 101);
    let s = 1.0 / (in_c as f64).sqrt();
    let tensors = vec![
        (
            "convs.0.weight".into(),
            Tensor::f32(vec![num_relations, in_c, out_c], &normal_vec(&mut rng, num_relations * in_c * out_c, s, 0.0)),
        ),
        ("convs.0.root".into(), Tensor::f32(vec![in_c, out_c], &normal_vec(&mut rng, in_c * out_c, s, 0.0))),
        ("convs.0.bias".into(), Tensor::f32(vec![out_c], &normal_vec(&mut rng, out_c, 0.1, 0.0))),
    ];
    let layer = json!({"type": "RGCNConv", "prefix": "convs.0", "in_channels": in_c, "out_channels": out_c,
        "num_relations": num_relations, "num_bases": null, "num_blocks": null, "aggr": "mean",
        "root_weight": true, "bias": true, "activation": null});
    write_safetensors(path, tensors, Some(&model_config("synth-rgcn", vec![layer], None)))
}

/// One-layer PyG `RGATConv(in, out, R, heads=1)`: additive, across-relation attention. Also writes
/// the `w, l1, b1, l2, b2` tensors every PyG export contains (unused without `mod`).
pub fn write_rgat_model(path: &Path, in_c: usize, out_c: usize, num_relations: usize, seed: u64) -> Result<(), String> {
    let mut rng = Rng::derive(seed, 102);
    let s = 1.0 / (in_c as f64).sqrt();
    let (h, d) = (1usize, 1usize);
    let hc = h * out_c;
    let qk = 2.0 / (hc as f64).sqrt(); // steeper than glorot so the softmax is not flat
    let tensors = vec![
        ("convs.0.weight".into(), Tensor::f32(vec![num_relations, in_c, hc], &normal_vec(&mut rng, num_relations * in_c * hc, s, 0.0))),
        ("convs.0.q".into(), Tensor::f32(vec![hc, h * d], &normal_vec(&mut rng, hc * h * d, qk, 0.0))),
        ("convs.0.k".into(), Tensor::f32(vec![hc, h * d], &normal_vec(&mut rng, hc * h * d, qk, 0.0))),
        ("convs.0.bias".into(), Tensor::f32(vec![hc], &normal_vec(&mut rng, hc, 0.1, 0.0))),
        ("convs.0.w".into(), Tensor::f32(vec![out_c], &normal_vec(&mut rng, out_c, 1.0, 0.0))),
        ("convs.0.l1".into(), Tensor::f32(vec![1, out_c], &normal_vec(&mut rng, out_c, 1.0, 0.0))),
        ("convs.0.b1".into(), Tensor::f32(vec![1, out_c], &normal_vec(&mut rng, out_c, 1.0, 0.0))),
        ("convs.0.l2".into(), Tensor::f32(vec![out_c, out_c], &normal_vec(&mut rng, out_c * out_c, 1.0, 0.0))),
        ("convs.0.b2".into(), Tensor::f32(vec![1, out_c], &normal_vec(&mut rng, out_c, 1.0, 0.0))),
    ];
    let layer = json!({"type": "RGATConv", "prefix": "convs.0", "in_channels": in_c, "out_channels": out_c,
        "num_relations": num_relations, "heads": h, "dim": d, "concat": true,
        "attention_mode": "additive-self-attention", "attention_mechanism": "across-relation",
        "negative_slope": 0.2, "bias": true, "num_bases": null, "num_blocks": null, "mod": null,
        "edge_dim": null, "activation": null});
    write_safetensors(path, tensors, Some(&model_config("synth-rgat", vec![layer], None)))
}

/// One-layer PyG `HGTConv(in, out, metadata, heads)` for `graph`'s invented node types and its
/// relations as edge types (metadata order = relation id order). Prefix `convs.0`.
pub fn write_hgt_model(path: &Path, graph: &SynthGraph, in_c: usize, out_c: usize, heads: usize, seed: u64) -> Result<(), String> {
    assert!(out_c.is_multiple_of(heads), "out_channels must be divisible by heads");
    let mut rng = Rng::derive(seed, 103);
    let d = out_c / heads;
    let n_et = graph.num_relations;
    let mut tensors = Vec::new();
    for t in &graph.type_names {
        tensors.push((
            format!("convs.0.kqv_lin.lins.{t}.weight"),
            Tensor::f32(vec![3 * out_c, in_c], &normal_vec(&mut rng, 3 * out_c * in_c, 1.0 / (in_c as f64).sqrt(), 0.0)),
        ));
        tensors.push((format!("convs.0.kqv_lin.lins.{t}.bias"), Tensor::f32(vec![3 * out_c], &normal_vec(&mut rng, 3 * out_c, 0.1, 0.0))));
        tensors.push((
            format!("convs.0.out_lin.lins.{t}.weight"),
            Tensor::f32(vec![out_c, out_c], &normal_vec(&mut rng, out_c * out_c, 1.0 / (out_c as f64).sqrt(), 0.0)),
        ));
        tensors.push((format!("convs.0.out_lin.lins.{t}.bias"), Tensor::f32(vec![out_c], &normal_vec(&mut rng, out_c, 0.1, 0.0))));
        tensors.push((format!("convs.0.skip.{t}"), Tensor::f32(vec![1], &normal_vec(&mut rng, 1, 1.5, 0.0))));
    }
    let rel = |rng: &mut Rng| normal_vec(rng, heads * n_et * d * d, 1.0 / (d as f64).sqrt(), 0.0);
    tensors.push(("convs.0.k_rel.weight".into(), Tensor::f32(vec![heads * n_et, d, d], &rel(&mut rng))));
    tensors.push(("convs.0.v_rel.weight".into(), Tensor::f32(vec![heads * n_et, d, d], &rel(&mut rng))));
    for r in 0..n_et {
        let (s, dt) = graph.rel_types[r];
        tensors.push((
            format!("convs.0.p_rel.{}__{}__{}", graph.type_names[s], graph.rel_names[r], graph.type_names[dt]),
            Tensor::f32(vec![1, heads], &normal_vec(&mut rng, heads, 0.5, 1.0)),
        ));
    }
    let in_ch: serde_json::Map<String, Value> = graph.type_names.iter().map(|t| (t.clone(), json!(in_c))).collect();
    let layer = json!({"type": "HGTConv", "prefix": "convs.0", "in_channels": in_ch, "out_channels": out_c,
        "heads": heads, "activation": null});
    write_safetensors(path, tensors, Some(&model_config("synth-hgt", vec![layer], Some(graph.metadata()))))
}

/// A stack of `blocks` FloydNet `PivotalAttentionBlock(C, H)` with the package defaults (pre-norm,
/// layernorm, relu, FFN ×4, symmetric mix, no bias), prefixes `blocks.<i>`.
pub fn write_floydnet_model(path: &Path, c: usize, heads: usize, blocks: usize, seed: u64) -> Result<(), String> {
    let mut rng = Rng::derive(seed, 104);
    let s = 1.0 / (c as f64).sqrt();
    let s4 = 1.0 / ((4 * c) as f64).sqrt();
    let mut tensors = Vec::new();
    let mut layers = Vec::new();
    for b in 0..blocks {
        let p = format!("blocks.{b}");
        tensors.push((format!("{p}.c_mix.weight"), Tensor::f32(vec![c, c], &normal_vec(&mut rng, c * c, s, 0.0))));
        tensors.push((format!("{p}.c_qkv.weight"), Tensor::f32(vec![5 * c, c], &normal_vec(&mut rng, 5 * c * c, s, 0.0))));
        tensors.push((format!("{p}.c_proj.weight"), Tensor::f32(vec![c, c], &normal_vec(&mut rng, c * c, s, 0.0))));
        for n in ["norm1", "norm2"] {
            tensors.push((format!("{p}.{n}.weight"), Tensor::f32(vec![c], &normal_vec(&mut rng, c, 0.2, 1.0))));
            tensors.push((format!("{p}.{n}.bias"), Tensor::f32(vec![c], &normal_vec(&mut rng, c, 0.1, 0.0))));
        }
        tensors.push((format!("{p}.ffn.0.weight"), Tensor::f32(vec![4 * c, c], &normal_vec(&mut rng, 4 * c * c, s, 0.0))));
        tensors.push((format!("{p}.ffn.2.weight"), Tensor::f32(vec![c, 4 * c], &normal_vec(&mut rng, 4 * c * c, s4, 0.0))));
        tensors.push((format!("{p}.ffn_scale"), Tensor::f32(vec![], &normal_vec(&mut rng, 1, 0.1, 0.7))));
        layers.push(json!({"type": "PivotalAttentionBlock", "prefix": p, "embed_dim": c, "num_heads": heads,
            "bias": false, "ffn_expansion_ratio": 4, "norm_position": "pre", "activation_fn": "relu",
            "norm_fn": "layernorm", "enable_symmetric_mix": true, "enable_ffn": true, "activation": null}));
    }
    write_safetensors(path, tensors, Some(&model_config("synth-floydnet", layers, None)))
}

/// Pair graph `pair [B, N, N, C]` (standard normal) with `node_mask [B, N]`: graph 0 is full,
/// every later graph has its last N/8 nodes padded (a batch of graphs of different sizes).
pub fn write_pair_graph(path: &Path, b: usize, n: usize, c: usize, seed: u64) -> Result<(), String> {
    let mut rng = Rng::derive(seed, 105);
    let pair: Vec<f32> = (0..b * n * n * c).map(|_| rng.normal() as f32).collect();
    let mut mask = vec![1u8; b * n];
    for g in 1..b {
        for i in n - n / 8..n {
            mask[g * n + i] = 0;
        }
    }
    write_safetensors(
        path,
        vec![("pair".into(), Tensor::f32(vec![b, n, n, c], &pair)), ("node_mask".into(), Tensor::u8(vec![b, n], &mask))],
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_well_formed() {
        let spec = shape("aifb").unwrap();
        let opts = SynthOptions { scale: 0.05, features: 8, ..Default::default() };
        let a = SynthGraph::generate(spec, &opts);
        let b = SynthGraph::generate(spec, &opts);
        assert_eq!(a.src, b.src);
        assert_eq!(a.etype, b.etype);
        assert_eq!(a.x, b.x);
        assert_eq!(a.num_edges() % 2, 0);
        for k in 0..a.num_edges() {
            let r = a.etype[k] as usize;
            let (st, dt) = a.rel_types[r];
            assert_eq!(a.type_of(a.src[k]), st);
            assert_eq!(a.type_of(a.dst[k]), dt);
        }
        let c = SynthGraph::generate(spec, &SynthOptions { seed: 1, ..opts });
        assert_ne!(a.src, c.src);
    }

    #[test]
    fn full_counts() {
        let spec = shape("mutag").unwrap();
        let g = SynthGraph::generate(spec, &SynthOptions { features: 1, ..Default::default() });
        assert_eq!(g.num_nodes, 27_163);
        assert_eq!(g.num_edges(), 148_100);
        assert_eq!(g.num_relations, 50);
    }
}
