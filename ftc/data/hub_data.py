"""Datasets by Hugging Face id: ``data=hub data.name=org/set [data.subset=...] [data.split=train]
[data.revision=...]`` becomes the path ``hub:org/set?split=train&subset=...&revision=...``, and that path becomes a
local file on each machine that reads it (the plan's, a Ray worker's) through the maintained libraries:

- the dataset's files are listed without downloading any (the hub's list of files; offline, the cache's snapshot,
  whose layout is the hub's: ``datasets--org--set/refs/main`` naming a snapshot);
- the split's files are the ones the dataset card's ``configs`` name, else the ones ``datasets`` infers from the
  file names (``datasets.data_files.get_data_patterns``: ``data/train-00000-of-00002.parquet``, ``train.jsonl``);
- ``huggingface_hub.snapshot_download`` fetches those files only (or answers from its cache, offline too) with its
  own auth, progress and resume; a plan does not download more than ``PLAN_DOWNLOAD_GB`` of them;
- a split in several shards is joined once into one file in ftc's cache (content-addressed by the snapshot), so the
  checks, the selection, the exact token counts and ``ftc train`` read it exactly as they read a file of yours;
- with ``rows`` (data.max_rows), the shards are fetched in order until they hold the rows, and the first rows are
  that file (``part``): a part of a very large set, the later shards never downloaded.

Problems come back as one DataError naming what is missing and how to get it.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import hashlib
import itertools
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Optional
from urllib.parse import parse_qs

from ftc.config.schema import HUB_SCHEME
from ftc.data.formats import CSV_FIELD_LIMIT
from ftc.errors import DataError
from ftc.paths import atomic_path, cache_root

SCHEME = HUB_SCHEME
DATA_SUFFIXES = (".parquet", ".jsonl", ".json", ".csv", ".jsonl.gz", ".json.gz", ".csv.gz")


class Split(NamedTuple):
    """What a ``hub:`` path names: one split of a dataset, whole or its first ``rows`` rows (data.max_rows)."""

    repo: str
    split: str
    subset: Optional[str]
    revision: Optional[str]
    rows: Optional[int]


def parse(path: str) -> Split:
    """The split a ``hub:`` path names."""
    repo, _, query = path[len(SCHEME):].partition("?")
    q = {k: v[-1] for k, v in parse_qs(query).items()}
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise DataError(f"{path}: a hub dataset is named org/name (fix: data.name=<org>/<dataset>)")
    rows = q.get("rows")
    if rows is not None and not (rows.isdigit() and int(rows) >= 1):
        raise DataError(f"{path}: rows={rows} is not a count of rows (fix: data.max_rows=<a whole number >= 1>)")
    return Split(repo, q.get("split", "train"), q.get("subset"), q.get("revision"), int(rows) if rows else None)


def local_file(path: str) -> str:
    """The local file holding the split ``path`` names (downloaded or from the cache; several shards joined; with
    ``rows``, the first rows only, from the shards that hold them: ``part``). Only the split's own files are
    fetched, and a download larger than ``PLAN_DOWNLOAD_GB`` is refused with data.max_rows as the fix."""
    h = parse(path)
    if h.rows:
        return str(part(h).file)
    commit, _, splits, _, sizes = _listing(h.repo, h.subset, h.revision)
    names = _split_of(splits, h)
    _refuse_large_download(h, commit, names, sizes)
    snapshot = fetch(h.repo, names, revision=commit, kind="dataset")
    files = [snapshot / n for n in names]
    if len(files) == 1:
        return str(files[0])
    return _joined(files, f"{snapshot.name}/{h.subset or ''}/{h.split}", h.repo)


def _split_of(splits: dict[str, list[Any]], h: Split) -> list[Any]:
    where = f"{h.repo}" + (f" subset {h.subset}" if h.subset else "")
    if h.split not in splits:
        raise DataError(f"{where} has no split '{h.split}' (splits: {', '.join(sorted(splits)) or 'none found'}); "
                        "fix: data.split=<one of them>")
    return splits[h.split]


PLAN_DOWNLOAD_GB = 10.0
"""A whole split larger than this, not yet in the cache, is not downloaded by a plan: data.max_rows reads a part."""


def _refuse_large_download(h: Split, commit: str, names: list[str], sizes: dict[str, int]) -> None:
    """Refuses to fetch more than PLAN_DOWNLOAD_GB of the split's files that the cache lacks (sizes are the hub's;
    offline there are none, and nothing is downloaded)."""
    from huggingface_hub import try_to_load_from_cache

    from ftc.hub import hub_cache

    missing = [n for n in names if not isinstance(
        try_to_load_from_cache(h.repo, n, cache_dir=str(hub_cache()), revision=commit, repo_type="dataset"), str)]
    gb = sum(sizes.get(n, 0) for n in missing) / 1e9
    if gb > PLAN_DOWNLOAD_GB:
        raise DataError(f"{h.repo}'s split '{h.split}' is {gb:,.1f} GB in {len(missing)} files not on this machine: "
                        f"not downloaded whole to plan; fix: data.max_rows=<rows> reads its first rows only (the "
                        f"shards holding them), or `hf download {h.repo} --repo-type dataset` first to use all of it")


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


def _joined(files: list[Path], key: str, repo: str) -> str:
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

            tables = []
            for f in files:
                with _reading(f, repo):
                    tables.append(pq.read_table(f))
            pq.write_table(pa.concat_tables(tables, promote_options="default"), tmp)
        else:
            with open(tmp, "wb") as out:
                for i, f in enumerate(files):
                    data = f.read_bytes()
                    if suffix == ".csv" and i:  # every shard repeats the header
                        data = data.split(b"\n", 1)[1] if b"\n" in data else b""
                    out.write(data if not data or data.endswith(b"\n") else data + b"\n")
    return str(target)


# A part of a split (data.max_rows): its first rows, from the shards that hold them --------------------------------

PART_SUFFIXES = (".parquet", ".jsonl", ".csv")


@dataclass(frozen=True)
class Part:
    """The first rows of a split, as one file in ftc's cache, and what is known of the whole split."""

    file: Path
    rows: int
    """Rows in the part: data.max_rows, or fewer when the whole split holds fewer."""
    total: Optional[int]
    """Rows in the whole split (None: unknown)."""
    total_from: str
    """Where ``total`` comes from: every shard read (exact), the dataset card's ``dataset_info`` (the count the hub's
    dataset card states), the parquet footers of the shards on disk (exact), or the shard count (the shards read,
    scaled to all of them: an estimate)."""
    shards_read: int
    shards: int


