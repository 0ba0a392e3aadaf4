"""Tokens of an example as training builds them, with one home for the rules ``ftc plan`` and ``ftc train`` share:
BOS where the tokenizer uses one, EOS after every completion, and truncation to ``max_length`` (the prompt's end kept
for preference and labelled rows, at most ``max_prompt_length``).

``ftc train`` tokenizes with the transformers tokenizer (``load_tokenizer``). transformers does not always read a
model's ``tokenizer.json`` as it is: a model-specific class (``Qwen2Tokenizer``, ``LlamaTokenizer``...) rebuilds the
pipeline from its own code, and which class loads depends on config.json as well. So ``ftc plan`` asks transformers
once per tokenizer (``described``: in a child process when torch is not loaded, since importing transformers'
tokenizer loader imports torch) and saves the pipeline it built as plain files; ``FileTokenizer`` then reads those
through the ``tokenizers`` library alone, and the plan counts the tokens of every selected example exactly, before any
weight is downloaded.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ftc.data.formats import FORMATS


def render_chat(template: str, messages: list[dict], add_generation_prompt: bool, **special: Any) -> str:
    """Renders a chat template as transformers does (sandboxed Jinja, trim_blocks, lstrip_blocks, its helpers)."""
    from datetime import datetime

    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise ValueError(message)

    def tojson(x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None,
               sort_keys: bool = False) -> str:
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                            **special)


FILE_TOKENIZER_READS = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


def tokenizer_files(model_dir: str | Path) -> dict[str, bytes]:
    """The files of a tokenizer directory ``FileTokenizer`` reads, as bytes (what a worker on another machine is
    sent to build the same tokenizer)."""
    d = Path(model_dir)
    return {name: (d / name).read_bytes() for name in FILE_TOKENIZER_READS if (d / name).is_file()}


class FileTokenizer:
    """A tokenizer directory (as ``described`` saves one) through the ``tokenizers`` library: the subset of a
    transformers tokenizer the data pipeline calls (``__call__``, ``bos_token_id``, ``eos_token_id``,
    ``apply_chat_template``); ``chat_template`` replaces the directory's own (``model.chat_template``). ``files``:
    the directory's files as ``tokenizer_files`` read them, in place of the directory."""

    def __init__(self, model_dir: Optional[str | Path], chat_template: Optional[str] = None,
                 files: Optional[dict[str, bytes]] = None) -> None:
        from tokenizers import Tokenizer

        files = tokenizer_files(model_dir) if files is None else files
        if "tokenizer.json" not in files:
            raise FileNotFoundError(f"{model_dir}: no tokenizer.json")
        self._tok = Tokenizer.from_str(files["tokenizer.json"].decode())
        config = json.loads(files["tokenizer_config.json"]) if "tokenizer_config.json" in files else {}
        self.special = {k: _token_text(config.get(k)) for k in ("bos_token", "eos_token", "unk_token", "pad_token")
                        if _token_text(config.get(k))}
        self.bos_token_id = self._id(self.special.get("bos_token"))
        self.eos_token_id = self._id(self.special.get("eos_token"))
        template = config.get("chat_template")
        if "chat_template.jinja" in files:
            template = files["chat_template.jinja"].decode()
        self.chat_template: Optional[str] = chat_template or (template if isinstance(template, str) else None)

    def _id(self, token: Optional[str]) -> Optional[int]:
        return self._tok.token_to_id(token) if token else None

    @property
    def backend_tokenizer(self) -> Any:
        """The ``tokenizers`` pipeline (as transformers' fast tokenizers call theirs)."""
        return self._tok

    def __call__(self, text: str | list[str], add_special_tokens: bool = True) -> dict[str, list]:
        if isinstance(text, list):  # a batch: encoded on the library's own threads, without the character offsets
            # ``encode_batch`` also works out (the data pipeline never reads them: 1.5-2x the time)
            encoded = self._tok.encode_batch_fast(text, add_special_tokens=add_special_tokens)
            return {"input_ids": [e.ids for e in encoded]}
        return {"input_ids": self._tok.encode(text, add_special_tokens=add_special_tokens).ids}

    def apply_chat_template(self, messages: list[dict], tokenize: bool = False,
                            add_generation_prompt: bool = False) -> str:
        if self.chat_template is None:
            raise ValueError("the tokenizer has no chat template")
        return render_chat(self.chat_template, messages, add_generation_prompt, **self.special)


