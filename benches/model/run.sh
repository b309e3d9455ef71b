#!/usr/bin/env bash
# Teacher-forced scoring throughput: `rlvr score` vs transformers' forward on the same weights
# (presets/small, random init, seed 0), the same batch (8 × 512 ids), f32, CPU, 2 threads each.
# Modes: dense (rlvr --mode dense; transformers on a config copy with index_topk = 512 ≥ T, which is
# exactly dense attention) and sparse (index_topk 256 < 512: DSA selects per query).
# Usage: bash benches/model/run.sh [RUNS] (timed passes after one warm-up; default 3)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
runs=${1:-3}
threads=2
bash scripts/libtorch.sh
bash scripts/pip-pin.sh transformers 5.23.0
cargo build --release --quiet --bins
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads
target/release/rlvr init --config small --out "$work/sparse" --seed 0 >/dev/null
mkdir "$work/dense"
for f in "$work"/sparse/*; do ln -s "$f" "$work/dense/"; done
rm "$work/dense/config.json"
.venv/bin/python - "$work" <<'PY'
import json, sys
cfg = json.load(open(f"{sys.argv[1]}/sparse/config.json"))
cfg["index_topk"] = 512
json.dump(cfg, open(f"{sys.argv[1]}/dense/config.json", "w"), indent=2)
PY
vocab=$(.venv/bin/python -c "import json,sys; print(json.load(open(sys.argv[1]))['vocab_size'])" "$work/sparse/config.json")
.venv/bin/python benches/model/make_input.py --out "$work/seqs.jsonl" --vocab "$vocab"
echo "| mode | rlvr tokens/s | transformers tokens/s | rlvr / transformers | max abs Δ log-prob | positions with Δ > 1e-4 | transformers setup |"
echo "|---|---|---|---|---|---|---|"
for mode in dense sparse; do
  log=$(target/release/rlvr score --model "$work/sparse" --input "$work/seqs.jsonl" --mode "$mode" \
    --batch-size 8 --timing --repeat $((runs + 1)) --output "$work/$mode.jsonl" 2>&1 >/dev/null)
  echo "$log" | sed 's/^/# rlvr /' >&2
  grep -q "threads=$threads" <<<"$log" || { echo "rlvr did not run on $threads threads: $log" >&2; exit 1; }
  tps=$(grep '^timing' <<<"$log" | tail -n +2 | sed 's/.*seconds=\([0-9.]*\).*/\1/' | sort -g |
    awk -v n="$(grep -c '^timing' <<<"$log")" '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; print 8*512/m}')
  .venv/bin/python benches/model/compare.py --model "$work/$mode" --input "$work/seqs.jsonl" \
    --rlvr-output "$work/$mode.jsonl" --rlvr-tokens-per-s "$tps" --mode "$mode" --threads $threads --runs "$runs"
done
