"""GPU tier: the selective loss and Liger's fused loss equal the model's own on CUDA, with less peak memory.
Skipped without CUDA (and the Liger case without liger-kernel: pip install 'ftc[gpu]')."""

from __future__ import annotations

import importlib.util

import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _setup():
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=151936, hidden_size=512, num_hidden_layers=4, num_attention_heads=8,
                         num_key_value_heads=2, intermediate_size=1024, tie_word_embeddings=True)
    model = Qwen2ForCausalLM(config).to("cuda", torch.bfloat16)
    model = get_peft_model(model, LoraConfig(r=16, target_modules="all-linear", task_type="CAUSAL_LM"))
    ids = torch.randint(0, 151936, (4, 1024), device="cuda")
    labels = ids.clone()
    labels[:, :800] = -100  # completion-only: the last 224 positions count
    return model, {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def _run(model, batch, how: str):
    from ftc.runtime.loss import selective_loss

    model.zero_grad()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    if how == "model":
        loss = model(**batch).loss
    else:
        loss = selective_loss(model, batch, 1024, fused=how == "liger")
    loss.backward()
    peak = torch.cuda.max_memory_allocated() - base
    grads = [p.grad.float().clone() for p in model.parameters() if p.grad is not None]
    return loss.float().item(), grads, peak


@pytest.mark.parametrize("how", ["selective", pytest.param("liger", marks=pytest.mark.skipif(
    importlib.util.find_spec("liger_kernel") is None, reason="liger-kernel not installed"))])
def test_equal_loss_and_less_memory_on_cuda(how):
    model, batch = _setup()
    ref_loss, ref_grads, ref_peak = _run(model, batch, "model")
    loss, grads, peak = _run(model, batch, how)
    assert loss == pytest.approx(ref_loss, rel=2e-2)  # bf16
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=5e-2, atol=5e-3)
    print(f"{how}: peak {peak / 1e9:.2f} GB vs the model's own loss {ref_peak / 1e9:.2f} GB")
    assert peak < 0.7 * ref_peak
