"""Which rows become which split's examples: the one selection ``ftc plan`` counts and ``ftc train`` trains on.

read -> check (malformed rows collected with file:line) -> empty rows dropped -> personal data (report, mask,
drop or refuse) -> language filter -> duplicates (exact, case/whitespace) and near-duplicates (MinHash) grouped
across every file -> one example per group kept (the held-out files first, so a training row never copies a test
row) -> seeded split of the training file -> a held-out example whose group still has training members is moved
back to training (only possible with ``data.dedup=false``) -> ``max_samples``.

Torch-free, deterministic for a seed, and the same function in both processes: the plan's counts are the run's by
construction (``tests/integration/test_plan_sees_the_data.py`` holds them equal). ``cached`` is the hand-off between
the two: the plan's selection saved as file lines, which ``ftc train`` reads back instead of selecting again.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ftc.data import quality
from ftc.data.engine import Engine, engine
from ftc.data.formats import FORMATS, EmptyRow, RowError, check_row, near_key, pieces
from ftc.data.load import MAX_SHOWN, RowProblems, data_path, parsed, read_rows
from ftc.plan import DataQuality

ROLES = ("test", "validation", "train")
"""The order files are read and grouped in: held-out files first, so a group's kept example is a held-out one."""
DROP_REASONS = ("empty", "pii", "language", "duplicates", "near_duplicates")
"""Why a row is not trained on or evaluated, in the order the selection decides it."""
LANGUAGE_SAMPLE = 20_000
"""Examples whose language is reported when data.languages is unset (evenly spaced): the report's shares hold to
about a percent, and the classifier costs ~0.2 ms an example (over 3 minutes for a million)."""
READ_CHUNK = 4096
"""Rows read, checked and scanned for personal data as one chunk of the engine's (about 1.5 MB of alpaca JSONL)."""
LANGUAGE_CHUNK = 2048
"""Texts whose language is detected as one chunk of the engine's."""


@dataclass(frozen=True)
class Settings:
    """The data settings the selection depends on (the same names in ``DataConfig`` and the Plan's ``DataSpec``)."""

    paths: tuple[tuple[str, str], ...]
    """(role, path) of each file given."""
    format: str
    fields: tuple[tuple[str, str], ...]
    dedup: bool
    near_dup_threshold: Optional[float]
    pii: str
    languages: tuple[str, ...]
    validation_fraction: float
    test_fraction: float
    max_held_out: Optional[int]
    max_samples: Optional[int]
    seed: int
    engine: str
    """Where the per-row work runs (data.engine): not part of the selection's key, which is the same on either."""
    ray_address: Optional[str]

    @classmethod
    def of(cls, data: Any, seed: int) -> Settings:
        """From a ``DataConfig`` (plan time) or a ``DataSpec`` (train time)."""
        keys = {"train": "path", "validation": "validation_path", "test": "test_path"}
        paths = tuple((role, getattr(data, key)) for role, key in keys.items() if getattr(data, key, None))
        return cls(paths=paths, format=data.format, fields=tuple(sorted(dict(data.fields).items())),
                   dedup=bool(data.dedup), near_dup_threshold=data.near_dup_threshold, pii=data.pii,
                   languages=tuple(data.languages or ()), validation_fraction=float(data.validation_fraction),
                   test_fraction=float(data.test_fraction), max_held_out=data.max_held_out,
                   max_samples=data.max_samples, seed=int(seed), engine=data.engine,
                   ray_address=data.ray_address)


@dataclass(slots=True)
class Example:
    role: str
    """The file it was read from (train, validation, test)."""
    path: str
    line: int
    values: dict[str, Any]
    """Its fields by the format's names (``formats.check_row``), personal data masked when data.pii=mask: what the
    runtime formats and tokenizes. The row as read is not kept (a million rows: the memory of one copy of them)."""
    masked: bool = False
    """Personal data in the row was masked (data.pii=mask)."""
    language: Optional[str] = None

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass
class Shown:
    """A count and the first few examples of it as ``file:line ...`` lines."""

    count: int = 0
    shown: list[str] = field(default_factory=list)

    def add(self, line: str, n: int = 1) -> None:
        self.count += n
        if len(self.shown) < MAX_SHOWN:
            self.shown.append(line)

    def merge(self, later: Shown) -> None:
        """Adds what a later part of the same file found (as if its lines had been added here)."""
        self.count += later.count
        self.shown += later.shown[:MAX_SHOWN - len(self.shown)]


