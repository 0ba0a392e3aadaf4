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


def _line(run_dir: Path, overrides: list[str]) -> str:
    return f"ftc: trial {run_dir.name} ({' '.join(overrides) or 'no overrides'})"


def started_line(run_dir: Path, overrides: list[str]) -> str:
    """What a trial is about to do, as planned: its steps, time and cost (plan.json)."""
    plan = artifacts.read_json(run_dir / "plan.json")
    t, c, s = plan.get("time") or {}, plan.get("cost") or {}, plan.get("schedule") or {}
    return (f"{_line(run_dir, overrides)}: started; planned {s.get('steps', '?')} steps, "
            f"{(t.get('hours') or 0) * 3600:.0f} s ({(t.get('train_hours') or 0) * 3600:.0f} s training, "
            f"{(t.get('eval_hours') or 0) * 3600:.0f} s evaluation), ${c.get('usd') or 0:.2f}")


def finished_line(run_dir: Path, overrides: list[str], record: dict[str, Any]) -> str:
    """How a trial ended: its headline metric (the objective's; test loss beside it), its time against the plan."""
    from ftc.sweep.report import METRICS, _dig

    summary = artifacts.read_json(run_dir / "summary.json")
    plan = artifacts.read_json(run_dir / "plan.json")
    planned = (_dig(plan, ("time", "hours")) or 0) * 3600
    took = f"{record['wall_time_s']:.0f} s (planned {planned:.0f} s)"
    if record["status"] != "completed":
        return f"{_line(run_dir, overrides)}: FAILED after {took}"
    from ftc.config.objectives import TRAINERS

    trainer = TRAINERS.get(_dig(plan, ("objective", "trainer")) or "sft")
    headline = trainer.headline if trainer and trainer.headline in METRICS else "exact_match"
    said = []
    for name in dict.fromkeys((headline, "test_loss")):
        value = _dig(summary, METRICS[name][0])
        if value is not None:
            said.append(f"{name.replace('_', ' ')} {value:.1%}" if name in ("exact_match", "preference_accuracy")
                        else f"{name.replace('_', ' ')} {value:.3f}")
    return f"{_line(run_dir, overrides)}: completed in {took}; {', '.join(said) or 'no evaluation'}"


def run_trial(run_dir: Path, overrides: list[str]) -> dict[str, Any]:
    started = time.time()
    print(started_line(run_dir, overrides), file=sys.stderr, flush=True)
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
    print(finished_line(run_dir, overrides, record), file=sys.stderr, flush=True)
    summary = artifacts.read_json(run_dir / "summary.json")
    return {**record, "summary": summary}
