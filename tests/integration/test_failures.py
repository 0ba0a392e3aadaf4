"""A run that fails never looks complete: one message on the console (no traceback), the traceback in train.log,
no summary.json; non-finite results make a failed run, not a verdict."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from tests.integration.helpers import FAST, fast_plan

pytestmark = pytest.mark.integration


def test_a_library_error_during_training_is_one_message_naming_train_log(tmp_path):
    run = tmp_path / "run"
    # transformers' TrainingArguments refuses this combination (a prefetch factor without loader workers): a real
    # library error inside `ftc train`, raised before any weights load.
    r = subprocess.run([sys.executable, "-m", "ftc.cli", "train", *FAST, f"output_dir={run}",
                        "+train.trainer_kwargs.dataloader_prefetch_factor=2"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stdout + r.stderr and "HYDRA_FULL_ERROR" not in r.stderr
    assert "ftc: training failed: ValueError:" in r.stderr and "dataloader_prefetch_factor" in r.stderr
    assert f"full log: {run / 'train.log'}" in r.stderr
    assert "Traceback" in (run / "train.log").read_text()
    assert not (run / "summary.json").exists() and not (run / "adapter").exists()
    events = [json.loads(line)["event"] for line in (run / "events.jsonl").read_text().splitlines()]
    assert events[-1] == "failed"


def test_non_finite_results_fail_the_run_and_the_report_says_so(tmp_path):
    from ftc.errors import RunFailed
    from ftc.runtime.report import finish

    plan = fast_plan(tmp_path, ["eval.enabled=false"])
    with pytest.raises(RunFailed, match="train loss nan"):
        finish(plan, {"train_loss": math.nan, "steps": 6}, 0.0)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and "train loss nan" in summary["failure"]
    assert (tmp_path / "run" / "report.md").read_text().splitlines()[2].startswith("**FAILED:** non-finite")


def test_a_planted_secret_reaches_no_console_and_no_file(tmp_path):
    secret = "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY"
    planted = [f"launcher.storage_path=s3://AKIAIOSFODNN7EXAMPLE:{secret}@bucket/runs",
               f'data.test_path="https://host/t.jsonl?sig={secret}"']
    seen = []
    for command in (["plan"], ["plan", "--json"], ["train", f"output_dir={tmp_path / 'run'}"]):
        r = subprocess.run([sys.executable, "-m", "ftc.cli", *command, *planted], capture_output=True, text=True,
                           timeout=300, cwd=tmp_path)
        assert r.returncode == 2 and "secrets are never stored" in r.stdout + r.stderr, r.stderr
        seen.append(r.stdout + r.stderr)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert not any(secret in text for text in seen + [p.read_text(errors="replace") for p in files])
    assert "Traceback" not in "".join(seen)
