"""The launcher swap: the same experiment on 2 Ray CPU workers with DeepSpeed ZeRO-3, and a worker death."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.helpers import FAST, wait_for_logged_steps

pytestmark = pytest.mark.slow

RAY = ["launcher=ray", "hardware=cpu_x2"]


def _train(run: Path, extra: list[str], env: dict | None = None, ray=RAY) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "ftc.cli", "train", *FAST, *ray, *extra, f"output_dir={run}"]
    return subprocess.run(args, capture_output=True, text=True, timeout=600, env=dict(os.environ, **(env or {})))


def test_ray_zero3_two_workers_end_to_end_through_a_worker_death(tmp_path):
    """The launcher swap whole: 2 Ray CPU workers with ZeRO-3; rank 1 dies at step 4, Ray Train restarts the group
    from checkpoint 3 on the shared disk (launcher.max_failures=1), and the run completes its 6 steps with every
    run file and a complete adapter (one run for both: each Ray run costs a minute of start-up)."""
    from peft import PeftModel

    from ftc.plan import Plan
    from ftc.runtime.model import load_base_model

    run = tmp_path / "ray"
    r = _train(run, ["eval.max_samples=4", "launcher.max_failures=1"], env={"FTC_FAULT_INJECT_STEP": "4"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    plan = Plan.load(str(run / "plan.json"))
    assert plan.world_size == 2 and plan.deepspeed["zero_optimization"]["stage"] == 3
    assert plan.batch.micro * plan.batch.grad_accum * 2 == plan.batch.global_
    for name in ("config.yaml", "plan.json", "metrics.jsonl", "summary.json", "report.md", "loss.png",
                 "adapter/adapter_model.safetensors", ".fault_injected"):
        assert (run / name).exists(), name
    events = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]
    kinds = [e["event"] for e in events]
    assert "resume" in kinds and "restarted" in kinds and kinds[-1] == "finished"
    assert next(e for e in events if e["event"] == "resume")["checkpoint"].endswith("checkpoint-3")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["training"]["world_size"] == 2 and summary["training"]["steps"] == 6
    # The ZeRO-3 adapter is complete (not an empty shard) and loads with PEFT.
    model = PeftModel.from_pretrained(load_base_model(plan, for_training=False), str(run / "adapter"))
    lora = {n: p for n, p in model.named_parameters() if "lora_B" in n}
    assert lora and all(p.numel() > 0 for p in lora.values())
    assert any(p.abs().sum() > 0 for p in lora.values())  # B starts at zero: non-zero means it was trained


def test_fsdp_lora_on_two_workers_checkpoints_resumes_after_a_worker_death_and_saves_a_peft_adapter(tmp_path):
    """The same command with train.strategy=fsdp: FSDP2 shards the model over 2 CPU workers (gloo), checkpoints as
    sharded state at step 3, rank 1 dies at step 4, Ray restarts the group from checkpoint 3, and the run finishes
    with a whole adapter that PEFT loads."""
    from peft import PeftModel

    from ftc.plan import Plan
    from ftc.runtime.model import load_base_model

    run = tmp_path / "fsdp"
    r = _train(run, ["train.strategy=fsdp", "eval.max_samples=4", "launcher.max_failures=1"],
               env={"FTC_FAULT_INJECT_STEP": "4"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    plan = Plan.load(str(run / "plan.json"))
    assert plan.train.strategy == "fsdp" and plan.deepspeed is None and plan.fsdp["fsdp_config"]["version"] == 2
    checkpoint = run / "checkpoints" / "checkpoint-6"
    assert (checkpoint / "pytorch_model_fsdp_0" / ".metadata").is_file()  # sharded state, not one rank's copy
    events = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]
    assert next(e for e in events if e["event"] == "resume")["checkpoint"].endswith("checkpoint-3")
    assert json.loads((run / "summary.json").read_text())["training"]["steps"] == 6
    # PEFT refuses a tensor whose shape is not the layer's: loading proves each is whole, not one rank's shard
    model = PeftModel.from_pretrained(load_base_model(plan, for_training=False), str(run / "adapter"))
    lora = {n: p for n, p in model.named_parameters() if "lora_B" in n}
    assert lora and any(p.abs().sum() > 0 for p in lora.values())


def test_unsatisfiable_cluster_request_fails_fast(tmp_path):
    r = _train(tmp_path / "big", ["launcher.resource_wait_s=1"], ray=["launcher=ray", "hardware=a100_80g_x4"])
    assert r.returncode == 2
    assert "cannot run this plan" in r.stderr and "GPU: need 4" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("objective,data", [("dpo", "sample_preference"), ("kto", "sample_kto")])
def test_preference_objectives_on_ray_zero3_train_a_non_empty_adapter(objective, data, tmp_path):
    """Preference tuning through the same launcher swap: 2 CPU workers, DeepSpeed ZeRO-3, TRL's trainer of the
    objective. DPO's pairs with a reference model and KTO's labelled rows with one; ORPO (DPO's pairs, no reference)
    runs locally in test_dpo.py and in test_sweep.py's objective sweep."""
    from safetensors.torch import load_file

    from ftc.plan import Plan

    run = tmp_path / objective
    r = _train(run, [f"objective={objective}", f"data={data}", "eval.max_samples=8"])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    plan = Plan.load(str(run / "plan.json"))
    assert plan.objective.trainer == objective and plan.deepspeed["zero_optimization"]["stage"] == 3
    weights = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    assert weights and any("lora_B" in k and v.abs().sum() > 0 for k, v in weights.items())
    tuned = json.loads((run / "summary.json").read_text())["eval"]["tuned"]
    assert "preference_accuracy" in tuned or "logp_margin" in tuned


def test_no_shared_disk_worker_death_restores_from_storage(tmp_path):
    """Workers train in fresh node-local directories (nothing local survives a restart); checkpoints go to Ray Train
    storage; rank 1 dies at step 4; the restarted group restores checkpoint 3 from storage and finishes 6 steps;
    the final adapter and run files come back to the driver's run dir through storage. The trackers follow: rank 0
    logs into the driver's MLflow run from its node, and TensorBoard's files come back with the run files."""
    run, storage = tmp_path / "run", tmp_path / "storage"
    r = _train(run, ["eval.max_samples=4", f"launcher.storage_path={storage}", "train.report_to=[tensorboard,mlflow]"],
               env={"FTC_FAULT_INJECT_STEP": "4", "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'tracking.db'}"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    events = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]
    restore = next(e for e in events if e["event"] == "restore")
    assert restore["step"] == 3 and restore["storage"] == str(storage)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["training"]["steps"] == 6 and summary["training"]["restored_step"] == 3
    assert (run / "adapter" / "adapter_model.safetensors").exists() and not (run / "checkpoints").exists()
    assert list(storage.rglob("checkpoint_*")), "checkpoints persisted under launcher.storage_path"
    assert (storage / "run" / "results" / "plan.json").exists() and (storage / "run" / "results" / "report.md").exists()
    import mlflow
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'tracking.db'}")
    run_id = json.loads((run / "trackers.json").read_text())["mlflow"]
    assert client.get_run(run_id).info.status == "FINISHED"
    assert {m.step for m in client.get_metric_history(run_id, "train/loss")} == {1, 2, 3, 4, 5, 6}  # both attempts
    assert "test/tuned/loss" in client.get_run(run_id).data.metrics
    tb = EventAccumulator(str(run))
    tb.Reload()
    assert tb.Scalars("train/loss")[-1].step == 6 and "test/tuned/loss" in tb.Tags()["scalars"]


def test_grpo_on_ray_zero3_generates_and_trains(tmp_path):
    """GRPO through the launcher swap: each of 2 CPU workers generates its share of the completions under ZeRO-3
    and the run is evaluated on its rewards (a few steps from the untuned base: the reward itself stays ~0)."""
    run = tmp_path / "grpo"
    r = _train(run, ["objective=grpo", "train.max_steps=4", "eval.max_samples=8"])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["training"]["world_size"] == 2 and summary["training"]["steps"] == 4
    assert "reward" in summary["eval"]["tuned"]


def test_sigterm_to_the_ray_driver_saves_on_every_worker_and_the_same_command_resumes(tmp_path):
    """A preemption notice for the machine that launched the run: the driver notes it, both workers save one
    checkpoint at the same step and stop, events.jsonl says ``preempted`` with the step and checkpoint, the exit is
    143, and the same command restores from that checkpoint and completes the run."""
    import signal

    run = tmp_path / "ray-sigterm"
    longer = ["train.max_steps=16", "train.eval_steps=8", "train.save_steps=8", "eval.enabled=false"]
    args = [sys.executable, "-m", "ftc.cli", "train", *FAST, *RAY, *longer, f"output_dir={run}"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_logged_steps(run, 3, 900, proc)  # a few training steps, then the notice
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=420)
    assert proc.returncode == 143, err[-3000:]
    assert "preempted by SIGTERM at step" in err and "Traceback" not in err
    events = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]
    stopped = [e for e in events if e["event"] == "preempted"]
    assert len(stopped) == 1, events  # recorded once, by the driver
    step = stopped[0]["step"]
    assert 3 <= step < 16 and stopped[0]["checkpoint"].endswith(f"checkpoint-{step}")
    assert stopped[0]["within_grace"] is True
    assert not (run / "summary.json").exists()
    r = _train(run, longer)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    events = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]
    assert [e for e in events if e["event"] == "resume"][-1]["checkpoint"] == stopped[0]["checkpoint"]
    assert json.loads((run / "summary.json").read_text())["training"]["steps"] == 16


