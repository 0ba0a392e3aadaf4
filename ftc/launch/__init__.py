"""Executors: run a Plan with the launcher it names. Heavy imports happen inside the executors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftc.compiler.plan import Plan


def execute(plan: Plan) -> dict[str, Any]:
    """Runs the plan with its launcher and prints where the results are."""
    from ftc.runtime import console

    console.setup(plan.output_dir, plan.hardware.accelerator)
    if plan.launcher.kind == "ray":
        from ftc.launch.ray import execute as run
    else:
        from ftc.launch.local import execute as run
    summary = run(plan)
    run_dir = Path(plan.output_dir)
    ev = summary.get("eval")
    print(f"\nftc: done in {summary['wall_time_s']:.0f} s -> {run_dir}")
    if ev:
        print(f"ftc: {ev['verdict']}")
    print(f"ftc: report {run_dir / 'report.md'}, adapter {run_dir / ('adapter' if plan.method.peft else 'model')}")
    return summary
