"""Read rows from jsonl/json/csv/parquet files, local or fsspec URIs, and check them against their format.

Problems are reported as ``file:line`` (1-based lines for jsonl/csv, items for json/parquet). A file that cannot be
read at all raises DataError; a bad row is collected in ``RowProblems`` so that every bad row is reported at once
(``ftc plan`` and ``ftc train`` run the same checks).
"""

from __future__ import annotations

import csv
import io
import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Union

from ftc.data.formats import CSV_FIELD_LIMIT, FORMATS, EmptyRow, MissingField, RowError, check_row, propose_fields
from ftc.errors import DataError
from ftc.paths import resolve_path

MAX_SHOWN = 10
MAX_COLUMN_SETS = 8  # distinct column sets among rows lacking a field: past it, no one mapping is proposed
BOM = b"\xef\xbb\xbf"  # UTF-8 byte-order mark


@dataclass
class RowProblems:
    """Malformed rows of one file: the first ``MAX_SHOWN`` as ``file:line: what``, and how many in all. Rows that
    lack a field of their format are also counted apart, with the first such row's columns: when the file names
    the fields otherwise, one proposed mapping (``mapping``) replaces their lines."""

    path: str
    fmt: str = ""
    fields: dict[str, str] = field(default_factory=dict)
    count: int = 0
    missing: int = 0
    """Rows without a required field's column."""
    columns: dict[tuple[str, ...], int] = field(default_factory=dict)
    """The column sets of the rows that lacked a field, with their counts (at most ``MAX_COLUMN_SETS``)."""
    _shown: list[tuple[bool, str]] = field(default_factory=list)

    def add(self, line: int, what: Union[str, RowError], row: Any = None) -> None:
        self.count += 1
        missing = isinstance(what, MissingField)
        if missing:
            self.missing += 1
            names = tuple(str(k) for k in row) if isinstance(row, dict) else ()
            if names in self.columns or len(self.columns) < MAX_COLUMN_SETS:
                self.columns[names] = self.columns.get(names, 0) + 1
        if sum(1 for m, _ in self._shown if m == missing) < MAX_SHOWN:  # enough of each kind to show either
            self._shown.append((missing, f"{self.path}:{line}: {what}"))

    def merge(self, later: RowProblems) -> None:
        """Adds the problems of a later part of the same file, as if its rows had been added here one by one (the
        same counts, column sets and first lines of each kind)."""
        self.count += later.count
        self.missing += later.missing
        for names, n in later.columns.items():
            if names in self.columns or len(self.columns) < MAX_COLUMN_SETS:
                self.columns[names] = self.columns.get(names, 0) + n
        for missing, text in later._shown:
            if sum(1 for m, _ in self._shown if m == missing) < MAX_SHOWN:
                self._shown.append((missing, text))

    def mapping(self) -> Optional[dict[str, str]]:
        """The overrides that make every row lacking a field readable (``formats.propose_fields`` proposes the same
        for each of their column sets), or None."""
        if not self.missing or not self.fmt or sum(self.columns.values()) != self.missing:
            return None
        proposals = {tuple(sorted((propose_fields(self.fmt, self.fields, c) or {}).items())) for c in self.columns}
        return dict(next(iter(proposals))) if len(proposals) == 1 and () not in proposals else None

    def mapping_line(self, with_fix: bool = True) -> Optional[str]:
        """One line for every row a mapping fixes: how many, what they lack, the file's columns (and the overrides
        when ``with_fix``)."""
        proposed = self.mapping()
        if proposed is None:
            return None
        if "data.format" in proposed:
            what = f"are not {self.fmt} rows"
        else:
            columns = next(iter(self.columns))
            lacking = [n for n in FORMATS[self.fmt].required if self.fields.get(n, n) not in columns]
            what = f"have no {'/'.join(lacking)} column{'s' if len(lacking) > 1 else ''} (format={self.fmt})"
        n = self.missing
        fix = f"; {' '.join(f'{k}={v}' for k, v in proposed.items())} reads them" if with_fix else ""
        columns = " | ".join(", ".join(c) for c in self.columns)
        return f"{self.path}: {n} row{'s' if n > 1 else ''} {what}; their columns: {columns}{fix}"

    def lines(self, with_mapping: bool = True) -> list[str]:
        """The problems to show: the mapping's line (unless ``with_mapping`` is False) in place of the rows it
        fixes, then the others."""
        mapped = self.mapping() is not None
        shown = [text for missing, text in self._shown if not (mapped and missing)][:MAX_SHOWN]
        hidden = self.count - (self.missing if mapped else 0) - len(shown)
        head = [self.mapping_line()] if mapped and with_mapping else []
        return head + shown + ([f"... and {hidden} more"] if hidden else [])


