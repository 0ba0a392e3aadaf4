"""Near-duplicates, personal data and language of rows (ftc.data.quality), and the selection that applies them
(ftc.data.select): torch-free, what `ftc plan` runs on every row."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

from ftc.data import quality
from ftc.data.select import Settings, select
from tests.conftest import write_jsonl

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("kind, text, value", [
    ("email", "write to anna.berg+support@example.co.uk today", "anna.berg+support@example.co.uk"),
    ("phone", "call +44 20 7946 0958 after six", "+44 20 7946 0958"),
    ("phone", "call (555) 123-4567", "(555) 123-4567"),
    ("iban", "refund to DE89 3704 0044 0532 0130 00 please", "DE89 3704 0044 0532 0130 00"),
    ("iban", "GB82WEST12345698765432", "GB82WEST12345698765432"),
    ("card", "card 4111 1111 1111 1111 expired", "4111 1111 1111 1111"),
    ("card", "card 5500-0000-0000-0004", "5500-0000-0000-0004"),
    ("ip", "blocked from 203.0.113.42 again", "203.0.113.42"),
    ("ip", "and from 2001:db8::ff00:42:8329", "2001:db8::ff00:42:8329"),
    ("ip", "and from abcd:ef::cafe:beef", "abcd:ef::cafe:beef"),  # no decimal digit: not skipped for the lack of one
    ("credential", "key AKIAIOSFODNN7EXAMPLE leaked", "AKIAIOSFODNN7EXAMPLE"),
    ("credential", "token ghp_abcdefghijklmnopqrstuvwxyz0123456789", "ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
    # Without a digit, '@', ':', '=' or '_': found by the credential's own prefix (quality._MAY_HOLD).
    ("credential", "send it with bearer abcdefghijklmnop please", "abcdefghijklmnop"),
    ("credential", "key AKIAABCDEFGHIJKLMNOP leaked", "AKIAABCDEFGHIJKLMNOP"),
    ("credential", "key AIza" + "abcdefghij" * 3 + "ABCDE leaked", "AIza" + "abcdefghij" * 3 + "ABCDE"),
    ("credential", "key sk-abcdefghijklmnopqrstuvwx leaked", "sk-abcdefghijklmnopqrstuvwx"),
])
def test_each_kind_of_personal_data_is_found_and_masked(kind, text, value):
    found = quality.find_pii(text)
    assert [(k, text[s:e]) for k, s, e in found] == [(kind, value)]
    masked = quality.mask_pii(text)
    assert value not in masked and quality.PLACEHOLDER[kind] in masked


@pytest.mark.parametrize("text", [
    "order 1020 failed with error 403",          # ids and codes
    "the card 4111 1111 1111 1112 was declined",  # fails the Luhn check
    "IBAN DE89 3704 0044 0532 0130 01",           # fails mod 97
    "since 2024-01-15 at 12:30:45",               # a date and a time
    "order 123456789012 is late",                  # a bare run of digits
    "version 1.2.3 of the app",                    # not four octets
    "ip 300.1.2.3 is not one",                     # octet out of range
])
def test_numbers_that_are_not_personal_data_are_left_alone(text):
    assert quality.find_pii(text) == ()


def test_a_shown_value_is_masked():
    assert quality.shown("anna.berg@example.com") == "an***"


def test_language_of_text_and_unsure_for_short_text():
    assert quality.language("Mein Paket ist beschädigt angekommen und ich möchte es zurückschicken.") == "de"
    assert quality.language("My package arrived damaged and I would like to send it back.") == "en"
    assert quality.language("ok") == quality.UNSURE
    assert quality.language("1234 5678") is None
    assert "de" in quality.language_codes() and "en" in quality.language_codes()


def test_near_duplicates_are_found_and_distinct_texts_are_not():
    texts = ["Hello, my package for order 1013 has not arrived yet. This is urgent.",
             "Hi team, my package for order 1013 has not arrived yet. This is urgent.",
             "The mobile app crashes when I open the settings page. No rush.",
             "The web dashboard does not load in my browser. Thanks."]
    pairs = list(quality.near_duplicate_pairs(texts, 0.8))
    assert [(i, j) for i, j, _ in pairs] == [(0, 1)]
    assert pairs[0][2] >= 0.8  # confirmed on the exact 5-gram sets
    again = list(quality.near_duplicate_pairs(texts, 0.8))
    assert again == pairs  # deterministic (seeded MinHash, crc32): plan and train agree


def _tickets(n: int, seed: int = 3) -> list[str]:
    import random

    from ftc.data import make_sample

    rng = random.Random(seed)
    return [f"{ex['input']}\n{ex['output']}" for ex in (make_sample.make_example(rng) for _ in range(n))]


def _lsh_index_pairs(texts: list[str], threshold: float) -> list[tuple[int, int, float]]:
    """The pairs as datasketch's MinHashLSH index proposes them (what the selection used before it kept band keys
    instead of every text's 5-grams), confirmed the same way."""
    import zlib

    from datasketch import MinHash, MinHashLSH

    sets = [quality.shingles(t) for t in texts]
    lsh = MinHashLSH(threshold=threshold, num_perm=quality.NUM_PERM)
    hashes = MinHash.bulk([list(s) for s in sets], num_perm=quality.NUM_PERM, seed=1, hashfunc=zlib.crc32)
    for i, m in enumerate(hashes):
        lsh.insert(i, m)
    return [(i, j, score) for i, m in enumerate(hashes) for j in sorted(lsh.query(m))
            if j > i and (score := quality.jaccard(sets[i], sets[j])) >= threshold]


