"""What a row holds beyond its shape: near-duplicates, personal data and secrets, language.

Torch-free, so ``ftc plan`` runs the same checks as ``ftc train`` (``ftc.data.select`` applies them):

- **Near-duplicates**: MinHash LSH (datasketch's MinHash, computed a chunk at a time with numpy, and its band
  choice) over character 5-grams of an example's text, candidates confirmed by their exact Jaccard similarity; a
  few dozen bytes a row are kept, not its 5-grams.
  Text every row shares (a fixed instruction, a system prompt) is left out, or a templated data set would be one
  near-duplicate group.
- **Personal data and secrets**: patterns with the checksums that tell a card number (Luhn) or an IBAN (mod 97)
  from any other digits, and the credential shapes of ``ftc.secrets``.
- **Language**: py3langid, whose model ships inside the package (nothing is downloaded).
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
import re
import zlib
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

from ftc import secrets
from ftc.data.engine import Engine, Local

SHINGLE = 5  # characters per shingle: short enough for a changed word to move few of them
NUM_PERM = 128  # MinHash permutations: the LSH's false-negative rate at J=0.8 is well under 1%
BOILERPLATE_SHARE = 0.5  # a text piece on more than half of a file's rows is template, not example


def _lines(row_pieces: Iterable[str]) -> list[str]:
    return [line for p in row_pieces for line in p.splitlines() if line.strip()]


def boilerplate(all_pieces: Sequence[list[str]]) -> frozenset[str]:
    """Lines of text that more than half the rows hold (at least two rows): a fixed instruction or system prompt,
    also where it is the first line of a longer prompt.

    Two passes, so that memory is 8 bytes a line and not the lines: the first counts each line's hash, the second
    counts exactly the lines whose hash is that frequent (a hash collision can only make a line a candidate)."""
    from array import array
    from collections import Counter

    import numpy as np

    floor = max(2, int(len(all_pieces) * BOILERPLATE_SHARE) + 1)
    hashes = array("q")
    for row in all_pieces:
        hashes.extend({hash(line) for line in _lines(row)})
    found, counts = np.unique(np.frombuffer(hashes, dtype=np.int64), return_counts=True)
    frequent = set(found[counts >= floor].tolist())
    if not frequent:
        return frozenset()
    exact = Counter(line for row in all_pieces for line in set(_lines(row)) if hash(line) in frequent)
    return frozenset(line for line, n in exact.items() if n >= floor)


def own_text(row_pieces: Iterable[str], shared: frozenset[str]) -> str:
    """The row's text without its ``shared`` lines (all of it when nothing else is left)."""
    lines = _lines(row_pieces)
    return "\n".join([line for line in lines if line not in shared] or lines)


def shingles(text: str) -> frozenset[bytes]:
    """Character 5-grams of ``text``, case and whitespace folded."""
    text = _folded(text)
    if len(text) <= SHINGLE:
        return frozenset([text.encode()])
    return frozenset(text[i:i + SHINGLE].encode() for i in range(len(text) - SHINGLE + 1))


def jaccard(a: frozenset, b: frozenset) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


SIGNATURE_CHUNK = 1024  # rows whose MinHash signatures are held at once; only their band keys are kept


def near_duplicate_pairs(texts: Sequence[str], threshold: float,
                         connected: Optional[Callable[[int, int], bool]] = None,
                         runs_on: Optional[Engine] = None) -> Iterator[tuple[int, int, float]]:
    """Yields (i, j, Jaccard) with i < j, in order, for every pair of ``texts`` at or above ``threshold`` that MinHash
    LSH proposes; each proposal is confirmed on the exact 5-gram sets (``shingles``), so a pair is never a false
    positive. A proposal that ``connected(i, j)`` says is already grouped is not confirmed (a templated file
    proposes many per group). Deterministic: fixed seed and a stable hash (crc32), so ``ftc plan`` and ``ftc train``
    in different processes find the same pairs.

    Memory is about a hundred bytes a text, not its shingles (~12 KB): signatures are computed ``SIGNATURE_CHUNK``
    texts at a time and only each LSH band's 64-bit key is kept (nine at 0.8), with int32 proposals for the texts
    that share a key; a text's shingles are built again for the proposals it is in. The MinHash (datasketch's, 128
    permutations, computed by ``signatures``) and the bands (datasketch's choice of bands x rows for the threshold)
    are datasketch's MinHashLSH's, so the proposals are the ones its index gives. The signatures' chunks run on
    ``runs_on`` (``ftc.data.engine``; this process and its cores by default)."""
    from datasketch.lsh import _optimal_param

    bands, width = _optimal_param(threshold, NUM_PERM, 0.5, 0.5)
    keys = _band_keys(texts, bands, width, runs_on or Local())
    exact = functools.lru_cache(maxsize=64)(lambda i: shingles(texts[i]))
    for i, near in _proposals(keys):
        for j in map(int, near):
            if not (connected and connected(i, j)) and (score := jaccard(exact(i), exact(j))) >= threshold:
                yield i, j, score


