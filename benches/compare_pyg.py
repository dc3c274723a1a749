#!/usr/bin/env python3
"""Run one rgnn model + graph file through PyTorch Geometric and through rgnn, check they agree,
and time both.

    python benches/compare_pyg.py --model M.model.safetensors \
        --graph G.graph.safetensors [--threads 2] [--reps 5] [--warmup 1] [--rgnn target/release/rgnn] \
        [--shape NAME] [--results results.jsonl] [--device cpu|cuda] [--backend cpu|cuda|wgpu] \
        [--dtypes f32,bf16] [--pyg-impls default,fast]

`--device cuda` runs PyG on the GPU (timed with torch.cuda.synchronize around each pass; peak
device memory from torch.cuda.max_memory_allocated, out-of-memory recorded as such) and
`--backend` picks rgnn's backend (default: cuda with --device cuda, else cpu). PyG runs once, in f32;
rgnn once per storage type of `--dtypes` (`tf32`: f32 with `--tf32`; 16-bit and tf32 runs are
checked against `--tol-low`, 1e-2). RGCN layers are timed as RGCNConv and, on CUDA, FastRGCNConv
(`--pyg-impls`): the fastest that fits counts. (pyg-lib's `segment_matmul` path is left off: its
RGCN mean averages over all in-edges, another model.) Where PyG runs out of memory, rgnn is still
run and timed; where rgnn does, that is recorded too.

- Builds the PyG module from the file's `rgnn.config` (RGCNConv / RGATConv / HGTConv with the
  config's constructor arguments, one `convs.<i>` per layer, the config's activations between
  layers), loads the weights by name with a strict `load_state_dict`.
- Converts the graph file: relational (`edge_index`, `edge_type`, `x`) or heterogeneous
  (`x.<t>`, `edge_index.<s>__<r>__<d>`; the edge_index dict is fed in metadata order, which PyG's
  HGTConv needs).
- PyG forward in eval() / no_grad with torch.set_num_threads(T), after --warmup passes; median of
  --reps wall-clock times. `torch_geometric.backend.use_segment_matmul = False`: the per-relation
  mean is the reference semantics (pyg-lib's fused path averages over all in-edges).
- `rgnn run --backend cpu` output compared to PyG's: normwise relative error ||a-b|| / ||b|| over
  all outputs, and the max abs difference.
- `rgnn bench --backend cpu --reps N --json` with RAYON_NUM_THREADS=T.
- Memory: rgnn's reported `peak_bytes`; the `rgnn bench` process's max RSS (whole process, files
  included); PyG's RSS high-water growth during the forward passes (ru_maxrss after the passes
  minus the RSS just before them; approximate, includes allocator caching).

Prints one markdown table row; with --results appends a JSON line for benches/run_all.sh.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torch_geometric  # noqa: E402
import torch_geometric.backend  # noqa: E402
from torch_geometric.nn import FastRGCNConv, HGTConv, RGATConv, RGCNConv  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

torch_geometric.backend.use_segment_matmul = False

ACT = {None: lambda t: t, "relu": F.relu, "gelu": F.gelu, "silu": F.silu, "tanh": torch.tanh, "elu": F.elu}

RGCN_KEYS = ("in_channels", "out_channels", "num_relations", "num_bases", "num_blocks", "aggr",
             "root_weight", "bias")
RGAT_KEYS = ("in_channels", "out_channels", "num_relations", "heads", "dim", "concat", "attention_mode",
             "attention_mechanism", "negative_slope", "bias", "num_bases", "num_blocks")


def read_config(path):
    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
    if "rgnn.config" not in meta:
        sys.exit(f"{path}: no rgnn.config metadata")
    return json.loads(meta["rgnn.config"])


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def maxrss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Stack(torch.nn.Module):
    """The config's layers as PyG modules; `fast_rgcn` builds RGCN layers as FastRGCNConv (the same
    parameters and semantics, per-edge weights gathered instead of per-relation loops)."""

    def __init__(self, cfg, fast_rgcn=False):
        super().__init__()
        self.acts = [l.get("activation") for l in cfg["layers"]]
        self.hetero = False
        convs = []
        for i, l in enumerate(cfg["layers"]):
            if l.get("prefix") != f"convs.{i}":
                raise SystemExit(f"layer {i}: prefix {l.get('prefix')!r}, this script expects 'convs.{i}'")
            t = l["type"]
            if t == "RGCNConv":
                convs.append((FastRGCNConv if fast_rgcn else RGCNConv)(**{k: l[k] for k in RGCN_KEYS if k in l}))
            elif t == "RGATConv":
                convs.append(RGATConv(**{k: l[k] for k in RGAT_KEYS if k in l}))
            elif t == "HGTConv":
                md = cfg["metadata"]
                metadata = (list(md["node_types"]), [tuple(e) for e in md["edge_types"]])
                convs.append(HGTConv(l["in_channels"], l["out_channels"], metadata, heads=l.get("heads", 1)))
                self.hetero = True
            else:
                raise SystemExit(f"layer type {t} is not a PyG layer")
        self.convs = torch.nn.ModuleList(convs)

    def forward(self, *args):
        if self.hetero:
            x_dict, ei_dict = args
            for conv, act in zip(self.convs, self.acts):
                x_dict = {t: ACT[act](v) for t, v in conv(x_dict, ei_dict).items()}
            return x_dict
        x, edge_index, edge_type = args
        for conv, act in zip(self.convs, self.acts):
            x = ACT[act](conv(x, edge_index, edge_type))
        return x


def load_graph(path, cfg, hetero):
    g = load_file(path)
    if hetero:
        md = cfg["metadata"]
        x_dict = {k[2:]: v.float() for k, v in g.items() if k.startswith("x.")}
        ei = {}
        for s, r, d in md["edge_types"]:
            key = f"edge_index.{s}__{r}__{d}"
            if key in g:
                ei[(s, r, d)] = g[key].long()
        nodes = sum(v.shape[0] for v in x_dict.values())
        edges = sum(v.shape[1] for v in ei.values())
        return (x_dict, ei), nodes, edges
    x = g["x"].float()
    ei = g["edge_index"].long()
    et = g["edge_type"].long()
    return (x, ei, et), x.shape[0], ei.shape[1]


def run_quiet(cmd, env):
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout}{p.stderr}")
    return p


def dtype_flags(dtype):
    """rgnn's flags for a storage type of --dtypes: f32, f16, bf16, or tf32 (f32 with --tf32)."""
    return ["--dtype", "f32", "--tf32"] if dtype == "tf32" else ["--dtype", dtype]


