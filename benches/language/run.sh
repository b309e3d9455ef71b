#!/usr/bin/env bash
# Throughput of the `language` reward (verifiers/examples/language_bench.rs) against rlvr's own
# generation speed: completions/s, characters/s and tokens/s on one thread, for a Chinese and an
# English target, and how many times faster that is than generating the same text.
# Usage: bash benches/language/run.sh [RUNS] (default 5).
# The generation speed is GENERATION_TOKENS_PER_S (default 1285.9: BENCHMARKS.md, `rlvr generate`,
# small preset, batch 64, machine B, the fastest figure there), or, with MEASURE_GENERATION=1,
# measured here as benches/generate/run.sh does it (needs libtorch and the rlvr binary: small
# preset, random weights, batch 64, 128 new tokens, 2 threads, greedy).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
runs=${1:-5}
generation=${GENERATION_TOKENS_PER_S:-1285.9}
source="BENCHMARKS.md (small preset, batch 64, machine B)"
if [ "${MEASURE_GENERATION:-0}" = 1 ]; then
  bash scripts/libtorch.sh
  cargo build --release --quiet --bins
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  export OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
  target/release/rlvr init --config small --out "$work/model" --seed 0 >/dev/null
  vocab=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['vocab_size'])" "$work/model/config.json")
  python3 benches/generate/compare.py prompts --out "$work/p.jsonl" --batch 64 --length 32 --vocab "$vocab"
  target/release/rlvr generate --model "$work/model" --input "$work/p.jsonl" --max-new-tokens 128 \
    --temperature 0 --ignore-eos --warmup --timing --repeat 1 --output "$work/o.jsonl" 2>"$work/log"
  secs=$(grep '^timing' "$work/log" | sed 's/.*seconds=\([0-9.]*\).*/\1/' | head -n 1)
  generation=$(python3 -c "print(round(64 * 128 / $secs, 1))")
  source="measured now (small preset, batch 64, 128 new tokens, 2 threads)"
fi
cargo build --release --quiet -p rlvr-verifiers --example language_bench
bench() { cargo run --release --quiet -p rlvr-verifiers --example language_bench -- "$@"; }
cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -n 1)
echo "# $(date -u '+%F %H:%M UTC'), $cpu, $(nproc --all) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# generation: $generation tokens/s, $source"
for target in zh en; do
  bench --runs "$runs" --target "$target" --generation-tokens-per-s "$generation"
done
