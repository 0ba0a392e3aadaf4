"""Every rule: the bad case is refused (or warned) naming the key; the fixed case passes that rule."""

from __future__ import annotations

import json

import pytest

from tests.conftest import plan_for, write_jsonl

pytestmark = pytest.mark.unit


def _keys(items):
    return {i.split(":", 1)[0] for i in items}


# (bad overrides, key named, severity, fixed overrides)
CASES = [
    pytest.param(["method.r=0"], "method.r", "error", ["method.r=8"], id="lora-rank"),
    pytest.param(["method.r=512"], "method.r", "warning", ["method.r=64"], id="lora-rank-high"),
    pytest.param(["method.alpha=0"], "method.alpha", "error", ["method.alpha=16"], id="lora-alpha"),
    pytest.param(["method.dropout=1.5"], "method.dropout", "error", ["method.dropout=0.1"], id="lora-dropout"),
    pytest.param(["method.target_modules=[q_proj,attn_c]"], "method.target_modules", "error",
                 ["method.target_modules=[q_proj,v_proj]"], id="targets-not-in-arch"),
    pytest.param(["model=phi3_mini", "hardware=a100_80g", "method.target_modules=[q_proj]"], "method.target_modules",
                 "error", ["model=phi3_mini", "hardware=a100_80g", "method.target_modules=[qkv_proj]"],
                 id="targets-phi3-fused"),
    pytest.param(["method=qlora", "method.quant_bits=8"], "method.quant_bits", "error", ["method=qlora"],
                 id="quant-bits"),
    pytest.param(["method=full", "method.quant_bits=4"], "method.quant_bits", "error", ["method=full"],
                 id="full-with-4bit"),
    pytest.param(["method=qlora", "method.quant_type=int4"], "method.quant_type", "error",
                 ["method=qlora", "method.quant_type=fp4"], id="quant-type"),
    pytest.param(["method=qlora", "hardware=cpu_x2", "launcher=ray", "train.zero_stage=3"], "train.zero_stage",
                 "error", ["method=qlora", "hardware=cpu_x2", "launcher=ray", "train.zero_stage=0"], id="qlora-zero3"),
    pytest.param(["train.zero_stage=1"], "train.zero_stage", "error", ["train.zero_stage=0"], id="zero-stage-value"),
    pytest.param(["hardware=cpu_x2", "launcher=ray", "train.strategy=fsdp", "train.zero_stage=3"], "train.zero_stage",
                 "error", ["hardware=cpu_x2", "launcher=ray", "train.strategy=fsdp"], id="fsdp-with-zero-stage"),
    pytest.param(["train.strategy=fsdp"], "train.strategy", "warning", ["train.strategy=auto"], id="fsdp-one-worker"),
    pytest.param(["hardware=cpu_x2", "launcher=ray", "train.strategy=fsdp", "train.loss=selective"], "train.loss",
                 "error", ["hardware=cpu_x2", "launcher=ray", "train.strategy=fsdp"], id="fsdp-selective-loss"),
    pytest.param(["hardware=cpu_x2", "launcher=ray", "train.strategy=fsdp", "train.offload=optimizer"],
                 "train.offload", "error", ["hardware=cpu_x2", "launcher=ray", "train.strategy=fsdp",
                                            "train.offload=params"], id="fsdp-optimizer-offload"),
    pytest.param(["train.offload=params"], "train.offload", "error", ["train.offload=none"],
                 id="offload-one-worker"),
    pytest.param(["model=llama3_70b", "method=qlora", "hardware=rtx4090_x2", "launcher=ray", "train.offload=params",
                  "hardware.host_memory_gb=32"], "hardware.host_memory_gb", "error",
                 ["model=llama3_70b", "method=qlora", "hardware=rtx4090_x2", "launcher=ray", "train.offload=params",
                  "hardware.host_memory_gb=128"], id="offload-host-memory"),
    pytest.param(["train.zero_stage=3"], "train.zero_stage", "warning", ["train.zero_stage=0"], id="zero3-one-worker"),
    pytest.param(["model=local", "model.path=/nonexistent/model"], "model.path", "error",
                 ["model=local", "model.path=/nonexistent/model", "model.hidden_size=64", "model.num_layers=2",
                  "model.num_heads=4", "model.vocab_size=1000"], id="arch-unknown"),
    pytest.param(["data.max_length=4096"], "data.max_length", "error", ["data.max_length=512"], id="context"),
    pytest.param(["data.max_length=8"], "data.max_length", "error", ["data.max_length=64"], id="too-short"),
    pytest.param(["model.trust_remote_code=true"], "model.trust_remote_code", "warning",
                 ["model.trust_remote_code=false"], id="remote-code"),
    pytest.param(["model.attn_implementation=flash_attention_2"], "model.attn_implementation", "error",
                 ["model.attn_implementation=sdpa"], id="flash-on-cpu"),
    pytest.param(["hardware=t4", "train.precision=bf16"], "train.precision", "error",
                 ["hardware=t4", "train.precision=fp16"], id="bf16-on-t4"),
    pytest.param(["train.precision=fp16"], "train.precision", "error", ["train.precision=fp32"], id="fp16-on-cpu"),
    pytest.param(["train.precision=fp8"], "train.precision", "error", ["train.precision=auto"], id="precision-name"),
    pytest.param(["model=llama3_8b", "hardware=t4", "data.max_length=2048"], "hardware", "error",
                 ["model=llama3_8b", "hardware=t4", "data.max_length=2048", "method=qlora"], id="oom"),
    pytest.param(["model=llama3_70b", "hardware=a100_80g", "method=full", "data.max_length=2048"], "hardware",
                 "error", ["model=llama3_70b", "hardware=h100", "method=qlora", "data.max_length=2048",
                           "train.gradient_checkpointing=true"], id="oom-full-70b"),
    pytest.param(["hardware=cpu_x2", "hardware.nodes=2"], "launcher", "error",
                 ["hardware=cpu_x2", "hardware.nodes=2", "launcher=ray"], id="local-multi-node"),
    pytest.param(["objective=grpo", "hardware=a100_80g_x4"], "launcher", "error",
                 ["objective=grpo", "hardware=a100_80g_x4", "launcher=ray"], id="local-grpo-multi-device"),
    pytest.param(["launcher.kind=slurm"], "launcher.kind", "error", ["launcher.kind=local"], id="launcher-kind"),
    pytest.param(["data.max_rows=100"], "data.max_rows", "error", ["data.max_samples=100"], id="max-rows-file"),
    pytest.param(["model=llama3_70b", "method=qlora", "hardware=h100", "hardware.spot=true",
                  "train.global_batch_size=256", "data.max_length=2048"], "train.preemption_grace_s", "warning",
                 ["model=llama3_70b", "method=qlora", "hardware=h100", "hardware.spot=true",
                  "train.global_batch_size=256", "data.max_length=2048", "train.preemption_grace_s=3600"],
                 id="preemption-grace"),
    pytest.param(["hardware=cpu_x2", "launcher=ray", "launcher.num_workers=4"], "launcher.num_workers", "error",
                 ["hardware=cpu_x2", "launcher=ray", "launcher.num_workers=2"], id="too-many-workers"),
    pytest.param(["hardware=cpu_x2", "launcher=ray", "launcher.num_workers=1"], "launcher.num_workers", "warning",
                 ["hardware=cpu_x2", "launcher=ray"], id="idle-devices"),
    pytest.param(["launcher=ray", "launcher.max_failures=-1"], "launcher.max_failures", "error",
                 ["launcher=ray", "launcher.max_failures=1"], id="max-failures"),
    pytest.param(["launcher=ray", "launcher.include_dashboard=true", "launcher.dashboard_host=0.0.0.0"],
                 "launcher.dashboard_host", "warning", ["launcher=ray", "launcher.include_dashboard=true"],
                 id="dashboard-exposed"),
    pytest.param(["train.global_batch_size=12", "train.micro_batch_size=8"], "train.global_batch_size", "error",
                 ["train.global_batch_size=16", "train.micro_batch_size=8"], id="batch-divisible"),
    pytest.param(["train.global_batch_size=0"], "train.global_batch_size", "error", ["train.global_batch_size=8"],
                 id="batch-positive"),
    pytest.param(["train.epochs=null"], "train.epochs", "error", ["train.epochs=null", "train.max_steps=10"],
                 id="no-schedule"),
    pytest.param(["train.max_steps=10"], "train.max_steps", "warning", ["train.max_steps=10", "train.epochs=null"],
                 id="steps-and-epochs"),
    pytest.param(["train.global_batch_size=4096"], "train.global_batch_size", "error",
                 ["train.global_batch_size=16"], id="epoch-smaller-than-batch"),
    pytest.param(["train.lr=0"], "train.lr", "error", ["train.lr=1e-4"], id="lr-zero"),
    pytest.param(["train.lr=0.5"], "train.lr", "warning", ["train.lr=1e-3"], id="lr-high"),
    pytest.param(["method=full", "train.lr=1e-3"], "train.lr", "warning", ["method=full", "train.lr=1e-5"],
                 id="lr-full"),
    pytest.param(["train.warmup_ratio=1.5"], "train.warmup_ratio", "error", ["train.warmup_ratio=0.1"], id="warmup"),
    pytest.param(["train.scheduler=cosinus"], "train.scheduler", "error", ["train.scheduler=linear"], id="scheduler"),
    pytest.param(["train.max_grad_norm=-1"], "train.max_grad_norm", "error", ["train.max_grad_norm=0"], id="clip"),
    pytest.param(["train.save_total_limit=0"], "train.save_total_limit", "error", ["train.save_total_limit=1"],
                 id="keep-checkpoints"),
    pytest.param(["train.early_stopping_patience=0"], "train.early_stopping_patience", "error",
                 ["train.early_stopping_patience=2"], id="patience"),
    pytest.param(["+train.trainer_kwargs.max_seq_length=512"], "train.trainer_kwargs.max_seq_length", "error",
                 ["+train.trainer_kwargs.dataset_num_proc=1"], id="trl-renamed-field"),
    pytest.param(["+train.trainer_kwargs.evaluation_strategy=steps"], "train.trainer_kwargs.evaluation_strategy",
                 "error", ["+train.trainer_kwargs.torch_compile=false"], id="trl-removed-field"),
    pytest.param(["data.path=/nonexistent/train.jsonl"], "data.path", "error", [], id="data-missing"),
    pytest.param(["data=sample_chat", "model.chat_template='{% for m in messages %}{{ m.content }'"],
                 "model.chat_template", "error",
                 ["data=sample_chat", "model.chat_template='{% for m in messages %}{{ m.content }}{% endfor %}'"],
                 id="chat-template-syntax"),
    pytest.param(["model.num_heads=3"], "model.num_heads", "error", ["model.num_heads=4"], id="heads-divide-hidden"),
    pytest.param(["model.num_kv_heads=3"], "model.num_kv_heads", "error", ["model.num_kv_heads=2"],
                 id="heads-divide-kv-heads"),
    pytest.param(["train.seed=4294967296"], "train.seed", "error", ["train.seed=7"], id="seed-range"),
    pytest.param(["launcher.storage_path=s3://"], "launcher.storage_path", "error",
                 ["launcher.storage_path=s3://bucket/runs"], id="storage-uri-no-bucket"),
    pytest.param(["launcher.storage_path=s3:/bucket/runs"], "launcher.storage_path", "error",
                 ["launcher.storage_path=s3://bucket/runs"], id="storage-uri-one-slash"),
    pytest.param(["+train.trainer_kwargs.num_train_epohcs=2"], "train.trainer_kwargs.num_train_epohcs", "error",
                 ["+train.trainer_kwargs.dataloader_pin_memory=false"], id="trainer-keyword"),
    pytest.param(["data.format=xml"], "data.format", "error", ["data.format=alpaca"], id="data-format"),
    pytest.param(["+data.fields.answer=out"], "data.fields.answer", "error", ["+data.fields.output=out"],
                 id="data-field-name"),
    pytest.param(["data.template=vicuna"], "data.template", "error", ["data.template=plain"], id="template"),
    pytest.param(["data.format=text"], "data.completion_only_loss", "warning",
                 ["data.format=text", "data.completion_only_loss=false"], id="text-loss"),
    pytest.param(["data.test_fraction=0.7"], "data.test_fraction", "error", ["data.test_fraction=0.2"],
                 id="split-fraction"),
    pytest.param(["data.test_path=null", "data.test_fraction=0"], "data.test_fraction", "error",
                 ["data.test_path=null", "data.test_fraction=0", "eval.enabled=false"], id="no-test-split"),
    pytest.param(["data.max_samples=0"], "data.max_samples", "error", ["data.max_samples=100"], id="max-samples"),
    pytest.param(["objective=dpo"], "data.format", "error", ["objective=dpo", "data=sample_preference"],
                 id="dpo-needs-pairs"),
    pytest.param(["data=sample_preference"], "objective", "error", ["data=sample_preference", "objective=dpo"],
                 id="pairs-need-dpo"),
    pytest.param(["objective=dpo", "data=sample_preference", "objective.max_prompt_length=192"],
                 "objective.max_prompt_length", "error",
                 ["objective=dpo", "data=sample_preference", "objective.max_prompt_length=100"], id="prompt-length"),
    pytest.param(["objective=dpo", "data=sample_preference", "objective.beta=0"], "objective.beta", "error",
                 ["objective=dpo", "data=sample_preference", "objective.beta=0.1"], id="dpo-beta"),
    pytest.param(["model.adapter=/nonexistent/run"], "model.adapter", "error", [], id="adapter-missing"),
    pytest.param(["hardware=a10g", "model=mistral_7b", "method=qlora", "hardware.spot=true"], "hardware.spot", "error",
                 ["hardware=a10g", "model=mistral_7b", "method=qlora", "hardware.spot=true",
                  "hardware.spot_usd_per_hour=0.45"], id="spot-without-price"),
    pytest.param(["model=mistral_7b", "method=qlora", "hardware=rtx4090", "budget.max_usd=0.01"], "budget.max_usd",
                 "error", ["model=mistral_7b", "method=qlora", "hardware=rtx4090", "budget.max_usd=10"], id="budget"),
    pytest.param(["launcher.storage_path=s3://AKIAIOSFODNN7EXAMPLE:wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY@b/runs"],
                 "launcher.storage_path", "error", ["launcher.storage_path=s3://b/runs"], id="secret-in-value"),
    pytest.param(["method.target_experts=true"], "method.target_experts", "warning", [], id="experts-on-dense"),
    pytest.param(["model=gpt_oss_20b", "method=qlora", "hardware=a100_80g"], "method.quant_bits", "error",
                 ["model=gpt_oss_20b", "method=lora", "hardware=a100_80g"], id="stored-mxfp4-qlora"),
    pytest.param(["objective=grpo", "objective.rewards=[]"], "objective.rewards", "error", ["objective=grpo"],
                 id="grpo-no-rewards"),
    pytest.param(["train.report_to=[neptune]"], "train.report_to", "error", ["train.report_to=[none]"],
                 id="unknown-logger"),
    pytest.param(["eval.baselines=[base,fewshot]"], "eval.baselines", "error", ["eval.baselines=[base,prompted]"],
                 id="unknown-baseline"),
    pytest.param(["train.token_metrics=true", "train.loss=selective"], "train.loss", "error",
                 ["train.token_metrics=true", "train.loss=auto"], id="token-metrics-selective"),
    pytest.param(["data.test_path=null", "data.test_fraction=0.0005"], "data.test_fraction", "error",
                 ["data.test_path=null", "data.test_fraction=0.1"], id="empty-test-split"),
    pytest.param(["data=sample_messy"], "data.pii", "warning", ["data=sample_messy", "data.pii=mask"],
                 id="personal-data"),
    pytest.param(["model=mistral_7b", "method=qlora", "hardware=rtx4090", "budget.max_gpu_hours=0.001"],
                 "budget.max_gpu_hours", "error",
                 ["model=mistral_7b", "method=qlora", "hardware=rtx4090", "budget.max_gpu_hours=5"], id="gpu-hours"),
]


