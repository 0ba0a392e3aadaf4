"""The conversion of ftc's built-in pretrained models (``ftc.pretrained``): the package's GGUF, read and
dequantized by transformers (with the ``gguf`` package), copied into a model built from its config (transformers
will not save a GGUF-loaded model as it stands) and saved once into ftc's cache as safetensors with its tokenizer
and chat template."""

from __future__ import annotations

from pathlib import Path

from ftc import pretrained
from ftc.errors import UserError
from ftc.paths import atomic_path


def ensure(path: str) -> Path:
    """The converted model directory of the built-in ``path`` (``ftc:smollm2-135m``), converting it the first
    time; a missing package is one line naming the extra."""
    target = pretrained.converted_dir(path)
    if (target / "model.safetensors").is_file():
        return target
    gguf = pretrained.gguf_path(path)
    if gguf is None:
        raise UserError(pretrained.install_note(path) or f"ftc: {path}: its GGUF is missing")
    import sys

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftc.runtime.export import library_output_to

    b = pretrained.BUILT_IN[path]
    print(f"ftc: converting {b.repo} from {b.package}'s {gguf.name} into {target} (once)", file=sys.stderr)
    with library_output_to(target.parent / f"{target.name}.conversion.log"):  # the converter's bars and warnings
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = loaded.config
    for gguf_only in ("quantization_config", "_name_or_path"):  # the GGUF's loading options, not the model's
        if hasattr(config, gguf_only):
            delattr(config, gguf_only)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    with atomic_path(target) as tmp, library_output_to(target.parent / f"{target.name}.conversion.log"):
        model.save_pretrained(tmp, safe_serialization=True)  # its "Writing model shards" bar goes to the log too
        tokenizer.save_pretrained(tmp)
    return target
