"""A zoo of tiny random models of real Hugging Face architectures, built offline and loaded with model=local:
the plan's targets, trainable parameters and parameter count are what PEFT and the model really have, and each
one trains on the CPU."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from tests.conftest import plan_for  # noqa: E402
from tests.integration.helpers import FAST  # noqa: E402

pytestmark = pytest.mark.integration

DENSE = ["llama", "mistral", "qwen2", "phi3", "gemma2", "gpt2", "gpt_neox", "opt", "falcon", "bloom",
         "qwen3", "gemma3_text", "olmo2", "granite", "starcoder2", "phi", "cohere", "smollm3", "gptj"]
MOE = ["mixtral", "qwen3_moe", "olmoe", "deepseek_v3", "gpt_oss", "granitemoehybrid"]
HYBRID = ["falcon_h1", "mamba", "granitemoehybrid"]
ARCHS = DENSE + MOE + [a for a in HYBRID if a not in MOE]


def _config(arch: str, tok):
    import transformers as tf

    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    small = dict(vocab_size=1024, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, **ids)
    return {
        "llama": lambda: tf.LlamaConfig(**small, num_key_value_heads=2, intermediate_size=128,
                                        max_position_embeddings=512),
        "mistral": lambda: tf.MistralConfig(**small, num_key_value_heads=2, intermediate_size=128,
                                            max_position_embeddings=512),
        "qwen2": lambda: tf.Qwen2Config(**small, num_key_value_heads=2, intermediate_size=128,
                                        max_position_embeddings=512, tie_word_embeddings=True),
        "phi3": lambda: tf.Phi3Config(**small, num_key_value_heads=4, intermediate_size=128,
                                      max_position_embeddings=512),
        "gemma2": lambda: tf.Gemma2Config(**small, num_key_value_heads=2, head_dim=16, intermediate_size=128,
                                          max_position_embeddings=512),
        "gpt2": lambda: tf.GPT2Config(vocab_size=1024, n_embd=64, n_layer=2, n_head=4, n_positions=512, **ids),
        "gpt_neox": lambda: tf.GPTNeoXConfig(**small, intermediate_size=128, max_position_embeddings=512),
        "opt": lambda: tf.OPTConfig(vocab_size=1024, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                    ffn_dim=128, max_position_embeddings=512, word_embed_proj_dim=64, **ids),
        "falcon": lambda: tf.FalconConfig(**small, max_position_embeddings=512),
        "bloom": lambda: tf.BloomConfig(vocab_size=1024, hidden_size=64, n_layer=2, n_head=4, **ids),
        "qwen3": lambda: tf.Qwen3Config(**small, num_key_value_heads=2, head_dim=16, intermediate_size=128,
                                        max_position_embeddings=512),
        "gemma3_text": lambda: tf.Gemma3TextConfig(**small, num_key_value_heads=2, head_dim=16, intermediate_size=128,
                                                   max_position_embeddings=512, sliding_window=64),
        "olmo2": lambda: tf.Olmo2Config(**small, num_key_value_heads=2, intermediate_size=128,
                                        max_position_embeddings=512),
        "granite": lambda: tf.GraniteConfig(**small, num_key_value_heads=2, intermediate_size=128,
                                            max_position_embeddings=512),
        "starcoder2": lambda: tf.Starcoder2Config(**small, num_key_value_heads=2, intermediate_size=128,
                                                  max_position_embeddings=512),
        "phi": lambda: tf.PhiConfig(**small, intermediate_size=128, max_position_embeddings=512),
        "cohere": lambda: tf.CohereConfig(**small, num_key_value_heads=2, intermediate_size=128,
                                          max_position_embeddings=512),
        "smollm3": lambda: tf.SmolLM3Config(**small, num_key_value_heads=2, intermediate_size=128,
                                            max_position_embeddings=512),
        "gptj": lambda: tf.GPTJConfig(vocab_size=1024, n_embd=64, n_layer=2, n_head=4, rotary_dim=8, n_positions=512,
                                      **ids),
        # Mixtures of experts: 4 experts, top-2, in both layers (DeepSeek-V3: layer 0 dense, a shared expert, MLA)
        "mixtral": lambda: tf.MixtralConfig(**small, num_key_value_heads=2, intermediate_size=96, num_local_experts=4,
                                            num_experts_per_tok=2, max_position_embeddings=512),
        "qwen3_moe": lambda: tf.Qwen3MoeConfig(**small, num_key_value_heads=2, head_dim=16, intermediate_size=128,
                                               moe_intermediate_size=32, num_experts=4, num_experts_per_tok=2,
                                               max_position_embeddings=512),
        "olmoe": lambda: tf.OlmoeConfig(**small, num_key_value_heads=2, intermediate_size=32, num_experts=4,
                                        num_experts_per_tok=2, max_position_embeddings=512),
        "deepseek_v3": lambda: tf.DeepseekV3Config(
            **small, num_key_value_heads=4, intermediate_size=128, moe_intermediate_size=32, n_routed_experts=4,
            num_experts_per_tok=2, n_shared_experts=1, first_k_dense_replace=1, n_group=1, topk_group=1,
            kv_lora_rank=16, q_lora_rank=32, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=16,
            max_position_embeddings=512, rope_scaling=None),
        "gpt_oss": lambda: tf.GptOssConfig(**small, num_key_value_heads=2, head_dim=16, intermediate_size=32,
                                           num_local_experts=4, num_experts_per_tok=2, max_position_embeddings=512,
                                           layer_types=["sliding_attention", "full_attention"], sliding_window=64),
        # Hybrids: Falcon-H1 (attention and Mamba-2 side by side in every layer), Granite-4 (Mamba-2 and attention
        # layers, MoE MLPs with a shared expert), Mamba (no attention at all)
        "falcon_h1": lambda: tf.FalconH1Config(**small, num_key_value_heads=2, head_dim=16, intermediate_size=128,
                                               mamba_d_ssm=64, mamba_n_heads=4, mamba_d_head=16, mamba_d_state=16,
                                               mamba_n_groups=1, mamba_chunk_size=16, max_position_embeddings=512),
        "granitemoehybrid": lambda: tf.GraniteMoeHybridConfig(
            **small, num_key_value_heads=2, intermediate_size=32, num_local_experts=4, num_experts_per_tok=2,
            shared_intermediate_size=64, layer_types=["mamba", "attention"], mamba_n_heads=4, mamba_d_head=32,
            mamba_d_state=16, mamba_n_groups=1, mamba_chunk_size=16, max_position_embeddings=512),
        "mamba": lambda: tf.MambaConfig(vocab_size=1024, hidden_size=64, num_hidden_layers=2, state_size=8, expand=2,
                                        **ids),
    }[arch]()


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftc.runtime.model import tiny_path

    tok = AutoTokenizer.from_pretrained(tiny_path(plan_for([]).model))
    root = tmp_path_factory.mktemp("zoo")
    for arch in ARCHS:
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(_config(arch, tok))
        model.save_pretrained(root / arch, safe_serialization=True)
        tok.save_pretrained(root / arch)
    return root


def _peft_truth(path: Path, targets="all-linear", parameters=(), dropout=0.0):
    """What PEFT actually wraps (module leaves, expert parameters) and the trainable parameters it creates, for r=16,
    with the model's own parameter count and SDPA support."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path)
    params = sum(p.numel() for p in model.parameters())
    linear = {n.rsplit(".", 1)[-1] for n, m in model.named_modules()
              if isinstance(m, torch.nn.Linear) and not n.endswith("lm_head")}
    sdpa = type(model)._supports_sdpa
    peft = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=targets, lora_dropout=dropout,
                                            target_parameters=list(parameters) or None, task_type="CAUSAL_LM"))
    leaves = {n.rsplit(".", 1)[-1] for n in peft.targeted_module_names}
    experts = {re.sub(r"^.*?\.\d+\.", "", n, count=1) for n in getattr(peft, "targeted_parameter_names", ())}
    trainable = sum(p.numel() for p in peft.parameters() if p.requires_grad)
    return leaves, experts, trainable, params, sdpa, linear


