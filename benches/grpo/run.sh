#!/usr/bin/env bash
# GRPO step time: rlvr's GRPO stage against TRL's GRPOTrainer (transformers `generate`, no vLLM) on
# the same weights, the same prompts and the same settings (README.md): group 8 × 32 prompts,
# ≤ 6 new tokens, temperature 1, one AdamW step per batch, clip 0.2/0.28, no KL, f32, 2 threads.
# Two models: the arith-grpo recipe's after its SFT stage, and the `small` preset (random init).
# TRL runs twice per model, with the default OpenMP wait policy and with OMP_WAIT_POLICY=PASSIVE;
# rlvr with its own (the launcher sets PASSIVE for engine commands when unset).
# Writes OUT/results.json and OUT/results.md (default OUT=runs/bench-grpo) and prints the table.
# Usage: bash benches/grpo/run.sh [--quick]
#   STEPS=n (default 30; medians over steps 2..n), WORK=dir keeps (and reuses) the models and runs,
#   --quick: a smoke run, about a minute: a 1-step-trained arith model, 3 GRPO steps, TRL with the
#   default policy only, no small preset.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
quick=0
[ "${1:-}" = --quick ] && quick=1
steps=${STEPS:-30}
sft_steps=800 # pretrain 300 + SFT 500: arith-grpo.toml up to its first eval
models="arith small"
policies="default passive"
if [ $quick = 1 ]; then steps=3 sft_steps=1 models=arith policies=default; fi
threads=2
out=${OUT:-runs/bench-grpo}
bash scripts/libtorch.sh
bash scripts/pip-pin.sh transformers 5.23.0
bash scripts/pip-pin.sh trl 1.16.0
cargo build --release --quiet --bins
py=.venv/bin/python
rlvr=target/release/rlvr
if [ -n "${WORK:-}" ]; then work=$WORK; mkdir -p "$work"; else work=$(mktemp -d); trap 'rm -rf "$work"' EXIT; fi
mkdir -p "$out"
export OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# 1. The models, each a checkpoint directory in the Hugging Face layout with the arithmetic tokenizer.
if [ ! -d "$work/arith" ]; then
  "$rlvr" train recipes/arith-grpo.toml --out "$work/sft" --max-steps "$sft_steps" >"$work/sft.log" 2>&1 ||
    { tail -20 "$work/sft.log" >&2; exit 1; }
  cp -r "$(ls -d "$work"/sft/checkpoints/step_* | tail -n 1)" "$work/arith"
fi
if [[ " $models " == *" small "* ]] && [ ! -d "$work/small" ]; then
  "$rlvr" init --config small --out "$work/small" --seed 1 >/dev/null
  cp "$work"/arith/tokenizer*.json "$work/small/"
fi
[ -f "$work/prompts.jsonl" ] || "$py" benches/grpo/trl_side.py prompts --out "$work/prompts.jsonl" --n 1024

# 2. rlvr: one GRPO stage from the checkpoint (plain GRPO: TRL has neither routing replay nor an
# off-policy mask that acts without vLLM, so both are off here).
rlvr_side() { # MODEL
  cat >"$work/rlvr-$1.toml" <<EOF
[run]
name = "bench-grpo-$1"
seed = 1
threads = $threads
dtype = "f32"

[model]
path = "$work/$1"

[data]
source = "jsonl"
train = "$work/prompts.jsonl"
chat = "never"

[[stages]]
kind = "grpo"
steps = $steps
lr = 3e-4

[rollout]
group_size = 8
prompts_per_step = 32
max_tokens = 6
temperature = 1.0

[verifier]
kind = "math"

[algorithm]
advantage = "mean"
aggregation = "sequence"
clip_low = 0.2
clip_high = 0.28
kl_coef = 0.0
keep_routing = false

[optimizer]
lr = 3e-4
schedule = "constant"
warmup_steps = 0
grad_clip = 1.0

[checkpoint]
every = 0
keep_last = 1

[logging]
plots = false
EOF
  rm -rf "$work/rlvr-$1"
  "$rlvr" train "$work/rlvr-$1.toml" --out "$work/rlvr-$1" >"$work/rlvr-$1.log" 2>&1 ||
    { tail -20 "$work/rlvr-$1.log" >&2; exit 1; }
  "$rlvr" inspect "$work/$1" --json >"$work/inspect-$1.json"
}

# 3. TRL, once per wait policy; then every reward it used, checked against `rlvr verify`.
trl_side() { # MODEL POLICY
  local run="trl-$1-$2"
  local env=(env -u OMP_WAIT_POLICY)
  [ "$2" = passive ] && env=(env OMP_WAIT_POLICY=PASSIVE)
  "${env[@]}" "$py" benches/grpo/trl_side.py trl --model "$work/$1" --prompts "$work/prompts.jsonl" \
    --out "$work/$run.json" --work "$work/$run" --steps "$steps" --threads "$threads" >"$work/$run.log" 2>&1 ||
    { tail -20 "$work/$run.log" >&2; exit 1; }
  "$py" -c 'import json, sys
for c, g, _ in json.load(open(sys.argv[1]))["rewards"]: print(json.dumps({"completion": c, "answer": g}))' \
    "$work/$run.json" >"$work/$run-verify.jsonl"
  "$rlvr" verify --verifier math --input "$work/$run-verify.jsonl" --output "$work/$run-verdicts.jsonl"
}

for m in $models; do
  rlvr_side "$m"
  for p in $policies; do trl_side "$m" "$p"; done
done
"$py" benches/grpo/report.py --work "$work" --models "$models" --policies "$policies" --out "$out" \
  --load-before "$load_before" --command "bash benches/grpo/run.sh${1:+ $1}${STEPS:+ (STEPS=$STEPS)}"
