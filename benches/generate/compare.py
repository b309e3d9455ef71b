"""Generation benchmark helpers (see README.md).

`prompts`: writes BATCH prompts of LENGTH random ids (seed 0) as `rlvr generate --input` JSONL.

`once`: the whole-process side of the comparison: loads the model and generates every prompt once,
exactly as `transformers` does but untimed and without a warm-up, and writes the ids as JSONL
(`{"tokens": [...]}` per prompt); run.sh times the process from outside.

`transformers`: times transformers' `generate` on the same prompts and prints one markdown table
row against rlvr's numbers. One padded batch (left padding, attention_mask), greedy, use_cache=True
with its default cache, exactly NEW new tokens (min_new_tokens = max_new_tokens, no EOS stop),
under torch.inference_mode(); one untimed warm-up on the first prompt alone, then the median of
RUNS timed calls. Peak RSS is this process's VmHWM at the end. Agreement: the share of generated
positions where transformers' greedy id equals rlvr's, and the share of completions equal in full.
"""
import argparse
import json
import random
import statistics
import time

p = argparse.ArgumentParser()
sub = p.add_subparsers(dest="cmd", required=True)
mk = sub.add_parser("prompts")
mk.add_argument("--out", required=True)
mk.add_argument("--batch", type=int, required=True)
mk.add_argument("--length", type=int, default=32)
mk.add_argument("--vocab", type=int, required=True)
hf = sub.add_parser("transformers")
hf.add_argument("--model", required=True)
hf.add_argument("--input", required=True, help="the prompts (rlvr generate --input JSONL)")
hf.add_argument("--rlvr-output", required=True, help="rlvr generate's completions of the same prompts")
hf.add_argument("--rlvr-seconds", required=True, help="comma-separated seconds of rlvr's timed passes")
hf.add_argument("--rlvr-rss-kb", type=int, required=True)
hf.add_argument("--new", type=int, default=128)
hf.add_argument("--threads", type=int, default=2)
hf.add_argument("--runs", type=int, default=1)
once = sub.add_parser("once")
once.add_argument("--model", required=True)
once.add_argument("--input", required=True)
once.add_argument("--out", required=True)
once.add_argument("--new", type=int, default=128)
once.add_argument("--threads", type=int, default=2)
a = p.parse_args()

if a.cmd == "prompts":
    rng = random.Random(0)
    with open(a.out, "w") as f:
        for _ in range(a.batch):
            # Ids from 2 up: 0 and 1 are the presets' BOS and EOS.
            f.write(json.dumps({"prompt_ids": [rng.randrange(2, a.vocab) for _ in range(a.length)]}) + "\n")
    raise SystemExit

import torch  # noqa: E402  (only the transformers side needs it)
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

torch.set_num_threads(a.threads)
prompts = [json.loads(line)["prompt_ids"] for line in open(a.input)]
b, width = len(prompts), max(map(len, prompts))
ids = torch.zeros(b, width, dtype=torch.long)
mask = torch.zeros(b, width, dtype=torch.long)
for i, pr in enumerate(prompts):  # left padding
    ids[i, width - len(pr):] = torch.tensor(pr)
    mask[i, width - len(pr):] = 1
model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32).eval()
settings = dict(max_new_tokens=a.new, min_new_tokens=a.new, do_sample=False, use_cache=True, pad_token_id=0)


def generate(x, m):
    return model.generate(input_ids=x, attention_mask=m, **settings)[:, x.shape[1]:]  # (B, NEW)


if a.cmd == "once":
    with torch.inference_mode():
        ours = generate(ids, mask)
    with open(a.out, "w") as f:
        for row in ours.tolist():
            f.write(json.dumps({"tokens": row}) + "\n")
    raise SystemExit

times = []
with torch.inference_mode():
    generate(ids[:1, width - len(prompts[0]):], mask[:1, width - len(prompts[0]):])  # warm-up, batch 1
    for _ in range(a.runs):
        start = time.perf_counter()
        ours = generate(ids, mask)
        times.append(time.perf_counter() - start)
assert ours.shape == (b, a.new), f"transformers generated {tuple(ours.shape)}, expected {(b, a.new)}"
rlvr = torch.tensor([json.loads(line)["tokens"] for line in open(a.rlvr_output)])
assert rlvr.shape == (b, a.new), f"rlvr generated {tuple(rlvr.shape)}, expected {(b, a.new)}"
same = rlvr == ours
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
rlvr_tps = b * a.new / statistics.median(float(s) for s in a.rlvr_seconds.split(","))
hf_tps = b * a.new / statistics.median(times)
print(
    f"| {b} | {rlvr_tps:,.1f} | {hf_tps:,.1f} | {rlvr_tps / hf_tps:.2f} | {100 * same.float().mean().item():.1f} % "
    f"| {int(same.all(1).sum())}/{b} | {a.rlvr_rss_kb / 1024:,.0f} / {hwm / 1024:,.0f} MiB |"
)
print(
    f"# transformers {transformers.__version__}, torch {torch.__version__}, {model.config._attn_implementation} "
    f"attention, threads {torch.get_num_threads()}, passes {[round(t, 2) for t in times]} s",
    file=__import__("sys").stderr,
)
