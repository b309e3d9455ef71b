"""Write benches/math/corpus.jsonl: (completion, gold answer, category) triples for comparing the
math verifier with math-verify. Deterministic (fixed seed); standard library only.

Each category draws gold answers and writes completions the way models do: a short derivation,
then the answer in one of several formats, right about 70% of the time and wrong otherwise.
Run: python benches/math/make_corpus.py  (writes next to this file)
"""

import json
import math
import os
import random

SEED = 20250217
rng = random.Random(SEED)

LEADS = [
    "Let's work through this step by step.\n",
    "First, set up the equation from the problem statement.\n",
    "We simplify the expression carefully.\n",
    "Consider the quantities given in the problem.\n",
]


def lead():
    a, b = rng.randint(2, 40), rng.randint(2, 40)
    return rng.choice(LEADS) + f"Combining {a} and {b} terms gives the intermediate value {a * b}.\n"


def boxed(ans):
    return lead() + rng.choice([
        f"Therefore the answer is $\\boxed{{{ans}}}$.",
        f"So we get \\boxed{{{ans}}}.",
        f"Hence, the final result is\n\\[\n\\boxed{{{ans}}}\n\\]",
    ])


def right(p=0.7):
    return rng.random() < p


def near_int(n):
    return n + rng.choice([-10, -2, -1, 1, 2, 3, 10])


def cat_integer_boxed():
    n = rng.randint(1, 5000)
    return boxed(n if right() else near_int(n)), str(n)


def cat_gsm8k():
    n = rng.randint(10, 2_000_000)
    shown = n if right() else near_int(n)
    txt = f"{shown:,}" if shown >= 1000 and rng.random() < 0.4 else str(shown)
    return lead() + f"So the total is {txt}.\n#### {txt}", str(n)


def cat_answer_phrase():
    n = rng.randint(1, 999)
    shown = n if right() else near_int(n)
    form = rng.choice([
        "The answer is {}.", "Final answer: {}", "**Answer:** {}", "Thus, the final answer is ${}$.",
        "The final answer is {}. I hope it is correct.",
    ])
    return lead() + form.format(shown), str(n)


def cat_fraction():
    b = rng.choice([2, 4, 5, 8, 10, 16, 20, 25])
    a = rng.randint(1, 3 * b)
    if math.gcd(a, b) != 1:
        a = a // math.gcd(a, b)
        b = b // math.gcd(a, b) if a else b
    g = math.gcd(a, b)
    a, b = a // g, b // g
    if b == 1:
        b, a = 3, a * 3 + 1
    gold = f"\\frac{{{a}}}{{{b}}}"
    if right():
        pred = rng.choice([f"\\dfrac{{{a}}}{{{b}}}", f"{a}/{b}", f"{a / b:g}" if b != 3 else gold,
                           f"\\tfrac{{{a}}}{{{b}}}", f"\\frac{{{2 * a}}}{{{2 * b}}}"])
    else:
        pred = rng.choice([f"\\frac{{{b}}}{{{a}}}" if a != b else "0", f"\\frac{{{a + 1}}}{{{b}}}",
                           f"{a / b + 0.1:g}"])
    return boxed(pred), gold


def cat_decimal():
    x = round(rng.uniform(0, 100), rng.choice([1, 2]))
    gold = f"{x:g}"
    pred = rng.choice([gold, f"{x:.2f}", f"{x:.3f}"]) if right() else f"{x + rng.choice([0.1, 1, -0.5]):g}"
    return boxed(pred), gold


def cat_thousands():
    n = rng.randint(1000, 9_999_999)
    shown = n if right() else n + rng.choice([1, 1000, -100])
    roll = rng.random()
    if roll < 0.75:
        txt = f"{shown:,}"
    elif roll < 0.9:
        txt = f"{shown:,}".replace(",", "{,}")
    else:
        txt = f"{shown:,}".replace(",", "\\,")
    return boxed(txt), str(n)


def cat_currency_units():
    n = rng.randint(2, 500)
    shown = n if right() else near_int(n)
    unit = rng.choice(["\\$", "cm", "kg", "meters", "\\text{ cm}", "\\text{ dollars}", "\\text{ km}", "mph"])
    txt = f"\\${shown}" if unit == "\\$" else f"{shown}{unit if unit.startswith(chr(92)) else ' ' + unit}"
    if rng.random() < 0.3:
        return lead() + f"The answer is {txt if unit != chr(92) + '$' else '$' + str(shown)}.", str(n)
    return boxed(txt), str(n)