@pytest.mark.parametrize("arch", ARCHS)
def test_plan_matches_what_peft_wraps(zoo, arch):
    """The plan's targets are what PEFT wraps with them (no error, no name silently remapped), its trainable count
    is what PEFT creates, and every linear layer it leaves out is one the plan says why."""
    plan = plan_for(["model=local", f"model.path={zoo / arch}", "hardware=cpu"])
    assert plan.errors == (), plan.errors
    me = plan.method
    leaves, experts, trainable, params, sdpa, linear = _peft_truth(zoo / arch, list(me.target_modules),
                                                                   me.target_parameters, me.dropout)
    assert set(me.target_modules) == leaves
    assert set(me.target_parameters) == experts
    assert me.trainable_params == trainable
    assert plan.model.params == params
    if not sdpa:  # an entry of _no_sdpa that gained SDPA since keeps eager: safe
        assert plan.model.attn_implementation == "eager"
    left_out = linear - leaves
    for name in left_out:
        assert any("leaves out" in d and name in d for d in plan.decisions), (name, plan.decisions)
    if arch in MOE:
        assert plan.model.moe is not None and experts, "all-linear adapts a mixture's experts"
        assert not set(plan.model.moe.routers) & leaves, "never the router"
        assert me.dropout == 0 and any(d.startswith("method.dropout=0") for d in plan.decisions)
    else:
        assert plan.model.moe is None and not experts


