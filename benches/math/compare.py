"""Compare rlvr's math verifier with math-verify (PyPI `math-verify==0.9.0`).

Two modes:

    # 1. math-verify's verdicts, one JSON line per input line (time this whole process)
    python benches/math/compare.py mv --corpus FILE.jsonl --out MV.jsonl [--gold-wrap dollars|none]

    # 2. the report
    python benches/math/compare.py report --corpus FILE.jsonl --ours OURS.jsonl --ours-seconds S \
        --mv MV.jsonl --mv-seconds S2 [--examples N]

OURS.jsonl holds one verdict {"reward", "outcome", "detail"} per corpus line, in corpus order, as
`rlvr verify --verifier math` writes it; S and S2 are the wall times of the two whole processes
(start-up, reading, scoring, writing), as `run.sh` measures them. Without `--mv`, `report` runs
math-verify itself and times its scoring loop only.

When the corpus lines carry `expected` (the hand-decided truth, as in
verifiers/tests/fixtures/math/regression.jsonl), the report gives each side's accuracy, overall and
by `kind`, and lists every line where either side is wrong; otherwise (corpus.jsonl) it gives the
agreement of the two. Every disagreement between the two is listed (`--examples N` caps the list
per category; 0, the default, lists all).

Gold wrapping: math-verify's LaTeX extraction only reads math inside delimiters, and its README
passes golds as "$...$"; a bare gold such as `2\\sqrt{3}` parses as `2`. The default therefore
parses `$gold$` (a gold already in `$...$` is left as it is); `--gold-wrap none` parses the bare gold.
"""

import argparse
import json
import os
import sys
import time
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))

# Cases where math-verify 0.9.0 is plainly wrong, by the reason shown in the listing. Each entry
# is a predicate on (gold, extracted prediction) that explains a disagreement; it never changes
# a figure.
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


def wrap(gold, how):
    if how == "none" or gold.strip().startswith("$"):
        return gold
    return f"${gold}$"


def run_math_verify(corpus, gold_wrap):
    """math-verify's verdict on every line and the seconds its scoring loop took."""
    from math_verify import parse, verify

    verdicts = []
    start = time.perf_counter()
    for row in corpus:
        try:
            ok = bool(verify(parse(wrap(row["answer"], gold_wrap)), parse(row["completion"])))
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


def cell(text, code=True):
    text = str(text).replace("|", "\\|").replace("\n", " \u23ce ")
    if len(text) > 140:
        text = text[:137] + "..."
    return f"`{text}`" if code and text else text


def cmd_mv(args):
    corpus = load_jsonl(args.corpus)
    verdicts, seconds = run_math_verify(corpus, args.gold_wrap)
    with open(args.out, "w", encoding="utf-8") as f:
        for ok in verdicts:
            f.write(json.dumps({"correct": ok}) + "\n")
    print(f"math-verify: {len(corpus)} lines, scored in {seconds:.3f} s", file=sys.stderr)


