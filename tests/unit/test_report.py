"""What a finished run says: the verdict names the metric that carries it and calls a tie a tie; report.md holds no
control characters whatever the model generated."""

from __future__ import annotations

import json
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


def _p(em, rouge, shots=3, cut=0):
    return {"exact_match": em, "rouge_l": rouge, "loss": None, "shots": shots, "shots_cut": cut}


def test_the_three_way_verdict_says_whether_tuning_beat_the_prompted_base():
    """The question the budget guides ask before paying for training: does the tuned model beat the base model
    shown a few examples?"""
    both = verdict(_m(0.87, 0.97, 0.06), _m(0.0, 0.01, 7.6), _p(0.21, 0.6))
    assert both.startswith("tuned beats base and the base model prompted with 3 examples: exact match base 0.0%, "
                           "prompted (3-shot) 21.0%, tuned 87.0%;"), both
    assert "test loss 7.600 -> 0.060" in both
    prompting_enough = verdict(_m(0.5, 0.8, 0.3), _m(0.1, 0.2, 3.0), _p(0.6, 0.85))
    assert prompting_enough.startswith("tuned beats base but NOT the base model prompted with 3 examples: prompting "
                                       "alone does as well or better"), prompting_enough
    tie = verdict(_m(0.5, 0.8, 0.3), _m(0.1, 0.2, 3.0), _p(0.5, 0.85))  # equal exact match is not a win
    assert "NOT the base model prompted" in tie
    assert verdict(_m(0.1, 0.2, 1.0), _m(0.3, 0.3, 1.0), _p(0.4, 0.5)).startswith(
        "tuned does NOT beat base or the prompted base")
    alone = verdict(_m(0.9, 0.9, 0.1), None, _p(0.2, 0.3, shots=5, cut=4))  # eval.baselines=[prompted]
    assert alone.startswith("tuned beats the base model prompted with 5 examples: exact match prompted (5-shot) "
                            "20.0%, tuned 90.0%"), alone
    assert alone.endswith("4 prompts got fewer examples to fit the context")


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


def _evaluation():
    tuned = {"loss": 0.1, "perplexity": 1.1, "exact_match": 0.9, "rouge_l": 0.95, "samples": 2}
    base = {"loss": 3.0, "perplexity": 20.1, "exact_match": 0.0, "rouge_l": 0.2, "samples": 2}
    prompted = {"loss": None, "exact_match": 0.5, "rouge_l": 0.6, "samples": 2, "shots": 1, "shots_cut": 0}
    return {"tuned": tuned, "base": base, "prompted": prompted, "verdict": verdict(tuned, base, prompted),
            "shots": [{"prompt": "Ticket: app crashes\nAnswer:", "completion": "category: technical"}],
            "examples": [{"prompt": "Ticket: refund", "reference": "category: billing", "tuned": "category: billing",
                          "base": "hello", "prompted": "category: account"}]}


def test_report_md_has_a_row_for_the_prompted_base_its_examples_and_its_answers(tmp_path):
    from ftc.runtime.report import write
    from tests.conftest import plan_for

    write(plan_for([]), str(tmp_path), {"steps": 1}, _evaluation(), 1.0)
    text = (tmp_path / "report.md").read_text()
    assert "**Verdict:** tuned beats base and the base model prompted with 1 examples" in text
    assert "| base prompted (1-shot) | - | - | 50.0% | 0.600 | 2 |" in text  # no test loss: another prompt
    assert "- `Ticket: app crashes Answer:` -> `category: technical`" in text
    assert "- base prompted: `category: account`" in text
    assert json.loads((tmp_path / "summary.json").read_text())["eval"]["prompted"]["exact_match"] == 0.5


def test_a_report_that_fails_to_render_leaves_the_run_not_complete(tmp_path, monkeypatch):
    """summary.json marks a run complete: written after report.md, so a report that cannot be rendered leaves a run
    that resumes (a KeyError in report.md once left summary.json saying completed and no report)."""
    from ftc.runtime import report
    from tests.conftest import plan_for

    def broken(*args, **kwargs):
        raise KeyError("perplexity")

    monkeypatch.setattr(report, "markdown", broken)
    with pytest.raises(KeyError):
        report.write(plan_for([]), str(tmp_path), {"steps": 1}, _evaluation(), 1.0)
    assert not (tmp_path / "summary.json").exists()