def _open_binary(path: str):
    if "://" in path:
        try:
            import fsspec
        except ImportError as e:
            raise DataError(f"{path}: reading URIs needs fsspec (pip install fsspec s3fs)") from e
        return fsspec.open(path, "rb", compression="infer").open()
    if path.endswith(".gz"):
        import gzip

        return gzip.open(path, "rb")
    return open(path, "rb")


def _decode(path: str, data: bytes) -> str:
    try:
        return data.removeprefix(BOM).decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text ({e.reason} at byte {e.start}); re-save the file as "
                        "UTF-8") from None


def _wrapped_rows(path: str, data: dict[str, Any]) -> list[Any]:
    """The rows of a JSON object that wraps them (``{"data": [...]}``, ``{"version": 2, "rows": [...]}``): its one
    value that is a list of objects. None or several such lists is ambiguous: refused, naming the keys."""
    lists = [k for k, v in data.items() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)]
    if len(lists) == 1:
        return data[lists[0]]
    keys = ", ".join(f"'{k}'" for k in (lists or data)) or "none"
    what = f"several lists of objects ({keys})" if lists else f"no list of objects (keys: {keys})"
    raise DataError(f"{path}: a JSON object with {what}; expected a JSON list of row objects, or an object holding "
                    "exactly one such list. Save the rows as a JSON list or as JSONL (one object per line)")


def _suffix(path: str) -> str:
    name = path[:-3] if path.endswith(".gz") else path
    return Path(name.split("?")[0]).suffix.lower()


Row = Union[dict[str, Any], RowError]


def data_path(path: str) -> str:
    """The file a data path names, as this machine reads it: a hub dataset's split (``hub:org/set?split=train``,
    ``ftc.data.hub_data``) downloaded or found in the Hugging Face cache, an asset of ftc's, a URI as it is, else
    the absolute path."""
    from ftc.data import hub_data

    return hub_data.local_file(path) if path.startswith(hub_data.SCHEME) else resolve_path(path)


