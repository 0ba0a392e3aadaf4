"""Data pipeline: the selection ``ftc plan`` counted (``ftc.data.select``: read, check, personal data, language,
duplicates and near-duplicates, splits) -> format -> tokenize (+EOS, loss mask) -> cache.

Produces pre-tokenized ``input_ids`` + ``completion_mask`` + ``labels`` rows that TRL's SFTTrainer takes as they
are. For prompt + completion formats the ids are the ones ``ftc plan`` encoded when it counted the tokens
(``ftc.data.token_ids``), checked on a sample and turned into Arrow columns without a Python list per token, so a
million rows train without being encoded twice. Every dropped or truncated example is counted in ``DataReport``.

The tokenized cache key covers the tokenizer (vocab, special tokens, chat template), the content fingerprints of
the data files and every preprocessing setting, so a tokenizer or template change never reuses a stale cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
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

CACHE_VERSION = 6  # 6: a split is its chunks, joined when loaded; 5: SFT rows carry their labels; 4: chat test rows
# keep their turns, and the prompted baseline's shot pool; 3: the selection of ftc.data.select (near-duplicates,
# personal data, language, leakage)


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
    token_ids: str = ""
    """Where the training ids came from: the plan's (``ftc.data.token_ids``, its entry) or encoded here, and why."""
    cache: str = ""
    cache_hit: bool = False


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


HANDED_SAMPLE = 8
"""Examples per split the run encodes itself and compares with the plan's ids before it trains on them."""


def _handed(spec: DataSpec, seed: int, tokenizer: Any, sel: Selection) -> tuple[Optional[dict[str, Any]], str]:
    """The plan's ids of the selected examples ({split: ``token_ids.Handed``}, where from), checked here: each
    split's count, and ``HANDED_SAMPLE`` examples per split, evenly spaced, encoded with this run's tokenizer and
    compared id for id; or (None, why they are encoded here). A difference is logged as a warning: the plan's
    token counts were then not this run's either."""
    import numpy as np

    from ftc.data import token_ids

    if FORMATS[spec.format].prompt_apart:  # pairs and labelled answers: the run encodes their prompts apart
        return None, "encoded here (the plan hands on the ids of prompt + completion formats only)"
    handed, entry = token_ids.load(Settings.of(spec, seed), spec.template, tokenizer)
    if handed is None:
        return None, f"encoded here: {entry}"
    for name, examples in sel.splits.items():
        if not examples:
            continue
        got = handed.get(name)
        if got is None or len(got.lengths) != len(examples):
            return None, (f"encoded here: the plan's ids of {name} are for {0 if got is None else len(got.lengths)} "
                          f"examples, the selection has {len(examples)}")
        picks = sorted({int(i) for i in np.linspace(0, len(examples) - 1, HANDED_SAMPLE)})
        rows = [_example(examples[i], spec, tokenizer) for i in picks]
        for i, pair in zip(picks, tokenize_examples(tokenizer, [r["prompt"] for r in rows],
                                                    [r["completion"] for r in rows])):
            if got.example(i) != tuple(pair):
                why = (f"encoded here: the plan's ids of {examples[i].where} are not this tokenizer's (another "
                       "transformers or tokenizers than the plan's?)")
                logging.getLogger("ftc").warning(f"token ids: {why}")
                return None, why
    return handed, f"the plan's ({entry}), {HANDED_SAMPLE} examples a split encoded here and compared"


def _columns_from_ids(handed: Any, start: int, stop: int, max_length: int, completion_only: bool,
                      report: DataReport, lengths: Optional[list[int]]) -> tuple[Any, int]:
    """``_tokenize``'s columns for examples ``start:stop`` from the plan's ids, as one Arrow table without a Python
    list per token (the same truncation, ``cut_sequence``, completion mask and labels), and its tokens."""
    import numpy as np
    import pyarrow as pa

    prompt, completion = handed.lengths[start:stop, 0], handed.lengths[start:stop, 1]
    total = prompt + completion
    if lengths is not None:
        lengths += total.tolist()
    cut = total > max_length
    kept = ~(cut & (prompt >= max_length))  # cut_sequence: no completion token left, the example is dropped
    report.truncated += int(cut.sum())
    report.dropped_no_completion_after_truncation += int((~kept).sum())
    keep = np.minimum(total, max_length)[kept]
    offsets = np.concatenate([[0], np.cumsum(keep)])
    position = np.arange(offsets[-1]) - np.repeat(offsets[:-1], keep)  # each token's place in its example
    ids = handed.ids[np.repeat(handed.starts[start:stop][kept], keep) + position]  # int32, as datasets stores ids
    mask = (position >= np.repeat(prompt[kept], keep)).astype(np.int64)
    labels = np.where(mask == 1, ids, -100).astype(np.int64) if completion_only else ids.astype(np.int64)
    offsets = pa.array(offsets, pa.int32())
    return pa.table({name: pa.ListArray.from_arrays(offsets, pa.array(values))
                     for name, values in (("input_ids", ids), ("completion_mask", mask), ("labels", labels))}), len(ids)


