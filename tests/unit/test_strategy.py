"""How several workers share the model, planned: DDP, DeepSpeed ZeRO, FSDP2 (4-bit weights included) and offload to
CPU memory, each with the state it really keeps, the host memory it needs and the copies it pays for."""

from __future__ import annotations

import pytest

from ftc.compiler import estimate as est
from tests.conftest import plan_for

pytestmark = pytest.mark.unit

SEVENTY_B_ON_TWO_4090 = ["model=llama3_70b", "method=qlora", "hardware=rtx4090_x2", "launcher=ray"]


def test_a_70b_qlora_on_two_24gb_cards_shards_with_fsdp_offloads_and_fits():
    plan = plan_for(SEVENTY_B_ON_TWO_4090)
    assert plan.errors == ()
    assert plan.train.strategy == "fsdp" and plan.train.offload == "params"
    assert plan.memory.verdict == "fits" and plan.memory.high_gb <= plan.memory.device_gb
    # the 4-bit weights are stored in the compute dtype so FSDP can shard them; the run's settings say FSDP2 + offload
    assert plan.method.quantization.storage_dtype == plan.method.quantization.compute_dtype
    assert plan.fsdp["fsdp"] is True and plan.fsdp["fsdp_config"]["cpu_offload"] is True
    assert plan.fsdp["fsdp_config"]["version"] == 2 and plan.deepspeed is None
    # host memory per node: both workers' shares of the 4-bit weights and the adapters' state
    assert plan.memory.host_gb == pytest.approx(2 * plan.memory.breakdown["offloaded_to_host"], rel=0.01)
    assert plan.memory.host_gb > 30
    assert plan.time.offload_s > 0
    said = "\n".join(plan.decisions)
    assert "strategy=fsdp" in said and "offload=params (nothing cheaper fits" in said
    # the same run without offload does not fit: offload was chosen because nothing cheaper does
    held = plan_for(SEVENTY_B_ON_TWO_4090 + ["train.offload=none"])
    assert held.memory.verdict != "fits" and held.train.strategy == "fsdp"
    assert any(f.key == "hardware" and "train.offload=params" in f.fix for f in held.findings)


def test_the_whole_4bit_model_on_each_gpu_stays_ddp_when_it_fits():
    plan = plan_for(["model=llama3_8b", "method=qlora", "hardware=a100_80g_x4", "launcher=ray"])
    assert plan.train.strategy == "ddp" and plan.train.offload == "none" and plan.fsdp is None
    assert any(d.startswith("strategy=ddp") for d in plan.decisions)
    assert plan.method.quantization.storage_dtype == "uint8"  # not sharded: bitsandbytes' own packing


def test_fsdp_keeps_state_in_the_weights_dtype_not_zero3s_fp32_copies():
    job = ["model=llama3_8b", "method=full", "hardware=a100_80g_x4", "launcher=ray", "train.precision=bf16",
           "train.micro_batch_size=1", "train.gradient_checkpointing=true", "train.offload=none"]
    zero3 = plan_for(job + ["train.strategy=deepspeed"])
    fsdp = plan_for(job + ["train.strategy=fsdp"])
    assert zero3.train.zero_stage == 3 and fsdp.train.strategy == "fsdp"
    # ZeRO: fp32 master weight + gradient + two fp32 moments = 16 B; FSDP in bf16: gradient + two moments = 6 B
    ratio = zero3.memory.breakdown["adapters_grads_optimizer"] / fsdp.memory.breakdown["adapters_grads_optimizer"]
    assert ratio == pytest.approx(16 / 6, rel=0.01)
    assert fsdp.memory.breakdown["weights"] == pytest.approx(zero3.memory.breakdown["weights"], rel=0.01)
    assert fsdp.memory.per_device_gb < zero3.memory.per_device_gb


def test_offload_pays_for_its_copies_and_holds_what_it_moves_in_host_memory():
    job = ["model=llama3_70b", "method=lora", "hardware=a100_80g_x4", "launcher=ray", "train.strategy=fsdp",
           "train.micro_batch_size=1", "train.gradient_checkpointing=true", "train.max_steps=100", "train.epochs=null"]
    kept = plan_for(job + ["train.offload=none"])
    moved = plan_for(job + ["train.offload=params", "hardware.host_memory_gb=680"])
    assert moved.errors == () and kept.errors == () and moved.warnings == ()
    assert moved.memory.breakdown["weights"] == pytest.approx(est.OFFLOAD_STAGING_GB, abs=0.01)
    assert moved.memory.per_device_gb < kept.memory.per_device_gb
    assert moved.memory.host_gb > 4 * kept.memory.breakdown["weights"] * 0.99  # the 4 workers' shards
    assert kept.time.offload_s == 0 and moved.time.offload_s > 0
    extra_h = (moved.time.train_hours - kept.time.train_hours)
    assert extra_h == pytest.approx(100 * moved.time.offload_s / 3600, rel=0.05)
    assert moved.deepspeed is None and moved.fsdp["fsdp_config"]["cpu_offload"] is True


