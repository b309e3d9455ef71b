#!/usr/bin/env bash
# Generation throughput: `rlvr generate` (the continuous-batching engine) vs transformers'
# `generate` on the same weights (presets/small, random init, seed 0), the same prompts (32 random
# ids each, seed 0), f32, CPU, 2 threads each, greedy, exactly 128 new tokens per prompt, at batch
# 1, 16 and 64. Prints a markdown table: tokens/s (median of RUNS timed passes after one batch-1
# warm-up), the ratio, greedy-token agreement and each process's peak RSS.
# Each side runs with its own OpenMP setting: rlvr with what its launcher sets (PASSIVE with a short
# spin, GOMP_SPINCOUNT=30000), transformers with libgomp's default wait policy, or with
# HF_WAIT_POLICY=PASSIVE (run the script once each way to report both).
# Usage: bash benches/generate/run.sh [RUNS] (default 1); THREADS=n, BATCHES="1 16 64" and
# CONFIG=small|4layer (4layer: the small preset with 4 layers, hidden 256, 8 experts top-2, vocab
# 2048) override. WHOLE=B also times both sides as whole processes at batch B (start-up, loading and
# one generation of the same prompts, median of 3 runs each after a warm-up; rlvr through the
# launcher as a user runs it).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
runs=${1:-1}
threads=${THREADS:-2}
batches=${BATCHES:-1 16 64}
config=${CONFIG:-small}
new=128
prompt_len=32
bash scripts/libtorch.sh
bash scripts/pip-pin.sh transformers 5.23.0
cargo build --release --quiet --bins
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads
unset OMP_WAIT_POLICY GOMP_SPINCOUNT
hf_env=(env)
[ -n "${HF_WAIT_POLICY:-}" ] && hf_env=(env "OMP_WAIT_POLICY=$HF_WAIT_POLICY")
case "$config" in
  small) target/release/rlvr init --config small --out "$work/model" --seed 0 >/dev/null ;;
  4layer)
    target/release/rlvr init --config small --out "$work/small" --seed 0 >/dev/null
    .venv/bin/python - "$work/small/config.json" "$work/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c.update(num_hidden_layers=4, hidden_size=256, n_routed_experts=8, num_experts_per_tok=2,
         vocab_size=2048, n_group=1, topk_group=1)
json.dump(c, open(sys.argv[2], "w"))
PY
    target/release/rlvr init --config "$work/config.json" --out "$work/model" --seed 0 >/dev/null ;;
  *) echo "CONFIG=$config: expected small or 4layer" >&2; exit 2 ;;
esac
vocab=$(.venv/bin/python -c "import json,sys; print(json.load(open(sys.argv[1]))['vocab_size'])" "$work/model/config.json")
echo "# $(date -u +%F), $(nproc --all) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), threads $threads, config $config, transformers OMP_WAIT_POLICY=${HF_WAIT_POLICY:-default}" >&2
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
  "${hf_env[@]}" .venv/bin/python benches/generate/compare.py transformers --model "$work/model" \
    --input "$work/p$b.jsonl" --rlvr-output "$work/o$b.jsonl" --rlvr-seconds "${secs%,}" \
    --rlvr-rss-kb "$(tail -n 1 "$work/rss$b")" --new "$new" --threads "$threads" --runs "$runs"
done

if [ -n "${WHOLE:-}" ]; then
  b=$WHOLE
  .venv/bin/python benches/generate/compare.py prompts --out "$work/w.jsonl" --batch "$b" \
    --length "$prompt_len" --vocab "$vocab"
  # Seconds of one whole process, median of 3 after a warm-up.
  whole() {
    local t=()
    for i in 0 1 2 3; do
      /usr/bin/time -f "%e" -o "$work/t" "$@" >/dev/null 2>"$work/wlog" || { cat "$work/wlog" >&2; exit 1; }
      [ "$i" -gt 0 ] && t+=("$(cat "$work/t")")
    done
    printf '%s\n' "${t[@]}" | sort -n | sed -n 2p
  }
  r=$(whole target/release/rlvr generate --model "$work/model" --input "$work/w.jsonl" \
    --max-new-tokens "$new" --temperature 0 --ignore-eos --output "$work/wo.jsonl")
  h=$(whole "${hf_env[@]}" .venv/bin/python benches/generate/compare.py once --model "$work/model" \
    --input "$work/w.jsonl" --out "$work/wh.jsonl" --new "$new" --threads "$threads")
  same=$(.venv/bin/python -c "import json,sys; a=[json.loads(l)['tokens'] for l in open(sys.argv[1])]; b=[json.loads(l)['tokens'] for l in open(sys.argv[2])]; print(sum(x==y for x,y in zip(a,b)))" "$work/wo.jsonl" "$work/wh.jsonl")
  echo
  echo "| whole process, batch $b | rlvr s | transformers s | transformers / rlvr | identical completions |"
  echo "|---|---|---|---|---|"
  echo "| $config | $r | $h | $(.venv/bin/python -c "print(f'{$h / $r:.2f}')") | $same/$b |"
fi
