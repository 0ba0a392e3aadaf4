"""summary.json, report.md and loss.png of a finished run."""

from __future__ import annotations

import math
import re
import time
from pathlib import Path
from typing import Any

from ftc import datacard
from ftc.errors import RunFailed
from ftc.plan import Plan
from ftc.runtime import artifacts


def finish(plan: Plan, training: dict[str, Any], started: float) -> dict[str, Any]:
    """After training: evaluation (reloading the saved adapter from disk, which also proves it loads), then
    summary.json, report.md and loss.png."""
    import sys

    from ftc.runtime.evaluate import evaluate_run

    evaluation, eval_start = None, time.time()
    if plan.eval.enabled:
        against = {"base": "the base", "prompted": f"the prompted base ({plan.eval.shots}-shot)"}
        *others, last = ["the tuned model", *(against[b] for b in plan.eval.baselines)]
        models = f"{', '.join(others)} and {last}" if others else last
        print(f"ftc: evaluating {models} on the test split (up to {plan.eval.max_samples} examples)", file=sys.stderr)
        evaluation = evaluate_run(plan, plan.output_dir)
    training = {**training, "evaluation_s": time.time() - eval_start if evaluation else 0.0}
    bad = non_finite(training, evaluation)
    failure = (f"non-finite results: {', '.join(bad)}. The figures mean nothing (often: too few or empty "
               "examples in a split, or a diverged model); see the Data section and train.log") if bad else None
    summary = write(plan, plan.output_dir, training, evaluation, time.time() - started, failure)
    from ftc.runtime import trackers

    trackers.finish(plan, summary)  # the evaluation, the verdict, report.md and the figures, into each tracker run
    if failure:
        artifacts.event(plan.output_dir, "failed", error=failure)
        raise RunFailed(f"ftc: the run did not complete: {failure}. report.md and summary.json say status "
                        f"failed ({plan.output_dir})")
    artifacts.event(plan.output_dir, "finished", wall_time_s=summary["wall_time_s"])
    return summary


def non_finite(training: dict[str, Any], evaluation: dict[str, Any] | None) -> list[str]:
    """The named results that are NaN or infinite: training loss, and each model's held-out metrics."""
    found = []
    loss = training.get("train_loss")
    if isinstance(loss, float) and not math.isfinite(loss):
        found.append(f"train loss {loss}")
    for model in ("base", "prompted", "start", "tuned"):
        for key, value in ((evaluation or {}).get(model) or {}).items():
            if isinstance(value, float) and not math.isfinite(value):
                found.append(f"{model} {key.replace('_', ' ')} {value}")
    return found


def loss_curve(run_dir: Path) -> Path | None:
    records = artifacts.read_jsonl(run_dir / "metrics.jsonl")
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    val = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r]
    if not train and not val:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    if train:
        ax.plot(*zip(*train), label="train loss")
    if val:
        ax.plot(*zip(*val), marker="o", label="validation loss")
    return artifacts.save_loss_figure(fig, ax, run_dir.name, "loss (completion tokens)", run_dir / "loss.png")


def write(plan: Plan, run_dir: str, training: dict[str, Any], evaluation: dict[str, Any] | None,
          wall_s: float, failure: str | None = None) -> dict[str, Any]:
    run = Path(run_dir)
    data = dict(training.get("data") or {})
    lengths = data.pop("lengths", None) or []  # the data card's histogram, not summary.json's business
    training = {**training, "data": data} if data else training
    card = datacard.write(run, plan.data, data.get("examples", {}), data.get("dropped", {}),
                          data.get("quality") or plan.data.quality, lengths,
                          "every training example, the model's tokenizer", data.get("truncated")) if data else None
    tokens_per_s = training.get("tokens_per_s", 0.0)
    summary = {
        "name": plan.name,
        "status": "failed" if failure else "completed",
        "failure": failure,
        "wall_time_s": round(wall_s, 1),
        "training": training,
        "eval": evaluation,
        # Like with like: training steps only (validation, checkpoints and evaluation on their own lines).
        "predicted": {"hours": plan.time.hours, "usd": plan.cost.usd, "tokens_per_s": plan.time.tokens_per_s,
                      "memory_gb": plan.memory.per_device_gb, "live_gb": plan.memory.live_gb,
                      "reserved_gb": plan.memory.reserved_gb, "steps": plan.schedule.steps,
                      "train_s": plan.time.train_hours * 3600, "eval_s": plan.time.eval_hours * 3600},
        "actual": {"hours": wall_s / 3600, "usd": wall_s / 3600 * plan.cost.usd_per_hour,
                   "tokens_per_s": tokens_per_s, "peak_memory": training.get("peak_memory") or {},
                   "steps": training.get("steps"), "train_s": training.get("train_runtime_s"),
                   "validation_s": training.get("validation_s"), "checkpoints_s": training.get("checkpoints_s"),
                   "eval_s": training.get("evaluation_s")},
    }
    # summary.json last: it marks the run complete (a resume refuses to train past it), so a report that fails to
    # render leaves a run that says it is not complete and resumes, not one that looks done without its report.
    png = loss_curve(run)
    artifacts.atomic_write_text(run / "report.md", markdown(plan, summary, png is not None, card))
    artifacts.atomic_write_json(run / "summary.json", summary)
    return summary


