#!/usr/bin/env bash
# One-shot GPU check: inspect, parity on the device (f32, bf16) against the golden fixtures,
# generation vs transformers' generate, training tokens/s and MFU, a recipe end to end; writes
# results.json and results.md (see bench.py).
#   bash benches/gpu/run.sh [--cpu] [OUT_DIR]
# On the GPU machine (no Rust, no network) the release binaries travel with the tree: build them
# here (`cargo build --release --bins`), then there set PYTHON to a python with torch and
# transformers (default: .venv/bin/python, else /opt/torch/.venv/bin/python) and
# LD_LIBRARY_PATH to its torch/lib. `--cpu` runs the same steps at toy sizes on the CPU (the test
# suite does, so the script stays working).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
cpu=()
if [ "${1:-}" = "--cpu" ]; then
  cpu=(--cpu)
  shift
fi
out=${1:-${OUT:-$root/runs/gpu-bench}}
python=${PYTHON:-}
if [ -z "$python" ]; then
  for candidate in "$root/.venv/bin/python" /opt/torch/.venv/bin/python; do
    [ -x "$candidate" ] && python=$candidate && break
  done
fi
[ -n "$python" ] || { echo "no python with torch found: set PYTHON" >&2; exit 1; }
[ -x target/release/rlvr ] || { echo "target/release/rlvr is missing: cargo build --release --bins" >&2; exit 1; }
exec "$python" benches/gpu/bench.py --rlvr "$root/target/release/rlvr" --out "$out" "${cpu[@]}"
