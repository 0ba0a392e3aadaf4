"""The compiler's front door: overrides -> ``compose`` -> typed ``Config`` -> facts -> ``compile`` -> Plan.

``compose`` is the one composition of ftc's config tree outside a running Hydra app (``ftc plan`` and ``ftc train``
are Hydra apps and receive theirs from ``@hydra.main``): the advisor, the sweep planner, calibrate and the tests use
it. Facts are gathered once per input per process (``facts.data_facts`` is memoized), so compiling one experiment
for every hardware profile or every trial reads each data file once.
"""

from __future__ import annotations

import sys
from typing import Any, Optional, Sequence

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


# Keys a release replaced, with what says the same now.
REPLACED_KEYS = {
    "eval.compare_base": "fix: eval.baselines=[] for no comparison, eval.baselines=[base] for the base model only; "
                         "the default [base,prompted] adds the base model prompted with eval.shots examples",
}


def config_mistake(e: Exception, argv: Sequence[str] = ()) -> Optional[str]:
    """Hydra's or OmegaConf's error about the overrides as one ftc line with the nearest valid name; None for any
    other exception."""
    import difflib
    import re

    from hydra.errors import HydraException, MissingConfigException
    from omegaconf.errors import OmegaConfBaseException

    if not isinstance(e, (HydraException, OmegaConfBaseException)):
        return None
    if isinstance(e, MissingConfigException) and e.options is not None:
        group, _, option = str(getattr(e, "missing_cfg_file", "") or "").rpartition("/")
        options = sorted(o for o in e.options if not o.startswith("base_"))  # base_<group>: the schema, not a choice
        near = difflib.get_close_matches(option, options, n=1)
        said = f"did you mean {group}={near[0]}? " if near else ""
        return f"ftc: {group}={option}: no such {group} option ({said}options: {', '.join(options)})"
    unknown = re.search(r"Could not override '([^']+)'", str(e))
    if unknown and unknown.group(1) in REPLACED_KEYS:
        return f"ftc: {unknown.group(1)}: replaced ({REPLACED_KEYS[unknown.group(1)]})"
    if unknown:
        key = unknown.group(1)
        parent, _, leaf = key.rpartition(".")
        names = _config_names(parent)
        near = difflib.get_close_matches(leaf, names, n=1)
        if near:
            given = next((a.split("=", 1)[1] for a in (argv or sys.argv) if a.startswith(key + "=")), None)
            fixed = f"{(parent + '.') if parent else ''}{near[0]}" + (f"={given}" if given is not None else "")
            return f"ftc: {key}: not a config key (did you mean {fixed}?)"
        return f"ftc: {key}: not a config key (keys here: {', '.join(sorted(names))})"
    cause = e.__cause__ if e.__cause__ is not None else e
    first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    merging = re.search(r"Error merging override (\S+)", str(e))
    return f"ftc: {merging.group(1) + ': ' if merging else ''}{first}"


def _config_names(parent: str) -> list[str]:
    """The names one level below ``parent`` in ftc's config: the groups and sections at the top, else a section's
    fields."""
    import dataclasses

    from ftc.config.schema import Config

    node: object = Config
    for part in filter(None, parent.split(".")):
        fields = {f.name: f for f in dataclasses.fields(node)} if dataclasses.is_dataclass(node) else {}
        if part not in fields:
            return []
        node = _field_type(fields[part])
    names = [f.name for f in dataclasses.fields(node)] if dataclasses.is_dataclass(node) else []
    return names + (["recipe"] if not parent else [])


def _field_type(f: object) -> object:
    from ftc.config import schema

    kind = f.type  # type: ignore[attr-defined]
    return getattr(schema, kind, None) if isinstance(kind, str) else kind  # annotations are strings in schema.py


# Config fields that are open mappings (their keys are the user's: column names, trainer arguments): a key set on
# them is added whether or not the default holds it, so `data.fields.instruction=question` works as printed.
OPEN_MAPPINGS = ("data.fields.", "train.trainer_kwargs.")


def with_open_mappings(overrides: Sequence[str]) -> list[str]:
    """``overrides`` with each plain ``<open mapping>.<key>=value`` made Hydra's add-or-set (``++``): Hydra's
    struct mode otherwise refuses a key the default mapping lacks ("Key 'instruction' is not in struct")."""
    return [f"++{o}" if o.startswith(OPEN_MAPPINGS) and "=" in o else o for o in overrides]


def compose(overrides: Sequence[str] = ()) -> Any:
    """The composed DictConfig of ``ftc plan <overrides>`` (conf/, recipes/ and the user's presets)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    from ftc.config.schema import register

    register()
    with initialize_config_module(config_module="ftc.conf", version_base="1.3"):
        try:
            return hydra_compose(config_name="config", overrides=with_open_mappings(overrides))
        except Exception as e:  # noqa: BLE001 - only Hydra's and OmegaConf's own errors are config mistakes
            mistake = config_mistake(e, overrides)
            if mistake is None:
                raise
            raise UserError(mistake) from None


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
