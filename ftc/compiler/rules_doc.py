"""docs/RULES.md, generated from the rule registry: each rule's name, the keys its findings name (read from the
``error(...)``/``warning(...)`` calls in its source, or its docstring's ``Keys:`` line) and its docstring's first
paragraph. ``python -m ftc.compiler.rules_doc > docs/RULES.md``; a test holds the file equal to this output."""

from __future__ import annotations

import ast
import inspect
import textwrap
from typing import Callable

from ftc.compiler.rules import RULES

HEAD = """# Rules

`ftc/compiler/rules.py` runs every rule on every compile and reports all findings at once, each naming the
override key, a fix and the rule (`rule` in plan.json's findings); errors stop `ftc train` (exit code 2, no
traceback). This file is generated from the rules' docstrings (`python -m ftc.compiler.rules_doc > docs/RULES.md`).
Every rule has a bad case and a fixed case in `tests/unit/test_rules.py`, which walks this registry.

| rule | key | refuses (error) / warns |
|---|---|---|
"""
DECLARED = ("| declared_values (`rules.value_problems`) | every numeric and enumerated field | a value outside "
            "what the field declares beside it in the schema (`schema.checked(default, ge=.., lt=.., choices=..)`; "
            "the \"accepts\" column of [CONFIG.md](CONFIG.md)): "
            "`method.r: LoRA rank must be >= 1, got 0 (fix: method.r=8)`, "
            "`train.optim: must be one of adamw_torch, ...`. The rest of the plan is compiled with the field's "
            "default, so every other problem is still reported. `tests/unit/test_ranges.py` refuses an out-of-range "
            "value of every checked field |\n")

TAIL = """
Type errors and unknown keys are caught earlier by the typed schema (Hydra structured configs):
`ftc plan method.rank=8` -> "Key 'rank' not in 'MethodConfig'"; `method.r=sixteen` -> "Value 'sixteen' ... could
not be converted to Integer".

**QLoRA on several GPUs.** 4-bit weights shard with FSDP2 (`train.strategy=fsdp`, bitsandbytes' weights stored in
the compute dtype, `bnb_4bit_quant_storage`), the path PEFT documents; ftc refuses QLoRA with DeepSpeed ZeRO-3.
With `train.strategy=auto`, multi-GPU QLoRA runs as DDP when each GPU holds the whole 4-bit model at the band's high
end, else as FSDP, and offloads to CPU memory only when nothing else fits (`train.offload=auto`); the plan states
each choice in `decisions`.
"""


def keys(fn: Callable) -> list[str]:
    """The keys a rule's findings name: its docstring's ``Keys:`` line, else the first argument of each
    ``error(...)``/``warning(...)`` call in its source (an f-string's fields shown as ``<name>``)."""
    for line in (inspect.getdoc(fn) or "").splitlines():
        if line.startswith("Keys:"):
            return [line[len("Keys:"):].strip()]
    found: list[str] = []
    for node in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(fn)))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("error", "warning") and node.args):
            continue
        arg = node.args[0]
        if isinstance(arg, ast.Constant):
            key = f"`{arg.value}`"
        elif isinstance(arg, ast.JoinedStr):
            key = "`" + "".join(v.value if isinstance(v, ast.Constant) else "<" + ast.unparse(v.value) + ">"
                                for v in arg.values) + "`"
        else:
            key = f"<{ast.unparse(arg)}>"
        if key not in found:
            found.append(key)
    return found


def description(fn: Callable) -> str:
    """The docstring's first paragraph other than its ``Keys:`` line, on one line."""
    paragraphs = [p for p in (inspect.getdoc(fn) or "").split("\n\n") if p.strip() and not p.startswith("Keys:")]
    return " ".join(paragraphs[0].split()) if paragraphs else ""


def render() -> str:
    rows = [f"| {r.__name__} | {', '.join(keys(r))} | {description(r)} |" for r in RULES]
    return HEAD + DECLARED + "\n".join(rows) + "\n" + TAIL


if __name__ == "__main__":
    print(render(), end="")
