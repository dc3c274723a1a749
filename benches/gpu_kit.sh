#!/usr/bin/env bash
# Build what benches/gpu.sh needs on a GPU machine that has no Rust toolchain, stripped so it
# travels light (about 25 MB): rgnn, rgnn-synth and the CUDA test binary (tests/cuda.rs), into
# DIR (default target/gpu-kit). There, from the repository root:
#
#   RGNN=DIR/rgnn SYNTH=DIR/rgnn-synth CUDA_TESTS=DIR/rgnn-cuda-tests benches/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-target/gpu-kit}
mkdir -p "$DIR"
cargo build --release -p rgnn -p rgnn-benches
tests=$(cargo test --release --test cuda --no-run 2>&1 | grep -o 'target/release/deps/cuda-[0-9a-f]*' | head -1)
[ -n "$tests" ] || { echo "could not find the cuda test binary" >&2; exit 1; }
cp target/release/rgnn target/release/rgnn-synth "$DIR/"
cp "$tests" "$DIR/rgnn-cuda-tests"
strip "$DIR/rgnn" "$DIR/rgnn-synth" "$DIR/rgnn-cuda-tests"
ls -la "$DIR"