def _reclaim(cluster, node) -> None:
    """The cloud reclaims a node: every process on it dies at once (its Ray workers, which outlive a killed raylet
    for a while, and then Ray's own processes)."""
    import signal

    import ray
    from ray.util.state import list_actors

    ray.init(address=cluster.address, log_to_driver=False)
    try:
        pids = [a.pid for a in list_actors(filters=[("node_id", "=", node.node_id), ("state", "=", "ALIVE")])]
    finally:
        ray.shutdown()
    assert pids, "the workers run on the node to reclaim"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    cluster.remove_node(node, allow_graceful=False)


def test_a_preempted_worker_node_is_lost_after_its_notice_and_the_run_restarts_from_the_notice_checkpoint(
        tmp_path):
    """The whole spot path on a two-node Ray cluster (Ray's own ``cluster_utils.Cluster``: a head for the driver,
    a worker node for the two workers): the worker node's notice (a drain at step 5) makes both ranks save, then
    the node is killed as a cloud reclaims it as soon as ftc says Ray Train has registered the notice's checkpoint,
    a replacement node joins, and Ray Train restarts the group there from that checkpoint; the run completes."""
    import threading
    import time

    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})  # the driver's node: no workers fit
    try:
        spot = cluster.add_node(num_cpus=2)
        run, storage = tmp_path / "ray-lost-node", tmp_path / "storage"  # a cluster's nodes share only storage
        longer = ["train.max_steps=30", "train.save_steps=100", "eval.enabled=false",
                  f"launcher.address={cluster.address}", f"launcher.storage_path={storage}"]
        args = [sys.executable, "-m", "ftc.cli", "train", *FAST, *RAY, *longer, f"output_dir={run}"]
        env = dict(os.environ, FTC_FAULT_INJECT_DRAIN="5", RAY_TRAIN_PREEMPTION_POLL_INTERVAL_S="0.5")
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: [lines.append(line) for line in proc.stderr], daemon=True)
        reader.start()
        registered = "is registered with Ray Train"
        deadline = time.time() + 420
        while not any(registered in line for line in lines) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None and any(registered in line for line in lines), "".join(lines)[-3000:]
        _reclaim(cluster, spot)  # at once: ftc waited until Ray Train had the notice's checkpoint, and no longer
        cluster.add_node(num_cpus=2)  # the replacement the autoscaler brings
        proc.wait(timeout=420)
        reader.join(timeout=60)
        err = "".join(lines)
    finally:
        cluster.shutdown()
    assert proc.returncode == 0, err[-3000:]
    events = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]
    notices = [e for e in events if e["event"] == "preemption_notice"]
    assert len(notices) == 1 and notices[0]["ranks"] == [0, 1], events
    step = notices[0]["step"]
    assert f"the notice's checkpoint (step {step}) is registered with Ray Train" in err  # off the save schedule
    kinds = [e["event"] for e in events]
    assert "restarted" in kinds and "finished" in kinds, kinds
    restarted = next(e for e in events if e["event"] == "restarted")
    assert f"after a node preemption notice at step {step}" in restarted["note"]
    restore = [e for e in events if e["event"] == "restore"]
    assert restore and restore[-1]["step"] == step and restore[-1]["storage"] == str(storage), restore
    assert json.loads((run / "summary.json").read_text())["training"]["steps"] == 30
