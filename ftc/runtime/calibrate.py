"""``ftc calibrate``: measure this machine for the time model in under a minute and write a hardware profile.

The probe trains LoRA (all linear layers, AdamW) on random tokens with a model of the experiment's shape (its own
architecture numbers when it has at most ~100M parameters; else a 2-layer proxy of its width, capped at 1024)
at two batch sizes, and fits ``seconds per micro-step = fixed + tokens / rate``: the rate gives the achieved
training FLOP/s, the intercept the fixed per-step cost. It then times greedy decoding of 16 prompts (what the
evaluation does) for the weight bytes read per second. The profile (a copy of the experiment's hardware profile
with the measured figures) lands in ``$FTC_CONFIG_DIR/hardware/<name>.yaml`` (default ``~/.config/ftc``) and is
usable as ``hardware=<name>``.
"""

from __future__ import annotations

import platform
import time
from datetime import date
from pathlib import Path
from typing import Any

from ftc.compiler import estimate as est
from ftc.plan import Plan

PROXY_LIMIT = 100e6  # parameters: larger models are probed through a 2-layer proxy of their width


def user_hardware_dir() -> Path:
    from ftc.config.schema import user_config_dir

    return user_config_dir() / "hardware"


def _shape(plan: Plan) -> dict[str, int]:
    m = plan.model
    if m.params <= PROXY_LIMIT:
        return dict(hidden=m.hidden_size, layers=m.num_layers, heads=m.num_heads, kv=m.num_kv_heads,
                    inter=m.intermediate_size, vocab=m.vocab_size)
    hidden = min(m.hidden_size, 1024)
    heads = max(1, hidden // max(m.head_dim, 1))
    return dict(hidden=hidden, layers=2, heads=heads, kv=max(1, min(m.num_kv_heads, heads)),
                inter=int(m.intermediate_size * hidden / m.hidden_size), vocab=min(m.vocab_size, 32000))


def _arch(s: dict[str, int]) -> est.Arch:
    return est.Arch(hidden=s["hidden"], layers=s["layers"], heads=s["heads"], kv_heads=s["kv"],
                    head_dim=s["hidden"] // s["heads"], intermediate=s["inter"], vocab=s["vocab"], tied=False,
                    gated_mlp=True)


LONG = 16  # steps of the long probe runs (the short one: 4)


def probe_plan(overrides: list[str], micro: int, steps: int, output_dir: str = "/tmp/ftc-probe") -> Plan:
    """A probe is an experiment: the user's, at one micro batch of ``micro`` sequences for ``steps`` steps, locally,
    without validation, checkpoints or loggers, compiled (every rule runs) like any other."""
    from ftc.compiler.frontend import plan
    from ftc.errors import UserError

    p = plan([*overrides, "launcher=local", "train.epochs=null", f"train.max_steps={steps}",
              f"train.micro_batch_size={micro}", f"train.global_batch_size={micro}", "train.report_to=[none]",
              "train.eval_steps=1000000", "train.save_steps=1000000", "train.early_stopping_patience=null",
              f"output_dir={output_dir}"])
    if p.errors:
        raise UserError("ftc calibrate: the probe of this experiment does not compile:\n  " + "\n  ".join(p.errors))
    return p


def probe(plan: Plan, overrides: list[str]) -> dict[str, Any]:
    """The experiment itself for a few steps when its model is small (every real cost is in: data collation,
    padding, the plan's loss, the Trainer's per-step work), else a synthetic probe on a proxy of its width."""
    if plan.model.params <= PROXY_LIMIT and "://" not in plan.data.path:
        return _probe_experiment(plan, overrides)
    return _probe_synthetic(plan)


def _probe_experiment(plan: Plan, overrides: list[str], short: int = 4, long: int = LONG) -> dict[str, Any]:
    """Runs the experiment's own training for a few steps; the difference of a short and a long run at the plan's
    micro batch cancels the Trainer's start-up, and a long run at a quarter of it gives the fixed cost per step."""
    import tempfile

    from ftc.runtime.train import train

    def run(micro: int, steps: int) -> tuple[float, float]:
        with tempfile.TemporaryDirectory() as tmp:
            figures = train(probe_plan(overrides, micro, steps, tmp), tmp)
        return figures["train_runtime_s"], figures["tokens_seen"]

    big = max(2, plan.batch.micro)
    small = max(1, big // 4)
    (s_short, t_short), (s_long, t_long) = run(big, short), run(big, long)
    step_big = max((s_long - s_short) / (long - short), 1e-9)
    tokens_big = (t_long - t_short) / (long - short)
    startup = max(s_short - short * step_big, 0.0)
    s_small, t_small = run(small, long)
    step_small = max((s_small - startup) / long, 1e-9)
    tokens_small = t_small / long
    per_token = max((step_big - step_small) / max(tokens_big - tokens_small, 1e-9), 1e-12)
    fixed = max(step_big - per_token * tokens_big, 0.0)
    decode = _decode_probe(plan, _shape(plan))
    return {"shape": _shape(plan), "seq": plan.data.tokens_per_example, "micro": [small, big],
            "step_s": [step_small, step_big], "fixed_step_s": fixed, "tokens_per_s": tokens_big / step_big,
            "achieved_tflops": plan.time.train_flops_per_token / per_token / 1e12, "real_tokens_per_step": tokens_big,
            "how": f"the experiment itself: {short} and {long} steps at micro batch {big}, {long} at {small}",
            "proxy": False, **decode}


def _decode_probe(plan: Plan, s: dict[str, int]) -> dict[str, Any]:
    """Greedy decoding of 16 prompts (what the evaluation does): seconds per step and weight bytes read per second."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    device = "cuda" if plan.hardware.accelerator == "cuda" and torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if plan.precision == "bf16" else torch.float32
    model = LlamaForCausalLM(LlamaConfig(vocab_size=s["vocab"], hidden_size=s["hidden"], num_hidden_layers=s["layers"],
                                         num_attention_heads=s["heads"], num_key_value_heads=s["kv"],
                                         intermediate_size=s["inter"], max_position_embeddings=4096)).to(device, dtype)
    model.eval()
    seq = max(8, min(plan.data.tokens_per_example, plan.data.max_length))
    prompts = torch.randint(0, s["vocab"], (16, seq), device=device)
    model.generation_config.pad_token_id = 0
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    new = 16
    with torch.no_grad():
        model.generate(input_ids=prompts, max_new_tokens=2, min_new_tokens=2, do_sample=False)  # warm-up
        sync()
        start = time.perf_counter()
        model.generate(input_ids=prompts, max_new_tokens=new, min_new_tokens=new, do_sample=False)
        sync()
    step = (time.perf_counter() - start) / new
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return {"decode_step_s": step, "decode_gbs": weights / step / 1e9, "device": device}


def _probe_synthetic(plan: Plan, repeats: int = 4) -> dict[str, Any]:
    """Times LoRA training steps at two batch sizes on random tokens with a proxy of the experiment's width."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    s = _shape(plan)
    torch.manual_seed(0)
    device = "cuda" if plan.hardware.accelerator == "cuda" and torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if plan.precision == "bf16" else torch.float32
    config = LlamaConfig(vocab_size=s["vocab"], hidden_size=s["hidden"], num_hidden_layers=s["layers"],
                         num_attention_heads=s["heads"], num_key_value_heads=s["kv"], intermediate_size=s["inter"],
                         max_position_embeddings=4096, tie_word_embeddings=False)
    model = LlamaForCausalLM(config).to(device, dtype)
    model = get_peft_model(model, LoraConfig(r=plan.method.r or 16, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    seq = max(8, min(plan.data.tokens_per_example, plan.data.max_length))
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def step_seconds(micro: int) -> float:
        ids = torch.randint(0, s["vocab"], (micro, seq), device=device)
        for i in range(repeats + 1):  # the first is warm-up
            if i == 1:
                sync()
                start = time.perf_counter()
            model(input_ids=ids, labels=ids).loss.backward()
            opt.step()
            opt.zero_grad()
        sync()
        return (time.perf_counter() - start) / repeats

    big = max(2, plan.batch.micro)
    small = max(1, big // 4)
    t_big, t_small = step_seconds(big), step_seconds(small)
    per_token = max((t_big - t_small) / ((big - small) * seq), 1e-12)
    fixed = max(t_big - per_token * big * seq, 0.0)
    fpt = est.train_flops_per_token(_arch(s), method="lora", context=seq, checkpointing=False)
    achieved = fpt / per_token

    return {"shape": s, "seq": seq, "micro": [small, big], "step_s": [t_small, t_big], "fixed_step_s": fixed,
            "tokens_per_s": big * seq / t_big, "achieved_tflops": achieved / 1e12, "real_tokens_per_step": big * seq,
            "how": f"a {s['layers']}-layer proxy of width {s['hidden']} on random tokens, micro batches {small} and "
                   f"{big}", "proxy": True, **_decode_probe(plan, s)}


def profile_yaml(plan: Plan, name: str, measured: dict[str, Any]) -> str:
    from ftc.compiler.facts import installed_packages

    hw = plan.hardware
    lines = [
        f"# Written by `ftc calibrate` on {date.today().isoformat()} on {platform.node() or 'this machine'} "
        f"({measured['device']}): {measured['how']}.",
        "# peak_tflops is the achieved training rate (mfu 1.0), not a",
        "# datasheet figure; step_overhead_s the fixed cost of a micro-step; decode_gbs the weight bytes read per",
        f"# second while generating. Other fields are copied from the profile `{hw.name}`.",
        "defaults: [base_hardware, _self_]",
        f"name: {name}",
        f"accelerator: {hw.accelerator}",
        f"gpus_per_node: {hw.gpus_per_node}",
        f"nodes: {hw.nodes}",
        f"memory_gb: {hw.device_gb:g}",
        f"bf16: {str(hw.bf16).lower()}",
        f"peak_tflops: {measured['achieved_tflops']:.4g}",
        "mfu: 1.0",
        f"mfu_basis: measured by ftc calibrate on {date.today().isoformat()}",
        f"usd_per_hour: {hw.usd_per_hour:g}",
        f"cpus_per_worker: {hw.cpus_per_worker}",
        f"step_overhead_s: {measured['fixed_step_s']:.4g}",
        f"decode_gbs: {measured['decode_gbs']:.4g}",
        f"preemptions_per_hour: {hw.preemptions_per_hour:g}",
        f"packages: [{', '.join(n for n, ok in installed_packages().items() if ok)}]   # this machine's",
    ]
    if hw.memory_bandwidth_gbs is not None:
        lines.append(f"memory_bandwidth_gbs: {hw.memory_bandwidth_gbs:g}")
    if hw.spot_usd_per_hour is not None:
        lines.append(f"spot_usd_per_hour: {hw.spot_usd_per_hour:g}")
    return "\n".join(lines) + "\n"


def run(plan: Plan, name: str, overrides: list[str]) -> dict[str, Any]:
    """Probes the experiment of ``overrides`` (compiled as ``plan``) and writes the profile ``name``."""
    import tempfile

    from ftc.runtime import console

    with tempfile.TemporaryDirectory() as logs:
        console.setup(logs, plan.hardware.accelerator)  # the libraries' noise goes to a log, as in a run
        measured = probe(plan, overrides)
    target = user_hardware_dir() / f"{name}.yaml"
    from ftc.runtime import artifacts

    artifacts.atomic_write_text(target, profile_yaml(plan, name, measured))
    return {"measured": measured, "profile": str(target)}


def _seconds(x: float) -> str:
    return f"{x * 1000:.1f} ms" if x < 1 else f"{x:.2f} s"


def report(before: Plan, after: Plan, measured: dict[str, Any], overrides: list[str]) -> str:
    """Predicted (by the profile the experiment had, and by the calibrated one) vs measured. The predictions are the
    compiler's own time model: the probe's micro-step compiled as an experiment on each profile."""
    small, big = measured["micro"]

    def step(hardware: str) -> tuple[float, float]:
        """(seconds, real tokens/s) of one micro-step of ``big`` sequences, as the plan predicts them."""
        p = probe_plan([*overrides, f"hardware={hardware}"], big, LONG)
        return p.schedule.tokens_per_step / p.time.tokens_per_s, p.time.tokens_per_s

    (s_before, r_before), (s_after, r_after) = step(before.hardware.name), step(after.hardware.name)
    what = "measured (proxy)" if measured.get("proxy") else "measured"
    rows = [
        (f"micro-step of {big} sequences", _seconds(s_before), _seconds(measured["step_s"][1]), _seconds(s_after)),
        ("training tokens/s", f"{r_before:,.0f}", f"{measured['tokens_per_s']:,.0f}", f"{r_after:,.0f}"),
        ("fixed cost per micro-step", _seconds(before.hardware.step_overhead_s), _seconds(measured["fixed_step_s"]),
         _seconds(after.hardware.step_overhead_s)),
        ("the experiment: training", f"{before.time.train_hours * 3600:.0f} s", "-",
         f"{after.time.train_hours * 3600:.0f} s"),
        ("the experiment: validation + evaluation", f"{before.time.eval_hours * 3600:.0f} s", "-",
         f"{after.time.eval_hours * 3600:.0f} s"),
    ]
    head = ("", f"predicted ({before.hardware.name})", what, f"predicted ({after.hardware.name})")
    width = [max(len(r[i]) for r in rows + [head]) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, width)).rstrip() for r in [head] + rows) + \
        f"\n(probe: {measured['how']}; decode {_seconds(measured['decode_step_s'])} per step of 16 prompts)"