@dataclass
class Selection:
    splits: dict[str, list[Example]] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    """Rows read per file (malformed ones included)."""
    problems: dict[str, RowProblems] = field(default_factory=dict)
    """Malformed rows per file: any makes the data unusable (``ftc plan`` refuses it, ``ftc train`` too)."""
    dropped: Counter = field(default_factory=lambda: Counter(dict.fromkeys(DROP_REASONS, 0)))
    """Rows not trained on or evaluated, by reason (every reason, 0 included): empty, pii, language, duplicates
    (exact or case/whitespace), near_duplicates (MinHash, data.near_dup_threshold)."""
    near_groups: Shown = field(default_factory=Shown)
    """Groups of two or more near-duplicate examples, shown as ``kept ~ dropped (J=0.91)``."""
    leaked: Shown = field(default_factory=Shown)
    """Training rows dropped because they (nearly) duplicate a test or validation row."""
    moved: Shown = field(default_factory=Shown)
    """Held-out examples moved back to training because their near-duplicates train (data.dedup=false)."""
    pii: dict[str, Shown] = field(default_factory=dict)
    """Personal data and secrets found, by kind (quality.PII_KINDS), the value masked in what is shown."""
    languages: Counter = field(default_factory=Counter)
    """Detected language of every example read (before the language filter), or of an even sample of
    ``LANGUAGE_SAMPLE`` of them when data.languages is unset (``languages_sampled``)."""
    languages_sampled: int = 0
    language_dropped: Shown = field(default_factory=Shown)
    compared_on: str = ""
    """What near-duplicates are compared on (text every row shares left out)."""

    def counts(self) -> dict[str, int]:
        return {role: len(self.splits.get(role) or []) for role in ("train", "validation", "test")}

    def quality(self) -> DataQuality:
        """The findings as the Plan records them (``ftc train`` reports the same)."""
        return DataQuality(
            checked=True, compared_on=self.compared_on, near_groups=self.near_groups.count,
            near_shown=tuple(self.near_groups.shown), leaked=self.leaked.count, leaked_shown=tuple(self.leaked.shown),
            moved=self.moved.count, moved_shown=tuple(self.moved.shown),
            pii={k: v.count for k, v in sorted(self.pii.items())},
            pii_shown=tuple(line for lines in itertools.zip_longest(*(v.shown for v in self.pii.values()))
                            for line in lines if line)[:MAX_SHOWN],  # one of each kind first
            languages=dict(self.languages.most_common()), languages_sampled=self.languages_sampled)


def select(settings: Settings, runs_on: Optional[Engine] = None) -> Selection:
    """The selection of ``settings``' files (raises DataError when a file as a whole cannot be read), its per-row
    work on ``runs_on``, else on the engine data.engine names."""
    if runs_on is not None:
        return _select(settings, runs_on)
    with engine(settings.engine, settings.ray_address) as runs_on:
        return _select(settings, runs_on)


def _select(settings: Settings, runs_on: Engine) -> Selection:
    sel = Selection()
    fields = dict(settings.fields)
    read: dict[str, list[Example]] = {}
    for role in ROLES:
        path = dict(settings.paths).get(role)
        if path:
            read[role] = _read(role, data_path(path), settings, fields, sel, runs_on)
    if any(p.count for p in sel.problems.values()):
        return sel
    pool = [ex for role in ROLES for ex in read.get(role, [])]
    groups = _deduplicate(pool, settings, sel, runs_on)
    kept = {role: [ex for ex in read.get(role, []) if id(ex) in groups] for role in ROLES}
    train = kept["train"]
    rng = random.Random(settings.seed)
    held = {role: kept[role] if role in read else None for role in ("test", "validation")}
    if held["test"] is None or held["validation"] is None:
        rng.shuffle(train)
        n = len(train)
        for role, fraction in (("test", settings.test_fraction), ("validation", settings.validation_fraction)):
            if held[role] is None:
                k = held_out_size(n, fraction, settings.max_held_out)
                held[role], train = train[:k], train[k:]
        train = _move_leaks(train, held, groups, sel)
    if settings.max_samples:
        train = train[: settings.max_samples]
    sel.splits = {"train": train, "validation": held["validation"], "test": held["test"]}
    return sel