def part(h: Split) -> Part:
    """The first ``h.rows`` rows of the split: its files are listed without downloading them (the hub's file list,
    or the cache's snapshot offline), then fetched one at a time, in order, until they hold the rows; later shards
    are neither downloaded nor read. Built once into ftc's cache, keyed by the dataset's commit."""
    commit, snapshot, splits, card, _ = _listing(h.repo, h.subset, h.revision)
    names = _split_of(splits, h)
    suffixes = {_suffix(n) for n in names}
    if len(suffixes) != 1 or not suffixes <= set(PART_SUFFIXES):
        raise DataError(f"{h.repo}: data.max_rows reads the first rows of parquet, JSONL or CSV shards; this split "
                        f"is in {', '.join(sorted(suffixes))} files (fix: data.max_rows=null reads it whole)")
    suffix = suffixes.pop()
    key = hashlib.sha256(f"{h.repo}@{commit}/{h.subset or ''}/{h.split}/{h.rows}".encode()).hexdigest()[:24]
    target = cache_root() / "hub_data" / f"part-{key}{suffix}"
    about = target.with_name(f"part-{key}.json")
    if target.is_file() and about.is_file():
        return Part(file=target, **json.loads(about.read_text()))
    local: list[Path] = []
    counted = 0
    for name in names:
        local.append(fetch(h.repo, [name], revision=commit, kind="dataset") / name)
        with _reading(local[-1], h.repo):
            counted += row_count(local[-1])
        if counted >= h.rows:
            break
    with _reading(Path(h.repo) / "the unread shards", h.repo):
        total, total_from = _total(h, card, snapshot, names, local, counted)
    facts = {"rows": min(h.rows, counted), "total": total, "total_from": total_from, "shards_read": len(local),
             "shards": len(names)}
    with atomic_path(target) as tmp, _reading(Path(f"{h.repo} ({', '.join(map(str, local))})"), h.repo):
        _write_first(local, suffix, facts["rows"], tmp)
    with atomic_path(about) as tmp:
        tmp.write_text(json.dumps(facts))
    return Part(file=target, **facts)


