"""Shared helpers.

- ``typed_config(overrides)`` builds the typed ``Config`` straight from the YAML options (no Hydra): the unit tier
  tests the compiler, not composition, in milliseconds. ``test_composition.py`` holds it equal to Hydra's compose.
- ``compose(overrides)`` is ftc's front door (``ftc.compiler.frontend.compose``: Hydra's composition), for the few
  tests that test composition or the CLI.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
GROUPS = ("model", "method", "data", "hardware", "launcher", "objective")

# Offline before anything imports huggingface_hub (collecting a test module may): the library reads
# HF_HUB_OFFLINE once, at import, and a test that reads a hub-layout cache in-process would otherwise wait on the
# network's timeouts before falling back to the cache.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Tokenized-data and tiny-model caches live in one temp dir per test session (built once, shared)."""
    if "FTC_CACHE" not in os.environ:
        os.environ["FTC_CACHE"] = str(tmp_path_factory.mktemp("ftc-cache"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    yield


def compose(overrides: list[str] | None = None):
    from ftc.compiler.frontend import compose as front_door

    return front_door(list(overrides or []))


@functools.lru_cache(maxsize=None)
def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def _merge(*layers: dict) -> dict:
    """Deep merge of plain dicts, later layers win (what OmegaConf.merge does, without its per-node cost)."""
    out: dict = {}
    for layer in layers:
        for k, v in layer.items():
            out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _option(group: str, name: str) -> dict:
    """A group option's values, following its defaults list (``a10g_x4`` builds on ``a10g``)."""
    data = dict(_yaml(CONF / group / f"{name}.yaml"))
    parents = [d for d in data.pop("defaults", []) if d != "_self_" and not str(d).startswith("base_")]
    return _merge(*(_option(group, p) for p in parents), data)


def _primary_choices() -> dict[str, str]:
    return {k: v for d in _yaml(CONF / "config.yaml")["defaults"] if isinstance(d, dict)
            for k, v in d.items() if k in GROUPS}


def typed_config(overrides: list[str] | tuple[str, ...] = ()):
    """The typed Config that ``ftc plan <overrides>`` compiles, built without Hydra (group choices, the per-model
    tuning, the primary config, a recipe, then dotted overrides, in Hydra's order)."""
    from omegaconf import OmegaConf

    choices, recipe, dotted = _primary_choices(), None, []
    cli_choices = {}
    for o in overrides:
        key, _, value = o.lstrip("+").partition("=")
        if key in GROUPS:
            cli_choices[key] = value
        elif key == "recipe":
            recipe = _yaml(ROOT / "recipes" / f"{value}.yaml")
        else:
            dotted.append(o.lstrip("+"))
    layers = []
    if recipe:
        for d in recipe.get("defaults", []):
            for k, v in (d.items() if isinstance(d, dict) else ()):
                choices[k.replace("override /", "")] = v
        layers.append({k: v for k, v in recipe.items() if k != "defaults"})
    choices.update(cli_choices)
    tuning = CONF / "model_tuning" / f"{choices['model']}.yaml"
    primary = {k: v for k, v in _yaml(CONF / "config.yaml").items() if k not in ("defaults", "hydra")}
    primary["output_dir"] = "runs/test"
    values = _merge({g: _option(g, choices[g]) for g in GROUPS}, _yaml(tuning) if tuning.exists() else {}, primary,
                    *layers, OmegaConf.to_container(OmegaConf.from_dotlist(dotted)))
    return OmegaConf.to_object(OmegaConf.merge(_schema(), values))  # type-checked against the schema


@functools.lru_cache(maxsize=None)
def _schema():
    from omegaconf import OmegaConf

    from ftc.config.schema import Config

    return OmegaConf.structured(Config)  # merge() copies it: the cached node is never changed


def plan_for(overrides: list[str] | None = None):
    """Compiles ``overrides`` as ``ftc plan`` would (facts gather data files once per process, memoized)."""
    from ftc.compiler.frontend import compile_config

    return compile_config(typed_config(list(overrides or [])))


def borrowed_tokenizer(source: Path, target: Path, config: dict | None = None) -> Path:
    """A model directory holding ``source``'s tokenizer files (the tiny model's), with ``config`` as its config.json
    when given: the model type there decides which class transformers loads the tokenizer as."""
    import shutil

    from ftc.compiler.facts import TOKENIZER_FILES

    target.mkdir(parents=True)
    for name in TOKENIZER_FILES:
        shutil.copy(Path(source) / name, target / name)
    if config is not None:
        (target / "config.json").write_text(json.dumps(config))
    return target


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path
