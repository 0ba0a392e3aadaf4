"""The plan's token ids, handed to ``ftc train``: ``ftc plan`` encodes every selected example to count its tokens
exactly; for prompt + completion formats it also keeps the ids, so that training on a large set starts without
encoding it again (a million rows: minutes on one core, where the plan used every core).

An entry is a directory under ``$FTC_CACHE/token-ids/`` keyed by the selection (``select.key``: settings, code,
files' bytes), the template, the tokenizer's identity (``tokens.identity``: its pipeline, special tokens and chat
template, the same whether transformers or the ``tokenizers`` library built it) and the tokenizing code. Per split
(train, validation, test): ``<split>.ids`` (every example's prompt then completion ids, int32, one after the other)
and ``<split>.lengths.npy`` (prompt and completion tokens of each example, in the selection's order). The run still
encodes a sample with its own tokenizer and compares before it trusts an entry (``runtime.data``).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

VERSION = 1
SPLITS = ("train", "validation", "test")


def key(settings: Any, template: str, tokenizer: Any) -> str:
    from ftc.data import select, tokens

    h = hashlib.sha256(json.dumps([VERSION, select.key(settings), template, tokens.identity(tokenizer)]).encode())
    h.update(Path(tokens.__file__).read_bytes())  # how ids are made (BOS, EOS)
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()[:24]


def directory(entry: str) -> Path:
    from ftc.paths import cache_root

    return cache_root() / "token-ids" / entry


class Writer:
    """Appends a split's examples' ids as they are encoded, a batch at a time (memory: one batch)."""

    def __init__(self, target: Path) -> None:
        self.target = target
        self._files: dict[str, Any] = {}
        self._lengths: dict[str, list[tuple[int, int]]] = {}

    def add(self, split: str, encoded: list[tuple[list[int], list[int]]]) -> None:
        import numpy as np

        if split not in self._files:
            self._files[split] = open(self.target / f"{split}.ids", "wb")
            self._lengths[split] = []
        flat = itertools.chain.from_iterable(itertools.chain.from_iterable(encoded))  # prompt, completion, ...
        self._files[split].write(np.fromiter(flat, dtype=np.int32).tobytes())
        self._lengths[split] += [(len(p), len(c)) for p, c in encoded]

    def close(self) -> None:
        import numpy as np

        for split, f in self._files.items():
            f.close()
            np.save(self.target / f"{split}.lengths.npy", np.asarray(self._lengths[split], dtype=np.int64)
                    .reshape(-1, 2))


@contextlib.contextmanager
def writing(settings: Any, template: str, tokenizer: Any) -> Iterator[Writer]:
    """A ``Writer`` whose entry appears only when the block completes (a failure or a crash leaves none)."""
    from ftc.paths import atomic_path

    with atomic_path(directory(key(settings, template, tokenizer))) as tmp:
        tmp.mkdir()
        writer = Writer(tmp)
        try:
            yield writer
        finally:
            writer.close()


@dataclass
class Handed:
    """One split's ids as the plan encoded them (memory-mapped, not read into memory)."""

    ids: Any
    """int32, every example's prompt then completion ids, one example after the other."""
    lengths: Any
    """(examples, 2) int64: prompt and completion tokens of each example."""
    starts: Any
    """Where each example's ids start in ``ids``."""

    def example(self, i: int) -> tuple[list[int], list[int]]:
        p, c = (int(n) for n in self.lengths[i])
        ids = self.ids[self.starts[i]:self.starts[i] + p + c].tolist()
        return ids[:p], ids[p:]


def load(settings: Any, template: str, tokenizer: Any) -> tuple[Optional[dict[str, Handed]], str]:
    """The entry of this selection, template and tokenizer ({split: Handed}, its key), or (None, why not)."""
    import numpy as np

    from ftc.data.load import data_path

    remote = [p for _, p in settings.paths if "://" in data_path(p)]
    if remote:
        return None, f"the data is read from {remote[0]} (a plan keeps the ids of files on its own machine only)"
    try:
        entry = key(settings, template, tokenizer)
    except OSError as e:  # a file gone since the selection read it
        return None, f"the data files cannot be read to find the plan's ids ({e})"
    d = directory(entry)
    if not d.is_dir():
        return None, f"no token ids from a plan of this data with this tokenizer in {d.parent}"
    out = {}
    try:
        for split in SPLITS:
            if (d / f"{split}.lengths.npy").is_file():
                lengths = np.load(d / f"{split}.lengths.npy")
                total = lengths.sum(axis=1)
                starts = np.concatenate([[0], np.cumsum(total)[:-1]]).astype(np.int64)
                size = (d / f"{split}.ids").stat().st_size
                if size != 4 * int(total.sum()):
                    raise ValueError(f"{split}.ids holds {size // 4} ids, its lengths add up to {int(total.sum())}")
                ids = np.memmap(d / f"{split}.ids", dtype=np.int32, mode="r") if size else np.zeros(0, np.int32)
                out[split] = Handed(ids, lengths, starts)
    except (OSError, ValueError) as e:
        return None, f"the token ids in {d} are damaged ({e})"
    return out, entry
