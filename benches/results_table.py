#!/usr/bin/env python3
"""Markdown tables from the JSON lines of benches/compare_pyg.py and benches/compare_floydnet.py.

    python benches/results_table.py results.jsonl [more.jsonl ...]

One row per case and rgnn storage type; out-of-memory on either side is shown as such. After the
table, per model and storage type: the geometric mean of reference / rgnn over the cases both
ran, the slowest case, and how many cases each side could not run.
"""
from __future__ import annotations

import json
import math
import sys
from collections import defaultdict


def mb(b):
    return "n/a" if b is None else f"{b / 2**20:.0f}"


def secs(x):
    return "n/a" if x is None else f"{x:.4f}"


def main(paths):
    rows = [json.loads(line) for p in paths for line in open(p) if line.strip()]
    print("| model | shape | nodes | edges | dtype | reference | ref median s | rgnn median s | ref/rgnn | rgnn peak MB | ref peak MB | rel err |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    ratios = defaultdict(list)   # (model, dtype) -> [(ratio, shape)]
    ooms = defaultdict(lambda: [0, 0])  # (model, dtype) -> [reference OOMs, rgnn OOMs]
    for r in rows:
        model, shape, dtype = r.get("model", "?"), r.get("shape", "?"), r.get("dtype", "f32")
        if "failed" in r:
            print(f"| {model} | {shape} | | | {dtype} | | | | | | | failed: {r['failed']} |")
            continue
        floyd = model == "PivotalAttentionBlock"
        ref_name = "floydnet" if floyd else f"PyG ({r.get('pyg_impl') or 'default'})"
        ref_s = r.get("floydnet_median_s" if floyd else "pyg_median_s")
        ref_oom = (r.get("floydnet") if floyd else r.get("pyg")) == "out of memory"
        rgnn_oom = r.get("rgnn") == "out of memory"
        key = (("FloydNet" if floyd else model), dtype)
        ooms[key][0] += ref_oom
        ooms[key][1] += rgnn_oom
        ratio = r.get("ratio_floydnet_over_rgnn" if floyd else "ratio_pyg_over_rgnn")
        if ratio:
            ratios[key].append((ratio, shape))
        ref_peak = r.get("floydnet_forward_rss_growth_bytes" if floyd else "pyg_forward_rss_growth_bytes")
        err = r.get("rel_err")
        err_s = "n/a" if err is None else f"{err:.1e}{'' if r.get('match') else ' MISMATCH'}"
        nodes = f"{r['nodes']:,}" if "nodes" in r else ""
        edges = f"{r['edges']:,}" if "edges" in r else ""
        print(f"| {'FloydNet' if floyd else model} | {shape} | {nodes} | {edges} | {dtype} | {ref_name} | "
              f"{'out of memory' if ref_oom else secs(ref_s)} | {'out of memory' if rgnn_oom else secs(r.get('rgnn_median_s'))} | "
              f"{'n/a' if ratio is None else f'{ratio:.2f}'} | {mb(r.get('rgnn_peak_bytes'))} | "
              f"{'out of memory' if ref_oom else mb(ref_peak)} | {err_s} |")
    print()
    print("| model | dtype | cases both ran | geometric mean ref/rgnn | slowest case (ref/rgnn) | reference OOM | rgnn OOM |")
    print("|---|---|---|---|---|---|---|")
    for key in sorted(set(ratios) | set(ooms)):
        rs = ratios.get(key, [])
        geo = math.exp(sum(math.log(x) for x, _ in rs) / len(rs)) if rs else None
        worst = min(rs) if rs else None
        print(f"| {key[0]} | {key[1]} | {len(rs)} | {'n/a' if geo is None else f'{geo:.2f}'} | "
              f"{'n/a' if worst is None else f'{worst[1]} ({worst[0]:.2f})'} | {ooms[key][0]} | {ooms[key][1]} |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
