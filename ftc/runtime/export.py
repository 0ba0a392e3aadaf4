"""``ftc export RUN_DIR format=gguf``: the tuned model as a GGUF file for llama.cpp and Ollama, with the prompt
format and stop tokens of training, through llama.cpp's own converter and quantizer.

Where llama.cpp comes from: the serving extra installs ``llama-cpp-python`` (PyPI ships it as source; pip builds
llama.cpp with the machine's cmake and C++ compiler). Its library holds the quantizer (``llama_model_quantize``)
and the engine ``ftc serve`` runs. The converter (``convert_hf_to_gguf.py`` with its ``conversion/`` package and
the ``gguf-py`` it was written against) is a script of the same llama.cpp source, not part of the installed
package: ftc takes it from that same source archive, once, into ``<cache>/llama.cpp/<version>/`` (or from a
llama.cpp checkout named by ``$FTC_LLAMA_CPP``), so the converter and the library always come from one llama.cpp.

What the GGUF carries, and the export checks by reading the file back: the tokenizer, BOS/EOS and their use, and
the chat template the run was trained with. For alpaca or prompt/completion data that is a template that renders
a user message into training's prompt format, so a chat client gets what ``ftc generate`` does.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from ftc.compiler.serve_engine import SERVE_INSTALL
from ftc.data.formats import inference_prompt
from ftc.data.tokens import render_chat
from ftc.errors import UserError
from ftc.paths import atomic_path, cache_root
from ftc.plan import Plan

QUANTS = {
    # name: (the converter's --outtype, the quantizer's file type or None)
    "f16": ("f16", None),
    "q8_0": ("q8_0", None),
    "q4_k_m": ("f16", "LLAMA_FTYPE_MOSTLY_Q4_K_M"),
}
MARK = "\x00ftc-content\x00"
PACKAGE = "llama_cpp_python"


@dataclass(frozen=True)
class PromptFormat:
    """How a request becomes the text training saw, for the GGUF's chat template, the Modelfile and the server."""

    chat_template: str
    """Jinja, as transformers and llama.cpp render it."""
    completion_prefix: Optional[str]
    """For completion-style data: the text before the prompt (``ftc generate``'s formatting); None: raw prompts."""
    completion_suffix: str
    stop: tuple[str, ...]
    system: Optional[str] = None
    """Training's shared system prompt, which the chat template puts first when a conversation has none (and the
    Modelfile's SYSTEM)."""


def prompt_format(plan: Plan, tokenizer: Any, bos: bool = False) -> PromptFormat:
    """The run's prompt format: alpaca's template around a user message, the prompt itself for prompt/completion,
    the tokenizer's chat template for chat data. ``bos``: training started every prompt with BOS (the tokenizer adds
    one); the chat template then emits it itself, as hub templates do (Llama 3's), since engines tokenize a rendered
    chat without adding one (llama-cpp-python) or drop a leading one they would duplicate (llama.cpp's server)."""
    stop = tuple(dict.fromkeys(t for t in (tokenizer.eos_token,) if t))
    style = plan.data.prompt_style  # the one decision training formatted with (formats.inference_prompt)
    if style == "alpaca":
        prefix, suffix = inference_prompt(style, plan.data.template, MARK).split(MARK)
        return PromptFormat(_with_bos(_single_turn_template(prefix, suffix), bos), prefix, suffix, stop)
    if style == "raw":
        return PromptFormat(_with_bos(_single_turn_template("", ""), bos), "", "", stop)
    template = tokenizer.chat_template
    if not template:
        raise UserError(f"ftc: the run's tokenizer has no chat template for its {plan.data.format} data "
                        "(fix: model.chat_template=... when training)")
    system = plan.data.system_prompt
    return PromptFormat(_with_bos(_with_system(template, system), bos), None, "", stop, system)


def _with_system(template: str, system: Optional[str]) -> str:
    """The chat template with training's shared system prompt put first when a conversation brings none."""
    if not system:
        return template
    return ("{%- if messages[0]['role'] != 'system' %}{%- set messages = [{'role': 'system', 'content': "
            + json.dumps(system, ensure_ascii=False) + "}] + messages %}{%- endif %}" + template)


