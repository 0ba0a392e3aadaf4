"""Hydra callback: when a multirun ends, redact Hydra's multirun.yaml and write the sweep summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback


class SweepSummary(Callback):
    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        import yaml

        from ftc.runtime import artifacts
        from ftc.sweep.report import write_report

        sweep_dir = Path(config.hydra.sweep.dir)
        saved = sweep_dir / "multirun.yaml"
        if saved.exists():  # Hydra writes the unredacted config here; keep it, minus secrets
            artifacts.atomic_write_text(saved, yaml.safe_dump(artifacts.redact(yaml.safe_load(saved.read_text())),
                                                              sort_keys=False))
        if any(p.is_dir() and (p / "plan.json").exists() for p in sweep_dir.iterdir()):
            print(write_report(str(sweep_dir)))
