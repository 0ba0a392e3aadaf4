"""A library's failure becomes one message with the likely cause and fix ftc knows, and the traceback in train.log."""

from __future__ import annotations

import pytest

from ftc.runtime.failures import explain

pytestmark = pytest.mark.unit


def _raised(error: Exception) -> Exception:
    try:
        raise error
    except Exception as e:
        return e


def test_a_known_peft_refusal_gets_its_cause_and_fix(tmp_path):
    e = _raised(ValueError("Target module GptOssTopKRouter() is not supported. Currently, only the following "
                           "modules are supported: `torch.nn.Linear`, `torch.nn.Embedding`..."))
    message = str(explain(e, tmp_path))
    assert message.startswith("ftc: training failed: ValueError: Target module GptOssTopKRouter()")
    assert "likely cause: PEFT cannot put LoRA" in message and "fix: method.target_modules=" in message
    assert f"full log: {tmp_path / 'train.log'}" in message
    log = (tmp_path / "train.log").read_text()
    assert "Traceback (most recent call last)" in log and "GptOssTopKRouter" in log


def test_an_unknown_failure_still_names_the_log_and_is_cut_short(tmp_path):
    message = str(explain(_raised(RuntimeError("x" * 2000)), tmp_path, what="evaluation"))
    assert message.startswith("ftc: evaluation failed: RuntimeError: xxx") and "likely cause" not in message
    assert len(message.splitlines()[0]) < 500 and "train.log" in message
