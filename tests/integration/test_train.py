"""Training on tiny models on the CPU: LoRA, QLoRA, golden losses, packing, resume, reload, merge, other archs."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")  # the unit tier runs without torch; this module needs it

from tests.conftest import plan_for  # noqa: E402 - after the importorskip above
from tests.integration.helpers import FAST, fast_plan, losses, save_tiny_arch  # noqa: E402

pytestmark = pytest.mark.integration

# Losses of the first 6 logged steps of FAST on the default experiment (seed 42, fp32, 2 CPU threads), on the
# sample as regenerated near-duplicate-free (ftc.data.make_sample, 2026-12-02).
GOLDEN_LOSSES = [7.544984817504883, 7.939081192016602, 7.141650199890137, 5.7074737548828125, 5.279990196228027,
                 4.53190803527832]


def _logits(model, tokenizer, text="### Instruction:\nTriage the ticket\n\n### Response:\n"):
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One LoRA run shared by several tests: (plan, figures, in-memory model, tokenizer)."""
    from ftc.runtime.train import train

    plan = fast_plan(tmp_path_factory.mktemp("lora"))
    figures, model, tokenizer = train(plan, plan.output_dir, return_model=True)
    model.eval()
    return plan, figures, model, tokenizer


def test_lora_trains_and_writes_adapter(trained):
    plan, figures, _, _ = trained
    run = Path(plan.output_dir)
    assert figures["steps"] == 6 and figures["tokens_seen"] > 0
    assert (run / "adapter" / "adapter_model.safetensors").stat().st_size > 1000
    config = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert sorted(config["target_modules"]) == sorted(plan.method.target_modules) and config["r"] == 16
    assert not (run / "adapter" / "training_args.bin").exists()  # no pickles in the artifact
    ls = losses(run)
    assert len(ls) >= 6 and ls[-1] < ls[0]


def test_golden_losses(trained):
    plan, _, _, _ = trained
    got = torch.tensor(losses(plan.output_dir)[:6])
    torch.testing.assert_close(got, torch.tensor(GOLDEN_LOSSES), rtol=2e-3, atol=2e-3)


def test_adapter_reload_reproduces_trained_model(trained):
    from ftc.runtime.model import load_tuned

    plan, _, model, tokenizer = trained
    reloaded, tok = load_tuned(plan, plan.output_dir)
    torch.testing.assert_close(_logits(reloaded, tok), _logits(model, tokenizer), rtol=1e-4, atol=1e-4)
    with reloaded.disable_adapter():
        base = _logits(reloaded, tok)
    assert not torch.allclose(base, _logits(reloaded, tok), atol=1e-3)  # the adapter does something


def test_merge_equals_base_plus_adapter(trained):
    from transformers import AutoModelForCausalLM

    from ftc import commands

    plan, _, model, tokenizer = trained
    out = commands.merge(plan.output_dir)
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert list(Path(out).glob("*.safetensors")) and (Path(out) / "tokenizer.json").exists()
    torch.testing.assert_close(_logits(merged, tokenizer), _logits(model, tokenizer), rtol=1e-4, atol=1e-4)


def test_generate_and_eval_commands(trained, capsys):
    from ftc import commands

    plan, _, _, _ = trained
    out = commands.generate(plan.output_dir, prompt="Hi, my package for order 1050 has not arrived yet.",
                            max_new_tokens=8)
    assert isinstance(out, str) and capsys.readouterr().out.strip() == out
    result = commands.evaluate(plan.output_dir, max_samples=4)
    assert result["tuned"]["samples"] == 4 and result["base"]["loss"] > result["tuned"]["loss"]
    assert (Path(plan.output_dir) / "eval.json").exists()


def test_early_stopping_is_wired_to_validation_loss(tmp_path):
    from transformers import EarlyStoppingCallback

    from ftc.runtime.train import make_callbacks, sft_config

    plan = fast_plan(tmp_path, ["train.early_stopping_patience=2"])
    config = sft_config(plan, tmp_path, False)
    assert config.load_best_model_at_end and config.metric_for_best_model == "eval_loss"
    assert config.save_steps == config.eval_steps
    assert any(isinstance(c, EarlyStoppingCallback) for c in make_callbacks(plan, tmp_path))
    assert not sft_config(plan, tmp_path, False, validation=False).load_best_model_at_end


