"""Shared helpers: compose experiments in-process (Hydra compose API) and compile them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Tokenized-data and tiny-model caches live in one temp dir per test session (built once, shared)."""
    if "FTC_CACHE" not in os.environ:
        os.environ["FTC_CACHE"] = str(tmp_path_factory.mktemp("ftc-cache"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    yield


def compose(overrides: list[str] | None = None):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    from ftc.config.schema import register

    register()
    with initialize_config_module(config_module="ftc.conf", version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides or []))


def plan_for(overrides: list[str] | None = None):
    from ftc.cli import compile_config

    return compile_config(compose(overrides))


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path
