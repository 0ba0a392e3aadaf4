"""``ftc`` command line. ``plan`` and ``train`` are Hydra apps (every Hydra flag works); the rest take a run dir.

Heavy libraries (torch, transformers, ray...) are imported only inside the commands that run models.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from ftc.errors import UserError, exit_on_error
from ftc.sweep.trial import RUN_PLAN


def _hydra_app(task: Callable, argv: list[str], extra: list[str]) -> None:
    """Runs ``task(cfg)`` as a Hydra app over ``argv`` (overrides and Hydra flags); ``extra`` go first."""
    import hydra

    from ftc.config.schema import register

    register()
    from ftc.compiler.frontend import with_open_mappings

    sys.argv = [sys.argv[0]] + _with_extra_overrides(with_open_mappings(argv), extra)
    full_error = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises its composition errors instead of printing them: ftc says them
    try:
        hydra.main(config_path="pkg://ftc.conf", config_name="config", version_base="1.3")(task)()
    except Exception as e:  # noqa: BLE001 - only Hydra's and OmegaConf's own errors are config mistakes
        from ftc.compiler.frontend import config_mistake

        mistake = config_mistake(e)
        if mistake is None:
            raise
        raise UserError(mistake) from None
    finally:
        if full_error is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = full_error


def _with_extra_overrides(argv: list[str], extra: list[str]) -> list[str]:
    """Places ftc's own overrides inside the user's run of overrides: Hydra's argparse takes them as one
    contiguous positional list, and an optional-valued flag (``--info``) would swallow one placed after it."""
    is_override = [not a.startswith("-") and ("=" in a or a.startswith("~")) for a in argv]
    if not any(is_override):
        return extra + argv
    last = max(i for i, o in enumerate(is_override) if o)
    return argv[: last + 1] + extra + argv[last + 1:]


# --- plan ----------------------------------------------------------------------------------------------------------
def _choice(advice: Any) -> Any:
    """hardware=auto's choice as the compiler records it: the decision line (choice and runner-up) and the whole
    ranked table (plan.json ``hardware_table``); None without hardware=auto."""
    if advice is None:
        return None
    from ftc.advisor import decision

    options, chosen = advice
    return decision(options, chosen), tuple(o.row() for o in options)


def _take_option(argv: list[str], name: str) -> tuple[list[str], str | None]:
    """``argv`` without ``name VALUE`` / ``name=VALUE``, and VALUE (None when absent)."""
    rest, value = [], None
    it = iter(argv)
    for a in it:
        if a == name:
            value = next(it, None)
            if value is None:
                raise SystemExit(f"ftc: {name} needs a directory ({name} DIR)")
        elif a.startswith(name + "="):
            value = a.split("=", 1)[1]
        else:
            rest.append(a)
    return rest, value


def _plan(argv: list[str]) -> None:
    from ftc.advisor import resolve, table

    if "--help" in argv or "-h" in argv:
        from ftc.completion import command_help

        print(command_help("plan"))
        return

    as_json, trace = "--json" in argv, "--trace" in argv
    argv, card_dir = _take_option([a for a in argv if a not in ("--json", "--trace")], "--data-card")
    argv, advice = resolve(argv)
    if advice and not as_json:
        print("hardware=auto: every GPU profile, cheapest first\n" + table(advice[0]) + "\n")
    if "-m" in argv or "--multirun" in argv:
        from ftc.sweep.preflight import plan_sweep

        overrides = [a for a in argv if a not in ("-m", "--multirun")]
        raise SystemExit(plan_sweep(overrides, as_json=as_json))

    def task(cfg) -> None:
        from ftc.compiler.frontend import compile_with_facts, data_card
        from ftc.hub import download_note
        from ftc.pretrained import BUILT_IN, install_note
        from ftc.render import errors_text, plan_table

        with exit_on_error():
            plan, facts = compile_with_facts(cfg, _choice(advice))
            if trace and not plan.errors:
                plan = _traced(cfg, plan, facts, _choice(advice))
        if not as_json and any(f.key.startswith("data.") for f in plan.findings if f.severity == "error"):
            # Steps, memory and price computed from rows that failed their checks would be numbers about nothing.
            print(errors_text(plan), file=sys.stderr)
            raise SystemExit(2)
        print(plan.to_json() if as_json else plan_table(plan))
        note = None if plan.errors else download_note(facts.weights_missing, plan.model.params, facts.model_config)
        note = note or (install_note(plan.model.path) if plan.model.path in BUILT_IN else None)
        if note:
            print(note, file=sys.stderr)
        if card_dir:
            print(f"data card: {data_card(plan, facts, card_dir, cfg.model.chars_per_token)}", file=sys.stderr)
        if plan.errors:
            if as_json:
                print(errors_text(plan), file=sys.stderr)
            raise SystemExit(2)

    # `ftc plan` writes nothing: no run dir, no log file.
    _hydra_app(task, argv, ["hydra.run.dir=.", "hydra/job_logging=disabled", "hydra/hydra_logging=disabled"])


def _traced(cfg: Any, plan: Any, facts: Any, choice: Any) -> Any:
    """``ftc plan --trace``: one training step of the plan's shape traced with the real model code (torch needed),
    then the plan compiled again with it (memory.traced, time.traced)."""
    from ftc.compiler.frontend import compile_with_trace
    from ftc.runtime.trace import TraceUnsupported, trace_step

    try:
        traced = trace_step(plan, plan.batch.micro * plan.objective.sequences_per_example, plan.memory.seq)
    except UserError:
        raise
    except TraceUnsupported as e:
        print(f"ftc: --trace: {e}", file=sys.stderr)
        return plan
    except Exception as e:  # noqa: BLE001 - a model code path fake tensors cannot run: said, the plan stands
        print(f"ftc: --trace could not run {plan.model.path} ({plan.model.family}) under fake tensors "
              f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); the plan's figures are the analytic model's",
              file=sys.stderr)
        return plan
    return compile_with_trace(cfg, facts, traced, choice)


def traced_for_run(cfg: Any, plan: Any, facts: Any, choice: Any = None) -> Any:
    """``ftc train`` on a GPU traces the planned step with the real model code before any weight is downloaded: the
    plan it saves carries memory.traced and time.traced, and a disagreement over 10% is a warning in the run's log.
    A CPU target (the built-in demo, the tests) skips it: ~5 s there against a step of milliseconds; ``ftc plan
    --trace`` traces any plan."""
    if plan.hardware.accelerator != "cuda":
        return plan
    try:
        traced = _traced(cfg, plan, facts, choice)
    except UserError as e:  # no config.json to trace from: the run goes on (its own load says what is missing)
        print(f"ftc: the step was not traced: {e}", file=sys.stderr)
        return plan
    for warning in traced.warnings:
        if warning not in plan.warnings:
            print(f"ftc: warning: {warning}", file=sys.stderr)
    return traced


# --- train ---------------------------------------------------------------------------------------------------------
def _train(argv: list[str]) -> None:
    from ftc.advisor import resolve, table

    if "--help" in argv or "-h" in argv:
        from ftc.completion import command_help

        print(command_help("train"))
        return

    argv, advice = resolve(argv)
    if advice:
        print("hardware=auto: every GPU profile, cheapest first\n" + table(advice[0]) + "\n", file=sys.stderr)
    if "-m" in argv or "--multirun" in argv:
        from ftc.sweep.preflight import check_sweep
        from hydra_plugins.ftc_search import register

        register()
        if not any(a.startswith("hydra/sweeper=") for a in argv):  # a search sweeper checks its own n_trials budget
            overrides = [a for a in argv if not a.startswith("-") and not a.startswith("hydra")]
            check_sweep(overrides)  # whole sweep compiled and budget-checked before any trial starts

    def task(cfg):
        with exit_on_error():
            return run_task(cfg, advice)

    _hydra_app(task, argv, ["hydra.job.name=train"])


def run_task(cfg: Any, advice: Any = None) -> dict[str, Any]:
    """The Hydra job body of `ftc train`: one run, or one trial of a sweep (run in its own process)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from ftc.compiler.frontend import compile_with_facts
    from ftc.paths import run_lock
    from ftc.render import errors_text, warnings_text
    from ftc.runtime.artifacts import prepare_run_dir

    plan, facts = compile_with_facts(cfg, _choice(advice))
    if plan.errors:
        raise UserError(errors_text(plan))
    plan = traced_for_run(cfg, plan, facts, _choice(advice))
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir).resolve()
    with run_lock(run_dir):  # a second `ftc train` into this directory refuses while this one runs
        from ftc.launch import start_or_resume

        start_or_resume(plan.relocated(str(run_dir)))  # a completed run is refused before its files are touched
        plan = prepare_run_dir(OmegaConf.to_container(cfg, resolve=True), plan, run_dir)
        if warnings_text(plan):  # what `ftc plan` would have warned about, before any weight is loaded
            print(warnings_text(plan), file=sys.stderr)
        from ftc.hub import download_note

        note = download_note(facts.weights_missing, plan.model.params, facts.model_config)
        if note:  # the size before huggingface_hub's progress bars (offline: the load refuses in one line)
            print(note, file=sys.stderr)
        if hc.mode == RunMode.MULTIRUN:
            from ftc.config.launchers import LAUNCHER_KINDS
            from ftc.sweep.trial import run_trial

            if "ray" in str(hc.launcher.get("_target_", "")).lower() and LAUNCHER_KINDS[plan.launcher.kind].ray_train:
                # The trial is already a Ray task holding its resources; a Ray Train job inside it would wait for
                # resources the sweep itself holds (deadlock on a full cluster).
                raise UserError("ftc: parallel Ray sweep trials run with launcher=local inside their Ray task "
                                "(fix: launcher=local, and reserve devices with hydra.launcher.ray.remote.num_gpus=1)")
            return run_trial(run_dir, list(hc.overrides.task))
        from ftc.launch import execute

        return execute(plan)


