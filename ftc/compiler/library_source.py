"""What an installed library's source declares, read without importing it (the plan's process imports no torch):
the fields of a dataclass and of every class it derives from, followed through ``from ... import`` statements.

Used for the trainer keywords a plan passes to TRL (``train.trainer_kwargs``): the names TRL's config class of the
objective (and transformers' TrainingArguments below it) accept are the installed versions' own, not a table.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from pathlib import Path
from typing import Optional


def module_file(name: str) -> Optional[str]:
    """The source file of module ``name``, found from its top-level package without running any package code
    (``importlib.util.find_spec`` of a dotted name would import its parents: trl.experimental imports torch)."""
    top, *rest = name.split(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return spec.origin if spec is not None and not rest else None
    base = Path(list(spec.submodule_search_locations)[0]).joinpath(*rest)
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return str(candidate)
    return None


@functools.lru_cache(maxsize=64)
def _tree(path: str) -> ast.Module:
    return ast.parse(Path(path).read_text())


@functools.lru_cache(maxsize=64)
def class_fields(module: str, name: str, depth: int = 0) -> Optional[frozenset[str]]:
    """The annotated fields of class ``name`` as module ``module`` defines or imports it, its bases' included;
    None when the source cannot be followed (a base defined dynamically, a module not installed)."""
    path = module_file(module)
    if path is None or depth > 8:
        return None
    tree = _tree(path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            fields = {s.target.id for s in node.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)}
            for base in node.bases:
                if not isinstance(base, ast.Name):
                    continue
                inherited = class_fields(module, base.id, depth + 1)
                if inherited is None:
                    return None
                fields |= inherited
            return frozenset(fields)
    for node in ast.walk(tree):  # imported here (lazy packages import under TYPE_CHECKING as well)
        if not isinstance(node, ast.ImportFrom):
            continue
        for alias in node.names:
            if (alias.asname or alias.name) != name:
                continue
            target = node.module or ""
            if node.level:
                parts = package.split(".")
                target = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            found = class_fields(target, alias.name, depth + 1)
            if found is not None:
                return found
    return None


def trl_config_fields(trainer: str) -> Optional[frozenset[str]]:
    """The keywords TRL's config class of a trainer accepts (``SFTTrainer`` -> ``trl.SFTConfig``,
    ``experimental.orpo.ORPOTrainer`` -> ``trl.experimental.orpo.ORPOConfig``)."""
    where, _, cls = f"trl.{trainer}".rpartition(".")
    return class_fields(where, cls.removesuffix("Trainer") + "Config")
