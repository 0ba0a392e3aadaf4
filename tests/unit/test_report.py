"""What a finished run says: the verdict names the metric that carries it and calls a tie a tie; report.md holds no
control characters whatever the model generated."""

from __future__ import annotations

import re

import pytest

from ftc.runtime.evaluate import verdict
from ftc.runtime.report import _side_by_side

pytestmark = pytest.mark.unit


def _m(em, rouge, loss):
    return {"exact_match": em, "rouge_l": rouge, "loss": loss}


def test_the_verdict_names_the_metric_that_moved_and_calls_a_tie_a_tie():
    won = verdict(_m(0.87, 0.97, 0.06), _m(0.0, 0.01, 7.6))
    assert won.startswith("tuned beats base on exact match 0.0% -> 87.0%;")
    assert verdict(_m(0.2, 0.9, 0.1), _m(0.5, 0.5, 1.0)).startswith("tuned does NOT beat base: exact match 50.0% -> 20")
    tie = verdict(_m(0.0, 0.094, 5.9), _m(0.0, 0.011, 7.2))  # the chat run the issue quotes
    assert tie.startswith("a tie on exact match (0.0%): tuned is better only on ROUGE-L and test loss")
    assert "beats" not in tie
    flat = verdict(_m(0.0, 0.011, 7.2), _m(0.0, 0.011, 7.2))
    assert "no better on ROUGE-L or test loss either" in flat


def test_report_md_shows_generations_without_control_characters():
    nasty = "a\x00b\x08c\rd\x1b[31me\u2028f`g\nh\x7f"
    lines = _side_by_side([{"prompt": "Ticket:\x00 hi", "reference": "ok", "tuned": nasty, "base": nasty}])
    text = "\n".join(lines)
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]", text), repr(text)
    assert "a\\x00b\\x08c\\x0dd\\x1b[31me\\u2028f'g⏎h\\x7f" in text  # escaped, visible, inside one code span


def test_a_sweep_tied_on_its_headline_metric_names_the_trial_with_the_lower_test_loss_best(tmp_path):
    """The sweep the issue ran: exact match 0 in both trials; trial 1's test loss 5.90 against trial 0's 7.17."""
    import json

    from ftc.sweep.report import write_report

    for n, loss in enumerate((7.17, 5.90)):
        trial = tmp_path / str(n)
        trial.mkdir()
        (trial / "plan.json").write_text(json.dumps({"objective": {"name": "sft", "trainer": "sft"}}))
        (trial / "trial.json").write_text(json.dumps({"status": "completed", "overrides": [f"train.lr={n + 1}e-4"]}))
        (trial / "summary.json").write_text(json.dumps({"status": "completed", "eval": {"tuned": {
            "exact_match": 0.0, "rouge_l": 0.1, "loss": loss}}}))
    text = write_report(str(tmp_path))
    assert "sorted by exact_match, ties broken by test_loss" in text
    assert "**Best trial 1** (exact_match = 0)" in text and text.index("| 1 ") < text.index("| 0 ")
