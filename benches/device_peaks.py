"""The device's reference rates for the CUDA speed targets, measured on the machine itself.

- memory bandwidth: a device-to-device copy of 1 GiB (bytes read plus bytes written over its time);
- dense bf16 tensor-core rate: an 8192 x 8192 x 8192 bf16 matmul (2 n^3 flops over its time).

Each is the median of CUDA-event timings after a warm-up. Prints one JSON line; traversal kernels
are held to half the bandwidth and large GEMMs to half the bf16 rate (see docs/BENCHMARKS.md).
"""
import argparse
import json

import torch


def timed(fn, reps):
    """Median seconds of `fn` over `reps` runs, by CUDA events."""
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    times.sort()
    return times[len(times) // 2]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--copy-mib", type=int, default=1024)
    ap.add_argument("--matmul-n", type=int, default=8192)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("device_peaks.py: no CUDA device")
    src = torch.empty(a.copy_mib << 18, dtype=torch.float32, device="cuda")
    dst = torch.empty_like(src)
    copy_s = timed(lambda: dst.copy_(src), a.reps)
    del src, dst
    n = a.matmul_n
    x = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    mm_s = timed(lambda: torch.mm(x, w), a.reps)
    print(json.dumps({
        "device": torch.cuda.get_device_name(),
        "copy_bytes": 2 * (a.copy_mib << 20), "copy_s": copy_s, "bandwidth_gb_s": 2 * (a.copy_mib << 20) / copy_s / 1e9,
        "matmul_n": n, "matmul_s": mm_s, "bf16_tflop_s": 2 * n**3 / mm_s / 1e12,
    }))


if __name__ == "__main__":
    main()