# --- calibrate ------------------------------------------------------------------------------------------------------
def _calibrate(argv: list[str]) -> None:
    """Probes this machine on the experiment's model shape, writes a hardware profile and shows what it changes."""
    from ftc.compiler.frontend import plan
    from ftc.runtime import calibrate

    name = next((a.split("=", 1)[1] for a in argv if a.startswith("profile=")), "calibrated")
    overrides = [a for a in argv if not a.startswith("profile=")]
    before = plan(overrides)
    print(f"ftc: probing {before.hardware.name} with a model of {before.model.name}'s shape (under a minute)...",
          file=sys.stderr)
    with exit_on_error():
        result = calibrate.run(before, name, overrides)
        after = plan(overrides + [f"hardware={name}"])  # compose registers the new profile
        print(calibrate.report(before, after, result["measured"], overrides))
    print(f"ftc: wrote {result['profile']}: use it with hardware={name}")


# --- run-dir commands ------------------------------------------------------------------------------------------------
def _flag(value: str) -> bool:
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise ValueError(value)


def _options(args: list[str], allowed: dict[str, Callable[[str], Any]]) -> tuple[str, dict[str, Any]]:
    """``RUN_DIR key=value ...`` -> (run dir, options converted to their types); a bad option is a UserError."""
    if not args or "=" in args[0]:
        raise UserError("ftc: give the run directory first, e.g. `ftc eval runs/t1`")
    opts = {}
    for a in args[1:]:
        key, sep, value = a.partition("=")
        if not sep or key not in allowed:
            raise UserError(f"ftc: unknown option '{a}' (options: {', '.join(sorted(allowed))})")
        try:
            opts[key] = allowed[key](value)
        except ValueError:
            raise UserError(f"ftc: {key}={value}: expected {allowed[key].__name__.lstrip('_')}") from None
    return args[0], opts