def run_rgnn(rgnn, model, graph, out, backend, dtype, env):
    """`rgnn run` into `out`: None when it ran; rgnn's message when the device ran out of memory
    (recorded as such by the callers); any other failure raises."""
    try:
        run_quiet([rgnn, "run", "--model", model, "--graph", graph, "--out", out, "--backend", backend]
                  + dtype_flags(dtype), env)
    except SystemExit as e:
        if "out of memory" not in str(e):
            raise
        return str(e)[-2000:]
    return None


def run_rgnn_bench(rgnn, model, graph, reps, jpath, env, tmp, backend="cpu", dtype="f32"):
    """`rgnn bench --backend B --json`; returns (json, process max RSS in bytes or None)."""
    cmd = [rgnn, "bench", "--model", model, "--graph", graph, "--backend", backend, "--reps", str(reps),
           "--json", jpath] + dtype_flags(dtype)
    tfile = os.path.join(tmp, "time.txt")
    timed = os.path.exists("/usr/bin/time")
    run_quiet((["/usr/bin/time", "-f", "%M", "-o", tfile] if timed else []) + cmd, env)
    with open(jpath) as f:
        bench = json.load(f)
    maxrss = None
    if timed:
        with open(tfile) as f:
            maxrss = int(f.read().strip().splitlines()[-1]) * 1024
    return bench, maxrss


def compare_outputs(got, ref, reference):
    """rgnn's outputs `got` against the reference's `ref` (tensors by output name): the relative
    error ||got - ref|| / ||ref|| over all of them, and the largest absolute difference."""
    if sorted(got) != sorted(ref):
        raise SystemExit(f"output names differ: rgnn {sorted(got)} vs {reference} {sorted(ref)}")
    for k in ref:
        if tuple(got[k].shape) != tuple(ref[k].shape):
            raise SystemExit(f"output `{k}` shapes differ: rgnn {tuple(got[k].shape)} vs {reference} {tuple(ref[k].shape)}")
    num = sum(float(((got[k].double() - ref[k].double()) ** 2).sum()) for k in ref)
    den = sum(float((ref[k].double() ** 2).sum()) for k in ref)
    max_abs = max(float((got[k].double() - ref[k].double()).abs().max()) for k in ref)
    return (num ** 0.5) / max(den ** 0.5, 1e-30), max_abs


