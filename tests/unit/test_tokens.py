"""The truncation rules ``ftc plan`` and ``ftc train`` share (ftc/data/tokens.py), and the plan's tokenizer
tokenizing as training's does: the pipeline transformers builds, read without torch."""

from __future__ import annotations

import pytest

from ftc.data import tokens
from ftc.data.tokens import FileTokenizer, adds_bos, cut_prompted, cut_sequence, split_tokens, tokenize_example

pytestmark = pytest.mark.unit


def test_an_sft_example_is_cut_to_max_length_and_dropped_when_no_completion_is_left():
    assert cut_sequence(10, 5, 20) == (15, False, False)
    assert cut_sequence(18, 5, 20) == (20, True, False)  # two completion tokens still count
    assert cut_sequence(20, 5, 20) == (20, True, True)  # the prompt fills it: nothing to learn from
    assert split_tokens([[10, 5], [18, 5], [20, 5]], "alpaca", 20, 0) == (2, 35, 2)


def test_a_pair_keeps_its_prompts_end_and_counts_the_prompt_twice():
    assert cut_prompted(30, (8, 12), 40, 24) == (24, (8, 12), True)  # the prompt cut to 24, answers fit in 16
    assert cut_prompted(10, (8, 40), 40, 24) == (10, (8, 30), True)
    assert split_tokens([[30, 8, 12]], "preference", 40, 24) == (1, 2 * 24 + 8 + 12, 1)
    assert split_tokens([[10, 8]], "kto", 40, 24) == (1, 18, 0)


def test_the_plans_tokenizer_reads_the_tiny_models_as_training_does():
    """ftc plan tokenizes with FileTokenizer; training with transformers' tokenizer of the same directory."""
    from transformers import AutoTokenizer

    from ftc.data.tiny import tokenizer_dir
    from tests.conftest import plan_for

    plan = plan_for([])
    directory = tokenizer_dir(plan.model)
    ours, theirs = FileTokenizer(directory), AutoTokenizer.from_pretrained(str(directory))
    prompt, completion = "### Instruction:\nRoute the ticket: refund for order 17?\n\n### Response:\n", "billing"
    assert tokenize_example(ours, prompt, completion) == tokenize_example(theirs, prompt, completion)
    assert adds_bos(ours) and (ours.bos_token_id, ours.eos_token_id) == (theirs.bos_token_id, theirs.eos_token_id)
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
    assert ours.apply_chat_template(chat) == theirs.apply_chat_template(chat, tokenize=False)


def test_examples_are_encoded_in_batches_as_one_by_one(monkeypatch):
    """Training and the plan encode many examples per call (a fast tokenizer's threads); each comes out as its own
    encode would: BOS before the prompt (an empty prompt is not encoded), EOS after the completion."""
    from transformers import AutoTokenizer

    from ftc.data import tokens
    from ftc.data.tiny import tokenizer_dir
    from tests.conftest import plan_for

    directory = tokenizer_dir(plan_for([]).model)
    monkeypatch.setattr(tokens, "BATCH", 2)  # batches of 2 over 5 texts: the last one short
    prompts = ["Route: refund for order 17?", "", TRICKY, "Hi", "two  spaces"]
    completions = ["billing", "tech 2", "ok", "", "x"]
    for tok in (FileTokenizer(directory), AutoTokenizer.from_pretrained(str(directory))):
        one = lambda text, tok=tok: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
        assert tokens.tokenize_examples(tok, prompts, completions) == [
            ([tok.bos_token_id] + (one(p) if p else []), one(c) + [tok.eos_token_id])
            for p, c in zip(prompts, completions)]


TRICKY = "### Instruction:\nRoute: REFUND for order 17?? It's 3.14 ok\r\n\n  spaces   here\t!\n### Response:\n"


def _qwen2_dir(tmp_path):
    """The tiny tokenizer under a Qwen2 config.json: transformers loads it as Qwen2Tokenizer, which rebuilds the
    pipeline with its own split pattern, so tokenizer.json read as it is counts other tokens."""
    from ftc.data.tiny import tokenizer_dir
    from tests.conftest import borrowed_tokenizer, plan_for

    return borrowed_tokenizer(tokenizer_dir(plan_for([]).model), tmp_path / "qwen2",
                              {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]})


def test_the_plans_tokenizer_is_the_pipeline_transformers_builds(tmp_path):
    """A class that rebuilds the pipeline (Qwen2Tokenizer): the described files tokenize as transformers does, where
    tokenizer.json read as it is would not; the description is cached and names the class."""
    directory = _qwen2_dir(tmp_path)
    theirs = tokens.load_tokenizer(str(directory))
    assert type(theirs).__name__ == "Qwen2Tokenizer"
    built = tokens.described(str(directory))
    assert built.what.startswith("Qwen2Tokenizer, transformers ")
    ours = FileTokenizer(built.directory)
    assert tokenize_example(ours, TRICKY, "billing 7") == tokenize_example(theirs, TRICKY, "billing 7")
    assert tokenize_example(FileTokenizer(directory), TRICKY, "billing 7") != tokenize_example(theirs, TRICKY,
                                                                                              "billing 7")
    assert tokens.described(str(directory)) == built


def test_a_tokenizer_transformers_refuses_is_recorded_not_raised(tmp_path):
    """Remote code is never run at plan time: the plan falls back to tokenizer.json as it is and says why."""
    import json

    directory = _qwen2_dir(tmp_path)
    (directory / "config.json").write_text(json.dumps({"model_type": "mine"}))
    (directory / "tokenizer_config.json").write_text(json.dumps(
        {"auto_map": {"AutoTokenizer": [None, "tokenization_mine.MyTokenizer"]}, "bos_token": "<s>"}))
    built = tokens.described(str(directory))
    assert built.directory is None and "trust_remote_code=True" in built.what


def test_a_chat_template_override_is_the_one_the_plan_renders():
    from ftc.data.tiny import tokenizer_dir
    from tests.conftest import plan_for

    template = "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}"
    tok = FileTokenizer(tokenizer_dir(plan_for([]).model), chat_template=template)
    assert tok.apply_chat_template([{"role": "user", "content": "Hi"}]) == "[user] Hi\n"


def test_ftc_train_warns_when_the_data_differs_from_the_plans():
    """The runtime's check of the plan's counts: silent when they agree, naming the split and both counts when
    they do not (examples always; tokens where the plan counted them)."""
    from types import SimpleNamespace

    from ftc.runtime.console import data_drift

    planned = SimpleNamespace(examples={"train": 10, "validation": 2, "test": 2}, tokens={"train": 500})
    same = SimpleNamespace(examples={"train": 10, "validation": 2, "test": 2}, tokens={"train": 500, "test": 90})
    assert data_drift(planned, same) is None
    fewer = SimpleNamespace(examples={"train": 10, "validation": 2, "test": 2}, tokens={"train": 492})
    warning = data_drift(planned, fewer)
    assert warning and "train: planned 10 examples / 500 tokens, trains 10 / 492" in warning
    estimated = SimpleNamespace(examples={"train": 10, "validation": 2, "test": 2}, tokens={})
    assert "test: planned 2 examples, trains 1" in data_drift(estimated, SimpleNamespace(
        examples={"train": 10, "validation": 2, "test": 1}, tokens={}))
