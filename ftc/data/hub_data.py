"""Datasets by Hugging Face id: ``data=hub data.name=org/set [data.subset=...] [data.split=train]
[data.revision=...]`` becomes the path ``hub:org/set?split=train&subset=...&revision=...``, and that path becomes a
local file on each machine that reads it (the plan's, a Ray worker's) through the maintained libraries:

- ``huggingface_hub.snapshot_download`` fetches the data files (or answers from its cache, offline too: the cache's
  layout is the hub's, ``datasets--org--set/refs/main`` naming a snapshot) with its own auth, progress and resume;
- the split's files are the ones the dataset card's ``configs`` name, else the ones ``datasets`` infers from the
  file names (``datasets.data_files.get_data_patterns``: ``data/train-00000-of-00002.parquet``, ``train.jsonl``);
- a split in several shards is joined once into one file in ftc's cache (content-addressed by the snapshot), so the
  checks, the selection, the exact token counts and ``ftc train`` read it exactly as they read a file of yours.

Problems come back as one DataError naming what is missing and how to get it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Optional
from urllib.parse import parse_qs

from ftc.config.schema import HUB_SCHEME
from ftc.errors import DataError
from ftc.paths import atomic_path, cache_root

SCHEME = HUB_SCHEME
DATA_SUFFIXES = (".parquet", ".jsonl", ".json", ".csv", ".jsonl.gz", ".json.gz", ".csv.gz")


def parse(path: str) -> tuple[str, str, Optional[str], Optional[str]]:
    """(repo id, split, subset, revision) of a ``hub:`` path."""
    repo, _, query = path[len(SCHEME):].partition("?")
    q = {k: v[-1] for k, v in parse_qs(query).items()}
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise DataError(f"{path}: a hub dataset is named org/name (fix: data.name=<org>/<dataset>)")
    return repo, q.get("split", "train"), q.get("subset"), q.get("revision")


def local_file(path: str) -> str:
    """The local file holding the split ``path`` names (downloaded or from the cache; several shards joined)."""
    repo, split, subset, revision = parse(path)
    snapshot = _snapshot(repo, subset, revision)
    splits = split_files(snapshot, subset)
    where = f"{repo}" + (f" subset {subset}" if subset else "")
    if split not in splits:
        raise DataError(f"{where} has no split '{split}' (splits: {', '.join(sorted(splits)) or 'none found'}); fix: "
                        "data.split=<one of them>")
    files = splits[split]
    if len(files) == 1:
        return str(files[0])
    return _joined(files, f"{snapshot.name}/{subset or ''}/{split}")


def _snapshot(repo: str, subset: Optional[str], revision: Optional[str]) -> Path:
    from ftc.hub import fetch

    configs = _configs(_readme(repo, revision))
    chosen = [c for c in configs if not subset or c.get("config_name") == subset] or configs
    if chosen:  # the card names each subset's files: fetch those (the split is picked from them afterwards)
        patterns = ["README.md"] + [p for c in chosen for p in _card_patterns(c["data_files"]).values() for p in p]
    else:  # files named by split, under the subset's folder when one is asked for (datasets' convention)
        patterns = ["README.md"] + [f"{subset + '/' if subset else ''}**{s}" for s in DATA_SUFFIXES]
    return fetch(repo, patterns, revision=revision, kind="dataset")


def _readme(repo: str, revision: Optional[str]) -> Optional[Path]:
    """The dataset card, cached or fetched alone (None when there is none or it cannot be had: the snapshot's
    download then says why)."""
    from huggingface_hub import hf_hub_download

    from ftc.hub import hub_cache

    try:
        return Path(hf_hub_download(repo, "README.md", repo_type="dataset", revision=revision,
                                    cache_dir=str(hub_cache())))
    except Exception:  # noqa: BLE001 - no card, or offline without it
        return None


def _card_patterns(files: Any) -> dict[str, list[str]]:
    """A card config's ``data_files`` as {split: patterns} (a bare pattern or list is the train split)."""
    if isinstance(files, str):
        return {"train": [files]}
    if isinstance(files, list) and files and not isinstance(files[0], dict):
        return {"train": [str(f) for f in files]}
    return {str(f["split"]): [f["path"]] if isinstance(f["path"], str) else [str(p) for p in f["path"]]
            for f in files if isinstance(f, dict) and "split" in f and "path" in f}


