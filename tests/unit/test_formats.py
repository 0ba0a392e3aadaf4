"""Column names a file gives its fields: ``formats.propose_fields`` proposes the overrides that read them."""

from __future__ import annotations

import pytest

from ftc.data.formats import FORMATS, MissingField, check_row, propose_fields
from ftc.data.load import RowProblems

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("fmt,columns,proposed", [
    ("alpaca", ("question", "answer"), {"data.fields.instruction": "question", "data.fields.output": "answer"}),
    ("alpaca", ("Question", "Answer", "context"),
     {"data.fields.instruction": "Question", "data.fields.output": "Answer", "data.fields.input": "context"}),
    ("prompt_completion", ("question", "answer"),
     {"data.fields.prompt": "question", "data.fields.completion": "answer"}),
    # Another format's own names: the file is in that format (the one that reads the most columns).
    ("alpaca", ("prompt", "completion"), {"data.format": "prompt_completion"}),
    ("alpaca", ("prompt", "completion", "label"), {"data.format": "kto"}),
    ("alpaca", ("prompt", "chosen", "rejected"), {"data.format": "preference"}),
    ("alpaca", ("messages",), {"data.format": "chat"}),
    ("chat", ("conversations",), {"data.fields.messages": "conversations"}),
    ("alpaca", ("instruction", "output"), {}),  # the format's own names: nothing to map
    ("alpaca", ("foo", "bar"), None),
])
def test_a_proposal_reads_the_columns(fmt, columns, proposed):
    assert propose_fields(fmt, {}, columns) == proposed


def test_a_wrong_mapping_is_replaced():
    assert propose_fields("alpaca", {"instruction": "q"}, ("question", "answer")) == {
        "data.fields.instruction": "question", "data.fields.output": "answer"}


def test_one_line_replaces_the_rows_a_mapping_reads():
    p = RowProblems("d.csv", "alpaca", {})
    for line in range(2, 302):
        p.add(line, MissingField("missing field 'instruction'"), {"question": "q", "answer": "a"})
    p.add(302, "invalid JSON")
    lines = p.lines()
    assert p.mapping() == {"data.fields.instruction": "question", "data.fields.output": "answer"}
    assert lines == ["d.csv: 300 rows have no instruction/output columns (format=alpaca); their columns: question, "
                     "answer; data.fields.instruction=question data.fields.output=answer reads them",
                     "d.csv:302: invalid JSON"]


def test_no_mapping_when_the_rows_need_different_ones():
    p = RowProblems("d.jsonl", "alpaca", {})
    p.add(6, MissingField("missing field 'output'"), {"instruction": "a", "answer": "b"})
    p.add(11, MissingField("missing field 'instruction'"), {"question": "q"})
    assert p.mapping() is None
    assert p.lines() == ["d.jsonl:6: missing field 'output'", "d.jsonl:11: missing field 'instruction'"]


CHATML = ("{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>{% endfor %}"
          "{% if add_generation_prompt %}<|assistant|>{% endif %}")


class _Tokenizer:
    """What few_shot_prompt calls: a chat template (rendered as transformers renders one) and EOS."""
    eos_token_id = 7

    def decode(self, ids):
        return "</s>" if ids == [7] else "?"

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
        from ftc.data.tokens import render_chat

        return render_chat(CHATML, messages, add_generation_prompt)


def _chat(system, user, answer):
    return {"messages": [{"role": "system", "content": system}, {"role": "user", "content": user},
                         {"role": "assistant", "content": answer}]}


def test_a_prompted_chat_example_is_one_conversation_with_the_shots_as_earlier_turns():
    from ftc.data.formats import few_shot_prompt

    test = _chat("Triage.", "My card was charged twice", "category: billing")
    shots = [_chat("Other system text", "App crashes", "category: technical"),
             _chat("Triage.", "Where is my parcel", "category: shipping")]
    assert few_shot_prompt(test, shots, _Tokenizer()) == (
        "<|system|>Triage.<|end|>"  # the test row's system message once; the shots' own are left out
        "<|user|>App crashes<|end|><|assistant|>category: technical<|end|>"
        "<|user|>Where is my parcel<|end|><|assistant|>category: shipping<|end|>"
        "<|user|>My card was charged twice<|end|><|assistant|>")  # its answer is not shown
    assert few_shot_prompt(test, [], _Tokenizer()) == \
        "<|system|>Triage.<|end|><|user|>My card was charged twice<|end|><|assistant|>"