@pytest.mark.parametrize("threshold", [0.7, 0.8, 0.9])
def test_near_duplicate_pairs_are_the_lsh_index_pairs(threshold):
    texts = _tickets(1500)  # templated tickets: many proposals, many confirmed pairs
    pairs = list(quality.near_duplicate_pairs(texts, threshold))
    assert len(pairs) > 50
    assert pairs == _lsh_index_pairs(texts, threshold)


def test_signatures_over_worker_processes_are_the_ones_computed_in_process(monkeypatch):
    import os

    texts = _tickets(2500, seed=6)
    serial = list(quality.near_duplicate_pairs(texts, 0.8))
    monkeypatch.setattr(quality, "PARALLEL_FROM", 1000)  # three chunks over the cores
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)  # two workers on any machine
    assert list(quality.near_duplicate_pairs(texts, 0.8)) == serial and len(serial) > 20


def test_near_duplicate_memory_grows_by_band_keys_not_by_text():
    import tracemalloc

    texts = _tickets(3 * quality.SIGNATURE_CHUNK, seed=4)
    list(quality.near_duplicate_pairs(texts[:10], 0.8))  # imports (datasketch, scipy) outside the measurement
    peaks = {}
    for n in (quality.SIGNATURE_CHUNK, len(texts)):
        tracemalloc.start()
        list(quality.near_duplicate_pairs(texts[:n], 0.8))
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    per_text = (peaks[len(texts)] - peaks[quality.SIGNATURE_CHUNK]) / (len(texts) - quality.SIGNATURE_CHUNK)
    shingle_set = sys.getsizeof(quality.shingles(texts[0])) + sum(map(sys.getsizeof, quality.shingles(texts[0])))
    assert per_text < 500, per_text  # 9 band keys of 8 bytes, and the int32 proposals of the texts in a group
    assert shingle_set > 20 * per_text  # what keeping each text's 5-grams cost


def test_text_most_rows_share_is_left_out_of_the_comparison():
    rows = [["Triage the ticket.\n\nTicket: a", "x"], ["Triage the ticket.\n\nTicket: b", "y"],
            ["Triage the ticket.\n\nTicket: c", "z"]]
    shared = quality.boilerplate(rows)
    assert shared == {"Triage the ticket."}
    assert quality.own_text(rows[0], shared) == "Ticket: a\nx"


