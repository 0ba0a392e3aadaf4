"""The selective, chunked loss equals the model's own loss: value and gradients, on every method it serves."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.integration


def _model(arch: str, hidden: int = 48):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    common = dict(vocab_size=300, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, intermediate_size=2 * hidden, max_position_embeddings=128,
                  initializer_range=0.1)
    if arch == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**common, tie_word_embeddings=True))
    return LlamaForCausalLM(LlamaConfig(**common, tie_word_embeddings=False))


def _batch():
    """Two rows of different lengths (right padding), completion-only labels (prompt and padding are -100)."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 300, (2, 24), generator=g)
    attention = torch.ones_like(ids)
    attention[1, 17:] = 0
    labels = ids.clone()
    labels[:, :10] = -100
    labels[attention == 0] = -100
    return {"input_ids": ids, "attention_mask": attention, "labels": labels}


def _peft(model, method: str):
    from peft import LoraConfig, get_peft_model

    if method == "full":
        return model
    targets = ["q_proj", "v_proj", "down_proj"] + (["lm_head"] if method == "lora_head" else [])
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=targets, use_dora=method == "dora",
                        task_type="CAUSAL_LM")
    model = get_peft_model(model, config)
    for name, p in model.named_parameters():  # non-zero B so adapter gradients flow through both paths
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
    return model


def _loss_and_grads(model, batch, use_selective: bool, chunk: int, num_items=None):
    from ftc.runtime.loss import selective_loss

    model.zero_grad()
    if use_selective:
        loss = selective_loss(model, batch, chunk, num_items)
    else:
        kwargs = {"num_items_in_batch": num_items} if num_items is not None else {}
        loss = model(**batch, use_cache=False, **kwargs).loss
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}
    return loss.detach(), grads


def _assert_same(model, batch, chunk=5, num_items=None):
    expected, want = _loss_and_grads(model, batch, False, chunk, num_items)
    got, have = _loss_and_grads(model, batch, True, chunk, num_items)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert want.keys() == have.keys() and want
    for name in want:
        torch.testing.assert_close(have[name], want[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("method", ["lora", "dora", "lora_head", "full"])
def test_selective_loss_equals_the_models_own(arch, method):
    _assert_same(_peft(_model(arch), method), _batch())


def test_equal_with_gradient_checkpointing_and_one_big_chunk():
    model = _peft(_model("llama"), "lora")
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    _assert_same(model, _batch(), chunk=4096)


def test_equal_when_normalized_over_an_accumulated_batch():
    """Trainer passes num_items_in_batch (completion tokens of all accumulated micro batches)."""
    _assert_same(_peft(_model("qwen2"), "lora"), _batch(), num_items=torch.tensor(40))


def test_validation_loss_without_gradients():
    from ftc.runtime.loss import selective_loss

    model, batch = _peft(_model("llama"), "lora"), _batch()
    with torch.no_grad():
        torch.testing.assert_close(selective_loss(model, batch, 3), model(**batch).loss, rtol=1e-5, atol=1e-6)


def test_equal_with_4bit_qlora_on_cpu(tmp_path):
    """bitsandbytes NF4 weights (CPU backend) under LoRA: same numbers through both paths."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    _model("llama", hidden=128).save_pretrained(tmp_path, safe_serialization=True)  # bnb's CPU blocks need 128
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(tmp_path, quantization_config=quant, dtype=torch.float32)
    _assert_same(_peft(model, "lora"), _batch())


def test_no_full_logits_are_built():
    """The head runs on the counted positions only, a chunk at a time."""
    from ftc.runtime.loss import _parts, selective_loss

    model, batch = _peft(_model("llama"), "lora"), _batch()
    _, head = _parts(model)
    rows = []
    hook = head.register_forward_hook(lambda m, i, o: rows.append(o.shape[0]))
    selective_loss(model, batch, 4).backward()
    hook.remove()
    counted = int((batch["labels"][:, 1:] != -100).sum())
    assert sum(rows) == 2 * counted  # forward once and once more in the backward (recomputed), nothing else
    assert max(rows) == 4 and len(rows[: len(rows) // 2]) == -(-counted // 4)


def test_equal_without_chunk_recomputation():
    """Under ZeRO-3 the plan keeps the counted positions' logits instead of recomputing chunks: same numbers."""
    from ftc.runtime.loss import selective_loss

    model, batch = _peft(_model("qwen2"), "lora"), _batch()
    expected, want = _loss_and_grads(model, batch, False, 5)
    model.zero_grad()
    loss = selective_loss(model, batch, 5, recompute=False)
    loss.backward()
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-6)
    for name, p in model.named_parameters():
        if name in want:
            torch.testing.assert_close(p.grad, want[name], rtol=1e-4, atol=1e-6, msg=name)
