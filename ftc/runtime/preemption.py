"""SIGTERM (a spot preemption notice, a Kubernetes eviction) and SIGINT (Ctrl-C) stop a run cleanly.

The signal is noted; at the end of the optimizer step in progress the Trainer saves a checkpoint and stops; the run
then exits with 143 (SIGTERM) or 130 (SIGINT), events.jsonl says ``preempted`` or ``interrupted`` with the step, and
the same command resumes from that checkpoint. A second signal stops at once. No adapter or summary is published:
the run is not complete. Providers give about 30 s (AWS spot: 2 min notice; GCP: 30 s; Kubernetes: the pod's
terminationGracePeriodSeconds), so a step plus one save must fit in it: ``train.preemption_grace_s``, checked by the
plan. Handlers are installed in the main thread only.

On Ray the signal reaches the driver (``ftc train launcher=ray``), whose handlers (``DriverSignals``) note it in a
stop flag, a small Ray actor; Ray Train workers run training off their main thread and read the flag at the end of
each step (``remote_stop``: rank 0 asks, every rank gets its answer by broadcast, so all stop at the same step and
save one checkpoint together). The driver then records ``preempted`` / ``interrupted`` and exits the same way.
The local launcher's processes on a multi-device node do the same through a file (``note_in_file``, ``file_stop``).

A worker node's preemption does not reach ftc as a signal: Ray's worker main loop owns SIGTERM in its processes.
Ray delivers it as a node drain (``ray drain-node --reason DRAIN_NODE_REASON_PREEMPTION``, which Ray's autoscaler
and KubeRay issue on a spot notice), and Ray Train's ``ray.train.get_preemption_info()`` tells every rank at the
same step. The workers then save one checkpoint at once and go on training; the driver records
``preemption_notice``; when the node goes, Ray Train restarts the group from that checkpoint (``restore``,
``restarted``), within ``FailureConfig.max_preemption_failures`` (unlimited), apart from ``launcher.max_failures``.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any, Callable, Optional

EXIT_CODES = {"SIGTERM": 143, "SIGINT": 130}


def stop_on_signals() -> Optional[Any]:
    """A TrainerCallback that turns SIGTERM/SIGINT into save-then-stop; None outside the main thread."""
    from transformers import TrainerCallback

    if threading.current_thread() is not threading.main_thread():
        return None

    class SaveAndStop(TrainerCallback):
        def __init__(self) -> None:
            self.signal: Optional[str] = None
            self.received_at = 0.0
            self.step: Optional[int] = None
            self.previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
            for s in self.previous:
                signal.signal(s, self._note)

        def _note(self, signum: int, frame: Any) -> None:
            name = signal.Signals(signum).name
            if self.signal is not None:  # a second signal: the user (or the provider) means now
                self.restore()
                raise KeyboardInterrupt
            self.signal, self.received_at = name, time.time()
            print(f"\nftc: {name} received: saving a checkpoint at the end of this step, then stopping "
                  f"(a second {name} stops at once)", file=sys.stderr)

        def on_step_end(self, args, state, control, **kwargs):
            if self.signal is not None:
                control.should_save = True
                control.should_training_stop = True
                self.step = state.global_step
            return control

        def restore(self) -> None:
            for s, handler in self.previous.items():
                signal.signal(s, handler)

    return SaveAndStop()


SIGNAL_CODES = {"SIGTERM": 1.0, "SIGINT": 2.0}
DRAIN_ENV = "FTC_FAULT_INJECT_DRAIN"
# Seconds between asks for a node preemption notice: an ask is a collective through Ray's actors (28.6 ms measured
# here on 2 CPU workers, a loaded 2-core machine), and Ray Train's watcher polls the drains every 5 s anyway.
NOTICE_EVERY_S = 2.0


def drain_own_node() -> None:
    """Test hook (FTC_FAULT_INJECT_DRAIN=N: rank 0 at step N): asks Ray's GCS to drain this worker's node for
    preemption, with no deadline, as Ray's autoscaler does on a spot notice; what follows is Ray's own path."""
    import ray
    from ray.core.generated import autoscaler_pb2

    context = ray.get_runtime_context()
    accepted, why = ray._raylet.GcsClient(address=context.gcs_address).drain_node(
        context.get_node_id(), autoscaler_pb2.DrainNodeReason.Value("DRAIN_NODE_REASON_PREEMPTION"),
        "ftc fault injection", 0)
    if not accepted:
        raise RuntimeError(f"Ray refused the injected drain: {why}")


class DriverSignals:
    """A launcher's SIGTERM / SIGINT while its workers train: ``note(name, time)`` tells them (the Ray launcher's stop
    flag, the local launcher's stop file), and they read it each step; a second signal stops at once."""

    def __init__(self, note: Callable[[str, float], Any]) -> None:
        self.note, self.signal = note, None
        self.previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
        for s in self.previous:
            signal.signal(s, self._note)

    def _note(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.signal is not None:
            self.restore()
            raise KeyboardInterrupt
        self.signal = name
        self.note(name, time.time())
        print(f"\nftc: {name} received: the workers save a checkpoint at the end of this step, then stop (a second "
              f"{name} stops at once)", file=sys.stderr)

    def restore(self) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def _from_rank0(reason: Optional[tuple[str, float]], *more: float
                ) -> tuple[Optional[tuple[str, float]], list[float]]:
    """Rank 0's (signal, time it came) and ``more`` numbers, broadcast to every rank (each rank's own are ignored),
    so that all act at the same step: (the signal and its time, or None; the numbers)."""
    import torch
    import torch.distributed as dist

    code = torch.tensor([SIGNAL_CODES[reason[0]] if reason else 0.0, reason[1] if reason else 0.0, *more],
                        dtype=torch.float64)
    if dist.is_available() and dist.is_initialized():
        if dist.get_backend() == "nccl":
            code = code.cuda()
        dist.broadcast(code, src=0)
    values = code.tolist()
    name = next((k for k, v in SIGNAL_CODES.items() if v == values[0]), None)
    return ((name, values[1]) if name else None), values[2:]


def _stop_here(stopper: Any, agreed: tuple[str, float], state: Any, control: Any) -> None:
    """A worker's stop callback at the step the ranks agreed on: save one checkpoint, then stop."""
    stopper.signal, stopper.received_at = agreed
    stopper.step = state.global_step
    control.should_save = True
    control.should_training_stop = True


def file_stop(path: str, rank: int) -> Any:
    """A local launcher process's TrainerCallback: save-then-stop once the launcher has written its signal to
    ``path`` (``note_in_file``), on every rank at the same step (rank 0 reads the file; torch.distributed broadcasts
    its answer). Same fields as ``stop_on_signals``'s callback, so ``train`` treats both alike."""
    import json

    from transformers import TrainerCallback

    class FileStop(TrainerCallback):
        def __init__(self) -> None:
            self.signal: Optional[str] = None
            self.received_at = 0.0
            self.step: Optional[int] = None

        def on_step_end(self, args, state, control, **kwargs):
            reason = None
            if rank == 0 and os.path.exists(path):
                with open(path) as f:
                    reason = json.load(f)
            agreed, _ = _from_rank0(reason)
            if agreed:
                _stop_here(self, agreed, state, control)
            return control

        def restore(self) -> None:
            pass

    return FileStop()


def note_in_file(path: str) -> Callable[[str, float], None]:
    """``DriverSignals``' note for ``file_stop``: the signal and its time, written whole (a rename)."""
    import json

    def note(name: str, at: float) -> None:
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump([name, at], f)
        os.replace(tmp, path)

    return note


def remote_stop(flag: Any, rank: int) -> Any:
    """A Ray Train worker's TrainerCallback: save-then-stop when the driver's stop flag is set, on every rank at the
    same step (rank 0 reads the flag; torch.distributed broadcasts its answer). Same fields as ``stop_on_signals``'s
    callback, so ``train`` treats both alike."""
    from transformers import TrainerCallback

    class RemoteStop(TrainerCallback):
        def __init__(self) -> None:
            self.signal: Optional[str] = None
            self.received_at = 0.0
            self.step: Optional[int] = None
            self.notice: Optional[int] = None  # the step a node preemption notice was checkpointed at
            self.asked_at = 0.0
            self.drain_at = int(os.environ.get(DRAIN_ENV, 0) or 0)  # the test hook's step, read once

        def on_step_end(self, args, state, control, **kwargs):
            import ray

            if rank == 0 and state.global_step == self.drain_at:
                drain_own_node()
            reason = ray.get(flag.get.remote(), timeout=60) if rank == 0 else None
            ask = rank == 0 and self.notice is None and time.time() - self.asked_at >= NOTICE_EVERY_S
            agreed, (asked,) = _from_rank0(reason, float(ask))
            if agreed:
                _stop_here(self, agreed, state, control)
            elif asked:  # rank 0 decides when every rank asks Ray, so all ask at the same steps
                self.asked_at = time.time()
                self._node_notice(state, control)
            return control

        def _node_notice(self, state, control) -> None:
            """A node of the group is being preempted: Ray Core drains it (what Ray's autoscaler and KubeRay do on
            a spot notice) and Ray Train tells every rank at the same step. One checkpoint now, then training goes
            on: when the node goes, Ray Train restarts the group from that checkpoint."""
            import ray.train

            info = ray.train.get_preemption_info()  # a collective: every rank asks, at the same steps
            if info is None:
                return
            self.notice = state.global_step
            control.should_save = True
            if rank == 0:
                ray.get(flag.noticed.remote(state.global_step, info.preempted_node_ids, info.preempted_ranks,
                                            info.deadline_ms), timeout=60)
                print(f"ftc: node preemption notice at step {state.global_step} (ranks {info.preempted_ranks}): "
                      f"saving a checkpoint now; Ray Train restarts the group from it when the node goes",
                      file=sys.stderr)

        def restore(self) -> None:
            pass

    return RemoteStop()
