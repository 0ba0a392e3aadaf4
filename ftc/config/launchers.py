"""The kinds of launcher: what ``launcher.kind`` may name, with the capabilities every layer reads.

A launcher *option* (``conf/launcher/<name>.yaml``, or a user's own preset such as ``launcher=my_cluster``) picks a
kind; the compiler, rules, rendering and the executors dispatch on the kind's flags, never on the option's name.
The executors live in ``ftc.launch`` (``EXECUTORS``), keyed by the same names; a test holds the two sets equal.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LauncherKind:
    name: str
    ray_train: bool
    """Runs as a Ray Train job: one worker per device, billed per worker, restarts from Ray Train storage."""
    doc: str


# Optional packages the compiler decides with (kernels, loggers, generator), as importlib names.
OPTIONAL_PACKAGES = ("flash_attn", "liger_kernel", "tensorboard", "wandb", "mlflow", "vllm")

LAUNCHER_KINDS = {k.name: k for k in (
    LauncherKind("local", ray_train=False, doc="this machine: one process, or one a device (torchrun's way)"),
    LauncherKind("ray", ray_train=True, doc="Ray Train TorchTrainer workers, locally or on a cluster"),
)}
