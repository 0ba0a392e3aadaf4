"""Turn a row of any supported format into (prompt, completion) text.

Every format becomes prompt + completion so one tokenization path serves all of them and the loss mask is simply
"completion tokens" (``data.completion_only_loss``). Chat rows train on the last assistant turn; earlier turns are
context.
"""

from __future__ import annotations

from typing import Any, Optional

ALPACA = {
    "alpaca": ("Below is an instruction that describes a task{with_input}. Write a response that appropriately "
               "completes the request.\n\n### Instruction:\n{instruction}\n\n{input_block}### Response:\n"),
    "plain": "{instruction}\n{input_block}",
}
ROLES = ("system", "user", "assistant")


class RowError(ValueError):
    """The row does not have the shape its format needs (reported with file:line by the caller)."""


class EmptyRow(ValueError):
    """The row has the right shape but nothing to learn from (dropped and counted)."""


def _field(row: dict[str, Any], name: str, fields: dict[str, str], required: bool = True) -> Any:
    column = fields.get(name, name)
    if column not in row or row[column] is None:
        if required:
            raise RowError(f"missing field '{column}'" + (f" (mapped from {name})" if column != name else ""))
        return None
    return row[column]


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


def to_prompt_completion(row: dict[str, Any], fmt: str, fields: dict[str, str], template: str,
                         tokenizer: Optional[Any] = None) -> tuple[str, str]:
    """Returns (prompt, completion) without EOS; the tokenizer step appends EOS."""
    if fmt == "alpaca":
        instruction = _text(_field(row, "instruction", fields), "instruction")
        input_text = _text(_field(row, "input", fields, required=False) or "", "input")
        output = _text(_field(row, "output", fields), "output")
        if not output.strip() or not instruction.strip():
            raise EmptyRow("empty instruction or output")
        return alpaca_prompt(instruction.strip(), input_text.strip(), template), output.strip()
    if fmt == "prompt_completion":
        prompt = _text(_field(row, "prompt", fields), "prompt")
        completion = _text(_field(row, "completion", fields), "completion")
        if not completion.strip():
            raise EmptyRow("empty completion")
        return prompt, completion
    if fmt == "text":
        text = _text(_field(row, "text", fields), "text")
        if not text.strip():
            raise EmptyRow("empty text")
        return "", text
    if fmt == "chat":
        return _chat(_field(row, "messages", fields), tokenizer)
    raise RowError(f"unknown format '{fmt}'")


def _chat(messages: Any, tokenizer: Any) -> tuple[str, str]:
    if not isinstance(messages, list) or not messages:
        raise RowError("'messages' must be a non-empty list of {role, content}")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise RowError(f"messages[{i}] must be {{role: system|user|assistant, content: string}}")
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if last is None:
        raise RowError("no assistant message to learn from")
    if not messages[last]["content"].strip():
        raise EmptyRow("empty assistant message")
    context, full = messages[:last], messages[: last + 1]
    prompt = tokenizer.apply_chat_template(context, tokenize=False, add_generation_prompt=True)
    whole = tokenizer.apply_chat_template(full, tokenize=False)
    if not whole.startswith(prompt):
        # Templates that rewrite earlier turns (e.g. strip reasoning): fall back to the bare assistant text.
        return prompt, messages[last]["content"]
    return prompt, whole[len(prompt):]
