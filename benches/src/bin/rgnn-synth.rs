//! `rgnn-synth`: write synthetic graphs with the shapes of Hector's datasets, and matching random
//! model files, in rgnn's formats. See `rgnn_benches::synth` and docs/BENCHMARKS.md.
//!
//! ```text
//! rgnn-synth --shape aifb [--shape mutag ...|--shape all] [--scale 1.0] [--features 64] [--seed 0]
//!            [--keep-relations] [--node-types 4] [--out DIR] [--no-models] [--no-hetero]
//!            [--out-channels 64] [--heads H]
//! rgnn-synth --floydnet 64 [--floydnet 128 ...] [--batch 2] [--channels 64] [--heads 4] [--blocks 4]
//! rgnn-synth --list
//! ```
//!
//! `--scale` shrinks nodes, edges and relations proportionally; `--keep-relations` keeps the
//! dataset's relation count (at small scales, proportional relations collapse to a handful).
//!
//! Per shape S it writes, into DIR (default `target/synth`):
//! - `S.graph.safetensors`         relational graph (`edge_index`, `edge_type`, `x`, `node_type`)
//! - `S.hetero.graph.safetensors`  the same graph as a heterogeneous file over INVENTED node types
//! - `S.rgcn.model.safetensors`    PyG RGCNConv(F, 64, R), plain weights, per-relation mean
//! - `S.rgat.model.safetensors`    PyG RGATConv(F, 64, R), 1 head, additive, across-relation
//! - `S.hgt.model.safetensors`     PyG HGTConv(F, 64, metadata, heads=1)
//!
//! and per FloydNet size N: `floydnet_n<N>.model.safetensors` (4 blocks, C=64, H=4) and
//! `floydnet_n<N>.graph.safetensors` (pair [B, N, N, C], node_mask [B, N]).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use rgnn_benches::synth::{self, SynthGraph, SynthOptions, SHAPES};

const USAGE: &str = "usage: rgnn-synth (--shape NAME|all)... [--scale F] [--features F] [--seed S] \
[--keep-relations] [--node-types T] [--out DIR] [--no-models] [--no-hetero] [--out-channels C] [--heads H]
       rgnn-synth --floydnet N... [--batch B] [--channels C] [--heads H] [--blocks K] [--seed S] [--out DIR]
       rgnn-synth --list";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rgnn-synth: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let mut shapes: Vec<String> = Vec::new();
    let mut floyd: Vec<usize> = Vec::new();
    let mut opts = SynthOptions::default();
    let mut out = PathBuf::from("target/synth");
    let (mut models, mut hetero) = (true, true);
    let (mut out_channels, mut heads_opt): (usize, Option<usize>) = (64, None);
    let (mut batch, mut channels, mut blocks) = (2usize, 64usize, 4usize);
    let mut list = false;

    fn val<T: std::str::FromStr>(flag: &str, v: Option<String>) -> Result<T, String> {
        let v = v.ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        v.parse().map_err(|_| format!("{flag}: cannot parse {v:?}"))
    }
    while let Some(a) = args.next() {
        match a.as_str() {
            "--shape" => shapes.push(val::<String>(&a, args.next())?),
            "--floydnet" => floyd.push(val(&a, args.next())?),
            "--scale" => opts.scale = val(&a, args.next())?,
            "--features" => opts.features = val(&a, args.next())?,
            "--seed" => opts.seed = val(&a, args.next())?,
            "--node-types" => opts.node_types = val(&a, args.next())?,
            "--out" => out = val::<String>(&a, args.next())?.into(),
            "--out-channels" => out_channels = val(&a, args.next())?,
            "--heads" => heads_opt = Some(val(&a, args.next())?),
            "--batch" => batch = val(&a, args.next())?,
            "--channels" => channels = val(&a, args.next())?,
            "--blocks" => blocks = val(&a, args.next())?,
            "--no-models" => models = false,
            "--no-hetero" => hetero = false,
            "--keep-relations" => opts.scale_relations = false,
            "--list" => list = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if list {
        for s in SHAPES {
            println!("{:14} nodes {:>10}  edges {:>11}  relations {:>4}  {}", s.name, s.nodes, s.edges, s.relations, s.note);
        }
        return Ok(());
    }
    if shapes.is_empty() && floyd.is_empty() {
        return Err(format!("nothing to do\n{USAGE}"));
    }
    if opts.scale.is_nan() || opts.scale <= 0.0 {
        return Err("--scale must be > 0".into());
    }
    if shapes.iter().any(|s| s == "all") {
        shapes = SHAPES.iter().map(|s| s.name.to_string()).collect();
    }
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;

    for name in &shapes {
        let spec = synth::shape(name)
            .ok_or_else(|| format!("unknown shape {name:?}; known: {}", SHAPES.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")))?;
        let t0 = Instant::now();
        let g = SynthGraph::generate(spec, &opts);
        let gen_s = t0.elapsed().as_secs_f64();
        let base = spec.name;
        g.write_relational(&out.join(format!("{base}.graph.safetensors")))?;
        if hetero {
            g.write_hetero(&out.join(format!("{base}.hetero.graph.safetensors")))?;
        }
        if models {
            let f = opts.features;
            synth::write_rgcn_model(&out.join(format!("{base}.rgcn.model.safetensors")), f, out_channels, g.num_relations, opts.seed)?;
            synth::write_rgat_model(&out.join(format!("{base}.rgat.model.safetensors")), f, out_channels, g.num_relations, opts.seed)?;
            synth::write_hgt_model(
                &out.join(format!("{base}.hgt.model.safetensors")),
                &g,
                f,
                out_channels,
                heads_opt.unwrap_or(1),
                opts.seed,
            )?;
        }
        println!(
            "{base}: generated in {gen_s:.2}s, written in {:.2}s to {}\n  {}",
            t0.elapsed().as_secs_f64() - gen_s,
            out.display(),
            g.stats()
        );
    }
    for n in floyd {
        let heads = heads_opt.unwrap_or(4);
        let t0 = Instant::now();
        synth::write_floydnet_model(&out.join(format!("floydnet_n{n}.model.safetensors")), channels, heads, blocks, opts.seed)?;
        synth::write_pair_graph(&out.join(format!("floydnet_n{n}.graph.safetensors")), batch, n, channels, opts.seed)?;
        println!(
            "floydnet_n{n}: {blocks} blocks C={channels} H={heads}, pair [{batch}, {n}, {n}, {channels}] in {:.2}s",
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
