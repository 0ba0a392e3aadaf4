"""What every training worker needs, whichever launcher starts it (Ray Train's workers, the local launcher's
processes): its environment, accelerate's view of a CPU process group, and the data built once before them."""

from __future__ import annotations

import os

from ftc.plan import Plan
from ftc.runtime.preemption import DRAIN_ENV
from ftc.runtime.train import FAULT_ENV

TRAINING_FILE = ".training.json"  # rank 0's training figures, in the run directory, for the launcher to read


def worker_env(plan: Plan) -> dict[str, str]:
    """The environment a worker trains in: the CPU's settings, the test hooks and caches the launcher was given, and
    the trackers' runs to log into."""
    env = {"TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    if plan.hardware.accelerator == "cpu":
        env["DS_ACCELERATOR"] = "cpu"  # DeepSpeed's CPU accelerator (gloo) instead of probing for CUDA
        env["CUDA_VISIBLE_DEVICES"] = ""
        env["OMP_NUM_THREADS"] = str(plan.hardware.cpus_per_worker)
    for key in (FAULT_ENV, DRAIN_ENV, "RAY_TRAIN_PREEMPTION_POLL_INTERVAL_S", "FTC_CACHE", "HF_HOME", "HF_HUB_OFFLINE"):
        if key in os.environ:
            env[key] = os.environ[key]
    from ftc.runtime import trackers

    env.update(trackers.worker_env(plan))  # rank 0 logs into the driver's tracker runs
    return env


def cpu_distributed_shim() -> None:
    """Lets accelerate see a CPU gloo group (the one Ray Train set up, or the one a local launcher's process starts
    from torchrun's environment) when DeepSpeed is on.

    accelerate 1.x picks a backend only for accelerators unless ``cpu=True``, and ``cpu=True`` skips DeepSpeed; with
    neither it reports one process, so HF computes the wrong batch size. Report the gloo group as MULTI_CPU instead
    (DeepSpeed itself runs on CPU through DS_ACCELERATOR=cpu). Only used for CPU workers.
    """
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    original = PartialState._prepare_backend
    if getattr(original, "_ftc_shim", False):
        return

    def prepare_backend(self, cpu=False, sagemaker_dp=False, backend=None):
        chosen, kind = original(self, cpu, sagemaker_dp, backend)
        if chosen is None and not cpu:
            return "gloo", DistributedType.MULTI_CPU
        return chosen, kind

    prepare_backend._ftc_shim = True
    PartialState._prepare_backend = prepare_backend

    # accelerate upgrades a multi-device state to FSDP for GPUs and accelerators only; FSDP2 itself shards over a
    # CPU gloo group as well (the same fully_shard calls): with an FSDP plugin, a multi-CPU state becomes FSDP.
    from accelerate.state import AcceleratorState

    init = AcceleratorState.__init__

    def accelerator_state(self, *args, fsdp_plugin=None, **kwargs):
        init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin

    AcceleratorState.__init__ = accelerator_state


def prepare_data(plan: Plan) -> None:
    """Reads, validates and tokenizes the data once on the driver: a bad row fails here with file:line, not in
    every worker after Ray has started (and retried) them; workers on this machine then hit the cache."""
    from ftc.runtime.data import build
    from ftc.runtime.model import load_tokenizer

    build(plan.data, load_tokenizer(plan), plan.train.seed)