def append_result(path, row):
    """Append one JSON line to the results file (when --results was given)."""
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")


def as_outputs(out):
    if isinstance(out, dict):
        return {f"out.{k}": v for k, v in out.items()}
    return {"out": out}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--graph", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--rgnn", default=os.path.join(REPO, "target", "release", "rgnn"))
    ap.add_argument("--shape", default=None, help="label of the graph shape in the table")
    ap.add_argument("--results", default=None, help="append a JSON line here")
    ap.add_argument("--tol", type=float, default=1e-4, help="rel err above this is flagged MISMATCH")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where PyG runs")
    ap.add_argument("--backend", default=None, choices=["cpu", "cuda", "wgpu"], help="rgnn's backend")
    ap.add_argument("--dtypes", default="f32",
                    help="rgnn storage types to run against the one reference run, comma-separated: f32, f16, bf16, tf32")
    ap.add_argument("--tol-low", type=float, default=1e-2, help="--tol for the 16-bit and tf32 runs")
    ap.add_argument("--pyg-impls", default=None,
                    help="PyG implementations of RGCN layers to time, the fastest counting: default (RGCNConv), "
                         "fast (FastRGCNConv); default: both with --device cuda, RGCNConv on the CPU")
    args = ap.parse_args(argv)
    backend = args.backend or ("cuda" if args.device == "cuda" else "cpu")
    dtypes = parse_dtypes(args.dtypes)

    torch.set_num_threads(args.threads)
    cfg = read_config(args.model)
    state = load_file(args.model)
    hetero = any(l["type"] == "HGTConv" for l in cfg["layers"])
    inputs, nodes, edges = load_graph(args.graph, cfg, hetero)
    kind = "+".join(l["type"] for l in cfg["layers"])
    shape = args.shape or os.path.basename(args.graph).split(".")[0]
    impls = ["default"]
    if any(l["type"] == "RGCNConv" for l in cfg["layers"]):
        impls = [i.strip() for i in (args.pyg_impls or ("default,fast" if args.device == "cuda" else "default")).split(",")]
        if any(i not in ("default", "fast") for i in impls):
            raise SystemExit(f"--pyg-impls: expected default and/or fast, got {args.pyg_impls!r}")

    # PyG timing (on the GPU with --device cuda), each implementation in turn; the fastest counts.
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    to_dev = lambda v: {k: t.to(dev) for k, t in v.items()} if isinstance(v, dict) else v.to(dev)  # noqa: E731
    inputs = tuple(to_dev(v) for v in inputs)
    runs = {}  # implementation -> (times, peak growth, outputs) or "out of memory"
    for impl in impls:
        model = Stack(cfg, fast_rgcn=impl == "fast").eval()
        model.load_state_dict(state, strict=True)
        model = model.to(dev)
        rss0 = rss_bytes()
        if args.device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        try:
            with torch.no_grad():
                for _ in range(args.warmup):
                    out = model(*inputs)
                times = []
                for _ in range(args.reps):
                    sync()
                    t0 = time.perf_counter()
                    out = model(*inputs)
                    sync()
                    times.append(time.perf_counter() - t0)
            growth = torch.cuda.max_memory_allocated() if args.device == "cuda" else max(0, maxrss_bytes() - rss0)
            runs[impl] = (times, growth, {k: v.cpu() for k, v in as_outputs(out).items()})
        except torch.cuda.OutOfMemoryError:
            runs[impl] = "out of memory"
        out = model = None
    # Where every implementation ran out of memory, rgnn still runs (timed, not compared).
    ran = {i: r for i, r in runs.items() if r != "out of memory"}
    pyg_impl = min(ran, key=lambda i: statistics.median(ran[i][0])) if ran else None
    times, pyg_peak_growth, ref = ran[pyg_impl] if ran else (None, None, None)
    pyg_median = statistics.median(times) if ran else None
    pyg_impls = {i: ("out of memory" if r == "out of memory" else statistics.median(r[0])) for i, r in runs.items()}

    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    mem = "PyG peak device MB" if args.device == "cuda" else "PyG fwd RSS growth MB"
    print(f"| model | shape | dtype | PyG median s | rgnn median s | PyG/rgnn | rgnn peak_bytes | rgnn max RSS MB | {mem} | rel err |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for dtype in dtypes:
        tol = args.tol if dtype == "f32" else args.tol_low
        with tempfile.TemporaryDirectory() as tmp:
            # Correctness: rgnn run vs PyG.
            opath = os.path.join(tmp, "out.safetensors")
            oom = run_rgnn(args.rgnn, args.model, args.graph, opath, backend, dtype, env)
            if oom:
                print(f"| {kind} | {shape} | {dtype} | {pyg_median} | rgnn out of device memory | | | | | |")
                append_result(args.results, {"model": kind, "shape": shape, "dtype": dtype, "rgnn": "out of memory",
                                             "error": oom, "pyg_median_s": pyg_median, "device": args.device,
                                             "backend": backend, "model_file": args.model, "graph_file": args.graph})
                continue
            got = load_file(opath)
            rel_err, max_abs = compare_outputs(got, ref, "PyG") if ref is not None else (None, None)

            # Timing: rgnn bench; its process max RSS through /usr/bin/time (a fork's wait4 rusage
            # would count the Python parent's pages copied before exec).
            jpath = os.path.join(tmp, "bench.json")
            bench, rgnn_maxrss = run_rgnn_bench(args.rgnn, args.model, args.graph, args.reps, jpath, env, tmp, backend, dtype)

        pyg = "out of memory" if ref is None else None
        ratio = pyg_median / bench["median_s"] if ref is not None else None
        row = {
            "model": kind, "shape": shape, "dtype": dtype, "nodes": nodes, "edges": edges, "threads": args.threads,
            "reps": args.reps, "pyg": pyg, "pyg_impl": pyg_impl, "pyg_impl_medians_s": pyg_impls,
            "pyg_median_s": pyg_median, "pyg_min_s": min(times) if times else None, "pyg_max_s": max(times) if times else None,
            "rgnn_median_s": bench["median_s"], "rgnn_min_s": bench["min_s"], "rgnn_max_s": bench["max_s"],
            "ratio_pyg_over_rgnn": ratio,
            "rgnn_peak_bytes": bench.get("peak_bytes"), "rgnn_process_maxrss_bytes": rgnn_maxrss,
            "pyg_forward_rss_growth_bytes": pyg_peak_growth,
            "rel_err": rel_err, "max_abs_err": max_abs, "tol": tol, "match": rel_err is not None and rel_err <= tol,
            "device": args.device, "backend": backend, "rgnn_timing": bench.get("timing"),
            "torch": torch.__version__, "torch_geometric": torch_geometric.__version__,
            "model_file": args.model, "graph_file": args.graph,
        }
        rss = f"{rgnn_maxrss / 2**20:.0f}" if rgnn_maxrss else "n/a"
        if ref is None:
            print(f"| {kind} | {shape} | {dtype} | out of memory | {bench['median_s']:.4f} | n/a | "
                  f"{bench.get('peak_bytes')} | {rss} | out of memory | n/a |")
        else:
            print(f"| {kind} | {shape} | {dtype} | {pyg_median:.4f} ({pyg_impl}) | {bench['median_s']:.4f} | {ratio:.2f} | "
                  f"{bench.get('peak_bytes')} | {rss} | {pyg_peak_growth / 2**20:.0f} | "
                  f"{rel_err:.2e}{'' if row['match'] else ' MISMATCH'} |")
        append_result(args.results, row)
    return 0


def parse_dtypes(text):
    dtypes = [d.strip() for d in text.split(",") if d.strip()]
    bad = [d for d in dtypes if d not in ("f32", "f16", "bf16", "tf32")]
    if bad or not dtypes:
        raise SystemExit(f"--dtypes: expected a comma-separated list of f32, f16, bf16, tf32; got {text!r}")
    return dtypes


if __name__ == "__main__":
    sys.exit(main())
