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
    from ftc.runtime import console

    console.setup(plan.output_dir, plan.hardware.accelerator)
    try:
        summary = importlib.import_module(EXECUTORS[plan.launcher.kind]).execute(plan)
    except FtcError:
        raise
    except Exception as e:  # a library's failure: one message on the console, the traceback in train.log
        raise explain(e, plan.output_dir) from None
    run_dir = Path(plan.output_dir)
    ev = summary.get("eval")
    print(f"\nftc: done in {summary['wall_time_s']:.0f} s -> {run_dir}")
    if ev:
        print(f"ftc: {ev['verdict']}")
    print(f"ftc: report {run_dir / 'report.md'}, adapter {run_dir / ('adapter' if plan.method.peft else 'model')}")
    return summary
