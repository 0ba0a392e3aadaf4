"""One registry of trainers (ftc/config/objectives.py): what every layer reads of an objective, and the objectives
it makes possible from a YAML file alone."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import ROOT, plan_for

pytestmark = pytest.mark.unit


def test_the_runtime_builds_exactly_the_registered_trainers():
    from ftc.config.objectives import TRAINERS
    from ftc.runtime.train import BUILDERS

    assert set(BUILDERS) == set(TRAINERS)
    for name, t in TRAINERS.items():
        assert t.name == name and t.formats and t.headline


def test_no_layer_compares_an_objective_or_trainer_name():
    """Every layer dispatches on the registry's entries, never on a name (an objective YAML named anything keeps
    its metrics and its rules)."""
    from ftc.config.objectives import TRAINERS

    names = "|".join(sorted(set(TRAINERS) | {p.stem for p in (ROOT / "conf" / "objective").glob("*.yaml")}
                            - {"base_objective"}))
    compared = re.compile(rf"""(==|!=|\bin)\s*\(?\s*["']({names})["']|["']({names})["']\s*(==|!=)""")
    offenders = []
    for path in (ROOT / "ftc").rglob("*.py"):
        if path.name == "objectives.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if compared.search(line) and not re.search(r"format|fmt", line):  # data.format=kto names a format
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []


def test_an_objective_from_a_yaml_alone_plans_runs_and_is_judged_as_its_trainer(tmp_path):
    """conf/objective/ipo.yaml names DPO's trainer and the IPO loss, nothing else: the plan costs it as DPO, the
    rules check its loss against TRL's, and a sweep of it ranks by preference accuracy."""
    from ftc.sweep.report import write_report

    assert (ROOT / "conf" / "objective" / "ipo.yaml").read_text().count("\n") < 10
    plan = plan_for(["objective=ipo", "data=sample_preference"])
    assert plan.errors == () and plan.objective.loss_type == "ipo"
    assert (plan.objective.sequences_per_example, plan.objective.reference_forwards) == (2, 1)
    bad = plan_for(["objective=ipo", "data=sample_preference", "objective.loss_type=nope"])
    assert any(e.startswith("objective.loss_type") and "ipo" in e for e in bad.errors)
    for n, accuracy in enumerate((0.6, 0.8)):
        trial = tmp_path / str(n)
        trial.mkdir()
        (trial / "plan.json").write_text(json.dumps({"objective": {"name": "ipo", "trainer": "dpo"}}))
        (trial / "summary.json").write_text(json.dumps({"status": "completed", "eval": {"tuned": {
            "preference_accuracy": accuracy, "logp_margin": 1.0}}}))
    text = write_report(str(tmp_path))
    assert "preference_accuracy" in text.split("\n", 3)[0] + text and text.index("| 1 ") < text.index("| 0 ")


def test_orpo_needs_no_reference_and_costs_less_than_dpo():
    orpo = plan_for(["objective=orpo", "data=sample_preference", "model=llama3_8b", "method=qlora",
                     "hardware=rtx4090"])
    dpo = plan_for(["objective=dpo", "data=sample_preference", "model=llama3_8b", "method=qlora", "hardware=rtx4090"])
    assert orpo.errors == () and orpo.objective.reference_forwards == 0
    assert orpo.time.train_flops_per_token < dpo.time.train_flops_per_token


def test_kto_unpairs_the_pairs_and_counts_its_steps_so():
    kto = plan_for(["objective=kto", "data=sample_preference"])
    dpo = plan_for(["objective=dpo", "data=sample_preference"])
    assert kto.errors == () and kto.objective.loss_type == "kto"
    assert kto.schedule.sequences_per_epoch == 2 * dpo.schedule.sequences_per_epoch
    assert kto.schedule.steps == 2 * dpo.schedule.steps


@pytest.mark.parametrize("objective", ["dpo", "orpo", "kto", "ipo"])
def test_a_preference_objective_refuses_other_data_with_the_fix(objective):
    plan = plan_for([f"objective={objective}"])
    error = next(e for e in plan.errors if e.startswith("data.format"))
    assert "not alpaca rows" in error and "data=sample_preference" in error


def test_grpo_prices_generation_apart_and_checks_its_rewards():
    """GRPO: the plan shows generation time and memory on their own, counts num_generations completions per prompt,
    and refuses rewards that cannot run and a batch of broken groups, each with the fix."""
    plan = plan_for(["objective=grpo"])
    o = plan.objective
    assert plan.errors == (), plan.errors
    assert o.generation == "transformers" and o.generation_hours > 0 and o.generation_gb > 0
    assert plan.time.train_hours >= o.generation_hours
    assert plan.schedule.sequences_per_epoch == o.num_generations * plan.data.train_examples
    assert any(d.startswith("GRPO:") and "decode steps" in d for d in plan.decisions)
    bad = plan_for(["objective=grpo", "train.global_batch_size=18",
                    "objective.rewards=[{kind: python, function: 'no_such.module:fn'}, {kind: regex, pattern: '('}]"])
    keys = {e.split(":")[0] for e in bad.errors}
    assert {"objective.rewards[0]", "objective.rewards[1]", "train.global_batch_size"} <= keys, bad.errors
    assert any("global_batch_size=16" in e for e in bad.errors)
    none = plan_for(["objective=grpo", "objective.rewards=[]"])
    assert any(e.startswith("objective.rewards") for e in none.errors)


def test_grpo_generation_that_cannot_fit_is_refused_with_a_fix_that_fits():
    job = ["objective=grpo", "model=llama3_8b", "method=qlora", "hardware=rtx4090", "objective.num_generations=16",
           "objective.max_completion_length=4096"]
    plan = plan_for([*job, "train.global_batch_size=256"])
    error = next(e for e in plan.errors if e.startswith("objective.num_generations"))
    fix = error.rsplit("(fix: ", 1)[1].rstrip(")")
    fixed = plan_for([*job, fix])
    assert not any(e.startswith("objective.num_generations") for e in fixed.errors), fixed.errors
    assert fixed.memory.fits


def test_a_user_reward_function_is_checked_for_its_signature(tmp_path, monkeypatch):
    from ftc.data.rewards import check

    (tmp_path / "my_rewards.py").write_text(
        "def good(completions, **kwargs):\n    return [1.0 for _ in completions]\n"
        "def bad(text):\n    return 1.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert check({"kind": "python", "function": "my_rewards:good"}) == ""
    assert "(completions, **kwargs)" in check({"kind": "python", "function": "my_rewards:bad"})
    assert "cannot be imported" in check({"kind": "python", "function": "my_rewards:missing"})


def test_built_in_rewards_score_what_they_say():
    from ftc.data.rewards import build, total

    answers = ["category: billing | priority: low"] * 3
    completions = ["Category: billing |  priority: low", "category: billing | priority: high", "hello"]
    assert build({"kind": "exact_match"})(completions, answer=answers) == [1.0, 0.0, 0.0]
    regex = build({"kind": "regex", "pattern": r"category: \w+ \| priority: \w+"})
    assert regex(completions, answer=answers) == [0.0, 1.0, 0.0]  # case matters to a format check
    assert build({"kind": "json", "keys": ["a"]})(['{"a": 1}', '{"b": 1}', "x"]) == [1.0, 0.0, 0.0]
    assert build({"kind": "length", "max_chars": 4})(["abcd", "abcdefgh"]) == [0.0, -1.0]
    assert total([{"kind": "exact_match"}, {"kind": "length", "max_chars": 10, "weight": 0.5}], completions,
                 answers)[0] == pytest.approx(1.0 - 0.5 * (34 - 10) / 10)


def test_labelled_kto_rows_are_checked_counted_and_refused_elsewhere(tmp_path):
    """data.format=kto: {prompt, completion, label: true|false} rows, one example each (no unpairing); a label that
    is not a boolean is a file:line error; other objectives refuse the format naming kto."""
    from tests.conftest import write_jsonl

    kto = plan_for(["objective=kto", "data=sample_kto"])
    assert kto.errors == (), kto.errors
    assert kto.schedule.sequences_per_epoch == kto.data.train_examples == 800
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "p", "completion": "c", "label": True},
                                               {"prompt": "p2", "completion": "c2", "label": "yes"}])
    plan = plan_for(["objective=kto", "data=file", f"data.path={bad}", "data.format=kto"])
    assert any(":2: field 'label' must be true or false" in e for e in plan.errors), plan.errors
    dpo = plan_for(["objective=dpo", "data=sample_kto"])
    assert any(e.startswith("data.format") and "objective=kto" in e for e in dpo.errors), dpo.errors