def _settings(path, **kw):
    data = SimpleNamespace(path=str(path), validation_path=None, test_path=None, format="alpaca", fields={},
                           dedup=True, near_dup_threshold=0.8, pii="report", languages=None,
                           validation_fraction=0.1, test_fraction=0.1, max_held_out=None, max_samples=None,
                           engine="local", ray_address=None)
    for k, v in kw.items():
        setattr(data, k, v)
    return Settings.of(data, seed=42)


def test_the_selections_memory_grows_by_about_a_kilobyte_a_row(tmp_path):
    """The whole selection's peak Python memory (tracemalloc) grows by under 1.5 KB per ~310-byte row: an example
    keeps its checked fields and nine band keys, not the row as read, its compared text or the boilerplate count's
    copy of its lines (the code before d064631 grew by ~1.8 KB a row; today's is ~1.0 KB, and a million rows plan
    at a 1.3 GB peak: docs/BENCHMARKS.md)."""
    import json
    import random
    import tracemalloc

    words = [f"{a}{b}{c}" for a in "bcdfghklmnprstvz" for b in "aeiou" for c in ("", "n", "r", "st", "l")]
    peaks = {}
    for n in (1000, 4000, 16000):  # the first warms the imports, the classifier and the compiled patterns
        rng = random.Random(n)
        path = tmp_path / f"rows{n}.jsonl"
        path.write_text("".join(json.dumps({k: " ".join(rng.choice(words) for _ in range(size)) for k, size in
                                            (("instruction", 10), ("input", 6), ("output", 50))}) + "\n"
                                for _ in range(n)))
        tracemalloc.start()
        select(_settings(path))
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    per_row = (peaks[16000] - peaks[4000]) / 12000  # both past find_pii's memo of 8,192 texts
    assert per_row < 1500, per_row


TICKETS = [f"The {app} app shows error {code} when I {verb}." for app in ("mobile", "web", "desktop")
           for code in (401, 500) for verb in ("log in", "upload files", "open settings", "export a report",
                                               "change my plan")]


def _rows(tickets):
    return [{"instruction": "Triage.", "input": t, "output": f"team {i % 3}"} for i, t in enumerate(tickets)]


def test_selection_keeps_one_of_each_near_duplicate_group_and_names_the_pair(tmp_path):
    rows = _rows(TICKETS) + [{**_rows(TICKETS)[0], "input": "Hi, " + TICKETS[0]}]
    sel = select(_settings(write_jsonl(tmp_path / "t.jsonl", rows)))
    assert sel.dropped["near_duplicates"] == 1 and sel.near_groups.count == 1
    assert sel.near_groups.shown[0].startswith(f"{tmp_path}/t.jsonl:1 ~ {tmp_path}/t.jsonl:31")
    assert sum(sel.counts().values()) == len(TICKETS)


def test_a_training_copy_of_a_test_row_is_dropped_and_named(tmp_path):
    test = write_jsonl(tmp_path / "test.jsonl", _rows(TICKETS[:5]))
    train = write_jsonl(tmp_path / "train.jsonl", _rows(TICKETS[5:]) + [{**_rows(TICKETS)[2], "input": "Hello, "
                                                                         + TICKETS[2]}])
    sel = select(_settings(train, test_path=str(test)))
    assert sel.leaked.count == 1 and f"{test}:3 (test) ~ {train}:26" == sel.leaked.shown[0]
    assert sel.counts()["test"] == 5
    # Kept with data.dedup=false among training rows, never across the split.
    assert select(_settings(train, test_path=str(test), dedup=False)).leaked.count == 1