@contextlib.contextmanager
def _reading(what: Path, repo: str) -> Iterator[None]:
    """A shard that cannot be read (not parquet, cut short, not UTF-8) as one DataError naming it and the fix."""
    fix = f"; fix: `hf download {repo} --repo-type dataset --force-download` fetches the files again"
    try:
        yield
    except (csv.Error, OSError, UnicodeDecodeError) as e:
        raise DataError(f"{what}: cannot be read ({type(e).__name__}: {str(e)[:200]}){fix}") from None
    except Exception as e:  # noqa: BLE001 - pyarrow's refusal of a file that is not parquet
        if type(e).__module__.split(".")[0] != "pyarrow":
            raise
        raise DataError(f"{what}: not readable as {what.suffix[1:] or 'data'} ({type(e).__name__}: "
                        f"{str(e)[:200]}){fix}") from None


def part_of(path: str) -> Optional[Part]:
    """The part a data path reads (None: not a hub split cut by data.max_rows)."""
    if not path.startswith(SCHEME):
        return None
    h = parse(path)
    return part(h) if h.rows else None


@functools.lru_cache(maxsize=16)
def _listing(repo: str, subset: Optional[str], revision: Optional[str]
             ) -> tuple[str, Optional[Path], dict[str, list[str]], Optional[Path], dict[str, int]]:
    """(the dataset's commit, its snapshot in the cache (offline), each split's files as repository paths, the
    card, the files' sizes (online)) with no data file downloaded: offline from the cache's snapshot, else from the
    hub's list of files, which ``datasets``' inference reads as names (an empty stand-in of each file in a scratch
    folder)."""
    from ftc.hub import fetch as fetch_files
    from ftc.hub import offline, refusals

    if offline():
        # no file asked for: the snapshot as the cache holds it. Asking for README.md would be refused as an
        # incomplete snapshot when huggingface_hub's cached file list names a card that was never downloaded.
        snapshot = fetch_files(repo, [], revision=revision, kind="dataset")
        splits = split_files(snapshot, subset)
        card = snapshot / "README.md"
        return snapshot.name, snapshot, {k: [str(p.relative_to(snapshot)) for p in v] for k, v in splits.items()}, \
            card if card.is_file() else None, {}
    from huggingface_hub import HfApi

    with refusals(repo, revision, "dataset"):
        info = HfApi().dataset_info(repo, revision=revision, files_metadata=True)
    card = _readme(repo, info.sha)
    with tempfile.TemporaryDirectory() as scratch:
        names = Path(scratch) / ("datasets--" + repo.replace("/", "--")) / "snapshots" / str(info.sha)
        for sibling in info.siblings or ():
            (names / sibling.rfilename).parent.mkdir(parents=True, exist_ok=True)
            (names / sibling.rfilename).touch()
        if card is not None:
            shutil.copyfile(card, names / "README.md")
        splits = split_files(names, subset)
        sizes = {s.rfilename: s.size or 0 for s in info.siblings or ()}
        return str(info.sha), None, {k: [str(p.relative_to(names)) for p in v] for k, v in splits.items()}, card, \
            sizes


