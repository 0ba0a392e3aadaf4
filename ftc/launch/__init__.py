"""Executors: run a Plan with the launcher it names. Heavy imports happen inside the executors."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from ftc.errors import FtcError
from ftc.plan import Plan
from ftc.runtime.failures import explain

# launcher.kind -> the module whose ``execute(plan)`` runs it (ftc.config.launchers.LAUNCHER_KINDS: same keys).
EXECUTORS = {"local": "ftc.launch.local", "ray": "ftc.launch.ray"}


def execute(plan: Plan) -> dict[str, Any]:
    """Runs the plan with its launcher and prints where the results are."""
    from ftc.errors import RunStopped
    from ftc.runtime import artifacts, console, environment, trackers

    console.setup(plan.output_dir, plan.hardware.accelerator)
    try:
        environment.check(plan)  # the packages the plan's decisions need (trackers included), before anything starts
        trackers.start(plan)  # each tracker's run, named and holding the plan's parameters (a refusal stops here)
    except FtcError as e:
        artifacts.event(plan.output_dir, "failed", error=str(e))
        raise
    try:
        summary = importlib.import_module(EXECUTORS[plan.launcher.kind]).execute(plan)
    except RunStopped:  # resumable: the tracker run goes on when the same command resumes
        raise
    except FtcError:
        trackers.failed(plan)
        raise
    except Exception as e:  # a library's failure: one message on the console, the traceback in train.log
        trackers.failed(plan)
        raise explain(e, plan.output_dir) from None
    run_dir = Path(plan.output_dir)
    ev = summary.get("eval")
    print(f"\nftc: done in {summary['wall_time_s']:.0f} s -> {run_dir}")
    if ev:
        print(f"ftc: {ev['verdict']}")
    print(f"ftc: report {run_dir / 'report.md'}, adapter {run_dir / ('adapter' if plan.method.peft else 'model')}")
    return summary


def start_or_resume(plan: Plan) -> None:
    """A completed run is never trained past its end (train.resume=true refuses it); train.resume=false starts
    again from step 0, the directory's earlier checkpoints moved aside (kept, never resumed from by mistake)."""
    import json
    import time

    from ftc.errors import UserError

    run = Path(plan.output_dir)  # called before the run directory's plan.json and config.yaml are rewritten
    if plan.train.resume:
        try:
            status = json.loads((run / "summary.json").read_text()).get("status")
        except (OSError, ValueError, AttributeError):
            status = None
        if status == "completed":
            raise UserError(f"ftc: {run} holds a completed run (summary.json: status completed); re-running it "
                            "would train past its end (fix: a new output_dir=..., or train.resume=false to train it "
                            "again from step 0 in this directory)")
    elif (run / "checkpoints").is_dir() and any((run / "checkpoints").iterdir()):
        aside = run / f"checkpoints.before-{time.strftime('%Y%m%d-%H%M%S')}"
        (run / "checkpoints").rename(aside)
        print(f"ftc: train.resume=false: starting from step 0; the earlier checkpoints are kept in {aside}")

