"""``ftc serve`` decisions, and what ``ftc export`` writes for Ollama and llama.cpp: pure parts, no torch."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from dataclasses import replace

import pytest

from ftc.compiler.serve_engine import ServeFacts, ServeRequest, decide, is_loopback
from ftc.data.formats import alpaca_prompt
from ftc.data.tiny import TINY_CHAT_TEMPLATE
from ftc.errors import UserError
from ftc.runtime import export as ex
from ftc.runtime import serve as sv
from tests.conftest import plan_for

pytestmark = pytest.mark.unit

FACTS = ServeFacts(run_dir="/runs/t1", gguf=("f16", "q4_k_m"), merged=True, base="/models/base", cuda=False,
                   vllm=None, llama_cpp=True, api_key=False)


class Tok:
    eos_token, chat_template = "</s>", TINY_CHAT_TEMPLATE


def test_auto_serves_the_gguf_closest_to_the_tuned_weights_with_llama_cpp_on_a_cpu():
    d = decide(plan_for([]), ServeRequest(), FACTS)
    assert (d.engine, d.quant, d.model, d.host) == ("llama.cpp", "f16", "/runs/t1/gguf/f16/model.gguf", "127.0.0.1")
    assert d.errors == () and any("q4_k_m" in line for line in d.decisions)
    assert decide(plan_for([]), ServeRequest(quant="q4_k_m"), FACTS).model.endswith("q4_k_m/model.gguf")


def test_a_missing_export_or_engine_is_refused_with_the_fix():
    d = decide(plan_for([]), ServeRequest(), replace(FACTS, gguf=()))
    assert d.errors == ("/runs/t1 has no GGUF export (fix: ftc export /runs/t1 format=gguf)",)
    d = decide(plan_for([]), ServeRequest(quant="q8_0"), FACTS)
    assert "fix: ftc export /runs/t1 format=gguf quant=q8_0" in d.errors[0]
    d = decide(plan_for([]), ServeRequest(), replace(FACTS, llama_cpp=False))
    assert "pip install -e '.[serve]'" in d.errors[0]
    d = decide(plan_for([]), ServeRequest(engine="vllm"), FACTS)
    assert "engine=vllm needs vLLM" in d.errors[0] and "FTC_VLLM=<venv>/bin/python" in d.errors[0]
    d = decide(plan_for([]), ServeRequest(engine="vllm"), replace(FACTS, vllm="/venvs/vllm/bin/python"))
    assert d.errors == () and (d.engine, d.executable, d.cpu_backend) == ("vllm", "/venvs/vllm/bin/python", True)
    assert any("CPU build" in line for line in d.decisions) and d.model == "/runs/t1/merged"
    cmd = sv.vllm_command(d, plan_for([]), "t.jinja")
    assert cmd[:3] == ["/venvs/vllm/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    assert cmd[cmd.index("--gpu-memory-utilization") + 1] == "0.3"  # the CPU backend shares this machine
    assert decide(plan_for([]), ServeRequest(engine="tgi"), FACTS).errors[0].startswith("engine=tgi: expected")


def test_listening_beyond_localhost_needs_an_api_key():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.5")
    d = decide(plan_for([]), ServeRequest(host="0.0.0.0"), FACTS)
    assert "FTC_SERVE_API_KEY" in d.errors[0] and "host=127.0.0.1" in d.errors[0]
    assert decide(plan_for([]), ServeRequest(host="0.0.0.0"), replace(FACTS, api_key=True)).errors == ()


def test_vllm_on_cuda_serves_the_merged_model_or_the_base_with_the_adapter():
    cuda = replace(FACTS, cuda=True, vllm="/usr/bin/python3")
    plan = plan_for(["model=mistral_7b", "hardware=a100_80g"])
    d = decide(plan, ServeRequest(), cuda)
    assert (d.engine, d.model, d.adapter) == ("vllm", "/runs/t1/merged", None)
    d = decide(plan, ServeRequest(), replace(cuda, merged=False))
    assert (d.model, d.adapter) == ("/models/base", "/runs/t1/adapter")
    cmd = sv.vllm_command(d, plan, "/runs/t1/serving_chat_template.jinja")
    assert cmd[:5] == ["/usr/bin/python3", "-m", "vllm.entrypoints.openai.api_server", "--model", "/models/base"]
    assert "--enable-lora" in cmd and "--gpu-memory-utilization" not in cmd
    assert cmd[cmd.index("--lora-modules") + 1] == "t1-adapter=/runs/t1/adapter"
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert not any("KEY" in a.upper() for a in cmd)  # the API key goes through the environment only
    assert "quant=q4_k_m applies to the llama.cpp engine" in decide(plan, ServeRequest(quant="q4_k_m"),
                                                                    cuda).errors[0]


def test_alpaca_runs_export_training_prompt_format_as_chat_template_and_ollama_template():
    plan = plan_for([])
    fmt = ex.prompt_format(plan, Tok())
    prompt = "Triage the ticket: my card was charged twice."
    trained = alpaca_prompt(prompt, "", plan.data.template)
    assert ex.render_chat(fmt.chat_template, [{"role": "user", "content": prompt}], True) == trained
    assert fmt.completion_prefix + prompt + fmt.completion_suffix == trained
    with_bos = ex.prompt_format(plan, Tok(), bos=True).chat_template  # training started prompts with BOS
    assert ex.render_chat(with_bos, [{"role": "user", "content": prompt}], True, bos_token="<s>") == "<s>" + trained
    template = ex.ollama_template(fmt, "</s>")
    assert ex.render_ollama(template, [], prompt=prompt) == trained and template.endswith("{{ .Response }}")
    modelfile, why = ex.modelfile("model.gguf", fmt, "</s>", 512)
    assert why is None
    assert modelfile.splitlines()[2] == "FROM ./model.gguf"
    assert 'PARAMETER stop "</s>"' in modelfile and "PARAMETER num_ctx 512" in modelfile
    assert f'TEMPLATE """{template}"""' in modelfile


def test_chat_runs_get_an_ollama_template_that_renders_as_the_chat_template():
    plan = plan_for(["data=sample_chat"])
    fmt = ex.prompt_format(plan, Tok())
    system = plan.data.system_prompt  # every training conversation of sample_chat opens with it
    assert system and fmt.system == system
    assert fmt.completion_prefix is None and fmt.chat_template.endswith(TINY_CHAT_TEMPLATE)
    template = ex.ollama_template(fmt, "</s>")
    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Order 12?"}]
    assert ex.render_ollama(template, conversation) == ex.render_chat(TINY_CHAT_TEMPLATE, conversation, True,
                                                                      eos_token="</s>")
    # A conversation without a system turn is asked with training's, in the GGUF's template and the Modelfile
    asked = ex.render_chat(fmt.chat_template, conversation[1:], True, eos_token="</s>")
    assert asked == ex.render_chat(TINY_CHAT_TEMPLATE, [{"role": "system", "content": system}] + conversation[1:],
                                   True, eos_token="</s>")
    assert f'SYSTEM """{system}"""' in ex.modelfile("model.gguf", fmt, "</s>", 512)[0]
    assert '{{ if eq .Role "system" }}<|system|>\n{{ .Content }}{{ else if' in template  # trim_blocks, as
    # transformers renders it: the newline after a block tag is not output


def test_a_default_system_prompt_is_kept_out_of_the_turns_and_a_template_that_numbers_turns_is_refused():
    class QwenStyle(Tok):  # a default system prompt when the conversation has none
        chat_template = ("{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are helpful.<|im_end|>\n"
                         "{% endif %}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                         "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

    class Numbered(Tok):
        chat_template = ("{% for m in messages %}Turn {{ loop.index }} ({{ m['role'] }}): {{ m['content'] }}\n"
                         "{% endfor %}{% if add_generation_prompt %}Turn {{ messages | length + 1 }}: {% endif %}")

    plan = plan_for(["data=sample_chat"])
    plan = dataclasses.replace(plan, data=dataclasses.replace(plan.data, system_prompt=None))  # none shared
    with pytest.raises(UserError, match="not a sequence of per-role turns"):  # the default system prompt
        ex.ollama_template(ex.prompt_format(plan, QwenStyle()), "</s>")  # appears only without a system turn
    with pytest.raises(UserError, match="not a sequence of per-role turns"):
        ex.ollama_template(ex.prompt_format(plan, Numbered()), "</s>")
    text, why = ex.modelfile("model.gguf", ex.prompt_format(plan, Numbered()), "</s>", 512)
    assert not any(line.startswith("TEMPLATE") for line in text.splitlines()) and "per-role turns" in why
    assert 'PARAMETER stop "</s>"' in text and "FROM ./model.gguf" in text


def test_the_gpt2_byte_level_pre_tokenizer_is_recognised_from_its_structure(tmp_path):
    def pre(p):
        path = tmp_path / "tokenizer.json"
        path.write_text(json.dumps({"pre_tokenizer": p}))
        return ex.pre_tokenizer(path)

    assert pre({"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}) == "gpt-2"
    assert pre({"type": "Sequence", "pretokenizers": [{"type": "ByteLevel", "add_prefix_space": False}]}) == "gpt-2"
    assert pre({"type": "ByteLevel", "add_prefix_space": True}) is None  # another split: the converter decides
    assert pre({"type": "Metaspace"}) is None and pre(None) is None


def test_completion_prompts_are_put_in_training_format_before_the_engine_sees_them():
    seen = []

    async def engine(scope, receive, send):
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message["body"], message.get("more_body", False)
        seen.append((scope["path"], json.loads(body), dict(scope["headers"])[b"content-length"]))

    app = sv.completion_prompt_middleware(engine, lambda p: f"<{p}>")

    def call(path, body):
        raw = json.dumps(body).encode()
        chunks = iter([{"type": "http.request", "body": raw[:5], "more_body": True},
                       {"type": "http.request", "body": raw[5:], "more_body": False}])

        async def receive():
            return next(chunks)

        scope = {"type": "http", "method": "POST", "path": path,
                 "headers": [(b"content-length", str(len(raw)).encode())]}
        asyncio.run(app(scope, receive, None))

    call("/v1/completions", {"prompt": "hi", "max_tokens": 3})
    call("/v1/completions", {"prompt": ["a", "b"]})
    call("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]})
    assert seen[0][1] == {"prompt": "<hi>", "max_tokens": 3} and seen[0][2] == str(len(json.dumps(seen[0][1]))).encode()
    assert seen[1][1]["prompt"] == ["<a>", "<b>"]
    assert seen[2][1] == {"messages": [{"role": "user", "content": "hi"}]}  # chat requests pass untouched


def test_the_serving_decision_knows_every_quant_the_export_writes():
    from ftc.compiler.serve_engine import QUANT_PREFERENCE

    assert sorted(QUANT_PREFERENCE) == sorted(ex.QUANTS)