def _configs(readme: Optional[Path]) -> list[dict[str, Any]]:
    """The card's ``configs`` entries that name data files."""
    from huggingface_hub import metadata_load

    if readme is None or not readme.is_file():
        return []
    try:
        meta = metadata_load(readme) or {}
    except Exception:  # noqa: BLE001 - a card whose YAML header does not parse names no configs
        return []
    configs = meta.get("configs") or []
    return [c for c in configs if isinstance(c, dict) and c.get("data_files")]


def split_files(snapshot: Path, subset: Optional[str]) -> dict[str, list[Path]]:
    """The data files of each split: as the card's ``configs`` name them (the subset's entry, else the default
    one), else as ``datasets`` infers splits from the file names under the snapshot (or the subset's folder)."""
    configs = _configs(snapshot / "README.md")
    if configs:
        chosen = next((c for c in configs if c.get("config_name") == subset), None) if subset else \
            next((c for c in configs if c.get("default")), configs[0])
        if chosen is None:
            names = ", ".join(str(c.get("config_name")) for c in configs)
            raise DataError(f"{snapshot.parent.parent.name}: no subset '{subset}' (subsets: {names}); fix: "
                            "data.subset=<one of them>")
        patterns = _card_patterns(chosen["data_files"])
        base = snapshot
    else:
        from datasets.data_files import get_data_patterns

        base = snapshot / subset if subset else snapshot
        if not base.is_dir():
            raise DataError(f"{snapshot.parent.parent.name}: no subset '{subset}' (no folder of that name, no card "
                            "naming it); fix: data.subset=<a folder of the dataset>, or null")
        try:
            patterns = {str(k): list(v) for k, v in get_data_patterns(str(base)).items()}
        except Exception as e:  # noqa: BLE001 - datasets' EmptyDatasetError and kin: no data files at all
            raise DataError(f"{base}: no data files ({type(e).__name__})") from None
    return {split: _resolve(base, pats) for split, pats in patterns.items()}


def _resolve(base: Path, patterns: list[str]) -> list[Path]:
    from datasets.data_files import resolve_pattern

    found: set[str] = set()
    for pattern in patterns:
        try:
            found.update(resolve_pattern(pattern, str(base)))
        except FileNotFoundError:  # this pattern matches nothing; another of the split's may
            continue
    return sorted(Path(f.removeprefix("file://")) for f in found if f.endswith(DATA_SUFFIXES))


def _joined(files: list[Path], key: str) -> str:
    """The shards of one split as one file in ftc's cache (built once per snapshot): parquet tables concatenated,
    text shards appended. Shards of different types are refused."""
    suffixes = {"".join(f.suffixes[-2:]) if f.name.endswith(".gz") else f.suffix for f in files}
    if len(suffixes) != 1:
        raise DataError(f"{files[0].parent}: the split's shards mix file types ({', '.join(sorted(suffixes))})")
    suffix = suffixes.pop()
    target = cache_root() / "hub_data" / (hashlib.sha256(key.encode()).hexdigest()[:24] + suffix)
    if target.is_file():
        return str(target)
    if suffix not in (".parquet", ".jsonl", ".csv"):
        raise DataError(f"{files[0].parent}: a split in several {suffix} files: ftc joins parquet, JSONL and CSV "
                        "shards (decompress them, or save the split as one file)")
    with atomic_path(target) as tmp:
        if suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.concat_tables([pq.read_table(f) for f in files], promote_options="default"), tmp)
        else:
            with open(tmp, "wb") as out:
                for i, f in enumerate(files):
                    data = f.read_bytes()
                    if suffix == ".csv" and i:  # every shard repeats the header
                        data = data.split(b"\n", 1)[1] if b"\n" in data else b""
                    out.write(data if not data or data.endswith(b"\n") else data + b"\n")
    return str(target)
