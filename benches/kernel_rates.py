#!/usr/bin/env python3
"""The CUDA speed targets per kernel: traversal bandwidth and GEMM tensor-core rate.

    python benches/kernel_rates.py kernels.jsonl device-peaks.json

kernels.jsonl holds one `rgnn bench --kernels --json` report per line (with the case's "case"
label added, as benches/gpu.sh writes them); device-peaks.json is benches/device_peaks.py's
line. Per case and storage type, one row:

- traversals: their summed time, and their bytes over that time as a share of the measured copy
  bandwidth (aggregate), with the lowest share of any one traversal;
- the GEMM with the most flops: its rate as a share of the measured dense bf16 rate, and as a
  share of its roofline bound min(bf16 rate, bytes-intensity x bandwidth). Relational GEMMs are
  skinny (K and N of 64 or 128), so the bound is usually the bandwidth, not the tensor cores.

Bytes are every array a kernel binds counted once (see `KernelWork` in kernels/src/gpu.rs): for
traversals and relation GEMMs, which use their arrays in full, a floor of the traffic (gathered
rows read again by other edges are not counted), so those shares are conservative.
"""
from __future__ import annotations

import json
import sys


def pct(x):
    return "n/a" if x is None else f"{100 * x:.0f}%"


def main(kernels_path, peaks_path):
    peaks = json.loads(open(peaks_path).read())
    bw, tc = peaks["bandwidth_gb_s"] * 1e9, peaks["bf16_tflop_s"] * 1e12
    print(f"Device: {peaks['device']}; copy bandwidth {bw / 1e9:.0f} GB/s, dense bf16 {tc / 1e12:.0f} TFLOP/s.\n")
    print("| case | dtype | traversal ms | traversal GB/s | of bandwidth | lowest traversal | top GEMM ms | top GEMM TFLOP/s | of bf16 rate | of its roofline |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for line in open(kernels_path):
        if not line.strip():
            continue
        r = json.loads(line)
        work = r.get("kernel_work") or []
        trav = [w for w in work if w["template"] == "traversal" and w["seconds"] > 0]
        t_s = sum(w["seconds"] for w in trav)
        t_b = sum(w["bytes"] for w in trav)
        t_rate = t_b / t_s if t_s else None
        lowest = min((w["bytes_per_s"] / bw for w in trav), default=None)
        gemms = [w for w in work if w["template"] == "gemm" and w["seconds"] > 0]
        top = max(gemms, key=lambda w: w["flops"], default=None)
        if top:
            bound = min(tc, top["flops"] / top["bytes"] * bw) if top["bytes"] else tc
            g = (f"{top['seconds'] * 1e3:.3f}", f"{top['flops_per_s'] / 1e12:.1f}", pct(top["flops_per_s"] / tc), pct(top["flops_per_s"] / bound))
        else:
            g = ("n/a",) * 4
        print(f"| {r.get('case', r.get('model', '?'))} | {r.get('dtype', '?')} | {t_s * 1e3:.3f} | "
              f"{'n/a' if t_rate is None else f'{t_rate / 1e9:.0f}'} | {pct(None if t_rate is None else t_rate / bw)} | {pct(lowest)} | "
              + " | ".join(g) + " |")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2])
