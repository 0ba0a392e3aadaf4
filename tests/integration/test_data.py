"""Data pipeline on real files: formats, validation errors with file:line, counts, masks, EOS, cache keys."""

from __future__ import annotations

import dataclasses
import json

import pytest

from ftc.errors import DataError
from tests.conftest import plan_for, write_jsonl

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tokenizer():
    from ftc.runtime.model import load_tokenizer

    return load_tokenizer(plan_for([]))


def spec_for(path, **changes):
    """The data spec of a plan on ``path``, changed as a plan of another format would be (its prompt style)."""
    from ftc.data.formats import FORMATS

    spec = plan_for(["data=file", f"data.path={path}", "data.max_length=128"]).data
    if "format" in changes and "prompt_style" not in changes:
        changes["prompt_style"] = FORMATS[changes["format"]].prompt
    return dataclasses.replace(spec, **changes)


def build(spec, tokenizer):
    from ftc.runtime.data import build as _build

    return _build(spec, tokenizer, seed=1, use_cache=False)


ROWS = [{"instruction": f"Say {i}", "input": "", "output": f"number {i}"} for i in range(40)]


def test_alpaca_masks_prompt_and_appends_eos(tmp_path, tokenizer):
    splits = build(spec_for(write_jsonl(tmp_path / "d.jsonl", ROWS)), tokenizer)
    row = splits.train[0]
    ids, mask = row["input_ids"], row["completion_mask"]
    assert ids[-1] == tokenizer.eos_token_id and mask[-1] == 1
    first = mask.index(1)
    assert not any(mask[:first]) and all(mask[first:])
    assert "### Response:" in tokenizer.decode(ids[:first])
    assert tokenizer.decode(ids[first:], skip_special_tokens=True).strip().startswith("number")
    assert ids[0] == tokenizer.bos_token_id


def test_seeded_split_and_counts(tmp_path, tokenizer):
    splits = build(spec_for(write_jsonl(tmp_path / "d.jsonl", ROWS)), tokenizer)
    assert splits.report.examples == {"train": 32, "validation": 4, "test": 4}
    again = build(spec_for(write_jsonl(tmp_path / "e.jsonl", ROWS)), tokenizer)
    assert [t["prompt"] for t in again.test] == [t["prompt"] for t in splits.test]


def test_duplicates_empty_and_truncation_are_counted(tmp_path, tokenizer):
    rows = ROWS + [ROWS[0], dict(ROWS[1], output="  NUMBER 1 "), {"instruction": "x", "output": ""},
                   {"instruction": "long " * 300, "output": "y"}]
    splits = build(spec_for(write_jsonl(tmp_path / "d.jsonl", rows)), tokenizer)
    r = splits.report
    assert (r.dropped["duplicates"], r.dropped["near_duplicates"], r.dropped["empty"]) == (2, 0, 1)  # exact, case
    assert r.truncated == 1 and r.dropped_no_completion_after_truncation == 1
    assert r.rows_read["train"] == 44


def test_malformed_json_names_file_and_line(tmp_path, tokenizer):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n" + '{"instruction": "x", "output": \n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2: invalid JSON"):
        build(spec_for(path), tokenizer)


