"""Sweeps end to end on the tiny model: a 2x2 grid, a failing trial, budget refusal, the search sweeper."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

QUICK = ["train.max_steps=4", "train.epochs=null", "train.eval_steps=2", "eval.max_samples=4",
         "eval.max_new_tokens=12", "train.report_to=[none]", "train.global_batch_size=8"]


def ftc(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "ftc.cli", *args], capture_output=True, text=True, timeout=timeout)


def test_grid_2x2_with_a_failing_trial_and_summary(tmp_path):
    sweep = tmp_path / "sweep"
    r = ftc("train", "-m", "method.r=4,8", "train.lr=1e-3,2e-3", *QUICK, f"hydra.sweep.dir={sweep}")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert len(rows) == 4 and all(row["status"] == "completed" for row in rows)
    assert {row["overrides"].split()[0] + " " + row["overrides"].split()[1] for row in rows} == {
        "method.r=4 train.lr=0.001", "method.r=4 train.lr=0.002", "method.r=8 train.lr=0.001",
        "method.r=8 train.lr=0.002"}
    assert all(float(row["test_loss"]) > 0 and float(row["tokens_per_s"]) > 0 for row in rows)
    md = (sweep / "summary.md").read_text()
    assert "Best trial" in md and "ftc train method.r=" in md
    assert (sweep / "loss_curves.png").stat().st_size > 1000
    for i in range(4):
        assert (sweep / str(i) / "adapter" / "adapter_model.safetensors").exists()
    # a console line as each trial starts (planned steps, time, cost) and ends (its metrics, time against the plan)
    for i in range(4):
        assert f"ftc: trial {i} (method.r=" in r.stderr
    assert r.stderr.count(": started; planned 4 steps, ") == 4
    assert r.stderr.count(" s); exact match ") == 4 and "test loss " in r.stderr
    # the base model was scored once: trials 1-3 reused trial 0's scores (same base, test set and settings); trial 0
    # scored it, or reused it too when an earlier run in this FTC_CACHE already had
    reused = [json.loads((sweep / str(i) / "summary.json").read_text())["eval"].get("base_reused_from")
              for i in range(4)]
    assert all(reused[1:]) and len(set(reused[1:])) == 1 and reused[0] in (None, reused[1]), reused

    # One trial of a second sweep fails at run time (a TrainingArguments combination only transformers refuses):
    # recorded, and the sweep goes on.
    sweep2 = tmp_path / "sweep2"
    r = ftc("train", "-m", "+train.trainer_kwargs.dataloader_prefetch_factor=2,null", *QUICK,
            f"hydra.sweep.dir={sweep2}")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = {row["trial"]: row for row in csv.DictReader((sweep2 / "summary.csv").open())}
    assert rows["0"]["status"] == "failed" and rows["1"]["status"] == "completed"
    assert ": FAILED after " in r.stderr
    assert "dataloader_prefetch_factor" in json.loads((sweep2 / "0" / "trial.json").read_text())["error"]

    # A malformed data file is found at plan time: the sweep is refused before any trial starts, naming file:line.
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n' * 30 + "not json\n")
    r = ftc("train", "-m", "data=file", f"data.path={bad},ftc:sample/train.jsonl", *QUICK,
            f"hydra.sweep.dir={tmp_path / 'sweep3'}")
    assert r.returncode == 2 and f"{bad}:31: invalid JSON" in r.stderr

    # sweep-report on demand, by another metric.
    r = ftc("sweep-report", str(sweep), "metric=test_loss")
    assert r.returncode == 0 and "sorted by test_loss" in r.stdout


def test_sweep_over_budget_is_refused_before_any_trial(tmp_path):
    sweep = tmp_path / "sweep"
    r = ftc("train", "-m", "model=mistral_7b", "method=qlora", "hardware=rtx4090", "method.r=8,16",
            "budget.max_usd=0.05", f"hydra.sweep.dir={sweep}")
    assert r.returncode == 2
    assert "sweep refused before any trial started" in r.stderr and "budget.max_usd" in r.stderr
    assert not sweep.exists()


def test_search_sweeper_runs_its_trial_budget(tmp_path):
    sweep = tmp_path / "search"
    r = ftc("train", "-m", "hydra/sweeper=ftc_search", "hydra.sweeper.n_trials=2", "hydra.sweeper.metric=test_loss",
            "train.lr=tag(log,interval(1e-4,1e-2))", "method.r=choice(4,8)", *QUICK, f"hydra.sweep.dir={sweep}")
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads((sweep / "search.json").read_text())
    assert result["n_trials"] == 2 and result["completed"] == 2 and result["direction"] == "minimize"
    assert set(result["best"]["params"]) == {"train.lr", "method.r"}
    assert (sweep / "summary.csv").exists()


def test_search_sweeper_budget_refusal(tmp_path):
    r = ftc("train", "-m", "hydra/sweeper=ftc_search", "hydra.sweeper.n_trials=50", "method.r=choice(4,8)",
            "model=mistral_7b", "method=qlora", "hardware=rtx4090", "budget.max_usd=1",
            f"hydra.sweep.dir={tmp_path / 's'}")
    assert r.returncode == 2 and "search refused before any trial started" in r.stderr


def test_a_sweep_across_preference_objectives_ranks_by_preference_accuracy(tmp_path):
    """objective is a sweep axis like any other: DPO, ORPO and KTO on the same pairs, one table, ranked by the
    headline metric their trainers share (ftc/config/objectives.py)."""
    sweep = tmp_path / "sweep"
    r = ftc("train", "-m", "objective=dpo,orpo,kto", "data=sample_preference", *QUICK, f"hydra.sweep.dir={sweep}")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert sorted(row["trainer"] for row in rows) == ["dpo", "kto", "orpo"]
    assert all(row["status"] == "completed" and row["preference_accuracy"] for row in rows)
    assert "(preference_accuracy =" in (sweep / "summary.md").read_text()
