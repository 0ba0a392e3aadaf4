"""GPU tier: QLoRA that shards. Two CUDA GPUs, two Ray workers or the local launcher's two processes, FSDP2 over
bitsandbytes' 4-bit weights stored in bf16; the run trains, and its adapter is whole and loads with PEFT. Skipped
without two GPUs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2,
                                                  reason="needs two CUDA GPUs")]


@pytest.mark.parametrize("launcher", ["ray", "local"])
def test_qlora_shards_with_fsdp_on_two_gpus_and_saves_an_adapter_peft_loads(launcher, tmp_path):
    from peft import PeftModel

    from ftc.plan import Plan
    from ftc.runtime.model import load_base_model
    from tests.integration.helpers import FAST

    run = tmp_path / "fsdp-qlora"
    r = subprocess.run([sys.executable, "-m", "ftc.cli", "train", *FAST, "method=qlora", "hardware=rtx4090_x2",
                        f"launcher={launcher}", "train.strategy=fsdp", f"output_dir={run}"],
                       capture_output=True, text=True, timeout=900, env=dict(os.environ))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    plan = Plan.load(str(run / "plan.json"))
    assert plan.train.strategy == "fsdp" and plan.method.quantization.storage_dtype == "bf16"
    assert plan.world_size == 2 and plan.launcher.kind == launcher
    assert json.loads((run / "summary.json").read_text())["training"]["steps"] == 6
    model = PeftModel.from_pretrained(load_base_model(plan, for_training=False), str(run / "adapter"))
    assert any(p.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)