# The rule that finds each case (``declared_values``: a value outside the range or choices its schema field
# declares): test_rule checks it, and test_every_rule_has_a_bad_and_a_fixed_case walks the registry with it.
RULE_OF = {
    "arch-unknown": "architecture_known", "flash-on-cpu": "attention", "heads-divide-hidden": "attention_heads",
    "heads-divide-kv-heads": "attention_heads", "batch-divisible": "batch_sizes", "budget": "budget",
    "gpu-hours": "budget", "chat-template-syntax": "chat_template", "context": "context_length",
    "too-short": "context_length", "dashboard-exposed": "dashboard_binding", "data-missing": "data_files",
    "data-field-name": "data_format", "text-loss": "data_format", "personal-data": "data_quality",
    "lora-rank": "declared_values", "lora-alpha": "declared_values", "lora-dropout": "declared_values",
    "quant-bits": "declared_values", "quant-type": "declared_values", "zero-stage-value": "declared_values",
    "precision-name": "declared_values", "max-failures": "declared_values", "batch-positive": "declared_values",
    "lr-zero": "declared_values", "warmup": "declared_values", "scheduler": "declared_values",
    "clip": "declared_values", "keep-checkpoints": "declared_values", "patience": "declared_values",
    "seed-range": "declared_values", "template": "declared_values", "split-fraction": "declared_values",
    "max-samples": "declared_values", "dpo-beta": "declared_values", "experts-on-dense": "experts",
    "grpo-no-rewards": "generation", "lora-rank-high": "lora_rank", "token-metrics-selective": "loss_implementation",
    "oom": "memory_fits", "oom-full-70b": "memory_fits", "data-format": "objective", "dpo-needs-pairs": "objective",
    "pairs-need-dpo": "objective", "prompt-length": "objective", "lr-high": "optimizer", "lr-full": "optimizer",
    "bf16-on-t4": "precision", "fp16-on-cpu": "precision", "preemption-grace": "preemption_grace",
    "qlora-zero3": "qlora_with_zero3", "full-with-4bit": "quantization", "remote-code": "remote_code",
    "unknown-logger": "reporting", "unknown-baseline": "baselines",
    "no-schedule": "schedule_length", "steps-and-epochs": "schedule_length",
    "epoch-smaller-than-batch": "schedule_length", "secret-in-value": "secrets_in_config",
    "empty-test-split": "split_sizes", "no-test-split": "splits", "spot-without-price": "spot_price",
    "adapter-missing": "start_adapter", "stored-mxfp4-qlora": "stored_quantization",
    "targets-not-in-arch": "target_modules", "targets-phi3-fused": "target_modules",
    "trl-renamed-field": "trl_fields", "trl-removed-field": "trl_fields", "trainer-keyword": "trl_fields",
    "local-multi-node": "workers", "local-grpo-multi-device": "workers", "launcher-kind": "workers",
    "too-many-workers": "workers", "max-rows-file": "max_rows",
    "idle-devices": "workers", "storage-uri-no-bucket": "workers", "storage-uri-one-slash": "workers",
    "zero3-one-worker": "zero_stage_values", "fsdp-with-zero-stage": "strategy", "fsdp-one-worker": "strategy",
    "fsdp-selective-loss": "strategy", "fsdp-optimizer-offload": "offload", "offload-one-worker": "offload",
    "offload-host-memory": "offload",
}
# A rule whose bad case needs more than overrides (a traced step): its own test, named here.
BESPOKE = {"traced_step": "test_traced_step_warns_when_the_trace_disagrees_with_the_analytic_model"}


