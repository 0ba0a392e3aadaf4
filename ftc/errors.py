"""The one family of errors ftc raises on purpose. Only the CLI turns them into a message and an exit code.

    FtcError             exit 1   something went wrong that is not a bug (e.g. training diverged)
    ├── UserError        exit 2   a mistake the user can fix: config, data, run dir; printed without a traceback
    │   └── DataError    exit 2   a bad input file or row; the message names file:line
    ├── TrainingDiverged exit 1   loss became NaN/inf; the run stopped cleanly at that step
    ├── RunFailed        exit 1   a library failed during the run, or its results are not finite: the message says
    │                             what, the likely cause and fix, and where the full log is; the run is not complete
    └── RunStopped       exit 143 (SIGTERM) / 130 (SIGINT): stopped on a signal after saving a checkpoint; the same
                                  command resumes

Anything else that escapes is a bug and keeps its traceback. ``exit_on_error`` is used by the entry points only:
the CLI, and the search sweeper that Hydra runs outside the CLI's reach.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Iterator


class FtcError(Exception):
    """Base of ftc's own errors; ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class UserError(FtcError):
    """A mistake the user can fix: printed as one message, no traceback, exit code 2."""

    exit_code = 2


class DataError(UserError):
    """A bad input file or row; the message names the file and line."""


class TrainingDiverged(FtcError):
    """Loss became NaN/inf: the run stops cleanly at that step."""


class RunStopped(FtcError):
    """Stopped on SIGTERM (preemption) or SIGINT after saving a checkpoint: resumable, not complete."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class RunFailed(FtcError):
    """The run did not complete (a library raised, or its results are not finite); the traceback, when there is
    one, is in the run's train.log, not on the console."""


@contextlib.contextmanager
def exit_on_error() -> Iterator[None]:
    """The one place an ftc error becomes an exit: its message on stderr, no traceback, its exit code."""
    try:
        yield
    except FtcError as e:
        print(str(e) if str(e).startswith("ftc:") else f"ftc: {e}", file=sys.stderr)
        raise SystemExit(e.exit_code) from None
    except KeyboardInterrupt:
        print("ftc: interrupted (re-run the same command with the same output_dir to resume)", file=sys.stderr)
        raise SystemExit(130) from None
