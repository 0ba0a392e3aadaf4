"""The built-in tiny model's (``model.path=ftc:tiny``) home and tokenizer: a directory under the cache named by its
recipe (its shape and the sample data its BPE tokenizer is trained on). ``ftc.runtime.model.tiny_path`` builds the
model there; ``ftc plan`` counts tokens with the same tokenizer, trained here with the ``tokenizers`` library alone
(no torch) when the model is not built yet."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ftc.paths import atomic_path, cache_root, package_root

SPECIALS = ("<unk>", "<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>")
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

SHAPE = ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size", "vocab_size",
         "max_position_embeddings", "tie_word_embeddings")


def corpus() -> list[Path]:
    """The sample files the tiny tokenizer is trained on."""
    return sorted((package_root() / "assets" / "sample").glob("*.jsonl"))


def tiny_dir(model: Any) -> Path:
    """The build directory of the tiny model of ``model``'s shape (a ModelSpec or the model config section)."""
    recipe = json.dumps({"v": 4, "spec": [getattr(model, k) for k in SHAPE],
                         "corpus": [hashlib.sha256(p.read_bytes()).hexdigest() for p in corpus()]})
    return cache_root() / "models" / ("tiny-" + hashlib.sha256(recipe.encode()).hexdigest()[:12])


def train_tokenizer(vocab_size: int) -> Any:
    """The tiny model's byte-level BPE tokenizer (a ``tokenizers.Tokenizer``), trained on the sample data."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from ftc.data.formats import alpaca_prompt

    texts = []
    for p in corpus():
        for line in p.read_text().splitlines():
            row = json.loads(line)
            texts.append(alpaca_prompt(row["instruction"], row["input"], "alpaca") + row["output"])
    texts.append(alpaca_prompt("x", "", "alpaca") + alpaca_prompt("x", "", "plain"))
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIALS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return tok


def tokenizer_dir(model: Any) -> Path:
    """A directory with the tiny model's tokenizer as training will load it (tokenizer.json with BOS added, the
    special tokens, the chat template): the built model's, else one written once beside it for the plan."""
    built = tiny_dir(model)
    if (built / "tokenizer.json").is_file():
        return built
    target = built.with_name(built.name + ".tokenizer")
    if (target / "tokenizer.json").is_file():
        return target
    from tokenizers.processors import TemplateProcessing

    tok = train_tokenizer(model.vocab_size)
    bos = tok.token_to_id("<s>")
    tok.post_processor = TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)])
    with atomic_path(target) as tmp:
        tmp.mkdir(parents=True)
        tok.save(str(tmp / "tokenizer.json"))
        (tmp / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>",
                                                                "unk_token": "<unk>", "pad_token": "<pad>"}))
        (tmp / "chat_template.jinja").write_text(TINY_CHAT_TEMPLATE)
    return target
