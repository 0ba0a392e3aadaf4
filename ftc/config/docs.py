"""Writes docs/CONFIG.md from the schema's attribute docstrings: ``python -m ftc.config.docs > docs/CONFIG.md``."""

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
    print(render())
