"""Read rows from jsonl/json/csv/parquet files, local or fsspec URIs; errors name the file and line."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Iterator

from ftc.compiler.facts import resolve_path


class DataError(Exception):
    """A bad input file or row; the message names the file and line."""


def _open_text(path: str):
    if "://" in path:
        try:
            import fsspec
        except ImportError as e:
            raise DataError(f"{path}: reading URIs needs fsspec (pip install fsspec s3fs)") from e
        return fsspec.open(path, "rt", encoding="utf-8", compression="infer").open()
    if path.endswith(".gz"):
        import gzip

        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _suffix(path: str) -> str:
    name = path[:-3] if path.endswith(".gz") else path
    return Path(name.split("?")[0]).suffix.lower()


def read_rows(path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yields (line number, row). Line numbers are 1-based lines for jsonl/csv, 1-based items for json/parquet."""
    path = resolve_path(path)
    suffix = _suffix(path)
    try:
        if suffix == ".jsonl":
            with _open_text(path) as f:
                for no, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise DataError(f"{path}:{no}: invalid JSON ({e.msg} at column {e.colno})") from None
                    if not isinstance(row, dict):
                        raise DataError(f"{path}:{no}: expected a JSON object, got {type(row).__name__}")
                    yield no, row
        elif suffix == ".json":
            with _open_text(path) as f:
                data = json.load(f)
            if isinstance(data, dict):
                data = next((v for v in data.values() if isinstance(v, list)), None)
            if not isinstance(data, list):
                raise DataError(f"{path}: expected a JSON list of objects")
            for no, row in enumerate(data, 1):
                if not isinstance(row, dict):
                    raise DataError(f"{path}: item {no}: expected a JSON object")
                yield no, row
        elif suffix == ".csv":
            with _open_text(path) as f:
                reader = csv.DictReader(f)
                for row in reader:
                    yield reader.line_num, dict(row)
        elif suffix == ".parquet":
            import pyarrow.parquet as pq

            if "://" in path:
                import fsspec

                with fsspec.open(path, "rb") as f:
                    table = pq.read_table(io.BytesIO(f.read()))
            else:
                table = pq.read_table(path)
            for no, row in enumerate(table.to_pylist(), 1):
                yield no, row
        else:
            raise DataError(f"{path}: unsupported file type '{suffix}' (use .jsonl, .json, .csv or .parquet)")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