def read_rows(path: str, raw: bool = False) -> Iterator[tuple[int, Union[Row, bytes]]]:
    """Yields (line number, row), or (line number, RowError) for a line that is not a JSON object in UTF-8.
    ``raw``: a JSONL line as its bytes, for ``parsed`` to make the row where it is checked (a chunk of the
    selection, which may run on another machine); other formats are read whole, and yield rows either way."""
    path = data_path(path)
    suffix = _suffix(path)
    try:
        if suffix == ".jsonl":
            with _open_binary(path) as f:
                for no, line in enumerate(f, 1):
                    if no == 1:
                        line = line.removeprefix(BOM)  # spreadsheet and Windows tools start UTF-8 files with one
                    if not line.strip():
                        continue
                    yield no, line if raw else _json_line(line)
        elif suffix == ".json":
            with _open_binary(path) as f:
                data = json.loads(_decode(path, f.read()))
            if isinstance(data, dict):
                data = _wrapped_rows(path, data)
            if not isinstance(data, list):
                raise DataError(f"{path}: expected a JSON list of objects, got {type(data).__name__}")
            for no, row in enumerate(data, 1):
                yield no, _unicode(row) if isinstance(row, dict) else \
                    RowError(f"expected a JSON object, got {type(row).__name__}")
        elif suffix == ".csv":
            csv.field_size_limit(CSV_FIELD_LIMIT)
            with _open_binary(path) as f:
                reader = csv.DictReader(io.StringIO(_decode(path, f.read()), newline=""))
                for row in reader:
                    yield reader.line_num, dict(row)
        elif suffix == ".parquet":
            import pyarrow.parquet as pq

            with _open_binary(path) as f:
                table = pq.read_table(io.BytesIO(f.read()))
            for no, row in enumerate(table.to_pylist(), 1):
                yield no, row
        else:
            raise DataError(f"{path}: unsupported file type '{suffix}' (use .jsonl, .json, .csv or .parquet)")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except json.JSONDecodeError as e:  # a .json file as a whole
        raise DataError(f"{path}:{e.lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
    except RecursionError:
        raise DataError(f"{path}: JSON nested more deeply than Python's parser allows; rows are flat objects of "
                        "strings (and message lists)") from None
    except csv.Error as e:
        raise DataError(f"{path}: not readable as CSV ({e})") from None
    except (EOFError, OSError, zlib.error) as e:  # a damaged or cut-short .gz, an unreadable file
        raise DataError(f"{path}: cannot be read ({type(e).__name__}: {e}); is it complete?") from None
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - a reader library's refusal (pyarrow on a file that is not parquet)
        if type(e).__module__.split(".")[0] not in ("pyarrow", "fsspec"):
            raise
        raise DataError(f"{path}: not readable as {suffix[1:]} ({type(e).__name__}: {str(e)[:200]})") from None


def parsed(item: Union[Row, bytes]) -> Row:
    """The row of what ``read_rows(path, raw=True)`` yielded."""
    return _json_line(item) if isinstance(item, bytes) else item


def _json_line(raw: bytes) -> Row:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return RowError(f"not UTF-8 text ({e.reason} at byte {e.start} of the line); re-save the file as UTF-8")
    try:
        row = json.loads(text)
    except json.JSONDecodeError as e:
        return RowError(f"invalid JSON ({e.msg} at column {e.colno})")
    except RecursionError:
        return RowError("JSON nested more deeply than Python's parser allows")
    if not isinstance(row, dict):
        return RowError(f"expected a JSON object, got {type(row).__name__}")
    return _unicode(row) if "\\u" in text.lower() else row  # only an escape can make an unpaired surrogate


def _unicode(row: dict[str, Any]) -> Row:
    """The row, or a RowError when one of its strings holds an unpaired surrogate (``"\\ud800"``: not Unicode
    text, which no tokenizer or hash can encode)."""
    try:
        json.dumps(row, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as e:
        return RowError(f"holds an unpaired surrogate {e.object[e.start:e.end]!r} (not valid Unicode); fix the "
                        "escape in the file")
    except (RecursionError, ValueError):
        return RowError("nested too deeply to read")
    return row


def checked_rows(path: str, fmt: str, fields: dict[str, str],
                 problems: RowProblems) -> Iterator[tuple[dict[str, Any], Optional[dict[str, Any]]]]:
    """Yields (row, its fields by the format's names) for every well-formed row and (row, None) for a row with
    nothing to learn from (the caller counts it); malformed rows go to ``problems``."""
    for line, row in read_rows(path):
        if isinstance(row, RowError):
            problems.add(line, row)
            continue
        try:
            values = check_row(row, fmt, fields)
        except EmptyRow:
            yield row, None
            continue
        except RowError as e:
            problems.add(line, e, row)
            continue
        yield row, values


def problems_message(problems: RowProblems, role: str, fmt: str) -> str:
    n = problems.count
    return (f"{n} malformed row{'s' if n > 1 else ''} in the {role} data (format={fmt}; map columns with "
            "data.fields.<name>=<column>):\n  " + "\n  ".join(problems.lines()))
