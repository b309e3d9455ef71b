"""W&B sidecar of rlvr's metrics logger (trainer/src/metrics/wandb.rs): one process a run that
drives the official `wandb` client on the trainer's behalf.

Protocol, one JSON object a line.
  stdin:  {"init": {"project", "entity", "name", "config", "mode", "dir"}}  (first)
          {"log": {"step": N, "data": {"key": number, ...}}}              (any number)
          {"finish": true}                                                (last)
  stdout: {"ready": true, "version": "..."} once wandb.init returned, or
          {"error": "...", "kind": "import" | "init" | "protocol"} and exit 1.
End of stdin without "finish" (the trainer was killed) finishes the run all the same.

Only protocol replies go to the real stdout: anything the client prints goes to stderr.
"""

import json
import os
import sys


def main():
    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def reply(**message):
        protocol.write(json.dumps(message) + "\n")
        protocol.flush()

    try:
        import wandb
    except Exception as e:  # ImportError, or a broken install failing inside its own imports
        reply(error=f"cannot import wandb: {type(e).__name__}: {e}", kind="import")
        return 1

    run = None
    for line in sys.stdin:
        if not line.strip():
            continue
        message = json.loads(line)
        if "init" in message:
            a = message["init"]
            try:
                run = wandb.init(
                    project=a["project"],
                    entity=a.get("entity"),
                    name=a["name"],
                    config=a["config"],
                    mode=a["mode"],
                    dir=a["dir"],
                )
            except Exception as e:
                reply(error=f"wandb.init failed: {type(e).__name__}: {e}", kind="init")
                return 1
            reply(ready=True, version=wandb.__version__)
        elif run is None:
            reply(error=f"expected an init message first, got {line.strip()[:200]}", kind="protocol")
            return 1
        elif "log" in message:
            run.log(message["log"]["data"], step=message["log"]["step"])
        elif message.get("finish"):
            break
    if run is not None:
        run.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
