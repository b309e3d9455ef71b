#!/usr/bin/env bash
# Generation throughput: `rlvr generate` (the continuous-batching engine) vs transformers'
# `generate` on the same weights (presets/small, random init, seed 0), the same prompts (32 random
# ids each, seed 0), f32, CPU, 2 threads each, greedy, exactly 128 new tokens per prompt, at batch
# 1, 16 and 64. Prints a markdown table: tokens/s (median of RUNS timed passes after one batch-1
# warm-up), the ratio, greedy-token agreement and each process's peak RSS.
# Both sides run with OMP_WAIT_POLICY=PASSIVE (the policy `rlvr generate` sets for itself when the
# variable is unset; transformers is faster with it too); set OMP_WAIT_POLICY to compare another.
# Usage: bash benches/generate/run.sh [RUNS] (default 1); THREADS=n and BATCHES="1 16 64" override.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
runs=${1:-1}
threads=${THREADS:-2}
batches=${BATCHES:-1 16 64}
new=128
prompt_len=32
bash scripts/libtorch.sh
bash scripts/pip-pin.sh transformers 5.23.0
cargo build --release --quiet --bins
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
target/release/rlvr init --config small --out "$work/model" --seed 0 >/dev/null
vocab=$(.venv/bin/python -c "import json,sys; print(json.load(open(sys.argv[1]))['vocab_size'])" "$work/model/config.json")
echo "# $(date -u +%F), $(nproc --all) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), threads $threads, OMP_WAIT_POLICY=$OMP_WAIT_POLICY" >&2
echo "| batch | rlvr tokens/s | transformers tokens/s | rlvr / transformers | same greedy tokens | identical completions | peak RSS rlvr / transformers |"
echo "|---|---|---|---|---|---|---|"
for b in $batches; do
  .venv/bin/python benches/generate/compare.py prompts --out "$work/p$b.jsonl" --batch "$b" \
    --length "$prompt_len" --vocab "$vocab"
  /usr/bin/time -f "%M" -o "$work/rss$b" target/release/rlvr generate --model "$work/model" \
    --input "$work/p$b.jsonl" --max-new-tokens "$new" --temperature 0 --ignore-eos \
    --warmup --timing --repeat "$runs" --output "$work/o$b.jsonl" 2>"$work/log$b"
  sed 's/^/# rlvr /' "$work/log$b" >&2
  grep -q "threads=$threads" "$work/log$b" || { echo "rlvr did not run on $threads threads" >&2; exit 1; }
  secs=$(grep '^timing' "$work/log$b" | sed 's/.*seconds=\([0-9.]*\).*/\1/' | tr '\n' ',')
  .venv/bin/python benches/generate/compare.py transformers --model "$work/model" \
    --input "$work/p$b.jsonl" --rlvr-output "$work/o$b.jsonl" --rlvr-seconds "${secs%,}" \
    --rlvr-rss-kb "$(tail -n 1 "$work/rss$b")" --new "$new" --threads "$threads" --runs "$runs"
done
