"""Facts the compiler needs from the outside world, gathered once before ``compile``.

This is the only module on the planning path that touches the filesystem: it reads a model's config.json and
checks and measures the rows of local data files (torch-free, with the loader ``ftc train`` uses). ``compile`` stays pure: tests hand it ``Facts`` built by hand.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from ftc.data.formats import check_row, completion_chars
from ftc.data.load import RowProblems, checked_rows
from ftc.errors import DataError
from ftc.paths import resolve_path

# Row lengths are measured on the first 32 M characters of a file (every row is still checked).
_SAMPLE_CHARS = 32 * 1024 * 1024


@dataclass(frozen=True)
class DataFacts:
    path: str
    exists: bool
    rows: Optional[int] = None
    mean_chars: Optional[float] = None
    max_chars: Optional[int] = None
    """Longest row (in the sampled part): sizes the worst unpacked batch."""
    error: Optional[str] = None
    """The file as a whole cannot be read (missing, not UTF-8, unsupported type)."""
    remote: bool = False
    empty_rows: int = 0
    """Rows with nothing to learn from (dropped and counted at train time)."""
    completion_share: Optional[float] = None
    """Share of the rows' characters in the completion (what completion-only loss counts), in the sampled part."""
    problems: tuple[str, ...] = ()
    """Malformed rows (``ftc train`` would refuse the file): the first ones as ``file:line: what``, then how many
    more."""


@dataclass(frozen=True)
class Facts:
    model_config: Optional[dict[str, Any]] = None
    """The model's config.json when it is on disk (local dir or Hugging Face cache)."""
    data: dict[str, DataFacts] = field(default_factory=dict)
    """By role: train, validation, test."""
    families: dict[str, Any] = field(default_factory=dict)
    packages: dict[str, bool] = field(default_factory=dict)
    """Optional packages installed here (``importlib.util.find_spec``, nothing imported): flash_attn, liger_kernel,
    tensorboard, wandb, mlflow. The compiler decides kernels and loggers from them."""


@functools.lru_cache(maxsize=1)
def load_families() -> dict[str, Any]:
    """conf/families.yaml, read once per process (a sweep compiles many trials); callers do not change it."""
    import yaml
    from importlib.resources import files

    return yaml.safe_load(files("ftc.conf").joinpath("families.yaml").read_text())


def find_model_config(path: str) -> Optional[dict]:
    """config.json from a local model directory, or from the Hugging Face cache for a hub id (no download)."""
    if path.startswith("ftc:"):
        return None
    local = Path(path).expanduser()
    candidates = [local / "config.json"]
    if not local.exists() and path.count("/") == 1:
        hub_home = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", "~/.cache/huggingface"))
                        / "hub").expanduser()
        repo = hub_home / ("models--" + path.replace("/", "--"))
        candidates += sorted(repo.glob("snapshots/*/config.json"))
    for c in candidates:
        if c.is_file():
            try:
                return json.loads(c.read_text())
            except (OSError, ValueError):
                continue
    return None


def data_facts(path: str, fmt: str, fields: dict[str, str]) -> DataFacts:
    """Checks every row of a local file against its format (the same check ``ftc train`` runs) and measures rows
    and characters per row (the first 32 MB) for the estimates, without a tokenizer."""
    resolved = resolve_path(path)
    if "://" in resolved:
        return _remote_facts(resolved)
    if not Path(resolved).is_file():
        return DataFacts(path=resolved, exists=False, error="no such file")
    problems = RowProblems(resolved)
    rows = empty = chars = sampled = longest = counted = total = 0
    try:
        for _, row in checked_rows(resolved, fmt, fields, problems):
            rows += 1
            if row is None:
                empty += 1
            elif chars < _SAMPLE_CHARS:
                size = len(json.dumps(row, ensure_ascii=False))  # ~ the row's line: what chars_per_token is measured on
                chars, sampled, longest = chars + size, sampled + 1, max(longest, size)
                c, a = completion_chars(check_row(row, fmt, fields), fmt)
                counted, total = counted + c, total + a
    except DataError as e:
        return DataFacts(path=resolved, exists=True, error=str(e).removeprefix(resolved + ": "))
    return DataFacts(path=resolved, exists=True, rows=rows + problems.count, mean_chars=chars / sampled if sampled
                     else 0.0, max_chars=longest, empty_rows=empty, completion_share=counted / total if total else None,
                     problems=tuple(problems.lines()))


def _remote_facts(uri: str) -> DataFacts:
    try:
        import fsspec
    except ImportError:
        return DataFacts(path=uri, exists=False, remote=True, error="fsspec not installed")
    try:
        fs, _, paths = fsspec.get_fs_token_paths(uri)
        if not fs.exists(paths[0]):
            return DataFacts(path=uri, exists=False, remote=True, error="not found")
        return DataFacts(path=uri, exists=True, remote=True)
    except Exception as e:  # noqa: BLE001 - any backend error means "can't check before launch"
        return DataFacts(path=uri, exists=False, remote=True, error=f"{type(e).__name__}: {e}")


def gather(cfg: Any, read_data: Callable[[str, str, dict[str, str]], DataFacts] = data_facts) -> Facts:
    """Facts for a typed or DictConfig experiment (``read_data`` reads one data file: tests cache it)."""
    model_config = find_model_config(cfg.model.path) if _is_set(cfg.model, "path") else None
    data = {}
    for role, key in (("train", "path"), ("validation", "validation_path"), ("test", "test_path")):
        value = getattr(cfg.data, key, None) if _is_set(cfg.data, key) else None
        if value:
            data[role] = read_data(value, cfg.data.format, dict(cfg.data.fields))
    return Facts(model_config=model_config, data=data, families=load_families(), packages=installed_packages())


OPTIONAL_PACKAGES = ("flash_attn", "liger_kernel", "tensorboard", "wandb", "mlflow")


def installed_packages() -> dict[str, bool]:
    import importlib.util

    return {name: importlib.util.find_spec(name) is not None for name in OPTIONAL_PACKAGES}


def _is_set(node: Any, key: str) -> bool:
    from omegaconf import DictConfig, OmegaConf

    if isinstance(node, DictConfig):
        return not OmegaConf.is_missing(node, key)
    return getattr(node, key, "???") != "???"
