"""The plan sees the data the run will see: the same parsing (BOM, CRLF, gzip, JSON arrays and wrapping objects),
the same deduplication across files, the same splits and the same tokenization and truncation, so the plan's
example and token counts equal training's."""

from __future__ import annotations

import csv
import dataclasses
import gzip
import json

import pytest

from tests.conftest import plan_for, write_jsonl
from tests.integration.helpers import hub_dataset

pytestmark = pytest.mark.integration

ROWS = [{"instruction": f"Route ticket {i}", "input": f"order {i % 7}", "output": f"team {i % 3}"}
        for i in range(60)]


def _planted(rows):
    """Exact duplicates, case/whitespace variants and empty rows among real ones."""
    return rows + rows[:5] + [{**r, "instruction": "  " + r["instruction"].upper()} for r in rows[5:9]] + \
        [{"instruction": "x", "output": "  "}] * 3


def _files(tmp_path):
    planted = _planted(ROWS)
    json_wrapped = tmp_path / "wrapped.json"
    json_wrapped.write_text(json.dumps({"version": 2, "data": planted}))
    bom_crlf = tmp_path / "bom_crlf.jsonl"
    bom_crlf.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(r) + "\r\n" for r in planted).encode())
    gz = tmp_path / "rows.jsonl.gz"
    gz.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in planted).encode()))
    bom_csv = tmp_path / "rows.csv"
    with open(bom_csv, "w", encoding="utf-8-sig", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["instruction", "input", "output"])
        w.writeheader()
        w.writerows({"input": "", **r} for r in planted)
    # Separate held-out files that share examples with the training file (dropped from training, not from tests).
    test = write_jsonl(tmp_path / "test.jsonl", ROWS[:8] + ROWS[:2])
    val = write_jsonl(tmp_path / "val.jsonl", ROWS[6:14])
    train = write_jsonl(tmp_path / "train.jsonl", planted)
    # Hugging Face datasets by id (HF_HOME=tmp_path/hf, offline): a train split in two parquet shards (joined), and
    # a card whose configs name a subset's splits (the test split shares rows with training, as above).
    half = len(planted) // 2
    hub_dataset(tmp_path / "hf", "acme/shards", {"data/train-00000-of-00002.parquet": planted[:half],
                                                 "data/train-00001-of-00002.parquet": planted[half:]})
    hub_dataset(tmp_path / "hf", "acme/card", {"routing/train.jsonl": planted, "routing/held.jsonl": ROWS[:8],
                                               "other/train.jsonl": ROWS[:3]},
                card="configs:\n- config_name: routing\n  data_files:\n  - split: train\n"
                     "    path: routing/train.jsonl\n  - split: test\n    path: routing/held.jsonl\n"
                     "- config_name: other\n  data_files: other/*.jsonl")
    return {
        "hub-shards": ["data=hub", "data.name=acme/shards"],
        "hub-card-subset": ["data=hub", "data.name=acme/card", "data.subset=routing", "data.test_split=test"],
        "json-object": ["data=file", f"data.path={json_wrapped}"],
        "bom-crlf-jsonl": ["data=file", f"data.path={bom_crlf}"],
        "gzip-jsonl": ["data=file", f"data.path={gz}"],
        "bom-csv": ["data=file", f"data.path={bom_csv}"],
        "held-out-files": ["data=file", f"data.path={train}", f"data.test_path={test}",
                           f"data.validation_path={val}"],
        "no-dedup": ["data=file", f"data.path={train}", "data.dedup=false"],
        "max-samples": ["data=file", f"data.path={train}", "data.max_samples=20"],
        "held-out-cap": ["data=file", f"data.path={train}", "data.max_held_out=2"],
    }


BUILT_IN = {"sample": [], "sample_chat": ["data=sample_chat"],
            "sample_preference": ["data=sample_preference", "objective=dpo"],
            "sample_kto": ["data=sample_kto", "objective=kto"],
            # Planted near-duplicates across the split, personal data of each kind, a second language.
            "messy": ["data=sample_messy"], "messy-mask": ["data=sample_messy", "data.pii=mask"],
            "messy-drop": ["data=sample_messy", "data.pii=drop"],
            "messy-english": ["data=sample_messy", "data.languages=[en]"],
            "messy-no-dedup": ["data=sample_messy", "data.dedup=false"],
            "messy-no-minhash": ["data=sample_messy", "data.near_dup_threshold=null"],
            "messy-split": ["data=sample_messy", "data.test_path=null", "data.dedup=false"]}
