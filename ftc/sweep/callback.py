"""Hydra callback that writes the sweep summary when a multirun ends."""

from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback


class SweepSummary(Callback):
    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        from ftc.sweep.report import write_report

        print(write_report(config.hydra.sweep.dir))
