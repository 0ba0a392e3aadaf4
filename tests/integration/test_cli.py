"""The CLI as a user runs it: subprocesses, exit codes, Hydra flags, import hygiene.

Integration tier: each test starts a Python process (~0.6 s); none needs torch.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

HEAVY = ("torch", "transformers", "peft", "trl", "deepspeed", "ray", "bitsandbytes", "accelerate", "datasets")


def ftc(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "ftc.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def test_plan_default_prints_table(tmp_path):
    r = ftc("plan", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "memory/device" in r.stdout and "cost" in r.stdout and "fits" in r.stdout
    assert list(tmp_path.iterdir()) == []  # `ftc plan` writes nothing


def test_plan_json_is_the_plan():
    r = ftc("plan", "--json", "model=llama3_8b", "method=lora", "hardware=a100_80g_x4", "launcher=ray")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["deepspeed"]["zero_optimization"]["stage"] == 3
    assert plan["launcher"]["num_workers"] == 4


def test_bad_value_is_refused_without_traceback():
    r = ftc("plan", "method.r=0")
    assert r.returncode == 2
    assert "method.r: LoRA rank must be >= 1" in r.stdout + r.stderr
    assert "method.r=8" in r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr


def test_unknown_key_is_refused_naming_it():
    r = ftc("plan", "method.rank=8")
    assert r.returncode == 2
    assert "method.rank" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("override,said", [
    ("modle=llama3_8b", "modle: not a config key (did you mean model=llama3_8b?)"),
    ("method=qlroa", "method=qlroa: no such method option (did you mean method=qlora?"),
    ("data.fomat=chat", "data.fomat: not a config key (did you mean data.format=chat?)"),
    ("train.lr=abc", "train.lr=abc: Value 'abc' of type 'str' could not be converted to Float"),
])
def test_a_config_mistake_exits_2_with_the_nearest_valid_name(override, said):
    r = ftc("plan", override)
    assert r.returncode == 2 and said in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_wrong_type_is_refused_naming_it():
    r = ftc("plan", "method.r=sixteen")
    assert r.returncode != 0
    assert "method.r" in r.stderr and "Traceback" not in r.stderr


def test_missing_required_value_names_the_key():
    r = ftc("plan", "data=file")
    assert r.returncode == 2
    assert "data.path is required" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("flags,needle", [(["--cfg", "job"], "global_batch_size"), (["--info"], "Config search path"),
                                          (["--hydra-help"], "Hydra ("), (["--cfg", "hydra"], "sweep")])
def test_hydra_flags_work(flags, needle):
    r = ftc("plan", *flags)
    assert r.returncode == 0, r.stderr
    assert needle in r.stdout


def test_plan_multirun_prints_sweep_cost():
    r = ftc("plan", "-m", "model=mistral_7b", "method=qlora", "hardware=rtx4090", "method.r=8,16,32",
            "train.lr=1e-4,2e-4")
    assert r.returncode == 0, r.stderr
    assert "6 trials, predicted total $" in r.stdout


def test_plan_multirun_over_budget_is_refused():
    r = ftc("plan", "-m", "model=mistral_7b", "method=qlora", "hardware=rtx4090", "method.r=8,16",
            "budget.max_usd=0.05")
    assert r.returncode == 2
    assert "budget.max_usd: predicted $" in r.stdout and "for the sweep's 2 trials in total" in r.stdout


def test_top_level_help_and_unknown_command():
    assert "commands:" in ftc("--help").stdout
    r = ftc("frobnicate")
    assert r.returncode == 2 and "unknown command" in r.stderr


def test_plan_imports_no_heavy_library():
    code = ("import sys, io, contextlib\n"
            "import ftc.cli\n"
            "sys.argv=['ftc']\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    ftc.cli.main(['plan', 'model=mistral_7b', 'method=qlora', 'hardware=rtx4090'])\n")
    code += f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"


def test_plan_asks_transformers_for_the_tokenizer_in_a_child_and_imports_no_heavy_library(tmp_path):
    """A local model whose tokenizer class rebuilds the pipeline (Qwen2Tokenizer): the plan counts with the pipeline
    transformers builds, which a child process describes (importing transformers imports torch), and the plan's
    own process still imports none of the heavy libraries."""
    import os

    from ftc.data.tiny import tokenizer_dir
    from tests.conftest import borrowed_tokenizer, plan_for

    model = borrowed_tokenizer(tokenizer_dir(plan_for([]).model), tmp_path / "qwen2",
                               {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]})
    code = ("import sys, io, contextlib\n"
            "import ftc.cli\n"
            "out = io.StringIO()\n"
            "with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
            f"    ftc.cli.main(['plan', 'model=local', 'model.path={model}'])  # no weights: plan errors, exit 2\n"
            "print(out.getvalue())\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n")
    env = {**os.environ, "FTC_CACHE": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert "tokenized with the model's tokenizer, as training will: Qwen2Tokenizer, transformers" in r.stdout, \
        r.stdout + r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"
    assert list((tmp_path / "cache" / "tokenizers").iterdir())  # described once, cached for the next plan


def test_import_ftc_has_no_side_effects():
    code = "import os, sys; before=dict(os.environ); import ftc, ftc.cli; print(dict(os.environ)==before, " \
           f"[m for m in {HEAVY!r} if m in sys.modules])"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "True []"


@pytest.mark.slow
def test_config_tree_is_found_from_an_installed_wheel(tmp_path):
    """Build the wheel, install it into a plain directory, and plan a recipe from there (no checkout on the path)."""
    from tests.conftest import ROOT

    wheels, target = tmp_path / "wheels", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    wheel = next(wheels.glob("ftc-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    code = ("import sys, ftc, ftc.cli; assert ftc.__file__.startswith(sys.argv[1]), ftc.__file__; "
            "ftc.cli.main(['plan', 'recipe=qlora_mistral_7b_24gb'])")
    r = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True, cwd=tmp_path,
                       env={**__import__("os").environ, "PYTHONPATH": str(target)}, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "qlora_mistral_7b_24gb" in r.stdout and "fits" in r.stdout


def test_train_refuses_a_plan_whose_packages_this_machine_lacks(tmp_path):
    """The plan declared a tracker for the machine that trains; this one lacks it: refused before any weight loads,
    exit 2, no traceback, the run marked failed."""
    import importlib.util

    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here: nothing is missing")
    r = ftc("train", "hardware.packages=[wandb]", "train.report_to=[wandb]", f"output_dir={tmp_path}")
    assert r.returncode == 2, r.stderr[-2000:]
    assert "this machine lacks: wandb" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "adapter").exists()
    assert '"failed"' in (tmp_path / "events.jsonl").read_text()


def test_no_secret_reaches_the_console_or_a_file_of_a_refused_sweep(tmp_path):
    """Credentials in overrides (a token as a URI's user, a password holding '/', Hydra's escaped colons) are
    refused at plan, and neither the console (Hydra's own lines included) nor the sweep directory holds them."""
    token, password = "ghp_" + "Q1w2E3r4T5" * 4, "pass/word9"
    sweep = tmp_path / "sweep"
    r = subprocess.run([sys.executable, "-m", "ftc.cli", "train", "-m",
                        f"data.path=https://{token}@example.invalid/d.jsonl,s3://alice:{password}@bucket/d.jsonl",
                        f"hydra.sweep.dir={sweep}"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 2 and "secrets are never stored" in r.stdout + r.stderr
    assert token not in r.stdout + r.stderr and password not in r.stdout + r.stderr
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert token not in path.read_text(errors="replace") and password not in path.read_text(errors="replace")


def _bad_files(d):
    """The data files that crashed `ftc plan` with a traceback (issue: nothing silently wrong, round 4)."""
    import gzip
    import os

    good = json.dumps({"instruction": "Say hi", "input": "", "output": "hi"}) + "\n"
    packed = gzip.compress((good * 50).encode())
    (d / "cut.jsonl.gz").write_bytes(packed[: len(packed) // 2])
    (d / "not.parquet").write_text("not parquet at all")
    os.symlink("loop.jsonl", d / "loop.jsonl")
    (d / "deep.json").write_text("[" * 100000 + "]" * 100000)
    (d / "deep.jsonl").write_text('{"instruction": ' + "[" * 100000 + "]" * 100000 + ', "output": "x"}\n')
    (d / "surrogate.jsonl").write_text('{"instruction": "a\\ud800b", "input": "", "output": "x"}\n' * 3)
    return {"cut.jsonl.gz": "cannot be read", "not.parquet": "not readable as parquet",
            "loop.jsonl": "cannot be resolved", "deep.json": "nested more deeply",
            "deep.jsonl": "nested more deeply", "surrogate.jsonl": "unpaired surrogate"}


def test_bad_data_files_are_refused_in_one_line_naming_the_file(tmp_path):
    for name, says in _bad_files(tmp_path).items():
        r = ftc("plan", "data=file", f"data.path={tmp_path / name}", cwd=tmp_path)
        out = r.stdout + r.stderr
        assert r.returncode == 2 and "Traceback" not in out and says in out and name in out, (name, out[-1500:])


def test_a_csv_with_its_own_column_names_gets_one_override_that_works_as_printed(tmp_path):
    import csv
    import re

    path = tmp_path / "qa.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["question", "answer"])
        w.writerows([f"What is {i} plus {i % 7}?", str(i + i % 7)] for i in range(300))
    r = ftc("plan", "data=file", f"data.path={path}", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-1500:]
    assert r.stdout == ""  # no steps, memory or price computed from rows that failed their checks
    problems = [line for line in r.stderr.splitlines() if line.startswith("  - ")]
    assert len(problems) == 1 and "300 rows have no instruction/output columns" in problems[0], r.stderr
    fix = re.search(r"\(fix: (.*)\)$", problems[0]).group(1)
    assert fix == "data.fields.instruction=question data.fields.output=answer"
    r = ftc("plan", "data=file", f"data.path={path}", *fix.split(), cwd=tmp_path)
    assert r.returncode == 0 and "errors:" not in r.stdout, r.stdout[-1500:] + r.stderr[-1500:]


@pytest.mark.parametrize("override,key", [
    ("method.target_modules=[1,2]", "method.target_modules"),
    ("train.epochs=inf", "train.epochs"),
    ("train.seed=99999999999", "train.seed"),
    ("model.num_heads=3", "model.num_heads"),
    ("+train.trainer_kwargs.num_train_epohcs=2", "train.trainer_kwargs.num_train_epohcs"),
    ("+trian.lr=1", "trian"),
    ("launcher.storage_path=s3:/bucket/runs", "launcher.storage_path"),
])
def test_a_config_that_would_fail_late_or_crash_is_refused_at_plan_naming_its_key(tmp_path, override, key):
    r = ftc("plan", override, cwd=tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 2 and "Traceback" not in out and f"{key}:" in out, out[-1500:]


def test_an_output_directory_that_cannot_be_made_is_one_line(tmp_path):
    (tmp_path / "a_file").write_text("")
    r = ftc("train", f"output_dir={tmp_path / 'a_file' / 'run'}", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "cannot create the run directory" in r.stderr


def test_bash_completion_completes_commands_groups_options_and_keys(tmp_path):
    """`eval "$(ftc completion bash)"` in a real bash: `ftc plan mod<TAB>` offers model= (and the model. section),
    `model=llama3<TAB>` the options after bash's split at '=', `train.l<TAB>` the train keys."""
    import shutil

    if shutil.which("bash") is None:
        pytest.skip("no bash here")
    shim = tmp_path / "ftc"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m ftc.cli "$@"\n')
    shim.chmod(0o755)
    script = tmp_path / "complete.sh"
    script.write_text('eval "$(ftc completion bash)"\n'
                      't() { COMP_LINE="$1"; COMP_POINT=${#1}; _ftc; printf "%s|" "${COMPREPLY[@]}"; echo; }\n'
                      't "ftc pl"\nt "ftc plan mod"\nt "ftc plan model=llama3"\nt "ftc train train.l"\n')
    r = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120,
                       env={"PATH": f"{tmp_path}:/usr/bin:/bin", "HOME": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "plan|"
    assert set(lines[1].strip("|").split("|")) == {"model=", "model.", "model_tuning="}
    assert lines[2] == "llama3_70b|llama3_8b|"
    assert "train.lr=" in lines[3].split("|")


def test_help_lists_every_config_group_and_a_mistyped_command_gets_the_nearest():
    from pathlib import Path

    r = ftc("--help")
    groups = [p.name for p in (Path(__file__).resolve().parents[2] / "conf").iterdir()
              if p.is_dir() and p.name != "hydra" and list(p.glob("*.yaml"))]
    assert all(f"  {g}:" in r.stdout for g in groups), (groups, r.stdout[-800:])
    assert "objective:" in r.stdout and "sft" in r.stdout
    r = ftc("plam")
    assert r.returncode == 2 and "did you mean 'ftc plan'?" in r.stderr


def test_plan_help_is_ftcs_own_not_hydras_dump():
    for command in ("plan", "train"):
        r = ftc(command, "--help")
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith(f"usage: ftc {command}") and "common overrides:" in r.stdout
        assert "  objective:" in r.stdout and "model=local model.path=" in r.stdout
        assert "base_model" not in r.stdout and "Powered by Hydra" not in r.stdout
