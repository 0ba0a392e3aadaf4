"""Shell completion for ``ftc`` and the config groups ``ftc --help`` lists, both read from conf/ and the schema (no
list to keep in step by hand).

``eval "$(ftc completion bash)"`` (or the line in ~/.bashrc) installs it: bash calls ``ftc __complete LINE`` with the
command line up to the cursor and offers what it prints, one candidate a line: the commands, then for ``plan`` and
``train`` every config group (``model=``) and its options (``model=llama3_8b``), the sections (``train.``) and their
keys (``train.lr=``). Bash splits words at ``=`` and ``:`` (COMP_WORDBREAKS), so a candidate is printed from the last
such character of the word being completed on, as bash expects.
"""

from __future__ import annotations

import dataclasses
import textwrap
from importlib.resources import files
from typing import Any, Iterator, Sequence

HIDDEN_GROUPS = ("hydra",)  # Hydra's own launcher and sweeper plugins: set through hydra/..., not an experiment

BASH = r"""# ftc: bash completion (eval "$(ftc completion bash)")
_ftc() {
    local IFS=$'\n'
    COMPREPLY=($(ftc __complete "${COMP_LINE:0:$COMP_POINT}" 2>/dev/null))
    [[ ${#COMPREPLY[@]} -eq 1 && ${COMPREPLY[0]} == *[=.] ]] && compopt -o nospace 2>/dev/null
    return 0
}
complete -F _ftc ftc
"""


def groups() -> dict[str, list[str]]:
    """Each config group under conf/ with its options (``base_*`` files are the schema's defaults, not choices)."""
    root = files("ftc.conf")
    found = {}
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.is_dir() and entry.name not in HIDDEN_GROUPS and not entry.name.startswith(("_", ".")):
            options = sorted(f.name[:-5] for f in entry.iterdir()
                             if f.name.endswith(".yaml") and not f.name.startswith("base_"))
            if options:
                found[entry.name] = options
    return found


def groups_help() -> str:
    """The config groups and their options, for ``ftc --help``."""
    lines = ["config groups (group=option; any field is an override too: docs/CONFIG.md):"]
    for name, options in groups().items():
        lines += textwrap.wrap(", ".join(options), width=118, initial_indent=f"  {name + ':':<14}",
                               subsequent_indent=" " * 16, break_on_hyphens=False)
    return "\n".join(lines)


COMMON = (  # the overrides most runs set, each with what it does (the whole list: docs/CONFIG.md)
    ("model=NAME / model=local model.path=DIR|HUB_ID", "the base model (a catalog name, a directory or a hub id)"),
    ("method=qlora|lora|dora|full  method.r=16", "how it trains, and the adapter's rank"),
    ("data=file data.path=FILE  data.format=alpaca|chat|...", "your data (jsonl, json, csv, parquet; local or s3://)"),
    ("hardware=NAME|auto  launcher=local|ray", "where it runs (auto: the cheapest profile that fits)"),
    ("objective=sft|dpo|orpo|kto|grpo", "what it optimises"),
    ("train.lr=2e-4  train.epochs=1  train.max_steps=N", "the schedule"),
    ("data.max_length=2048  train.micro_batch_size=null", "sequence length; null micro batch: the largest that fits"),
    ("budget.max_usd=5", "refuse a plan (or a sweep) that costs more"),
)


def command_help(command: str) -> str:
    """``ftc plan --help`` / ``ftc train --help``: ftc's own, not Hydra's dump of its internals."""
    lines = [f"usage: ftc {command} [--json] [--trace] [--data-card DIR] [-m] [group=option ...] [key=value ...]"
             if command == "plan" else f"usage: ftc {command} [-m] [group=option ...] [key=value ...]", "",
             "common overrides:"]
    lines += [f"  {what:<56}{why}" for what, why in COMMON]
    lines += ["", groups_help(), "",
              "Every field of docs/CONFIG.md is an override (section.key=value); -m sweeps comma-separated values.",
              "Hydra's own flags still work: --cfg job shows the composed config, --info where it came from."]
    return "\n".join(lines)


def _keys() -> Iterator[str]:
    """``section.key`` for every field of every section of the schema, nested sections included."""
    from ftc.compiler.frontend import _field_type
    from ftc.config.schema import Config

    def walk(node: object, prefix: str) -> Iterator[str]:
        for f in dataclasses.fields(node):  # type: ignore[arg-type]
            kind = _field_type(f)
            if dataclasses.is_dataclass(kind):
                yield from walk(kind, f"{prefix}{f.name}.")
            else:
                yield f"{prefix}{f.name}"

    yield from walk(Config, "")


def for_bash(line: str, commands: Sequence[Any]) -> list[str]:
    """The candidates for the last word of ``line`` (the command line up to the cursor), cut as bash's word
    splitting at ``=`` and ``:`` expects."""
    words = line.split()
    if not line or line[-1].isspace():
        words.append("")
    current = words[-1]
    cut = max(current.rfind("="), current.rfind(":")) + 1
    return [c[cut:] for c in candidates(len(words) - 1, words, commands)]


def candidates(cword: int, words: list[str], commands: Sequence[Any]) -> list[str]:
    """What the word at index ``cword`` of ``words`` (words[0] is ``ftc``) completes to, whole; ``commands`` is
    ``ftc.cli.COMMANDS`` (each with its name, usage and run-dir options)."""
    by_name = {c.name: c for c in commands}
    current = words[cword] if cword < len(words) else ""
    if cword <= 1:
        return [c.name for c in commands if c.usage and c.name.startswith(current)]
    if words[1] == "completion":
        return [s for s in ("bash",) if s.startswith(current)]
    options = by_name[words[1]].options if words[1] in by_name else None
    if options is not None:  # a run-dir command: the directory (bash's own file completion), then its options
        return [f"{k}=" for k in sorted(options) if k.startswith(current)] if cword >= 3 else []
    if words[1] not in ("plan", "train"):
        return []
    table = groups()
    if "=" in current:
        key, _, value = current.partition("=")
        return [f"{key}={o}" for o in table.get(key, []) if o.startswith(value)]
    if "." in current:  # a section's keys: train.lr=, model.path=...
        offered = [f"{k}=" for k in _keys() if "." in k]
    else:  # groups (model=) and sections (train.) first, flags last
        offered = [f"{g}=" for g in table] + sorted({f"{k.split('.')[0]}." for k in _keys() if "." in k}) + \
            ["-m", "--json", "--trace"]
    return sorted(c for c in dict.fromkeys(offered) if c.startswith(current))
