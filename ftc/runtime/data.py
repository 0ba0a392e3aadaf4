"""Data pipeline: read -> validate -> dedup -> split -> tokenize (+EOS, loss mask) -> cache.

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
from typing import Any, Optional

from ftc.data.formats import dedup_keys, to_preference, to_prompt_completion
from ftc.data.load import RowProblems, checked_rows, problems_message
from ftc.errors import DataError
from ftc.paths import atomic_path, cache_root, resolve_path
from ftc.plan import DataSpec

CACHE_VERSION = 2  # 2: duplicates keyed on the checked fields (formats.dedup_keys), as ftc plan counts them


@dataclass
class DataReport:
    rows_read: dict[str, int] = field(default_factory=dict)
    dropped_empty: int = 0
    dropped_duplicates: int = 0
    dropped_near_duplicates: int = 0
    dropped_no_completion_after_truncation: int = 0
    truncated: int = 0
    examples: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)
    cache: str = ""
    cache_hit: bool = False

    def lines(self) -> list[str]:
        return [
            f"rows read: {self.rows_read}",
            f"examples: {self.examples}, tokens: {self.tokens}",
            f"dropped: {self.dropped_empty} empty, {self.dropped_duplicates} exact duplicates, "
            f"{self.dropped_near_duplicates} near-duplicates (case/whitespace), "
            f"{self.dropped_no_completion_after_truncation} with no completion left after truncation",
            f"truncated to max_length: {self.truncated}",
        ]


@dataclass
class Splits:
    train: Any  # datasets.Dataset with input_ids, completion_mask
    validation: Optional[Any]
    test: list[dict[str, str]]  # raw {prompt, completion} (or {prompt, chosen, rejected}) for evaluation
    test_tokenized: Optional[Any]
    report: DataReport


def _file_fingerprint(path: str) -> str:
    resolved = resolve_path(path)
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


def _read_examples(path: str, spec: DataSpec, tokenizer: Any, report: DataReport,
                   role: str) -> list[tuple[dict, tuple[int, int]]]:
    """(example, its dedup keys) for every row with something to learn from; malformed rows raise one DataError."""
    examples, rows = [], 0
    problems = RowProblems(resolve_path(path))
    for row, values in checked_rows(path, spec.format, spec.fields, problems):
        rows += 1
        if values is None:
            report.dropped_empty += 1
            continue
        if spec.format == "preference":
            prompt, chosen, rejected = to_preference(row, spec.fields, spec.template, tokenizer)
            example = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
        else:
            prompt, completion = to_prompt_completion(row, spec.format, spec.fields, spec.template, tokenizer)
            example = {"prompt": prompt, "completion": completion}
            if spec.format == "kto":
                example["label"] = values["label"]
        examples.append((example, dedup_keys(values)))
    if problems.count:
        raise DataError(problems_message(problems, role, spec.format))
    report.rows_read[role] = rows
    return examples


def _dedup(examples: list[tuple[dict, tuple[int, int]]], report: DataReport, seen_exact: set,
           seen_near: set) -> list[dict]:
    """Drops examples seen before (here or in an earlier split), keyed as ``ftc plan`` counts them."""
    kept = []
    for ex, (exact, near) in examples:
        if exact in seen_exact:
            report.dropped_duplicates += 1
            continue
        if near in seen_near:
            report.dropped_near_duplicates += 1
            continue
        seen_exact.add(exact)
        seen_near.add(near)
        kept.append(ex)
    return kept


def _adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer itself starts sequences with BOS (Llama, Mistral, Gemma: yes; Qwen, GPT-2: no)."""
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("a", add_special_tokens=True)["input_ids"][:1] == [bos]