@pytest.mark.parametrize("packing", [True, False])
def test_loss_masking_in_the_trainer_batches(trained, tmp_path, packing):
    """TRL receives our input_ids/completion_mask: labels are -100 exactly on prompt (and padding) tokens; with
    packing several whole examples share a row, without it rows are padded examples grouped by length."""
    from ftc.runtime.data import build
    from ftc.runtime.model import load_base_model, lora_config
    from ftc.runtime.train import sft_config, trainer_class

    _, _, _, tokenizer = trained
    plan = fast_plan(tmp_path, [f"data.packing={str(packing).lower()}"])
    splits = build(plan.data, tokenizer, plan.train.seed)
    trainer = trainer_class(plan)(model=load_base_model(plan), args=sft_config(plan, tmp_path, False),
                                  train_dataset=splits.train, eval_dataset=splits.validation,
                                  processing_class=tokenizer, peft_config=lora_config(plan))
    batch = next(iter(trainer.get_train_dataloader()))
    masks = {tuple(r["input_ids"]): r["completion_mask"] for r in splits.train}
    if packing:
        ids, labels, pos = batch["input_ids"][0], batch["labels"][0], batch["position_ids"][0]
        starts = (pos == 0).nonzero().flatten().tolist()
        assert len(starts) >= 2, "several examples packed in one row"
        segments = [(ids[a:b], labels[a:b]) for a, b in zip(starts, starts[1:] + [len(ids)])]
    else:
        assert batch["input_ids"].shape[0] == plan.batch.micro
        segments = []
        for ids, labels, attn in zip(batch["input_ids"], batch["labels"], batch["attention_mask"]):
            n = int(attn.sum())
            assert (labels[n:] == -100).all()  # padding never counts
            segments.append((ids[:n], labels[:n]))
        lengths = [len(x) for x, _ in segments]
        assert max(lengths) - min(lengths) < 40, "grouped by length: little padding"
    for ids, labels in segments:
        doc = tuple(ids.tolist())
        assert doc in masks, "each segment is one whole example"
        assert labels.tolist() == [t if m else -100 for t, m in zip(doc, masks[doc])]


def test_packed_attention_does_not_cross_examples(trained):
    """Logits of an example inside a packed row equal its logits alone (position_ids reset at boundaries)."""
    plan, _, model, tokenizer = trained
    a = tokenizer("### Instruction:\nfirst ticket here", return_tensors="pt")["input_ids"][0]
    b = tokenizer("### Instruction:\nsecond one", return_tensors="pt")["input_ids"][0]
    packed = torch.cat([a, b])[None]
    position_ids = torch.cat([torch.arange(len(a)), torch.arange(len(b))])[None]
    with torch.no_grad():
        together = model(input_ids=packed, position_ids=position_ids).logits[0, len(a):]
        alone = model(input_ids=b[None]).logits[0]
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-4)


def test_qlora_trains_with_4bit_base(tmp_path):
    from ftc.runtime.train import train

    plan = fast_plan(tmp_path, ["method=qlora", "train.max_steps=3"])
    figures, model, _ = train(plan, plan.output_dir, return_model=True)
    assert figures["steps"] == 3
    import bitsandbytes as bnb

    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    assert (Path(plan.output_dir) / "adapter" / "adapter_model.safetensors").exists()


@pytest.mark.parametrize("arch,targets", [("qwen2", {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                     "down_proj"}),
                                          ("gpt2", {"c_attn", "c_proj", "c_fc"})])
def test_other_architectures_with_automatic_targets(tmp_path, arch, targets):
    from ftc.runtime.train import train

    model_dir = save_tiny_arch(tmp_path / arch, arch)
    plan = fast_plan(tmp_path, ["model=local", f"model.path={model_dir}", "data.max_length=128",
                                "train.max_steps=3"])
    assert plan.model.family == arch and set(plan.method.target_modules) == targets
    figures = train(plan, plan.output_dir)
    assert figures["steps"] == 3
    config = json.loads((Path(plan.output_dir) / "adapter" / "adapter_config.json").read_text())
    assert set(config["target_modules"]) == targets