def test_missing_field_names_file_line_and_mapping(tmp_path, tokenizer):
    rows = ROWS[:5] + [{"instruction": "a", "answer": "b"}] + ROWS[5:9] + [{"question": "q"}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(DataError) as e:
        build(spec_for(path), tokenizer)
    text = str(e.value)
    assert "2 malformed rows" in text and "d.jsonl:6: missing field 'output'" in text and "d.jsonl:11:" in text
    assert "data.fields" in text


def test_field_mapping_fixes_it(tmp_path, tokenizer):
    rows = [{"q": f"Say {i}", "a": f"number {i}"} for i in range(20)]
    spec = spec_for(write_jsonl(tmp_path / "d.jsonl", rows), fields={"instruction": "q", "output": "a"})
    assert build(spec, tokenizer).report.examples["train"] == 16


def test_wrong_type_and_not_utf8(tmp_path, tokenizer):
    with pytest.raises(DataError, match=r"d\.jsonl:1: field 'output' must be a string"):
        build(spec_for(write_jsonl(tmp_path / "d.jsonl", [{"instruction": "a", "output": 3}])), tokenizer)
    latin = tmp_path / "l.jsonl"
    latin.write_bytes('{"instruction": "caf\xe9", "output": "x"}\n'.encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        build(spec_for(latin), tokenizer)


@pytest.mark.parametrize("suffix", ["csv", "json", "parquet"])
def test_other_file_types(tmp_path, tokenizer, suffix):
    path = tmp_path / f"d.{suffix}"
    if suffix == "csv":
        path.write_text("instruction,input,output\n" + "".join(f"Say {i},,number {i}\n" for i in range(20)))
    elif suffix == "json":
        path.write_text(json.dumps(ROWS[:20]))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(ROWS[:20]), path)
    assert build(spec_for(path), tokenizer).report.examples["train"] == 16


def test_prompt_completion_and_text_formats(tmp_path, tokenizer):
    pc = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": f"Q{i}:", "completion": f" A{i}"} for i in range(20)])
    splits = build(spec_for(pc, format="prompt_completion"), tokenizer)
    assert splits.test[0]["prompt"].startswith("Q")
    text = write_jsonl(tmp_path / "t.jsonl", [{"text": f"line {i}"} for i in range(20)])
    row = build(spec_for(text, format="text", completion_only_loss=False), tokenizer).train[0]
    assert sum(row["completion_mask"]) == len(row["input_ids"]) - 1  # everything but BOS is "completion"


def test_chat_uses_template_and_trains_last_assistant_turn(tokenizer):
    spec = plan_for(["data=sample_chat"]).data
    splits = build(spec, tokenizer)
    ex = splits.test[0]
    assert ex["prompt"].startswith("<|system|>") and ex["prompt"].endswith("<|assistant|>\n")
    assert ex["completion"].startswith("category:") and "</s>" in ex["completion"]
    row = splits.train[0]
    assert row["input_ids"].count(tokenizer.eos_token_id) == 1  # the template's EOS is not doubled


def test_cache_key_covers_tokenizer_template_and_settings(tmp_path, tokenizer):
    from ftc.runtime.data import cache_key

    path = write_jsonl(tmp_path / "d.jsonl", ROWS)
    spec = spec_for(path)
    base = cache_key(spec, tokenizer, 1)
    assert cache_key(spec, tokenizer, 1) == base
    assert cache_key(dataclasses.replace(spec, template="plain"), tokenizer, 1) != base
    assert cache_key(dataclasses.replace(spec, max_length=64), tokenizer, 1) != base
    assert cache_key(spec, tokenizer, 2) != base
    other = type(tokenizer).from_pretrained(tokenizer.name_or_path)
    other.chat_template = "{{ messages[0]['content'] }}"
    assert cache_key(spec, other, 1) != base
    write_jsonl(path, ROWS[:-1])  # the file changed
    assert cache_key(spec, tokenizer, 1) != base


def test_cache_is_reused(tmp_path, tokenizer):
    from ftc.runtime.data import build as cached_build

    spec = spec_for(write_jsonl(tmp_path / "d.jsonl", ROWS))
    first = cached_build(spec, tokenizer, 1)
    second = cached_build(spec, tokenizer, 1)
    assert not first.report.cache_hit and second.report.cache_hit
    assert second.train["input_ids"] == first.train["input_ids"] and second.test == first.test


@pytest.mark.parametrize("fmt", ["alpaca", "preference"])
def test_a_split_tokenized_in_chunks_is_the_split_tokenized_at_once(tmp_path, tokenizer, monkeypatch, fmt):
    """A large split is tokenized and written CHUNK examples at a time (bounded memory), then joined: the same
    rows, in the same order, with the same counts as one pass."""
    from ftc.runtime import data

    rows = ROWS if fmt == "alpaca" else [
        {"prompt": f"Say {i}", "chosen": f"number {i}", "rejected": f"no {i} " * (i % 4 + 1)} for i in range(40)]
    rows = rows + [{**rows[0], **{k: v + " long" * 200 for k, v in rows[0].items() if k != "output"}}]  # cut
    spec = spec_for(write_jsonl(tmp_path / "d.jsonl", rows), format=fmt, prompt_style="alpaca")
    whole = build(spec, tokenizer)
    monkeypatch.setattr(data, "CHUNK", 3)
    chunked = build(spec, tokenizer)
    for name in ("train", "validation", "test"):
        assert chunked.__dict__[name if name != "test" else "test_tokenized"].to_list() == \
            whole.__dict__[name if name != "test" else "test_tokenized"].to_list()
    assert dataclasses.asdict(chunked.report) == dataclasses.asdict(whole.report)
    assert chunked.test == whole.test and chunked.shots == whole.shots


@pytest.mark.parametrize("completion_only", [True, False])
def test_sft_rows_carry_the_labels_trl_would_build(tmp_path, tokenizer, completion_only):
    """SFT rows come labelled (-100 outside the completion under completion-only loss), so SFTTrainer skips its own
    preparation (a pass over every row) unless it packs."""
    from ftc.runtime.train import sft_config

    spec = dataclasses.replace(spec_for(write_jsonl(tmp_path / "d.jsonl", ROWS)), completion_only_loss=completion_only)
    for row in build(spec, tokenizer).train:
        expected = [t if m or not completion_only else -100 for t, m in zip(row["input_ids"], row["completion_mask"])]
        assert row["labels"] == expected
    plan = plan_for([])
    assert sft_config(plan, tmp_path, False).dataset_kwargs == {"skip_prepare_dataset": True}
    packed = dataclasses.replace(plan, data=dataclasses.replace(plan.data, packing=True))
    assert sft_config(packed, tmp_path, False).dataset_kwargs == {"skip_prepare_dataset": False}