@pytest.mark.parametrize("arch", MOE)
def test_expert_layout_is_what_the_installed_transformers_loads(zoo, arch):
    """The stored -> loaded conversion (conf/families.yaml _moe) gives the fused expert parameters' names, expert
    count and shapes of the model transformers builds, and finds its routers."""
    from transformers import AutoModelForCausalLM

    from ftc.compiler.facts import load_families, moe_rules, weight_facts

    config = json.loads((zoo / arch / "config.json").read_text())
    facts = weight_facts(zoo / arch, config["vocab_size"], moe_rules(load_families(), config["model_type"]))
    model = AutoModelForCausalLM.from_pretrained(zoo / arch)
    loaded: dict[str, list] = {}
    for name, p in model.named_parameters():
        if p.dim() == 3 and ".experts." in name:
            loaded.setdefault(re.sub(r"^.*?\.\d+\.", "", name, count=1), []).append(tuple(p.shape))
    assert set(facts.experts) == set(loaded)
    for path, shapes in loaded.items():
        e = facts.experts[path]
        assert e.count == len(shapes) and {s[0] for s in shapes} == {e.experts}
        assert e.in_plus_out == sum(s[1] + s[2] for s in shapes)
    routers = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if n.endswith((".gate", ".router"))}
    assert set(facts.routers) == routers and not set(facts.routers) & set(facts.linear)


def test_the_output_head_is_an_expressible_target(zoo):
    """GPT-NeoX stores its head as embed_out; transformers 5 loads it as lm_head, the name PEFT matches."""
    plan = plan_for(["model=local", f"model.path={zoo / 'gpt_neox'}",
                     "method.target_modules=[query_key_value,lm_head]"])
    assert plan.errors == (), plan.errors
    leaves, _, trainable, _, _, _ = _peft_truth(zoo / "gpt_neox", ["query_key_value", "lm_head"])
    assert leaves == {"query_key_value", "lm_head"}
    assert plan.method.trainable_params == trainable


def test_targets_the_model_lacks_are_refused_with_its_modules(zoo):
    plan = plan_for(["model=local", f"model.path={zoo / 'opt'}",
                     "method.target_modules=[q_proj,k_proj,v_proj,o_proj,gate_proj]"])
    error = next(e for e in plan.errors if e.startswith("method.target_modules"))
    assert "['o_proj', 'gate_proj'] match no module" in error and "fc1" in error and "out_proj" in error


def test_gemma2_plans_eager_attention_and_its_own_loss(zoo):
    plan = plan_for(["model=local", f"model.path={zoo / 'gemma2'}"])
    assert plan.model.attn_implementation == "eager" and plan.train.loss == "model"
    assert any("no SDPA path" in d for d in plan.decisions)
    assert any("final_logit_softcapping" in d for d in plan.decisions)