def test_without_dedup_a_split_never_straddles_a_group(tmp_path):
    rows = _rows(TICKETS) * 2  # every ticket twice
    sel = select(_settings(write_jsonl(tmp_path / "t.jsonl", rows), dedup=False))
    train = {ex.values["input"] for ex in sel.splits["train"]}
    held = [ex for role in ("test", "validation") for ex in sel.splits[role]]
    assert sel.moved.count > 0 and not any(ex.values["input"] in train for ex in held)


@pytest.mark.parametrize("action", ["report", "mask", "drop"])
def test_personal_data_actions(tmp_path, action):
    rows = _rows(TICKETS)
    rows[3]["input"] += " Mail anna.berg@example.com."
    sel = select(_settings(write_jsonl(tmp_path / "t.jsonl", rows), pii=action))
    assert sel.pii["email"].count == 1 and sel.pii["email"].shown == [f"{tmp_path}/t.jsonl:4: email an***"]
    kept = [ex for split in sel.splits.values() for ex in split or []]
    texts = [ex.values["input"] for ex in kept]
    if action == "drop":
        assert sel.dropped["pii"] == 1 and len(kept) == len(rows) - 1
    elif action == "mask":
        assert any("[EMAIL]" in t for t in texts) and not any("anna.berg" in t for t in texts)
    else:
        assert any("anna.berg@example.com" in t for t in texts)


def test_language_filter_keeps_the_chosen_languages(tmp_path):
    rows = _rows(TICKETS) + [{"instruction": "Triage.", "input": "Mein Paket ist beschädigt angekommen, bitte "
                                                                  "schicken Sie ein neues.", "output": "team 1"}]
    path = write_jsonl(tmp_path / "t.jsonl", rows)
    assert select(_settings(path)).languages["de"] == 1
    sel = select(_settings(path, languages=("en",)))
    assert sel.dropped["language"] == 1 and sel.language_dropped.shown == [f"{path}:31: de"]


def test_languages_are_sampled_for_the_report_and_classified_for_the_filter(tmp_path, monkeypatch):
    from ftc.data import select as selection

    rows = _rows(TICKETS) + [{"instruction": "Triage.", "input": "Mein Paket ist beschädigt angekommen, bitte "
                                                                  "schicken Sie ein neues.", "output": "team 1"}]
    path = write_jsonl(tmp_path / "t.jsonl", rows)
    monkeypatch.setattr(selection, "LANGUAGE_SAMPLE", 7)
    report = select(_settings(path))
    assert report.languages_sampled == sum(report.languages.values()) == 7  # every 5th of 31: 0, 5, ..., 30
    assert report.languages["de"] == 1  # the 31st example (index 30) is in the sample
    assert report.quality().languages_sampled == 7
    kept = select(_settings(path, languages=("en",)))
    assert kept.languages_sampled == 0 and sum(kept.languages.values()) == len(rows)  # the filter sees every row
    assert kept.dropped["language"] == 1


MESSY = "ftc/assets/sample_messy/"


def test_the_messy_sample_plan_names_every_planted_fault():
    from tests.conftest import plan_for

    plan = plan_for(["data=sample_messy"])
    q = plan.data.quality
    assert q.pii == {kind: 3 for kind in ("card", "credential", "email", "iban", "ip", "phone")}
    assert q.leaked == 20 and all(MESSY + "test.jsonl:" in line and MESSY + "train.jsonl:" in line
                                  for line in q.leaked_shown)
    assert q.languages["de"] == 30 and q.near_groups > 0
    warnings = "\n".join(plan.warnings)
    assert "data.pii: personal data or secrets" in warnings and "train.jsonl:22: email an***" in warnings
    assert "anna.berg" not in plan.to_json()  # what is shown is masked, in the plan and in its JSON
    assert "data.test_path: 20 training rows (nearly) duplicate" in warnings
    assert "data.languages: the data is in several languages (en 92%, de 8%)" in warnings
    english = plan_for(["data=sample_messy", "data.languages=[en]"])
    assert english.data.dropped["language"] == 30 and "data.languages" not in "\n".join(english.warnings)


