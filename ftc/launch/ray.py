"""Ray launcher: the Plan's training function on N workers with Ray Train's TorchTrainer (+ DeepSpeed from the plan).

- ``launcher.address=null`` starts a private local Ray instance (dashboard off / bound to 127.0.0.1);
  ``auto`` or ``ray://host:10001`` joins a cluster. Before launching, the plan's resource request is compared
  with what the cluster offers, so a request that can never be met fails at once with the numbers.
- Workers get the Plan as plain data and absolute paths; each runs ``ftc.runtime.train.train``.
- On a worker failure Ray restarts the group (``launcher.max_failures`` times). With ``launcher.storage_path`` (a
  path, NFS, or s3://...) checkpoints go through Ray Train's storage and a restarted group restores from
  ``ray.train.get_checkpoint()``: no shared disk is assumed. Without it (one machine) ``train`` resumes from the
  newest complete checkpoint in the shared ``<run>/checkpoints``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

from ftc.errors import RunStopped, UserError
from ftc.launch.workers import TRAINING_FILE, cpu_distributed_shim, prepare_data, worker_env
from ftc.plan import Plan
from ftc.runtime.preemption import DriverSignals


def _train_worker(config: dict[str, Any]) -> None:
    """Runs in every Ray worker process. A stop the driver asked for (its SIGTERM / SIGINT, through the stop flag)
    ends this function normally after the checkpoint, rank 0 telling the flag what was saved."""
    import ray.train

    from ftc.runtime import artifacts
    from ftc.runtime.preemption import remote_stop
    from ftc.runtime.train import train

    plan = Plan.from_dict(config["plan"])
    if plan.hardware.accelerator == "cpu":
        cpu_distributed_shim()
    rank = ray.train.get_context().get_world_rank()
    flag = config["stop"]
    stopper = remote_stop(flag, rank)
    try:
        if plan.launcher.storage_path:
            _train_through_storage(plan, rank, stopper)
            return
        run = Path(plan.output_dir)  # launcher.storage_path=null: one machine, the run dir is shared
        figures = train(plan, plan.output_dir, distributed=True, stopper=stopper)
        if rank == 0:
            artifacts.atomic_write_json(run / TRAINING_FILE, figures)
    except RunStopped:
        if rank == 0:
            ray.get(flag.stopped.remote(stopper.step, time.time() - stopper.received_at))


NOTICE_REGISTER_S = 30.0  # the shortest spot grace period (GCP's): after it the node may be gone anyway


def _await_registration(step: int) -> None:
    """Rank 0, once the notice's checkpoint is in storage: waits until Ray Train's controller has registered it (it
    collects reported checkpoints when it polls the workers, every 2 s), so that the node's loss right after still
    restarts the group from it; says so, or warns that it could not."""
    import ray.train

    start = time.time()
    reported = ray.train.get_all_reported_checkpoints(consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED,
                                                      timeout_s=NOTICE_REGISTER_S)
    if any((r.metrics or {}).get("step") == step for r in reported):
        print(f"ftc: the notice's checkpoint (step {step}) is registered with Ray Train after "
              f"{time.time() - start:.1f} s: a restart resumes from it", file=sys.stderr)
    else:
        print(f"ftc: warning: Ray Train had not registered the notice's checkpoint (step {step}) after "
              f"{NOTICE_REGISTER_S:g} s: if the node goes now, the restart resumes from an older one", file=sys.stderr)


def _stop_flag() -> Any:
    """The driver's stop flag, read by the workers each step (a Ray actor of no resources), on the driver's node:
    a worker node can be preempted, and the flag (with the notices it holds) must outlive it."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)

    @ray.remote(num_cpus=0, scheduling_strategy=here)
    class StopFlag:
        def __init__(self) -> None:
            self.reason: Optional[tuple[str, float]] = None
            self.saved: Optional[tuple[Optional[int], float]] = None
            self.notices: list[dict[str, Any]] = []  # node preemption notices the workers checkpointed

        def set(self, signal_name: str, at: float) -> None:
            self.reason = self.reason or (signal_name, at)

        def get(self) -> Optional[tuple[str, float]]:
            return self.reason

        def stopped(self, step: Optional[int], saved_s: float) -> None:
            self.saved = (step, saved_s)

        def state(self) -> tuple[Optional[tuple[str, float]], Optional[tuple[Optional[int], float]]]:
            return self.reason, self.saved

        def noticed(self, step: int, nodes: list[str], ranks: list[int], deadline_ms: Optional[int]) -> None:
            self.notices.append({"step": step, "nodes": nodes, "ranks": ranks, "deadline_ms": deadline_ms})

        def take_notices(self) -> list[dict[str, Any]]:
            taken, self.notices = self.notices, []
            return taken

    return StopFlag.remote()


FINAL = ("adapter", "model", "metrics.jsonl", "events.jsonl", TRAINING_FILE)
TENSORBOARD_EVENTS = "events.out.tfevents.*"


