#!/usr/bin/env bash
# Peak memory of one training step with and without activation checkpointing
# (`run.activation_checkpointing`), on CPU: the DSA benchmark's model (`small` preset cut to 2
# layers, random init, f32, batch 1), dense and sparse attention, the LM loss and the DSA sparse
# stage's loss (LM + indexer KL). Each cell is its own process (trainer/examples/train_memory.rs)
# under an address-space cap, so a cell that would not fit stops with an allocation error instead
# of pressing on the machine; it is reported as over the cap.
# Usage: bash benches/memory/run.sh [LENGTHS] (default 4096,8192,16000); CAP_GIB (default 11) caps
# each cell's virtual memory, THREADS (default 2) its threads; CELLS picks the attention:loss
# pairs (default "dense:lm sparse:lm sparse:sparse_stage"); SKIP lists cells not to run, as
# mode:checkpointing:objective@length (e.g. "dense:none:lm@16000"), for those known not to fit.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
lengths=${1:-4096,8192,16000}
cap=${CAP_GIB:-11}
threads=${THREADS:-2}
skip=${SKIP:-}
cells=${CELLS:-dense:lm sparse:lm sparse:sparse_stage}
bash scripts/libtorch.sh
cargo build --release --quiet -p rlvr-trainer --example train_memory
export OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads
bin=${CARGO_TARGET_DIR:-$root/target}/release/examples/train_memory
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
mem=$(awk '/^MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)
echo "# $(date -u '+%F %H:%M UTC'), $(nproc --all) cores ($cpu), $mem, cap $cap GiB of address space per cell"
echo "| L | attention | loss | checkpointing | peak RSS GiB | step s | loss value | grad norm |"
echo "|---|---|---|---|---|---|---|---|"
for l in ${lengths//,/ }; do
  for cell in $cells; do
    mode=${cell%%:*}
    objective=${cell#*:}
    for ckpt in none layer; do
      if [[ " $skip " == *" $mode:$ckpt:$objective@$l "* ]]; then
        echo "| $l | $mode | $objective | $ckpt | skipped (over the cap by the DSA benchmark's estimate) | | | |"
        continue
      fi
      line=$( (ulimit -v $((cap * 1024 * 1024)); "$bin" --length "$l" --mode "$mode" --checkpointing "$ckpt" \
        --objective "$objective" --threads "$threads") 2>/dev/null) || line=""
      if [[ -z $line ]]; then
        echo "| $l | $mode | $objective | $ckpt | over the $cap GiB cap (allocation failed) | | | |"
        continue
      fi
      rss=$(sed -E 's/.*peak RSS ([0-9.]+) GiB.*/\1/' <<<"$line")
      secs=$(sed -E 's/.*step ([0-9.]+) s.*/\1/' <<<"$line")
      value=$(sed -E 's/.*, loss ([0-9.]+),.*/\1/' <<<"$line")
      norm=$(sed -E 's/.*grad norm ([0-9.]+).*/\1/' <<<"$line")
      echo "| $l | $mode | $objective | $ckpt | $rss | $secs | $value | $norm |"
    done
  done
done
echo "# finished $(date -u '+%H:%M UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