def test_nan_loss_stops_cleanly():
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from ftc.runtime.train import make_callbacks

    plan = plan_for([])
    cb = make_callbacks(plan, Path("/nonexistent"))[0]
    control, state = TrainerControl(), TrainerState()
    state.global_step, state.is_world_process_zero = 7, False
    cb.on_log(TrainingArguments(output_dir="/tmp/x", report_to=[]), state, control, logs={"loss": float("nan")})
    assert control.should_training_stop and cb.diverged == 7


def test_resume_after_crash_continues_from_checkpoint(tmp_path):
    """A run killed at step 5 (after checkpoint-3) resumes from it when re-run with the same output_dir."""
    run = tmp_path / "crashy"
    args = [sys.executable, "-m", "ftc.cli", "train", *FAST, "eval.enabled=false", f"output_dir={run}"]
    env = dict(os.environ, FTC_FAULT_INJECT_STEP="5")
    first = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode != 0 and (run / "checkpoints" / "checkpoint-3").is_dir()
    assert not (run / "adapter").exists()
    second = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["training"]["resumed_from"].endswith("checkpoint-3")
    assert summary["training"]["steps"] == 6
    events = [json.loads(x)["event"] for x in (run / "events.jsonl").read_text().splitlines()]
    assert events[:2] == ["start", "resume"] and events[-1] == "finished"
    kept = sorted(p.name for p in (run / "checkpoints").glob("checkpoint-*"))
    assert kept == ["checkpoint-3", "checkpoint-6"]  # train.save_total_limit=2: the last two


