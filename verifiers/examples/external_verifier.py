#!/usr/bin/env python3
"""A minimal external verifier speaking rlvr's JSON-lines protocol (verifiers/PROTOCOL.md).

Reward 1 when the completion's last non-empty line equals the task's `answer` (after stripping
whitespace), else 0. Run it through rlvr with `--verifier 'external:python3 verifiers/examples/external_verifier.py'`.
Logs go to stderr; stdout carries only verdict lines.
"""
import json
import sys


def judge(request):
    answer = (request.get("task") or {}).get("answer")
    if answer is None:
        return {"reward": 0.0, "outcome": "InvalidInput", "detail": {"error": "task has no answer"}}
    lines = [l.strip() for l in request["completion"].splitlines() if l.strip()]
    if not lines:
        return {"reward": 0.0, "outcome": "NoAnswer", "detail": {}}
    got = lines[-1]
    ok = got == str(answer).strip()
    return {"reward": 1.0 if ok else 0.0, "outcome": "Correct" if ok else "Incorrect", "detail": {"got": got}}


def main():
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        verdict = judge(request)
        verdict["id"] = request["id"]
        sys.stdout.write(json.dumps(verdict) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
