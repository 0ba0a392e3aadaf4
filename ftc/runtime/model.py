"""Load tokenizer and model for a Plan: hub id or local path, the offline tiny model, QLoRA, PEFT adapters."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Optional

from ftc.data import tokens
from ftc.data.tiny import TINY_CHAT_TEMPLATE, tiny_dir, train_tokenizer
from ftc.paths import atomic_path
from ftc.plan import ModelSpec, Plan

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def tiny_path(spec: ModelSpec) -> str:
    """Builds (once) the offline tiny model: BPE tokenizer trained on the sample data + random-init Llama."""
    target = tiny_dir(spec)
    if (target / "config.json").is_file():
        return str(target)
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = train_tokenizer(spec.vocab_size)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                        pad_token="<pad>", model_max_length=spec.max_position_embeddings)
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    tokenizer.add_bos_token = True  # Llama convention: sequences start with <s>
    config = LlamaConfig(
        vocab_size=spec.vocab_size, hidden_size=spec.hidden_size, num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads, num_key_value_heads=spec.num_kv_heads,
        intermediate_size=spec.intermediate_size, max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=spec.tie_word_embeddings, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        # std 0.02 (the Llama default) leaves frozen tied embeddings too small for the head to ever be confident;
        # 0.1 gives logits a usable range, so a LoRA-only run can learn the task in a minute.
        initializer_range=0.1,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with atomic_path(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return str(target)


def model_path(spec: ModelSpec) -> str:
    """The directory the model loads from: the offline tiny model, a local directory, or a hub id's snapshot in the
    Hugging Face cache, downloaded first when its weights are not there (``ftc.hub.download``: one line when it
    cannot be had)."""
    if spec.path == "ftc:tiny":
        return tiny_path(spec)
    from ftc import hub, pretrained

    if spec.path in pretrained.BUILT_IN:  # a real pretrained model ftc installs offline (ftc.pretrained)
        from ftc.runtime.pretrained import ensure

        return str(ensure(spec.path))

    return str(hub.download(spec.path, spec.revision)) if hub.is_hub_id(spec.path) else spec.path


def load_tokenizer(plan: Plan, path: Optional[str] = None) -> Any:
    spec = plan.model
    return tokens.load_tokenizer(path or model_path(spec), revision=spec.revision,
                                 trust_remote_code=spec.trust_remote_code, chat_template=spec.chat_template)


def torch_dtype(plan: Plan) -> Any:
    """The dtype the plan decided for the weights (method.weight_dtype)."""
    import torch

    return getattr(torch, DTYPES[plan.method.weight_dtype])


def load_base_model(plan: Plan, for_training: bool = True, device_map: Optional[Any] = None,
                    quantized: bool = True) -> Any:
    """The base model as the plan says: dtype, 4-bit NF4 quantization, attention kernel, remote code. ``quantized``
    False loads a QLoRA plan's base in its compute dtype instead (``ftc merge``: adapters merge into 16-bit
    weights)."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    spec, q = plan.model, plan.method.quantization if quantized else None
    kwargs: dict[str, Any] = {
        "revision": spec.revision,
        "trust_remote_code": spec.trust_remote_code,
        "dtype": torch_dtype(plan),
        "attn_implementation": spec.attn_implementation,  # decided by the compiler; never swapped here
        "use_safetensors": True,
    }
    if spec.stored_quantization == "mxfp4":  # the plan refuses QLoRA on it; PEFT trains no MXFP4 weights
        from transformers import Mxfp4Config

        kwargs["quantization_config"] = Mxfp4Config(dequantize=True)
    elif q:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=q.quant_type, bnb_4bit_use_double_quant=q.double_quant,
            bnb_4bit_compute_dtype=getattr(torch, DTYPES[q.compute_dtype]),
            bnb_4bit_quant_storage=getattr(torch, "uint8" if q.storage_dtype == "uint8" else DTYPES[q.storage_dtype]),
        )
    if device_map is not None:
        kwargs["device_map"] = device_map
    if spec.moe is not None and for_training:
        kwargs["output_router_logits"] = True  # the model adds its load-balancing loss (the plan's loss=model)
    model = AutoModelForCausalLM.from_pretrained(model_path(spec), **kwargs)
    if for_training and plan.train.gradient_checkpointing:
        model.config.use_cache = False
    return model


def lora_config(plan: Plan) -> Any:
    from peft import LoraConfig

    m = plan.method
    return LoraConfig(r=m.r, lora_alpha=m.alpha, lora_dropout=m.dropout, target_modules=list(m.target_modules),
                      target_parameters=list(m.target_parameters) or None, use_dora=m.use_dora, bias="none",
                      task_type="CAUSAL_LM")


def load_tuned(plan: Plan, run_dir: str) -> tuple[Any, Any]:
    """Base model + the run's saved adapter (or the full model for method=full), ready for inference."""
    run = Path(run_dir)
    safe_weights(run / ("adapter" if plan.method.peft else "model"))
    if plan.method.peft:
        from peft import PeftModel

        base = load_base_model(plan, for_training=False)
        with warnings.catch_warnings():  # PEFT 0.21 reads transformers' deprecated is_gradient_checkpointing
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            model = PeftModel.from_pretrained(base, str(run / "adapter"))
        tokenizer = load_tokenizer(plan, str(run / "adapter"))
    else:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(str(run / "model"), dtype=torch_dtype(plan), use_safetensors=True)
        tokenizer = load_tokenizer(plan, str(run / "model"))
    model.eval()
    return model, tokenizer


def safe_weights(directory: Path) -> None:
    """A run's tuned weights are loaded only from safetensors: a directory that holds pickled weights instead
    (``pytorch_model.bin``, ``adapter_model.bin``) is refused, never unpickled."""
    from ftc.errors import UserError

    if any(directory.glob("*.safetensors")):
        return
    pickled = sorted(p.name for p in directory.glob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl"))
    what = f"pickled weights ({', '.join(pickled)}), which ftc never loads" if pickled else "no weights"
    raise UserError(f"ftc: {directory} holds {what}: a run saves safetensors (re-save them as safetensors, or "
                    "re-run the training)")