def test_no_sdpa_list_is_safe_for_the_installed_transformers():
    """Every causal LM of the installed transformers without an SDPA path is planned as eager (else transformers
    refuses the plan's attention at load); an entry that gained SDPA is only reported (python -m tests.drift)."""
    import warnings

    from tests.drift import no_sdpa_drift

    drift = no_sdpa_drift()
    assert drift.unsafe == (), f"add to conf/families.yaml _no_sdpa: {drift.unsafe}"
    if drift.stale:
        warnings.warn(f"transformers gained SDPA for {drift.stale}: ftc still plans eager for them (safe, slower); "
                      "drop them from _no_sdpa once pyproject's lower bound has it", UserWarning, stacklevel=1)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_tokens_are_counted_with_the_models_tokenizer(zoo, arch):
    """The plan counts tokens with the tokenizer transformers builds for training, without torch in the plan: the
    same counts whether transformers loads tokenizer.json as it is (llama here: its generic backend) or a
    model-specific class rebuilds it (qwen2's Qwen2Tokenizer re-applies its own split pattern to this zoo's borrowed
    tiny vocabulary)."""
    from ftc.runtime.console import data_drift
    from ftc.runtime.data import build
    from ftc.runtime.model import load_tokenizer

    plan = plan_for(["model=local", f"model.path={zoo / arch}"])
    tokenizer = load_tokenizer(plan)
    assert any(f"as training will: {type(tokenizer).__name__}, transformers" in d for d in plan.decisions)
    splits = build(plan.data, tokenizer, plan.train.seed)
    assert plan.data.tokens == splits.report.tokens and plan.data.examples == splits.report.examples
    assert data_drift(plan.data, splits.report) is None


def test_the_plans_tokenizer_is_the_one_transformers_builds_for_every_model_type(tmp_path):
    """The tiny tokenizer under each zoo model type's config.json: whichever class transformers picks (qwen2:
    Qwen2Tokenizer, which rebuilds the pipeline; the rest: its generic backend), the plan's described tokenizer
    tokenizes the sample rows as transformers does; tokenizer.json as it is does not for qwen2, so the check can
    fail."""
    from ftc.data.tokens import FileTokenizer, described, load_tokenizer, tokenize_example
    from ftc.runtime.model import tiny_path
    from tests.conftest import borrowed_tokenizer

    source = Path(tiny_path(plan_for([]).model))  # as the zoo saves it: tokenizer_class TokenizersBackend
    rows = [json.loads(line) for line in (Path(__file__).parents[2] / "ftc/assets/sample/train.jsonl").open()][:300]
    texts = [(f"### Instruction:\n{r['instruction']}\n\n### Input:\n{r.get('input', '')}\n\n### Response:\n",
              r["output"]) for r in rows]
    classes, raw_differs = {}, set()
    for arch in ARCHS:
        directory = borrowed_tokenizer(source, tmp_path / arch)
        _config(arch, load_tokenizer(str(source))).save_pretrained(directory)
        theirs, built = load_tokenizer(str(directory)), described(str(directory))
        assert built.directory is not None, (arch, built.what)
        ours, raw = FileTokenizer(built.directory), FileTokenizer(directory)
        assert all(tokenize_example(ours, p, c) == tokenize_example(theirs, p, c) for p, c in texts), arch
        if any(tokenize_example(raw, p, c) != tokenize_example(theirs, p, c) for p, c in texts):
            raw_differs.add(arch)
        classes[arch] = type(theirs).__name__
    assert classes["qwen2"] == "Qwen2Tokenizer" and "qwen2" in raw_differs


@pytest.mark.parametrize("arch", ARCHS)
def test_trains_on_cpu(zoo, arch, tmp_path):
    from ftc.runtime.train import train

    overrides = ["model=local", f"model.path={zoo / arch}", *FAST, "train.max_steps=2", "train.eval_steps=2",
                 "train.save_steps=2", "train.global_batch_size=4", "eval.enabled=false", f"output_dir={tmp_path}"]
    plan = plan_for(overrides)
    assert plan.errors == (), plan.errors
    import dataclasses

    plan = dataclasses.replace(plan, output_dir=str(tmp_path))
    figures = train(plan, str(tmp_path))
    assert figures["steps"] == 2 and figures["train_loss"] > 0
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert set(saved["target_modules"]) == set(plan.method.target_modules)
    assert set(saved.get("target_parameters") or ()) == set(plan.method.target_parameters)
    from ftc.compiler.facts import safetensors_header

    header = safetensors_header(tmp_path / "adapter" / "adapter_model.safetensors")
    header.pop("__metadata__", None)
    import math

    assert sum(math.prod(t["shape"]) for t in header.values()) == plan.method.trainable_params
    if plan.method.target_parameters:  # the adapter holds the experts' LoRA weights
        assert any(".experts." in name for name in header)


