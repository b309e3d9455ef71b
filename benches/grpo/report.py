"""The GRPO benchmark's report (see README.md): per model and side, the median over steps 2..N of
the step time and its parts, the tokens generated per step, optimizer steps and parameter counts;
checks that both sides did comparable work and that TRL's rewards equal `rlvr verify`'s. Writes
OUT/results.json and OUT/results.md and prints the Markdown with the machine, date and load.
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess

p = argparse.ArgumentParser()
p.add_argument("--work", required=True)
p.add_argument("--models", required=True, help="space-separated: arith small")
p.add_argument("--policies", required=True, help="space-separated TRL wait policies: default passive")
p.add_argument("--out", required=True)
p.add_argument("--load-before", required=True)
p.add_argument("--command", required=True)
a = p.parse_args()
PARTS = ["step_time", "gen_s", "score_s", "update_s", "sync_s", "other_s", "cycle_s"]


def median(steps, key):
    """The median of `key` over steps 2..N (all steps when there is one)."""
    values = [s[key] for s in steps[1:] or steps if s.get(key) is not None]
    return statistics.median(values) if values else None


def rlvr_side(model):
    path = os.path.join(a.work, f"rlvr-{model}", "metrics.jsonl")
    records = [json.loads(line) for line in open(path)]
    grpo = [r for r in records if r["stage"] == "grpo"]
    if not grpo:
        raise SystemExit(f"{path}: no GRPO records")
    steps = []
    for i, r in enumerate(grpo):
        steps.append({
            "step_time": r["step_time"], "gen_s": r["gen_s"], "score_s": r["score_s"], "update_s": r["train_s"],
            "sync_s": r["sync_s"],
            "other_s": r["step_time"] - r["gen_s"] - r["score_s"] - r["train_s"] - r["sync_s"],
            "cycle_s": r["time"] - grpo[i - 1]["time"] if i else None,
            # completion_len is the mean over every judged completion, EOS included
            "tokens": round(r["completion_len"] * 256),
            "optimizer_steps": r["updates"],
        })
    inspect = json.load(open(os.path.join(a.work, f"inspect-{model}.json")))
    return {"steps": steps, "parameters": inspect, "settings": "OpenMP as the launcher sets it (OMP_WAIT_POLICY=PASSIVE, GOMP_SPINCOUNT=30000)"}


def trl_side(model, policy):
    run = json.load(open(os.path.join(a.work, f"trl-{model}-{policy}.json")))
    for s in run["steps"]:
        s["sync_s"] = 0.0  # the trainer generates with the model it trains: nothing to copy
    verdicts = [json.loads(line) for line in open(os.path.join(a.work, f"trl-{model}-{policy}-verdicts.jsonl"))]
    rewards = [r for _, _, r in run["rewards"]]
    agree = sum(v["reward"] == r for v, r in zip(verdicts, rewards))
    if len(verdicts) != len(rewards) or agree != len(rewards):
        raise SystemExit(f"trl-{model}-{policy}: the Python reward agrees with rlvr verify on {agree} of "
                         f"{len(rewards)} completions")
    run["reward_agreement"] = f"{agree}/{len(rewards)}"
    run["mean_reward"] = sum(rewards) / max(len(rewards), 1)
    return run


def summary(run):
    steps = run["steps"]
    return {
        **{k: median(steps, k) for k in PARTS},
        "tokens_per_step": median(steps, "tokens"),
        "steps": len(steps),
        "optimizer_steps": sum(s.get("optimizer_steps", 0) for s in steps),
    }


def fmt(x):
    return "—" if x is None else f"{x:.3f}"


results = {"command": a.command, "models": {}}
rows = []
for model in a.models.split():
    rl = rlvr_side(model)
    sides = {"rlvr": rl} | {f"trl-{p}": trl_side(model, p) for p in a.policies.split()}
    sums = {name: summary(run) for name, run in sides.items()}
    rl_params = rl["parameters"]
    trl_run = next(run for name, run in sides.items() if name != "rlvr")
    trl_params = trl_run["checkpoint_tensors"]
    rl_total = rl_params["params_total"]
    if rl_total != trl_params:
        raise SystemExit(f"{model}: rlvr counts {rl_total} parameters, transformers holds {trl_params}")
    for name, s in sums.items():
        if s["optimizer_steps"] != s["steps"]:
            raise SystemExit(f"{model} {name}: {s['optimizer_steps']} optimizer steps in {s['steps']} steps")
    results["models"][model] = {"parameters": {
        "rlvr inspect params_total": rl_total, "transformers state_dict": trl_params,
        "transformers parameters": trl_run["parameters"], "transformers trainable": trl_run["trainable_parameters"]},
                                "sides": {n: {"median": sums[n], **{k: v for k, v in r.items() if k != "rewards"}}
                                          for n, r in sides.items()}}
    for name, s in sums.items():
        base = sums["rlvr"]["step_time"]
        ratio = "1" if name == "rlvr" else f"{s['step_time'] / base:.2f}"
        extra = sides[name].get("reward_agreement")
        rows.append(f"| {model} | {name} | {fmt(s['step_time'])} | {fmt(s['gen_s'])} | {fmt(s['score_s'])} "
                    f"| {fmt(s['update_s'])} | {fmt(s['sync_s'])} | {fmt(s['other_s'])} | {fmt(s['cycle_s'])} "
                    f"| {s['tokens_per_step']:.0f} | {s['optimizer_steps']}/{s['steps']} | {ratio} "
                    f"| {extra or '—'} |")

cpu = next((line.split(":", 1)[1].strip() for line in subprocess.run(
    ["lscpu"], capture_output=True, text=True).stdout.splitlines() if line.startswith("Model name")), platform.processor())
machine = {"cpu": cpu, "cores": os.cpu_count(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
    timespec="minutes"), "load_before": a.load_before, "load_after": " ".join(open("/proc/loadavg").read().split()[:3])}
results["machine"] = machine
table = [
    f"{machine['cpu']}, {machine['cores']} cores; {machine['date']}; load average {machine['load_before']} before, "
    f"{machine['load_after']} after; `{a.command}`",
    "",
    "Seconds, median of steps 2–N. step = the step's own timer (rlvr `step_time`; TRL step-begin to "
    "step-end callbacks); cycle = step end to step end (logging and data loading included); "
    "tokens = generated tokens per step, EOS included; TRL / rlvr = TRL's step over rlvr's.",
    "",
    "| model | side | step | generation | scoring | update | sync | other | cycle | tokens | optimizer steps "
    "| TRL / rlvr | TRL rewards = rlvr verify |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    *rows,
]
for model, r in results["models"].items():
    n = r["parameters"]
    table.append(f"\n{model}: {n['rlvr inspect params_total']:,} parameters and router biases in rlvr inspect, "
                 f"{n['transformers state_dict']:,} in transformers' state_dict ({n['transformers trainable']:,} "
                 "trainable parameters)")
text = "\n".join(table) + "\n"
os.makedirs(a.out, exist_ok=True)
with open(os.path.join(a.out, "results.json"), "w") as f:
    json.dump(results, f, indent=1)
with open(os.path.join(a.out, "results.md"), "w") as f:
    f.write(text)
print(text)
