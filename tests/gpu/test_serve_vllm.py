"""GPU tier: `ftc serve engine=vllm` with CUDA vLLM (the CPU test of the same path needs FTC_VLLM). Skipped without
CUDA or vLLM."""

from __future__ import annotations

import importlib.util
import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("llama_cpp", reason="the serving extra is not installed (pip install -e '.[serve]')")

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
              pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed")]


def test_vllm_on_cuda_serves_the_run_as_ftc_generate_answers(tmp_path):
    from ftc.runtime.train import train
    from tests.integration.helpers import fast_plan
    from tests.integration.test_serve import vllm_answers_as_ftc_generate

    plan = fast_plan(tmp_path, ["train.max_steps=40", "train.eval_steps=40", "train.save_steps=40",
                                "train.global_batch_size=16", "eval.enabled=false"])
    train(plan, plan.output_dir)
    vllm_answers_as_ftc_generate(plan.output_dir, {k: v for k, v in os.environ.items() if k != "FTC_VLLM"})