# model.chat_template replaces the tokenizer's for chat rows: the plan renders the same one training does.
BUILT_IN["chat-template"] = ["data=sample_chat", "model.chat_template='{% for m in messages %}<{{ m.role }}> "
                             "{{ m.content }} {% endfor %}{% if add_generation_prompt %}<assistant> {% endif %}'"]
CASES = list(BUILT_IN) + ["hub-shards", "hub-card-subset", "json-object", "bom-crlf-jsonl", "gzip-jsonl", "bom-csv",
                          "held-out-files", "no-dedup", "max-samples", "held-out-cap", "short-sample", "short-chat",
                          "short-preference",
                          "short-kto"]
# max_length short enough that examples are cut (and, for SFT, some lose their whole completion and are dropped).
SHORT = {"short-sample": ["data.max_length=96"], "short-chat": ["data=sample_chat", "data.max_length=60"],
         "short-preference": ["data=sample_preference", "objective=dpo", "data.max_length=88"],
         "short-kto": ["data=sample_kto", "objective=kto", "data.max_length=88"]}


@pytest.mark.parametrize("case", CASES)
def test_plan_counts_equal_the_runs(case, tmp_path, monkeypatch):
    from ftc.runtime import console
    from ftc.runtime.data import build
    from ftc.runtime.model import load_tokenizer

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    overrides = {**BUILT_IN, **SHORT}[case] if case in BUILT_IN or case in SHORT else _files(tmp_path)[case]
    plan = plan_for(["data.max_length=256", *overrides])
    assert plan.errors == (), plan.errors
    splits = build(plan.data, load_tokenizer(plan), plan.train.seed, use_cache=False)
    report = splits.report
    if case.startswith("short"):
        assert report.truncated > 0, "the case must cut examples"
    assert plan.data.examples == {"train": report.examples["train"], "validation": report.examples["validation"],
                                  "test": report.examples["test"]}
    assert plan.data.tokens == report.tokens and plan.data.truncated == report.truncated
    assert console.data_drift(plan.data, report) is None  # what ftc train checks, and warns of, at start
    if case == "held-out-cap":  # 60 distinct rows: a tenth would be 6 each, the cap holds them to 2
        assert report.examples == {"train": 56, "validation": 2, "test": 2}
    if case == "chat-template":
        assert plan.data.tokens != plan_for(["data.max_length=256", "data=sample_chat"]).data.tokens
    assert plan.data.train_examples == report.examples["train"]
    # every drop, the rows max_length cuts the whole completion from included (the runtime counts those apart)
    assert plan.data.dropped == {**report.dropped,
                                 "no_completion_after_truncation": report.dropped_no_completion_after_truncation}
    assert dataclasses.asdict(plan.data.quality) == report.quality


def test_planted_duplicates_are_counted_before_launch(tmp_path):
    plan = plan_for(_files(tmp_path)["bom-crlf-jsonl"])
    assert plan.data.dropped == {"empty": 3, "pii": 0, "language": 0, "duplicates": 9, "near_duplicates": 0,
                                 "no_completion_after_truncation": 0}
    assert plan.data.quality.near_groups == 0  # "Route ticket 1" and "Route ticket 11" are distinct examples
    assert plan.data.examples == {"train": 48, "validation": 6, "test": 6}  # 60 distinct: 6 + 6 held out


def test_a_file_of_one_row_repeated_is_refused_before_launch(tmp_path):
    path = write_jsonl(tmp_path / "same.jsonl", [ROWS[0]] * 40)
    plan = plan_for(["data=file", f"data.path={path}"])
    assert plan.data.dropped["duplicates"] == 39 and plan.data.train_examples == 1
    assert any(e.startswith("data.test_fraction: the test split would be empty") for e in plan.errors)


def test_masked_personal_data_never_reaches_the_tokens():
    """data.pii=mask: what trains holds the placeholders, none of the planted values (and data.pii=report keeps
    them, so the check can fail)."""
    from ftc.data.make_sample import PII
    from ftc.runtime.data import build
    from ftc.runtime.model import load_tokenizer

    def trained_text(pii):
        plan = plan_for(["data=sample_messy", f"data.pii={pii}"])
        tokenizer = load_tokenizer(plan)
        splits = build(plan.data, tokenizer, plan.train.seed, use_cache=False)
        return tokenizer.decode([i for row in splits.train["input_ids"] for i in row])

    planted = ["anna.berg@example.com", "7946 0958", "DE89 3704", "4111 1111", "203.0.113.42", "AKIAIOSFODNN7EXAMPLE"]
    assert len(planted) == len(PII)
    masked, kept = trained_text("mask"), trained_text("report")
    assert not any(value in masked for value in planted)
    assert all(f"[{kind.upper()}]" in masked for kind in PII)
    assert all(value in kept for value in planted)