@pytest.mark.parametrize("bad,key,severity,fixed", CASES)
def test_rule(bad, key, severity, fixed, request):
    plan = plan_for(bad)
    found = [f for f in plan.findings if f.key == key and f.severity == severity]
    assert found, f"{bad}: expected a {severity} on {key}, got {plan.errors} / {plan.warnings}"
    assert found[0].message and found[0].fix, found[0]
    assert found[0].rule == RULE_OF[request.node.callspec.id], found[0]
    if fixed:
        good = plan_for(fixed)
        assert not [f for f in good.findings if f.key == key and (f.severity == "error" or severity == "warning")]


def test_findings_stay_structured_in_plan_json():
    import json

    from ftc.plan import Plan

    plan = plan_for(["method.r=0", "method.r=512"][:1])
    data = json.loads(plan.to_json())
    assert {"severity": "error", "key": "method.r", "message": "LoRA rank must be >= 1, got 0",
            "fix": "method.r=8", "rule": "declared_values"} in data["findings"]
    assert data["errors"] == list(plan.errors) and Plan.from_dict(data).findings == plan.findings


def test_every_rule_has_a_bad_and_a_fixed_case():
    """Walks the registry: each rule is named by a case of CASES (its bad and fixed overrides) or has a test of its
    own (BESPOKE); a case names a rule that exists."""
    from ftc.compiler.rules import DECLARED, RULES

    names = {r.__name__ for r in RULES}
    assert set(RULE_OF) == {c.id for c in CASES}
    assert set(RULE_OF.values()) <= names | {DECLARED}
    assert names - set(RULE_OF.values()) - set(BESPOKE) == set(), "a rule without a bad/fixed case"
    assert all(callable(globals().get(test)) for test in BESPOKE.values())


