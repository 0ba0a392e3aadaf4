"""Credentials never enter a plan, a config file, a log or the console.

``find`` names the secrets inside a value (credentials in a URI's userinfo or query string, and the key shapes of
the clouds and hubs a fine-tuning run touches); ``mask`` replaces them. The compiler refuses a config that holds
one (rules.secrets: credentials come from the environment or a credentials file), and every printed or written
plan, problem and config passes through ``mask`` as well, so a refused value is never echoed back.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
from typing import Any, Iterator

MASK = "***"

# A URI scheme, starting where a word starts and at most 32 characters long: unbounded, ``[a-z][a-z0-9+.-]*`` is
# tried from every position of a long run of letters (quadratic: 4 s on a 20 kB row).
_SCHEME = r"(?<![a-z0-9+.-])[a-z][a-z0-9+.-]{0,31}"
# (what it is, pattern, the group that is secret, a string every match holds: a text without it is not scanned, as
# most are not). Patterns name the secret part only: the rest of a URI stays
# readable (``s3://***@bucket/runs``). No bare-hex pattern: a 40-hex value is as often a commit (model.revision).
PATTERNS: tuple[tuple[str, re.Pattern[str], int, str], ...] = (
    # A URI's userinfo, whole: a user alone is often a token (https://TOKEN@host), a password may hold a '/'.
    # (A colon may come escaped, as Hydra quotes overrides: ``https\://user\:pw@host``.)
    ("credentials in a URI (its userinfo)",
     re.compile(_SCHEME + r"\\?://([^/@\s:\\]+\\?:[^@\s]*?)@", re.I), 1, "://"),
    ("a token as a URI's user", re.compile(_SCHEME + r"\\?://([^/@\s:\\]{8,})@", re.I), 1, "://"),
    # The same userinfo quoted without its scheme, as libraries echo a URI's "bucket" in their errors.
    ("credentials before a host name", re.compile(r"(?:^|(?<=[\s\"'(]))([^\s/@:\"']+:[^\s/@\"']+)@"), 1, "@"),
    ("a credential in a URI's query string",
     re.compile(r"[?&](?:access_token|token|api_key|apikey|key|sig|signature|x-amz-signature|x-amz-credential|"
                r"x-amz-security-token|x-goog-signature|x-goog-credential|password|secret|authorization|auth)="
                r"([^&#\s)\"']+)", re.I),
     1, "="),
    ("a bearer token", re.compile(r"\bBearer(?:\s+|%20|\+)([A-Za-z0-9._~+/=-]{8,})", re.I), 1, ""),
    ("an AWS access key id", re.compile(r"\b((?:AKIA|ASIA)[0-9A-Z]{16})\b"), 1, ""),
    ("a Hugging Face token", re.compile(r"\b(hf_[A-Za-z0-9]{30,})\b"), 1, "hf_"),
    ("a GitHub token", re.compile(r"\b(gh[pousr]_[A-Za-z0-9]{30,})\b"), 1, "_"),
    ("a Google API key", re.compile(r"\b(AIza[0-9A-Za-z_-]{35})\b"), 1, "AIza"),
    ("an API key (sk-...)", re.compile(r"\b(sk-[A-Za-z0-9_-]{20,})\b"), 1, "sk-"),
)
SECRET_KEY = re.compile(r"^(?!.*per_token$).*(?:^|[_-])(?:token|secret|password|passwd|api[_-]?key|access[_-]?key|"
                        r"credentials?)$", re.I)
"""Names of fields whose values are secrets whatever they look like (hub_token, aws_secret_access_key, api_key),
and not the names that merely mention tokens (max_new_tokens, tokens_per_example)."""


ENV_NAME = re.compile(r"(?:token|secret|password|passwd|api[_-]?key|access[_-]?key|credentials?|auth)$", re.I)
"""Environment variables whose values are secrets by their name (HF_TOKEN, WANDB_API_KEY, AWS_SECRET_ACCESS_KEY):
their values are masked wherever they appear, put into a config with ``${oc.env:...}`` or echoed by a library."""


def environment_values() -> list[str]:
    """The values of the secret-named environment variables (8 characters or more: shorter ones would mask
    ordinary words), longest first."""
    return sorted({v for k, v in os.environ.items() if ENV_NAME.search(k) and len(v) >= 8}, key=len, reverse=True)


def find(text: str) -> list[str]:
    """What kinds of secret ``text`` holds (empty when none)."""
    found = [what for what, pattern, _, needs in PATTERNS if needs in text and pattern.search(text)]
    if any(v in text for v in environment_values()):
        found.append("the value of a secret environment variable")
    return found


def mask(text: str) -> str:
    """``text`` with every secret replaced by ``***``."""
    for value in environment_values():
        text = text.replace(value, MASK)
    for _, pattern, group, needs in PATTERNS:
        if needs not in text:
            continue
        text = pattern.sub(lambda m, g=group: m.group(0).replace(m.group(g), MASK), text)
    return text


class MaskedStream(io.TextIOBase):
    """A console stream (stdout, stderr) that masks every write: ftc's own lines, a library's, and Hydra's
    ``Error executing job with overrides: [...]``, which echoes the command line."""

    def __init__(self, stream: Any):
        self.stream = stream

    def write(self, text: str) -> int:
        self.stream.write(mask(text))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def fileno(self) -> int:
        return self.stream.fileno()

    def isatty(self) -> bool:
        return self.stream.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self.stream.encoding


@contextlib.contextmanager
def masked_console() -> Iterator[None]:
    """stdout and stderr masked for the duration (``ftc`` runs every command inside it)."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = MaskedStream(sys.stdout), MaskedStream(sys.stderr)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


class MaskedRecords(logging.Filter):
    """A logging filter that masks each record's message (train.log and the console handlers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        masked = mask(text)
        if masked != text:
            record.msg, record.args = masked, ()
        return True


def mask_all(obj: Any, by_key: bool = True) -> Any:
    """Every string in a nested structure masked; with ``by_key``, the values of secret-named keys replaced whole
    (a config; a Plan's keys are ftc's own, so it masks strings only and still loads back)."""
    if isinstance(obj, dict):
        return {k: (MASK if by_key and SECRET_KEY.search(str(k)) and v not in (None, "") else mask_all(v, by_key))
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(mask_all(v, by_key) for v in obj)
    if isinstance(obj, str):
        return mask(obj)
    return obj
