"""Compile a whole sweep before any trial runs: every trial's plan, the total cost, the budget check."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

from ftc.config.overrides import expand
from ftc.plan import Plan, runs_total


@dataclass(frozen=True)
class Trial:
    overrides: tuple[str, ...]
    plan: Plan


def compile_sweep(overrides: list[str]) -> list[Trial]:
    from ftc.compiler.frontend import plan

    return [Trial(tuple(combo), plan(combo)) for combo in expand(overrides)]


def sweep_table(trials: list[Trial]) -> str:
    swept = _swept_keys(trials)
    lines = [" | ".join(["#"] + swept + ["steps", "mem GB", "fits", "hours", "usd", "status"])]
    for i, t in enumerate(trials):
        vals = dict(o.split("=", 1) for o in t.overrides)
        p = t.plan
        lines.append(" | ".join([str(i)] + [vals.get(k, "") for k in swept] + [
            str(p.schedule.steps), f"{p.memory.per_device_gb:.2f}", "yes" if p.memory.fits else "NO",
            f"{p.time.hours:.3f}", f"{p.cost.usd:.2f}", "ok" if p.ok else "ERROR"]))
    return "\n".join(lines)


def _swept_keys(trials: list[Trial]) -> list[str]:
    seen: dict[str, set] = {}
    for t in trials:
        for o in t.overrides:
            k, _, v = o.partition("=")
            seen.setdefault(k, set()).add(v)
    return [k for k, v in seen.items() if len(v) > 1] or list(seen)[:3]


def totals(trials: list[Trial]) -> tuple[float, float]:
    """(usd, device-hours) of the whole sweep: every trial's own, plus each distinct baseline evaluation once (the
    first trial computes it, the others reuse it)."""
    plans = [t.plan for t in trials]
    return runs_total(plans, lambda p: p.cost.usd), runs_total(plans, lambda p: p.cost.device_hours)


def wall_hours(trials: list[Trial]) -> float:
    """The trials one after another, the shared baselines evaluated once."""
    return runs_total([t.plan for t in trials], lambda p: p.time.hours)


def problems(trials: list[Trial]) -> list[str]:
    """Errors of any trial, and the sweep's total against budget.max_usd / max_gpu_hours."""
    from ftc.compiler.rules import budget_problems

    out = [f"trial {i} ({' '.join(t.overrides)}): {e}" for i, t in enumerate(trials) for e in t.plan.errors
           if not e.startswith("budget.")]  # the sweep's total is what the budget is held against
    if trials:
        usd, hours = totals(trials)
        b = trials[0].plan.budget
        wall = wall_hours(trials)  # trials run one after another unless on Ray
        out += [str(p) for p in budget_problems(b.max_usd, b.max_gpu_hours, usd, hours,
                                                f"the sweep's {len(trials)} trials in total", b.max_hours, wall)]
    return out


def plan_sweep(overrides: list[str], as_json: bool = False) -> int:
    """Prints every trial's plan and the sweep's total; returns the exit code (2 when any problem)."""
    trials = compile_sweep(overrides)
    usd, hours = totals(trials)
    found = problems(trials)
    if as_json:
        print(json.dumps({"trials": [{"overrides": list(t.overrides), "plan": t.plan.to_dict()} for t in trials],
                          "total": {"usd": round(usd, 2), "device_hours": round(hours, 3), "trials": len(trials)},
                          "errors": found}, indent=2))
    else:
        print(sweep_table(trials))
        shared = sum(t.plan.time.hours for t in trials) - wall_hours(trials)
        note = f" (the baselines' evaluation counted once: {shared * 60:.1f} min of the trials' time is a reused " \
            "result)" if shared > 0 else ""
        print(f"\n{len(trials)} trials, predicted total ${usd:.2f}, {hours:.3f} device-hours{note}")
        for p in found:
            print(f"  - {p}")
    return 2 if found else 0


def check_sweep(overrides: list[str]) -> list[Trial]:
    """Refuses (UserError) a sweep with an invalid trial or over budget, before anything starts."""
    from ftc.errors import UserError

    trials = compile_sweep(overrides)
    found = problems(trials)
    usd, hours = totals(trials)
    print(f"ftc: sweep of {len(trials)} trials, predicted ${usd:.2f} / {hours:.3f} device-hours", file=sys.stderr)
    if found:
        raise UserError("ftc: sweep refused before any trial started:\n" + "\n".join(f"  - {p}" for p in found))
    return trials
