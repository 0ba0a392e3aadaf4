"""Verifiable rewards for GRPO, declared in config (``objective.rewards``): built-in kinds and user functions.

Each reward is a function ``(completions: list[str], answer: list[str], **kwargs) -> list[float]``, the signature
TRL's GRPOTrainer calls reward functions with (dataset columns arrive as keyword arguments: ``answer`` is the
reference completion of the row). Pure Python: the plan checks every declared reward (``check``) and ``ftc eval``
scores base and tuned with the same functions.

Built-in kinds:
- ``exact_match``: 1 when the completion equals the answer (case and whitespace folded), else 0;
- ``regex``: 1 when ``pattern`` matches the completion (``re.fullmatch`` on the stripped text), else 0: a format
  check;
- ``json``: 1 when the completion parses as a JSON object holding every key of ``keys``, else 0;
- ``length``: ``-(overshoot / max_chars)`` for completions longer than ``max_chars`` characters, else 0;
- ``python``: ``function: "package.module:name"``, any function of the signature above.
Each has a ``weight`` (default 1); TRL sums the weighted rewards.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
from dataclasses import dataclass
from typing import Any, Callable


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


def _text(completion: Any) -> str:
    """A completion as text (conversational completions are a list of messages)."""
    if isinstance(completion, list):
        return " ".join(str(m.get("content", "")) for m in completion if isinstance(m, dict))
    return str(completion)


def exact_match(completions: list[Any], answer: list[str], **_: Any) -> list[float]:
    return [float(_norm(_text(c)) == _norm(a)) for c, a in zip(completions, answer)]


def _regex(pattern: str) -> Callable[..., list[float]]:
    compiled = re.compile(pattern)

    def regex(completions: list[Any], **_: Any) -> list[float]:
        return [float(compiled.fullmatch(_text(c).strip()) is not None) for c in completions]

    return regex


def _json(keys: list[str]) -> Callable[..., list[float]]:
    def json_object(completions: list[Any], **_: Any) -> list[float]:
        scores = []
        for c in completions:
            try:
                value = json.loads(_text(c))
            except ValueError:
                scores.append(0.0)
                continue
            scores.append(float(isinstance(value, dict) and all(k in value for k in keys)))
        return scores

    return json_object


def _length(max_chars: int) -> Callable[..., list[float]]:
    def length(completions: list[Any], **_: Any) -> list[float]:
        return [-max(0, len(_text(c)) - max_chars) / max_chars for c in completions]

    return length


def load_function(path: str) -> Callable[..., Any]:
    """``package.module:name`` imported (user code runs: the user named it)."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def _check_regex(spec: dict[str, Any]) -> str:
    try:
        re.compile(str(spec.get("pattern", "")))
    except re.error as e:
        return f"pattern does not compile: {e}"
    return "" if spec.get("pattern") else "needs a pattern"


def _check_python(spec: dict[str, Any]) -> str:
    path = str(spec.get("function", ""))
    if ":" not in path:
        return f"function '{path}' must be 'package.module:name'"
    try:
        fn = load_function(path)
    except Exception as e:  # noqa: BLE001 - any import problem is the user's to see, with its type
        return f"function '{path}' cannot be imported ({type(e).__name__}: {e})"
    if not callable(fn):
        return f"'{path}' is not a function"
    params = inspect.signature(fn).parameters
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if "completions" not in params or not takes_kwargs:
        return f"'{path}' must take (completions, **kwargs), as TRL calls reward functions"
    return ""


@dataclass(frozen=True)
class Reward:
    """A kind of declared reward: what is wrong with a spec of it ("" when it can run), and its function."""

    check: Callable[[dict[str, Any]], str]
    build: Callable[[dict[str, Any]], Callable[..., list[float]]]
    name: Callable[[dict[str, Any]], str] = lambda spec: spec["kind"]
    """Its name in TRL's logs when the spec gives none."""


REWARDS = {
    "exact_match": Reward(lambda spec: "", lambda spec: exact_match),
    "regex": Reward(_check_regex, lambda spec: _regex(str(spec["pattern"]))),
    "json": Reward(lambda spec: "" if isinstance(spec.get("keys", []), (list, tuple)) else "keys must be a list",
                   lambda spec: _json(list(spec.get("keys", [])))),
    "length": Reward(lambda spec: "" if isinstance(spec.get("max_chars"), int) and spec["max_chars"] > 0
                     else "needs max_chars > 0", lambda spec: _length(int(spec["max_chars"]))),
    "python": Reward(_check_python, lambda spec: load_function(str(spec["function"])),
                     lambda spec: str(spec["function"]).rpartition(":")[2]),
}
KINDS = tuple(REWARDS)


def check(spec: dict[str, Any]) -> str:
    """What is wrong with one declared reward, or "" when it can run."""
    kind = spec.get("kind")
    if kind not in REWARDS:
        return f"unknown kind '{kind}' (one of {', '.join(KINDS)})"
    try:
        float(spec.get("weight", 1.0))
    except (TypeError, ValueError):
        return f"weight {spec.get('weight')!r} is not a number"
    return REWARDS[kind].check(spec)


def build(spec: dict[str, Any]) -> Callable[..., list[float]]:
    """The reward function a checked spec declares, named for TRL's logs (``rewards/<name>``)."""
    reward = REWARDS[spec["kind"]]
    fn = reward.build(spec)
    name = spec.get("name") or reward.name(spec)
    try:
        fn.__name__ = name
    except (AttributeError, TypeError):
        pass
    return fn


def weights(specs: list[dict[str, Any]]) -> list[float]:
    return [float(s.get("weight", 1.0)) for s in specs]


def total(specs: list[dict[str, Any]], completions: list[str], answers: list[str]) -> list[float]:
    """Weighted sum of every declared reward per completion (what GRPO maximises)."""
    sums = [0.0] * len(completions)
    for spec in specs:
        w = float(spec.get("weight", 1.0))
        for i, r in enumerate(build(spec)(completions, answer=answers)):
            sums[i] += w * (r if r is not None else 0.0)
    return sums
