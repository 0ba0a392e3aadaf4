"""Where things are and how they are written: package assets, the cache root, user paths, atomic writes.

Every file or directory ftc publishes is written under a temporary name and renamed into place
(``atomic_path`` / ``atomic_dir``), so a crash never leaves a half-written artifact that looks complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator


def package_root() -> Path:
    return Path(__file__).resolve().parent


def cache_root() -> Path:
    """Tokenized data and the offline tiny model: ``$FTC_CACHE`` or ``~/.cache/ftc``."""
    return Path(os.environ.get("FTC_CACHE", Path.home() / ".cache" / "ftc")).expanduser()


def resolve_path(path: str) -> str:
    """``ftc:sample/train.jsonl`` -> the file shipped in the package; URIs stay; other paths become absolute."""
    if path.startswith("ftc:"):
        return str(package_root() / "assets" / path[len("ftc:"):])
    if "://" in path:
        return path
    try:
        return str(Path(path).expanduser().resolve())
    except (RuntimeError, OSError) as e:  # a symlink loop (RuntimeError on Python < 3.13, OSError after)
        from ftc.errors import DataError

        raise DataError(f"{path}: cannot be resolved ({e}); point to the file itself") from None


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields a temporary sibling of ``path`` to write (a file or a directory); renames it onto ``path`` when the
    block succeeds, removes it when it fails. An existing directory at ``path`` is replaced only after the new one
    is complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    _remove(tmp)
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    publish(tmp, path)


def publish(tmp: Path, path: Path) -> None:
    """Renames a completely written ``tmp`` onto ``path``; a directory replaces the old one only once complete."""
    if tmp.is_dir() and path.exists():
        old = path.with_name(f".{path.name}.old{os.getpid()}")
        _remove(old)
        os.replace(path, old)
        os.replace(tmp, path)
        _remove(old)
    else:
        os.replace(tmp, path)


@contextlib.contextmanager
def run_lock(run_dir: str | Path) -> Iterator[None]:
    """Holds ``run_dir/.lock`` for a run: a second ``ftc train`` into the same directory refuses instead of
    writing over the first one's plan, checkpoints and metrics. An exclusive ``flock``: the kernel releases it when
    the holder dies, so a crashed run never leaves a stale lock behind."""
    import fcntl
    import time

    from ftc.errors import UserError

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / ".lock"
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise UserError(f"ftc: {run_dir} is in use by a running ftc train ({holder}): wait for it to finish, "
                            "or give another output_dir") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()
            fcntl.flock(f, fcntl.LOCK_UN)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists() or p.is_symlink():
        p.unlink()