def fetch(repo: str, patterns: list[str], revision: Optional[str], kind: str) -> Path:
    """``ftc.hub.fetch``, named here so that a test can see which of a split's files are fetched."""
    from ftc.hub import fetch as fetch_files

    return fetch_files(repo, patterns, revision=revision, kind=kind)


def _suffix(name: str) -> str:
    return "".join(Path(name).suffixes[-2:]) if name.endswith(".gz") else Path(name).suffix


def row_count(path: Path) -> int:
    """Rows of one data file as ``ftc.data.load.read_rows`` counts them: a parquet file's footer, the non-empty
    lines of JSONL, the records of CSV (quoted newlines included)."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    if path.suffix == ".csv":
        csv.field_size_limit(CSV_FIELD_LIMIT)
        with open(path, newline="", encoding="utf-8-sig") as f:
            return max(sum(1 for record in csv.reader(f) if record) - 1, 0)  # DictReader skips blank records
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def _total(h: Split, card: Optional[Path], snapshot: Optional[Path], names: list[str], local: list[Path],
           counted: int) -> tuple[Optional[int], str]:
    if len(local) == len(names):
        return counted, "every shard read"
    stated = _card_rows(card, h.subset, h.split)
    if stated:
        return max(stated, counted), "the dataset card"  # a stale card is not believed below what was read
    if snapshot is not None and all(n.endswith(".parquet") and (snapshot / n).is_file() for n in names):
        return sum(row_count(snapshot / n) for n in names), "the shards' parquet footers"
    return round(counted / len(local) * len(names)), "the shard count"


def _card_rows(card: Optional[Path], subset: Optional[str], split: str) -> Optional[int]:
    """The split's ``num_examples`` in the card's ``dataset_info`` (one entry, or one per subset)."""
    from huggingface_hub import metadata_load

    try:
        info = (metadata_load(card) or {}).get("dataset_info") if card is not None and card.is_file() else None
    except Exception:  # noqa: BLE001 - a card whose YAML header does not parse states nothing
        return None
    entries = info if isinstance(info, list) else [info] if isinstance(info, dict) else []
    entry = next((e for e in entries if isinstance(e, dict) and e.get("config_name", "default") == (subset or
                                                                                                   "default")),
                 entries[0] if len(entries) == 1 and not subset else None)
    for s in (entry or {}).get("splits") or ():
        if isinstance(s, dict) and s.get("name") == split and isinstance(s.get("num_examples"), int):
            return s["num_examples"]
    return None


def _write_first(files: list[Path], suffix: str, rows: int, target: Path) -> None:
    """The first ``rows`` rows of ``files`` (in order) as one file of their type."""
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        tables, left = [], rows
        for f in files:
            table = pq.read_table(f)
            tables.append(table.slice(0, left))
            left -= tables[-1].num_rows
        pq.write_table(pa.concat_tables(tables, promote_options="default"), target)
    elif suffix == ".csv":
        csv.field_size_limit(CSV_FIELD_LIMIT)
        with open(target, "w", newline="", encoding="utf-8") as out:
            writer, left = csv.writer(out, lineterminator="\n"), rows
            for i, f in enumerate(files):
                with open(f, newline="", encoding="utf-8-sig") as src:
                    records = csv.reader(src)
                    header = next(records, None)
                    if i == 0 and header is not None:
                        writer.writerow(header)
                    for record in itertools.islice((r for r in records if r), left):
                        writer.writerow(record)
                        left -= 1
    else:
        with open(target, "wb") as out:
            left = rows
            for f in files:
                with open(f, "rb") as src:
                    for line in src:
                        if not left:
                            break
                        if line.strip():
                            out.write(line if line.endswith(b"\n") else line + b"\n")
                            left -= 1