def test_cli_train_writes_the_run_dir_contract(tmp_path):
    run = tmp_path / "contract"
    r = subprocess.run([sys.executable, "-m", "ftc.cli", "train", *FAST, f"output_dir={run}"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    for name in ("config.yaml", "plan.json", "metrics.jsonl", "adapter/adapter_model.safetensors",
                 "adapter/tokenizer.json", "summary.json", "report.md", "loss.png", "events.jsonl", "data_card.md",
                 "data_tokens.png"):
        assert (run / name).exists(), name
    assert not list(run.rglob(".hydra"))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["eval"]["base"] and summary["eval"]["tuned"] and summary["actual"]["tokens_per_s"] > 0
    report = (run / "report.md").read_text()
    assert "## Evaluation on the held-out test split" in report
    assert "## Data" in report and "**Clean test set**: no training example" in report  # the data card, embedded
    assert "verdict" in summary["eval"]
    # The same command again: a completed run is never trained past its end, and none of its files is rewritten
    before = {name: (run / name).read_bytes() for name in ("summary.json", "plan.json", "config.yaml")}
    again = subprocess.run([sys.executable, "-m", "ftc.cli", "train", *FAST, f"output_dir={run}"], capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 2 and "holds a completed run" in again.stderr and "train.resume=false" in again.stderr
    assert {name: (run / name).read_bytes() for name in before} == before
    # train.resume=false starts again from step 0: the earlier checkpoints are moved aside, never resumed from
    from ftc.launch import start_or_resume
    from ftc.plan import Plan

    plan = Plan.load(str(run / "plan.json"))
    start_or_resume(dataclasses.replace(plan, train=dataclasses.replace(plan.train, resume=False)))
    assert not (run / "checkpoints").exists() and list(run.glob("checkpoints.before-*/checkpoint-6"))


def test_messy_data_trains_masked_and_the_report_says_what_was_found(tmp_path):
    """data=sample_messy (planted near-copies of test rows, personal data, German rows) with data.pii=mask: the run
    trains, and its report.md holds the data card with the clean-test-set statement and the counts per kind."""
    run = tmp_path / "messy"
    r = subprocess.run([sys.executable, "-m", "ftc.cli", "train", *FAST, "data=sample_messy", "data.pii=mask",
                        f"output_dir={run}"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    # the plan's warnings reach the train console, before any weight is loaded (the data line comes after loading)
    warned = r.stderr.find("ftc: the plan warns")
    assert warned >= 0 and "data.languages:" in r.stderr[warned:], r.stderr[:3000]
    assert warned < r.stderr.find("ftc: data ")
    report = (run / "report.md").read_text()
    assert "**Clean test set**: 20 training rows that (nearly) duplicate test or validation rows were dropped" in report
    assert "3 email" in report and "(`data.pii=mask`)" in report and "de 30" in report
    assert "anna.berg" not in report and "anna.berg" not in (run / "summary.json").read_text()


def test_bad_data_row_at_train_time_is_one_message_naming_file_and_line(tmp_path):
    bad = tmp_path / "tickets.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n' * 20 + '{"instruction": "a"}\n')
    r = subprocess.run([sys.executable, "-m", "ftc.cli", "train", *FAST, "data=file", f"data.path={bad}",
                        "data.max_length=128", f"output_dir={tmp_path / 'run'}"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2
    assert "tickets.jsonl:21: missing field 'output'" in r.stderr and "Traceback" not in r.stderr


def test_an_infinite_learning_rate_never_ends_done_and_saves_no_adapter(tmp_path):
    """train.lr=inf with nothing held out for validation (the plan refuses it; the runtime is tested past the plan):
    the first non-finite loss stops the run at its step, is recorded as NaN (never 0.0), and no adapter is
    published, so the run cannot look complete."""
    import math

    from ftc.errors import TrainingDiverged
    from ftc.launch.local import execute

    plan = fast_plan(tmp_path, ["data.validation_path=null", "data.validation_fraction=0", "train.save_steps=1"])
    assert plan.data.examples["validation"] == 0
    plan = dataclasses.replace(plan, train=dataclasses.replace(plan.train, lr=float("inf")))
    with pytest.raises(TrainingDiverged, match="NaN/inf at step 2"):
        execute(plan)
    run = Path(plan.output_dir)
    assert not (run / "adapter").exists() and not (run / "summary.json").exists()
    logged = losses(run)
    assert any(math.isnan(x) for x in logged) and 0.0 not in logged, logged
    checkpoints = sorted(p.name for p in (run / "checkpoints").glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-1"], checkpoints  # step 2's weights are not a checkpoint to resume from
    events = [json.loads(line)["event"] for line in (run / "events.jsonl").read_text().splitlines()]
    assert events[-2:] == ["diverged", "failed"], events


def test_the_last_step_is_always_logged_so_the_curve_ends_where_training_did(tmp_path):
    """8 steps logged every 5 logged steps 1 and 5 only: the curve stopped three steps short (issue 41)."""
    from ftc.runtime.train import train

    plan = fast_plan(tmp_path, ["train.max_steps=4", "train.logging_steps=3", "train.eval_steps=100",
                                "train.save_steps=100", "eval.max_samples=2"])
    train(plan, plan.output_dir)
    logged = [json.loads(x)["step"] for x in (Path(plan.output_dir) / "metrics.jsonl").read_text().splitlines()
              if '"loss"' in x]
    assert logged == [1, 3, 4]  # the first step (logging_first_step), every third, and the last


def test_the_base_model_is_scored_once_for_the_same_base_test_set_and_settings(trained, monkeypatch):
    """A sweep's trials share the base model, the test examples and the evaluation settings: the base is scored by
    the first evaluation and reused by the next (each trial re-evaluated it, 3-4 min a trial), and says so."""
    from ftc.runtime import evaluate

    plan, _, _, _ = trained
    first = evaluate.evaluate_run(plan, plan.output_dir, limit=4)
    calls = []
    real = evaluate.score
    monkeypatch.setattr(evaluate, "score", lambda *a, **k: calls.append(1) or real(*a, **k))
    prompted_calls = []
    real_prompted = evaluate.score_prompted
    monkeypatch.setattr(evaluate, "score_prompted", lambda *a, **k: prompted_calls.append(1) or real_prompted(*a, **k))
    second = evaluate.evaluate_run(plan, plan.output_dir, limit=4)
    assert len(calls) == 1  # the tuned model only
    assert second["base"] == first["base"] and second["base_reused_from"].endswith(".json")
    assert not prompted_calls and second["prompted"] == first["prompted"]  # the prompted base is the same model
    third = evaluate.evaluate_run(plan, plan.output_dir, limit=3)  # other settings: scored again
    assert len(calls) == 3 and "base_reused_from" not in third
