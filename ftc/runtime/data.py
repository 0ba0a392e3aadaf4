"""Data pipeline: the selection ``ftc plan`` counted (``ftc.data.select``: read, check, personal data, language,
duplicates and near-duplicates, splits) -> format -> tokenize (+EOS, loss mask) -> cache.

Produces pre-tokenized ``input_ids`` + ``completion_mask`` rows that TRL's SFTTrainer takes as they are (it then
builds labels and packs them). Every dropped or truncated example is counted in ``DataReport``.

The tokenized cache key covers the tokenizer (vocab, special tokens, chat template), the content fingerprints of
the data files and every preprocessing setting, so a tokenizer or template change never reuses a stale cache.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from ftc.data.formats import FORMATS, row_prompt_style
from ftc.data.load import data_path, problems_message
from ftc.data.select import Example, Selection, Settings, cached
from ftc.data.tokens import cut_prompted, cut_sequence, tokenize_examples
from ftc.errors import DataError
from ftc.paths import atomic_path, cache_root
from ftc.plan import DataSpec

CACHE_VERSION = 5  # 5: SFT rows carry their labels; 4: chat test rows keep their turns, and the prompted
# baseline's shot pool; 3: the selection of ftc.data.select (near-duplicates, personal data, language, leakage)


@dataclass
class DataReport:
    rows_read: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    """Rows dropped before splitting, by reason (``Selection.dropped``: empty, pii, language, duplicates,
    near_duplicates), as the plan counted them."""
    dropped_no_completion_after_truncation: int = 0
    truncated: int = 0
    examples: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)
    lengths: list[int] = field(default_factory=list)
    """Tokens of each training example before truncation (the data card's histogram)."""
    quality: dict[str, Any] = field(default_factory=dict)
    """What the selection found (``DataQuality`` as a dict, the plan's own findings): near-duplicate groups, leaked
    and moved examples, personal data by kind, languages."""
    cache: str = ""
    cache_hit: bool = False

    def lines(self) -> list[str]:
        q = self.quality
        return [
            f"rows read: {self.rows_read}",
            f"examples: {self.examples}, tokens: {self.tokens}",
            f"dropped: {dict(self.dropped)}; {self.dropped_no_completion_after_truncation} with no completion left "
            "after truncation",
            f"truncated to max_length: {self.truncated}",
            f"near-duplicate groups: {q.get('near_groups', 0)}; training rows dropped as copies of held-out rows: "
            f"{q.get('leaked', 0)}; held-out examples moved to training: {q.get('moved', 0)}",
            f"personal data found: {q.get('pii') or 'none'}; languages: {q.get('languages') or 'none'}"
            + (f" (an even sample of {q['languages_sampled']})" if q.get("languages_sampled") else ""),
        ]


@dataclass
class Splits:
    train: Any  # datasets.Dataset with input_ids, completion_mask
    validation: Optional[Any]
    test: list[dict[str, str]]  # raw {prompt, completion} (or {prompt, chosen, rejected}) for evaluation
    test_tokenized: Optional[Any]
    report: DataReport
    shots: list[dict[str, Any]] = field(default_factory=list)
    """Training examples for the prompted baseline (``shot_pool``)."""


def _file_fingerprint(path: str) -> str:
    resolved = data_path(path)
    if "://" in resolved:
        try:
            import fsspec

            fs, _, paths = fsspec.get_fs_token_paths(resolved)
            info = fs.info(paths[0])
            return f"{resolved}|{info.get('size')}|{info.get('ETag') or info.get('mtime') or ''}"
        except Exception:  # noqa: BLE001 - unreachable remote: don't cache
            return f"{resolved}|nocache|{random.random()}"
    h = hashlib.sha256()
    with open(resolved, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tokenizer_fingerprint(tokenizer: Any) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    h.update(json.dumps([tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token,
                         getattr(tokenizer, "chat_template", None), type(tokenizer).__name__,
                         getattr(tokenizer, "add_bos_token", None)], default=str).encode())
    return h.hexdigest()


def cache_key(spec: DataSpec, tokenizer: Any, seed: int) -> str:
    files = [p for p in (spec.path, spec.validation_path, spec.test_path) if p]
    payload = {
        "version": CACHE_VERSION,
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "files": [_file_fingerprint(p) for p in files],
        "spec": {k: v for k, v in asdict(spec).items()
                 if k not in ("name", "train_examples", "tokens_per_example", "loss_share")},
        "seed": seed,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _example(ex: Example, spec: DataSpec, tokenizer: Any) -> dict[str, Any]:
    """A selected row formatted for its trainer: prompt + completion (+ label), or prompt + chosen + rejected."""
    style = row_prompt_style(ex.values, spec.format)
    if style != spec.prompt_style:  # the tuned model will be asked in the plan's style: a row in another is refused
        raise DataError(f"{ex.where}: its prompt is in the {style} style, the plan's is {spec.prompt_style} (every "
                        "row's prompt must have one shape: all strings, or all message lists)")
    fmt = FORMATS[spec.format]
    texts = fmt.texts(ex.values, spec.template, tokenizer)
    if fmt.paired:
        return dict(zip(("prompt", "chosen", "rejected"), texts))
    example = dict(zip(("prompt", "completion"), texts))
    if fmt.labelled:
        example["label"] = ex.values["label"]
    if "messages" in ex.values:  # chat: the turns through the answer, which the prompted baseline shows as examples
        messages = ex.values["messages"]
        example["messages"] = messages[: max(i for i, m in enumerate(messages) if m["role"] == "assistant") + 1]
    return example


SHOT_POOL = 64
"""Training examples kept with the test split for the prompted baseline (eval.shots takes its first k)."""


def shot_pool(train: list[Any], spec: DataSpec, seed: int) -> list[Any]:
    """Up to SHOT_POOL training examples drawn by the seed, in draw order, for formats whose rows are prompts and
    answers (``Format.shows_examples``); empty for the others."""
    if not FORMATS[spec.format].shows_examples:
        return []
    return [train[i] for i in random.Random(seed).sample(range(len(train)), min(SHOT_POOL, len(train)))]


def selected(spec: DataSpec, seed: int) -> Selection:
    """The plan's selection of the data, refused as ``ftc plan`` refuses it: malformed rows (every one listed),
    personal data under data.pii=refuse."""
    sel = cached(Settings.of(spec, seed))
    for role, problems in sel.problems.items():
        if problems.count:
            raise DataError(problems_message(problems, role, spec.format))
    if spec.pii == "refuse" and sel.pii:
        counts = ", ".join(f"{v.count} {kind}" for kind, v in sorted(sel.pii.items()))
        raise DataError(f"personal data or secrets in the rows ({counts}; data.pii=refuse):\n  "
                        + "\n  ".join(sel.quality().pii_shown) + "\nfix: remove them, or data.pii=mask / drop")
    return sel


def _tokenize_pairs(examples: list[dict], tokenizer: Any, spec: DataSpec, report: DataReport) -> dict[str, list]:
    """Preference pairs as TRL's DPOTrainer takes them pre-tokenized: prompt_ids (its end, at most
    max_prompt_length), chosen_ids and rejected_ids (+EOS), each pair within max_length; truncations counted."""
    out: dict[str, list] = {"prompt_ids": [], "chosen_ids": [], "rejected_ids": []}
    prompts = [ex["prompt"] for ex in examples]
    chosen_ids = tokenize_examples(tokenizer, prompts, [ex["chosen"] for ex in examples])
    rejected_ids = tokenize_examples(tokenizer, [""] * len(examples), [ex["rejected"] for ex in examples])
    for (p, chosen), (_, rejected) in zip(chosen_ids, rejected_ids):
        keep, (c, r), cut = cut_prompted(len(p), (len(chosen), len(rejected)), spec.max_length,
                                         spec.max_prompt_length)
        report.truncated += cut
        out["prompt_ids"].append(p[len(p) - keep:])
        out["chosen_ids"].append(chosen[:c])
        out["rejected_ids"].append(rejected[:r])
    return out


def _tokenize_labelled(examples: list[dict], tokenizer: Any, spec: DataSpec, report: DataReport) -> dict[str, list]:
    """Labelled answers as TRL's KTOTrainer takes them pre-tokenized: prompt_ids (its end, at most
    max_prompt_length), completion_ids (+EOS) within max_length, label; truncations counted."""
    out: dict[str, list] = {"prompt_ids": [], "completion_ids": [], "label": []}
    encoded = tokenize_examples(tokenizer, [ex["prompt"] for ex in examples], [ex["completion"] for ex in examples])
    for ex, (p, c) in zip(examples, encoded):
        keep, (n,), cut = cut_prompted(len(p), (len(c),), spec.max_length, spec.max_prompt_length)
        report.truncated += cut
        out["prompt_ids"].append(p[len(p) - keep:])
        out["completion_ids"].append(c[:n])
        out["label"].append(bool(ex["label"]))
    return out


def _tokenize(examples: list[dict], tokenizer: Any, max_length: int, report: DataReport,
              lengths: Optional[list[int]] = None, completion_only: bool = True) -> dict[str, list]:
    """input_ids + completion_mask within max_length (truncations counted), and the labels SFTTrainer trains on
    (-100 outside the completion when ``completion_only``), so TRL's own preparation (label, truncation and filter
    passes over the whole split) has nothing left to do; ``lengths`` gets each example's tokens before
    truncation."""
    ids, masks, labels = [], [], []
    for p, c in tokenize_examples(tokenizer, [ex["prompt"] for ex in examples],
                                  [ex["completion"] for ex in examples]):
        seq, mask = p + c, [0] * len(p) + [1] * len(c)
        if lengths is not None:
            lengths.append(len(seq))
        keep, cut, dropped = cut_sequence(len(p), len(c), max_length)
        report.truncated += cut
        if dropped:
            report.dropped_no_completion_after_truncation += 1
            continue
        ids.append(seq[:keep])
        masks.append(mask[:keep])
        labels.append([t if m else -100 for t, m in zip(ids[-1], masks[-1])] if completion_only else ids[-1])
    return {"input_ids": ids, "completion_mask": masks, "labels": labels}


def _load_cached(cache_dir: Any) -> Optional[Splits]:
    """A complete cache entry, checked: its metadata parses and every split loads with the number of rows the
    report recorded. A truncated or corrupted entry (a disk error, a copy cut short) is removed and None returned,
    so the caller rebuilds it; the log says so."""
    import logging
    import shutil

    import datasets

    try:
        meta = json.loads((cache_dir / "complete.json").read_text())
        report = DataReport(**{**meta["report"], "cache": str(cache_dir), "cache_hit": True})
        loaded = {name: datasets.load_from_disk(str(cache_dir / name)) if (cache_dir / name).exists() else None
                  for name in ("train", "validation", "test")}
        for name, rows in report.examples.items():
            if loaded.get(name) is None or len(loaded[name]) != rows:
                raise ValueError(f"split {name} has {0 if loaded.get(name) is None else len(loaded[name])} rows, "
                                 f"the entry recorded {rows}")
            loaded[name][len(loaded[name]) - 1]  # reads the last row: a cut-short file fails here
    except Exception as e:  # noqa: BLE001 - whatever is wrong with the entry, it is rebuilt
        logging.getLogger("ftc").warning(f"tokenized-data cache {cache_dir} is damaged ({type(e).__name__}: "
                                         f"{e}); rebuilding it")
        shutil.rmtree(cache_dir, ignore_errors=True)
        return None
    return Splits(loaded["train"], loaded["validation"], meta["test"], loaded["test"], report, meta["shots"])


CHUNK = 16_384
"""Examples tokenized and written at a time: the tokenized split is built on disk, a chunk's lists in memory."""


def _save_tokenized(examples: list[Example], name: str, directory: Path, spec: DataSpec, tokenizer: Any,
                    report: DataReport) -> bool:
    """Tokenizes a split ``CHUNK`` examples at a time into ``directory/name`` (a datasets dataset); False when the
    split is empty. Each chunk is saved, then the memory-mapped chunks are joined and saved as one."""
    import shutil

    import datasets

    if not examples:
        return False
    fmt = FORMATS[spec.format]
    report.examples[name] = report.tokens[name] = 0
    parts = []
    for start in range(0, len(examples), CHUNK):
        rows = [_example(ex, spec, tokenizer) for ex in examples[start:start + CHUNK]]
        if fmt.paired:
            columns = _tokenize_pairs(rows, tokenizer, spec, report)
            tokens = sum(2 * len(p) + len(c) + len(r) for p, c, r in
                         zip(columns["prompt_ids"], columns["chosen_ids"], columns["rejected_ids"]))
        elif fmt.labelled:
            columns = _tokenize_labelled(rows, tokenizer, spec, report)
            tokens = sum(len(p) + len(c) for p, c in zip(columns["prompt_ids"], columns["completion_ids"]))
        else:
            columns = _tokenize(rows, tokenizer, spec.max_length, report, report.lengths if name == "train" else None,
                                spec.completion_only_loss)
            tokens = sum(len(s) for s in columns["input_ids"])
        kept = len(next(iter(columns.values())))
        report.examples[name] += kept
        report.tokens[name] += tokens
        if not kept and (parts or start + CHUNK < len(examples)):
            continue  # every example of the chunk cut away: an empty part would have no column types to join
        part = directory / f".{name}.{len(parts)}"
        datasets.Dataset.from_dict(columns).save_to_disk(str(part))
        parts.append(part)
    datasets.concatenate_datasets([datasets.load_from_disk(str(p)) for p in parts]).save_to_disk(str(directory / name))
    for part in parts:
        shutil.rmtree(part)
    return True


def build(spec: DataSpec, tokenizer: Any, seed: int, use_cache: bool = True) -> Splits:
    """Reads, checks, splits, tokenizes and caches the data of a plan."""
    import datasets

    report = DataReport()
    key = cache_key(spec, tokenizer, seed)
    cache_dir = cache_root() / "tokenized" / key
    report.cache = str(cache_dir)
    if use_cache and (cache_dir / "complete.json").is_file():
        cached = _load_cached(cache_dir)
        if cached is not None:
            return cached

    sel = selected(spec, seed)
    report.rows_read, report.dropped, report.quality = dict(sel.rows), dict(sel.dropped), asdict(sel.quality())
    if not sel.splits["train"]:
        raise DataError(f"{data_path(spec.path)}: no training examples left after validation and splitting")
    test = [_example(ex, spec, tokenizer) for ex in sel.splits["test"] or []]
    shots = [_example(ex, spec, tokenizer) for ex in shot_pool(sel.splits["train"], spec, seed)]
    with atomic_path(cache_dir) as tmp:  # a crash never leaves a half-written cache that looks complete
        tmp.mkdir()
        tokenized = [name for name in ("train", "validation", "test")
                     if _save_tokenized(sel.splits[name] or [], name, tmp, spec, tokenizer, report)]
        meta = {"report": {k: v for k, v in asdict(report).items() if k not in ("cache", "cache_hit")},
                "test": test, "shots": shots}
        (tmp / "complete.json").write_text(json.dumps(meta))

    def load(name: str) -> Any:
        return datasets.load_from_disk(str(cache_dir / name)) if name in tokenized else None

    return Splits(load("train"), load("validation"), test, load("test"), report, shots)