@pytest.mark.parametrize("arch", MOE + ["falcon_h1", "mamba"])
def test_moe_and_hybrid_adapters_load_back_and_merge(zoo, arch, tmp_path):
    """A trained adapter of an MoE or hybrid model loads with PeftModel.from_pretrained (stock PEFT, as vLLM and
    other tools read it) and merges into the base weights."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from ftc.runtime.train import train

    plan = plan_for(["model=local", f"model.path={zoo / arch}", *FAST, "train.max_steps=1", "train.save_steps=1",
                     "train.eval_steps=1", "train.global_batch_size=2", "train.warmup_ratio=0", "eval.enabled=false",
                     f"output_dir={tmp_path}"])
    train(plan, str(tmp_path))
    base = AutoModelForCausalLM.from_pretrained(zoo / arch)
    before = {n: p.detach().clone() for n, p in base.named_parameters()}
    tuned = PeftModel.from_pretrained(base, str(tmp_path / "adapter"))
    loaded = sum(p.numel() for n, p in tuned.named_parameters() if "lora_" in n)
    assert loaded == plan.method.trainable_params
    merged = tuned.merge_and_unload()
    changed = [n for n, p in merged.named_parameters() if n in before and not torch.equal(p, before[n])]
    if plan.method.target_parameters:
        assert any(".experts." in n for n in changed), changed
    assert changed


def test_optimizer_and_scheduler_names_are_ones_the_installed_transformers_accepts():
    import warnings

    from tests.drift import trainer_names_drift

    for what, drift in trainer_names_drift().items():
        assert drift.unsafe == (), f"ftc/config/schema.py accepts {what} transformers refuses: {drift.unsafe}"
        if drift.stale:
            warnings.warn(f"transformers has {what} ftc refuses: {drift.stale}", UserWarning, stacklevel=1)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "phi3", "bloom", "falcon_h1", "mixtral", "qwen3_moe",
                                  "granitemoehybrid"])
def test_a_traced_step_stands_beside_the_estimate(zoo, arch):
    """`ftc plan --trace`: the real model class traced under fake tensors for the plan's micro batch. Dense and
    hybrid models give their saved activations and FLOPs beside the analytic terms, and a disagreement over 10% is
    a warning saying the plan's figures stay analytic. A mixture of experts traces in bf16 (torch's grouped matmul
    has no other fake kernel), counted at the plan's width."""
    r = subprocess.run([sys.executable, "-m", "ftc.cli", "plan", "--trace", "--json", "model=local",
                        f"model.path={zoo / arch}", "hardware=cpu"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    plan = json.loads(r.stdout)
    traced = plan["memory"]["traced"]
    assert traced["micro"] == plan["batch"]["micro"] and traced["seq"] == plan["memory"]["seq"]
    assert traced["activations_gb"] > 0 and traced["analytic_gb"] > 0
    assert plan["time"]["traced"]["ratio"] == pytest.approx(
        plan["time"]["traced"]["flops_per_token"] / plan["time"]["traced"]["analytic_flops_per_token"], rel=0.01)
    warned = any(f["key"] == "memory" and "traced step" in f["message"] for f in plan["findings"])
    assert warned == (abs(traced["ratio"] - 1) > 0.10)


def test_ftc_train_on_a_gpu_traces_the_planned_step_before_loading_and_a_cpu_run_does_not():
    """`ftc train` on a CUDA profile saves a plan with memory.traced (traced before any weight loads); on the CPU,
    where the trace would cost more than the steps, the plan stays as compiled."""
    from ftc.cli import traced_for_run
    from ftc.compiler.frontend import compile_with_facts
    from tests.conftest import typed_config

    cfg = typed_config(["hardware=a10g"])
    plan, facts = compile_with_facts(cfg)
    traced = traced_for_run(cfg, plan, facts)
    assert plan.memory.traced is None and traced.memory.traced is not None
    assert traced.memory.traced.micro == traced.batch.micro and traced.time.traced is not None
    cpu_cfg = typed_config([])
    cpu, cpu_facts = compile_with_facts(cpu_cfg)
    assert traced_for_run(cpu_cfg, cpu, cpu_facts) is cpu
