#!/usr/bin/env bash
# NVRTC and ptxas without the CUDA toolkit or a GPU: NVIDIA's own redistributable wheels from
# PyPI (CUDA 12.9), pinned by SHA-256, unpacked into DIR (default target/cuda-tools):
#   DIR/lib/libnvrtc.so.12 (+ its builtins)   what `rgnn inspect --emit ptx` and the CUDA backend load
#   DIR/bin/ptxas                             registers and spills of the PTX, per architecture
# Then `export LD_LIBRARY_PATH=DIR/lib RGNN_PTXAS=DIR/bin/ptxas` lets tests/nvrtc.rs compile every
# generated kernel with NVRTC and assemble it with ptxas. Needs curl, unzip and sha256sum; about
# 130 MB is downloaded once (a second run finds the files and does nothing).
set -euo pipefail
dir=${1:-target/cuda-tools}
if [ -x "$dir/bin/ptxas" ] && [ -e "$dir/lib/libnvrtc.so.12" ]; then
    echo "NVRTC and ptxas already in $dir"
    exit 0
fi
base=https://files.pythonhosted.org/packages
wheels=(
    "$base/b8/85/e4af82cc9202023862090bfca4ea827d533329e925c758f0cde964cb54b7/nvidia_cuda_nvrtc_cu12-12.9.86-py3-none-manylinux2010_x86_64.manylinux_2_12_x86_64.whl 210cf05005a447e29214e9ce50851e83fc5f4358df8b453155d5e1918094dcb4 nvidia/cuda_nvrtc/lib/libnvrtc.so.12 nvidia/cuda_nvrtc/lib/libnvrtc-builtins.so.12.9"
    "$base/25/48/b54a06168a2190572a312bfe4ce443687773eb61367ced31e064953dd2f7/nvidia_cuda_nvcc_cu12-12.9.86-py3-none-manylinux2010_x86_64.manylinux_2_12_x86_64.whl 5d6a0d32fdc7ea39917c20065614ae93add6f577d840233237ff08e9a38f58f0 nvidia/cuda_nvcc/bin/ptxas"
)
if [ "$(uname -m)" != x86_64 ]; then
    echo "error: the pinned NVRTC and ptxas are x86-64 builds; this machine is $(uname -m)" >&2
    exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$dir/lib" "$dir/bin"
for entry in "${wheels[@]}"; do
    read -r url sha members <<<"$entry"
    wheel="$tmp/$(basename "$url")"
    echo "== downloading $(basename "$url")"
    curl -fsSL --retry 3 -o "$wheel" "$url"
    echo "$sha  $wheel" | sha256sum -c --quiet
    # shellcheck disable=SC2086 # members are several names
    unzip -q -o "$wheel" $members -d "$tmp/x"
done
cp "$tmp"/x/nvidia/cuda_nvrtc/lib/* "$dir/lib/"
cp "$tmp"/x/nvidia/cuda_nvcc/bin/ptxas "$dir/bin/"
chmod +x "$dir/bin/ptxas"
echo "NVRTC and ptxas in $dir"
