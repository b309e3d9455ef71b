"""Compare rlvr's math verifier with math-verify (PyPI `math-verify==0.9.0`) on corpus.jsonl.

Usage (see README.md):
    python benches/math/compare.py --ours OUT.jsonl --ours-seconds S [--corpus corpus.jsonl]
        [--gold-wrap dollars|none] [--examples 3]

OUT.jsonl holds one verdict {"reward", "outcome", "detail"} per corpus line, in corpus order, as
`rlvr verify --verifier math` writes it; S is the wall time that run took. This script runs
math-verify in its own interpreter on the same pairs, times it, and prints a markdown table:
agreement, throughput of each, speed ratio, and the disagreements by category with examples.

Gold wrapping: math-verify's LaTeX extraction only reads math inside delimiters, and its README
passes golds as "$...$"; a bare gold such as `2\\sqrt{3}` parses as `2`. The default therefore
parses `$gold$`; `--gold-wrap none` parses the bare gold string.
"""

import argparse
import json
import os
import time
from collections import defaultdict

# Cases where math-verify 0.9.0 is plainly wrong, by the reason shown in the listing. Each entry
# is a predicate on (gold, extracted prediction) that explains a disagreement; it never changes
# the agreement figure.
KNOWN_MV_FAULTS = [
    ("thin/normal spaces as thousands separators are read as a sum or product",
     lambda gold, pred: any(sep in pred for sep in ("\\,", " ")) and pred.replace("\\,", "").replace(" ", "").isdigit()),
    ("the degree sign \u00b0 is not understood",
     lambda gold, pred: "\u00b0" in pred),
    ("a non-integer percentage is not matched to its plain value (integers are)",
     lambda gold, pred: "%" in pred and "." in pred),
    ("a trailing unit word is read as a product of symbols",
     lambda gold, pred: any(pred.rstrip(".").endswith(w) for w in ("dollars", "cm", "kg", "meters", "mph", "km"))),
]


def load_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def run_math_verify(corpus, gold_wrap):
    from math_verify import parse, verify

    verdicts = []
    start = time.perf_counter()
    for row in corpus:
        gold = row["answer"] if gold_wrap == "none" else f"${row['answer']}$"
        try:
            ok = bool(verify(parse(gold), parse(row["completion"])))
        except Exception:  # math-verify raising on an input counts as "not correct"
            ok = False
        verdicts.append(ok)
    return verdicts, time.perf_counter() - start


def explain(gold, ours_detail, mv_ok):
    pred = (ours_detail or {}).get("extracted") or ""
    for reason, applies in KNOWN_MV_FAULTS:
        if not mv_ok and applies(gold, pred):
            return f"math-verify wrong: {reason}"
    return ""


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ours", required=True, help="our verdicts, one JSON line per corpus line")
    ap.add_argument("--ours-seconds", type=float, required=True, help="wall time of our run")
    ap.add_argument("--corpus", default=os.path.join(here, "corpus.jsonl"))
    ap.add_argument("--gold-wrap", choices=["dollars", "none"], default="dollars")
    ap.add_argument("--examples", type=int, default=3, help="examples listed per category")
    args = ap.parse_args()

    corpus, ours = load_jsonl(args.corpus), load_jsonl(args.ours)
    if len(corpus) != len(ours):
        raise SystemExit(f"{args.ours} has {len(ours)} verdicts for {len(corpus)} corpus lines")
    mv, mv_seconds = run_math_verify(corpus, args.gold_wrap)

    n = len(corpus)
    ours_ok = [v["reward"] > 0.5 for v in ours]
    agree = sum(a == b for a, b in zip(ours_ok, mv))
    ours_rate, mv_rate = n / args.ours_seconds, n / mv_seconds
    print(f"## Math verifier vs math-verify 0.9.0 ({n} pairs, gold wrap: {args.gold_wrap})\n")
    print("| | rlvr math | math-verify |")
    print("|---|---|---|")
    print(f"| judged correct | {sum(ours_ok)} | {sum(mv)} |")
    print(f"| wall time (s) | {args.ours_seconds:.4f} | {mv_seconds:.2f} |")
    print(f"| throughput (pairs/s) | {ours_rate:,.0f} | {mv_rate:,.1f} |")
    print(f"| agreement | {100 * agree / n:.2f}% ({agree}/{n}) | |")
    print(f"| speed ratio | {ours_rate / mv_rate:,.0f}x | 1x |\n")

    by_cat = defaultdict(list)
    totals = defaultdict(int)
    for row, o, o_ok, m_ok in zip(corpus, ours, ours_ok, mv):
        totals[row["category"]] += 1
        if o_ok != m_ok:
            by_cat[row["category"]].append((row, o, m_ok))
    print(f"### Disagreements ({n - agree})\n")
    if not by_cat:
        print("none")
    for cat in sorted(by_cat, key=lambda c: -len(by_cat[c])):
        rows = by_cat[cat]
        print(f"**{cat}**: {len(rows)} of {totals[cat]}\n")
        print("| gold | our extraction | ours | math-verify | note |")
        print("|---|---|---|---|---|")
        for row, o, m_ok in rows[: args.examples]:
            detail = o.get("detail") or {}
            cells = [row["answer"], str(detail.get("extracted")), o["outcome"], str(m_ok),
                     explain(row["answer"], detail, m_ok)]
            print("| " + " | ".join("`" + c.replace("|", "\\|").replace("\n", " ") + "`" if i < 2 else c
                                    for i, c in enumerate(cells)) + " |")
        print()


if __name__ == "__main__":
    main()
