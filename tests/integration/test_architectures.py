"""A zoo of tiny random models of real Hugging Face architectures, built offline and loaded with model=local:
the plan's targets, trainable parameters and parameter count are what PEFT and the model really have, and each
one trains on the CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from tests.conftest import plan_for  # noqa: E402
from tests.integration.helpers import FAST  # noqa: E402

pytestmark = pytest.mark.integration

ARCHS = ["llama", "mistral", "qwen2", "phi3", "gemma2", "gpt2", "gpt_neox", "opt", "falcon", "bloom"]


def _config(arch: str, tok):
    import transformers as tf

    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    small = dict(vocab_size=1024, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, **ids)
    return {
        "llama": lambda: tf.LlamaConfig(**small, num_key_value_heads=2, intermediate_size=128,
                                        max_position_embeddings=512),
        "mistral": lambda: tf.MistralConfig(**small, num_key_value_heads=2, intermediate_size=128,
                                            max_position_embeddings=512),
        "qwen2": lambda: tf.Qwen2Config(**small, num_key_value_heads=2, intermediate_size=128,
                                        max_position_embeddings=512, tie_word_embeddings=True),
        "phi3": lambda: tf.Phi3Config(**small, num_key_value_heads=4, intermediate_size=128,
                                      max_position_embeddings=512),
        "gemma2": lambda: tf.Gemma2Config(**small, num_key_value_heads=2, head_dim=16, intermediate_size=128,
                                          max_position_embeddings=512),
        "gpt2": lambda: tf.GPT2Config(vocab_size=1024, n_embd=64, n_layer=2, n_head=4, n_positions=512, **ids),
        "gpt_neox": lambda: tf.GPTNeoXConfig(**small, intermediate_size=128, max_position_embeddings=512),
        "opt": lambda: tf.OPTConfig(vocab_size=1024, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                    ffn_dim=128, max_position_embeddings=512, word_embed_proj_dim=64, **ids),
        "falcon": lambda: tf.FalconConfig(**small, max_position_embeddings=512),
        "bloom": lambda: tf.BloomConfig(vocab_size=1024, hidden_size=64, n_layer=2, n_head=4, **ids),
    }[arch]()


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftc.runtime.model import tiny_path

    tok = AutoTokenizer.from_pretrained(tiny_path(plan_for([]).model))
    root = tmp_path_factory.mktemp("zoo")
    for arch in ARCHS:
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(_config(arch, tok))
        model.save_pretrained(root / arch, safe_serialization=True)
        tok.save_pretrained(root / arch)
    return root


def _peft_truth(path: Path, targets="all-linear"):
    """What PEFT actually wraps, and the trainable parameters it creates, for r=16."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path)
    params = sum(p.numel() for p in model.parameters())
    peft = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=targets, task_type="CAUSAL_LM"))
    leaves = {n.rsplit(".", 1)[-1] for n in peft.targeted_module_names}
    trainable = sum(p.numel() for p in peft.parameters() if p.requires_grad)
    return leaves, trainable, params, type(model)._supports_sdpa


@pytest.mark.parametrize("arch", ARCHS)
def test_plan_matches_what_peft_wraps(zoo, arch):
    plan = plan_for(["model=local", f"model.path={zoo / arch}", "hardware=cpu"])
    assert plan.errors == (), plan.errors
    leaves, trainable, params, sdpa = _peft_truth(zoo / arch)
    assert set(plan.method.target_modules) == leaves
    assert plan.method.trainable_params == trainable
    assert plan.model.params == params
    assert plan.model.attn_implementation == ("sdpa" if sdpa else "eager")


def test_the_output_head_is_an_expressible_target(zoo):
    """GPT-NeoX stores its head as embed_out; transformers 5 loads it as lm_head, the name PEFT matches."""
    plan = plan_for(["model=local", f"model.path={zoo / 'gpt_neox'}",
                     "method.target_modules=[query_key_value,lm_head]"])
    assert plan.errors == (), plan.errors
    leaves, trainable, _, _ = _peft_truth(zoo / "gpt_neox", ["query_key_value", "lm_head"])
    assert leaves == {"query_key_value", "lm_head"}
    assert plan.method.trainable_params == trainable


def test_targets_the_model_lacks_are_refused_with_its_modules(zoo):
    plan = plan_for(["model=local", f"model.path={zoo / 'opt'}",
                     "method.target_modules=[q_proj,k_proj,v_proj,o_proj,gate_proj]"])
    error = next(e for e in plan.errors if e.startswith("method.target_modules"))
    assert "['o_proj', 'gate_proj'] match no module" in error and "fc1" in error and "out_proj" in error


def test_gemma2_plans_eager_attention_and_its_own_loss(zoo):
    plan = plan_for(["model=local", f"model.path={zoo / 'gemma2'}"])
    assert plan.model.attn_implementation == "eager" and plan.train.loss == "model"
    assert any("no SDPA path" in d for d in plan.decisions)
    assert any("final_logit_softcapping" in d for d in plan.decisions)


def test_no_sdpa_list_is_safe_for_the_installed_transformers():
    """Every causal LM of the installed transformers without an SDPA path is planned as eager (else transformers
    refuses the plan's attention at load); an entry that gained SDPA is only reported (python -m tests.drift)."""
    import warnings

    from tests.drift import no_sdpa_drift

    drift = no_sdpa_drift()
    assert drift.unsafe == (), f"add to conf/families.yaml _no_sdpa: {drift.unsafe}"
    if drift.stale:
        warnings.warn(f"transformers gained SDPA for {drift.stale}: ftc still plans eager for them (safe, slower); "
                      "drop them from _no_sdpa once pyproject's lower bound has it", UserWarning, stacklevel=1)


def test_tokens_are_counted_with_the_models_tokenizer(zoo):
    """The plan counts tokens with tokenizer.json (no torch); training then sees the same counts."""
    from ftc.runtime.data import build
    from ftc.runtime.model import load_tokenizer

    plan = plan_for(["model=local", f"model.path={zoo / 'qwen2'}"])
    assert any("counted with the model's tokenizer" in d for d in plan.decisions)
    splits = build(plan.data, load_tokenizer(plan), plan.train.seed)
    measured = splits.report.tokens["train"] / splits.report.examples["train"]
    assert plan.data.tokens_per_example == pytest.approx(measured, rel=0.03)


@pytest.mark.parametrize("arch", ARCHS)
def test_trains_on_cpu(zoo, arch, tmp_path):
    from ftc.runtime.train import train

    overrides = ["model=local", f"model.path={zoo / arch}", *FAST, "train.max_steps=2", "train.eval_steps=2",
                 "train.save_steps=2", "train.global_batch_size=4", "eval.enabled=false", f"output_dir={tmp_path}"]
    plan = plan_for(overrides)
    assert plan.errors == (), plan.errors
    import dataclasses

    plan = dataclasses.replace(plan, output_dir=str(tmp_path))
    figures = train(plan, str(tmp_path))
    assert figures["steps"] == 2 and figures["train_loss"] > 0
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert set(saved["target_modules"]) == set(plan.method.target_modules)


def test_optimizer_and_scheduler_names_are_ones_the_installed_transformers_accepts():
    import warnings

    from tests.drift import trainer_names_drift

    for what, drift in trainer_names_drift().items():
        assert drift.unsafe == (), f"ftc/config/schema.py accepts {what} transformers refuses: {drift.unsafe}"
        if drift.stale:
            warnings.warn(f"transformers has {what} ftc refuses: {drift.stale}", UserWarning, stacklevel=1)
