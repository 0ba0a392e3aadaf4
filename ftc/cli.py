"""``ftc`` command line. ``plan`` and ``train`` are Hydra apps (every Hydra flag works); the rest take a run dir.

Heavy libraries (torch, transformers, ray...) are imported only inside the commands that run models.
"""

from __future__ import annotations

import sys
from typing import Callable

from ftc.errors import UserError

USAGE = """usage: ftc <command> [options] [hydra overrides]

commands:
  plan [--json] [overrides]      compile the experiment and print the plan (no torch, no downloads)
  plan -m [sweep overrides]      compile every trial of a sweep and print its total cost
  train [overrides]              run the plan (re-running with the same output_dir resumes)
  train -m [sweep overrides]     hyperparameter sweep (Hydra multirun)
  eval RUN_DIR                   held-out metrics of base vs tuned model
  generate RUN_DIR prompt="..."  generate with the tuned model
  merge RUN_DIR [out=DIR]        merge the adapter into the base model (safetensors + tokenizer)
  sweep-report SWEEP_DIR         summary table + plot of a sweep

examples:
  ftc plan model=mistral_7b method=qlora hardware=rtx4090 data=file data.path=tickets.jsonl
  ftc plan recipe=lora_llama3_8b_zero3_x4
  ftc train method.r=8 train.lr=1e-4
  ftc train -m method.r=8,16 train.lr=1e-4,2e-4
Hydra flags work after plan/train: --cfg job, --info, --help, -m, --shell-completion.
Config groups: model, method, data, hardware, launcher, recipe; sections: train, eval, budget (docs/CONFIG.md).
"""


def _fail(message: str, code: int = 2) -> None:
    print(message, file=sys.stderr)
    raise SystemExit(code)


def _hydra_app(task: Callable, argv: list[str], extra: list[str]) -> None:
    """Runs ``task(cfg)`` as a Hydra app over ``argv`` (overrides and Hydra flags); ``extra`` go first."""
    import hydra

    from ftc.config.schema import register

    register()
    sys.argv = [sys.argv[0]] + _with_extra_overrides(argv, extra)
    hydra.main(config_path="pkg://ftc.conf", config_name="config", version_base="1.3")(task)()


def _with_extra_overrides(argv: list[str], extra: list[str]) -> list[str]:
    """Places ftc's own overrides inside the user's run of overrides: Hydra's argparse takes them as one
    contiguous positional list, and an optional-valued flag (``--info``) would swallow one placed after it."""
    is_override = [not a.startswith("-") and ("=" in a or a.startswith("~")) for a in argv]
    if not any(is_override):
        return extra + argv
    last = max(i for i, o in enumerate(is_override) if o)
    return argv[: last + 1] + extra + argv[last + 1:]


def to_typed(cfg):
    """DictConfig -> typed ``Config``; a missing required value becomes a UserError naming the key."""
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue, ValidationError

    try:
        return OmegaConf.to_object(cfg)
    except MissingMandatoryValue as e:
        key = getattr(e, "full_key", "") or str(e)
        raise UserError(f"ftc: {key} is required (e.g. {key}=<value>)") from None
    except ValidationError as e:
        raise UserError(f"ftc: {e}") from None


def compile_config(cfg):
    """DictConfig -> Plan (facts gathered here, compile stays pure)."""
    from ftc.compiler.compile import compile
    from ftc.compiler.facts import gather

    typed = to_typed(cfg)
    return compile(typed, gather(typed))


# --- plan ----------------------------------------------------------------------------------------------------------
def _plan(argv: list[str]) -> None:
    as_json = "--json" in argv
    argv = [a for a in argv if a != "--json"]
    if "-m" in argv or "--multirun" in argv:
        from ftc.sweep.plan import plan_sweep

        overrides = [a for a in argv if a not in ("-m", "--multirun")]
        raise SystemExit(plan_sweep(overrides, as_json=as_json))

    def task(cfg) -> None:
        from ftc.render import errors_text, plan_table

        try:
            plan = compile_config(cfg)
        except UserError as e:
            _fail(str(e))
        print(plan.to_json() if as_json else plan_table(plan))
        if plan.errors:
            if as_json:
                print(errors_text(plan), file=sys.stderr)
            raise SystemExit(2)

    # `ftc plan` writes nothing: no run dir, no log file.
    _hydra_app(task, argv, ["hydra.run.dir=.", "hydra/job_logging=disabled", "hydra/hydra_logging=disabled"])


# --- train ---------------------------------------------------------------------------------------------------------
def _train(argv: list[str]) -> None:
    multirun = "-m" in argv or "--multirun" in argv
    if multirun and not any(a.startswith("hydra/sweeper=") for a in argv):
        from ftc.sweep.plan import check_sweep  # (a search sweeper checks its own n_trials budget)

        overrides = [a for a in argv if not a.startswith("-") and not a.startswith("hydra")]
        check_sweep(overrides)  # whole sweep compiled and budget-checked before any trial starts

    def task(cfg):
        from ftc.launch import run_task

        try:
            return run_task(cfg)
        except UserError as e:
            _fail(str(e))

    _hydra_app(task, argv, ["hydra.job.name=train"])


# --- run-dir commands ------------------------------------------------------------------------------------------------
def _kv(args: list[str], allowed: set[str]) -> tuple[str, dict[str, str]]:
    if not args or "=" in args[0]:
        _fail("ftc: give the run directory first, e.g. `ftc eval runs/t1`")
    opts = {}
    for a in args[1:]:
        key, sep, value = a.partition("=")
        if not sep or key not in allowed:
            _fail(f"ftc: unknown option '{a}' (options: {', '.join(sorted(allowed))})")
        opts[key] = value
    return args[0], opts


def _run_dir_command(name: str, argv: list[str]) -> None:
    from ftc import commands

    if name == "eval":
        run_dir, opts = _kv(argv, {"max_samples"})
        commands.evaluate(run_dir, **opts)
    elif name == "generate":
        run_dir, opts = _kv(argv, {"prompt", "max_new_tokens", "base"})
        if "prompt" not in opts:
            _fail('ftc: generate needs prompt="..."')
        commands.generate(run_dir, **opts)
    elif name == "merge":
        run_dir, opts = _kv(argv, {"out"})
        commands.merge(run_dir, **opts)
    elif name == "sweep-report":
        from ftc.sweep.report import write_report

        sweep_dir, opts = _kv(argv, {"metric"})
        print(write_report(sweep_dir, **opts))


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    try:
        if command == "plan":
            _plan(rest)
        elif command == "train":
            _train(rest)
        elif command in ("eval", "generate", "merge", "sweep-report"):
            _run_dir_command(command, rest)
        else:
            _fail(f"ftc: unknown command '{command}'\n\n{USAGE}")
    except UserError as e:
        _fail(str(e))
    except KeyboardInterrupt:
        _fail("ftc: interrupted (re-run the same command with the same output_dir to resume)", 130)


if __name__ == "__main__":
    main()