def load_tokenizer(path: str, revision: Optional[str] = None, trust_remote_code: bool = False,
                   chat_template: Optional[str] = None) -> Any:
    """The tokenizer training uses: transformers' ``AutoTokenizer`` of the model (its pad token the EOS when it has
    none), ``chat_template`` replacing its own when set."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
    if chat_template:
        tok.chat_template = chat_template
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


# What transformers reads to choose and build a tokenizer (config.json: the model type picks the class).
DESCRIBED_FROM = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json",
                  "added_tokens.json", "vocab.json", "merges.txt", "tokenizer.model", "config.json")
DESCRIBE_TIMEOUT_S = 600


@dataclass(frozen=True)
class Described:
    """A model's tokenizer as training will build it, saved for ``FileTokenizer``; or why it could not be."""

    directory: Optional[str]
    """Plain tokenizer files of the pipeline transformers built (None when it could not build one here)."""
    what: str
    """The class and library that built it (``Qwen2Tokenizer, transformers 5.24.0``), or the reason it failed."""


def described(model_dir: str) -> Described:
    """The tokenizer of ``model_dir`` as ``load_tokenizer`` builds it, from a cache keyed by the files transformers
    reads and its version; built here when torch is already loaded (``ftc train``, tests), else in a child process,
    so that ``ftc plan`` imports no torch. Never runs code from the model repository."""
    files = [Path(model_dir) / name for name in DESCRIBED_FROM if (Path(model_dir) / name).is_file()]
    return _described(model_dir, tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files))


@functools.lru_cache(maxsize=16)
def _described(model_dir: str, stamps: tuple) -> Described:
    """``described``; the files' sizes and mtimes are in the key, so that a process sees an edited tokenizer."""
    from importlib.metadata import version

    from ftc.paths import atomic_path, cache_root

    h = hashlib.sha256(json.dumps(["tokens-1", version("transformers"), version("tokenizers")]).encode())
    h.update(Path(__file__).read_bytes())
    for name, _, _ in stamps:
        h.update(name.encode() + (Path(model_dir) / name).read_bytes())
    entry = cache_root() / "tokenizers" / h.hexdigest()[:24]
    if not (entry / "described.json").is_file():
        with atomic_path(entry) as tmp:
            tmp.mkdir(parents=True)
            if "torch" in sys.modules:
                _describe_or_fail(model_dir, tmp)
            else:
                here = str(Path(__file__).resolve().parents[2])  # the child imports this ftc, whatever its path
                env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))}
                try:
                    r = subprocess.run([sys.executable, "-m", "ftc.data.tokens", model_dir, str(tmp)], env=env,
                                       capture_output=True, text=True, timeout=DESCRIBE_TIMEOUT_S)
                    reason = (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]
                except subprocess.TimeoutExpired:
                    r, reason = None, f"transformers took over {DESCRIBE_TIMEOUT_S} s to load it"
                if r is None or r.returncode != 0 or not (tmp / "described.json").is_file():
                    _failed(tmp, reason)
    info = json.loads((entry / "described.json").read_text())
    if "error" in info:
        return Described(None, info["error"])
    return Described(str(entry), f"{info['class']}, transformers {info['transformers']}")


def _describe(source: str, target: Path) -> None:
    """Writes the tokenizer transformers builds from ``source`` into ``target`` as files ``FileTokenizer`` reads:
    the backend pipeline it built (tokenizer.json), its special tokens and chat template."""
    from importlib.metadata import version

    tok = load_tokenizer(source)
    tok.backend_tokenizer.save(str(target / "tokenizer.json"))
    special = {k: getattr(tok, k) for k in ("bos_token", "eos_token", "unk_token", "pad_token") if getattr(tok, k)}
    (target / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "TokenizersBackend", **special}))
    if isinstance(tok.chat_template, str):
        (target / "chat_template.jinja").write_text(tok.chat_template)
    (target / "described.json").write_text(json.dumps({"class": type(tok).__name__,
                                                       "transformers": version("transformers")}))


