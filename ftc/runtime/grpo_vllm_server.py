"""GRPO's generation on a GPU of its own (``objective.generation=vllm_server``, decided by the compiler for the local
launcher on a node of two GPUs): TRL's vLLM server (``trl vllm-serve``) on the second GPU, training on the first.

The server is started before training and stopped after it, whatever happens; it binds 127.0.0.1 (TRL's own
default is 0.0.0.0) and logs to ``<run>/vllm-server.log``. TRL's GRPOTrainer connects to it
(``vllm_mode="server"``) and sends it the adapter's merged weights every step.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator, Optional

from ftc.errors import UserError
from ftc.plan import Plan

START_TIMEOUT_S = 900  # vLLM loads the weights, profiles memory and captures CUDA graphs before /health/ answers


def devices(visible: Optional[str]) -> tuple[str, str]:
    """(training GPU, generation GPU): the first two of CUDA_VISIBLE_DEVICES (``0,1`` when unset)."""
    ids = [d.strip() for d in (visible or "0,1").split(",") if d.strip()]
    if len(ids) < 2:
        raise UserError(f"objective.generation=vllm_server needs two visible GPUs; CUDA_VISIBLE_DEVICES={visible!r}. "
                        "fix: make both GPUs visible, or objective.generation=vllm (colocated)")
    return ids[0], ids[1]


def command(plan: Plan, model: str, port: int) -> list[str]:
    """``trl vllm-serve`` for the plan: the base model, on 127.0.0.1, at the plan's share of its GPU."""
    cmd = [sys.executable, "-m", "trl.scripts.vllm_serve", "--model", model, "--host", "127.0.0.1",
           "--port", str(port), "--gpu_memory_utilization", f"{plan.objective.vllm_gpu_memory_utilization:g}",
           "--max_model_len", str(plan.data.max_length + plan.objective.max_completion_length)]
    if plan.model.revision:
        cmd += ["--revision", plan.model.revision]
    if plan.model.trust_remote_code:
        cmd += ["--trust_remote_code", "true"]
    return cmd


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health/", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def generation_server(plan: Plan, model: str) -> Iterator[str]:
    """Runs the server on the second visible GPU for the duration of the block and yields its base URL; this process
    keeps only the first GPU (set before CUDA starts, so the Trainer does not spread over both)."""
    train_gpu, generation_gpu = devices(os.environ.get("CUDA_VISIBLE_DEVICES"))
    os.environ["CUDA_VISIBLE_DEVICES"] = train_gpu
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = Path(plan.output_dir) / "vllm-server.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(command(plan, model, port), stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "CUDA_VISIBLE_DEVICES": generation_gpu})
    try:
        deadline = time.time() + START_TIMEOUT_S
        while not _healthy(url):
            if proc.poll() is not None:
                raise RuntimeError(f"the vLLM generation server exited with code {proc.returncode} before it was "
                                   f"ready; its log is {log_path}")
            if time.time() > deadline:
                raise RuntimeError(f"the vLLM generation server was not ready after {START_TIMEOUT_S} s; its log is "
                                   f"{log_path}")
            time.sleep(2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
