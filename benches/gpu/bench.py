"""One-shot check of rlvr on a GPU machine (or, with --cpu, the same steps at toy sizes on the
CPU, which the test suite runs so this script never rots). Writes results.json and results.md into
--out and prints the Markdown.

Steps: (1) `rlvr inspect` — what libtorch sees; (2) parity: `rlvr score` of the golden fixtures'
sequences on the device in f32 and bf16 against transformers' CPU log-probs stored with the
fixtures; (3) generation: `rlvr generate` vs transformers' `generate` on the same device and weights
(the `small` preset, greedy, bf16 on GPU), tokens/s at several batch sizes, with the HBM bandwidth
the decode implies (weights read once per step); (4) one training configuration: tokens/s of
`rlvr train` pretrain steps on the `small` preset and the MFU that implies; (5) a recipe end to end
(the quickstart on GPU, the smoke recipe for a few steps with --cpu).

Usage: python bench.py --rlvr target/release/rlvr --out DIR [--cpu]
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, time

import torch
from safetensors.torch import load_file

p = argparse.ArgumentParser()
p.add_argument("--rlvr", required=True)
p.add_argument("--out", required=True)
p.add_argument("--cpu", action="store_true", help="toy sizes on the CPU (a dry run)")
a = p.parse_args()
root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.makedirs(a.out, exist_ok=True)
work = tempfile.mkdtemp()
device = "cpu" if a.cpu else "cuda"
# Peak dense bf16 FLOP/s and HBM bytes/s of an H200 (NVIDIA's datasheet), for MFU and bandwidth.
PEAK_FLOPS, PEAK_BYTES = 989e12, 4.8e12
results = {"device": device, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def rlvr(*args, check=True):
    r = subprocess.run([a.rlvr, *args], capture_output=True, text=True, cwd=root)
    if check and r.returncode != 0:
        sys.exit(f"rlvr {' '.join(args)} failed:\n{r.stderr}")
    return r


# (1) what libtorch sees
inspect = rlvr("inspect", os.path.join(root, "tests/fixtures/tiny-dense")).stdout
results["inspect"] = [l for l in inspect.splitlines() if "cuda" in l.lower() or "device" in l.lower()]
if not a.cpu and not torch.cuda.is_available():
    sys.exit("no CUDA device: run with --cpu for the dry run")

# (2) parity against the transformers references of the golden fixtures
parity = []
for name in ["tiny-dense", "tiny-sparse"]:
    fx = os.path.join(root, "tests/fixtures", name)
    ref = load_file(os.path.join(fx, "reference.safetensors"))
    seqs = [ref["tokens"][b, : int(n)].tolist() for b, n in enumerate(ref["lengths"])]
    inp = os.path.join(work, f"{name}.jsonl")
    with open(inp, "w") as f:
        f.writelines(json.dumps({"tokens": s}) + "\n" for s in seqs)
    for dtype in ["f32", "bf16"]:
        out = rlvr("score", "--model", fx, "--input", inp, "--device", device, "--dtype", dtype).stdout
        got = [json.loads(l)["logprobs"] for l in out.splitlines()]
        diff = max(abs(x - float(y)) for g, b in zip(got, range(len(seqs))) for x, y in zip(g, ref["logprobs"][b]))
        parity.append({"fixture": name, "dtype": dtype, "max_abs_logprob_diff": diff})
results["parity"] = parity
bad = [r for r in parity if r["dtype"] == "f32" and r["max_abs_logprob_diff"] > 1e-4]
if bad:
    sys.exit(f"f32 parity off: {bad}")

# (3) generation against transformers' generate
from transformers import AutoModelForCausalLM

model_dir = os.path.join(work, "small")
rlvr("init", "--config", "small", "--out", model_dir, "--seed", "0")
cfg = json.load(open(os.path.join(model_dir, "config.json")))
gen_dtype = "f32" if a.cpu else "bf16"
torch_dtype = torch.float32 if a.cpu else torch.bfloat16
new = 16 if a.cpu else 128
batches = [1, 4] if a.cpu else [1, 16, 64]
weights = sum(t.numel() for t in load_file(os.path.join(model_dir, "model.safetensors")).values())
hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch_dtype).to(device).eval()
g = torch.Generator().manual_seed(0)
generation = []
for b in batches:
    prompts = torch.randint(3, cfg["vocab_size"], (b, 32), generator=g)
    inp = os.path.join(work, f"prompts{b}.jsonl")
    with open(inp, "w") as f:
        f.writelines(json.dumps({"prompt_ids": row.tolist()}) + "\n" for row in prompts)
    r = rlvr("generate", "--model", model_dir, "--input", inp, "--max-new-tokens", str(new), "--temperature", "0",
             "--ignore-eos", "--device", device, "--dtype", gen_dtype, "--mode", "dense", "--timing", "--repeat", "2",
             "--warmup", "--output", os.path.join(work, f"out{b}.jsonl"))
    secs = [float(w.split("=")[1]) for l in r.stderr.splitlines() if l.startswith("timing") for w in l.split() if w.startswith("seconds=")]
    rlvr_tps = b * new / min(secs)
    x = prompts.to(device)
    settings = dict(max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        hf.generate(input_ids=x[:1], **settings)  # warm-up
        times = []
        for _ in range(2):
            if not a.cpu:
                torch.cuda.synchronize()
            t = time.perf_counter()
            hf.generate(input_ids=x, **settings)
            if not a.cpu:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
    hf_tps = b * new / min(times)
    step_s = b / rlvr_tps  # one decode step produces b tokens
    bytes_per_step = weights * (4 if a.cpu else 2)
    generation.append({"batch": b, "rlvr_tokens_per_s": rlvr_tps, "transformers_tokens_per_s": hf_tps,
                       "ratio": rlvr_tps / hf_tps, "hbm_fraction": None if a.cpu else bytes_per_step / step_s / PEAK_BYTES})
results["generation"] = generation

# (4) training tokens/s and MFU on the small preset
batch, seq, steps = (2, 64, 3) if a.cpu else (8, 1024, 6)
recipe = os.path.join(work, "train.toml")
with open(recipe, "w") as f:
    f.write(f'''[run]
name = "gpu-train"
device = "{device}"
dtype = "{'f32' if a.cpu else 'bf16'}"

[model]
preset = "small"

[data]
source = "arithmetic"
held_out = 8

[[stages]]
kind = "pretrain"
steps = {steps}
batch_size = {batch}
seq_len = {seq}

[logging]
plots = false
console_every = 0
''')
run_dir = os.path.join(work, "train-run")
rlvr("train", recipe, "--out", run_dir)
lines = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl"))]
tps = statistics.median(l["tok_per_s"] for l in lines[1:])
experts = sum(t.numel() for n, t in load_file(os.path.join(model_dir, "model.safetensors")).items() if ".mlp.experts." in n)
active = weights - experts + experts * cfg["num_experts_per_tok"] / cfg["n_routed_experts"]
results["training"] = {"batch": batch, "seq_len": seq, "tokens_per_s": tps, "active_params": active,
                       "mfu": None if a.cpu else 6 * active * tps / PEAK_FLOPS}

# (5) a recipe end to end
run_dir = os.path.join(work, "recipe-run")
t = time.perf_counter()
if a.cpu:
    r = rlvr("train", os.path.join(root, "recipes/smoke.toml"), "--out", run_dir, "--max-steps", "3")
else:
    r = rlvr("train", os.path.join(root, "recipes/quickstart.toml"), "--out", run_dir, "--set", "run.device=cuda")
results["recipe"] = {"name": "smoke (3 steps)" if a.cpu else "quickstart", "seconds": time.perf_counter() - t,
                     "report": json.load(open(os.path.join(run_dir, "report.json"))) if not a.cpu else None}

json.dump(results, open(os.path.join(a.out, "results.json"), "w"), indent=2)
md = [f"# rlvr on {device}, {results['date']}", "", "| check | figure |", "|---|---|"]
md += [f"| inspect | {'; '.join(results['inspect'])} |"]
md += [f"| parity {r['fixture']} {r['dtype']} | max abs log-prob diff {r['max_abs_logprob_diff']:.2e} |" for r in parity]
for g in generation:
    extra = "" if g["hbm_fraction"] is None else f", {100 * g['hbm_fraction']:.1f} % of HBM bandwidth"
    md.append(f"| generate batch {g['batch']} | rlvr {g['rlvr_tokens_per_s']:.0f} tok/s, transformers {g['transformers_tokens_per_s']:.0f} tok/s ({g['ratio']:.2f}×){extra} |")
tr = results["training"]
mfu = "" if tr["mfu"] is None else f", MFU {100 * tr['mfu']:.1f} %"
md.append(f"| train small {tr['batch']}×{tr['seq_len']} | {tr['tokens_per_s']:.0f} tok/s{mfu} |")
md.append(f"| recipe {results['recipe']['name']} | {results['recipe']['seconds']:.1f} s |")
open(os.path.join(a.out, "results.md"), "w").write("\n".join(md) + "\n")
print("\n".join(md))
