"""SIGTERM (a spot preemption notice, a Kubernetes eviction) and SIGINT (Ctrl-C) stop a run cleanly.

The signal is noted; at the end of the optimizer step in progress the Trainer saves a checkpoint and stops; the run
then exits with 143 (SIGTERM) or 130 (SIGINT), events.jsonl says ``preempted`` or ``interrupted`` with the step, and
the same command resumes from that checkpoint. A second signal stops at once. No adapter or summary is published:
the run is not complete. Providers give about 30 s (AWS spot: 2 min notice; GCP: 30 s; Kubernetes: the pod's
terminationGracePeriodSeconds), so a step plus one save must fit in it: ``train.preemption_grace_s``, checked by the
plan. Handlers are installed in the main thread only (a Ray Train worker runs training in another thread: on Ray,
preemption is Ray Train's restart from the last checkpoint).
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from typing import Any, Optional

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
