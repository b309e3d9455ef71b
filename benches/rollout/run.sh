#!/usr/bin/env bash
# Synchronous colocated rollouts against two spawned `rlvr serve` servers generating one step
# ahead (max_staleness = 1), on the arith-grpo recipe; prints where the GRPO stage's time goes.
# Usage: bash benches/rollout/run.sh [OUT_DIR]   (about 10 minutes on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${1:-target/bench-rollout}"
rm -rf "$out/local" "$out/service"
cargo build --release --quiet
./target/release/rlvr train recipes/arith-grpo.toml --out "$out/local" > "$out.local.log" 2>&1
./target/release/rlvr train recipes/arith-grpo.toml --out "$out/service" \
  --set rollout.backend=service --set rollout.spawn=2 --set rollout.max_staleness=1 > "$out.service.log" 2>&1
python3 benches/rollout/table.py "$out/local" "$out/service"