def _describe_or_fail(source: str, target: Path) -> None:
    """``_describe``, or the reason transformers refused (remote code, a file it cannot read) recorded instead."""
    try:
        _describe(source, target)
    except Exception as e:  # noqa: BLE001 - a tokenizer transformers refuses here is recorded, not raised
        _failed(target, " ".join(f"{type(e).__name__}: {e}".split()))


def _failed(target: Path, reason: str) -> None:
    (target / "described.json").write_text(json.dumps({"error": reason}))


def _token_text(value: Any) -> Optional[str]:
    if isinstance(value, dict):  # {"content": "<s>", ...}, as older tokenizer_config.json files write it
        value = value.get("content")
    return value if isinstance(value, str) else None


def adds_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer itself starts sequences with BOS (Llama, Mistral, Gemma: yes; Qwen, GPT-2: no)."""
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("a", add_special_tokens=True)["input_ids"][:1] == [bos]


IDENTITY_PROBE = "Héllo  wörld!\n\tIt's 2026: <s> 3.14 ＡＢＣ 👍"


def identity(tokenizer: Any) -> str:
    """What decides the ids ``tokenize_examples`` makes, hashed: the tokenizer's vocabulary, normalizer, splitting
    and added tokens, BOS and EOS, the ids of a probe text with and without special tokens, and the chat template.
    The same for a transformers tokenizer and the ``FileTokenizer`` that ``described`` saved from it (their
    post-processors may differ where a single sequence never looks: transformers rebuilds its pair template, hence
    the probe instead)."""
    pipeline = json.loads(tokenizer.backend_tokenizer.to_str())
    h = hashlib.sha256(json.dumps({k: pipeline.get(k) for k in ("added_tokens", "normalizer", "pre_tokenizer",
                                                                 "model")}, sort_keys=True).encode())
    probe = [tokenizer(IDENTITY_PROBE, add_special_tokens=special)["input_ids"] for special in (True, False)]
    h.update(json.dumps([tokenizer.bos_token_id, tokenizer.eos_token_id, probe,
                         getattr(tokenizer, "chat_template", None)]).encode())
    return h.hexdigest()


def tokenize_example(tokenizer: Any, prompt: str, completion: str, bos: Optional[bool] = None
                     ) -> tuple[list[int], list[int]]:
    """prompt ids (+BOS when the tokenizer uses one) and completion ids + EOS, so the tuned model learns to stop.
    ``bos``: ``adds_bos(tokenizer)``, when the caller knows it already."""
    return tokenize_examples(tokenizer, [prompt], [completion], bos)[0]


BATCH = 1024
"""Texts a batch encode takes at once: a fast tokenizer spreads a batch over its threads."""


def tokenize_examples(tokenizer: Any, prompts: list[str], completions: list[str], bos: Optional[bool] = None
                      ) -> list[tuple[list[int], list[int]]]:
    """``tokenize_example`` of each (prompt, completion), encoded ``BATCH`` texts per call."""
    bos = adds_bos(tokenizer) if bos is None else bos
    out = []
    for prompt_ids, completion_ids in zip(_encoded(tokenizer, prompts), _encoded(tokenizer, completions)):
        if bos and (not prompt_ids or prompt_ids[0] != tokenizer.bos_token_id):
            prompt_ids = [tokenizer.bos_token_id] + prompt_ids
        if not completion_ids or completion_ids[-1] != tokenizer.eos_token_id:
            completion_ids = completion_ids + [tokenizer.eos_token_id]
        out.append((prompt_ids, completion_ids))
    return out


def encode_examples(job: tuple[str, str, Optional[str], list[dict[str, Any]]],
                    tokenizer: tuple[str, dict[str, bytes]]) -> list[list[tuple[list[int], list[int]]]]:
    """For each answer of the format (one; a pair's chosen, then rejected), each example's (prompt ids, answer ids)
    as ``ftc train`` encodes them: an engine's task (the plan's exact token counts). ``job`` is (format, template,
    chat_template, the examples' values); ``tokenizer`` is (its ``identity``, its ``tokenizer_files``), built once
    in a worker process."""
    from ftc.data.formats import FORMATS

    fmt_name, template, chat_template, values = job
    tok, bos = _worker_tokenizer(*tokenizer, chat_template)
    texts = [FORMATS[fmt_name].texts(v, template, tok) for v in values]
    prompts = [prompt for prompt, *_ in texts]
    return [tokenize_examples(tok, prompts, [t[k] for t in texts], bos) for k in range(1, len(texts[0]))]


_BUILT: dict[tuple[str, Optional[str]], tuple[FileTokenizer, bool]] = {}


def _worker_tokenizer(identity: str, files: dict[str, bytes], chat_template: Optional[str]
                      ) -> tuple[FileTokenizer, bool]:
    """The tokenizer of ``files`` and whether it adds BOS, built once a process (the last one asked for kept)."""
    if (identity, chat_template) not in _BUILT:
        _BUILT.clear()
        tok = FileTokenizer(None, chat_template, files)
        _BUILT[identity, chat_template] = tok, adds_bos(tok)
    return _BUILT[identity, chat_template]


def _encoded(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Each text's ids without special tokens; an empty text has none (it is not encoded)."""
    ids: list[list[int]] = [[] for _ in texts]
    full = [i for i, text in enumerate(texts) if text]
    for start in range(0, len(full), BATCH):
        part = full[start:start + BATCH]
        for i, encoded in zip(part, tokenizer([texts[i] for i in part], add_special_tokens=False)["input_ids"]):
            ids[i] = encoded if isinstance(encoded, list) else list(encoded)
    return ids


def cut_sequence(prompt: int, completion: int, max_length: int) -> tuple[int, bool, bool]:
    """An SFT example of ``prompt`` + ``completion`` tokens within max_length: (tokens kept, truncated, dropped:
    no completion token left to learn from)."""
    total = prompt + completion
    if total <= max_length:
        return total, False, False
    return max_length, True, prompt >= max_length


def cut_prompted(prompt: int, answers: tuple[int, ...], max_length: int, max_prompt_length: int
                 ) -> tuple[int, tuple[int, ...], bool]:
    """A preference pair or labelled answer: the prompt's end, at most max_prompt_length, then each answer within
    the room left of max_length: (prompt tokens kept, answer tokens kept, truncated)."""
    cut = False
    if prompt > max_prompt_length:
        prompt, cut = max_prompt_length, True
    room = max_length - prompt
    if any(a > room for a in answers):
        answers, cut = tuple(min(a, room) for a in answers), True
    return prompt, answers, cut


def split_tokens(lengths: list[tuple[int, ...]], fmt: str, max_length: int, max_prompt_length: int
                 ) -> tuple[int, int, int]:
    """(examples kept, tokens, examples truncated) of a split from its examples' untruncated token lengths
    ((prompt, completion), or (prompt, chosen, rejected) for preference pairs): what the run's data report counts.
    A preference pair counts its prompt twice (chosen and rejected each run through the model after it)."""
    spec = FORMATS[fmt]
    kept = tokens = truncated = 0
    for example in lengths:
        if spec.prompt_apart:  # a pair runs its prompt twice (before chosen, before rejected)
            p, answers, cut = cut_prompted(example[0], example[1:], max_length, max_prompt_length)
            kept, tokens, truncated = kept + 1, tokens + len(answers) * p + sum(answers), truncated + cut
        else:
            n, cut, dropped = cut_sequence(example[0], example[1], max_length)
            truncated += cut
            if not dropped:
                kept, tokens = kept + 1, tokens + n
    return kept, tokens, truncated


if __name__ == "__main__":  # python -m ftc.data.tokens MODEL_DIR TARGET: what ``described`` runs in a child process
    _describe_or_fail(sys.argv[1], Path(sys.argv[2]))
