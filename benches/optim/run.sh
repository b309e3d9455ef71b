#!/usr/bin/env bash
# One AdamW step over a preset's parameters (trainer's groups: matrices with weight decay 0.1,
# vectors without): rlvr parameter by parameter, rlvr with flat groups (what training runs), and
# torch.optim.AdamW single-tensor, foreach and fused, on the same shapes, the same threads, in
# this one run. Median of STEPS timed steps after two warm-up steps.
# Usage: bash benches/optim/run.sh [PRESET] (default small); STEPS (default 20), THREADS (default 2).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
preset=${1:-small}
steps=${STEPS:-20}
threads=${THREADS:-2}
bash scripts/libtorch.sh
cargo build --release --quiet -p rlvr-trainer --example adamw_step
# Both sides run with the heap threshold the rlvr launcher sets (256 MiB), so neither pays for
# fresh zeroed pages on every large temporary.
export OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads MALLOC_MMAP_THRESHOLD_=268435456
bin=${CARGO_TARGET_DIR:-$root/target}/release/examples/adamw_step
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
echo "# $(date -u '+%F %H:%M UTC'), $(nproc --all) cores ($cpu), preset $preset, $threads threads, f32, median of $steps steps"
"$bin" --preset "$preset" --steps "$steps" --threads "$threads" --shapes "$tmp/shapes.json" >"$tmp/rlvr.jsonl"
.venv/bin/python benches/optim/torch_side.py "$tmp/shapes.json" --steps "$steps" --threads "$threads" >"$tmp/torch.jsonl"
.venv/bin/python - "$tmp/rlvr.jsonl" "$tmp/torch.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for f in sys.argv[1:] for l in open(f) if l.strip()]
flat = next(r["step_ms"] for r in rows if r["mode"] == "flat")
print(f"tensors: {rows[0]['tensors']}, parameters: {rows[0].get('params', 0):,}")
print("| AdamW step | ms | flat rlvr's speed-up |")
print("|---|---|---|")
for r in rows:
    name = {"per_tensor": "rlvr, per parameter", "flat": "rlvr, flat groups"}.get(r["mode"], r["mode"])
    print(f"| {name} | {r['step_ms']:.2f} | {r['step_ms'] / flat:.2f}× |")
PY