def held_out_size(examples: int, fraction: float, cap: Optional[int]) -> int:
    """Examples split off ``examples`` for validation or test: the fraction (rounded down), at most ``cap``."""
    k = int(examples * fraction)
    return min(k, cap) if cap else k


CACHE_VERSION = 1


@functools.lru_cache(maxsize=16)
def _key(settings: Settings, stamps: tuple) -> str:
    from importlib.metadata import version

    from ftc.data import formats, load

    decides = {k: v for k, v in dataclasses.asdict(settings).items() if k not in ("engine", "ray_address")}
    h = hashlib.sha256(json.dumps([CACHE_VERSION, decides, version("datasketch"),
                                   version("py3langid")], default=str).encode())
    for module in (formats, load, quality):  # the selection's own code (and this file's): an upgrade recomputes
        h.update(Path(module.__file__).read_bytes())
    h.update(Path(__file__).read_bytes())
    for _, path in settings.paths:
        with open(data_path(path), "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:24]


def key(settings: Settings) -> str:
    """What the selection depends on, hashed: the settings, its code, the detectors' versions and the files' bytes
    (memoized in a process by the files' sizes and modification times)."""
    stamps = tuple((Path(data_path(p)).stat().st_size, Path(data_path(p)).stat().st_mtime_ns)
                   for _, p in settings.paths)
    return _key(settings, stamps)


def cached(settings: Settings, runs_on: Optional[Engine] = None) -> Selection:
    """``select(settings)``, from the disk cache when these files were selected with these settings before:
    ``ftc plan`` leaves its selection there and ``ftc train`` reads the chosen lines again instead of repeating
    the personal-data, language and near-duplicate passes (minutes on a million rows). A selection with malformed
    rows is not cached (it is refused, and cheap to find again)."""
    from ftc.paths import atomic_path, cache_root

    try:
        entry = cache_root() / "selection" / f"rows-{key(settings)}.json"
    except OSError:
        return select(settings, runs_on)  # a file that cannot be read: select says which, as a DataError
    if entry.is_file():
        try:
            return _load(settings, json.loads(entry.read_text()))
        except (ValueError, TypeError, KeyError, IndexError):
            pass  # a damaged entry: selected again below and replaced
    sel = select(settings, runs_on)
    if not any(p.count for p in sel.problems.values()):
        with atomic_path(entry) as tmp:
            tmp.write_text(json.dumps(_saved(sel)))
    return sel


def _saved(sel: Selection) -> dict[str, Any]:
    """The selection as lines of the files (each example's file and line, and whether its row was masked) and its
    findings: small next to the rows."""
    shown = lambda s: [s.count, s.shown]  # noqa: E731 - read where it is used
    return {"splits": {role: [[ex.role, ex.line, ex.masked] for ex in examples]
                       for role, examples in sel.splits.items() if examples is not None},
            "rows": sel.rows, "dropped": dict(sel.dropped), "near_groups": shown(sel.near_groups),
            "leaked": shown(sel.leaked), "moved": shown(sel.moved), "pii": {k: shown(v) for k, v in sel.pii.items()},
            "languages": dict(sel.languages), "languages_sampled": sel.languages_sampled,
            "language_dropped": shown(sel.language_dropped), "compared_on": sel.compared_on}


def _load(settings: Settings, saved: dict[str, Any]) -> Selection:
    """A saved selection with its examples read again from the files (only the lines it chose are kept)."""
    fields = dict(settings.fields)
    paths = {role: data_path(path) for role, path in settings.paths}
    wanted: dict[str, dict[int, bool]] = {}
    for examples in saved["splits"].values():
        for role, line, masked in examples:
            wanted.setdefault(role, {})[line] = masked
    read: dict[tuple[str, int], Example] = {}
    for role, lines in wanted.items():
        for line, row in read_rows(paths[role]):
            if line in lines:
                if lines[line]:
                    row = quality.mask_row(row)
                read[role, line] = Example(role, paths[role], line, check_row(row, settings.format, fields),
                                           masked=lines[line])
    shown = lambda s: Shown(s[0], list(s[1]))  # noqa: E731 - read where it is used
    sel = Selection(rows=saved["rows"], dropped=Counter(saved["dropped"]), near_groups=shown(saved["near_groups"]),
                    leaked=shown(saved["leaked"]), moved=shown(saved["moved"]),
                    pii={k: shown(v) for k, v in saved["pii"].items()}, languages=Counter(saved["languages"]),
                    languages_sampled=saved["languages_sampled"],
                    language_dropped=shown(saved["language_dropped"]), compared_on=saved["compared_on"])
    sel.splits = {role: [read[r, line] for r, line, _ in examples] for role, examples in saved["splits"].items()}
    sel.problems = {role: RowProblems(path, settings.format, fields) for role, path in paths.items()}
    return sel


def _read(role: str, path: str, settings: Settings, fields: dict[str, str], sel: Selection, runs_on: Engine
          ) -> list[Example]:
    """The file's examples, read here and checked in chunks on the engine; its findings merged into ``sel`` in file
    order, so the counts and the first lines shown are the ones one pass over the file gives."""
    problems = sel.problems.setdefault(role, RowProblems(path, settings.format, fields))
    examples, rows = [], 0
    jobs = ((role, path, settings, chunk) for chunk in _batches(read_rows(path, raw=True), READ_CHUNK))
    for part in runs_on.map(_read_chunk, jobs):
        rows += part.rows
        problems.merge(part.problems)
        sel.dropped["empty"] += part.empty
        sel.dropped["pii"] += part.pii_dropped
        for kind, found in part.pii.items():
            sel.pii.setdefault(kind, Shown()).merge(found)
        examples += part.examples
    sel.rows[role] = rows
    return examples


def _batches(items: Any, n: int) -> Any:
    it = iter(items)
    while chunk := list(itertools.islice(it, n)):
        yield chunk


@dataclass
class _Part:
    """What one chunk of a file's rows gives the selection (``_read_chunk``)."""

    rows: int
    problems: RowProblems
    examples: list[Example] = field(default_factory=list)
    empty: int = 0
    pii_dropped: int = 0
    pii: dict[str, Shown] = field(default_factory=dict)


def _read_chunk(job: tuple[str, str, Settings, list[tuple[int, Any]]]) -> _Part:
    """Rows of a file (as ``read_rows(raw=True)`` yields them) parsed, checked against the format and scanned for
    personal data: an engine's task."""
    role, path, settings, lines = job
    fields = dict(settings.fields)
    part = _Part(rows=len(lines), problems=RowProblems(path, settings.format, fields))
    for line, item in lines:
        row = parsed(item)
        if isinstance(row, RowError):
            part.problems.add(line, row)
            continue
        try:
            values = check_row(row, settings.format, fields)
        except EmptyRow:
            part.empty += 1
            continue
        except RowError as e:
            part.problems.add(line, e, row)
            continue
        example = Example(role, path, line, values)
        if _personal_data(example, row, settings, fields, part.pii):
            part.pii_dropped += 1
            continue
        part.examples.append(example)
    return part


def _personal_data(ex: Example, row: dict[str, Any], settings: Settings, fields: dict[str, str],
                   found: dict[str, Shown]) -> bool:
    """Counts what the example (read from ``row``) holds in ``found``; masks it (data.pii=mask). True when it is to
    be dropped (data.pii=drop)."""
    finds = [(kind, text[s:e]) for text in pieces(ex.values, settings.format)
             for kind, s, e in quality.find_pii(text)]
    for kind, value in finds:
        found.setdefault(kind, Shown()).add(f"{ex.where}: {kind} {quality.shown(value)}")
    if not finds:
        return False
    if settings.pii == "drop":
        return True
    if settings.pii == "mask":
        ex.values = check_row(quality.mask_row(row), settings.format, fields)
        ex.masked = True
    return False


class _Texts(Sequence):
    """Each example's text as near-duplicates are compared on (``quality.own_text`` of its pieces, ``shared`` lines
    left out), made when asked: a million examples' texts are not held at once."""

    def __init__(self, examples: list[Example], fmt: str, shared: frozenset[str] = frozenset(),
                 own: bool = True) -> None:
        self.examples, self.fmt, self.shared, self.own = examples, fmt, shared, own

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        parts = pieces(self.examples[i].values, self.fmt)
        return quality.own_text(parts, self.shared) if self.own else parts


def _languages(texts: list[str]) -> list[Optional[str]]:
    """``quality.language`` of each text: an engine's task."""
    return [quality.language(text) for text in texts]


def _deduplicate(pool: list[Example], settings: Settings, sel: Selection, runs_on: Engine) -> dict[int, int]:
    """Filters the pool by language, groups it (equal case/whitespace-folded fields, or near-duplicates at the
    threshold) and keeps the first of each group; with data.dedup=false training members are kept too, unless their
    group holds a held-out example. Returns id(example) -> its group for the examples kept."""
    shared = quality.boilerplate(_Texts([ex for ex in pool if ex.role == "train"] or pool, settings.format,
                                        own=False))
    own = _Texts(pool, settings.format, shared)
    sel.compared_on = _compared_on(settings.format, shared)
    survivors = []
    every = 1 if settings.languages else max(1, -(-len(pool) // LANGUAGE_SAMPLE))
    sampled = range(0, len(pool), every)
    sel.languages_sampled = 0 if every == 1 else len(sampled)
    jobs = ([own[n] for n in sampled[start:start + LANGUAGE_CHUNK]] for start in range(0, len(sampled), LANGUAGE_CHUNK))
    detected = itertools.chain.from_iterable(runs_on.map(_languages, jobs))
    for n, ex in enumerate(pool):
        if n % every:
            survivors.append(ex)
            continue
        ex.language = next(detected)
        sel.languages[ex.language or "none"] += 1
        if settings.languages and ex.language not in (*settings.languages, quality.UNSURE, None):
            sel.dropped["language"] += 1
            sel.language_dropped.add(f"{ex.where}: {ex.language}")
            continue
        survivors.append(ex)

    parent = list(range(len(survivors)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        a, b = find(i), find(j)
        if a != b:
            parent[max(a, b)] = min(a, b)  # the root is the group's first member (held-out files come first)

    folded = [near_key(ex.values) for ex in survivors]
    first_of: dict[int, int] = {}
    for i, key in enumerate(folded):
        union(first_of.setdefault(key, i), i)
    link: dict[int, tuple[int, float]] = {}
    """A near-duplicate partner of an example (the earliest), for the pairs the plan shows."""
    if settings.near_dup_threshold is not None:
        distinct = sorted(first_of.values())  # one example per folded key: the others are duplicates already
        texts = _Texts([survivors[i] for i in distinct], settings.format, shared)
        grouped = lambda a, b: find(distinct[a]) == find(distinct[b])  # noqa: E731 - read where it is used
        for a, b, score in quality.near_duplicate_pairs(texts, settings.near_dup_threshold, grouped, runs_on):
            i, j = distinct[a], distinct[b]
            union(i, j)
            link.setdefault(j, (i, score))
            link.setdefault(i, (j, score))
    keep: dict[int, int] = {}
    near_groups: set[int] = set()
    for i, ex in enumerate(survivors):
        root = find(i)
        if root == i:
            keep[id(ex)] = root
            continue
        first = survivors[root]
        near = folded[i] != folded[root]
        if near:
            near_groups.add(root)
            j, score = link.get(first_of[folded[i]], (root, 0.0))
            sel.near_groups.add(f"{survivors[j].where} ~ {ex.where} (J={score:.2f})", 0)
        if ex.role == "train" and first.role != "train":
            sel.leaked.add(f"{first.where} ({first.role}) ~ {ex.where}")
        elif ex.role == "train" and not settings.dedup:
            keep[id(ex)] = root
            continue
        sel.dropped["near_duplicates" if near else "duplicates"] += 1
    sel.near_groups.count = len(near_groups)
    return keep


def _move_leaks(train: list[Example], held: dict[str, Optional[list[Example]]], groups: dict[int, int],
                sel: Selection) -> list[Example]:
    """Held-out examples split from the training file whose group has a member in training go back to training."""
    in_train = {groups[id(ex)] for ex in train}
    for role in ("test", "validation"):
        if held[role] is None:
            continue
        stay = []
        for ex in held[role]:
            if groups[id(ex)] in in_train:
                sel.moved.add(f"{ex.where} ({role} -> train)")
                train.append(ex)
            else:
                stay.append(ex)
        held[role] = stay
    return train


def _compared_on(fmt: str, shared: frozenset[str]) -> str:
    what = FORMATS[fmt].compared_on
    if not shared:
        return what
    return f"{what}, without the {len(shared)} line{'s' if len(shared) > 1 else ''} of text more than half the rows " \
           "share (a fixed instruction or system prompt)"