def cat_money_decimal():
    cents = rng.randint(100, 99999)
    gold = f"{cents / 100:.2f}"
    shown = cents if right() else cents + rng.choice([1, 10, -5])
    txt = rng.choice([f"\\${shown / 100:.2f}", f"{shown / 100:.2f}", f"\\${shown / 100:.2f} "])
    return boxed(txt), gold


def cat_percent():
    p = rng.choice([5, 10, 12.5, 20, 25, 30, 40, 50, 60, 75, 80])
    ok = right()
    val = p if ok else p + 5
    mode = rng.randrange(4)
    if mode == 0:
        return boxed(f"{val:g}\\%"), f"{p:g}"
    if mode == 1:
        return boxed(f"{val:g}"), f"{p:g}\\%"
    if mode == 2:
        return lead() + f"The answer is {val:g}%.", f"{p:g}"
    return boxed(f"{val:g}\\%"), f"{p / 100:g}"


def cat_degrees():
    d = rng.choice([30, 36, 45, 60, 72, 90, 108, 120, 135, 150])
    val = d if right() else 180 - d if d != 90 else 45
    txt = rng.choice([f"{val}^\\circ", f"{val}^{{\\circ}}", f"{val}\u00b0", f"{val}"])
    gold = rng.choice([f"{d}", f"{d}^\\circ"])
    return boxed(txt), gold


def cat_radicals():
    k, m = rng.choice([(2, 3), (3, 2), (2, 5), (5, 2), (4, 3), (3, 5), (2, 7)])
    gold = f"{k}\\sqrt{{{m}}}"
    if right():
        pred = rng.choice([gold, f"\\sqrt{{{k * k * m}}}", f"{k}\\sqrt{m}", f"{k} \\cdot \\sqrt{{{m}}}",
                           f"\\sqrt{{{m}}} \\cdot {k}"])
    else:
        pred = rng.choice([f"{m}\\sqrt{{{k}}}", f"\\sqrt{{{k * m}}}", f"{k + 1}\\sqrt{{{m}}}"])
    return boxed(pred), gold


def cat_pi():
    a, b = rng.randint(1, 12), rng.choice([1, 2, 3, 4])
    gold = f"{a}\\pi" if b == 1 else f"\\frac{{{a}\\pi}}{{{b}}}"
    if right():
        pred = gold if b == 1 else rng.choice([gold, f"\\frac{{{a}}}{{{b}}}\\pi", f"{a}\\pi/{b}"])
    else:
        pred = rng.choice([f"{a + 1}\\pi", f"{a * b}\\pi", f"{a}"])
    return boxed(pred), gold


def cat_nested_expr():
    a = rng.choice([2, 3, 5, 6, 7])
    gold = f"\\frac{{\\sqrt{{{a}}}}}{{2}}"
    pred = rng.choice([gold, f"\\frac{{1}}{{2}}\\sqrt{{{a}}}", f"\\dfrac{{\\sqrt {a}}}{{2}}"]) if right() \
        else rng.choice([f"\\frac{{\\sqrt{{{a}}}}}{{3}}", f"\\sqrt{{{a}}}"])
    return boxed(pred), gold


def cat_sci():
    m, e = rng.choice([1.5, 2.5, 3.2, 6.02, 4.8]), rng.randint(3, 9)
    gold = f"{m}\\times 10^{{{e}}}"
    val = e if right() else e + 1
    pred = rng.choice([f"{m} \\times 10^{{{val}}}", f"{m}\\cdot10^{{{val}}}", f"{round(m * 10 ** val):d}"])
    return boxed(pred), gold


def cat_tuple():
    x, y = rng.randint(-9, 9), rng.randint(-9, 9)
    gold = f"({x}, {y})"
    pred = rng.choice([f"({x},{y})", f"\\left({x}, {y}\\right)"]) if right() or x == y else f"({y}, {x})"
    return boxed(pred), gold


def cat_interval():
    a, b = sorted(rng.sample(range(-10, 11), 2))
    lb, rb = rng.choice("[("), rng.choice("])")
    gold = f"{lb}{a}, {b}{rb}"
    if rng.random() < 0.25:
        gold = f"(-\\infty, {b}{rb})".replace("))", ")")
        pred = gold if right() else f"(-\\infty, {b + 1}{rb})".replace("))", ")")
        return boxed(pred), gold
    if right():
        pred = f"\\left{lb}{a},{b}\\right{rb}"
    else:
        pred = f"{'(' if lb == '[' else '['}{a},{b}{rb}"
    return boxed(pred), gold


