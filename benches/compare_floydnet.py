#!/usr/bin/env python3
"""Run a FloydNet PivotalAttentionBlock stack (rgnn model + pair graph files) through the official
`floydnet` package and through rgnn, check they agree, and time both, with peak memory.

    python benches/compare_floydnet.py --model floydnet_n64.model.safetensors \
        --graph floydnet_n64.graph.safetensors [--threads 2] [--reps 3] [--warmup 1] \
        [--rgnn target/release/rgnn] [--results results.jsonl] [--device cpu|cuda] [--backend cpu|cuda|wgpu] \
        [--dtypes f32,bf16]

`--device cuda` runs the official package on the GPU (synchronised timing, peak device memory from
torch.cuda.max_memory_allocated, out-of-memory recorded as such); `--backend` picks rgnn's backend
(default: cuda with --device cuda, else cpu). The official package runs once, in f32; rgnn once
per storage type of `--dtypes` (`tf32`: f32 with `--tf32`; 16-bit and tf32 runs are checked
against `--tol-low`, 1e-2). Where the official package runs out of memory, rgnn still runs.

The reference runs in a fresh subprocess (this script with --worker) so its memory is its own:
it builds `PivotalAttentionBlock(**config)` per block under `blocks.<i>`, loads the weights with a
strict `load_state_dict`, and runs the stack block by block, multiplying the state by the pair mask
after each block, with the attention mask of `rgnn_export.floydnet.floydnet_masks` (as
tools/make_fixtures.py does), in eval() / no_grad with torch.set_num_threads(T).
Reported memory:
- floydnet: RSS high-water growth of the worker during the forward passes (ru_maxrss after minus
  the RSS just before them; includes the attention scores [B, H, N, N, N] the package materialises)
  and the worker's whole-process max RSS;
- rgnn: `peak_bytes` from `rgnn bench --json` and the `rgnn bench` process max RSS (/usr/bin/time).
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
sys.path.insert(0, os.path.join(REPO, "python"))
sys.path.insert(0, HERE)


def read_config(path):
    from safetensors import safe_open
    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
    return json.loads(meta["rgnn.config"])


BLOCK_KEYS = ("bias", "ffn_expansion_ratio", "norm_position", "activation_fn", "norm_fn",
              "enable_symmetric_mix", "enable_ffn")


def worker(args):
    """Runs in its own process: official floydnet forward, timings and memory to a JSON file."""
    import torch
    from floydnet import PivotalAttentionBlock
    from safetensors.torch import load_file, save_file
    from rgnn_export.floydnet import floydnet_stack_forward

    torch.set_num_threads(args.threads)
    cfg = read_config(args.model)
    blocks = []
    for i, l in enumerate(cfg["layers"]):
        if l["type"] != "PivotalAttentionBlock" or l["prefix"] != f"blocks.{i}":
            raise SystemExit(f"layer {i}: expected PivotalAttentionBlock with prefix blocks.{i}")
        if l.get("activation") is not None:
            raise SystemExit("per-layer activations after a block are not supported by this script")
        blocks.append(PivotalAttentionBlock(l["embed_dim"], l["num_heads"], **{k: l[k] for k in BLOCK_KEYS if k in l}))

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = torch.nn.ModuleList(blocks)

    model = Model().eval()
    model.load_state_dict(load_file(args.model), strict=True)
    g = load_file(args.graph)
    dev = torch.device(args.device)
    model = model.to(dev)
    pair = g["pair"].float().to(dev)
    mask = g.get("node_mask")
    mask = mask.to(dev) if mask is not None else None
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    rss0 = rss()
    try:
        with torch.no_grad():
            for _ in range(args.warmup):
                out = floydnet_stack_forward(model.blocks, pair, mask)
            times = []
            for _ in range(args.reps):
                sync()
                t0 = time.perf_counter()
                out = floydnet_stack_forward(model.blocks, pair, mask)
                sync()
                times.append(time.perf_counter() - t0)
    except torch.cuda.OutOfMemoryError:
        with open(args.worker_json, "w") as f:
            json.dump({"oom": True, "N": pair.shape[1]}, f)
        return
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    growth = torch.cuda.max_memory_allocated() if args.device == "cuda" else max(0, maxrss - rss0)
    save_file({"out": out.contiguous().cpu()}, args.worker_out)
    with open(args.worker_json, "w") as f:
        json.dump({"times": times, "forward_rss_growth_bytes": growth,
                   "process_maxrss_bytes": maxrss, "torch": torch.__version__,
                   "B": pair.shape[0], "N": pair.shape[1], "C": pair.shape[3],
                   "H": cfg["layers"][0]["num_heads"], "blocks": len(blocks)}, f)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--graph", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--rgnn", default=os.path.join(REPO, "target", "release", "rgnn"))
    ap.add_argument("--results", default=None)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the official package runs")
    ap.add_argument("--backend", default=None, choices=["cpu", "cuda", "wgpu"], help="rgnn's backend")
    ap.add_argument("--dtypes", default="f32",
                    help="rgnn storage types to run against the one reference run, comma-separated: f32, f16, bf16, tf32")
    ap.add_argument("--tol-low", type=float, default=1e-2, help="--tol for the 16-bit and tf32 runs")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", help=argparse.SUPPRESS)
    ap.add_argument("--worker-json", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    backend = args.backend or ("cuda" if args.device == "cuda" else "cpu")

    from compare_pyg import append_result, compare_outputs, parse_dtypes, run_quiet, run_rgnn, run_rgnn_bench  # shared helpers
    dtypes = parse_dtypes(args.dtypes)
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads))
    mb = lambda b: f"{b / 2**20:.0f}" if b is not None else "n/a"  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        ref_path, wjson = os.path.join(tmp, "ref.safetensors"), os.path.join(tmp, "worker.json")
        run_quiet([sys.executable, os.path.abspath(__file__), "--worker", "--model", args.model,
                   "--graph", args.graph, "--threads", str(args.threads), "--reps", str(args.reps),
                   "--warmup", str(args.warmup), "--worker-out", ref_path, "--worker-json", wjson,
                   "--device", args.device], env)
        with open(wjson) as f:
            w = json.load(f)
        # Where the official package runs out of memory, rgnn still runs (timed, not compared).
        ref = None if w.get("oom") else load_file(ref_path)["out"]
        fl_median = None if ref is None else statistics.median(w["times"])
        with safe_open(args.graph, framework="pt") as g:  # the shape only, not the pair tensor
            b, n, _, c = g.get_slice("pair").get_shape()
        cfg = read_config(args.model)
        shape = f"B={b} N={n} C={c} H={cfg['layers'][0]['num_heads']} x{len(cfg['layers'])}"
        mem = "floydnet peak device MB" if args.device == "cuda" else "floydnet fwd RSS growth MB"
        print(f"| model | shape | dtype | floydnet median s | rgnn median s | floydnet/rgnn | {mem} | floydnet max RSS MB | rgnn peak_bytes | rgnn max RSS MB | rel err |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for dtype in dtypes:
            tol = args.tol if dtype == "f32" else args.tol_low
            opath = os.path.join(tmp, "out.safetensors")
            oom = run_rgnn(args.rgnn, args.model, args.graph, opath, backend, dtype, env)
            if oom:
                print(f"| FloydNet | {shape} | {dtype} | {fl_median} | rgnn out of device memory | | | | | | |")
                append_result(args.results, {"model": "PivotalAttentionBlock", "shape": shape, "N": n, "dtype": dtype,
                                             "rgnn": "out of memory", "error": oom, "floydnet_median_s": fl_median,
                                             "device": args.device, "backend": backend, "model_file": args.model})
                continue
            rel_err = max_abs = None
            if ref is not None:
                rel_err, max_abs = compare_outputs({"out": load_file(opath)["out"]}, {"out": ref}, "floydnet")
            bench, rgnn_maxrss = run_rgnn_bench(args.rgnn, args.model, args.graph, args.reps,
                                                os.path.join(tmp, "bench.json"), env, tmp, backend, dtype)
            ratio = fl_median / bench["median_s"] if ref is not None else None
            row = {
                "model": "PivotalAttentionBlock", "shape": shape, "N": n, "dtype": dtype, "threads": args.threads,
                "reps": args.reps, "floydnet": "out of memory" if ref is None else None,
                "floydnet_median_s": fl_median, "floydnet_min_s": min(w["times"]) if ref is not None else None,
                "floydnet_max_s": max(w["times"]) if ref is not None else None, "rgnn_median_s": bench["median_s"],
                "rgnn_min_s": bench["min_s"], "rgnn_max_s": bench["max_s"], "ratio_floydnet_over_rgnn": ratio,
                "floydnet_forward_rss_growth_bytes": w.get("forward_rss_growth_bytes"),
                "floydnet_process_maxrss_bytes": w.get("process_maxrss_bytes"),
                "rgnn_peak_bytes": bench.get("peak_bytes"), "rgnn_process_maxrss_bytes": rgnn_maxrss,
                "rel_err": rel_err, "max_abs_err": max_abs, "tol": tol, "match": rel_err is not None and rel_err <= tol,
                "device": args.device, "backend": backend, "rgnn_timing": bench.get("timing"),
                "torch": w.get("torch"), "model_file": args.model, "graph_file": args.graph,
            }
            if ref is None:
                print(f"| FloydNet | {shape} | {dtype} | out of memory | {bench['median_s']:.4f} | n/a | out of memory | n/a | "
                      f"{bench.get('peak_bytes')} | {mb(rgnn_maxrss)} | n/a |")
            else:
                print(f"| FloydNet | {shape} | {dtype} | {fl_median:.4f} | {bench['median_s']:.4f} | {ratio:.2f} | "
                      f"{mb(w['forward_rss_growth_bytes'])} | {mb(w['process_maxrss_bytes'])} | {bench.get('peak_bytes')} | "
                      f"{mb(rgnn_maxrss)} | {rel_err:.2e}{'' if row['match'] else ' MISMATCH'} |")
            append_result(args.results, row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
