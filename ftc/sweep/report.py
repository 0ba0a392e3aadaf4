"""Sweep summary: one row per trial (overrides, status, eval metrics, wall time, tokens/s, predicted vs actual
cost) as CSV + Markdown sorted by a metric, a PNG of every trial's loss curves, and the best trial's overrides."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Optional

from ftc.config.objectives import TRAINERS
from ftc.runtime import artifacts

# metric name -> (path in summary.json, higher is better)
METRICS = {
    "exact_match": (("eval", "tuned", "exact_match"), True),
    "rouge_l": (("eval", "tuned", "rouge_l"), True),
    "test_loss": (("eval", "tuned", "loss"), False),
    "train_loss": (("training", "train_loss"), False),
    "preference_accuracy": (("eval", "tuned", "preference_accuracy"), True),
    "logp_margin": (("eval", "tuned", "logp_margin"), True),
    "reward": (("eval", "tuned", "reward"), True),
}


def _dig(d: Any, path: tuple[str, ...]) -> Optional[float]:
    for p in path:
        if not isinstance(d, dict) or d.get(p) is None:
            return None
        d = d[p]
    return d


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    rows = []
    for trial_dir in sorted((p for p in sweep_dir.iterdir() if p.is_dir() and (p / "plan.json").exists()),
                            key=lambda p: int(p.name) if p.name.isdigit() else p.name):
        trial = artifacts.read_json(trial_dir / "trial.json")
        summary = artifacts.read_json(trial_dir / "summary.json")
        plan = artifacts.read_json(trial_dir / "plan.json")
        status = trial.get("status") or ("completed" if summary else "running or killed")
        row = {
            "trial": trial_dir.name,
            "overrides": " ".join(trial.get("overrides", [])),
            "status": status,
            "exact_match": _dig(summary, METRICS["exact_match"][0]),
            "rouge_l": _dig(summary, METRICS["rouge_l"][0]),
            "test_loss": _dig(summary, METRICS["test_loss"][0]),
            "base_exact_match": _dig(summary, ("eval", "base", "exact_match")),
            "prompted_exact_match": _dig(summary, ("eval", "prompted", "exact_match")),
            "preference_accuracy": _dig(summary, METRICS["preference_accuracy"][0]),
            "logp_margin": _dig(summary, METRICS["logp_margin"][0]),
            "reward": _dig(summary, METRICS["reward"][0]),
            "objective": _dig(plan, ("objective", "name")) or "sft",
            "trainer": _dig(plan, ("objective", "trainer")) or "sft",
            "train_loss": _dig(summary, METRICS["train_loss"][0]),
            "wall_time_s": summary.get("wall_time_s", trial.get("wall_time_s")),
            "tokens_per_s": _dig(summary, ("actual", "tokens_per_s")),
            "predicted_usd": _dig(plan, ("cost", "usd")),
            "actual_usd": _dig(summary, ("actual", "usd")),
            "predicted_hours": _dig(plan, ("time", "hours")),
            "dir": str(trial_dir),
        }
        rows.append(row)
    return rows


TIE_BREAK = "test_loss"  # a tie on the headline metric (0% exact match for every trial) is decided by test loss


def _sort(rows: list[dict], metric: str) -> list[dict]:
    """Best first by ``metric`` (rounded to 4 digits: equal figures are a tie), ties broken by test loss, trials
    without the metric last."""

    def value(r: dict, name: str) -> Optional[float]:
        v = r.get(name)
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else v

    def key(r):
        v, tie = value(r, metric), value(r, TIE_BREAK)
        if v is None:
            return (1, 0.0, 0.0)
        v = round(v, 4)
        return (0, -v if METRICS[metric][1] else v, tie if tie is not None else math.inf)

    return sorted(rows, key=key)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


COLUMNS = ["trial", "overrides", "status", "exact_match", "rouge_l", "test_loss", "base_exact_match",
           "prompted_exact_match", "preference_accuracy", "logp_margin", "reward", "train_loss", "wall_time_s",
           "tokens_per_s", "predicted_usd", "actual_usd"]


def markdown(rows: list[dict], metric: str) -> str:
    """The table, without the columns no trial has a value for (SFT sweeps have no preference metrics...)."""
    columns = [c for c in COLUMNS if c in ("trial", "overrides", "status") or any(r[c] is not None for r in rows)]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def loss_curves(sweep_dir: Path, rows: list[dict]) -> Optional[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    drawn = 0
    for r in rows:
        records = artifacts.read_jsonl(Path(r["dir"]) / "metrics.jsonl")
        points = [(m["step"], m["eval_loss"]) for m in records if "eval_loss" in m]
        points = points or [(m["step"], m["loss"]) for m in records if "loss" in m]
        if points:
            ax.plot(*zip(*points), marker=".", label=f"trial {r['trial']}: {r['overrides'][:60] or 'the defaults'}")
            drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    return artifacts.save_loss_figure(fig, ax, f"sweep {sweep_dir.name}: validation loss per trial", "validation loss",
                                      sweep_dir / "loss_curves.png", legend_size=7)


def write_report(sweep_dir: str, metric: Optional[str] = None) -> str:
    """Writes summary.csv, summary.md and loss_curves.png in the sweep dir; returns the Markdown text. The metric
    defaults to exact_match, or preference_accuracy when the trials tuned on preferences."""
    from ftc.errors import UserError

    root = Path(sweep_dir)
    if metric is not None and metric not in METRICS:
        raise UserError(f"ftc: unknown metric '{metric}' (choose from {', '.join(METRICS)})")
    if not root.is_dir():
        raise UserError(f"ftc: {sweep_dir} is not a directory")
    collected = collect(root)
    if metric is None:
        headlines = {TRAINERS[r["trainer"]].headline for r in collected if r["trainer"] in TRAINERS}
        metric = next((m for m in ("reward", "preference_accuracy") if m in headlines), "exact_match")
    rows = _sort(collected, metric)
    if not rows:
        raise UserError(f"ftc: no trials found in {sweep_dir} (expected <sweep>/<n>/plan.json)")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS + ["objective", "trainer", "predicted_hours", "dir"])
    writer.writeheader()
    writer.writerows(rows)
    artifacts.atomic_write_text(root / "summary.csv", buf.getvalue())
    best = next((r for r in rows if r["status"] == "completed" and r.get(metric) is not None), None)
    failed = sum(r["status"] == "failed" for r in rows)
    tie = f", ties broken by {TIE_BREAK}" if metric != TIE_BREAK else ""
    text = [f"# Sweep {root}", "", f"{len(rows)} trials, {failed} failed; sorted by {metric}{tie}", "",
            markdown(rows, metric)]
    if best:
        text += ["", f"**Best trial {best['trial']}** ({metric} = {_fmt(best[metric])}): re-use with",
                 "", f"    ftc train {best['overrides']}"]
    png = loss_curves(root, rows)
    if png:
        text += ["", f"![validation loss per trial]({png.name})"]
    md = "\n".join(text) + "\n"
    artifacts.atomic_write_text(root / "summary.md", md)
    return md
