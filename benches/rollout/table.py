"""The GRPO stage of arith-grpo runs, one table row per run directory given: its wall time
(from the eval_before record to the last GRPO record of metrics.jsonl), the summed per-step
seconds of generation, judging, training, weight sync and trainer waiting, the staleness, the
servers' throughput and busy share, and held-out pass@1 before and after."""

import json
import sys


def row(run):
    lines = [json.loads(l) for l in open(f"{run}/metrics.jsonl")]
    grpo = [l for l in lines if l["stage"] == "grpo"]
    before = next(l for l in lines if l["stage"] == "eval_before")
    after = next(l for l in lines if l["stage"] == "eval_after")
    total = lambda k: sum(l.get(k, 0.0) for l in grpo)
    mean = lambda k: (sum(l[k] for l in grpo if k in l) / max(1, sum(k in l for l in grpo)))
    servers = sorted({k.split("/")[0] for l in grpo for k in l if k.startswith("server") and "/" in k})
    per = "; ".join(f"{mean(s + '/tok_per_s'):.0f} tok/s, busy {mean(s + '/busy'):.2f}" for s in servers) or "-"
    return (
        f"| {run.rstrip('/').split('/')[-1]} | {grpo[-1]['time'] - before['time']:.1f} | {mean('step_time'):.3f} "
        f"| {total('gen_s'):.1f} | {total('score_s'):.1f} | {total('train_s'):.1f} | {total('sync_s'):.1f} "
        f"| {total('trainer_idle_s'):.1f} | {max(l.get('staleness_max', 0) for l in grpo)} "
        f"| {int(total('samples_discarded'))} | {per} | {before['accuracy']:.3f} → {after['accuracy']:.3f} |"
    )


print("| run | GRPO wall (s) | step (s) | generate (s) | judge (s) | train (s) | sync (s) | trainer idle (s) "
      "| max staleness | discarded | per server | pass@1 |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for run in sys.argv[1:]:
    print(row(run))