def _with_bos(template: str, bos: bool) -> str:
    return "{{ bos_token }}" + template if bos and "bos_token" not in template else template


def _single_turn_template(prefix: str, suffix: str) -> str:
    """A Jinja chat template that renders each user message into the completion format (assistant turns end with
    EOS, as training's completions did)."""
    return ("{% for m in messages %}{% if m['role'] == 'user' %}" + _jinja_text(prefix) + "{{ m['content'] }}"
            + _jinja_text(suffix) + "{% elif m['role'] == 'assistant' %}{{ m['content'] }}{{ eos_token }}"
            "{% endif %}{% endfor %}")


def _jinja_text(text: str) -> str:
    return "{{ " + json.dumps(text) + " }}" if text else ""


# --- Ollama ------------------------------------------------------------------------------------------------------
_RANGE, _END = "{{- range .Messages }}", "{{ end }}{{ end }}"
_BRANCH = re.compile(r'\{\{ (?:else )?if eq \.Role "(\w+)" \}\}(.*?)\{\{ \.Content \}\}(.*?)'
                     r'(?=\{\{ else if eq \.Role|\{\{ end \}\}\{\{ end \}\}$)', re.S)


def ollama_template(fmt: PromptFormat, eos: str) -> str:
    """The Modelfile's TEMPLATE (Go template syntax) for the run's prompt format.

    Completion-style data: the prefix, ``{{ .Prompt }}``, the suffix. Chat data: the chat template taken apart per
    role (each role's text before and after its content, and the generation prompt), accepted only when the parts
    put back together render a test conversation exactly as the Jinja template does; otherwise a UserError says
    why (the Modelfile then has none, and Ollama reads the Jinja template inside the GGUF)."""
    if fmt.completion_prefix is not None:
        return fmt.completion_prefix + "{{ .Prompt }}" + fmt.completion_suffix + "{{ .Response }}"
    parts: dict[str, tuple[str, str]] = {}
    # Each role's turn is what it adds after a system + user opening, so text a template puts only before the
    # first message (a BOS, a default system prompt) is not taken for part of every turn.
    opening = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]

    def chat(messages: list[dict], generation_prompt: bool = False) -> str:
        return render_chat(fmt.chat_template, messages, generation_prompt, eos_token=eos)

    for role in ("system", "user", "assistant"):
        try:
            if role == "system":
                before, text = "", chat([{"role": role, "content": MARK}])
            else:
                before = chat(opening)
                text = chat(opening + [{"role": role, "content": MARK}])
        except Exception:  # a template that refuses this role here (e.g. no system turns): leave the role out
            continue
        if text.startswith(before) and text.count(MARK) == 1 and "{{" not in text:
            pre, post = text[len(before):].split(MARK)
            parts[role] = (pre, post)
    closed = chat(opening)
    generation = chat(opening, True)
    generation = generation[len(closed):] if generation.startswith(closed) else ""
    template = _RANGE + "".join(
        f'{{{{ {"if" if i == 0 else "else if"} eq .Role "{role}" }}}}{pre}{{{{ .Content }}}}{post}'
        for i, (role, (pre, post)) in enumerate(parts.items())) + _END + generation
    turns = [{"role": r, "content": f"turn {i} of {r}"} for i, r in enumerate(("system", "user", "assistant", "user"))]
    conversations = [[t for t in turns if t["role"] in parts], [t for t in turns[1:] if t["role"] in parts]]
    def with_system(c: list[dict]) -> list[dict]:  # Ollama puts the Modelfile's SYSTEM first, as the template does
        return [{"role": "system", "content": fmt.system}] + c if fmt.system and c[0]["role"] != "system" else c

    if not {"user", "assistant"} <= set(parts) or any(
            render_ollama(template, with_system(c)) != chat(c, True) for c in conversations):
        raise UserError("the chat template is not a sequence of per-role turns (it adds text that depends on "
                        "the conversation), so no Ollama TEMPLATE of ftc's reproduces it")
    return template