PARALLEL_FROM = 100_000
"""Texts from which the local engine computes signatures in worker processes, one per core (up to 4): below it,
starting them (a fresh interpreter each) costs more than it saves."""


def _band_keys(texts: Sequence[str], bands: int, width: int, runs_on: Engine) -> Any:
    """(bands, len(texts)) uint64: a hash of each band of each text's MinHash signature (a 64-bit mix of its
    ``width`` values; two bands collide by chance with odds of ~n^2/2^65, and a collision only proposes a pair
    the exact check then judges). ``SIGNATURE_CHUNK`` texts at a time on the engine (in this process's workers
    when there are ``PARALLEL_FROM`` texts or more), taken as the chunks are asked for (texts may be lazy)."""
    import numpy as np

    jobs = ((texts[start:start + SIGNATURE_CHUNK], bands, width) for start in range(0, len(texts), SIGNATURE_CHUNK))
    parts = list(runs_on.map(_job_keys, jobs, parallel=len(texts) >= PARALLEL_FROM))
    return np.concatenate(parts, axis=1) if parts else np.empty((bands, 0), dtype=np.uint64)


def _job_keys(job: tuple[Sequence[str], int, int]) -> Any:
    return _chunk_keys(*job)


def _chunk_keys(chunk: Sequence[str], bands: int, width: int) -> Any:
    """``_band_keys`` of one chunk (a worker process's task)."""
    import numpy as np

    sigs = signatures(chunk).astype(np.uint64)
    keys = np.empty((bands, len(chunk)), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for band in range(bands):
            h = np.full(len(chunk), 0xCBF29CE484222325, dtype=np.uint64)
            for col in sigs[:, band * width:(band + 1) * width].T:
                h = (h ^ col) * np.uint64(0x100000001B3)
                h ^= h >> np.uint64(29)
            keys[band] = h
    return keys


def signatures(texts: Sequence[str]) -> Any:
    """(len(texts), NUM_PERM) uint32: each text's MinHash signature over its ``shingles``, the one datasketch's
    ``MinHash(num_perm=NUM_PERM, seed=1, hashfunc=zlib.crc32)`` gives (its ``affine32`` scheme: each 5-gram's
    crc32, MurmurHash3's 32-bit finalizer, then ``a * h + b`` mod 2^32 per permutation, the minimum kept).

    Computed for a whole chunk at once rather than a Python loop over each text's 5-gram set, which cost 85% of
    the time: the crc32 of a 5-byte string is the XOR of one table entry per byte position (crc32 is affine over
    GF(2)), so an ASCII text's 5-grams are hashed by table lookups over its bytes, and the minimum of each
    permutation over each text is one ``np.minimum.reduceat``. A 5-gram that repeats in a text is hashed again, which
    leaves the minimum as it is. A text with other characters (a 5-gram of characters is then not 5 bytes) or of
    ``SHINGLE`` characters or fewer takes the 5-grams of ``shingles``, hashed one by one."""
    import numpy as np

    base, tables = _crc_tables()
    ascii_texts, hashed, segment = [], [], np.empty(len(texts), dtype=np.int64)
    for i, text in enumerate(texts):
        folded = _folded(text)
        if len(folded) > SHINGLE and folded.isascii():
            ascii_texts.append(folded.encode())
            segment[i] = len(folded) - SHINGLE + 1
        else:
            hashed.append(np.fromiter(map(zlib.crc32, shingles(text)), dtype=np.uint32))
            segment[i] = -len(hashed[-1])  # negative: its hashes are in ``hashed``
    simple = segment > 0
    values = np.empty(int(np.abs(segment).sum()), dtype=np.uint32)
    starts = np.r_[0, np.cumsum(np.abs(segment))[:-1]].astype(np.int64)
    if ascii_texts:
        data = np.frombuffer(b"".join(ascii_texts), dtype=np.uint8)
        # every window start but the last SHINGLE - 1 bytes of each text
        keep = np.ones(len(data), dtype=bool)
        ends = np.cumsum([len(t) for t in ascii_texts])
        keep[(ends[:, None] - np.arange(1, SHINGLE)).ravel()] = False
        at = np.flatnonzero(keep)
        crc = np.full(len(at), base, dtype=np.uint32)
        for k in range(SHINGLE):
            crc ^= tables[k][data[at + k]]
        counts = segment[simple]
        values[np.arange(len(crc)) + np.repeat(starts[simple] - (np.cumsum(counts) - counts), counts)] = crc
    for start, part in zip(starts[~simple], hashed):
        values[start:start + len(part)] = part
    mixed = _fmix32(values)
    a, b = _permutations()
    sigs = np.empty((len(texts), NUM_PERM), dtype=np.uint32)
    if len(texts):
        for p in range(NUM_PERM):
            sigs[:, p] = np.minimum.reduceat(mixed * a[p] + b[p], starts)
    return sigs


def _folded(text: str) -> str:
    """``text`` case and whitespace folded, as ``shingles`` cuts it."""
    return re.sub(r"\s+", " ", text.lower()).strip()


@functools.lru_cache(maxsize=1)
def _crc_tables() -> tuple[int, Any]:
    """(crc32 of SHINGLE zero bytes, (SHINGLE, 256) uint32 tables): crc32(m) of a SHINGLE-byte ``m`` is the first
    XOR ``tables[k][m[k]]`` over its positions k."""
    import numpy as np

    base = zlib.crc32(bytes(SHINGLE))
    tables = np.empty((SHINGLE, 256), dtype=np.uint32)
    for k in range(SHINGLE):
        for v in range(256):
            tables[k, v] = zlib.crc32(bytes(k) + bytes([v]) + bytes(SHINGLE - k - 1)) ^ base
    return base, tables


@functools.lru_cache(maxsize=1)
def _permutations() -> tuple[Any, Any]:
    """datasketch's affine32 permutation parameters for seed 1: odd ``a``, any ``b``, drawn in its order."""
    import numpy as np

    gen = np.random.RandomState(1)
    a = gen.randint(0, 1 << 31, NUM_PERM, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, NUM_PERM, dtype=np.uint32)
    return a, b


def _fmix32(h: Any) -> Any:
    """MurmurHash3's 32-bit finalizer (a bijection that spreads crc32's structure before the affine permutations)."""
    import numpy as np

    with np.errstate(over="ignore"):
        h = h ^ (h >> np.uint32(16))
        h = h * np.uint32(0x85EBCA6B)
        h = h ^ (h >> np.uint32(13))
        h = h * np.uint32(0xC2B2AE35)
        return h ^ (h >> np.uint32(16))


def _proposals(keys: Any) -> Iterator[tuple[int, Any]]:
    """(i, the ascending indexes j > i of the texts that share a band key with text i), ascending i, for the texts
    that share any: what an LSH index's query returns, from flat index arrays (a few int32 per text in a shared
    band) instead of an index's hash tables."""
    import numpy as np

    members, sizes = [], []
    for band in keys:
        order = np.argsort(band, kind="stable").astype(np.int32)
        ranked = band[order]
        starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
        size = np.diff(np.r_[starts, len(ranked)])
        members.append(order[np.repeat(size > 1, size)])  # the texts of the keys two or more share, key by key
        sizes.append(size[size > 1])
    flat, size = np.concatenate(members), np.concatenate(sizes)
    if not len(flat):
        return
    end = np.cumsum(size)
    group = np.repeat(np.arange(len(size), dtype=np.int32), size)
    by_text = np.argsort(flat, kind="stable")
    text, group = flat[by_text], group[by_text]
    del by_text
    firsts = np.flatnonzero(np.r_[True, text[1:] != text[:-1]])
    for first, last in zip(firsts, np.r_[firsts[1:], len(text)]):
        i = int(text[first])
        near = np.unique(np.concatenate([flat[end[g] - size[g]:end[g]] for g in group[first:last]]))
        yield i, near[near > i]


# --- personal data and secrets -------------------------------------------------------------------------------

_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
# A phone number as people write one: an optional +country code, then at least three digit groups split by
# spaces, dots, dashes or an area code in brackets. A bare run of digits (an order number) is not one.
_PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?\d{2,4}(?:[ .-]\d{2,5}){2,4}(?!\w)"
                    r"|(?<![\w+])(?:\+\d{1,3}[ .-]?)?\(\d{1,4}\)[ .-]?\d{3,4}[ .-]?\d{3,5}(?!\w)"
                    r"|(?<![\w+])\+\d{8,14}(?!\w)")


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def _iban_ok(text: str) -> bool:
    s = text.replace(" ", "")
    if not 15 <= len(s) <= 34:
        return False
    moved = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _ip_ok(text: str) -> bool:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return False
    return not (ip.version == 6 and text.count(":") < 3)  # "12:30:45" is a time, not an address


