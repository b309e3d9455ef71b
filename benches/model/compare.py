"""Times transformers' DeepseekV32ForCausalLM on the same batch rlvr scored, checks agreement with
rlvr's log-probs, and prints one markdown table row per mode.

Timed: forward + log_softmax + gather of the teacher-forced log-probs (what `rlvr score` times),
under torch.inference_mode(), after one warm-up pass; the median of the timed passes is reported.
"""
import argparse
import json
import statistics
import time

import torch
import transformers
from transformers import AutoModelForCausalLM

p = argparse.ArgumentParser()
p.add_argument("--model", required=True, help="model dir for transformers (dense: index_topk >= T)")
p.add_argument("--input", required=True, help="the rlvr score input (JSONL tokens)")
p.add_argument("--rlvr-output", required=True, help="rlvr score's log-probs for the same input")
p.add_argument("--rlvr-tokens-per-s", type=float, required=True)
p.add_argument("--mode", required=True)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--runs", type=int, default=3)
a = p.parse_args()

torch.set_num_threads(a.threads)
tokens = torch.tensor([json.loads(line)["tokens"] for line in open(a.input)])  # (B, T)
model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32).eval()


def score():
    logits = model(input_ids=tokens, use_cache=False).logits  # (B, T, V)
    logp = logits[:, :-1].log_softmax(-1)
    return logp.gather(-1, tokens[:, 1:, None]).squeeze(-1)  # (B, T-1)


times = []
with torch.inference_mode():
    ours = score()  # warm-up
    for _ in range(a.runs):
        start = time.perf_counter()
        ours = score()
        times.append(time.perf_counter() - start)
rlvr = torch.tensor([json.loads(line)["logprobs"] for line in open(a.rlvr_output)])
delta = (rlvr - ours).abs()
diff = delta.max().item()
off = (delta > 1e-4).float().mean().item()
hf_tps = tokens.numel() / statistics.median(times)
attn = model.config._attn_implementation
print(
    f"| {a.mode} | {a.rlvr_tokens_per_s:,.0f} | {hf_tps:,.0f} | {a.rlvr_tokens_per_s / hf_tps:.2f} "
    f"| {diff:.1e} | {100 * off:.2f} % | {attn}, threads {torch.get_num_threads()}, transformers {transformers.__version__} |"
)