def _eval(run_dir: str, **opts: Any) -> None:
    from ftc import commands

    commands.evaluate(run_dir, **opts)


def _generate(run_dir: str, **opts: Any) -> None:
    from ftc import commands

    if "prompt" not in opts:
        raise UserError('ftc: generate needs prompt="..."')
    commands.generate(run_dir, **opts)


def _merge(run_dir: str, **opts: Any) -> None:
    from ftc import commands

    commands.merge(run_dir, **opts)


def _export(run_dir: str, **opts: Any) -> None:
    from ftc import commands

    commands.export(run_dir, **opts)


def _serve(run_dir: str, **opts: Any) -> None:
    from ftc import commands

    raise SystemExit(commands.serve(run_dir, **opts))


def _sweep_report(sweep_dir: str, **opts: Any) -> None:
    from ftc.sweep.report import write_report

    print(write_report(sweep_dir, **opts))


def _run_plan(argv: list[str]) -> None:
    """A sweep trial's process: run the run dir's saved plan."""
    from ftc.launch import execute
    from ftc.plan import Plan

    execute(Plan.load(str(Path(argv[0]) / "plan.json")))


def _complete(argv: list[str]) -> None:
    """Bash asks: ``ftc __complete LINE`` (``ftc completion bash``)."""
    from ftc import completion

    print("\n".join(completion.for_bash(argv[0] if argv else "", COMMANDS)))


def _completion(argv: list[str]) -> None:
    from ftc import completion

    if argv != ["bash"]:
        print("usage: ftc completion bash   (then: eval \"$(ftc completion bash)\")", file=sys.stderr)
        raise SystemExit(2)
    print(completion.BASH, end="")


# --- the commands ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Command:
    """One ``ftc`` command. ``COMMANDS`` is the only list of them: the usage text, the dispatch and the shell
    completion are read from it."""

    name: str
    usage: tuple[tuple[str, str], ...]
    """(how it is written after ``ftc``, what it does) for each form the usage text shows; none: hidden."""
    run: Callable[..., None]
    """Called with the arguments after the name; with ``options``, as ``run(RUN_DIR, **options given)``."""
    options: Optional[dict[str, Callable[[str], Any]]] = None
    """A command over a run (or sweep) directory: the ``key=value`` options it takes, each with its type."""
    masked: bool = True
    """Runs with every printed line passed through the secret masker and user errors as one line."""

    def __call__(self, argv: list[str]) -> None:
        if self.options is None:
            self.run(argv)
        else:
            run_dir, opts = _options(argv, self.options)
            self.run(run_dir, **opts)