def _load_cached(cache_dir: Any) -> Optional[Splits]:
    """A complete cache entry, checked: its metadata parses and every split loads with the number of rows the
    report recorded. A truncated or corrupted entry (a disk error, a copy cut short) is removed and None returned,
    so the caller rebuilds it; the log says so."""
    import shutil

    try:
        meta = json.loads((cache_dir / "complete.json").read_text())
        report = DataReport(**{**meta["report"], "cache": str(cache_dir), "cache_hit": True})
        loaded = {name: load_split(cache_dir / name) if (cache_dir / name).exists() else None
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
                    report: DataReport, handed: Optional[Any] = None) -> bool:
    """Tokenizes a split ``CHUNK`` examples at a time into ``directory/name`` (a datasets dataset per chunk,
    ``load_split`` joins them), or takes the plan's ids of it (``handed``); False when the split is empty."""
    import datasets

    if not examples:
        return False
    fmt = FORMATS[spec.format]
    report.examples[name] = report.tokens[name] = 0
    parts = 0
    for start in range(0, len(examples), CHUNK):
        if handed is not None:
            table, tokens = _columns_from_ids(handed, start, min(start + CHUNK, len(examples)), spec.max_length,
                                              spec.completion_only_loss, report,
                                              report.lengths if name == "train" else None)
            chunk = datasets.Dataset(table)
        else:
            rows = [_example(ex, spec, tokenizer) for ex in examples[start:start + CHUNK]]
            if fmt.paired:
                columns = _tokenize_pairs(rows, tokenizer, spec, report)
                tokens = sum(2 * len(p) + len(c) + len(r) for p, c, r in
                             zip(columns["prompt_ids"], columns["chosen_ids"], columns["rejected_ids"]))
            elif fmt.labelled:
                columns = _tokenize_labelled(rows, tokenizer, spec, report)
                tokens = sum(len(p) + len(c) for p, c in zip(columns["prompt_ids"], columns["completion_ids"]))
            else:
                columns = _tokenize(rows, tokenizer, spec.max_length, report,
                                    report.lengths if name == "train" else None, spec.completion_only_loss)
                tokens = sum(len(s) for s in columns["input_ids"])
            chunk = datasets.Dataset.from_dict(columns)
        report.examples[name] += len(chunk)
        report.tokens[name] += tokens
        if not len(chunk) and (parts or start + CHUNK < len(examples)):
            continue  # every example of the chunk cut away: an empty part would have no column types to join
        chunk.save_to_disk(str(directory / name / str(parts)))
        parts += 1
    return True


def load_split(directory: Path) -> Any:
    """A tokenized split as ``_save_tokenized`` leaves it: its chunks, memory-mapped and joined (not copied)."""
    import datasets

    parts = sorted(directory.iterdir(), key=lambda p: int(p.name))
    return datasets.concatenate_datasets([datasets.load_from_disk(str(p)) for p in parts])


def build(spec: DataSpec, tokenizer: Any, seed: int, use_cache: bool = True) -> Splits:
    """Reads, checks, splits, tokenizes and caches the data of a plan."""

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
    handed, report.token_ids = _handed(spec, seed, tokenizer, sel)
    logging.getLogger("ftc").info(f"token ids: {report.token_ids}")
    with atomic_path(cache_dir) as tmp:  # a crash never leaves a half-written cache that looks complete
        tmp.mkdir()
        tokenized = [name for name in ("train", "validation", "test")
                     if _save_tokenized(sel.splits[name] or [], name, tmp, spec, tokenizer, report,
                                        (handed or {}).get(name))]
        meta = {"report": {k: v for k, v in asdict(report).items() if k not in ("cache", "cache_hit")},
                "test": test, "shots": shots}
        (tmp / "complete.json").write_text(json.dumps(meta))

    def load(name: str) -> Any:
        return load_split(cache_dir / name) if name in tokenized else None

    return Splits(load("train"), load("validation"), test, load("test"), report, shots)
