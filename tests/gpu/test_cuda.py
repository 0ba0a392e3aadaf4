"""GPU tier: QLoRA with CUDA bitsandbytes and the memory estimate against the measured peak. Skipped without CUDA."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_train_on_cuda_and_memory_estimate_is_an_upper_bound(tmp_path, method):
    from ftc.runtime.train import train
    from tests.integration.helpers import fast_plan

    plan = fast_plan(tmp_path, [f"method={method}", "hardware=h100", "train.max_steps=4"])
    torch.cuda.reset_peak_memory_stats()
    figures = train(plan, plan.output_dir)
    assert figures["steps"] == 4
    measured = torch.cuda.max_memory_allocated() / 1e9
    # Like with like: live tensors against the plan's live-tensor estimate (the tiny model: a loose bound).
    assert figures["peak_memory"]["live_gb"] == pytest.approx(measured)
    assert measured <= plan.memory.reserved_gb