def test_traced_step_warns_when_the_trace_disagrees_with_the_analytic_model():
    import dataclasses

    from ftc.compiler.compile import compile
    from ftc.compiler.facts import TraceFacts, gather
    from tests.conftest import typed_config

    cfg = typed_config([])
    facts = gather(cfg)
    plan = compile(cfg, facts)

    def traced(activations_bytes: float):
        trace = TraceFacts(micro=plan.batch.micro, seq=plan.data.max_length, activations_bytes=activations_bytes,
                           flops=1e9, seconds=1.0)
        return compile(cfg, dataclasses.replace(facts, trace=trace))

    analytic = traced(1.0).memory.traced.analytic_gb * 1e9  # the analytic activations at the traced shape
    found = []
    for factor in (2.0, 1.0):  # twice the analytic activations: warned; the same: silent
        found.append([f for f in traced(analytic * factor).findings if f.rule == "traced_step"])
    assert found[0] and found[0][0].severity == "warning" and found[0][0].fix, found[0]
    assert not found[1]
    from ftc.compiler.rules import RULES

    assert len(RULES) >= 20
    assert len({c.values[1] for c in CASES}) >= 30


def test_default_experiment_is_clean():
    plan = plan_for([])
    assert plan.errors == ()
    assert plan.warnings == ()


