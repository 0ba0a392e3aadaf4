"""Faults a run survives, each as a user meets it: a second run into the same directory, a damaged data cache,
a kill during a checkpoint write, a full disk while saving, and a preemption notice (SIGTERM). After each, the same
`ftc train` command completes the run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.helpers import FAST, wait_for_logged_steps


def ftc_train(run: Path, *extra: str, env: dict | None = None, wait: bool = True):
    args = [sys.executable, "-m", "ftc.cli", "train", *FAST, f"output_dir={run}", *extra]
    if not wait:
        return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, **(env or {})})
    return subprocess.run(args, capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})})


def events(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]


def complete(run: Path) -> bool:
    summary = run / "summary.json"
    return summary.exists() and json.loads(summary.read_text())["status"] == "completed" and \
        (run / "adapter" / "adapter_model.safetensors").exists()


@pytest.mark.integration
def test_a_second_train_into_a_running_runs_directory_is_refused(tmp_path):
    from ftc.paths import run_lock

    run = tmp_path / "run"
    with run_lock(run):  # as a first `ftc train` holds it
        r = ftc_train(run)
        assert r.returncode == 2 and "is in use by a running ftc train (pid" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr and not (run / "plan.json").exists()
    assert (run / ".lock").read_text() == ""  # released: the next run may start


@pytest.mark.integration
def test_a_damaged_tokenized_cache_entry_is_detected_and_rebuilt(tmp_path, monkeypatch):
    from ftc.runtime.data import build
    from ftc.runtime.model import load_tokenizer
    from tests.conftest import plan_for

    monkeypatch.setenv("FTC_CACHE", str(tmp_path / "cache"))
    plan = plan_for([])
    tokenizer = load_tokenizer(plan)
    import gc

    first = build(plan.data, tokenizer, plan.train.seed)
    entry, examples, rows, last = Path(first.report.cache), first.report.examples, len(first.train), first.train[-1]
    del first
    gc.collect()  # its datasets memory-map the files cut short below
    arrow = next((entry / "train").glob("*/*.arrow"))
    arrow.write_bytes(arrow.read_bytes()[: arrow.stat().st_size // 2])  # a copy cut short
    again = build(plan.data, tokenizer, plan.train.seed)
    assert not again.report.cache_hit and again.report.examples == examples
    assert len(again.train) == rows and again.train[-1] == last
    del again
    gc.collect()
    (entry / "complete.json").write_text("{not json")  # a metadata file cut short
    assert not build(plan.data, tokenizer, plan.train.seed).report.cache_hit
    assert build(plan.data, tokenizer, plan.train.seed).report.cache_hit  # and the rebuilt entry is used


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["kill", "enospc"])
def test_a_checkpoint_cut_short_is_never_resumed_from(tmp_path, fault):
    """kill -9 (or a full disk) while checkpoint-6 is written: the run stops, checkpoint-3 stays intact, and the
    same command resumes from checkpoint-3, not from the partial checkpoint-6."""
    run = tmp_path / "run"
    r = ftc_train(run, "train.max_steps=9", env={"FTC_FAULT_INJECT_SAVE": f"{fault}:6"})
    assert r.returncode == (137 if fault == "kill" else 1), r.stderr[-2000:]
    if fault == "enospc":
        assert "No space left on device" in r.stderr and "disk holding the run directory" in r.stderr
        assert "Traceback" not in r.stderr
    assert (run / "checkpoints" / "checkpoint-3" / "trainer_state.json").exists()
    assert not (run / "checkpoints" / "checkpoint-6" / "trainer_state.json").exists()
    assert not complete(run)
    r = ftc_train(run, "train.max_steps=9")
    assert r.returncode == 0, r.stderr[-2000:]
    assert complete(run)
    resumed = [e for e in events(run) if e["event"] == "resume"]
    assert resumed and resumed[-1]["checkpoint"].endswith("checkpoint-3")


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_the_same_command_resumes(tmp_path):
    run = tmp_path / "run"
    longer = ["train.max_steps=20", "train.eval_steps=10", "train.save_steps=10"]
    proc = ftc_train(run, *longer, wait=False)
    wait_for_logged_steps(run, 3, 900, proc)  # a few training steps, then the preemption notice
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 143, err[-2000:]
    assert "preempted by SIGTERM at step" in err and "resume" in err and "Traceback" not in err
    stopped = [e for e in events(run) if e["event"] == "preempted"][-1]
    assert 3 <= stopped["step"] < 20 and stopped["checkpoint"].endswith(f"checkpoint-{stopped['step']}")
    assert stopped["within_grace"] is True and stopped["grace_s"] == 30
    assert (Path(stopped["checkpoint"]) / "trainer_state.json").exists() and not complete(run)
    r = ftc_train(run, *longer)
    assert r.returncode == 0, r.stderr[-2000:]
    assert complete(run)
    assert [e for e in events(run) if e["event"] == "resume"][-1]["checkpoint"] == stopped["checkpoint"]


@pytest.mark.integration
def test_a_save_slower_than_the_grace_period_is_said(tmp_path):
    """The save after a preemption notice outlasting train.preemption_grace_s is recorded and named in the message,
    with the fix: on a real spot preemption that checkpoint would not exist."""
    from types import SimpleNamespace

    from ftc.errors import RunStopped
    from ftc.runtime.train import _stopped

    stopper = SimpleNamespace(signal="SIGTERM", step=7, received_at=time.time() - 45)
    with pytest.raises(RunStopped, match=r"longer than train.preemption_grace_s=30: a provider would have killed"):
        _stopped(stopper, tmp_path, 30.0)
    event = events(tmp_path)[-1]
    assert event["event"] == "preempted" and event["within_grace"] is False and event["seconds_after_signal"] >= 45
