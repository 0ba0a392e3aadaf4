"""Run-directory contract and atomic writes.

    <run>/config.yaml     resolved config, secrets redacted
    <run>/plan.json       the compiled Plan
    <run>/metrics.jsonl   one JSON object per logging/eval step
    <run>/checkpoints/    Trainer checkpoints (last K), resumed from on re-run
    <run>/adapter/        PEFT adapter + tokenizer (method=full: <run>/model/)
    <run>/summary.json    final metrics, base vs tuned, wall time, tokens/s, peak memory
    <run>/report.md       human summary;  <run>/loss.png  loss curves
    <run>/events.jsonl    what happened: start, resume, failure, restart, finish

Every file is written to a temporary name and renamed, so a crash never leaves a half-written artifact.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from ftc import secrets
from ftc.paths import atomic_path


def atomic_write_text(path: str | Path, text: str) -> None:
    """Writes ``text`` atomically, secrets masked (``secrets.mask``: what any run or sweep file holds)."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(secrets.mask(text))
        f.flush()
        os.fsync(f.fileno())


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def prepare_run_dir(config: dict[str, Any], plan: Any, run_dir: Path) -> Any:
    """Fixes the plan's output_dir to the absolute run dir and writes config.yaml (secrets redacted) and plan.json;
    returns the fixed plan."""

    import yaml

    plan = plan.relocated(str(run_dir))
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(redact(config), sort_keys=False))
    atomic_write_json(run_dir / "plan.json", plan.to_dict())
    return plan


def save_loss_figure(fig: Any, ax: Any, title: str, ylabel: str, path: Path, legend_size: int = 10) -> Path:
    """Labels a loss-vs-step matplotlib figure and writes it atomically as PNG."""
    import matplotlib.pyplot as plt

    ax.set_xlabel("optimizer step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_size)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def redact(obj: Any) -> Any:
    """Secrets masked at any depth: values of secret-named keys, credentials inside URIs and key-shaped strings."""
    return secrets.mask_all(obj)


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """One line per call, flushed: a crash loses at most the line being written."""
    with open(path, "a") as f:
        f.write(secrets.mask(json.dumps(record, default=str)) + "\n")
        f.flush()


def event(run_dir: str | Path, kind: str, **fields: Any) -> None:
    append_jsonl(Path(run_dir) / "events.jsonl", {"time": time.time(), "event": kind, **fields})


def read_json(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else {}


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a line cut by a crash
    return out