HANDED = {"sample": [], "whole-sequence-loss": ["data.completion_only_loss=false"],
          **{case: BUILT_IN.get(case) or SHORT[case] for case in ("chat-template", "messy-mask", "short-sample",
                                                                   "short-chat")}}


@pytest.mark.parametrize("case", HANDED)
def test_the_plans_token_ids_train_exactly_as_the_runs_own_encoding(case, monkeypatch):
    """``ftc train`` takes the ids the plan encoded (``ftc.data.token_ids``) instead of encoding the data again:
    every column of every split, the truncations, drops and the report equal the run's own encoding."""
    from ftc.data import token_ids
    from ftc.runtime.data import build
    from ftc.runtime.model import load_tokenizer

    plan = plan_for(["data.max_length=256", *HANDED[case]])
    tokenizer = load_tokenizer(plan)
    handed = build(plan.data, tokenizer, plan.train.seed, use_cache=False)
    assert handed.report.token_ids.startswith("the plan's ("), handed.report.token_ids
    monkeypatch.setattr(token_ids, "load", lambda *args: (None, "none, in this test"))
    encoded = build(plan.data, tokenizer, plan.train.seed, use_cache=False)
    assert encoded.report.token_ids == "encoded here: none, in this test"
    for split in ("train", "validation", "test_tokenized"):
        a, b = getattr(handed, split), getattr(encoded, split)
        assert a.features == b.features and a.to_dict() == b.to_dict(), split
    mine = {k: v for k, v in dataclasses.asdict(handed.report).items() if k != "token_ids"}
    assert mine == {k: v for k, v in dataclasses.asdict(encoded.report).items() if k != "token_ids"}
    if case.startswith("short"):
        assert handed.report.truncated > 0


def test_token_ids_this_tokenizer_would_not_make_are_encoded_again_with_a_warning(tmp_path, caplog):
    import numpy as np

    from ftc.data import token_ids
    from ftc.data.select import Settings
    from ftc.runtime.data import build
    from ftc.runtime.model import load_tokenizer

    plan = plan_for(["data=file", f"data.path={write_jsonl(tmp_path / 'rows.jsonl', ROWS)}"])
    tokenizer = load_tokenizer(plan)
    right = build(plan.data, tokenizer, plan.train.seed, use_cache=False)
    entry = token_ids.directory(token_ids.key(Settings.of(plan.data, plan.train.seed), plan.data.template, tokenizer))
    ids = np.memmap(entry / "train.ids", dtype=np.int32, mode="r+")
    ids[0] = (ids[0] + 1) % len(tokenizer)  # the first example is among those the run encodes and compares
    ids.flush()
    wrong = build(plan.data, tokenizer, plan.train.seed, use_cache=False)
    assert wrong.report.token_ids.startswith("encoded here: the plan's ids of ") and "rows.jsonl:" in \
        wrong.report.token_ids
    assert "are not this tokenizer's" in caplog.text
    assert wrong.train.to_dict() == right.train.to_dict()
    (entry / "validation.ids").write_bytes((entry / "validation.ids").read_bytes()[:-4])  # cut short
    assert "are damaged" in build(plan.data, tokenizer, plan.train.seed, use_cache=False).report.token_ids


def test_data_read_from_a_uri_is_encoded_by_the_run_and_says_why():
    """A plan reads no remote file, so it has no ids for one: the run encodes it (the storage test trains on S3)."""
    from ftc.data import token_ids
    from ftc.data.select import Settings
    from ftc.runtime.model import load_tokenizer

    plan = plan_for(["data=file", "data.path=s3://bucket/train.jsonl", "data.num_rows=1000"])
    settings = Settings.of(plan.data, plan.train.seed)
    assert token_ids.load(settings, plan.data.template, load_tokenizer(plan)) == (
        None, "the data is read from s3://bucket/train.jsonl (a plan keeps the ids of files on its own machine only)")
