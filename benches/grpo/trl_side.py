"""The TRL side of the GRPO benchmark (see README.md), and the shared prompts.

`prompts`: writes N arithmetic problems `{"prompt": "37+45=", "answer": "82"}` drawn as rlvr's
`arithmetic` source draws them for recipes/arith-grpo.toml (two operands, each of 1 or 2 digits with
equal odds, then uniform among the numbers of that width, 1-digit ones including 0; `+` or `-`
with equal odds). Both sides train on this one file.

`trl`: one GRPO run of TRL's `GRPOTrainer` (transformers `generate`, no vLLM) on an rlvr checkpoint
with the benchmark's settings, timing each optimizer step: generation (`_generate`: tokenising the
prompts, `generate`, decoding), scoring (`_calculate_rewards`: the reward function), the rest of
`_generate_and_score_completions` (padding, advantages, logging), and the update (everything else
between the step's begin and end callbacks: the policy forward, the loss, backward, clipping and
AdamW). Writes one JSON with the per-step figures, the tokens generated per step, the parameter
counts and every (completion, answer, reward) for the cross-check against `rlvr verify`.

The reward is rlvr's `math` verifier as it reads these completions: the characters of the
arithmetic tokenizer hold no `\\boxed`, `####`, answer phrase or `$`, so only its last-number
fallback applies, ported below (`last_number`); the benchmark checks every reward TRL saw against
`rlvr verify --verifier math` on the same completions.
"""
import argparse
import json
import random
import re
import statistics
import sys
import time
from fractions import Fraction

# `verifiers/src/math/extract.rs`: NUMBER, THREE_DIGITS and the characters trimmed around a token.
NUMBER = re.compile(r"^[-+−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?$|^[-+−]?\.\d+$")
THREE_DIGITS = re.compile(r"^\d{3}$")
TRAILING = ".,;:!?)\"'"
EXPRESSION = set("\\^_{}[]=+*/<>|(,")


def tokens(text):
    """Whitespace-separated words with their offsets; `1 000` joins into one (extract.rs `tokens`)."""
    out = []
    for m in re.finditer(r"\S+", text):
        word, start = m.group(), m.start()
        trimmed = word.rstrip(TRAILING)
        if THREE_DIGITS.match(trimmed) and out:
            prev, p = out[-1]
            gap = text[p + len(prev):start]
            if set(gap) <= {" "} and len(prev) <= 3 and prev.isdigit():
                out[-1] = (text[p:m.end()], p)
                continue
        out.append((word, start))
    return out


def clean_number(token):
    """The number a token is, trimmed of brackets, quotes and a full stop (extract.rs `clean_number`,
    less the letters, `$` and `%` the arithmetic tokenizer cannot produce)."""
    t = token.lstrip("(\"'*").rstrip(TRAILING + "*%$")
    if NUMBER.match(t):
        return t.replace("−", "-")
    joined = t.replace(" ", "")
    return joined if " " in t and NUMBER.match(joined) else None


def last_number(text):
    """The last standalone number of `text`, or None (extract.rs `last_clean_number`)."""
    for token, _ in reversed(tokens(text)):
        if not any(c.isdigit() for c in token):
            continue
        number = clean_number(token)
        if number is not None:
            return number
        if set(token) & EXPRESSION or token.lstrip("($").startswith("-"):
            return None
    return None


def value(number):
    """A matched NUMBER as an exact fraction."""
    text = number.replace(",", "")
    if "/" in text:
        num, den = text.split("/")
        return Fraction(Fraction(num), Fraction(den)) if Fraction(den) != 0 else None
    return Fraction(text)


def math_reward(completion, answer):
    """1.0 when the completion's answer equals the integer `answer` (relative tolerance 1e-6, as the
    verifier's default), else 0.0."""
    found = last_number(completion)
    if found is None:
        return 0.0
    got, gold = value(found), Fraction(int(answer))
    if got is None:
        return 0.0
    return 1.0 if abs(got - gold) <= Fraction(1, 10**6) * max(abs(got), abs(gold)) else 0.0


def write_prompts(a):
    rng = random.Random(a.seed)
    with open(a.out, "w") as f:
        for _ in range(a.n):
            x, y = (rng.randrange(0, 10) if rng.random() < 0.5 else rng.randrange(10, 100) for _ in range(2))
            op = rng.choice("+-")
            f.write(json.dumps({"prompt": f"{x}{op}{y}=", "answer": str(x + y if op == "+" else x - y)}) + "\n")


