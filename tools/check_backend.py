#!/usr/bin/env python3
"""Run every committed fixture through `rgnn run --backend B [--dtype D]` and compare with the
reference framework's output (normwise relative error). Needs only numpy and safetensors, so it
runs on a GPU machine next to a carried `rgnn` binary.

    python3 tools/check_backend.py --backend cuda [--dtype f32|f16|bf16] [--tf32] [--rgnn target/release/rgnn] \
        [--tol 1e-5] [--fixtures tests/fixtures]

Exit status 1 if any case fails or errors.
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from safetensors.numpy import load_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", required=True)
    ap.add_argument("--dtype", default="f32")
    ap.add_argument("--rgnn", default=os.path.join(REPO, "target", "release", "rgnn"))
    ap.add_argument("--fixtures", default=os.path.join(REPO, "tests", "fixtures"))
    ap.add_argument("--tf32", action="store_true", help="pass --tf32 (f32 GEMMs on TF32 tensor cores)")
    ap.add_argument("--tol", type=float, default=None, help="default: 1e-5 for f32 without --tf32, 1e-2 otherwise")
    args = ap.parse_args()
    tol = args.tol if args.tol is not None else (1e-5 if args.dtype == "f32" and not args.tf32 else 1e-2)
    cases = []
    for m in sorted(glob.glob(os.path.join(args.fixtures, "manifest*.json"))):
        cases += [c["name"] for c in json.load(open(m))]
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            f = lambda kind: os.path.join(args.fixtures, f"{case}.{kind}.safetensors")  # noqa: E731
            out = os.path.join(tmp, "out.safetensors")
            p = subprocess.run([args.rgnn, "run", "--model", f("model"), "--graph", f("graph"), "--out", out,
                                "--backend", args.backend, "--dtype", args.dtype] + (["--tf32"] if args.tf32 else []),
                               capture_output=True, text=True)
            if p.returncode != 0:
                print(f"ERROR {case}: {p.stderr.strip().splitlines()[-1] if p.stderr.strip() else p.returncode}")
                failures += 1
                continue
            got, want = load_file(out), load_file(f("expected"))
            worst = 0.0
            for name, w in want.items():
                g = got.get(name)
                if g is None or g.shape != w.shape:
                    worst = float("inf")
                    break
                d = g.astype(np.float64) - w.astype(np.float64)
                worst = max(worst, float(np.linalg.norm(d) / max(np.linalg.norm(w.astype(np.float64)), 1e-30)))
            ok = worst <= tol
            failures += not ok
            print(f"{'ok   ' if ok else 'FAIL '} {case:40s} rel err {worst:.2e}")
    tf32 = " --tf32" if args.tf32 else ""
    print(f"{len(cases) - failures}/{len(cases)} fixtures pass on --backend {args.backend} --dtype {args.dtype}{tf32} (tolerance {tol:g})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
