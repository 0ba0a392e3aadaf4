"""The compiler's front door: overrides -> ``compose`` -> typed ``Config`` -> facts -> ``compile`` -> Plan.

``compose`` is the one composition of ftc's config tree outside a running Hydra app (``ftc plan`` and ``ftc train``
are Hydra apps and receive theirs from ``@hydra.main``): the advisor, the sweep planner, calibrate and the tests use
it. Facts are gathered once per input per process (``facts.data_facts`` is memoized), so compiling one experiment
for every hardware profile or every trial reads each data file once.
"""

from __future__ import annotations

from typing import Any, Sequence

from ftc.compiler.compile import compile
from ftc.compiler.facts import gather
from ftc.compiler.rules import value_problems
from ftc.config.schema import Config
from ftc.errors import UserError
from ftc.plan import Plan


def to_typed(cfg: Any) -> Config:
    """DictConfig -> typed ``Config``; a missing required value becomes a UserError naming the key."""
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue, ValidationError

    unknown = list(_unknown_keys(cfg))
    if unknown:
        raise UserError("ftc: " + "\n  ".join(unknown))
    try:
        return OmegaConf.to_object(cfg)
    except MissingMandatoryValue as e:
        key = getattr(e, "full_key", "") or str(e)
        raise UserError(f"ftc: {key} is required (e.g. {key}=<value>)") from None
    except ValidationError as e:
        raise UserError(f"ftc: {e}") from None


def _unknown_keys(node: Any, prefix: str = "") -> Any:
    """Keys no schema declares (``+trian.lr=1``: a misspelt key appended with ``+`` would otherwise be carried along
    and never read), each with the nearest declared name."""
    import dataclasses
    import difflib

    from omegaconf import DictConfig, OmegaConf

    kind = OmegaConf.get_type(node)
    if not (isinstance(node, DictConfig) and dataclasses.is_dataclass(kind)):
        return
    declared = {f.name for f in dataclasses.fields(kind)}
    for key in node.keys():
        path = f"{prefix}{key}"
        if key not in declared and path != "hydra":
            near = difflib.get_close_matches(str(key), sorted(declared), n=1)
            yield (f"{path}: not a key of the config (fix: remove +{path}"
                   + (f"; did you mean {prefix}{near[0]}?)" if near else ")"))
        elif key in declared:
            yield from _unknown_keys(node._get_node(key), f"{path}.")


def compose(overrides: Sequence[str] = ()) -> Any:
    """The composed DictConfig of ``ftc plan <overrides>`` (conf/, recipes/ and the user's presets)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    from ftc.config.schema import register

    register()
    with initialize_config_module(config_module="ftc.conf", version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))


def plan(overrides: Sequence[str] = ()) -> Plan:
    """What ``ftc plan <overrides>`` compiles."""
    return compile_config(compose(overrides))


def compile_config(cfg: Any, hardware_choice: Any = None) -> Plan:
    """DictConfig (or typed Config) -> Plan: facts are gathered here, so ``compile`` stays pure. ``hardware_choice``
    records how hardware=auto chose (``compile``)."""
    return compile_with_facts(cfg, hardware_choice)[0]


def compile_with_facts(cfg: Any, hardware_choice: Any = None) -> tuple[Plan, Any]:
    """``compile_config`` and the facts it compiled from (the data card reads the measured token lengths)."""
    typed = cfg if isinstance(cfg, Config) else to_typed(cfg)
    # Facts are gathered on the values compile() will use: a value outside its range (refused, and compiled as its
    # default) must not reach the data selection or a library first and crash the plan.
    facts = gather(value_problems(typed)[1])
    return compile(typed, facts, hardware_choice), facts


def compile_with_trace(cfg: Any, facts: Any, trace: Any, hardware_choice: Any = None) -> Plan:
    """The plan again, with a traced step of it among the facts (``ftc plan --trace``: the CLI traces, since tracing
    needs torch; the compiler compares)."""
    import dataclasses

    typed = cfg if isinstance(cfg, Config) else to_typed(cfg)
    return compile(typed, dataclasses.replace(facts, trace=trace), hardware_choice)


def data_card(plan: Plan, facts: Any, directory: str, chars_per_token: float) -> str:
    """``ftc plan --data-card DIR``: the data card of the plan (ftc.datacard), token lengths from the training file's
    first rows (counted with the model's tokenizer when it is on disk, else characters / model.chars_per_token)."""
    from pathlib import Path

    from ftc import datacard

    train = facts.data.get("train")
    if train is not None and train.lengths:
        lengths, what = list(train.lengths), f"first {len(train.lengths)} rows, the model's tokenizer"
    elif train is not None and train.row_chars:
        lengths, what = [round(c / chars_per_token) for c in train.row_chars], \
            f"first {len(train.row_chars)} rows, estimated at {chars_per_token:g} characters per token"
    else:
        lengths, what = [], ""
    d = plan.data
    datacard.write(Path(directory), d, d.examples, d.dropped, d.quality, lengths, what)
    return str(Path(directory) / datacard.MD)