def test_offload_that_saves_nothing_on_the_device_says_so():
    plan = plan_for(["model=llama3_8b", "method=lora", "hardware=a100_80g_x4", "launcher=ray", "train.strategy=fsdp",
                     "train.offload=params", "hardware.host_memory_gb=680"])
    found = [f for f in plan.findings if f.key == "train.offload" and f.severity == "warning"]
    assert found and "saves nothing" in found[0].message and found[0].fix == "train.offload=none"


def test_deepspeed_offload_is_written_into_its_config():
    plan = plan_for(["model=llama3_8b", "method=full", "hardware=a100_40g_x4", "launcher=ray",
                     "train.offload=optimizer", "hardware.host_memory_gb=340"])
    zero = plan.deepspeed["zero_optimization"]
    assert plan.train.strategy == "deepspeed" and zero["offload_optimizer"]["device"] == "cpu"
    assert "offload_param" not in zero and plan.memory.host_gb > 0
    both = plan_for(["model=llama3_8b", "method=full", "hardware=a100_40g_x4", "launcher=ray",
                     "train.offload=params", "hardware.host_memory_gb=340"])
    assert both.deepspeed["zero_optimization"]["offload_param"]["device"] == "cpu"
    assert both.memory.per_device_gb < plan.memory.per_device_gb


def test_hardware_auto_chooses_a_sharded_consumer_pair_when_it_is_the_cheapest_that_fits(monkeypatch):
    from ftc import advisor

    monkeypatch.setattr(advisor, "profiles", lambda: ["rtx4090", "rtx4090_x2", "l40s"])
    options, chosen = advisor.advise(["model=llama3_70b", "method=qlora", "hardware.host_memory_gb=128"])
    assert chosen is not None and chosen.hardware == "rtx4090_x2" and not chosen.tight
    assert advisor.sharing(chosen.plan) == "fsdp+offload"
    single = next(o for o in options if o.hardware == "rtx4090")
    assert single.why_not  # one 24 GB card cannot hold a 4-bit 70B
    assert "fsdp+offload" in advisor.table(options)


def test_the_local_launcher_runs_a_process_per_device_of_its_one_node_as_ray_runs_a_worker():
    """The 70B recipe's plan on one 2-GPU machine without Ray: the same world, strategy, memory and price as on
    Ray; several nodes and GRPO's one training process stay refused, each naming the fix."""
    local = plan_for(SEVENTY_B_ON_TWO_4090[:-1] + ["launcher=local"])
    ray = plan_for(SEVENTY_B_ON_TWO_4090)
    assert local.errors == () and local.launcher.kind == "local"
    assert local.world_size == ray.world_size == 2 and local.launcher.num_workers == 2
    assert (local.train.strategy, local.train.offload) == (ray.train.strategy, ray.train.offload) == ("fsdp", "params")
    assert local.memory.high_gb == ray.memory.high_gb and local.memory.host_gb == ray.memory.host_gb
    assert local.cost.device_hours == pytest.approx(ray.cost.device_hours)  # both devices are paid for
    assert local.cost.device_hours == pytest.approx(2 * local.time.hours, rel=1e-3)
    cpu = plan_for(["hardware=cpu_x2", "launcher=local"])
    assert cpu.world_size == 2 and cpu.deepspeed["zero_optimization"]["stage"] == 3 and cpu.errors == ()
    two_nodes = plan_for(["hardware=cpu_x2", "launcher=local", "hardware.nodes=2"])
    assert any(f.key == "launcher" and f.severity == "error" and "launcher=ray" in f.fix for f in two_nodes.findings)
    grpo = plan_for(["objective=grpo", "hardware=a100_80g_x4", "launcher=local"])
    assert grpo.world_size == 1
    assert any(f.key == "launcher" and "trains in one process" in f.message and "launcher=ray" in f.fix
               for f in grpo.findings)