def cat_set():
    items = rng.sample(range(-6, 10), rng.randint(2, 4))
    gold = ", ".join(map(str, sorted(items)))
    shown = list(items)
    if not right():
        shown[0] += 1
    rng.shuffle(shown)
    body = ", ".join(map(str, shown))
    pred = rng.choice([f"\\{{{body}\\}}", body, " \\text{ and } ".join(map(str, shown))])
    return boxed(pred), gold


def cat_pm():
    a, b = rng.randint(1, 6), rng.choice([2, 3, 5])
    gold = f"{a} \\pm \\sqrt{{{b}}}"
    if right():
        pred = rng.choice([gold, f"{a}+\\sqrt{{{b}}}, {a}-\\sqrt{{{b}}}", f"{a}-\\sqrt{{{b}}}, {a}+\\sqrt{{{b}}}"])
    else:
        pred = rng.choice([f"{a}+\\sqrt{{{b}}}", f"{a + 1} \\pm \\sqrt{{{b}}}"])
    return boxed(pred), gold


def cat_equation():
    n = rng.randint(-20, 20)
    shown = n if right() else n + 2
    var = rng.choice("xyk")
    mode = rng.randrange(3)
    if mode == 0:
        return boxed(f"{var} = {shown}"), str(n)
    if mode == 1:
        return lead() + f"Solving, ${var} = \\boxed{{{shown}}}$.", str(n)
    return boxed(str(shown)), f"{var}={n}"


def cat_polynomial():
    a, b = rng.randint(1, 5), rng.randint(1, 9)
    gold = f"x^2+{2 * b}x+{b * b}"
    if right():
        pred = rng.choice([f"(x+{b})^2", f"{b * b}+{2 * b}x+x^2", gold])
    else:
        pred = rng.choice([f"(x+{b + 1})^2", f"x^2+{b}x+{b * b}"])
    return boxed(pred), gold if a else gold


def cat_text():
    if rng.random() < 0.5:
        gold = rng.choice(["yes", "no"])
        pred = (gold if right() else {"yes": "no", "no": "yes"}[gold])
        pred = rng.choice([pred, pred.capitalize(), f"\\text{{{pred.capitalize()}}}"])
        return boxed(pred), gold
    gold = rng.choice("ABCDE")
    pred = gold if right() else rng.choice([c for c in "ABCDE" if c != gold])
    pred = rng.choice([pred, f"({pred})", f"\\text{{{pred}}}", f"\\textbf{{({pred})}}"])
    return boxed(pred), gold


def cat_multi_boxed():
    n = rng.randint(2, 300)
    first = near_int(n)
    final = n if right() else near_int(n) + 1
    return (f"Initially I get $\\boxed{{{first}}}$, but that double-counts.\nRecomputing: "
            f"the answer is $\\boxed{{{final}}}$."), str(n)


def cat_no_answer():
    n = rng.randint(2, 300)
    text = rng.choice([
        "I am not sure how to approach this problem. Let me think about the structure instead.",
        "We need to consider the cases carefully. This is getting complicated, so let us restart",
        "The problem cannot be solved without more information about the shape.",
    ])
    return text, str(n)


def cat_last_number():
    n = rng.randint(2, 300)
    shown = n if right(0.6) else near_int(n)
    return lead() + f"Adding everything up we obtain {shown}", str(n)


CATEGORIES = {
    "integer_boxed": (cat_integer_boxed, 60), "gsm8k_hashes": (cat_gsm8k, 50),
    "answer_phrase": (cat_answer_phrase, 40), "fraction": (cat_fraction, 40),
    "decimal": (cat_decimal, 25), "thousands": (cat_thousands, 25),
    "currency_units": (cat_currency_units, 30), "money_decimal": (cat_money_decimal, 15),
    "percent": (cat_percent, 25), "degrees": (cat_degrees, 20), "radicals": (cat_radicals, 25),
    "pi": (cat_pi, 20), "nested_expr": (cat_nested_expr, 15), "scientific": (cat_sci, 15),
    "tuple": (cat_tuple, 20), "interval": (cat_interval, 25), "set": (cat_set, 20),
    "plus_minus": (cat_pm, 15), "equation": (cat_equation, 20), "polynomial": (cat_polynomial, 15),
    "text": (cat_text, 25), "multi_boxed": (cat_multi_boxed, 15), "no_answer": (cat_no_answer, 15),
    "last_number": (cat_last_number, 15),
}


def main():
    rows = []
    for name, (make, count) in CATEGORIES.items():
        for _ in range(count):
            completion, answer = make()
            rows.append({"completion": completion, "answer": answer, "category": name})
    rng.shuffle(rows)
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} lines to {path}")


if __name__ == "__main__":
    main()
