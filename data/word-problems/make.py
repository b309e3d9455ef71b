"""Writes train.jsonl (500) and test.jsonl (100): one-step arithmetic word problems in GSM8K's form
({"question", "answer"}, the answer a worked solution with <<calculator>> notes ending in
"#### N"), written from templates for rlvr's recipes/word-problems.toml. Deterministic; no two
problems share a question, and the test questions are not in train.

    python3 data/word-problems/make.py
"""

import json
import pathlib
import random

HERE = pathlib.Path(__file__).parent
NAMES = ["Ann", "Ben", "Cat", "Dan", "Eva", "Fox", "Gus", "Ivy", "Jo", "Kim", "Leo", "Mia", "Ned", "Oli", "Pam", "Sam"]
ITEMS = ["apples", "books", "coins", "cards", "eggs", "pens", "shells", "stamps", "cups", "toys"]


def problem(rng):
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    kind = rng.choice(["add", "sub", "mul"])
    if kind == "add":
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        q = f"{name} has {a} {item} and gets {b} more. How many {item} does {name} have?"
        expr, value = f"{a}+{b}", a + b
    elif kind == "sub":
        a = rng.randint(2, 9)
        b = rng.randint(1, a - 1)
        q = f"{name} has {a} {item} and gives away {b}. How many {item} are left?"
        expr, value = f"{a}-{b}", a - b
    else:
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        q = f"{name} has {a} bags with {b} {item} in each. How many {item} in all?"
        expr, value = f"{a}*{b}", a * b
    return {"question": q, "answer": f"{expr}=<<{expr}={value}>>{value} {item}\n#### {value}"}


def main():
    rng = random.Random(0)
    seen, rows = set(), []
    while len(rows) < 600:
        row = problem(rng)
        if row["question"] not in seen:
            seen.add(row["question"])
            rows.append(row)
    for name, part in [("train.jsonl", rows[:500]), ("test.jsonl", rows[500:])]:
        with open(HERE / name, "w") as f:
            for row in part:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
