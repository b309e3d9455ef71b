#!/usr/bin/env bash
# Makes sure the W&B client the metrics sidecar drives (wandb==0.31.0, from PyPI) is in the project
# venv (.venv, made here with `python3 -m venv .venv` when absent), and prints that venv's python
# path on stdout; anything else goes to stderr. The trainer takes the path from a recipe's
# `wandb.python` or from RLVR_WANDB_PYTHON. Nothing is committed.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv"

bash "$root/scripts/pip-pin.sh" wandb 0.31.0
echo "$venv/bin/python"
