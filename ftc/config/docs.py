"""Writes docs/CONFIG.md from the schema's attribute docstrings, and docs/PLAN.md from the Plan's:

    python -m ftc.config.docs > docs/CONFIG.md
    python -m ftc.config.docs plan > docs/PLAN.md
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
from importlib.resources import files

from ftc.config import schema

SECTIONS = [("model", schema.ModelConfig), ("method", schema.MethodConfig), ("data", schema.DataConfig),
            ("hardware", schema.HardwareConfig), ("launcher", schema.LauncherConfig),
            ("objective", schema.ObjectiveConfig), ("train", schema.TrainConfig),
            ("eval", schema.EvalConfig), ("budget", schema.BudgetConfig), ("(top level)", schema.Config)]


def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings: a string literal right after an annotated assignment."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            docs[node.target.id] = " ".join(str(nxt.value.value).split())
    return docs


def field_types(cls: type) -> dict[str, str]:
    """Each field's annotation as written in the source (``Optional[float]``, ``tuple[str, ...]``)."""
    body = ast.parse(inspect.getsource(cls)).body[0].body
    return {n.target.id: ast.unparse(n.annotation) for n in body if isinstance(n, ast.AnnAssign)}


# The config section each Plan spec copies its same-named fields from (compile.spec_from).
SPEC_SECTIONS = {"ModelSpec": "model", "MethodSpec": "method", "DataSpec": "data", "ObjectiveSpec": "objective",
                 "HardwareSpec": "hardware", "TrainSpec": "train", "EvalSpec": "eval", "BudgetSpec": "budget",
                 "LauncherSpec": "launcher"}

PLAN_INTRO = """# The Plan

Generated from the Plan's attribute docstrings (`ftc/plan.py`) by `python -m ftc.config.docs plan`; do not edit by
hand. `compile(cfg, facts) -> Plan` (`ftc/compiler/compile.py`) is pure: it reads the typed config and the facts
gathered before it (`ftc/compiler/facts.py`: the model's config.json and weights' header, every row of local data
files checked, counted and deduplicated as training will) and nothing else; its front door is
`ftc/compiler/frontend.py`. The Plan is a frozen dataclass; `ftc plan --json` prints it, every run saves it as
`plan.json`, and executors (local process, Ray workers, `ftc eval/generate/merge`) read only the Plan. Each spec
copies its config section's fields of the same name (docs/CONFIG.md) and adds the compiler's decisions
(`compile.spec_from`). Formulas behind `memory`, `time`, `cost`: [ESTIMATES.md](ESTIMATES.md). Rules:
[RULES.md](RULES.md).
"""


def render_plan() -> str:
    from ftc import plan as plan_module

    out = [PLAN_INTRO, "## Plan", ""]
    seen: list[type] = []

    def table(cls: type) -> list[str]:
        docs, types = field_docs(cls), field_types(cls)
        section = SPEC_SECTIONS.get(cls.__name__)
        source = dict(SECTIONS).get(section)
        copied = {f.name for f in dataclasses.fields(source)} if source else set()
        source_docs = field_docs(source) if source else {}
        rows = ["| field | type | meaning |", "|---|---|---|"]
        for f in dataclasses.fields(cls):
            name = f.name.rstrip("_")  # global_ is written as global
            meaning = docs.get(f.name, "")
            if not meaning and f.name in copied:
                meaning = f"`{section}.{f.name}`: {source_docs.get(f.name, '')}".rstrip(": ")
            rows.append(f"| `{name}` | `{types[f.name]}` | {meaning.replace('|', chr(92) + '|')} |")
            for spec in vars(plan_module).values():
                if isinstance(spec, type) and dataclasses.is_dataclass(spec) and spec.__name__ in types[f.name] \
                        and spec is not cls and spec not in seen:
                    seen.append(spec)
        return rows

    out += table(plan_module.Plan) + [""]
    for spec in seen:  # in the order the Plan names them, nested ones after
        out += [f"## {spec.__name__}", ""]
        if spec.__doc__ and not spec.__doc__.startswith(spec.__name__ + "("):
            out += [" ".join(spec.__doc__.split()), ""]
        out += table(spec) + [""]
    return "\n".join(out)


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = f.default_factory()  # type: ignore[misc]
    else:
        return ""
    if dataclasses.is_dataclass(value):
        return "(section)"
    return "required" if value == "???" else f"`{value!r}`".replace("None", "null")


def options(group: str) -> list[str]:
    root = files("ftc.conf").joinpath(group)
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def render() -> str:
    out = ["# Configuration reference", "",
           "Generated from the schema (`ftc/config/schema.py`) by `python -m ftc.config.docs`; do not edit by hand.",
           "Every field is a command-line override: `ftc plan method.r=8 train.lr=1e-4`. Unknown keys are errors, and",
           "so is a value outside what the field accepts (`ftc plan` names the key, the range and a fix).", ""]
    for name, cls in SECTIONS:
        out.append(f"## {name}")
        out.append("")
        if name in schema.GROUPS:
            out += [f"Options (`{name}=<option>`): " + ", ".join(f"`{o}`" for o in options(name)), ""]
        docs = field_docs(cls)
        out += ["| field | default | accepts | meaning |", "|---|---|---|---|"]
        for f in dataclasses.fields(cls):
            meaning = docs.get(f.name, "").replace("|", "\\|")
            check = schema.field_check(f)
            accepts = check.allowed() if check else ""
            if check and len(check.choices) > 8:
                accepts = f"{len(check.choices)} names (`ftc/config/schema.py`)"
            out.append(f"| `{f.name}` | {_default(f)} | {accepts} | {meaning} |")
        out.append("")
    out += ["## recipe", "", "Options (`recipe=<option>`): " + ", ".join(f"`{o}`" for o in options("recipe")), ""]
    return "\n".join(out)


if __name__ == "__main__":
    import sys

    print(render_plan() if sys.argv[1:] == ["plan"] else render())
