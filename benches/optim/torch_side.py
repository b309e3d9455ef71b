"""torch.optim.AdamW on the shapes `adamw_step --shapes` wrote: the same two groups (weight decay
per group), random weights and gradients, warmed up, then STEPS timed steps; one JSON line per
implementation (single-tensor, foreach, fused), each on its own copy of the parameters.

python benches/optim/torch_side.py SHAPES.json [--steps 20] [--threads 2] [--dtype f32|bf16]
"""

import argparse
import json
import statistics
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("shapes")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="f32", choices=["f32", "bf16"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    groups = json.load(open(args.shapes))
    # bf16 weights step in f32 masters on rlvr's side; torch's AdamW keeps state in the weight's
    # dtype, so the comparable torch run is f32 weights (what mixed-precision recipes step).
    dtype = torch.float32
    for impl in ["single_tensor", "foreach", "fused"]:
        torch.manual_seed(0)
        param_groups = []
        for g in groups:
            params = []
            for shape in g["shapes"]:
                p = torch.randn(shape, dtype=dtype, requires_grad=True)
                p.grad = torch.randn(shape, dtype=dtype)
                params.append(p)
            param_groups.append({"params": params, "weight_decay": g["weight_decay"]})
        kw = {"foreach": impl == "foreach", "fused": True if impl == "fused" else None}
        opt = torch.optim.AdamW(param_groups, lr=1e-4, **kw)
        for _ in range(2):
            opt.step()
        times = []
        for _ in range(args.steps):
            start = time.perf_counter()
            opt.step()
            times.append(time.perf_counter() - start)
        tensors = sum(len(g["shapes"]) for g in groups)
        print(json.dumps({"mode": f"torch {impl}", "tensors": tensors, "step_ms": statistics.median(times) * 1e3}))


if __name__ == "__main__":
    main()
