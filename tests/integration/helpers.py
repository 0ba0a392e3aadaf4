"""Tiny-model helpers for the integration tier: fast settings, in-process runs, other architectures."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from tests.conftest import plan_for

FAST = ["train.max_steps=6", "train.epochs=null", "train.logging_steps=1", "train.eval_steps=3",
        "train.save_steps=3", "eval.max_samples=8", "eval.max_new_tokens=12", "train.report_to=[none]",
        "train.global_batch_size=8"]


def fast_plan(tmp_path: Path, overrides: list[str] | None = None, name: str = "run"):
    run = tmp_path / name
    plan = plan_for(FAST + list(overrides or []) + [f"output_dir={run}"])
    assert plan.errors == (), plan.errors
    run.mkdir(parents=True, exist_ok=True)
    plan = dataclasses.replace(plan, output_dir=str(run))
    (run / "plan.json").write_text(plan.to_json())
    return plan


def losses(run_dir: str | Path) -> list[float]:
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(x)["loss"] for x in lines if '"loss"' in x]


def save_tiny_arch(target: Path, arch: str) -> Path:
    """A tiny random-init Qwen2 or GPT-2 with the tiny tokenizer, saved like a downloaded model."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM

    from ftc.runtime.model import tiny_path

    tiny = plan_for([]).model
    tokenizer = AutoTokenizer.from_pretrained(tiny_path(tiny))
    torch.manual_seed(0)
    if arch == "qwen2":
        config = Qwen2Config(vocab_size=1024, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, intermediate_size=128, max_position_embeddings=512,
                             tie_word_embeddings=True, initializer_range=0.1)
        model = Qwen2ForCausalLM(config)
    else:
        config = GPT2Config(vocab_size=1024, n_embd=64, n_layer=2, n_head=4, n_positions=512, initializer_range=0.1,
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
        model = GPT2LMHeadModel(config)
    model.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
    return target


def wait_for_logged_steps(run: Path, steps: int, seconds: float, proc: Any = None) -> None:
    """Until ``run``'s metrics.jsonl has logged ``steps`` training losses: a run under way. Returns early when
    ``proc`` (the run's Popen) has exited, so the caller's asserts say why, and after ``seconds`` at most (a hang
    guard far above the run's time, not a timing assumption)."""
    deadline = time.time() + seconds
    while time.time() < deadline and (proc is None or proc.poll() is None):
        metrics = run / "metrics.jsonl"
        if metrics.exists() and sum('"loss"' in line for line in metrics.read_text().splitlines()) >= steps:
            return
        time.sleep(0.2)


def hub_dataset(home: Path, repo: str, files: dict[str, list[dict]], card: str | None = None,
                sha: str = "d" * 40) -> Path:
    """``home``/hub holding the dataset ``repo`` at refs/main as huggingface_hub stores a download: ``files`` by
    path in the repository (``.parquet`` written with pyarrow, else JSONL) and a README.md with ``card`` (a YAML
    header) when given. Read with HF_HOME=home and HF_HUB_OFFLINE=1, an id resolves exactly as after a download."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    repo_dir = home / "hub" / ("datasets--" + repo.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / sha
    for name, rows in files.items():
        target = snapshot / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".parquet"):
            pq.write_table(pa.Table.from_pylist(rows), target)
        else:
            target.write_text("".join(json.dumps(r) + "\n" for r in rows))
    if card is not None:
        (snapshot / "README.md").write_text(f"---\n{card}\n---\n# {repo}\n")
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(sha)
    return snapshot
