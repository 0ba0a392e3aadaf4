"""GPU tier: GRPO generating with vLLM, colocated on the training GPU and as TRL's server on a second GPU (the
compiler's two vLLM decisions). Skipped without CUDA or vLLM; the server test without two GPUs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
              pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed")]

GRPO = ["objective=grpo", "hardware.packages=[vllm]", "train.max_steps=4", "train.global_batch_size=16",
        "objective.num_generations=4", "eval.max_samples=8"]


def _trained(tmp_path: Path, overrides: list[str], generation: str) -> Path:
    from ftc.launch.local import execute
    from tests.integration.helpers import fast_plan

    plan = fast_plan(tmp_path, [*GRPO, *overrides])
    assert plan.objective.generation == generation, plan.decisions
    execute(plan)
    summary = json.loads((Path(plan.output_dir) / "summary.json").read_text())
    assert summary["training"]["steps"] == 4
    return Path(plan.output_dir)


def test_grpo_generates_with_vllm_colocated(tmp_path):
    _trained(tmp_path, ["hardware=h100"], "vllm")


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs (one trains, one generates)")
def test_grpo_generates_with_a_vllm_server_on_the_second_gpu(tmp_path):
    run = _trained(tmp_path, ["hardware=h100", "hardware.gpus_per_node=2", "launcher=local"], "vllm_server")
    log = (run / "vllm-server.log").read_text()
    assert "127.0.0.1" in log