def _credentials(text: str) -> Iterable[tuple[int, int]]:
    for _, pattern, group, needs in secrets.PATTERNS:
        for m in pattern.finditer(text) if needs in text else ():
            yield m.start(group), m.end(group)


_DIGIT = re.compile(r"\d")


def _cards(text: str) -> Iterable[tuple[int, int]]:
    for m in _CARD.finditer(text) if _DIGIT.search(text) else ():
        digits = re.sub(r"\D", "", m.group())
        if 13 <= len(digits) <= 19 and _luhn(digits) and len(set(digits)) > 1:
            yield m.span()


def _phones(text: str) -> Iterable[tuple[int, int]]:
    for m in _PHONE.finditer(text) if _DIGIT.search(text) else ():
        if 9 <= len(re.sub(r"\D", "", m.group())) <= 15:
            yield m.span()


def _ips(text: str) -> Iterable[tuple[int, int]]:
    v4 = _IPV4.finditer(text) if _DIGIT.search(text) else ()
    v6 = _IPV6.finditer(text) if ":" in text else ()  # "fe80::ab" has no decimal digit
    return (m.span() for m in itertools.chain(v4, v6) if _ip_ok(m.group()))


FINDERS: dict[str, Callable[[str], Iterable[tuple[int, int]]]] = {
    "credential": _credentials,
    "email": lambda text: (m.span() for m in (_EMAIL.finditer(text) if "@" in text else ())),
    "iban": lambda text: (m.span() for m in _IBAN.finditer(text) if _iban_ok(m.group())),
    "card": _cards,
    "ip": _ips,
    "phone": _phones,
}
"""(start, end) of each candidate of a kind in a text. A text without what every match holds (a digit, an '@', a
credential pattern's marker) is not scanned: most text is none of these, and the scans cost more than the rest of
the selection's per-row work."""
PII_KINDS = tuple(FINDERS)
"""Checked in this order; a span one kind claims is not matched again by a later one (an IBAN's digits are not a
phone number)."""
PLACEHOLDER = {kind: f"[{kind.upper()}]" for kind in PII_KINDS}


