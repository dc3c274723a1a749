#!/usr/bin/env bash
# rgnn's backends side by side on the same files: `rgnn bench` with each backend in $BACKENDS on
# synthetic Hector-shaped graphs (RGCN, RGAT, HGT) and FloydNet pair states. Writes
# $OUT/results.jsonl (one JSON object per case and backend) and $OUT/table.md. See
# docs/BENCHMARKS.md.
#
#   benches/backends.sh                                       # cpu vs wgpu: aifb, mutag; FloydNet N = 32, 64
#   BACKENDS="cpu wgpu cuda" SHAPES="aifb mutag bgs" SCALES="0.25 0.5 1.0" benches/backends.sh
#
# Environment: BACKENDS (cpu wgpu), SHAPES (aifb mutag), SCALES (1.0), MODELS (rgcn rgat hgt),
# FLOYD_N (32 64), REPS (5), FEATURES (64), OUT (target/bench-backends), SKIP_BUILD (0).
set -u
cd "$(dirname "$0")/.."
BACKENDS=${BACKENDS:-"cpu wgpu"}
SHAPES=${SHAPES:-"aifb mutag"}
SCALES=${SCALES:-"1.0"}
MODELS=${MODELS:-"rgcn rgat hgt"}
FLOYD_N=${FLOYD_N:-"32 64"}
REPS=${REPS:-5}
FEATURES=${FEATURES:-64}
OUT=${OUT:-target/bench-backends}
SKIP_BUILD=${SKIP_BUILD:-0}
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: > "$RESULTS"
if [ "$SKIP_BUILD" != 1 ]; then
    { cargo build --release --bin rgnn -p rgnn && cargo build --release --bin rgnn-synth -p rgnn-benches; } >/dev/null 2>&1 || { echo "cargo build failed"; exit 1; }
fi
bench() { # case model graph
    for b in $BACKENDS; do
        json="$OUT/$1.$b.json"
        if target/release/rgnn bench --model "$2" --graph "$3" --backend "$b" --reps "$REPS" --json "$json" 2>"$OUT/$1.$b.err" >/dev/null; then
            python3 -c "import json,sys; r=json.load(open('$json')); r.update(case='$1'); print(json.dumps(r))" >> "$RESULTS"
        else
            echo "{\"case\": \"$1\", \"backend\": \"$b\", \"error\": $(python3 -c "import json; print(json.dumps(open('$OUT/$1.$b.err').read().strip().splitlines()[-1]))")}" >> "$RESULTS"
        fi
        echo "$1 $b done"
    done
}
for scale in $SCALES; do
    data="$OUT/data-$scale"
    for s in $SHAPES; do
        target/release/rgnn-synth --shape "$s" --scale "$scale" --features "$FEATURES" --out "$data" >/dev/null
        for m in $MODELS; do
            g="$data/$s.graph.safetensors"
            [ "$m" = hgt ] && g="$data/$s.hetero.graph.safetensors"
            bench "$s@$scale.$m" "$data/$s.$m.model.safetensors" "$g"
        done
    done
done
for n in $FLOYD_N; do
    target/release/rgnn-synth --floydnet "$n" --out "$OUT/data-floyd" >/dev/null
    bench "floydnet.n$n" "$OUT/data-floyd/floydnet_n$n.model.safetensors" "$OUT/data-floyd/floydnet_n$n.graph.safetensors"
done
python3 - "$RESULTS" "$BACKENDS" > "$OUT/table.md" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
backends = sys.argv[2].split()
cases = list(dict.fromkeys(r["case"] for r in rows))
by = {(r["case"], r["backend"]): r for r in rows}
head = "| case | " + " | ".join(f"{b} median (ms)" for b in backends) + " | " + " | ".join(f"{b} / {backends[0]}" for b in backends[1:]) + " | graph |"
print(head)
print("|" + "---|" * (head.count("|") - 1))
for c in cases:
    cells, ratios, graph = [], [], ""
    base = by.get((c, backends[0]), {}).get("median_s")
    for b in backends:
        r = by.get((c, b), {})
        graph = graph or r.get("graph", "")
        cells.append(f"{r['median_s']*1e3:.2f}" if "median_s" in r else r.get("error", "-"))
    for b in backends[1:]:
        m = by.get((c, b), {}).get("median_s")
        ratios.append(f"{m/base:.1f}x" if m and base else "-")
    print(f"| {c} | " + " | ".join(cells) + " | " + " | ".join(ratios) + f" | {graph} |")
PY
cat "$OUT/table.md"
