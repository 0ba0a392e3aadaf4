"""Local launcher: one process, one device (CPU or one GPU)."""

from __future__ import annotations

import time
from typing import Any

from ftc.errors import RunStopped
from ftc.plan import Plan


def execute(plan: Plan) -> dict[str, Any]:
    from ftc.runtime import artifacts
    from ftc.runtime.report import finish
    from ftc.runtime.train import train

    started = time.time()
    try:
        training = train(plan, plan.output_dir)
    except RunStopped:  # a signal's clean stop: train() recorded it as preempted / interrupted
        raise
    except BaseException as e:
        artifacts.event(plan.output_dir, "failed", error=f"{type(e).__name__}: {e}")
        raise
    # The evaluation reloads base + saved adapter from disk: it also proves the artifact loads.
    return finish(plan, training, started)
