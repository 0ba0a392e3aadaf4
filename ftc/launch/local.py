"""Local launcher: the run on this machine.

- One device (CPU or one GPU; GRPO's vLLM server may take a second GPU): training in this process.
- A node of several devices (``hardware.gpus_per_node`` > 1, CPU profiles: worker processes): a process per device,
  as torchrun starts them (``torch.multiprocessing``, spawned; RANK, LOCAL_RANK, WORLD_SIZE and MASTER_ADDR/PORT on
  127.0.0.1), each running ``ftc.runtime.train.train`` with the plan's strategy (DDP, DeepSpeed, FSDP), the same
  function Ray's workers run. The run directory is shared: a failed process takes the group down, and the group is
  started again (``launcher.max_failures`` times) from the newest complete checkpoint. SIGTERM / SIGINT reach this
  process, which writes them to ``<run>/.stop``; rank 0 reads it each step and every rank stops at the same step
  after one checkpoint, as on Ray.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any, Iterator, Optional

from ftc.errors import FtcError, RunStopped
from ftc.launch.workers import TRAINING_FILE
from ftc.plan import Plan

STOP_FILE = ".stop"  # the launcher's signal, for the processes to read
STOPPED_FILE = ".stopped.json"  # rank 0's (step, seconds from the signal to the saved checkpoint)


def execute(plan: Plan) -> dict[str, Any]:
    from ftc.runtime import artifacts
    from ftc.runtime.report import finish
    from ftc.runtime.train import train

    started = time.time()
    if plan.world_size > 1:
        return finish(plan, _processes(plan), started)
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


def _processes(plan: Plan) -> dict[str, Any]:
    """Trains with a process per device; rank 0's training figures. A group that fails is started again from the
    newest checkpoint while ``launcher.max_failures`` allows; a signal's stop raises RunStopped once every rank
    has saved."""
    import torch.multiprocessing as mp

    from ftc.launch.workers import prepare_data
    from ftc.runtime import artifacts
    from ftc.runtime.preemption import DriverSignals, note_in_file

    run = Path(plan.output_dir)
    for name in (STOP_FILE, STOPPED_FILE, TRAINING_FILE):
        (run / name).unlink(missing_ok=True)
    prepare_data(plan)  # a bad row fails here with file:line, once, not in every process
    world, failures = plan.world_size, 0
    artifacts.event(run, "processes_launch", workers=world, strategy=plan.train.strategy)
    signals = DriverSignals(note_in_file(str(run / STOP_FILE)))
    try:
        while True:
            context = mp.start_processes(_worker, args=(plan.to_dict(), _free_port(), str(run)), nprocs=world,
                                         join=False, start_method="spawn")
            try:
                while not context.join():
                    pass
                break
            except (mp.ProcessRaisedException, mp.ProcessExitedException) as e:  # the others are stopped by now
                failures += 1
                why = _failure(e)
                with open(run / "train.log", "a") as log:  # the process's own traceback, for the record
                    log.write(f"\n{time.strftime('%Y-%m-%d %H:%M:%S')} ERROR ftc.launch.local: {why}\n{e}\n")
                if signals.signal is not None or failures > plan.launcher.max_failures:
                    artifacts.event(run, "failed", error=why)
                    raise FtcError(f"ftc: a training process failed ({why}); "
                                   + (f"launcher.max_failures={plan.launcher.max_failures} restarts were used"
                                      if signals.signal is None else "after the stop was asked")
                                   + f" (the process's traceback: {run / 'train.log'} and above)") from None
                artifacts.event(run, "restarted", attempts=failures + 1,
                                note=f"a worker process failed ({why}); the local launcher started the group again "
                                     "and training resumed from the last checkpoint")
                print(f"ftc: a training process failed ({why}): starting the {world} processes again from the "
                      f"last checkpoint ({failures} of launcher.max_failures={plan.launcher.max_failures})")
            except BaseException:  # a second signal (stop at once), or the launcher's own failure: no orphans
                _kill(context.processes)
                raise
    finally:
        signals.restore()
    if signals.signal is not None:
        raise _stopped(plan, run, signals)
    training = artifacts.read_json(run / TRAINING_FILE)
    (run / TRAINING_FILE).unlink(missing_ok=True)
    training["launcher"] = "local"
    return training


def _kill(processes: list[Any]) -> None:
    for p in processes:
        if p.is_alive():
            p.kill()
    for p in processes:
        p.join(10)


def _failure(e: Exception) -> str:
    """A failed process in a line: its rank and exit code or exception's last line."""
    rank = getattr(e, "error_index", "?")
    code = getattr(e, "exit_code", None)
    if code is not None:
        return f"rank {rank} exited with code {code}"
    last = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
    return f"rank {rank}: {last}"


def _stopped(plan: Plan, run: Path, signals: Any) -> RunStopped:
    """The launcher's signal, after the processes saved and stopped: recorded as a one-process run records it."""
    from ftc.runtime import artifacts
    from ftc.runtime.checkpoints import last_intact
    from ftc.runtime.train import stop_record

    saved = artifacts.read_json(run / STOPPED_FILE) if (run / STOPPED_FILE).is_file() else {}
    (run / STOPPED_FILE).unlink(missing_ok=True)
    (run / STOP_FILE).unlink(missing_ok=True)
    return stop_record(signals.signal, saved.get("step"), last_intact(run / "checkpoints", announce=False),
                       saved.get("saved_s", 0.0), plan.train.preemption_grace_s, run)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, plan_dict: dict[str, Any], port: int, run_dir: str) -> None:
    """One process of the group (spawned): torchrun's environment, the Ray workers' settings, then ``train``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the launcher decides
    plan = Plan.from_dict(plan_dict)
    world = plan.world_size
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_WORLD_SIZE": str(world)})
    from ftc.launch.workers import cpu_distributed_shim, worker_env
    from ftc.runtime import console

    os.environ.update(worker_env(plan))
    console.setup(run_dir, plan.hardware.accelerator)  # its warnings through ftc's filter, all of it in train.log
    if rank:  # what every rank would say once is rank 0's to say
        console.errors_only()
    import torch

    if plan.hardware.accelerator == "cpu":
        torch.set_num_threads(plan.hardware.cpus_per_worker)
        cpu_distributed_shim()
    elif torch.cuda.is_available():  # before any weight loads: a quantized model goes to the current device
        torch.cuda.set_device(rank)
    from ftc.runtime import artifacts
    from ftc.runtime.preemption import file_stop
    from ftc.runtime.train import train

    run = Path(run_dir)
    stopper = file_stop(str(run / STOP_FILE), rank)
    try:
        figures = train(plan, run_dir, distributed=True, stopper=stopper)
        if rank == 0:
            artifacts.atomic_write_json(run / TRAINING_FILE, figures)
    except RunStopped:
        if rank == 0:
            artifacts.atomic_write_json(run / STOPPED_FILE,
                                        {"step": stopper.step, "saved_s": time.time() - stopper.received_at})


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