def run_trl(a):
    import torch
    import transformers
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rows = [json.loads(line) for line in open(a.prompts)]
    data = Dataset.from_list(rows)
    tok = AutoTokenizer.from_pretrained(a.model)
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
    seen = []  # (completion, answer, reward) of every completion

    def reward(completions, answer, **_):
        out = [math_reward(c, g) for c, g in zip(completions, answer)]
        seen.extend(zip(completions, answer, out))
        return out

    steps = []  # one dict a step

    class Timed(GRPOTrainer):
        """GRPOTrainer with its generation, scoring and rollout preparation timed."""

        def _generate(self, prompts):
            start = time.perf_counter()
            out = super()._generate(prompts)
            steps[-1]["gen_s"] += time.perf_counter() - start
            completion_ids = out[1]
            steps[-1]["tokens"] += sum(len(c) for c in completion_ids)
            steps[-1]["completions"] += len(completion_ids)
            steps[-1]["longest"] = max([steps[-1]["longest"], *map(len, completion_ids)])
            return out

        def _calculate_rewards(self, *args, **kwargs):
            start = time.perf_counter()
            out = super()._calculate_rewards(*args, **kwargs)
            steps[-1]["score_s"] += time.perf_counter() - start
            return out

        def _generate_and_score_completions(self, inputs):
            start = time.perf_counter()
            out = super()._generate_and_score_completions(inputs)
            steps[-1]["rollout_s"] += time.perf_counter() - start
            steps[-1]["zero_advantage"] = bool((out["advantages"] == 0).all())
            return out

    class Clock(TrainerCallback):
        """Opens a step's record at its begin callback, closes it at its end callback."""

        def on_step_begin(self, args, state, control, **kw):
            steps.append(dict(gen_s=0.0, score_s=0.0, rollout_s=0.0, tokens=0, completions=0, longest=0,
                              start=time.perf_counter()))

        def on_optimizer_step(self, args, state, control, **kw):
            steps[-1]["optimizer_steps"] = steps[-1].get("optimizer_steps", 0) + 1

        def on_step_end(self, args, state, control, **kw):
            s = steps[-1]
            s["end"] = time.perf_counter()
            s["step_time"] = s["end"] - s.pop("start")
            s["update_s"] = s["step_time"] - s["rollout_s"]
            s["other_s"] = s["rollout_s"] - s["gen_s"] - s["score_s"]

    config = GRPOConfig(
        output_dir=a.work,
        max_steps=a.steps,
        per_device_train_batch_size=a.prompts_per_step * a.group,  # one optimizer step per generation batch
        gradient_accumulation_steps=1,
        num_generations=a.group,
        max_completion_length=a.max_tokens,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        learning_rate=a.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_epsilon=1e-8,
        max_grad_norm=1.0,
        beta=0.0,
        epsilon=0.2,
        epsilon_high=0.28,
        loss_type="grpo",
        scale_rewards="none",
        num_iterations=1,
        use_vllm=False,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        use_cpu=True,
        seed=a.seed,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = Timed(model=model, reward_funcs=reward, args=config, train_dataset=data, processing_class=tok,
                    callbacks=[Clock()])
    trainer.train()
    done = [s for s in steps if "step_time" in s]
    for prev, s in zip(done, done[1:]):
        s["cycle_s"] = s["end"] - prev["end"]
    for s in done:
        s.pop("end")
    total = sum(p.numel() for p in model.parameters())
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # what the checkpoint holds besides the MTP layer transformers leaves out: the parameters and
    # the routers' e_score_correction_bias buffers (rlvr inspect's params_total counts the same)
    stored = sum(t.numel() for t in model.state_dict().values())
    with open(a.out, "w") as f:
        json.dump({
            "versions": {"trl": trl.__version__, "transformers": transformers.__version__, "torch": torch.__version__},
            "threads": torch.get_num_threads(),
            "attention": model.config._attn_implementation,
            "parameters": total,
            "trainable_parameters": trained,
            "checkpoint_tensors": stored,
            "steps": done,
            "rewards": seen,
        }, f)
    print(f"trl: {len(done)} steps, median step {statistics.median(s['step_time'] for s in done[1:] or done):.3f} s, "
          f"{total:,} parameters, threads {torch.get_num_threads()}", file=sys.stderr)


p = argparse.ArgumentParser()
sub = p.add_subparsers(dest="cmd", required=True)
mk = sub.add_parser("prompts")
mk.add_argument("--out", required=True)
mk.add_argument("--n", type=int, default=1024)
mk.add_argument("--seed", type=int, default=0)
tr = sub.add_parser("trl")
tr.add_argument("--model", required=True, help="an rlvr checkpoint directory (Hugging Face layout)")
tr.add_argument("--prompts", required=True, help="the `prompts` file")
tr.add_argument("--out", required=True, help="the JSON written")
tr.add_argument("--work", required=True, help="TRL's output_dir (nothing is saved there)")
tr.add_argument("--steps", type=int, default=30)
tr.add_argument("--threads", type=int, default=2)
tr.add_argument("--group", type=int, default=8)
tr.add_argument("--prompts-per-step", type=int, default=32)
tr.add_argument("--max-tokens", type=int, default=6)
tr.add_argument("--lr", type=float, default=3e-4)
tr.add_argument("--seed", type=int, default=1)
a = p.parse_args()
write_prompts(a) if a.cmd == "prompts" else run_trl(a)
