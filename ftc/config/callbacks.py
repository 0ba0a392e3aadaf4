"""Hydra callbacks of ``ftc plan`` / ``ftc train`` runs (conf/config.yaml ``hydra.callbacks``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback


class RunDirectory(Callback):
    """Hydra creates the run directory (``output_dir``) before ftc's task runs, and a failure there would print
    Hydra's traceback: this makes the directory first and refuses one that cannot be made, in one line, exit 2."""

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        target = Path(str(config.hydra.run.dir))
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            print(f"ftc: cannot create the run directory {target}: {e.strerror or e} (fix: output_dir=<a writable "
                  "directory>)", file=sys.stderr)
            raise SystemExit(2) from None