def _train_through_storage(plan: Plan, rank: int, stopper: Any) -> None:
    """No shared disk: each worker trains in a fresh node-local directory; checkpoints go to Ray Train's storage
    (launcher.storage_path: a path or s3://, gs://...) through RayTrainReportCallback, a restarted group restores
    from ray.train.get_checkpoint(), and rank 0 reports the final adapter and run files as the last checkpoint,
    which the driver downloads into its run directory."""
    import json
    import shutil
    import tempfile

    import ray.train
    from ray.train import Checkpoint
    from ray.train.huggingface.transformers import RayTrainReportCallback

    from ftc.runtime import artifacts
    from ftc.runtime.train import train

    local = Path(tempfile.mkdtemp(prefix=f"ftc-{Path(plan.output_dir).name}-rank{rank}-"))
    restored = ray.train.get_checkpoint()
    step = None
    if restored is not None:
        with restored.as_directory() as d:
            hf = Path(d) / RayTrainReportCallback.CHECKPOINT_NAME
            step = json.loads((hf / "trainer_state.json").read_text())["global_step"]
            shutil.copytree(hf, local / "checkpoints" / f"checkpoint-{step}")
    if rank == 0 and step is not None:
        artifacts.event(local, "restore", step=step, storage=plan.launcher.storage_path)
    class TimedReport(RayTrainReportCallback):
        """Ray's callback (it reports each Trainer checkpoint to storage), timed: events.jsonl says what persisting
        a checkpoint costs."""

        def on_save(self, args, state, control, **kwargs):
            start = time.time()
            super().on_save(args, state, control, **kwargs)
            if rank == 0:
                artifacts.event(local, "persisted", step=state.global_step, seconds=round(time.time() - start, 3),
                                storage=plan.launcher.storage_path)
                if stopper.notice == state.global_step:
                    _await_registration(state.global_step)

    try:
        figures = train(plan.relocated(str(local)), str(local), distributed=True,
                        extra_callbacks=(TimedReport(),), fault_dir=Path(plan.output_dir), stopper=stopper)
    except RunStopped:  # the checkpoint went to storage on its save; nothing else here is kept
        shutil.rmtree(local, ignore_errors=True)
        raise
    final = None
    if rank == 0:
        artifacts.atomic_write_json(local / TRAINING_FILE, {**figures, "restored_step": step})
        final = local / "final"
        final.mkdir()
        for name in FINAL:
            if (local / name).is_dir():
                shutil.copytree(local / name, final / name)
            elif (local / name).is_file():
                shutil.copy2(local / name, final / name)
        for events in local.glob(TENSORBOARD_EVENTS):  # train.report_to=[tensorboard]: the run dir is its log dir
            shutil.copy2(events, final / events.name)
    ray.train.report({"final": True}, checkpoint=Checkpoint.from_directory(str(final)) if final else None)
    shutil.rmtree(local, ignore_errors=True)


def _init_ray(plan: Plan) -> None:
    import ray

    la = plan.launcher
    if ray.is_initialized():
        return
    if la.address:
        ray.init(address=la.address, log_to_driver=True)
    else:
        workers_cpus = int(sum(la.resources_per_worker.get("CPU", 1) for _ in range(la.num_workers)))
        # address="local": a new private instance, never a cluster someone started on this machine with `ray start`
        ray.init(address="local", num_cpus=max(workers_cpus + 1, os.cpu_count() or 1),
                 include_dashboard=la.include_dashboard,
                 dashboard_host=la.dashboard_host, log_to_driver=True)


def check_resources(plan: Plan, offered: dict[str, float]) -> list[str]:
    """What the plan asks for that the cluster cannot offer (empty when it fits)."""
    la = plan.launcher
    missing = []
    for resource, per_worker in la.resources_per_worker.items():
        need = per_worker * la.num_workers
        have = offered.get(resource, 0.0)
        if have < need:
            missing.append(f"{resource}: need {need:g} ({la.num_workers} workers x {per_worker:g}), cluster has "
                           f"{have:g}")
    return missing


def _wait_for_resources(plan: Plan) -> None:
    import ray

    deadline = time.time() + plan.launcher.resource_wait_s
    while True:
        missing = check_resources(plan, ray.cluster_resources())
        if not missing:
            return
        if time.time() >= deadline:
            raise UserError("ftc: the Ray cluster cannot run this plan:\n  - " + "\n  - ".join(missing) +
                            "\n  fix: launcher.num_workers=<fewer>, a smaller hardware profile, or add nodes "
                            f"(waited {plan.launcher.resource_wait_s:g} s for the autoscaler)")
        time.sleep(2)


def _download_final(result: Any, run: Path) -> None:
    """The final checkpoint rank 0 reported (adapter, metrics, events, figures) into the driver's run dir."""
    import shutil

    from ftc.paths import publish
    from ftc.runtime import artifacts

    with result.checkpoint.as_directory() as d:
        for name in FINAL:
            src = Path(d) / name
            if name == "events.jsonl" and src.is_file():
                for record in artifacts.read_jsonl(src):
                    artifacts.append_jsonl(run / "events.jsonl", record)
            elif src.is_dir():
                tmp = run / f".{name}.download"
                shutil.rmtree(tmp, ignore_errors=True)
                shutil.copytree(src, tmp)
                publish(tmp, run / name)
            elif src.is_file():
                shutil.copy2(src, run / name)
        for events in Path(d).glob(TENSORBOARD_EVENTS):
            shutil.copy2(events, run / events.name)


