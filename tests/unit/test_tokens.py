"""The truncation rules ``ftc plan`` and ``ftc train`` share (ftc/data/tokens.py), and the plan's tokenizer reading
what training's reads: no torch."""

from __future__ import annotations

import pytest

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
