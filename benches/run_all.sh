#!/usr/bin/env bash
# Generate the synthetic dataset shapes and run every comparison (rgnn vs PyG, rgnn vs floydnet),
# writing a markdown table. Results: $OUT/results.jsonl (one JSON object per case), $OUT/table.md,
# $OUT/log.txt. See docs/BENCHMARKS.md.
#
#   benches/run_all.sh                                   # aifb, mutag; FloydNet N = 64, 128
#   SHAPES="aifb mutag bgs" FLOYD_N="64 128 256" REPS=5 THREADS=2 benches/run_all.sh
#
# Environment: SHAPES, MODELS (rgcn rgat hgt), FLOYD_N, REPS (PyG/RGCN/RGAT/HGT reps, default 5),
# FLOYD_REPS (default 3), THREADS (torch threads = RAYON_NUM_THREADS, default 2), SCALE (1.0),
# FEATURES (64), SEED (0), PY (a Python with torch, torch_geometric 2.8 and floydnet; default python3), OUT (target/bench), CASE_TIMEOUT
# (seconds per case, default 1200; a case that runs out is recorded as such), RGNN (the rgnn binary
# to measure; default target/release/rgnn, built here unless SKIP_BUILD=1).
set -u
cd "$(dirname "$0")/.."
SHAPES=${SHAPES:-"aifb mutag"}
MODELS=${MODELS:-"rgcn rgat hgt"}
FLOYD_N=${FLOYD_N:-"64 128"}
REPS=${REPS:-5}
FLOYD_REPS=${FLOYD_REPS:-3}
THREADS=${THREADS:-2}
SCALE=${SCALE:-1.0}
FEATURES=${FEATURES:-64}
SEED=${SEED:-0}
PY=${PY:-python3}
OUT=${OUT:-target/bench}
CASE_TIMEOUT=${CASE_TIMEOUT:-1200}
RGNN=${RGNN:-target/release/rgnn}
SKIP_BUILD=${SKIP_BUILD:-0}
DATA="$OUT/data"
RESULTS="$OUT/results.jsonl"
LOG="$OUT/log.txt"
mkdir -p "$DATA"
: > "$RESULTS"
: > "$LOG"

echo "== build" | tee -a "$LOG"
if [ "$SKIP_BUILD" != 1 ]; then
    cargo build --release --bin rgnn -p rgnn >>"$LOG" 2>&1 || { echo "cargo build rgnn failed (see $LOG)"; exit 1; }
fi
[ -x target/release/rgnn-synth ] && [ "$SKIP_BUILD" = 1 ] || cargo build --release --bin rgnn-synth -p rgnn-benches >>"$LOG" 2>&1 || { echo "cargo build rgnn-synth failed (see $LOG)"; exit 1; }

echo "== rgnn binary: $RGNN; this checkout: HEAD $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!benches' ':!docs' || echo ' with uncommitted changes outside benches/ and docs/')" | tee -a "$LOG"
echo "== load: $(uptime)" | tee -a "$LOG"
echo "== generate" | tee -a "$LOG"
args=()
for s in $SHAPES; do args+=(--shape "$s"); done
for n in $FLOYD_N; do args+=(--floydnet "$n"); done
target/release/rgnn-synth "${args[@]}" --scale "$SCALE" --features "$FEATURES" --seed "$SEED" --out "$DATA" | tee -a "$LOG"

note_failure() { # model shape status
    echo "{\"model\": \"$1\", \"shape\": \"$2\", \"failed\": \"$3\"}" >> "$RESULTS"
}

for s in $SHAPES; do
    for m in $MODELS; do
        g="$DATA/$s.graph.safetensors"
        [ "$m" = hgt ] && g="$DATA/$s.hetero.graph.safetensors"
        echo "== $m $s" | tee -a "$LOG"
        timeout "$CASE_TIMEOUT" "$PY" -W ignore benches/compare_pyg.py --model "$DATA/$s.$m.model.safetensors" \
            --graph "$g" --shape "$s" --threads "$THREADS" --reps "$REPS" --rgnn "$RGNN" --results "$RESULTS" 2>&1 | tee -a "$LOG"
        st=${PIPESTATUS[0]}
        [ "$st" -ne 0 ] && note_failure "$m" "$s" "exit status $st (124 = timeout after ${CASE_TIMEOUT}s)"
    done
done

for n in $FLOYD_N; do
    echo "== floydnet N=$n" | tee -a "$LOG"
    timeout "$CASE_TIMEOUT" "$PY" -W ignore benches/compare_floydnet.py --model "$DATA/floydnet_n$n.model.safetensors" \
        --graph "$DATA/floydnet_n$n.graph.safetensors" --threads "$THREADS" --reps "$FLOYD_REPS" --rgnn "$RGNN" \
        --results "$RESULTS" 2>&1 | tee -a "$LOG"
    st=${PIPESTATUS[0]}
    [ "$st" -ne 0 ] && note_failure "PivotalAttentionBlock" "N=$n" "exit status $st (124 = timeout after ${CASE_TIMEOUT}s)"
done

"$PY" benches/results_table.py "$RESULTS" > "$OUT/table.md"
echo "== table ($OUT/table.md)"
cat "$OUT/table.md"
