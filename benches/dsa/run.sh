#!/usr/bin/env bash
# DSA dense vs sparse attention as the sequence grows, on CPU: one training step (forward with the
# LM loss + backward, batch 1) and single-token decode after an L-token prefill, on the `small`
# preset cut to 2 layers, random init (seed 0), f32, 2 threads. Prints machine info, then the
# markdown table and the crossover lengths of trainer/examples/dsa_crossover.rs (per-cell timings
# with peak RSS beside the memory estimate go to stderr).
# Usage: bash benches/dsa/run.sh [FLAGS...] (appended to the defaults below, so they override them:
# e.g. --lengths 1024,2048 --repeat 1); THREADS=n sets the thread count (default 2).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
threads=${THREADS:-2}
bash scripts/libtorch.sh
cargo build --release --quiet -p rlvr-trainer --example dsa_crossover
export OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
mem=$(awk '/^MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)
echo "# $(date -u '+%F %H:%M UTC'), $(nproc --all) cores ($cpu), $mem, load average $(cut -d' ' -f1-3 /proc/loadavg)"
target_dir=${CARGO_TARGET_DIR:-$root/target}
"$target_dir/release/examples/dsa_crossover" --preset small --layers 2 --lengths 1024,2048,4096,8192,16000 \
  --repeat 3 --steps 16 --threads "$threads" --mode both --seed 0 --mem-gib 20 "$@"
echo "# finished $(date -u '+%H:%M UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
