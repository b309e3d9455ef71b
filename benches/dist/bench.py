"""Runs the GRPO steps of benches/dist/recipe.toml as 1 process × 2 threads and as 2 processes ×
1 thread (ZeRO-2 sharded optimizer, and replicated), and prints one markdown table: median step
time over steps 2..N, its generate/train split, bytes each rank put into collectives per step,
optimizer state and peak RSS per rank. Usage: python bench.py RLVR_BINARY OUT_DIR"""
import json, os, re, resource, statistics, subprocess, sys, tempfile

rlvr, out = sys.argv[1], sys.argv[2]
recipe = os.path.join(os.path.dirname(os.path.abspath(__file__)), "recipe.toml")
steps = 10
rows = []


def run(label, args, threads):
    run_dir = os.path.join(out, label.replace(" ", "_").replace("×", "x"))
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [rlvr, "train", recipe, "--out", run_dir, "--set", f"run.threads={threads}"] + args
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{label} failed:\n{p.stderr}")
    peak_child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    lines = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl"))]
    later = [l for l in lines if l["step"] >= 2]
    med = lambda k: statistics.median(l[k] for l in later)
    ranks = re.findall(r"rank (\d+)/\d+: optimizer state ([\d.]+) MiB \((\w+)\), peak RSS (\d+) MiB, ([\d.]+) MB through", p.stderr)
    if ranks:
        opt = " / ".join(r[1] for r in ranks)
        rss = " / ".join(r[3] for r in ranks)
        moved = " / ".join(f"{float(r[4]) / steps:.2f}" for r in ranks)
    else:
        opt, rss, moved = "(whole)", f"{peak_child:.0f}", "0"
    rows.append((label, med("step_time"), med("gen_s"), med("train_s"), moved, opt, rss))


run("1 process × 2 threads", [], 2)
run("2 processes × 1 thread, sharded", ["--nproc", "2"], 1)
run("2 processes × 1 thread, replicated", ["--nproc", "2", "--set", "run.shard_optimizer=false"], 1)
print("| layout | step (s) | generate (s) | train (s) | MB into collectives per step, per rank | optimizer state MiB per rank | peak RSS MiB per rank |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r[0]} | {r[1]:.3f} | {r[2]:.3f} | {r[3]:.3f} | {r[4]} | {r[5]} | {r[6]} |")