def _memory_line(measured: dict[str, float], p: dict[str, Any]) -> str:
    """Measured peaks beside the plan's prediction of the same quantity (live tensors, allocator reservation, or
    the process peak)."""
    planned = {"live_gb": ("live tensors", p.get("live_gb")), "reserved_gb": ("reserved", p.get("reserved_gb")),
               "process_gb": ("process peak", p.get("memory_gb"))}
    parts = [f"{planned[k][0]} {_f(v, '.2f')} GB (planned {_f(planned[k][1], '.2f')})"
             for k, v in measured.items() if k in planned]
    return "; ".join(parts) or f"not measured (planned {p['memory_gb']:.2f} GB per device)"


def _f(x: Any, fmt: str = ".3f") -> str:
    return format(x, fmt) if isinstance(x, (int, float)) else "-"


def _table(ev: dict[str, Any], columns: list[str], cells: Any) -> list[str]:
    """One row per model evaluated (base, the starting adapter, tuned), then the side-by-side generations."""
    lines = ["| model | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for name in ("base", "prompted", "start", "tuned"):
        if ev.get(name):
            label = f"base prompted ({ev[name]['shots']}-shot)" if name == "prompted" else name
            lines.append(f"| {label} | " + " | ".join(str(c) for c in cells(ev[name])) + " |")
    return lines + _shots(ev) + _side_by_side(ev["examples"])


def _shots(ev: dict[str, Any]) -> list[str]:
    """The training examples the prompted baseline was shown before each test prompt."""
    if not ev.get("shots"):
        return []
    lines = ["", f"The prompted base saw these {len(ev['shots'])} training examples before each test prompt "
                 "(eval.shots, drawn by train.seed):", ""]
    return lines + [f"- `{shown(' '.join(s['prompt'].strip().splitlines()[-2:]), 120)}` -> "
                    f"`{shown(s['completion'], 120)}`" for s in ev["shots"]]


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def shown(text: str, limit: int = 200) -> str:
    """Model text as report.md shows it: control characters (NUL, backspace, carriage return...) written as escapes
    (``\\x00``), so that the report stays text every tool opens, a newline as ``⏎``, and backticks, which would end
    the code span, as ``'``; cut at ``limit`` characters."""
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256 else f"\\u{ord(m.group()):04x}",
                        text)
    return text.replace("\n", "⏎").replace("`", "'")[:limit]


def _side_by_side(examples: list[dict[str, Any]]) -> list[str]:
    """Prompt, reference (or chosen and rejected, for preference pairs), tuned and base generations."""
    lines = ["", "### Side by side", ""]
    for i, e in enumerate(examples, 1):
        prompt = e["prompt"].strip().splitlines()
        lines += [f"**{i}.** `{shown(' '.join(prompt[-3:]))}`", ""]
        if "rejected" in e:
            lines += [f"- chosen: `{shown(e['reference'], 1000)}`", f"- rejected: `{shown(e['rejected'], 1000)}`"]
        else:
            lines.append(f"- reference: `{shown(e['reference'], 1000)}`")
        lines.append(f"- tuned: `{shown(e['tuned'], 1000)}`")
        if e["base"] is not None:
            lines.append(f"- base: `{shown(e['base'])}`")
        if e.get("prompted") is not None:
            lines.append(f"- base prompted: `{shown(e['prompted'])}`")
        lines.append("")
    return lines