def test_all_problems_reported_together():
    plan = plan_for(["method.r=0", "train.lr=0", "data.max_length=4096"])
    assert {"method.r", "train.lr", "data.max_length"} <= _keys(plan.errors)


def test_unreadable_and_empty_data_files(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    plan = plan_for(["data=file", f"data.path={empty}"])
    assert any("has no rows" in e for e in plan.errors)
    bad = tmp_path / "data.txt"
    bad.write_text("hello")
    plan = plan_for(["data=file", f"data.path={bad}"])
    assert any("unsupported file type" in e for e in plan.errors)
    ok = write_jsonl(tmp_path / "ok.jsonl", [{"instruction": f"a{i}", "output": "b"} for i in range(50)])
    assert not [e for e in plan_for(["data=file", f"data.path={ok}"]).errors if e.startswith("data.path")]


BAD_FILES = [
    pytest.param(['{"instruction": "a", "output": "b"}', '{"instruction": "a"'], ["data.format=alpaca"],
                 ":2: invalid JSON", id="malformed-json"),
    pytest.param(['{"instruction": "a", "output": "b"}', '{"instruction": "c"}'], ["data.format=alpaca"],
                 ":2: missing field 'output'", id="missing-output"),
    pytest.param(['{"messages": [{"role": "human", "content": "hi"}, {"role": "bot", "content": "yo"}]}'],
                 ["data.format=chat"], ":1: messages[0] must be {role: system|user|assistant", id="chat-roles"),
    pytest.param(['{"prompt": "a", "chosen": "b", "rejected": "c"}', '{"prompt": "a", "chosen": "b"}'],
                 ["data.format=preference", "objective=dpo"], ":2: missing field 'rejected'", id="preference-pair"),
]


@pytest.mark.parametrize("lines,overrides,needle", BAD_FILES)
def test_plan_checks_every_row_of_a_local_file(tmp_path, lines, overrides, needle):
    """`ftc plan` runs the row checks `ftc train` runs: a bad row is a plan error naming file:line."""
    path = write_jsonl(tmp_path / "rows.jsonl", lines)
    errors = [e for e in plan_for(["data=file", f"data.path={path}", *overrides]).errors if e.startswith("data.path")]
    assert any(f"{path}{needle}" in e for e in errors), errors


def test_plan_names_the_line_of_a_non_utf8_row(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"instruction": "a", "output": "b"}\n{"instruction": "caf\xe9", "output": "b"}\n')
    errors = plan_for(["data=file", f"data.path={path}"]).errors
    assert any(f"{path}:2: not UTF-8" in e for e in errors), errors


def test_every_bad_row_is_counted_and_the_list_capped(tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", ['{"instruction": "a"}'] * 25 + ['{"instruction": "a", "output": "b"}'])
    errors = [e for e in plan_for(["data=file", f"data.path={path}"]).errors if e.startswith("data.path")]
    assert len([e for e in errors if "missing field 'output'" in e]) == 10
    assert any("... and 15 more" in e for e in errors), errors


def test_unset_max_length_adapts_to_the_model(tmp_path):
    """Defaults never produce an error: the default model's context is 512, an unset max_length follows it."""
    path = write_jsonl(tmp_path / "mine.jsonl", [{"instruction": f"a{i}", "output": "b"} for i in range(40)])
    plan = plan_for(["data=file", f"data.path={path}"])
    assert plan.errors == () and plan.data.max_length == 512
    assert "data.max_length=512 (null: the model's context of 512 tokens)" in plan.decisions
    big = plan_for(["model=llama3_8b", "hardware=a100_80g", "data=file", f"data.path={path}"])
    assert big.data.max_length == 2048 and any("capped at 2048" in d for d in big.decisions)


def test_a_json_object_with_several_row_lists_is_refused_naming_them(tmp_path):
    rows = [{"instruction": f"a{i}", "output": "b"} for i in range(20)]
    path = tmp_path / "wrapped.json"
    path.write_text(json.dumps({"train": rows, "test": rows[:3]}))
    errors = [e for e in plan_for(["data=file", f"data.path={path}"]).errors if e.startswith("data.path")]
    assert any("several lists of objects ('train', 'test')" in e for e in errors), errors
    one = tmp_path / "one.json"
    one.write_text(json.dumps({"data": rows}))  # one list: its rows
    plan = plan_for(["data=file", f"data.path={one}"])
    assert not [e for e in plan.errors if e.startswith("data.path")] and plan.data.examples["train"] == 16


def test_too_few_distinct_examples_for_the_splits_is_refused_and_the_fix_plans(tmp_path):
    path = write_jsonl(tmp_path / "few.jsonl", [{"instruction": f"a{i % 4}", "output": "b"} for i in range(40)])
    bad = plan_for(["data=file", f"data.path={path}"])
    assert any(e.startswith("data.test_fraction: the test split would be empty") and "at least 10 distinct" in e
               for e in bad.errors), bad.errors
    fixed = plan_for(["data=file", f"data.path={path}", "eval.enabled=false", "train.global_batch_size=4"])
    assert not [e for e in fixed.errors if e.startswith(("data.", "train.global_batch_size"))], fixed.errors


def test_rules_md_is_generated_from_the_registry():
    from ftc.compiler.rules import RULES
    from ftc.compiler.rules_doc import description, render
    from tests.conftest import ROOT

    assert (ROOT / "docs" / "RULES.md").read_text() == render(), "run: python -m ftc.compiler.rules_doc > docs/RULES.md"
    assert all(description(r) for r in RULES), "a rule without a docstring"
