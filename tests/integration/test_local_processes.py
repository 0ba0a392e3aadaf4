"""The local launcher on a node of several devices: a process per device (torchrun's way), the same training function
Ray's workers run, here on 2 CPU processes (gloo)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.helpers import FAST, wait_for_logged_steps

pytestmark = pytest.mark.slow

LOCAL = ["launcher=local", "hardware=cpu_x2"]


def _train(run: Path, extra: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    args = [sys.executable, "-m", "ftc.cli", "train", *FAST, *LOCAL, *extra, f"output_dir={run}"]
    return subprocess.run(args, capture_output=True, text=True, timeout=600, env=dict(os.environ, **(env or {})))


def _events(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]


def test_fsdp_lora_on_two_local_processes_resumes_after_a_process_death_and_saves_a_peft_adapter(tmp_path):
    """The Ray FSDP test's command with launcher=local: FSDP2 shards the model over 2 processes, checkpoints sharded
    state at step 3, rank 1 dies at step 4, the launcher starts the group again from checkpoint 3, and the run
    finishes its 6 steps with a whole adapter that PEFT loads."""
    from peft import PeftModel

    from ftc.plan import Plan
    from ftc.runtime.model import load_base_model

    run = tmp_path / "fsdp"
    r = _train(run, ["train.strategy=fsdp", "eval.max_samples=4", "launcher.max_failures=1"],
               env={"FTC_FAULT_INJECT_STEP": "4"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    plan = Plan.load(str(run / "plan.json"))
    assert plan.launcher.kind == "local" and plan.world_size == 2
    assert plan.train.strategy == "fsdp" and plan.fsdp["fsdp_config"]["version"] == 2
    assert (run / "checkpoints" / "checkpoint-6" / "pytorch_model_fsdp_0" / ".metadata").is_file()  # sharded
    events = _events(run)
    kinds = [e["event"] for e in events]
    assert kinds.count("processes_launch") == 1 and "restarted" in kinds and kinds[-1] == "finished", kinds
    assert next(e for e in events if e["event"] == "resume")["checkpoint"].endswith("checkpoint-3")
    assert "rank 1 exited with code 1" in next(e for e in events if e["event"] == "restarted")["note"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["training"]["world_size"] == 2 and summary["training"]["steps"] == 6
    assert summary["training"]["launcher"] == "local"
    # PEFT refuses a tensor whose shape is not the layer's: loading proves each is whole, not one rank's shard
    model = PeftModel.from_pretrained(load_base_model(plan, for_training=False), str(run / "adapter"))
    lora = {n: p for n, p in model.named_parameters() if "lora_B" in n}
    assert lora and any(p.abs().sum() > 0 for p in lora.values())


def test_sigterm_to_the_local_launcher_saves_on_both_processes_and_the_same_command_resumes(tmp_path):
    """ZeRO-3 (the compiler's choice for LoRA over 2 workers) on 2 local processes: SIGTERM to the launcher, both
    processes save one checkpoint at the same step and stop, events.jsonl says ``preempted`` once, the exit is 143,
    and the same command resumes from that checkpoint and completes."""
    run = tmp_path / "sigterm"
    longer = ["train.max_steps=16", "train.eval_steps=8", "train.save_steps=8", "eval.enabled=false"]
    args = [sys.executable, "-m", "ftc.cli", "train", *FAST, *LOCAL, *longer, f"output_dir={run}"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_logged_steps(run, 3, 900, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=420)
    assert proc.returncode == 143, err[-3000:]
    assert "preempted by SIGTERM at step" in err and "Traceback" not in err
    from ftc.plan import Plan

    plan = Plan.load(str(run / "plan.json"))
    assert plan.deepspeed["zero_optimization"]["stage"] == 3 and plan.world_size == 2
    stopped = [e for e in _events(run) if e["event"] == "preempted"]
    assert len(stopped) == 1, stopped
    step = stopped[0]["step"]
    assert 3 <= step < 16 and stopped[0]["checkpoint"].endswith(f"checkpoint-{step}")
    assert not (run / "summary.json").exists()
    r = _train(run, longer)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert [e for e in _events(run) if e["event"] == "resume"][-1]["checkpoint"] == stopped[0]["checkpoint"]
    assert json.loads((run / "summary.json").read_text())["training"]["steps"] == 16
