"""Turn a row of any supported format into (prompt, completion) text.

Every format becomes prompt + completion so one tokenization path serves all of them and the loss mask is simply
"completion tokens" (``data.completion_only_loss``). Chat rows train on the last assistant turn; earlier turns are
context.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Callable, Optional

CSV_FIELD_LIMIT = 1 << 30  # the csv module's default (128 KiB) refuses a long document in one cell

# How a prompt becomes the text training put before a completion, which is also the text the tuned model must be
# asked with (``ftc generate``, the exported GGUF's template, ``ftc serve``):
#   alpaca: the instruction template (data.template) around the prompt; no system prompt
#   chat:   the tokenizer's chat template over the messages (a system message included), generation prompt added
#   raw:    the prompt as it is
PROMPT_STYLES = ("alpaca", "chat", "raw")
BY_ROW = "by_row"  # preference pairs: string prompts are alpaca, message lists chat (decided per file by the plan)


@dataclass(frozen=True)
class Format:
    """A data format, whole: the fields a row must have and may have, how a row is checked, the texts its trainer
    takes, what the plan counts and compares, and how the tuned model is prompted. ``FORMATS`` holds one per
    format; everything that depends on the format reads its entry (no comparisons on the format's name)."""

    required: tuple[str, ...]
    optional: tuple[str, ...]
    template_tokens: int
    """Tokens the template adds around an example (alpaca header ~25, chat role markers ~10; + EOS): the plan's
    token estimate when no tokenizer is readable."""
    prompt: str
    """Its prompt style (``PROMPT_STYLES``, or ``BY_ROW``)."""
    check: Callable[[dict[str, Any], dict[str, str]], dict[str, Any]]
    """(row, data.fields) -> the row's fields by the format's names; raises RowError or EmptyRow."""
    texts: Callable[[dict[str, Any], str, Optional[Any]], tuple[str, ...]]
    """(checked fields, data.template, tokenizer) -> the trainer's texts: (prompt, completion), or (prompt,
    chosen, rejected) for pairs; EOS is appended at tokenization."""
    plain: Callable[[dict[str, Any], str], tuple[str, str, int]]
    """(checked fields, data.template) -> (prompt, completion, extra tokens) without a tokenizer object: what the
    plan counts tokens on (chat: the contents, the role markers as ~5 extra tokens a message)."""
    chars: Callable[[dict[str, Any]], tuple[int, int]]
    """Checked fields -> (characters the loss counts, all characters): the plan's completion share."""
    pieces: Callable[[dict[str, Any]], list[str]]
    """Checked fields -> the texts that make the row the example it is, in a fixed order (near-duplicates,
    personal data and language are found on these)."""
    shape: str = "sequence"
    """What a trainer gets from a row: ``sequence`` (prompt + completion), ``pair`` (prompt + chosen + rejected)
    or ``labelled`` (prompt + completion + label)."""
    has_prompt: bool = True
    """Rows have a prompt apart from what is learnt (text: none, so completion-only loss means nothing)."""
    shows_examples: bool = False
    """Rows are a prompt and its answer, so training rows can be shown before a test prompt as examples (the
    prompted baseline, eval.baselines). Text has no prompt; labelled and paired answers are not all answers to
    copy."""
    compared_on: str = "every text field"
    """What near-duplicates are compared on, as the plan says it."""

    @property
    def paired(self) -> bool:
        return self.shape == "pair"

    @property
    def labelled(self) -> bool:
        return self.shape == "labelled"

    @property
    def prompt_apart(self) -> bool:
        """The trainer keeps the prompt apart and truncates it from its start (TRL's preference trainers)."""
        return self.shape != "sequence"


def few_shot_prompt(example: dict[str, Any], shots: list[dict[str, Any]], tokenizer: Any) -> str:
    """The test ``example``'s prompt with ``shots`` (training examples, as ``to_texts`` formats them) before it.
    Chat rows (with their ``messages``) become one conversation, as chat models are prompted with examples: the test
    row's system message, then each shot's user and assistant turns, then the test row's own turns, rendered with
    the chat template. Other prompts are the shots' prompt + completion, each closed by the tokenizer's EOS as
    training closes every completion (the base model learns where an answer ends), then the test prompt."""
    if "messages" in example:
        context = example["messages"][:-1]
        system = [m for m in context[:1] if m["role"] == "system"]
        turns = [m for shot in shots for m in shot["messages"] if m["role"] != "system"]
        return tokenizer.apply_chat_template(system + turns + context[len(system):], tokenize=False,
                                             add_generation_prompt=True)
    eos = tokenizer.decode([tokenizer.eos_token_id]) if tokenizer.eos_token_id is not None else "\n\n"
    return "".join(f"{shot['prompt']}{shot['completion']}{eos}" for shot in shots) + example["prompt"]


def row_prompt_style(values: dict[str, Any], fmt: str) -> str:
    """The prompt style a checked row (``check_row``) is trained with."""
    style = FORMATS[fmt].prompt
    if style == BY_ROW:
        return "chat" if isinstance(values.get("prompt"), list) else "alpaca"
    return style


def row_system_prompt(values: dict[str, Any]) -> Optional[str]:
    """The system message a checked chat-style row opens with, if any."""
    messages = values.get("messages") or values.get("prompt")
    if isinstance(messages, list) and messages and messages[0]["role"] == "system":
        return messages[0]["content"]
    return None


def inference_prompt(style: str, template: str, prompt: str, system: Optional[str] = None,
                     tokenizer: Optional[Any] = None, input_text: str = "") -> str:
    """The text a user's ``prompt`` (and ``system`` message; an alpaca row's ``input_text``) is put in for the tuned
    model: exactly what training put before each completion of that style (``to_texts``)."""
    if style == "chat":
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if system:
        raise RowError(f"a system prompt has no place in the {style} prompt format this run was trained with")
    if input_text and style != "alpaca":
        raise RowError(f"an input has no place in the {style} prompt format this run was trained with")
    return alpaca_prompt(prompt.strip(), input_text.strip(), template) if style == "alpaca" else prompt

ALPACA = {
    "alpaca": ("Below is an instruction that describes a task{with_input}. Write a response that appropriately "
               "completes the request.\n\n### Instruction:\n{instruction}\n\n{input_block}### Response:\n"),
    "plain": "{instruction}\n{input_block}",
}
ROLES = ("system", "user", "assistant")


def near_key(values: dict[str, Any]) -> int:
    """The key of an example from its checked fields (``check_row``) up to case and whitespace: equal keys are
    duplicates (``ftc.data.select`` groups them with the near-duplicates MinHash finds)."""
    return _digest(json.dumps(_fold(values), sort_keys=True, ensure_ascii=False))


def _fold(value: Any) -> Any:
    """Every string lower-cased, stripped, its whitespace runs one space: what makes two examples the same."""
    if isinstance(value, str):  # str.split's whitespace is re's \s (both Py_UNICODE_ISSPACE), without a regex
        return " ".join(value.lower().split())
    if isinstance(value, dict):
        return {k: _fold(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_fold(v) for v in value]
    return value


def _digest(text: str) -> int:
    # 64 bits: a chance collision needs ~4e9 rows (birthday bound); 8 bytes a row keep a file's keys small.
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class RowError(ValueError):
    """The row does not have the shape its format needs (reported with file:line by the caller)."""


class MissingField(RowError):
    """A required field's column is absent from the row (or null): the file may name it otherwise
    (``propose_fields``)."""


class EmptyRow(ValueError):
    """The row has the right shape but nothing to learn from (dropped and counted)."""


def _field(row: dict[str, Any], name: str, fields: dict[str, str], required: bool = True) -> Any:
    column = fields.get(name, name)
    if column not in row or row[column] is None:
        if required:
            raise MissingField(f"missing field '{column}'" + (f" (mapped from {name})" if column != name else ""))
        return None
    return row[column]


# Column names public datasets give a format's fields (Alpaca, Dolly, SQuAD-style QA, OpenAI fine-tuning files,
# TRL's conventional names), in the order they are tried; the field's own name comes first.
COLUMN_NAMES = {
    "instruction": ("question", "prompt", "query", "problem", "input_text", "task"),
    "input": ("context", "passage"),
    "output": ("answer", "response", "completion", "target", "solution", "output_text"),
    "prompt": ("question", "instruction", "query", "input_text"),
    "completion": ("answer", "response", "output", "target"),
    "messages": ("conversation", "conversations", "dialog", "dialogue", "chat"),
    "text": ("content", "document", "body"),
    "chosen": ("preferred", "accepted", "winner"),
    "rejected": ("dispreferred", "loser"),
    "label": ("is_good", "desirable", "thumbs_up"),
}


def propose_fields(fmt: str, fields: dict[str, str], columns: tuple[str, ...]) -> Optional[dict[str, str]]:
    """The ``data.*`` overrides that make rows with ``columns`` readable: another format when the columns are its own
    field names (``prompt, completion`` under format=alpaca), else the configured format with its fields mapped to
    the file's names (``COLUMN_NAMES``, matched up to case) when that covers every required field; empty when the
    columns already are the format's; None when nothing fits."""
    by_fold = {c.lower(): c for c in columns}

    def mapping(name: str, taken: set[str]) -> Optional[str]:
        given = fields.get(name)
        for candidate in ((given,) if given else ()) + (name,) + COLUMN_NAMES.get(name, ()):
            column = by_fold.get(candidate.lower())
            if column is not None and column not in taken:
                return column
        return None

    def fit(f: str, exact: bool) -> Optional[dict[str, str]]:
        spec, taken, found = FORMATS[f], set(), {}
        for name in spec.required + spec.optional:
            column = by_fold.get(name) if exact else mapping(name, taken)
            if column is None:
                if name in spec.required:
                    return None
                continue
            taken.add(column)
            found[name] = column
        return found

    if fmt in FORMATS and fit(fmt, exact=True) is not None:
        return {}  # the columns are the format's own: the rows lack values, not names
    others = [(len(found), other) for other in FORMATS if other != fmt
              for found in [fit(other, exact=True)] if found is not None]
    if others:  # another format's own names (prompt, completion): the file is in that format
        return {"data.format": max(others)[1]}  # the one that reads the most columns
    found = fit(fmt, exact=False) if fmt in FORMATS else None
    if found is not None:
        return {f"data.fields.{name}": column for name, column in found.items() if column != name}
    return None


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise RowError(f"field '{name}' must be a string, got {type(value).__name__}")
    return value


def alpaca_prompt(instruction: str, input_text: str, template: str) -> str:
    if template == "plain":
        return ALPACA["plain"].format(instruction=instruction, input_block=f"{input_text}\n" if input_text else "")
    return ALPACA["alpaca"].format(
        instruction=instruction,
        with_input=", paired with an input that provides further context" if input_text else "",
        input_block=f"### Input:\n{input_text}\n\n" if input_text else "",
    )


def check_row(row: dict[str, Any], fmt: str, fields: dict[str, str]) -> dict[str, Any]:
    """Validates a row's shape for its format without a tokenizer (``ftc plan`` runs it on every row) and returns
    its fields by the format's names. Raises RowError (malformed: reported with file:line) or EmptyRow (nothing to
    learn from: dropped and counted)."""
    if fmt not in FORMATS:
        raise RowError(f"unknown format '{fmt}'")
    return FORMATS[fmt].check(row, fields)


def to_texts(row: dict[str, Any], fmt: str, fields: dict[str, str], template: str,
             tokenizer: Optional[Any] = None) -> tuple[str, ...]:
    """A row's text as its trainer takes it: (prompt, chosen, rejected) for preference pairs, else (prompt,
    completion). ``ftc train`` tokenizes these; ``ftc plan`` counts their tokens."""
    spec = FORMATS[fmt]
    return spec.texts(spec.check(row, fields), template, tokenizer)


def completion_chars(values: dict[str, Any], fmt: str) -> tuple[int, int]:
    """(characters the loss counts, all characters) of a checked row, for the plan's estimate of the share of
    positions the output head must run on with completion-only loss."""
    return FORMATS[fmt].chars(values)


def plain_prompt_completion(values: dict[str, Any], fmt: str, template: str) -> tuple[str, str, int]:
    """(prompt, completion, extra tokens) of a checked row without a tokenizer object: what the plan counts tokens
    on. Chat rows are their contents; the template's role markers are the extra tokens (~5 per message)."""
    return FORMATS[fmt].plain(values, template)


def pieces(values: dict[str, Any], fmt: str) -> list[str]:
    """The texts of a checked row that make it the example it is, in a fixed order."""
    return FORMATS[fmt].pieces(values)


# --- the formats, one group of functions each ---------------------------------------------------------------------

def _strings(required: tuple[str, ...], optional: tuple[str, ...], **spec: Any) -> Format:
    """A format whose fields are strings, checked alike: every required one non-empty (a prompt may be empty)."""
    def check(row: dict[str, Any], fields: dict[str, str]) -> dict[str, Any]:
        values = {name: _text(_field(row, name, fields), name) for name in required}
        values.update({name: _text(_field(row, name, fields, required=False) or "", name) for name in optional})
        if any(not values[name].strip() for name in required if name != "prompt"):
            raise EmptyRow(f"empty {' or '.join(n for n in required if n != 'prompt')}")
        return values

    return Format(required=required, optional=optional, check=check, pieces=_string_pieces, **spec)


def _string_pieces(values: dict[str, Any]) -> list[str]:
    return [v for k, v in sorted(values.items()) if isinstance(v, str)]


def _alpaca_texts(v: dict[str, Any], template: str, tokenizer: Optional[Any] = None) -> tuple[str, str]:
    return alpaca_prompt(v["instruction"].strip(), v["input"].strip(), template), v["output"].strip()


def _alpaca_chars(v: dict[str, Any]) -> tuple[int, int]:
    completion = len(v["output"])
    return completion, completion + len(v["instruction"]) + len(v["input"]) + 100  # ~the header


def _check_kto(row: dict[str, Any], fields: dict[str, str]) -> dict[str, Any]:
    label = _field(row, "label", fields)
    if not isinstance(label, bool):
        raise RowError(f"field '{fields.get('label', 'label')}' must be true or false, got {label!r}")
    prompt = _text(_field(row, "prompt", fields), "prompt")
    completion = _text(_field(row, "completion", fields), "completion")
    if not completion.strip():
        raise EmptyRow("empty completion")
    return {"prompt": prompt, "completion": completion, "label": label}


def _kto_texts(v: dict[str, Any], template: str, tokenizer: Optional[Any] = None) -> tuple[str, str]:
    return alpaca_prompt(v["prompt"].strip(), "", template), v["completion"].strip()  # as preference pairs' are


def _chat_texts(v: dict[str, Any], template: str, tokenizer: Optional[Any] = None) -> tuple[str, str]:
    return _chat(v["messages"], tokenizer)


def _chat_plain(v: dict[str, Any], template: str) -> tuple[str, str, int]:
    messages = v["messages"]
    last = _last_assistant(messages)
    return "\n".join(m["content"] for m in messages[:last]), messages[last]["content"], 5 * (last + 1)


def _chat_chars(v: dict[str, Any]) -> tuple[int, int]:
    messages = v["messages"]
    last = _last_assistant(messages)
    return len(messages[last]["content"]), sum(len(m["content"]) + 10 for m in messages[: last + 1])


def _preference(row: dict[str, Any], fields: dict[str, str]) -> dict[str, Any]:
    chosen, rejected = _field(row, "chosen", fields), _field(row, "rejected", fields)
    if isinstance(chosen, list) or isinstance(rejected, list):
        chosen, rejected = _chat_messages(chosen), _chat_messages(rejected)
        if chosen[:-1] != rejected[:-1]:
            raise RowError("chosen and rejected must share every message but the last (the prompt turns)")
        if chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
            raise RowError("chosen and rejected must each end with an assistant message")
        if chosen[-1]["content"].strip() == rejected[-1]["content"].strip():
            raise EmptyRow("chosen equals rejected")
        return {"prompt": chosen[:-1], "chosen": chosen, "rejected": rejected}
    prompt = _text(_field(row, "prompt", fields), "prompt")
    chosen, rejected = _text(chosen, "chosen"), _text(rejected, "rejected")
    if not chosen.strip() or not rejected.strip():
        raise EmptyRow("empty chosen or rejected")
    if chosen.strip() == rejected.strip():
        raise EmptyRow("chosen equals rejected")
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def _preference_texts(v: dict[str, Any], template: str, tokenizer: Optional[Any] = None) -> tuple[str, str, str]:
    """The prompt formatted as for SFT (alpaca template or the chat template)."""
    if isinstance(v["chosen"], list):
        prompt, chosen = _chat(v["chosen"], tokenizer)
        _, rejected = _chat(v["rejected"], tokenizer)
        return prompt, chosen, rejected
    return alpaca_prompt(v["prompt"].strip(), "", template), v["chosen"].strip(), v["rejected"].strip()


def _preference_plain(v: dict[str, Any], template: str) -> tuple[str, str, int]:
    """One sequence of the pair (the chosen one)."""
    p = v["prompt"]
    if isinstance(p, list):
        return "\n".join(m["content"] for m in p), _completion_text(v["chosen"]), 5 * (len(p) + 1)
    return alpaca_prompt(p.strip(), "", template), v["chosen"].strip(), 0


def _preference_chars(v: dict[str, Any]) -> tuple[int, int]:
    c, p = _completion_text(v["chosen"]), v["prompt"]
    prompt = len(p) + 100 if isinstance(p, str) else sum(len(m["content"]) + 10 for m in p)
    return len(c), len(c) + prompt


def _preference_pieces(v: dict[str, Any]) -> list[str]:
    out = [m["content"] for m in v["prompt"]] if isinstance(v["prompt"], list) else [v["prompt"]]
    return out + [_completion_text(v[side]) for side in ("chosen", "rejected")]


def _completion_text(value: Any) -> str:
    return value[-1]["content"] if isinstance(value, list) else value


def _chat_messages(messages: Any) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise RowError("'messages' must be a non-empty list of {role, content}")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            got = m.get("role") if isinstance(m, dict) else type(m).__name__
            raise RowError(f"messages[{i}] must be {{role: system|user|assistant, content: string}}, got role "
                           f"{got!r}")
    last = _last_assistant(messages)
    if last is None:
        raise RowError("no assistant message to learn from")
    if not messages[last]["content"].strip():
        raise EmptyRow("empty assistant message")
    return messages


def _last_assistant(messages: list[dict[str, str]]) -> Optional[int]:
    return max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)


def _chat(messages: list[dict[str, str]], tokenizer: Any) -> tuple[str, str]:
    last = _last_assistant(messages)
    context, full = messages[:last], messages[: last + 1]
    prompt = tokenizer.apply_chat_template(context, tokenize=False, add_generation_prompt=True)
    whole = tokenizer.apply_chat_template(full, tokenize=False)
    if not whole.startswith(prompt):
        # Templates that rewrite earlier turns (e.g. strip reasoning): fall back to the bare assistant text.
        return prompt, messages[last]["content"]
    return prompt, whole[len(prompt):]


# The one table of data formats: rules check field mappings against it, the compiler sizes examples with it, the
# loader validates rows with it, the selection compares their pieces, and training, the plan, evaluation,
# generation, export and serving format prompts by it.
FORMATS = {
    "alpaca": _strings(
        ("instruction", "output"), ("input",), template_tokens=26, prompt="alpaca", texts=_alpaca_texts,
        plain=lambda v, template: (*_alpaca_texts(v, template), 0), chars=_alpaca_chars, shows_examples=True,
        compared_on="instruction, input and output"),
    "chat": Format(
        required=("messages",), optional=(), template_tokens=12, prompt="chat",
        check=lambda row, fields: {"messages": _chat_messages(_field(row, "messages", fields))},
        texts=_chat_texts, plain=_chat_plain, chars=_chat_chars,
        pieces=lambda v: [m["content"] for m in v["messages"]], shows_examples=True, compared_on="message contents"),
    "prompt_completion": _strings(
        ("prompt", "completion"), (), template_tokens=1, prompt="raw",
        texts=lambda v, template, tokenizer=None: (v["prompt"], v["completion"]),
        plain=lambda v, template: (v["prompt"], v["completion"], 0),
        chars=lambda v: (len(v["completion"]), len(v["completion"]) + len(v["prompt"])), shows_examples=True),
    "text": _strings(
        ("text",), (), template_tokens=1, prompt="raw", texts=lambda v, template, tokenizer=None: ("", v["text"]),
        plain=lambda v, template: ("", v["text"], 0), chars=lambda v: (1, 1), has_prompt=False),  # all tokens count
    # Pairs: {prompt, chosen, rejected} strings, or chosen/rejected message lists sharing the prompt turns.
    "preference": Format(
        required=("chosen", "rejected"), optional=("prompt",), template_tokens=26, prompt=BY_ROW,
        check=_preference, texts=_preference_texts, plain=_preference_plain, chars=_preference_chars,
        pieces=_preference_pieces, shape="pair", compared_on="prompt, chosen and rejected"),
    # Unpaired, labelled answers (KTO): {prompt, completion, label: true|false}; the prompt formatted as alpaca's.
    "kto": Format(
        required=("prompt", "completion", "label"), optional=(), template_tokens=26, prompt="alpaca",
        check=_check_kto, texts=_kto_texts, plain=lambda v, template: (*_kto_texts(v, template), 0),
        chars=lambda v: (len(v["completion"]), len(v["completion"]) + len(v["prompt"]) + 100),
        pieces=_string_pieces, shape="labelled"),
}
