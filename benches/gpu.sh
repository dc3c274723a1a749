#!/usr/bin/env bash
# Everything the CUDA backend's verification and benchmarks need on a GPU machine, in one run.
# Build here with benches/gpu_kit.sh (rgnn, rgnn-synth and the CUDA test binary, stripped, in
# target/gpu-kit), carry that folder with the repository, then on the GPU machine:
#
#   K=target/gpu-kit; export RGNN=$K/rgnn SYNTH=$K/rgnn-synth CUDA_TESTS=$K/rgnn-cuda-tests
#   benches/gpu.sh                 # fixtures on cuda (f32, bf16, f16, tf32), PyG vs rgnn, FloydNet vs official
#   PHASES=kernels benches/gpu.sh  # the device's bandwidth and bf16 rate, and every kernel's time
#
# Environment: RGNN (target/release/rgnn), SYNTH (target/release/rgnn-synth), CUDA_TESTS
# (tests/cuda.rs built, run in the fixtures phase where given), PY (python3 with
# torch, torch_geometric 2.8 and floydnet), OUT (target/bench-gpu), PHASES ("fixtures pyg
# floydnet"; "kernels" on request), SHAPES (Hector's eight), FLOYD_N (256 512 1024), REPS (10), SETTINGS ("64:1 128:8":
# channels:heads), DTYPES (rgnn's storage types against each reference run: "f32 tf32 bf16"),
# SCALE (1: full-size shapes; less for a quick run) and REF_DEVICE (cuda: where PyG and the
# official FloydNet run; cpu to try the script where torch has no GPU).
# Writes $OUT/backends.txt (`rgnn backends`: device, driver, NVRTC), $OUT/cuda-tests.txt,
# $OUT/fixtures-*.txt, $OUT/ptxas.txt (registers / spills per kernel), $OUT/pyg.jsonl,
# $OUT/floydnet.jsonl, $OUT/table.md, $OUT/log.txt, $OUT/device-peaks.json, $OUT/pivot-blocks.txt, $OUT/kernels.txt and
# kernels.jsonl (the kernels phase: per-kernel medians, bytes and flops of every model, shape and
# setting in f32 and bf16) with $OUT/kernel-rates.md (those against the bandwidth and tensor-core
# targets, by benches/kernel_rates.py) and nvidia-smi's report ($OUT/gpu.txt) for
# docs/BENCHMARKS.md. Results append, so the phases (or
# SHAPES / SETTINGS subsets) can run as separate calls into one OUT.
#
# Without a GPU, the script itself can be tried on the host stand-in for the CUDA driver (slow;
# checks the plumbing, measures nothing; the kernels phase's device peaks need torch on CUDA):
#   eval "$(tools/host_cuda.sh target/host-cuda)"
#   REF_DEVICE=cpu SHAPES=aifb SCALE=0.05 SETTINGS=64:1 FLOYD_N=16 PIVOT_N=16 REPS=2 benches/gpu.sh
set -u
cd "$(dirname "$0")/.."
RGNN=${RGNN:-target/release/rgnn}
SYNTH=${SYNTH:-target/release/rgnn-synth}
PY=${PY:-python3}
OUT=${OUT:-target/bench-gpu}
SHAPES=${SHAPES:-"aifb mutag bgs am ogbn-mag fb15k-237 ogbl-biokg ogbl-wikikg2"}
FLOYD_N=${FLOYD_N:-"256 512 1024"}
REPS=${REPS:-10}
SETTINGS=${SETTINGS:-"64:1 128:8"}
PHASES=${PHASES:-"fixtures pyg floydnet"}
DTYPES=${DTYPES:-"f32 tf32 bf16"}
SCALE=${SCALE:-1}
REF_DEVICE=${REF_DEVICE:-cuda}
scale_flags=; [ "$SCALE" != 1 ] && scale_flags="--scale $SCALE"
dtypes=$(echo $DTYPES | tr ' ' ,)
mkdir -p "$OUT"
LOG="$OUT/log.txt"
has() { case " $PHASES " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
(nvidia-smi; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv) > "$OUT/gpu.txt" 2>&1
echo "== rgnn $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(head -1 "$OUT/gpu.txt")" | tee -a "$LOG"

# The cuda backend must run before anything is measured. rgnn loads NVRTC by cudarc's names
# (libnvrtc.so, libnvrtc.so.12, ...); a CUDA 13 machine may have only libnvrtc.so.13 (the
# toolkit's, or the nvidia-cuda-nvrtc wheel's), so link the first one found as libnvrtc.so.
# Stops only where rgnn says the cuda backend cannot run (not if the report itself fails).
cuda_runs() { "$RGNN" backends --require cuda > "$OUT/backends.txt" 2>&1 || ! grep -q "^cuda  not available" "$OUT/backends.txt"; }
if ! cuda_runs; then
    wheels=$("$PY" -c 'import nvidia; print(list(nvidia.__path__)[0])' 2>/dev/null)
    lib=$( (ldconfig -p 2>/dev/null | awk '/libnvrtc\.so\.[0-9]/ {print $NF}'
            ls /usr/local/cuda*/lib64/libnvrtc.so.* /usr/local/cuda*/targets/*/lib/libnvrtc.so.* 2>/dev/null
            [ -n "$wheels" ] && find "$wheels" -maxdepth 3 -name 'libnvrtc.so.*') | grep -v builtins | head -1)
    if [ -n "$lib" ]; then
        links="$(cd "$OUT" && pwd)/nvrtc"
        mkdir -p "$links" && ln -sf "$lib" "$links/libnvrtc.so"
        export LD_LIBRARY_PATH="$links:$(dirname "$lib")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        echo "NVRTC: $lib, linked as $links/libnvrtc.so" | tee -a "$LOG"
    fi
    if ! cuda_runs; then
        tee -a "$LOG" < "$OUT/backends.txt"
        echo "the cuda backend cannot run here; nothing measured" | tee -a "$LOG"
        exit 1
    fi
fi
tee -a "$LOG" < "$OUT/backends.txt"

# A reference that $PY cannot import skips its phase with a note, instead of failing every case
# (the official floydnet package is often missing: `pip install --no-deps floydnet==1.1.0`).
needs() {
    if has "$1" && ! "$PY" -c "import $2" 2>>"$LOG"; then
        echo "$PY cannot import $2: the $1 phase is skipped" | tee -a "$LOG"
        PHASES=$(echo " $PHASES " | sed "s/ $1 / /")
    fi
}
needs fixtures "numpy, safetensors"
needs pyg "torch, torch_geometric"
needs floydnet "torch, floydnet"
needs kernels torch

if has fixtures; then
echo "== fixtures on --backend cuda" | tee -a "$LOG"
# The Rust differential suite (every fixture and storage type against the CPU backend, replays).
if [ -n "${CUDA_TESTS:-}" ]; then
    RGNN_FIXTURES_DIR="$PWD/tests/fixtures" RGNN_REQUIRE_CUDA=1 "$CUDA_TESTS" --test-threads 1 --nocapture \
        > "$OUT/cuda-tests.txt" 2>&1
    grep -E "^test |^test result|failures:|rel err .* > " "$OUT/cuda-tests.txt" | tee -a "$LOG"
fi
# f32-simt: the SIMT kernels (f32 otherwise runs GEMMs and pivot attention as split tf32 on sm_80+).
for run in f32 bf16 f16 tf32 f32-simt; do
    vars=
    case $run in
        tf32) flags="--dtype f32 --tf32" ;;
        f32-simt) flags="--dtype f32"; vars=RGNN_CUDA_TENSOR_CORES=0 ;;
        *) flags="--dtype $run" ;;
    esac
    env $vars "$PY" tools/check_backend.py --backend cuda $flags --rgnn "$RGNN" > "$OUT/fixtures-$run.txt" 2>&1
    tail -1 "$OUT/fixtures-$run.txt" | tee -a "$LOG"
done
# Registers and spills of every kernel of a FloydNet block and an RGAT layer, per storage type.
# The architecture the cuda backend compiles for, as `rgnn backends` reported it (sm_90 on an H100).
arch=$(grep -o "(sm_[0-9]*)" "$OUT/backends.txt" | head -1 | tr -d '()sm_')
"$SYNTH" --floydnet 64 --channels 128 --heads 8 --batch 1 --out "$OUT/data-ptxas" >>"$LOG" 2>&1
"$SYNTH" --shape aifb --features 128 --out-channels 128 --heads 8 --out "$OUT/data-ptxas" >>"$LOG" 2>&1
: > "$OUT/ptxas.txt"
for dtype in f32 bf16; do
    for case in "floydnet_n64.model floydnet_n64.graph" "aifb.rgat.model aifb.graph"; do
        set -- $case
        "$RGNN" inspect --model "$OUT/data-ptxas/$1.safetensors" --graph "$OUT/data-ptxas/$2.safetensors" \
            --emit ptx --arch "sm_$arch" --dtype "$dtype" > "$OUT/data-ptxas/all.ptx" 2>>"$LOG"
        awk -v dir="$OUT/data-ptxas" '/^\/\/ ==== /{n++; f=sprintf("%s/k%03d.ptx", dir, n); print > (f ".label"); next} {print > f}' "$OUT/data-ptxas/all.ptx"
        for f in "$OUT"/data-ptxas/k*.ptx; do
            echo "== $1 $dtype: $(cat "$f.label")" >> "$OUT/ptxas.txt"
            ptxas -v --gpu-name "sm_$arch" -o /dev/null "$f" 2>&1 | grep -E "registers|spill|bytes stack" >> "$OUT/ptxas.txt"
        done
        rm -f "$OUT"/data-ptxas/k*.ptx "$OUT"/data-ptxas/k*.ptx.label
    done
done
echo "kernels with spills: $(grep -cE "[1-9][0-9]* bytes spill" "$OUT/ptxas.txt") (details in ptxas.txt)" | tee -a "$LOG"
fi

# Run "$@" for every setting, shape and model (rgcn, rgat, hgt), the data generated first, with
# ch, heads, s, m, the model file $model and its graph $g set.
each_model() {
    for setting in $SETTINGS; do
        ch=${setting%%:*}; heads=${setting##*:}
        data="$OUT/data-$ch-h$heads"
        for s in $SHAPES; do
            "$SYNTH" --shape "$s" $scale_flags --features "$ch" --out-channels "$ch" --heads "$heads" --out "$data" >>"$LOG" 2>&1
            for m in rgcn rgat hgt; do
                model="$data/$s.$m.model.safetensors"
                g="$data/$s.graph.safetensors"
                [ "$m" = hgt ] && g="$data/$s.hetero.graph.safetensors"
                "$@"
            done
        done
    done
}

compare_pyg() {
    "$PY" -W ignore benches/compare_pyg.py --device "$REF_DEVICE" --backend cuda --rgnn "$RGNN" --reps "$REPS" \
        --model "$model" --graph "$g" --shape "$s ${ch}x$heads" \
        --dtypes "$dtypes" --results "$OUT/pyg.jsonl" 2>>"$LOG" | tail -n +3 | tee -a "$LOG"
}

has pyg && echo "== PyG on $REF_DEVICE vs rgnn cuda ($DTYPES)" | tee -a "$LOG"
has pyg && each_model compare_pyg

has floydnet && echo "== FloydNet (C=128, H=8) on $REF_DEVICE vs rgnn cuda ($DTYPES)" | tee -a "$LOG"
has floydnet && for n in $FLOYD_N; do
    "$SYNTH" --floydnet "$n" --channels 128 --heads 8 --batch 1 --out "$OUT/data-floyd" >>"$LOG" 2>&1
    "$PY" -W ignore benches/compare_floydnet.py --device "$REF_DEVICE" --backend cuda --rgnn "$RGNN" --reps 3 \
        --model "$OUT/data-floyd/floydnet_n$n.model.safetensors" --graph "$OUT/data-floyd/floydnet_n$n.graph.safetensors" \
        --dtypes "$dtypes" --results "$OUT/floydnet.jsonl" 2>>"$LOG" | tail -n +3 | tee -a "$LOG"
done

if has kernels; then
echo "== device peaks and per-kernel times" | tee -a "$LOG"
"$PY" benches/device_peaks.py --reps "$REPS" > "$OUT/device-peaks.json" 2>>"$LOG"; tee -a "$LOG" < "$OUT/device-peaks.json"
kernel_times() {
    for dtype in f32 bf16; do
        echo "== $s ${ch}x$heads $m $dtype" >> "$OUT/kernels.txt"
        "$RGNN" bench --backend cuda --reps "$REPS" --kernels --dtype "$dtype" --model "$model" --graph "$g" \
            --json "$OUT/kernels-last.json" >> "$OUT/kernels.txt" 2>&1 &&
            "$PY" -c 'import json, sys; r = json.load(open(sys.argv[1])); r.update(case=sys.argv[2], dtype=sys.argv[3]); print(json.dumps(r))' \
                "$OUT/kernels-last.json" "$s ${ch}x$heads $m" "$dtype" >> "$OUT/kernels.jsonl"
    done
}
each_model kernel_times
# Tensor-core pivot attention held to one or two blocks per SM (RGNN_CUDA_PIVOT_BLOCKS; two caps
# it at 128 registers): FloydNet C=128, H=8, N=PIVOT_N (512), whole pass and per kernel, in
# pivot-blocks.txt.
PIVOT_N=${PIVOT_N:-512}
"$SYNTH" --floydnet "$PIVOT_N" --channels 128 --heads 8 --batch 1 --out "$OUT/data-floyd" >>"$LOG" 2>&1
for dtype in bf16 f16 f32; do
    for blocks in 1 2; do
        echo "== floydnet_n$PIVOT_N $dtype RGNN_CUDA_PIVOT_BLOCKS=$blocks" >> "$OUT/pivot-blocks.txt"
        RGNN_CUDA_PIVOT_BLOCKS=$blocks "$RGNN" bench --backend cuda --reps "$REPS" --kernels --dtype "$dtype" \
            --model "$OUT/data-floyd/floydnet_n$PIVOT_N.model.safetensors" --graph "$OUT/data-floyd/floydnet_n$PIVOT_N.graph.safetensors" \
            > "$OUT/pivot-last.txt" 2>&1
        cat "$OUT/pivot-last.txt" >> "$OUT/pivot-blocks.txt"
        echo "floydnet n$PIVOT_N $dtype, pivot blocks/SM $blocks: $(head -1 "$OUT/pivot-last.txt")" | tee -a "$LOG"
    done
done
"$PY" benches/kernel_rates.py "$OUT/kernels.jsonl" "$OUT/device-peaks.json" > "$OUT/kernel-rates.md" 2>>"$LOG"
cat "$OUT/kernel-rates.md" | tee -a "$LOG"
echo "per-kernel times in kernels.txt, rates against the targets in kernel-rates.md" | tee -a "$LOG"
fi

results=$(ls "$OUT"/pyg.jsonl "$OUT"/floydnet.jsonl 2>/dev/null)
[ -n "$results" ] && "$PY" benches/results_table.py $results > "$OUT/table.md" && cat "$OUT/table.md"
