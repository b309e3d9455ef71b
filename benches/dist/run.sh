#!/usr/bin/env bash
# Data parallel on one machine: the same GRPO steps (benches/dist/recipe.toml, 10 steps, median of
# steps 2–10) as 1 process × 2 threads and as 2 processes × 1 thread over c10d/Gloo on 127.0.0.1,
# with the optimizer state sharded (ZeRO-2) and replicated. Prints machine info and a markdown table
# (see bench.py). Usage: bash benches/dist/run.sh
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
bash scripts/libtorch.sh
cargo build --release --quiet --bins
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
mem=$(awk '/^MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)
echo "# $(date -u '+%F %H:%M UTC'), $(nproc --all) cores ($cpu), $mem, load average $(cut -d' ' -f1-3 /proc/loadavg)"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
.venv/bin/python benches/dist/bench.py "$root/target/release/rlvr" "$out"
echo "# finished $(date -u '+%H:%M UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