def render_ollama(template: str, messages: list[dict], prompt: str = "") -> str:
    """Renders the two TEMPLATE shapes ``ollama_template`` writes: to check what ftc writes, not a general Go
    template engine (Ollama's own is Go)."""
    if not template.startswith(_RANGE):
        return template.replace("{{ .Prompt }}", prompt).replace("{{ .Response }}", "")
    body, generation = template[len(_RANGE):].rsplit(_END, 1)
    branches = {role: (pre, post) for role, pre, post in _BRANCH.findall(body + _END)}
    return "".join(branches[m["role"]][0] + m["content"] + branches[m["role"]][1] for m in messages
                   if m["role"] in branches) + generation


def modelfile(gguf_name: str, fmt: PromptFormat, eos: str, context: int) -> tuple[str, Optional[str]]:
    """The Ollama Modelfile, and why it has no TEMPLATE when it cannot have one (Ollama then reads the GGUF's
    chat template itself)."""
    try:
        template, why = ollama_template(fmt, eos), None
        if '"""' in template:
            template, why = None, 'the prompt format contains """, which a Modelfile TEMPLATE cannot hold'
    except UserError as e:
        template, why = None, str(e)
    stops = "".join(f"PARAMETER stop {json.dumps(s)}\n" for s in fmt.stop)
    system = f'SYSTEM """{fmt.system}"""\n' if fmt.system and '"""' not in fmt.system else ""
    lines = (f'TEMPLATE """{template}"""\n' if template is not None else
             f"# No TEMPLATE: {why}. Ollama uses the chat template inside the GGUF.\n")
    return (f"# Written by ftc export: `ollama create NAME -f Modelfile` in this directory.\n"
            f"# The prompt format and stop tokens are the ones the model was trained with.\n"
            f"FROM ./{gguf_name}\n{lines}{system}{stops}PARAMETER temperature 0\nPARAMETER num_ctx {context}\n"), why


# --- llama.cpp ---------------------------------------------------------------------------------------------------
def llama_cpp_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(PACKAGE)
    except PackageNotFoundError:
        raise UserError(f"ftc: GGUF export and `ftc serve` on a CPU need llama.cpp: install the serving extra "
                        f"(`{SERVE_INSTALL}`; pip builds llama.cpp from source, a few minutes)") from None


def converter_dir() -> Path:
    """llama.cpp's converter of the installed llama-cpp-python: ``$FTC_LLAMA_CPP`` (a llama.cpp checkout), or the
    scripts of that package's own source archive, fetched once with pip into the cache."""
    if os.environ.get("FTC_LLAMA_CPP"):
        root = Path(os.environ["FTC_LLAMA_CPP"]).expanduser()
        if not (root / "convert_hf_to_gguf.py").is_file():
            raise UserError(f"ftc: FTC_LLAMA_CPP={root} is not a llama.cpp checkout (no convert_hf_to_gguf.py)")
        return root
    version = llama_cpp_version()
    target = cache_root() / "llama.cpp" / version
    if (target / "convert_hf_to_gguf.py").is_file():
        return target
    print(f"ftc: fetching llama.cpp's converter (the source archive of llama-cpp-python {version}) into "
          f"{target}, once", file=sys.stderr)
    with atomic_path(target.with_name(target.name + ".download")) as download:
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                               f"llama-cpp-python=={version}", "-d", str(download), "-q"],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise UserError(f"ftc: could not fetch llama.cpp's converter with pip: {done.stderr.strip()[-500:]} "
                            "(fix: set FTC_LLAMA_CPP to a llama.cpp checkout)")
        archive = next(download.glob("*.tar.gz"))
        with atomic_path(target) as tmp, tarfile.open(archive) as tar:
            for member in tar.getmembers():
                path = member.name.split("/vendor/llama.cpp/", 1)
                if len(path) == 2 and member.isfile() and (
                        path[1] == "convert_hf_to_gguf.py" or path[1].startswith(("conversion/", "gguf-py/"))):
                    member.name = path[1]
                    tar.extract(member, tmp, filter="data")
    return target