def cmd_report(args):
    corpus, ours = load_jsonl(args.corpus), load_jsonl(args.ours)
    timing_note = "`rlvr verify`, whole process (the launcher, which loads no libtorch)"
    if len(corpus) != len(ours):
        raise SystemExit(f"{args.ours} has {len(ours)} verdicts for {len(corpus)} corpus lines")
    if args.mv:
        mv = [row["correct"] for row in load_jsonl(args.mv)]
        mv_seconds, timing = args.mv_seconds, "whole process; ours: " + timing_note
    else:
        mv, mv_seconds = run_math_verify(corpus, args.gold_wrap)
        timing = "ours: whole process; math-verify: scoring loop only"
    n = len(corpus)
    ours_ok = [v["reward"] > 0.5 for v in ours]
    truth = [row.get("expected") for row in corpus]
    labelled = all(t is not None for t in truth)
    agree = sum(a == b for a, b in zip(ours_ok, mv))
    ours_rate, mv_rate = n / args.ours_seconds, n / mv_seconds
    lib_rate = n / args.lib_seconds if args.lib_seconds else None
    name = os.path.relpath(args.corpus)
    print(f"## rlvr math vs math-verify 0.9.0 on `{name}` ({n} pairs, gold wrap: {args.gold_wrap})\n")
    print("| | rlvr math | math-verify |")
    print("|---|---|---|")
    if labelled:
        ours_right = sum(o == t for o, t in zip(ours_ok, truth))
        mv_right = sum(m == t for m, t in zip(mv, truth))
        print(f"| accuracy (hand truth) | **{100 * ours_right / n:.1f}%** ({ours_right}/{n}) "
              f"| {100 * mv_right / n:.1f}% ({mv_right}/{n}) |")
    print(f"| judged correct | {sum(ours_ok)} | {sum(mv)} |")
    print(f"| wall time (s, {timing}) | {args.ours_seconds:.3f} | {mv_seconds:.2f} |")
    print(f"| throughput (pairs/s) | {ours_rate:,.0f} | {mv_rate:,.1f} |")
    print(f"| speed ratio | {ours_rate / mv_rate:,.0f}x | 1x |")
    if lib_rate:
        print(f"| wall time (s), verifier-only process (`driver/`) | {args.lib_seconds:.3f} | |")
        print(f"| throughput, verifier-only process (pairs/s) | {lib_rate:,.0f} | |")
        print(f"| speed ratio, verifier-only process | {lib_rate / mv_rate:,.0f}x | 1x |")
    print(f"| agreement | {100 * agree / n:.2f}% ({agree}/{n}) | |\n")

    group = "kind" if labelled else "category"
    if labelled:
        per = defaultdict(lambda: [0, 0, 0])
        for row, o, m, t in zip(corpus, ours_ok, mv, truth):
            per[row["kind"]][0] += 1
            per[row["kind"]][1] += o == t
            per[row["kind"]][2] += m == t
        print("### Accuracy by kind\n")
        print("| kind | pairs | rlvr math | math-verify |")
        print("|---|---|---|---|")
        for kind in sorted(per, key=lambda k: (per[k][2] / per[k][0], k)):
            total, o, m = per[kind]
            print(f"| {kind} | {total} | {100 * o / total:.0f}% | {100 * m / total:.0f}% |")
        print()
        wrong = [(row, v) for row, v, o, t in zip(corpus, ours, ours_ok, truth) if o != t]
        print(f"### rlvr wrong against the hand truth ({len(wrong)})\n")
        if not wrong:
            print("none\n")
        for row, v in wrong:
            print(f"- {cell(row['answer'])} / {cell(row['completion'])}: got {v['outcome']}, want {row['expected']}")
        if wrong:
            print()

    rows_by = defaultdict(list)
    totals = defaultdict(int)
    for row, o, o_ok, m_ok in zip(corpus, ours, ours_ok, mv):
        key = row.get(group, "-")
        totals[key] += 1
        if o_ok != m_ok:
            rows_by[key].append((row, o, m_ok))
    print(f"### Every disagreement ({n - agree})\n")
    if not rows_by:
        print("none")
    for key in sorted(rows_by, key=lambda c: (-len(rows_by[c]), c)):
        rows = rows_by[key]
        print(f"**{key}**: {len(rows)} of {totals[key]}\n")
        head = "| gold | completion | our extraction | ours | math-verify |"
        print(head + (" truth |" if labelled else " note |"))
        print("|---|---|---|---|---|---|")
        shown = rows if args.examples == 0 else rows[: args.examples]
        for row, o, m_ok in shown:
            detail = o.get("detail") or {}
            last = str(row["expected"]) if labelled else explain(row["answer"], detail, m_ok)
            cells = [cell(row["answer"]), cell(row["completion"]), cell(detail.get("extracted")),
                     o["outcome"], str(m_ok), last]
            print("| " + " | ".join(cells) + " |")
        print()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="mode")
    mv = sub.add_parser("mv", help="write math-verify's verdicts")
    mv.add_argument("--corpus", default=os.path.join(HERE, "corpus.jsonl"))
    mv.add_argument("--out", required=True)
    mv.add_argument("--gold-wrap", choices=["dollars", "none"], default="dollars")
    rep = sub.add_parser("report", help="print the comparison")
    rep.add_argument("--corpus", default=os.path.join(HERE, "corpus.jsonl"))
    rep.add_argument("--ours", required=True, help="our verdicts, one JSON line per corpus line")
    rep.add_argument("--ours-seconds", type=float, required=True, help="wall time of our run")
    rep.add_argument("--lib-seconds", type=float, help="wall time of the verifier-only driver (optional)")
    rep.add_argument("--mv", help="math-verify's verdicts from `compare.py mv` (else run here)")
    rep.add_argument("--mv-seconds", type=float, help="wall time of that run")
    rep.add_argument("--gold-wrap", choices=["dollars", "none"], default="dollars")
    rep.add_argument("--examples", type=int, default=0, help="disagreements listed per category (0: all)")
    # The older flat form (`compare.py --ours X --ours-seconds S`) is the report mode.
    argv = sys.argv[1:]
    if argv and argv[0] not in ("mv", "report", "-h", "--help"):
        argv = ["report"] + argv
    args = ap.parse_args(argv)
    if args.mode == "mv":
        cmd_mv(args)
    elif args.mode == "report":
        if args.mv and args.mv_seconds is None:
            raise SystemExit("--mv needs --mv-seconds")
        cmd_report(args)
    else:
        ap.print_help()


if __name__ == "__main__":
    main()
