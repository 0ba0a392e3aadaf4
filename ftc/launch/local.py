"""Local launcher: one process, one device (CPU or one GPU; GRPO's vLLM server may take a second GPU)."""

from __future__ import annotations

import contextlib
import time
from typing import Any, Iterator, Optional

from ftc.errors import RunStopped
from ftc.plan import Plan


def execute(plan: Plan) -> dict[str, Any]:
    from ftc.runtime import artifacts
    from ftc.runtime.report import finish
    from ftc.runtime.train import train

    started = time.time()
    try:
        with _generation(plan) as generation_url:
            training = train(plan, plan.output_dir, generation_url=generation_url)
    except RunStopped:  # a signal's clean stop: train() recorded it as preempted / interrupted
        raise
    except BaseException as e:
        artifacts.event(plan.output_dir, "failed", error=f"{type(e).__name__}: {e}")
        raise
    # The evaluation reloads base + saved adapter from disk: it also proves the artifact loads.
    return finish(plan, training, started)


@contextlib.contextmanager
def _generation(plan: Plan) -> Iterator[Optional[str]]:
    """GRPO with ``generation=vllm_server``: TRL's vLLM server on the node's second GPU while training runs."""
    if plan.objective.generation != "vllm_server":
        yield None
        return
    from ftc.runtime.grpo_vllm_server import generation_server
    from ftc.runtime.model import model_path

    with generation_server(plan, model_path(plan.model)) as url:
        yield url
