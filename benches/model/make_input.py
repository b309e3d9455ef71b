"""Writes the benchmark's token batch as rlvr score input: B sequences of T ids, seeded."""
import argparse
import json

import torch

p = argparse.ArgumentParser()
p.add_argument("--out", required=True)
p.add_argument("--batch", type=int, default=8)
p.add_argument("--length", type=int, default=512)
p.add_argument("--vocab", type=int, required=True)
p.add_argument("--seed", type=int, default=0)
a = p.parse_args()
g = torch.Generator().manual_seed(a.seed)
ids = torch.randint(2, a.vocab, (a.batch, a.length), generator=g)
with open(a.out, "w") as f:
    for row in ids.tolist():
        f.write(json.dumps({"tokens": row}) + "\n")