def markdown(plan: Plan, summary: dict[str, Any], has_png: bool, card: str | None = None) -> str:
    """report.md; ``card`` is the data card (ftc.datacard), embedded as its own section."""
    t, ev = summary["training"], summary["eval"]
    p, a = summary["predicted"], summary["actual"]
    lines = [
        f"# {plan.name}: {plan.model.name} + {plan.method.name} {plan.objective.name} on {plan.data.name}",
        "",
        f"**FAILED:** {summary['failure']}" if summary.get("failure") else
        f"**Verdict:** {ev['verdict']}" if ev else "**Verdict:** evaluation disabled",
        "",
        "## Evaluation on the held-out test split",
        "",
    ]
    if ev and "preference_accuracy" in ev["tuned"]:
        lines += _table(ev, ["preference accuracy", "log-likelihood margin (chosen - rejected)",
                             "reward margin vs base", "pairs"],
                        lambda m: [f"{m['preference_accuracy']:.1%}", _f(m["logp_margin"], ".2f"),
                                   _f(m.get("reward_margin")), m["samples"]])
    elif ev and "logp_margin" in ev["tuned"]:  # labelled answers (KTO data)
        lines += _table(ev, ["log-likelihood margin (desirable - undesirable)", "label accuracy", "reward margin",
                             "rows"],
                        lambda m: [f"{m['logp_margin']:.2f}", _f(m.get("label_accuracy"), ".1%"),
                                   _f(m.get("reward_margin")), m["samples"]])
    elif ev and "reward" in ev["tuned"]:
        names = list(ev["tuned"]["rewards"])
        lines += _table(ev, ["mean reward", *names, "exact match", "prompts"],
                        lambda m: [f"{m['reward']:.3f}", *(f"{m['rewards'][r]:.3f}" for r in names),
                                   f"{m['exact_match']:.1%}", m["samples"]])
    elif ev:
        lines += _table(ev, ["test loss", "perplexity", "exact match", "ROUGE-L", "samples"],
                        lambda m: [_f(m["loss"]), _f(m.get("perplexity"), ".2f"), f"{m['exact_match']:.1%}",
                                   _f(m["rouge_l"]), m["samples"]])
    if ev and ev.get("base_reused_from"):
        lines += [f"The base model's row is reused: the same base, test examples and evaluation settings were scored "
                  f"before ({ev['base_reused_from']}).", ""]
    lines += [
        "## Training",
        "",
        f"- steps: {t.get('steps')} (planned {p['steps']}), final train loss {_f(t.get('train_loss'))}",
        f"- wall time: {summary['wall_time_s']:.1f} s (planned {p['hours'] * 3600:.0f} s)",
        f"- training steps: {_f(a['train_s'], '.1f')} s (planned {p['train_s']:.0f} s); validation "
        f"{_f(a['validation_s'], '.1f')} s; checkpoints {_f(a['checkpoints_s'], '.1f')} s; evaluation "
        f"{_f(a['eval_s'], '.1f')} s (validation + evaluation planned {p['eval_s']:.0f} s)",
        f"- throughput: {_f(a['tokens_per_s'], '.0f')} real tokens/s over training steps only (planned "
        f"{_f(p['tokens_per_s'], '.0f')})",
        f"- peak memory: {_memory_line(a['peak_memory'], p)}",
        f"- cost: ${a['usd']:.4f} (planned ${p['usd']:.2f})",
        f"- batch: {plan.batch.derivation}; precision {plan.precision}; world size {t.get('world_size')}",
    ]
    if t.get("resumed_from"):
        lines.append(f"- resumed from `{t['resumed_from']}`")
    if has_png:
        lines += ["", "![loss curves](loss.png)"]
    data = t.get("data") or {}
    if card:
        lines += ["", card.replace("## Data card", "## Data", 1).rstrip()]
    if data:
        lines += ["", f"Data pipeline: rows read {data.get('rows_read')}, tokens {data.get('tokens')}, "
                      f"{data.get('dropped_no_completion_after_truncation', 0)} dropped with no completion left after "
                      f"truncation; token ids: {data.get('token_ids') or 'encoded here'}; cache `{data.get('cache')}`"
                      + (" (hit)" if data.get("cache_hit") else "") + "."]
    lines += ["", f"Adapter: `{'adapter/' if plan.method.peft else 'model/'}` (load with "
              "`PeftModel.from_pretrained(base, '<run>/adapter')`, or vLLM `--enable-lora`).", ""]
    return "\n".join(lines)
