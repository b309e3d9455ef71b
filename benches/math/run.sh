#!/usr/bin/env bash
# Math verifier vs PyPI math-verify on benches/math/corpus.jsonl: agreement and throughput.
# Both sides are timed over scoring only (our `rlvr verify` reports its scoring time; compare.py
# times math-verify's loop), so interpreter and library start-up are outside both figures.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
bash scripts/libtorch.sh
cargo build --release --quiet --bin rlvr
bash scripts/pip-pin.sh math-verify 0.9.0
out=$(mktemp)
summary=$(target/release/rlvr verify --verifier math --input benches/math/corpus.jsonl --output "$out" 2>&1 >/dev/null | tail -1)
echo "$summary" >&2
secs=$(sed -n 's/.*scored in \([0-9.]*\) s.*/\1/p' <<<"$summary")
.venv/bin/python benches/math/compare.py --ours "$out" --ours-seconds "$secs" "$@"
rm -f "$out"