def pre_tokenizer(tokenizer_json: Path) -> Optional[str]:
    """llama.cpp's name for a BPE tokenizer's pre-tokenizer, read from its structure: the converter knows
    tokenizers by a hash of their output on a test text, which a tokenizer trained for a run never matches. Only
    GPT-2's byte-level split is recognised here; anything else stays the converter's decision."""
    try:
        pre = json.loads(tokenizer_json.read_text()).get("pre_tokenizer") or {}
    except (OSError, ValueError):
        return None
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    if len(steps) == 1 and steps[0].get("type") == "ByteLevel" and steps[0].get("use_regex", True) \
            and not steps[0].get("add_prefix_space", False):
        return "gpt-2"
    return None


@contextlib.contextmanager
def library_output_to(log: Path) -> Iterator[Callable[[str], None]]:
    """The process's own stdout and stderr (file descriptors 1 and 2: what transformers, PEFT and llama.cpp's C code
    write there) into ``log``; yields ``say(line)``, which prints ftc's progress lines, masked, on the console."""
    from ftc.secrets import mask

    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    console = os.fdopen(os.dup(saved_err), "w", buffering=1)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            yield lambda line: print(mask(line), file=console, flush=True)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved_out, 1)
            os.dup2(saved_err, 2)
            os.close(saved_out)
            os.close(saved_err)
            console.close()


def convert(model_dir: Path, out: Path, outtype: str, log: Path) -> None:
    """Runs llama.cpp's converter on a Hugging Face model directory (safetensors + tokenizer)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(converter_dir()), os.environ.get("PYTHONPATH", "")]))
    pre = pre_tokenizer(model_dir / "tokenizer.json")
    if pre:
        env["FTC_GGUF_PRE_TOKENIZER"] = pre
    cmd = [sys.executable, "-m", "ftc.runtime.gguf_convert", str(model_dir), "--outfile", str(out),
           "--outtype", outtype]
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        done = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode != 0 or not out.is_file():
        tail = log.read_text().strip().splitlines()[-3:]
        raise UserError("ftc: llama.cpp's converter failed: " + " | ".join(tail) + f" (the whole output: {log})")


def quantize(source: Path, out: Path, ftype: str) -> None:
    """llama.cpp's quantizer (``llama_model_quantize`` of the installed library)."""
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, ftype)
    params.nthread = os.cpu_count() or 1
    if llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), ctypes.byref(params)) != 0:
        raise UserError(f"ftc: llama.cpp could not quantize {source} to {ftype}")


def gguf_metadata(path: Path) -> dict[str, Any]:
    """The GGUF's tokenizer metadata, read back with the gguf package the converter wrote it with."""
    sys.path.insert(0, str(converter_dir() / "gguf-py"))
    try:
        from gguf import GGUFReader
    finally:
        sys.path.pop(0)
    reader = GGUFReader(str(path))
    out: dict[str, Any] = {}
    for key in ("tokenizer.chat_template", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.bos_token_id",
                "tokenizer.ggml.add_bos_token", "tokenizer.ggml.pre", "general.file_type"):
        field = reader.get_field(key)
        if field is not None:
            out[key] = field.contents()
    return out


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def stage(merged: Path, tmp: Path, fmt: PromptFormat) -> Path:
    """The merged model as the converter should read it: the weights linked, the tokenizer's chat template set to
    the run's prompt format."""
    staged = tmp / "hf"
    staged.mkdir(parents=True)
    for f in merged.iterdir():
        if f.name not in ("tokenizer_config.json", "chat_template.jinja", "chat_template.json"):
            os.symlink(f.resolve(), staged / f.name)
    config = json.loads((merged / "tokenizer_config.json").read_text())
    config["chat_template"] = fmt.chat_template
    (staged / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return staged