def tokenize_example(tokenizer: Any, prompt: str, completion: str) -> tuple[list[int], list[int]]:
    """prompt ids (+BOS when the tokenizer uses one) and completion ids + EOS, so the tuned model learns to stop."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else []
    if _adds_bos(tokenizer) and (not prompt_ids or prompt_ids[0] != tokenizer.bos_token_id):
        prompt_ids = [tokenizer.bos_token_id] + prompt_ids
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    if not completion_ids or completion_ids[-1] != tokenizer.eos_token_id:
        completion_ids = completion_ids + [tokenizer.eos_token_id]
    return prompt_ids, completion_ids


def _tokenize_pairs(examples: list[dict], tokenizer: Any, spec: DataSpec, report: DataReport) -> dict[str, list]:
    """Preference pairs as TRL's DPOTrainer takes them pre-tokenized: prompt_ids (its end, at most
    max_prompt_length), chosen_ids and rejected_ids (+EOS), each pair within max_length; truncations counted."""
    out: dict[str, list] = {"prompt_ids": [], "chosen_ids": [], "rejected_ids": []}
    for ex in examples:
        p, chosen = tokenize_example(tokenizer, ex["prompt"], ex["chosen"])
        _, rejected = tokenize_example(tokenizer, ex["prompt"], ex["rejected"])
        cut = False
        if len(p) > spec.max_prompt_length:
            p, cut = p[len(p) - spec.max_prompt_length:], True
        room = spec.max_length - len(p)
        if len(chosen) > room or len(rejected) > room:
            chosen, rejected, cut = chosen[:room], rejected[:room], True
        report.truncated += cut
        out["prompt_ids"].append(p)
        out["chosen_ids"].append(chosen)
        out["rejected_ids"].append(rejected)
    return out


def _tokenize_labelled(examples: list[dict], tokenizer: Any, spec: DataSpec, report: DataReport) -> dict[str, list]:
    """Labelled answers as TRL's KTOTrainer takes them pre-tokenized: prompt_ids (its end, at most
    max_prompt_length), completion_ids (+EOS) within max_length, label; truncations counted."""
    out: dict[str, list] = {"prompt_ids": [], "completion_ids": [], "label": []}
    for ex in examples:
        p, c = tokenize_example(tokenizer, ex["prompt"], ex["completion"])
        cut = False
        if len(p) > spec.max_prompt_length:
            p, cut = p[len(p) - spec.max_prompt_length:], True
        room = spec.max_length - len(p)
        if len(c) > room:
            c, cut = c[:room], True
        report.truncated += cut
        out["prompt_ids"].append(p)
        out["completion_ids"].append(c)
        out["label"].append(bool(ex["label"]))
    return out


def _tokenize(examples: list[dict], tokenizer: Any, max_length: int, report: DataReport) -> dict[str, list]:
    ids, masks = [], []
    for ex in examples:
        p, c = tokenize_example(tokenizer, ex["prompt"], ex["completion"])
        seq, mask = p + c, [0] * len(p) + [1] * len(c)
        if len(seq) > max_length:
            report.truncated += 1
            seq, mask = seq[:max_length], mask[:max_length]
            if not any(mask):
                report.dropped_no_completion_after_truncation += 1
                continue
        ids.append(seq)
        masks.append(mask)
    return {"input_ids": ids, "completion_mask": masks}


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
    return Splits(loaded["train"], loaded["validation"], meta["test"], loaded["test"], report)


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

    train = _read_examples(spec.path, spec, tokenizer, report, "train")
    validation = _read_examples(spec.validation_path, spec, tokenizer, report, "validation") \
        if spec.validation_path else None
    test = _read_examples(spec.test_path, spec, tokenizer, report, "test") if spec.test_path else None

    # Held-out sets are deduplicated first, so a training example never duplicates a test prompt.
    # ftc plan counts the same way (compiler/compile.py, _split_counts).
    seen_exact: set = set()
    seen_near: set = set()
    if test is not None:
        test = _dedup(test, report, seen_exact, seen_near)
    if validation is not None:
        validation = _dedup(validation, report, seen_exact, seen_near)
    train = _dedup(train, report, seen_exact, seen_near) if spec.dedup else [ex for ex, _ in train]
    rng = random.Random(seed)
    if test is None or validation is None:
        rng.shuffle(train)
        n = len(train)
        if test is None:
            k = int(n * spec.test_fraction)
            test, train = train[:k], train[k:]
        if validation is None:
            k = int(n * spec.validation_fraction)
            validation, train = train[:k], train[k:]
    if spec.max_samples:
        train = train[: spec.max_samples]
    if not train:
        raise DataError(f"{resolve_path(spec.path)}: no training examples left after validation and splitting")

    parts = {"train": train, "validation": validation, "test": test}
    tokenized = {}
    for name, rows in parts.items():
        if rows and spec.format == "preference":
            columns = _tokenize_pairs(rows, tokenizer, spec, report)
            tokenized[name] = datasets.Dataset.from_dict(columns)
            report.examples[name] = len(columns["prompt_ids"])
            report.tokens[name] = sum(2 * len(p) + len(c) + len(r) for p, c, r in
                                      zip(columns["prompt_ids"], columns["chosen_ids"], columns["rejected_ids"]))
        elif rows and spec.format == "kto":
            columns = _tokenize_labelled(rows, tokenizer, spec, report)
            tokenized[name] = datasets.Dataset.from_dict(columns)
            report.examples[name] = len(columns["prompt_ids"])
            report.tokens[name] = sum(len(p) + len(c) for p, c in zip(columns["prompt_ids"], columns["completion_ids"]))
        elif rows:
            columns = _tokenize(rows, tokenizer, spec.max_length, report)
            tokenized[name] = datasets.Dataset.from_dict(columns)
            report.examples[name] = len(columns["input_ids"])
            report.tokens[name] = sum(len(s) for s in columns["input_ids"])

    meta = {"report": {k: v for k, v in asdict(report).items() if k not in ("cache", "cache_hit")}, "test": test}
    with atomic_path(cache_dir) as tmp:  # a crash never leaves a half-written cache that looks complete
        tmp.mkdir()
        for name, ds in tokenized.items():
            ds.save_to_disk(str(tmp / name))
        (tmp / "complete.json").write_text(json.dumps(meta))
    def load(name: str) -> Any:
        return datasets.load_from_disk(str(cache_dir / name)) if name in tokenized else None

    return Splits(load("train"), load("validation"), test or [], load("test"), report)