def test_refused_personal_data_and_unknown_language_codes_are_plan_errors():
    from tests.conftest import plan_for

    refused = plan_for(["data=sample_messy", "data.pii=refuse"])
    assert any(e.startswith("data.pii: personal data or secrets in the rows (3 card") for e in refused.errors)
    unknown = plan_for(["data.languages=[english]"])
    assert any(e.startswith("data.languages: unknown language code(s) ['english']") for e in unknown.errors)


def test_the_built_in_samples_are_clean():
    from tests.conftest import plan_for

    for overrides in ([], ["data=sample_chat"], ["data=sample_preference", "objective=dpo"],
                      ["data=sample_kto", "objective=kto"]):
        plan = plan_for(overrides)
        assert not any(plan.data.dropped.values()) and plan.data.quality.leaked == 0, overrides
        assert plan.data.quality.near_groups == 0 and not plan.data.quality.pii, overrides


def test_plan_writes_the_data_card(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "ftc.cli", "plan", "--data-card", str(tmp_path / "card"),
                        "data=sample_messy"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    card = (tmp_path / "card" / "data_card.md").read_text()
    assert "| train | " in card and "**Clean test set**: 20 training rows" in card
    assert "3 email" in card and "de 30" in card and "![tokens per example](data_tokens.png)" in card
    assert (tmp_path / "card" / "data_tokens.png").stat().st_size > 1000
    assert "anna.berg" not in card


def test_the_runtime_refuses_what_the_plan_refuses():
    """A plan.json run as it is (a Ray worker, `ftc train` of a saved plan) repeats the refusal, not a silent run."""
    import dataclasses

    from ftc.errors import DataError
    from ftc.runtime.data import selected
    from tests.conftest import plan_for

    plan = plan_for(["data=sample_messy", "data.max_length=512"])  # long enough that truncation drops nothing
    refused = dataclasses.replace(plan.data, pii="refuse")
    with pytest.raises(DataError, match=r"personal data or secrets in the rows \(3 card, 3 credential"):
        selected(refused, plan.train.seed)
    assert selected(plan.data, plan.train.seed).counts() == plan.data.examples


def test_chat_and_message_pairs_compare_their_turns_without_the_shared_system_prompt(tmp_path):
    system = {"role": "system", "content": "You triage support tickets."}
    chats = [{"messages": [system, {"role": "user", "content": t}, {"role": "assistant", "content": f"team {i % 3}"}]}
             for i, t in enumerate(TICKETS)]
    chats.append({"messages": [system, {"role": "user", "content": "Hello! " + TICKETS[4]},
                               {"role": "assistant", "content": "team 1"}]})
    sel = select(_settings(write_jsonl(tmp_path / "c.jsonl", chats), format="chat"))
    assert sel.dropped["near_duplicates"] == 1 and "without the 1 line" in sel.compared_on
    pairs = [{"chosen": [{"role": "user", "content": t}, {"role": "assistant", "content": "team 1"}],
              "rejected": [{"role": "user", "content": t}, {"role": "assistant", "content": "team 2"}]}
             for t in TICKETS]
    sel = select(_settings(write_jsonl(tmp_path / "p.jsonl", pairs + pairs[:1]), format="preference"))
    assert sel.dropped["duplicates"] == 1 and sum(sel.counts().values()) == len(TICKETS)


def test_the_selection_cache_is_keyed_by_the_files_contents(tmp_path, monkeypatch):
    """A second plan of the same data reads the cached findings; an edited file (same size and second) is
    selected again, never served stale."""
    from ftc.compiler import facts

    monkeypatch.setenv("FTC_CACHE", str(tmp_path / "cache"))
    path = write_jsonl(tmp_path / "t.jsonl", _rows(TICKETS))
    settings = _settings(path)
    first = facts._selection_facts(settings, ((str(path), 0, 1),), "alpaca", None, (), None)
    assert list((tmp_path / "cache" / "selection").glob("*.json"))
    calls = []
    monkeypatch.setattr(facts, "_select", lambda *args: calls.append(args))
    assert facts._selection_facts(settings, ((str(path), 0, 2),), "alpaca", None, (), None) == first \
        and not calls  # disk
    path.write_text(path.read_text().replace("team 0", "team 9"))
    facts._selection_facts(settings, ((str(path), 0, 3),), "alpaca", None, (), None)
    assert calls  # the contents changed: selected again


def _examples(sel):
    return {role: [(ex.role, ex.line, ex.values, ex.masked) for ex in examples]
            for role, examples in sel.splits.items()}


@pytest.mark.parametrize("pii", ["mask", "drop"])
def test_a_cached_selection_is_the_selection_without_its_passes(tmp_path, monkeypatch, pii):
    from ftc.data import select as selection

    monkeypatch.setenv("FTC_CACHE", str(tmp_path / "cache"))
    settings = _settings(MESSY + "train.jsonl", test_path=MESSY + "test.jsonl", pii=pii)
    fresh = select(settings)
    first = selection.cached(settings)  # selected, and saved as file lines
    assert list((tmp_path / "cache" / "selection").glob("rows-*.json"))
    assert first.pii and (pii != "mask" or any(ex.masked for ex in first.splits["train"]))

    def no_second_pass(*args, **kwargs):
        raise AssertionError("the cached selection ran the near-duplicate pass again")

    monkeypatch.setattr(quality, "near_duplicate_pairs", no_second_pass)
    again = selection.cached(settings)  # what ftc train does after ftc plan: the chosen lines read again
    assert _examples(again) == _examples(first) == _examples(fresh)
    assert again.quality() == first.quality() and again.dropped == first.dropped and again.rows == first.rows
    assert all(p.count == 0 for p in again.problems.values())


def test_a_changed_file_is_selected_again(tmp_path, monkeypatch):
    from ftc.data import select as selection

    monkeypatch.setenv("FTC_CACHE", str(tmp_path / "cache"))
    path = write_jsonl(tmp_path / "t.jsonl", _rows(TICKETS))
    before = selection.cached(_settings(path))
    write_jsonl(path, _rows(TICKETS[:20]))
    after = selection.cached(_settings(path))
    assert sum(before.counts().values()) == len(TICKETS) and sum(after.counts().values()) == 20


def test_signatures_are_datasketchs_minhash():
    """The chunk-at-a-time signatures (5-grams hashed by table lookups) equal datasketch's MinHash of each text's
    5-gram set, on ASCII texts, texts with other characters, texts of five characters or fewer, empty and blank
    texts, and texts whose 5-grams repeat."""
    import zlib

    import numpy as np
    from datasketch import MinHash

    texts = ["", "   ", "abc", "abcde", "abcdef", "ABCDEF\t\n ghij", "aaaaaaaaaaaaaaaaaaaa", "abcabcabcabcabc",
             "Héllo wörld, ça va? Très bien.", "日本語のテキストです。", "naïve café", "tab\tand  spaces\n\nnewlines",
             "x" * 5000] + _tickets(300, seed=9)
    rng = __import__("random").Random(5)
    texts += ["".join(rng.choice("ab cé\n\tZ") for _ in range(rng.randint(0, 12))) for _ in range(300)]
    expected = np.stack([m.hashvalues for m in MinHash.generator(
        (list(quality.shingles(t)) for t in texts), num_perm=quality.NUM_PERM, seed=1, hashfunc=zlib.crc32)])
    got = quality.signatures(texts)
    assert got.shape == (len(texts), quality.NUM_PERM)
    assert np.array_equal(got, expected)
    assert quality.signatures([]).shape == (0, quality.NUM_PERM)
