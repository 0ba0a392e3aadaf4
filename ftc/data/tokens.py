"""Tokens of an example as training builds them, with one home for the rules ``ftc plan`` and ``ftc train`` share:
BOS where the tokenizer uses one, EOS after every completion, and truncation to ``max_length`` (the prompt's end kept
for preference and labelled rows, at most ``max_prompt_length``).

``ftc train`` tokenizes with the transformers tokenizer; ``ftc plan`` with ``FileTokenizer``, the same
``tokenizer.json`` read by the ``tokenizers`` library (no torch), and chat templates rendered as transformers renders
them. So the plan counts the tokens of every selected example exactly, before any weight is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional


def render_chat(template: str, messages: list[dict], add_generation_prompt: bool, **special: Any) -> str:
    """Renders a chat template as transformers does (sandboxed Jinja, trim_blocks, lstrip_blocks, its helpers)."""
    from datetime import datetime

    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise ValueError(message)

    def tojson(x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None,
               sort_keys: bool = False) -> str:
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                            **special)


class FileTokenizer:
    """A model directory's tokenizer through the ``tokenizers`` library: the subset of a transformers tokenizer the
    data pipeline calls (``__call__``, ``bos_token_id``, ``eos_token_id``, ``apply_chat_template``)."""

    def __init__(self, model_dir: str | Path) -> None:
        from tokenizers import Tokenizer

        d = Path(model_dir)
        self._tok = Tokenizer.from_file(str(d / "tokenizer.json"))
        config = json.loads((d / "tokenizer_config.json").read_text()) \
            if (d / "tokenizer_config.json").is_file() else {}
        self.special = {k: _token_text(config.get(k)) for k in ("bos_token", "eos_token", "unk_token", "pad_token")
                        if _token_text(config.get(k))}
        self.bos_token_id = self._id(self.special.get("bos_token"))
        self.eos_token_id = self._id(self.special.get("eos_token"))
        template = config.get("chat_template")
        if (d / "chat_template.jinja").is_file():
            template = (d / "chat_template.jinja").read_text()
        self.chat_template: Optional[str] = template if isinstance(template, str) else None

    def _id(self, token: Optional[str]) -> Optional[int]:
        return self._tok.token_to_id(token) if token else None

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": self._tok.encode(text, add_special_tokens=add_special_tokens).ids}

    def apply_chat_template(self, messages: list[dict], tokenize: bool = False,
                            add_generation_prompt: bool = False) -> str:
        if self.chat_template is None:
            raise ValueError("the tokenizer has no chat template")
        return render_chat(self.chat_template, messages, add_generation_prompt, **self.special)


def _token_text(value: Any) -> Optional[str]:
    if isinstance(value, dict):  # {"content": "<s>", ...}, as older tokenizer_config.json files write it
        value = value.get("content")
    return value if isinstance(value, str) else None


def adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer itself starts sequences with BOS (Llama, Mistral, Gemma: yes; Qwen, GPT-2: no)."""
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("a", add_special_tokens=True)["input_ids"][:1] == [bos]


def tokenize_example(tokenizer: Any, prompt: str, completion: str, bos: Optional[bool] = None
                     ) -> tuple[list[int], list[int]]:
    """prompt ids (+BOS when the tokenizer uses one) and completion ids + EOS, so the tuned model learns to stop.
    ``bos``: ``adds_bos(tokenizer)``, when the caller knows it already."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else []
    if (adds_bos(tokenizer) if bos is None else bos) and (not prompt_ids or prompt_ids[0] != tokenizer.bos_token_id):
        prompt_ids = [tokenizer.bos_token_id] + prompt_ids
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    if not completion_ids or completion_ids[-1] != tokenizer.eos_token_id:
        completion_ids = completion_ids + [tokenizer.eos_token_id]
    return prompt_ids, completion_ids


def cut_sequence(prompt: int, completion: int, max_length: int) -> tuple[int, bool, bool]:
    """An SFT example of ``prompt`` + ``completion`` tokens within max_length: (tokens kept, truncated, dropped:
    no completion token left to learn from)."""
    total = prompt + completion
    if total <= max_length:
        return total, False, False
    return max_length, True, prompt >= max_length


def cut_prompted(prompt: int, answers: tuple[int, ...], max_length: int, max_prompt_length: int
                 ) -> tuple[int, tuple[int, ...], bool]:
    """A preference pair or labelled answer: the prompt's end, at most max_prompt_length, then each answer within
    the room left of max_length: (prompt tokens kept, answer tokens kept, truncated)."""
    cut = False
    if prompt > max_prompt_length:
        prompt, cut = max_prompt_length, True
    room = max_length - prompt
    if any(a > room for a in answers):
        answers, cut = tuple(min(a, room) for a in answers), True
    return prompt, answers, cut


def split_tokens(lengths: list[tuple[int, ...]], fmt: str, max_length: int, max_prompt_length: int
                 ) -> tuple[int, int, int]:
    """(examples kept, tokens, examples truncated) of a split from its examples' untruncated token lengths
    ((prompt, completion), or (prompt, chosen, rejected) for preference pairs): what the run's data report counts.
    A preference pair counts its prompt twice (chosen and rejected each run through the model after it)."""
    kept = tokens = truncated = 0
    for example in lengths:
        if fmt == "preference":
            p, (c, r), cut = cut_prompted(example[0], example[1:], max_length, max_prompt_length)
            kept, tokens, truncated = kept + 1, tokens + 2 * p + c + r, truncated + cut
        elif fmt == "kto":
            p, (c,), cut = cut_prompted(example[0], example[1:], max_length, max_prompt_length)
            kept, tokens, truncated = kept + 1, tokens + p + c, truncated + cut
        else:
            n, cut, dropped = cut_sequence(example[0], example[1], max_length)
            truncated += cut
            if not dropped:
                kept, tokens = kept + 1, tokens + n
    return kept, tokens, truncated
