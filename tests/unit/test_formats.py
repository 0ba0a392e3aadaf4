"""Column names a file gives its fields: ``formats.propose_fields`` proposes the overrides that read them."""

from __future__ import annotations

import pytest

from ftc.data.formats import MissingField, propose_fields
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