def execute(plan: Plan) -> dict[str, Any]:
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from ftc.runtime import artifacts
    from ftc.runtime.report import finish

    started = time.time()
    run = Path(plan.output_dir)
    la = plan.launcher
    prepare_data(plan)
    _init_ray(plan)
    _wait_for_resources(plan)
    resources = dict(la.resources_per_worker)
    flag = _stop_flag()
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={"plan": plan.to_dict(), "stop": flag},
        scaling_config=ScalingConfig(num_workers=la.num_workers, use_gpu=la.use_gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(
            name=run.name,
            storage_path=la.storage_path or str(run / "ray"),
            checkpoint_config=CheckpointConfig(num_to_keep=plan.train.save_total_limit + 1),  # + the final one
            failure_config=FailureConfig(max_failures=la.max_failures),
            worker_runtime_env={"env_vars": worker_env(plan)},
        ),
    )
    artifacts.event(run, "ray_launch", workers=la.num_workers, resources_per_worker=resources,
                    address=la.address or "local")
    signals = DriverSignals(lambda name, at: flag.set.remote(name, at))
    try:
        result = trainer.fit()
        reason, saved = ray.get(flag.state.remote())
        if reason is not None:
            raise _driver_stopped(plan, run, reason, saved, result)
        if la.storage_path:
            _download_final(result, run)
    except RunStopped:
        raise
    except Exception as e:
        artifacts.event(run, "failed", error=f"{type(e).__name__}: {e}")
        raise
    finally:
        signals.restore()
        _record_notices(run, flag)
        _record_restarts(run)
    training = artifacts.read_json(run / TRAINING_FILE)
    training["launcher"] = "ray"
    # Evaluation reloads base + the saved adapter outside DeepSpeed, on the driver (it also proves the adapter loads).
    summary = finish(plan, training, started)
    if la.storage_path:
        _persist_results(run, f"{la.storage_path.rstrip('/')}/{run.name}/{RESULTS}")
    if not la.address:
        ray.shutdown()
    return summary


def _driver_stopped(plan: Plan, run: Path, reason: tuple[str, float], saved: Any, result: Any) -> RunStopped:
    """The driver's signal, after the workers saved and stopped: recorded in the run's events.jsonl (step, checkpoint,
    seconds after the signal) as the local launcher records it; the same command resumes."""
    from ftc.runtime.train import stop_record

    step, saved_s = saved if saved is not None else (None, time.time() - reason[1])
    if plan.launcher.storage_path:
        checkpoint = result.checkpoint.path if result is not None and result.checkpoint is not None else None
    else:
        from ftc.runtime.checkpoints import last_intact

        checkpoint = last_intact(run / "checkpoints", announce=False)
    return stop_record(reason[0], step, checkpoint, saved_s, plan.train.preemption_grace_s, run)


RESULTS = "results"  # <storage_path>/<run name>/results: the finished run, what `ftc eval|generate|merge` can read


def _persist_results(run: Path, target: str) -> None:
    """The driver's finished run dir (plan, config, summary, report, metrics, events, adapter) into storage, so the
    run outlives the machine that launched it: ``ftc eval <storage_path>/<run name>`` reads it back."""
    import fsspec

    from ftc.runtime import artifacts

    start = time.time()
    fs, _, (root,) = fsspec.get_fs_token_paths(target)
    for path in sorted(run.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            remote = f"{root}/{path.relative_to(run).as_posix()}"
            fs.makedirs(remote.rsplit("/", 1)[0], exist_ok=True)
            fs.put_file(str(path), remote)
    artifacts.event(run, "persisted_results", target=target, seconds=round(time.time() - start, 3))


def _record_notices(run: Path, flag: Any) -> None:
    """Each node preemption notice the workers checkpointed, into the driver's events.jsonl."""
    import ray

    from ftc.runtime import artifacts

    for notice in ray.get(flag.take_notices.remote(), timeout=60):
        artifacts.event(run, "preemption_notice", step=notice["step"], nodes=notice["nodes"], ranks=notice["ranks"],
                        deadline_ms=notice["deadline_ms"],
                        note="a node of the group is being preempted (a Ray node drain): every worker saved a "
                             "checkpoint at this step and training went on; Ray Train restarts the group from it "
                             "when the node goes")


def _record_restarts(run: Path) -> None:
    from ftc.runtime import artifacts

    events = artifacts.read_jsonl(run / "events.jsonl")
    starts = [e for e in events if e["event"] in ("start", "resume")]
    noticed = [e["step"] for e in events if e["event"] == "preemption_notice"]
    if len(starts) > 1 or any(e["event"] == "restore" for e in events):
        why = (f"a worker failed, after a node preemption notice at step {noticed[-1]}"
               if noticed else "a worker failed")
        artifacts.event(run, "restarted", attempts=len(starts),
                        note=f"{why}; Ray restarted the group and training resumed from the last checkpoint")
