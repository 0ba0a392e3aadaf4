"""hardware=auto: every GPU profile compiled and ranked; a deadline or a budget changes the choice."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

JOB = ["model=llama3_8b", "method=qlora", "data.max_length=2048", "train.epochs=30"]


def plan_json(*overrides):
    r = subprocess.run([sys.executable, "-m", "ftc.cli", "plan", "--json", "hardware=auto", *overrides],
                       capture_output=True, text=True, timeout=300)
    return r, (json.loads(r.stdout) if r.returncode == 0 else None)


def test_ranks_every_gpu_profile_and_runs_on_the_cheapest():
    from ftc.advisor import profiles

    r, plan = plan_json(*JOB)
    assert r.returncode == 0, r.stderr
    table = plan["hardware_table"]
    gpus = [p for p in profiles() if not p.startswith("cpu")]
    assert sorted(row["hardware"] for row in table) == sorted(gpus)
    usable = [row for row in table if row["ok"]]
    assert [row["usd"] for row in usable] == sorted(row["usd"] for row in usable)  # cheapest first
    assert plan["hardware"]["name"] == usable[0]["hardware"]
    assert plan["decisions"][0].startswith(f"hardware={usable[0]['hardware']} (hardware=auto")
    assert "runner-up" in plan["decisions"][0]
    multi = [row for row in table if row["workers"] > 1]
    assert multi and {row["launcher"] for row in multi} == {"local"}  # one node: a process per device, no Ray


def test_the_launcher_is_ray_where_the_local_one_is_refused_and_the_users_where_given():
    """GRPO's generation on several devices needs Ray (the compiler refuses the local launcher there), so those
    profiles are planned on Ray; a launcher the user names is kept on every profile, never swapped."""
    from ftc.advisor import advise

    options, _ = advise(["objective=grpo", "model=qwen2_5_0_5b", "method=lora"])
    kinds = {o.hardware: (o.plan.launcher.kind, o.plan.world_size) for o in options}
    assert all(kind == ("ray" if world > 1 else "local") for kind, world in kinds.values()), kinds
    options, _ = advise([*JOB, "launcher=ray"])
    assert {o.plan.launcher.kind for o in options} == {"ray"}
    assert all(o.overrides[1] == "launcher=ray" for o in options)


def test_a_deadline_changes_the_choice():
    _, free = plan_json(*JOB)
    fastest_cheap = free["hardware_table"][0]
    _, rushed = plan_json(*JOB, f"budget.max_hours={fastest_cheap['hours'] * 0.9:.4f}")
    assert rushed["hardware"]["name"] != fastest_cheap["hardware"]
    assert rushed["time"]["hours"] <= fastest_cheap["hours"] * 0.9
    assert not next(r for r in rushed["hardware_table"] if r["hardware"] == fastest_cheap["hardware"])["ok"]


def test_a_budget_no_profile_meets_is_refused_with_the_table():
    r, _ = plan_json(*JOB, "budget.max_usd=0.01")
    assert r.returncode == 2 and "found no GPU profile" in r.stderr and "budget.max_usd" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_sweep_runs_on_the_cheapest_profile_every_trial_fits_and_says_when_trials_differ():
    """70B QLoRA alone fits one 80 GB card (A100 or H100: within a cent of each other, the order turns on the
    evaluation's price); 70B LoRA needs four (85.9 GB each, as nvidia-smi reports them) with ZeRO-3: the sweep takes
    the profile both fit and names what the QLoRA trial alone would choose."""
    r = subprocess.run([sys.executable, "-m", "ftc.cli", "plan", "-m", "hardware=auto", "model=llama3_70b",
                        "method=qlora,lora", "train.epochs=1"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "the trials would not all choose the same profile; the sweep runs on a100_80g_x4" in r.stderr
    _, alone = plan_json("model=llama3_70b", "method=qlora", "train.epochs=1")
    assert alone["hardware"]["name"] in ("a100_80g", "h100") and alone["world_size"] == 1
    assert (f"trial 0 (model=llama3_70b method=qlora train.epochs=1) alone would choose {alone['hardware']['name']}"
            in r.stderr)
    assert "2 trials, predicted total $" in r.stdout


def test_hardware_auto_reads_a_local_data_file_once(tmp_path, monkeypatch):
    """Every profile's plan uses the same facts: the rows are read and checked once per process, not per profile."""
    from ftc.advisor import advise, profiles
    from ftc.compiler import facts
    from tests.conftest import write_jsonl

    path = write_jsonl(tmp_path / "rows.jsonl", [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(200)])
    reads = []
    real = facts.checked_rows
    monkeypatch.setattr(facts, "checked_rows", lambda p, *a: reads.append(p) or real(p, *a))
    options, chosen = advise(["data=file", f"data.path={path}", "model=qwen2_5_0_5b"])
    assert len(options) == len([p for p in profiles() if not p.startswith("cpu")]) and chosen is not None
    assert reads == [str(path)]
    assert all(o.plan.data.examples == options[0].plan.data.examples for o in options)
    path.write_text(path.read_text() + '{"instruction": "new", "output": "row"}\n')  # an edited file is read again
    again = advise(["data=file", f"data.path={path}", "model=qwen2_5_0_5b"])[0][0].plan
    assert again.data.examples["train"] == options[0].plan.data.examples["train"] + 1 and len(reads) == 2


def test_an_moe_is_ranked_on_all_its_experts_resident():
    """Qwen3-30B-A3B under QLoRA: the experts stay 16-bit (~58 GB), so no single card below 80 GB holds them, whatever
    its 3 B active parameters suggest; the profiles that run it shard it (FSDP); the plan says what 4-bit did to the
    experts."""
    r, plan = plan_json("model=qwen3_30b_a3b", "method=qlora")
    assert r.returncode == 0, r.stderr
    usable = [row for row in plan["hardware_table"] if row["ok"]]
    assert usable and all(row["strategy"].startswith("fsdp") or row["hardware"].startswith(("a100_80g", "h100"))
                          for row in usable)
    assert not any(row["ok"] for row in plan["hardware_table"] if row["workers"] == 1 and row["device_gb"] < 80)
    assert plan["model"]["moe"]["expert_weights"] == "bf16"
    assert any(d.startswith("QLoRA on a mixture of experts") for d in plan["decisions"])


def test_a_profile_where_it_fits_only_if_the_estimate_holds_ranks_after_every_one_where_it_fits():
    """hardware=auto never picks a card where the band's high end passes it while a card that fits outright exists
    (70B QLoRA: ~51 GB on the 48 GB L40S is tight, the 80 GB cards fit)."""
    from ftc.advisor import advise

    options, chosen = advise(["model=llama3_70b", "method=qlora"])
    tight = [options.index(o) for o in options if o.tight and not o.why_not]
    fits = [options.index(o) for o in options if not o.tight and not o.why_not]
    assert tight and fits and max(fits) < min(tight)
    assert chosen is not None and chosen.plan.memory.verdict == "fits"
    assert "l40s" in {options[i].hardware for i in tight}


def test_when_no_profile_fits_at_the_bands_high_end_it_says_so_and_lists_checked_fixes():
    """Qwen3-30B-A3B with QLoRA (issue 41's case): FSDP shards the 4-bit model, and auto chooses a profile where it
    fits outright. Kept whole on each GPU (train.strategy=ddp), every profile is tight at best: the first line says
    so and names the changes that make one fit outright, each found by compiling it. Mixtral with QLoRA, kept whole,
    fits nowhere: the refusal lists the same kind of fix, sharding first."""
    r, plan = plan_json("model=qwen3_30b_a3b", "method=qlora")
    assert r.returncode == 0, r.stderr
    assert "no GPU profile fits" not in r.stderr
    assert plan["memory"]["verdict"] == "fits" and plan["train"]["strategy"] == "fsdp"
    r, plan = plan_json("model=qwen3_30b_a3b", "method=qlora", "train.strategy=ddp")
    assert r.returncode == 0, r.stderr
    assert "no GPU profile fits at the memory band's high end" in r.stderr
    assert "- method.target_experts=false: fits a100_80g outright" in r.stderr
    assert "- train.strategy=fsdp: fits " in r.stderr
    assert f"going on with the cheapest tight profile, {plan['hardware']['name']}" in r.stderr
    assert plan["memory"]["verdict"] == "tight"
    r, _ = plan_json("model=mixtral_8x7b", "method=qlora", "train.strategy=ddp")
    assert r.returncode == 2 and "found no GPU profile" in r.stderr
    assert "changes that make one fit, each checked by compiling it" in r.stderr
    assert "- train.strategy=fsdp: fits " in r.stderr


def test_the_table_shows_micro_batch_prices_that_differ_and_whole_verdicts():
    from ftc.advisor import VERDICT_WIDTH, advise, table

    options, _ = advise(["model=qwen3_30b_a3b", "method=qlora"])
    text = table(options)
    head, *rows = text.splitlines()
    assert "micro" in head.split()
    start = head.index("verdict")
    verdicts, firsts, current = [], [], None
    for line in rows:
        if line[:start].strip():  # a row of its own; else the verdict's next line
            current = [line[start:].strip()]
            verdicts.append(current)
            firsts.append(line)
        else:
            current.append(line[start:].strip())
    assert len(firsts) == len(options)
    for o, words, first in zip(options, verdicts, firsts):
        assert all(len(w) <= VERDICT_WIDTH for w in words)
        if o.why_not:  # never cut: the whole reason, wrapped
            assert " ".join(words) == "no: " + " ".join(o.why_not.split())
        cells = first.split()
        assert cells[5] == f"{o.plan.batch.micro}x{o.plan.batch.grad_accum}"
        assert cells[6] == f"{o.plan.memory.per_device_gb:.1f}/{o.plan.memory.device_gb:g}"
        assert cells[7] == {"a100_80g": "80GB", "h100": "80GB", "rtx4090": "24GB"}.get(o.hardware.split("_x")[0],
                                                                                        cells[7])
    # Prices a fraction of a cent apart are shown apart, and the ranking follows them.
    shown = [float(line.split()[9]) for line in firsts]
    ok = [o.usd for o in options if not o.why_not and not o.tight]
    assert ok == sorted(ok)
    assert len(set(shown)) == len({round(o.usd, 6) for o in options})
