"""Checkpoints are complete or invisible: which checkpoint a run resumes from, and how its files are loaded.

A Trainer checkpoint is resumed from only when it passes ``problem``: its ``trainer_state.json`` parses, every file
the save wrote still has the size recorded in ``MANIFEST`` (written last, after the Trainer's own files), every
safetensors file's header describes exactly the bytes that follow it, and every pickled file (DeepSpeed's ZeRO
states, the optimizer, scheduler and RNG states) holds nothing but tensors, containers and the few library classes
in ``ALLOWED_GLOBALS``: a file planted or tampered with is never unpickled. A damaged newest checkpoint is passed
over, named, for the newest intact one.

DeepSpeed itself loads its checkpoint files with ``torch.load(weights_only=False)``, which runs whatever a pickle
says; ``deepspeed_weights_only`` makes its loader use ``weights_only=True`` with the same allow-list, so even a file
changed after the check above cannot run code.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

MANIFEST = "ftc_checkpoint.json"
PICKLED = (".pt", ".pth", ".bin")
# What the libraries ftc drives legitimately pickle into a checkpoint besides tensors and plain containers (read off
# DeepSpeed 0.19's ZeRO optimizer states and transformers' RNG states): classes whose unpickling builds plain state.
ALLOWED_GLOBALS = (
    "deepspeed.runtime.fp16.loss_scaler.LossScaler",
    "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler",
    "deepspeed.runtime.zero.config.ZeroStageEnum",
    "numpy.dtype", "numpy.ndarray", "numpy._core.multiarray._reconstruct", "numpy.core.multiarray._reconstruct",
    "numpy.dtypes.UInt32DType", "numpy.dtypes.Float64DType", "numpy.dtypes.Int64DType",
)


def write_manifest(checkpoint: Path) -> None:
    """Records every file of a just-saved checkpoint with its size, atomically, as the save's last step."""
    from ftc.runtime.artifacts import atomic_write_json

    files = {str(p.relative_to(checkpoint)): p.stat().st_size for p in sorted(checkpoint.rglob("*"))
             if p.is_file() and p.name != MANIFEST}
    atomic_write_json(checkpoint / MANIFEST, {"files": files})


def problem(checkpoint: Path) -> Optional[str]:
    """Why ``checkpoint`` cannot be resumed from, or None when it can."""
    state = checkpoint / "trainer_state.json"
    if not state.is_file():
        return "no trainer_state.json (its save did not finish)"
    try:
        int(json.loads(state.read_text())["global_step"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return f"trainer_state.json is damaged ({state.stat().st_size} bytes)"
    manifest = checkpoint / MANIFEST
    if manifest.is_file():
        try:
            recorded = json.loads(manifest.read_text())["files"]
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            return f"{MANIFEST} is damaged"
        for name, size in recorded.items():
            path = checkpoint / name
            if not path.is_file():
                return f"{name} is missing"
            if path.stat().st_size != size:
                return f"{name} has {path.stat().st_size} bytes, {size} when saved"
    for path in sorted(checkpoint.rglob("*")):
        if path.suffix == ".safetensors":
            why = _safetensors_problem(path)
        elif path.suffix in PICKLED and path.name != "training_args.bin":  # never loaded on resume
            why = _pickle_problem(path)
        elif path.name == DCP_METADATA:
            why = _dcp_metadata_problem(path)
        else:
            continue
        if why:
            return f"{path.relative_to(checkpoint)} {why}"
    return None


def _safetensors_problem(path: Path) -> Optional[str]:
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if n <= 0 or 8 + n > size:
                return "is cut short (no complete header)"
            header = json.loads(f.read(n))
    except (OSError, ValueError, UnicodeDecodeError):
        return "has a damaged header"
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    if 8 + n + max(ends, default=0) != size:
        return f"holds {size} bytes, its header describes {8 + n + max(ends, default=0)}"
    return None


DCP_METADATA = ".metadata"  # torch.distributed.checkpoint's index of a sharded (FSDP) checkpoint: a plain pickle
# What such an index legitimately builds besides torch.distributed.checkpoint's own classes and torch's dtypes.
SAFE_DCP_GLOBALS = {("torch", "Size"), ("torch", "strided"), ("torch.serialization", "_get_layout"),
                    ("pathlib", "PosixPath"), ("pathlib", "WindowsPath"), ("collections", "OrderedDict")}


def _dcp_metadata_problem(path: Path) -> Optional[str]:
    """A sharded checkpoint's index is unpickled by torch.distributed.checkpoint as it is: here it is read first
    with an unpickler that builds only the checkpoint module's own metadata classes, torch sizes and dtypes."""
    import io
    import pickle

    import torch

    class Restricted(pickle.Unpickler):
        def find_class(self, module, name):
            if module.startswith("torch.distributed.checkpoint.") or (module, name) in SAFE_DCP_GLOBALS or (
                    module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)):
                return super().find_class(module, name)
            raise pickle.UnpicklingError(f"{module}.{name}")

    try:
        Restricted(io.BytesIO(path.read_bytes())).load()
    except pickle.UnpicklingError as e:
        return f"would unpickle {e} (not checkpoint metadata: refused, never run)"
    except Exception as e:  # noqa: BLE001 - unreadable: refused, never unpickled by the library
        return f"cannot be read as checkpoint metadata ({type(e).__name__})"
    return None


def _pickle_problem(path: Path) -> Optional[str]:
    import torch

    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception as e:  # noqa: BLE001 - not a readable zip pickle: refused, never unpickled
        return f"cannot be read as a torch checkpoint ({type(e).__name__})"
    refused = sorted(set(unsafe) - set(ALLOWED_GLOBALS))
    if refused:
        return f"would unpickle {', '.join(refused[:3])} (not tensors or library state: refused, never run)"
    return None


def last_intact(checkpoints: Path, announce: bool = True) -> Optional[str]:
    """The newest checkpoint-N under ``checkpoints`` that passes ``problem``; each newer, damaged one is named on
    stderr (``announce``) and passed over."""
    if not checkpoints.is_dir():
        return None
    found = [p for p in checkpoints.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    for path in sorted(found, key=lambda p: int(p.name.split("-")[-1]), reverse=True):
        why = problem(path)
        if why is None:
            return str(path)
        if announce and os.environ.get("RANK", "0") == "0":
            print(f"ftc: warning: {path.name} is not resumed from: {why}; trying the one before it", file=sys.stderr)
    return None


def _allowed() -> list:
    import importlib

    found = []
    for name in ALLOWED_GLOBALS:
        module, _, attr = name.rpartition(".")
        try:
            found.append(getattr(importlib.import_module(module), attr))
        except (ImportError, AttributeError):
            continue  # a class this version of the library does not have
    return found


def deepspeed_weights_only() -> None:
    """DeepSpeed's checkpoint loader (``TorchCheckpointEngine.load``, through which the engine reads its model and
    ZeRO optimizer states) loads with ``weights_only=True`` and ``ALLOWED_GLOBALS``; anything else is refused."""
    import pickle

    import torch
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    from ftc.errors import RunFailed

    if getattr(TorchCheckpointEngine.load, "weights_only", False):
        return

    def load(self, path: str, map_location=None):
        try:
            with torch.serialization.safe_globals(_allowed()):
                return torch.load(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as e:
            raise RunFailed(f"ftc: refused to load {path}: it holds objects other than tensors and DeepSpeed's own "
                            f"state ({str(e).splitlines()[0]}); a tampered or foreign file is never unpickled. "
                            "Remove that checkpoint to resume from the one before it.") from None

    load.weights_only = True
    TorchCheckpointEngine.load = load
