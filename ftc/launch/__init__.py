"""Executors: run a Plan with the launcher it names. Heavy imports happen inside the executors."""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

from ftc.compiler.plan import Plan


def prepare_run_dir(cfg: Any, plan: Plan, run_dir: Path) -> Plan:
    """Fixes the plan's output_dir to an absolute path and writes config.yaml (redacted) and plan.json."""
    import yaml
    from omegaconf import OmegaConf

    from ftc.runtime import artifacts

    plan = dataclasses.replace(plan, output_dir=str(run_dir))
    run_dir.mkdir(parents=True, exist_ok=True)
    container = artifacts.redact(OmegaConf.to_container(cfg, resolve=True))
    artifacts.atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(container, sort_keys=False))
    artifacts.atomic_write_json(run_dir / "plan.json", plan.to_dict())
    return plan


def run_task(cfg: Any) -> dict[str, Any]:
    """The body of `ftc train` for one run or one sweep trial."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from ftc.cli import compile_config
    from ftc.errors import UserError
    from ftc.render import errors_text

    plan = compile_config(cfg)
    if plan.errors:
        raise UserError(errors_text(plan))
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir).resolve()
    plan = prepare_run_dir(cfg, plan, run_dir)
    if hc.mode == RunMode.MULTIRUN:
        from ftc.sweep.trial import run_trial

        if "ray" in str(hc.launcher.get("_target_", "")).lower() and plan.launcher.kind == "ray":
            # The trial is already a Ray task holding its resources; a Ray Train job inside it would wait for
            # resources the sweep itself holds (deadlock on a full cluster).
            raise UserError("ftc: parallel Ray sweep trials run with launcher=local inside their Ray task "
                            "(fix: launcher=local, and reserve devices with hydra.launcher.ray.remote.num_gpus=1)")

        return run_trial(run_dir, list(hc.overrides.task))
    return execute(plan)


def execute(plan: Plan) -> dict[str, Any]:
    """Runs the plan with its launcher and prints where the results are."""
    from ftc.data.load import DataError
    from ftc.runtime.train import TrainingDiverged

    try:
        if plan.launcher.kind == "ray":
            from ftc.launch.ray import execute as run
        else:
            from ftc.launch.local import execute as run
        summary = run(plan)
    except DataError as e:  # a bad file or row: the message names file:line and the fix
        print(f"ftc: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except TrainingDiverged as e:
        print(f"ftc: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    run_dir = Path(plan.output_dir)
    ev = summary.get("eval")
    print(f"\nftc: done in {summary['wall_time_s']:.0f} s -> {run_dir}")
    if ev:
        print(f"ftc: {ev['verdict']}")
    print(f"ftc: report {run_dir / 'report.md'}, adapter {run_dir / ('adapter' if plan.method.peft else 'model')}")
    return summary


def finish(plan: Plan, training: dict[str, Any], started: float, model: Any = None, tokenizer: Any = None) -> dict:
    """Evaluation (reloading the saved adapter from disk unless a model is given) and the report."""
    from ftc.runtime import artifacts, report
    from ftc.runtime.evaluate import evaluate_run

    evaluation = evaluate_run(plan, plan.output_dir, model, tokenizer) if plan.eval.enabled else None
    summary = report.write(plan, plan.output_dir, training, evaluation, time.time() - started)
    artifacts.event(plan.output_dir, "finished", wall_time_s=summary["wall_time_s"])
    return summary
