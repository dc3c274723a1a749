#!/usr/bin/env bash
# Builds the host stand-in for the CUDA driver and NVRTC (tests/host_cuda/driver.c, which
# tests/cuda_host_driver.rs uses) into DIR, and prints the environment that makes rgnn's cuda
# backend run on it, on a machine without a GPU:
#
#   eval "$(tools/host_cuda.sh target/host-cuda)"
#   target/release/rgnn run --backend cuda --model ... --graph ... --out ...
#
# Generated kernels run as host C++, one thread per CUDA thread: for trying the backend and the
# GPU scripts (benches/gpu.sh with REF_DEVICE=cpu), never for timing. The SIMT kernels are chosen
# (RGNN_CUDA_TENSOR_CORES=0) because emulated tensor-core warps are much slower.
set -euo pipefail
dir=${1:?usage: tools/host_cuda.sh DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$dir/lib" "$dir/modules" "$dir/cache"
dir=$(cd "$dir" && pwd)
${CC:-cc} -std=c11 -O1 -shared -fPIC -o "$dir/lib/libcuda.so" "$root/tests/host_cuda/driver.c" -ldl -lpthread >&2
cp "$dir/lib/libcuda.so" "$dir/lib/libnvrtc.so"
# The launcher the host emulation appends to every kernel: HOST_LAUNCHER in kernels/src/cuda.rs.
sed -n '/^pub const HOST_LAUNCHER: &str = r#"$/,/^"#;$/p' "$root/kernels/src/cuda.rs" | sed '1d;$d' > "$dir/launcher.cpp"
grep -q rgnn_host_launch "$dir/launcher.cpp" || { echo "tools/host_cuda.sh: HOST_LAUNCHER not found in kernels/src/cuda.rs" >&2; exit 1; }
# The stand-in compiles each kernel it loads with RGNN_HOST_CXX (default c++).
cxx=${RGNN_HOST_CXX:-$(for c in c++ g++ clang++; do command -v "$c" >/dev/null && { echo "$c"; break; }; done)}
[ -n "$cxx" ] || { echo "tools/host_cuda.sh: no C++ compiler (c++, g++ or clang++)" >&2; exit 1; }
cat <<ENV
export LD_LIBRARY_PATH="$dir/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
export RGNN_HOST_CUDA_LAUNCHER="$dir/launcher.cpp" RGNN_HOST_CUDA_WORKDIR="$dir/modules" RGNN_CACHE_DIR="$dir/cache"
export RGNN_HOST_CXX="$cxx" RGNN_CUDA_TENSOR_CORES=0
ENV