COMMANDS: tuple[Command, ...] = (
    Command("plan", (
        ("plan [--json] [--data-card DIR] [--trace] [overrides]",
         "compile the experiment and print the plan (no torch, no downloads); --data-card writes DIR/data_card.md "
         "and DIR/data_tokens.png; --trace runs one step of the real model under fake tensors (needs torch, no "
         "weights) and shows its activations and FLOPs beside the estimate"),
        ("plan -m [sweep overrides]", "compile every trial of a sweep and print its total cost"),
        ("plan hardware=auto [...]", "rank every GPU profile by predicted cost and plan on the cheapest that fits")),
        _plan),
    Command("train", (
        ("train [overrides]", "run the plan (re-running with the same output_dir resumes)"),
        ("train -m [sweep overrides]", "hyperparameter sweep (Hydra multirun)")), _train),
    Command("calibrate", (("calibrate [profile=NAME] [...]",
                           "measure this machine (<1 min) and write hardware profile NAME (default: calibrated)"),),
            _calibrate),
    Command("eval", (("eval RUN_DIR [max_samples=N]", "held-out metrics of base vs tuned model"),),
            _eval, {"max_samples": int}),
    Command("generate", (('generate RUN_DIR prompt="..." [system="..."] [input="..."] [max_new_tokens=N] [base=true]',
                          "generate with the tuned model (base=true: the base model), the prompt in training's format "
                          "(chat data: training's shared system prompt unless system= is given; alpaca: input=)"),),
            _generate, {"prompt": str, "max_new_tokens": int, "base": _flag, "system": str, "input": str}),
    Command("merge", (("merge RUN_DIR [out=DIR]", "merge the adapter into the base model (safetensors + tokenizer)"),),
            _merge, {"out": str}),
    Command("export", (("export RUN_DIR [format=gguf|merged] [quant=f16|q8_0|q4_k_m]",
                        "GGUF for llama.cpp/Ollama (training's prompt format and stop tokens inside, an Ollama "
                        "Modelfile beside it), or the merged model"),),
            _export, {"format": str, "quant": str}),
    Command("serve", (("serve RUN_DIR [engine=auto|llama.cpp|vllm] [host=127.0.0.1] [port=8000] [quant=...]",
                       "an OpenAI-compatible endpoint (/v1/completions, /v1/chat/completions)"),),
            _serve, {"engine": str, "host": str, "port": int, "quant": str}),
    Command("sweep-report", (("sweep-report SWEEP_DIR [metric=NAME]", "summary table + plot of a sweep"),),
            _sweep_report, {"metric": str}),
    Command("completion", (("completion bash", 'the bash completion script: eval "$(ftc completion bash)"'),),
            _completion, masked=False),
    Command("__complete", (), _complete, masked=False),
    Command(RUN_PLAN, (), _run_plan),
)
BY_NAME = {c.name: c for c in COMMANDS}
EXAMPLES = (
    "ftc plan model=mistral_7b method=qlora hardware=rtx4090 data=file data.path=tickets.jsonl",
    "ftc plan recipe=lora_llama3_8b_zero3_x4",
    "ftc train method.r=8 train.lr=1e-4",
    "ftc train -m method.r=8,16 train.lr=1e-4,2e-4",
)


def usage() -> str:
    """``ftc --help``'s text, from ``COMMANDS``."""
    import textwrap

    lines = ["usage: ftc <command> [options] [hydra overrides]", "", "commands:"]
    for command in COMMANDS:
        for form, what in command.usage:
            head = f"  {form}"
            text = textwrap.wrap(what, width=118 - 33)
            if len(head) > 32:
                lines.append(head)
                lines += [" " * 33 + t for t in text]
            else:
                lines += [f"{head:<33}{text[0]}"] + [" " * 33 + t for t in text[1:]]
    lines += ["", "examples:"] + [f"  {e}" for e in EXAMPLES]
    lines.append("Hydra flags work after plan/train: --cfg job, --info, -m; ftc plan --help lists the common "
                 "overrides.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    try:
        _main(argv)
    except BrokenPipeError:  # `ftc plan --help | head`: the reader left; no traceback for it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(141) from None


def _main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    from ftc import completion

    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage() + "\n" + completion.groups_help())
        return
    name, rest = argv[0], argv[1:]
    command = BY_NAME.get(name)
    if command is not None and not command.masked:
        command(rest)
        return
    from ftc.secrets import masked_console

    with masked_console(), exit_on_error():  # every line printed, Hydra's error line included, is masked
        if command is None:
            import difflib

            near = difflib.get_close_matches(name, [c.name for c in COMMANDS if c.usage], n=1)
            said = f" (did you mean 'ftc {near[0]}'?)" if near else ""
            raise UserError(f"ftc: unknown command '{name}'{said}\n\n{usage()}")
        command(rest)


if __name__ == "__main__":
    main()
