"""Hyperparameter search with a trial budget: a Hydra sweeper on current Optuna (ask/tell), ~150 lines.

Why not hydra-optuna-sweeper: its last release (1.2.0) pins optuna<3 (current is 5.x) and SQLAlchemy-1 era code.
Why not Ray Tune: it owns the trial loop and would bypass Hydra's run dirs, launchers and callbacks. This sweeper
asks Optuna for ``n_jobs`` parameter sets at a time, launches them with whatever Hydra launcher is configured
(sequential, or ``hydra/launcher=ray`` for parallel trials) and tells Optuna each trial's metric from its
summary.json. Before the first trial it compiles the experiment and refuses a budget overrun of n_trials trials.

    ftc train -m hydra/sweeper=ftc_search hydra.sweeper.n_trials=8 \
        'train.lr=tag(log,interval(1e-5,1e-2))' 'method.r=choice(4,8,16)'
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.plugins.sweeper import Sweeper

from ftc.sweep.report import METRICS


def _distribution(o: Override) -> Optional[tuple[str, Any]]:
    v = o.value()
    if isinstance(v, ChoiceSweep):
        return "categorical", list(o.sweep_string_iterator())
    if isinstance(v, RangeSweep):
        return "categorical", list(o.sweep_string_iterator())
    if isinstance(v, IntervalSweep):
        is_int = isinstance(v.start, int) and isinstance(v.end, int)
        return ("int" if is_int else "float"), (v.start, v.end, "log" in (v.tags or set()))
    return None


class SearchSweeper(Sweeper):
    def __init__(self, n_trials: int = 8, n_jobs: int = 1, metric: str = "exact_match", seed: int = 0,
                 sampler: str = "tpe") -> None:
        self.n_trials, self.n_jobs, self.metric, self.seed, self.sampler = n_trials, n_jobs, metric, seed, sampler

    def setup(self, *, hydra_context, task_function, config) -> None:
        from hydra.core.plugins import Plugins

        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def _space(self, arguments: list[str]) -> tuple[list[str], dict[str, tuple[str, Any]]]:
        fixed, space = [], {}
        for o in OverridesParser.create().parse_overrides(arguments):
            dist = _distribution(o) if o.is_sweep_override() else None
            if dist:
                space[o.get_key_element()] = dist
            else:
                fixed.append(o.input_line)
        return fixed, space

    def _check_budget(self, fixed: list[str]) -> None:
        from hydra.types import RunMode
        from omegaconf import open_dict

        from ftc.compiler.frontend import compile_config
        from ftc.compiler.rules import budget_problems
        from ftc.errors import UserError

        # Inside a running Hydra app: compose through Hydra's own loader (the compose API would re-initialize).
        cfg = self.hydra_context.config_loader.load_configuration(
            config_name=self.config.hydra.job.config_name, overrides=fixed, run_mode=RunMode.RUN)
        with open_dict(cfg):
            del cfg["hydra"]
        plan = compile_config(cfg)
        usd, hours = plan.cost.usd * self.n_trials, plan.cost.device_hours * self.n_trials
        print(f"ftc: search of {self.n_trials} trials, predicted ~${usd:.2f} / {hours:.3f} device-hours "
              "(n_trials x the trial at the fixed values)", file=sys.stderr)
        b = plan.budget
        problems = [str(f) for f in plan.findings if f.severity == "error" and not f.key.startswith("budget.")]
        problems += [str(p) for p in budget_problems(b.max_usd, b.max_gpu_hours, usd, hours,
                                                     f"the search's {self.n_trials} trials (hydra.sweeper.n_trials)",
                                                     b.max_hours, plan.time.hours * self.n_trials)]
        if problems:
            raise UserError("ftc: search refused before any trial started:\n" +
                            "\n".join(f"  - {p}" for p in problems))

    def sweep(self, arguments: list[str]) -> list[Any]:
        import optuna

        from ftc.errors import UserError, exit_on_error

        if self.metric not in METRICS:
            raise UserError(f"ftc: hydra.sweeper.metric={self.metric} unknown (choose from {', '.join(METRICS)})")
        fixed, space = self._space(arguments)
        if not space:
            raise UserError("ftc: the search needs at least one choice(...), range(...) or interval(...) override")
        with exit_on_error():  # Hydra runs the sweeper outside the CLI's reach: a refusal exits 2 here, not a traceback
            self._check_budget(fixed)
        path, higher = METRICS[self.metric]
        sampler = optuna.samplers.TPESampler(seed=self.seed) if self.sampler == "tpe" else \
            optuna.samplers.RandomSampler(seed=self.seed)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(direction="maximize" if higher else "minimize", sampler=sampler)
        returns, done = [], 0
        while done < self.n_trials:
            batch = [study.ask() for _ in range(min(self.n_jobs, self.n_trials - done))]
            overrides = [fixed + [f"{k}={self._suggest(t, k, d)}" for k, d in space.items()] for t in batch]
            self.validate_batch_is_legal(overrides)
            results = self.launcher.launch(overrides, initial_job_idx=done)
            for trial, result in zip(batch, results):
                value = self._metric(result, path)
                if value is None:
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                else:
                    study.tell(trial, value)
            returns.extend(results)
            done += len(batch)
        self._write_best(study, fixed)
        return returns

    @staticmethod
    def _suggest(trial: Any, key: str, dist: tuple[str, Any]) -> Any:
        kind, args = dist
        if kind == "categorical":
            return trial.suggest_categorical(key, args)
        low, high, log = args
        if kind == "int":
            return trial.suggest_int(key, low, high, log=log)
        return trial.suggest_float(key, low, high, log=log)

    @staticmethod
    def _metric(result: Any, path: tuple[str, ...]) -> Optional[float]:
        try:
            value = result.return_value
        except Exception:  # noqa: BLE001 - a job that raised has no value: the trial failed
            return None
        d = (value or {}).get("summary") or {}
        for p in path:
            d = d.get(p) if isinstance(d, dict) else None
        return float(d) if isinstance(d, (int, float)) else None

    def _write_best(self, study: Any, fixed: list[str]) -> None:
        from ftc.runtime import artifacts

        completed = [t for t in study.trials if t.value is not None]
        sweep_dir = Path(self.config.hydra.sweep.dir)
        best = study.best_trial if completed else None
        record = {"metric": self.metric, "direction": study.direction.name.lower(), "n_trials": len(study.trials),
                  "completed": len(completed),
                  "best": {"number": best.number, "value": best.value, "params": best.params,
                           "overrides": fixed + [f"{k}={v}" for k, v in best.params.items()]} if best else None}
        artifacts.atomic_write_json(sweep_dir / "search.json", record)
        if best:
            print(f"ftc: best trial {best.number}: {self.metric}={best.value:.4g} with "
                  f"{json.dumps(best.params)}", file=sys.stderr)
