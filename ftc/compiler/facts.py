"""Facts the compiler needs from the outside world, gathered once before ``compile``.

This is the only module on the planning path that touches the filesystem: it reads a model's config.json and
counts rows of data files. ``compile`` stays pure: tests hand it ``Facts`` built by hand.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

# Files larger than this are sampled for their mean row length instead of read whole.
_SAMPLE_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class DataFacts:
    path: str
    exists: bool
    rows: Optional[int] = None
    mean_chars: Optional[float] = None
    max_chars: Optional[int] = None
    """Longest row (in the sampled part): sizes the worst unpacked batch."""
    error: Optional[str] = None
    remote: bool = False


@dataclass(frozen=True)
class Facts:
    model_config: Optional[dict[str, Any]] = None
    """The model's config.json when it is on disk (local dir or Hugging Face cache)."""
    model_config_source: Optional[str] = None
    data: dict[str, DataFacts] = field(default_factory=dict)
    """By role: train, validation, test."""
    families: dict[str, Any] = field(default_factory=dict)


def package_root() -> Path:
    return Path(__file__).resolve().parent.parent


def resolve_path(path: str) -> str:
    """``ftc:sample/train.jsonl`` -> the file shipped in the package; other paths are made absolute."""
    if path.startswith("ftc:"):
        return str(package_root() / "assets" / path[len("ftc:"):])
    if "://" in path:
        return path
    return str(Path(path).expanduser().resolve())


def load_families() -> dict[str, Any]:
    import yaml
    from importlib.resources import files

    return yaml.safe_load(files("ftc.conf").joinpath("families.yaml").read_text())


def find_model_config(path: str, revision: Optional[str] = None) -> tuple[Optional[dict], Optional[str]]:
    """config.json from a local model directory, or from the Hugging Face cache for a hub id (no download)."""
    if path.startswith("ftc:"):
        return None, None
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
                return json.loads(c.read_text()), str(c)
            except (OSError, ValueError):
                continue
    return None, None


def data_facts(path: str) -> DataFacts:
    """Row count and mean characters per row, without a tokenizer (estimates only)."""
    resolved = resolve_path(path)
    if "://" in resolved:
        return _remote_facts(resolved)
    p = Path(resolved)
    if not p.is_file():
        return DataFacts(path=resolved, exists=False, error="no such file")
    try:
        suffix = "".join(p.suffixes[-2:]) if p.suffix == ".gz" else p.suffix
        if suffix in (".jsonl", ".jsonl.gz"):
            return _line_facts(p, header=False)
        if suffix == ".csv":
            return _line_facts(p, header=True)
        if suffix == ".json":
            rows = json.loads(p.read_text())
            if isinstance(rows, dict):  # {"data": [...]} or {"train": [...]}: take the first list
                rows = next((v for v in rows.values() if isinstance(v, list)), [])
            n = len(rows)
            sizes = [len(json.dumps(r)) for r in rows]
            return DataFacts(path=resolved, exists=True, rows=n, mean_chars=sum(sizes) / n if n else 0,
                             max_chars=max(sizes, default=0))
        if suffix == ".parquet":
            size = p.stat().st_size
            try:
                import pyarrow.parquet as pq

                n = pq.ParquetFile(p).metadata.num_rows
            except ImportError:
                return DataFacts(path=resolved, exists=True, error="pyarrow not installed: cannot count rows")
            return DataFacts(path=resolved, exists=True, rows=n, mean_chars=size * 2.5 / max(n, 1))
        return DataFacts(path=resolved, exists=True, error=f"unsupported file type '{p.suffix}'")
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return DataFacts(path=resolved, exists=True, error=f"unreadable: {e}")


def _line_facts(p: Path, header: bool) -> DataFacts:
    import gzip

    opener = gzip.open if p.suffix == ".gz" else open
    rows = chars = read = longest = 0
    with opener(p, "rt", encoding="utf-8") as f:
        if header:
            f.readline()
        for line in f:
            if not line.strip():
                continue
            rows += 1
            if read < _SAMPLE_BYTES:
                longest = max(longest, len(line))
                chars += len(line)
                read += len(line)
                sampled = rows
    mean = chars / sampled if rows else 0.0
    return DataFacts(path=str(p), exists=True, rows=rows, mean_chars=mean, max_chars=longest)


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


def gather(cfg: Any) -> Facts:
    """Facts for a typed or DictConfig experiment."""
    model_config, source = find_model_config(cfg.model.path, cfg.model.revision) if _is_set(cfg.model, "path") \
        else (None, None)
    data = {}
    for role, key in (("train", "path"), ("validation", "validation_path"), ("test", "test_path")):
        value = getattr(cfg.data, key, None) if _is_set(cfg.data, key) else None
        if value:
            data[role] = data_facts(value)
    return Facts(model_config=model_config, model_config_source=source, data=data, families=load_families())


def _is_set(node: Any, key: str) -> bool:
    from omegaconf import DictConfig, OmegaConf

    if isinstance(node, DictConfig):
        return not OmegaConf.is_missing(node, key)
    return getattr(node, key, "???") != "???"