_MAY_HOLD = re.compile(r"[\d@:=_]|bearer|akia|asia|aiza|sk-", re.I)
"""One of which every finder's match holds: a digit (cards, phones, IPv4, IBANs), '@' (emails, a URI's userinfo),
':' (IPv6, '://'), '=' (a query string's credential), '_' (hf_, ghp_ tokens) or a credential's prefix. A text
with none is not scanned (one pass instead of a dozen: most text is none of these)."""


@functools.lru_cache(maxsize=8192)
def find_pii(text: str) -> tuple[tuple[str, int, int], ...]:
    """(kind, start, end) of every piece of personal data or secret in ``text``, in text order, spans disjoint.
    Memoized: a fixed instruction or system prompt is scanned once, not once per row."""
    if not _MAY_HOLD.search(text):
        return ()
    found: list[tuple[str, int, int]] = []
    for kind in PII_KINDS:
        for start, end in FINDERS[kind](text):
            if all(end <= s or start >= e for _, s, e in found):
                found.append((kind, start, end))
    return tuple(sorted(found, key=lambda f: f[1]))


def mask_pii(text: str) -> str:
    """``text`` with each find replaced by its kind's placeholder (``[EMAIL]``): the model learns where such a value
    goes, never the value."""
    for kind, start, end in reversed(find_pii(text)):
        text = text[:start] + PLACEHOLDER[kind] + text[end:]
    return text


def shown(value: str) -> str:
    """A find as a message may show it: its first two characters, the rest starred (``jo***``)."""
    return value[:2] + "***"


def mask_row(row: Any) -> Any:
    """Every string of a row (its messages' contents included) passed through ``mask_pii``."""
    if isinstance(row, str):
        return mask_pii(row)
    if isinstance(row, dict):
        return {k: mask_row(v) for k, v in row.items()}
    if isinstance(row, list):
        return [mask_row(v) for v in row]
    return row


# --- language -------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _identifier() -> Any:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def language_codes() -> tuple[str, ...]:
    """The ISO 639-1 codes the detector knows."""
    return tuple(_identifier().nb_classes)


UNSURE = "unsure"
MIN_CONFIDENCE = 0.5  # below this the detector's guess is reported as 'unsure' (short, mixed or code-only text)


@functools.lru_cache(maxsize=8192)
def language(text: str) -> Optional[str]:
    """ISO 639-1 code of the text's language ('unsure' when the detector's probability is under 0.5); None for text
    without letters. Memoized: duplicate rows (dropped later in the selection) are classified once."""
    if not any(ch.isalpha() for ch in text):
        return None
    lang, prob = _identifier().classify(text)
    return lang if prob >= MIN_CONFIDENCE else UNSURE
