#!/usr/bin/env bash
# A look at the model and the rollout engine without training:
#   1. the real DeepSeek-V3.2 config: architecture and parameter counts;
#   2. a randomly initialised `small` V3.2 model (8 layers, hidden 512, MoE, DSA top-256) in the
#      Hugging Face layout;
#   3. batched sampling from it with the KV cache and sparse attention, then teacher-forced scoring
#      of what it sampled (the log-probs must agree: same model code on both paths).
# Everything lands in runs/sample-and-score/.
set -euo pipefail
rlvr=${RLVR:-target/release/rlvr}
out=runs/sample-and-score
mkdir -p "$out"

echo "== rlvr inspect deepseek-v3.2"
"$rlvr" inspect deepseek-v3.2

echo
echo "== rlvr init --config small"
"$rlvr" init --config small --out "$out/model" --seed 0 --overwrite

printf '%s\n' '{"prompt_ids": [0, 17, 4242, 99, 512]}' '{"prompt_ids": [0, 7, 7, 7]}' \
  '{"prompt_ids": [0, 3000, 2999, 2998, 2997, 2996]}' '{"prompt_ids": [0, 1234]}' >"$out/prompts.jsonl"

echo
echo "== rlvr generate: 4 prompts × 2 samples, 48 new tokens, temperature 1, no truncation"
"$rlvr" generate --model "$out/model" --input "$out/prompts.jsonl" --n 2 --max-new-tokens 48 \
  --temperature 1 --seed 0 --ignore-eos --output "$out/completions.jsonl"
head -c 300 "$out/completions.jsonl"
echo " …"

echo
echo "== rlvr score: the sampled sequences, teacher-forced"
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
prompts = [json.loads(l)["prompt_ids"] for l in open(f"{out}/prompts.jsonl")]
with open(f"{out}/sequences.jsonl", "w") as f:
    for line in open(f"{out}/completions.jsonl"):
        c = json.loads(line)
        f.write(json.dumps({"tokens": prompts[c["prompt_index"]] + c["tokens"]}) + "\n")
PY
"$rlvr" score --model "$out/model" --input "$out/sequences.jsonl" --output "$out/scores.jsonl" --timing
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
prompts = [json.loads(l)["prompt_ids"] for l in open(f"{out}/prompts.jsonl")]
# At temperature 1 without truncation the sampler's log-probs are the model's own, so they must equal
# the teacher-forced ones of the same sequences (cached sparse decode vs one full sparse forward).
worst, total, n = 0.0, 0.0, 0
for c, s in zip(map(json.loads, open(f"{out}/completions.jsonl")), map(json.loads, open(f"{out}/scores.jsonl"))):
    p = len(prompts[c["prompt_index"]])
    tf = s["logprobs"][p - 1:]
    assert len(tf) == len(c["tokens"]), "one teacher-forced log-prob per sampled token"
    worst = max([worst] + [abs(a - b) for a, b in zip(tf, c["logprobs"])])
    total += sum(tf); n += len(tf)
print(f"{n} sampled tokens: max |sampled - teacher-forced| log-prob {worst:.2e}; mean {total / n:.3f}")
assert worst <= 1e-4, "sampler and scorer disagree"
PY
echo
echo "outputs in $out/"