def test_a_prompted_text_example_closes_each_shot_with_eos_as_training_does():
    from ftc.data.formats import few_shot_prompt

    shots = [{"prompt": "Q: 1+1\nA: ", "completion": "2"}, {"prompt": "Q: 2+2\nA: ", "completion": "4"}]
    assert few_shot_prompt({"prompt": "Q: 3+3\nA: ", "completion": "6"}, shots, _Tokenizer()) == \
        "Q: 1+1\nA: 2</s>Q: 2+2\nA: 4</s>Q: 3+3\nA: "


def test_a_data_format_is_one_entry_that_every_layer_reads():
    """Nothing outside ``ftc.data.formats`` compares a data format by its name: checking a row, the trainer's
    texts, the plan's counts and completion share, the pieces compared for duplicates, the trainer's example shape
    and the evaluation all come from the format's entry; the config reference names every entry."""
    import re
    from pathlib import Path

    from ftc.config.schema import DataConfig

    root = Path(__file__).resolve().parents[2] / "ftc"
    names = "|".join(FORMATS)
    compared = re.compile(rf'(fmt|format)\s*(==|!=)\s*"({names})"|(fmt|format) (not )?in \(\s*"({names})"')
    found = [f"{p.relative_to(root)}:{no}: {line.strip()}" for p in sorted(root.rglob("*.py"))
             if p.name != "formats.py" for no, line in enumerate(p.read_text().splitlines(), 1)
             if compared.search(line)]
    assert not found, found
    import inspect

    source = inspect.getsource(DataConfig)
    described = source[source.index("format: str"):source.index("fields:")]
    assert all(name in described for name in FORMATS), described


@pytest.mark.parametrize("fmt, row", [
    ("alpaca", {"instruction": "Say hi", "input": "", "output": "hi"}),
    ("chat", {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi"},
                           {"role": "assistant", "content": "hi"}]}),
    ("prompt_completion", {"prompt": "Say hi: ", "completion": "hi"}),
    ("text", {"text": "hi there"}),
    ("preference", {"prompt": "Say hi", "chosen": "hi", "rejected": "go away"}),
    ("kto", {"prompt": "Say hi", "completion": "hi", "label": True}),
])
def test_every_format_entry_gives_texts_counts_and_pieces_of_its_rows(fmt, row):
    from ftc.data.formats import completion_chars, pieces, plain_prompt_completion, to_texts

    spec = FORMATS[fmt]
    values = check_row(row, fmt, {})
    tokenizer = _Tokenizer()
    texts = to_texts(row, fmt, {}, "alpaca", tokenizer)
    assert len(texts) == (3 if spec.paired else 2) and texts == spec.texts(values, "alpaca", tokenizer)
    assert texts[-1].strip() and (bool(texts[0]) == spec.has_prompt)
    prompt, completion, extra = plain_prompt_completion(values, fmt, "alpaca")
    assert completion.strip() in texts[1] and extra >= 0
    learnt, total = completion_chars(values, fmt)
    assert 0 < learnt <= total
    assert "hi" in " ".join(pieces(values, fmt))
    assert spec.prompt_apart == (spec.paired or spec.labelled)


def test_duplicates_fold_whitespace_as_the_unicode_regex_does():
    """``near_key`` folds with ``str.split`` instead of ``re.sub(r"\\s+", ...)``: the same for every code point."""
    import re
    import sys

    from ftc.data.formats import _fold

    for cp in (c for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF):
        for text in (f"a{chr(cp)}b", f"{chr(cp)}X{chr(cp)}{chr(cp)}y{chr(cp)}"):
            assert _fold(text) == re.sub(r"\s+", " ", text.strip().lower()), hex(cp)
