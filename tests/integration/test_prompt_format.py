"""One prompt format from training to serving: for every data format, the prompt the tuned model is asked with by
``ftc generate`` (``formats.inference_prompt``), by the chat template written into the GGUF (which ``ftc serve``
serves, through llama.cpp or vLLM) and by the completion wrapping ``ftc serve`` applies to ``/v1/completions`` is
token for token the prompt training put before the completion, system prompt included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("transformers")  # the unit tier runs without it; this module loads the tokenizer training uses

from ftc.data.formats import FORMATS, check_row, inference_prompt, to_texts  # noqa: E402
from ftc.data.tokens import adds_bos, render_chat  # noqa: E402
from ftc.paths import resolve_path  # noqa: E402
from ftc.runtime import export as ex  # noqa: E402
from ftc.runtime.model import load_tokenizer  # noqa: E402
from tests.conftest import plan_for  # noqa: E402

pytestmark = pytest.mark.integration


def _rows(tmp_path: Path, fmt: str) -> list[str]:
    """Overrides whose training data is in ``fmt``: the built-in sets, or a small file written here."""
    builtin = {"alpaca": "sample", "chat": "sample_chat", "kto": "sample_kto"}
    if fmt in builtin:
        return [f"data={builtin[fmt]}"]
    path = tmp_path / f"{fmt}.jsonl"
    rows = {
        "prompt_completion": [{"prompt": f"Ticket {i}: the app crashes on start.", "completion": "technical"}
                              for i in range(40)],
        "text": [{"text": f"Note {i}: the app crashes on start."} for i in range(40)],
        "preference": None,
    }[fmt]
    if rows is None:
        return ["data=sample_preference"]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return ["data=file", f"data.path={path}", f"data.format={fmt}", "data.near_dup_threshold=null",
            "data.dedup=false"]


def _chat_preference(tmp_path: Path) -> list[str]:
    """Preference pairs given as message lists with a system prompt: the chat style."""
    path = tmp_path / "pairs.jsonl"
    rows = []
    for i in range(40):
        turns = [{"role": "system", "content": "Answer in one word."},
                 {"role": "user", "content": f"Ticket {i}: I was charged twice."}]
        rows.append({"chosen": turns + [{"role": "assistant", "content": "billing"}],
                     "rejected": turns + [{"role": "assistant", "content": "shipping"}]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return ["data=file", f"data.path={path}", "data.format=preference", "data.near_dup_threshold=null",
            "data.dedup=false", "objective=dpo"]


CASES = [pytest.param(f, id=f) for f in FORMATS] + [pytest.param("preference_chat", id="preference-messages")]


@pytest.mark.parametrize("case", CASES)
def test_the_model_is_asked_with_the_prompt_it_was_trained_on(tmp_path, case):
    overrides = _chat_preference(tmp_path) if case == "preference_chat" else _rows(tmp_path, case)
    if case in ("preference", "kto"):
        overrides = overrides + ["objective=dpo" if case == "preference" else "objective=kto"]
    plan = plan_for(overrides)
    assert plan.errors == (), plan.errors
    d = plan.data
    tokenizer = load_tokenizer(plan)
    row = json.loads(Path(resolve_path(d.path)).read_text().splitlines()[0])
    values = check_row(row, d.format, d.fields)
    trained = to_texts(row, d.format, d.fields, d.template, tokenizer)[0]  # the text before the completion
    messages = values.get("messages") or values.get("prompt")
    if isinstance(messages, list):  # chat-style: the user's last turn, training's system prompt by default
        user = [m for m in messages if m["role"] == "user"][-1]["content"]
        system = next((m["content"] for m in messages if m["role"] == "system"), None)
        assert d.prompt_style == "chat" and d.system_prompt == system and system
    else:
        user = values.get("instruction") or values.get("prompt") or ""
        assert d.prompt_style == ("raw" if d.format in ("prompt_completion", "text") else "alpaca")

    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    # ftc generate: training's system prompt unless the user gives one
    asked = inference_prompt(d.prompt_style, d.template, user, d.system_prompt, tokenizer, values.get("input", ""))
    assert ids(asked) == ids(trained)
    # the exported GGUF's chat template (and ftc serve's, on either engine) for a request with one user message:
    # a chat client has no alpaca input, so it is compared with training's text of the row without one
    if values.get("input"):
        trained = to_texts(dict(row, input=""), d.format, d.fields, d.template, tokenizer)[0]
    bos = adds_bos(tokenizer)
    fmt = ex.prompt_format(plan, tokenizer, bos)
    served = render_chat(fmt.chat_template, [{"role": "user", "content": user}], True,
                         bos_token=tokenizer.bos_token, eos_token=tokenizer.eos_token)
    assert ids(served) == ids((tokenizer.bos_token if bos and not trained.startswith(tokenizer.bos_token) else "")
                              + trained)
    if fmt.completion_prefix is not None:  # ftc serve's /v1/completions wrapping (llama.cpp)
        assert ids(fmt.completion_prefix + user + fmt.completion_suffix) == ids(trained)
