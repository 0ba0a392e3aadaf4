"""One sweep trial in its own process, so memory is released between trials and a crash stays contained.

The Hydra job (sequential or a Ray task) has already compiled the trial and written its plan.json; the child
process runs it with the plan's launcher. A failed trial is recorded (trial.json, status "failed") and the sweep
goes on.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ftc.runtime import artifacts

RUN_PLAN = "run-plan"  # the CLI command that runs a run dir's saved plan.json (what a trial's process does)


def run_trial(run_dir: Path, overrides: list[str]) -> dict[str, Any]:
    started = time.time()
    log = run_dir / "trial.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log, "ab") as out:
        proc = subprocess.run([sys.executable, "-m", "ftc.cli", RUN_PLAN, str(run_dir)], stdout=out,
                              stderr=subprocess.STDOUT, env=env)
    record = {"overrides": overrides, "returncode": proc.returncode, "wall_time_s": round(time.time() - started, 1)}
    if proc.returncode == 0:
        record["status"] = "completed"
    else:
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        record.update(status="failed", error="\n".join(tail))
        print(f"ftc: trial {run_dir.name} ({' '.join(overrides)}) failed; the sweep goes on. Log: {log}",
              file=sys.stderr)
    artifacts.atomic_write_json(run_dir / "trial.json", record)
    summary = artifacts.read_json(run_dir / "summary.json")
    return {**record, "summary": summary}