def test_grpo_with_vllm_generates_on_a_spare_gpu_or_beside_training_and_says_so():
    """On CUDA with vLLM on the target: a node of two GPUs under the local launcher gives vLLM the second one (TRL's
    server mode, nothing shared with training, the weight sync priced); one GPU colocates it, its pre-allocated
    share counted in the training GPU's memory; where neither can run the plan refuses with the fix."""
    grpo = ["objective=grpo", "model=llama3_8b", "method=qlora", "hardware.packages=[vllm]"]
    colocated = plan_for([*grpo, "hardware=a100_80g"])
    assert colocated.errors == (), colocated.errors
    o = colocated.objective
    assert o.generation == "vllm" and 0.1 <= o.vllm_gpu_memory_utilization <= 0.95
    vllm_gb = colocated.memory.breakdown["vllm_colocated"]
    assert vllm_gb == pytest.approx(o.vllm_gpu_memory_utilization * colocated.hardware.device_gb, rel=0.01)
    assert o.generation_gb > 16  # vLLM's own 16-bit copy of an 8B model, plus its KV cache
    assert any(d.startswith("generation=vllm (colocated") for d in colocated.decisions)

    server = plan_for([*grpo, "hardware=rtx4090_x2", "launcher=local"])
    assert server.errors == (), server.errors
    assert server.objective.generation == "vllm_server" and server.objective.vllm_gpu_memory_utilization == 0.9
    assert "vllm_colocated" not in server.memory.breakdown
    assert any(d.startswith("generation=vllm_server") and "127.0.0.1" in d for d in server.decisions)
    alone = plan_for([*grpo, "hardware=rtx4090", "objective.generation=transformers"])
    assert server.objective.generation_hours > 0 and alone.objective.generation == "transformers"

    on_one = plan_for([*grpo, "hardware=rtx4090"])  # a 16-bit copy of 8B beside 4-bit training: over 24 GB
    assert on_one.objective.generation == "vllm"
    error = next(e for e in on_one.errors if e.startswith("hardware:"))
    assert "colocated vLLM" in error and "objective.generation=transformers" in error

    refusals = {
        "cpu": plan_for(["objective=grpo", "objective.generation=vllm"]),
        "not installed": plan_for(["objective=grpo", "model=llama3_8b", "method=qlora", "hardware=a100_80g",
                                   "objective.generation=vllm"]),
        "ray": plan_for([*grpo, "hardware=a100_80g_x4", "launcher=ray", "objective.generation=vllm_server"]),
        "one gpu": plan_for([*grpo, "hardware=a100_80g", "objective.generation=vllm_server"]),
    }
    for why, plan in refusals.items():
        assert any(e.startswith("objective.generation:") and "fix:" in e for e in plan.errors), (why, plan.errors)


def test_the_vllm_server_binds_localhost_on_the_second_gpu():
    from ftc.errors import UserError
    from ftc.runtime.grpo_vllm_server import command, devices

    plan = plan_for(["objective=grpo", "model=llama3_8b", "method=qlora", "hardware=rtx4090_x2", "launcher=local",
                     "hardware.packages=[vllm]"])
    cmd = command(plan, "/models/llama3", 8123)
    assert cmd[1:3] == ["-m", "trl.scripts.vllm_serve"]
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and cmd[cmd.index("--port") + 1] == "8123"
    assert cmd[cmd.index("--gpu_memory_utilization") + 1] == "0.9" and "--trust_remote_code" not in cmd
    assert devices(None) == ("0", "1") and devices("4, 6") == ("4", "6")
    with pytest.raises(UserError, match="two visible GPUs"):
        devices("3")
