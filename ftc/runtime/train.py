"""The one training function: data -> model -> PEFT -> TRL SFTTrainer. The local and Ray launchers both call it.

Runs in every worker; only the world's rank 0 writes run-dir artifacts. Everything it needs comes from the Plan.
"""

from __future__ import annotations

import contextlib
import math
import resource
import sys
import time
from pathlib import Path
from typing import Any, Optional

from ftc.errors import RunStopped, TrainingDiverged
from ftc.paths import publish
from ftc.plan import Plan
from ftc.runtime import artifacts, checkpoints, console
from ftc.runtime.preemption import EXIT_CODES, stop_on_signals


def make_callbacks(plan: Plan, run_dir: Path, fault_dir: Path | None = None) -> list[Any]:
    from transformers import EarlyStoppingCallback, TrainerCallback

    class MetricsJsonl(TrainerCallback):
        """Structured metrics: one JSON line per log (train loss, lr, grad norm, eval loss, tokens seen); the last
        step is always logged, so a curve ends where training did (8 steps logged every 5 ended at step 5)."""

        def on_step_end(self, args, state, control, **kwargs):
            if state.max_steps and state.global_step >= state.max_steps:
                control.should_log = True

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs:
                return
            loss = logs.get("loss", logs.get("eval_loss"))
            if loss is not None and not math.isfinite(loss):
                control.should_training_stop = True
                self.diverged = state.global_step
            if state.is_world_process_zero:
                artifacts.append_jsonl(run_dir / "metrics.jsonl",
                                       {"step": state.global_step, "epoch": state.epoch, "time": time.time(), **logs})

    from ftc.runtime import trackers

    callbacks: list[Any] = [MetricsJsonl()]
    tracking = trackers.callback(plan, run_dir)
    if tracking:
        callbacks.append(tracking)
    fault = fault_injection(fault_dir or run_dir)
    if fault:
        callbacks.append(fault)
    if plan.train.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=plan.train.early_stopping_patience))
    return callbacks


FAULT_ENV = "FTC_FAULT_INJECT_STEP"


def fault_injection(run_dir: Path) -> Any:
    """Test hook: with FTC_FAULT_INJECT_STEP=N, the last rank dies (os._exit) at step N, once per run dir.

    Used by the tests that prove resume-after-crash (local) and restart-from-checkpoint (Ray worker death).
    """
    import os

    from transformers import TrainerCallback

    step = int(os.environ.get(FAULT_ENV, 0) or 0)
    marker = run_dir / ".fault_injected"
    if not step or marker.exists():
        return None

    class Die(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= step and args.process_index == args.world_size - 1:
                marker.write_text(str(state.global_step))
                # Some seconds after the last checkpoint, as a preemption would: Ray Train's controller collects
                # the checkpoints workers reported when it polls them (every 2 s by default).
                time.sleep(3)
                os._exit(1)

    return Die()


SAVE_FAULT_ENV = "FTC_FAULT_INJECT_SAVE"


def save_fault(checkpoints: Path, step: int) -> None:
    """Test hook: with FTC_FAULT_INJECT_SAVE=kill:N or enospc:N, the checkpoint save at step N (once per run) leaves
    a partial checkpoint-N (weights cut short, no trainer_state.json) and then the process dies as under
    ``kill -9``, or the save fails as on a full disk. The tests prove that neither is ever resumed from."""
    import errno
    import os

    what, _, at = os.environ.get(SAVE_FAULT_ENV, "").partition(":")
    marker = checkpoints.parent / ".save_fault_injected"
    if not what or step < int(at or 0) or marker.exists():
        return
    marker.write_text(f"{what} at step {step}")
    partial = checkpoints / f"checkpoint-{step}"
    partial.mkdir(parents=True, exist_ok=True)
    (partial / "adapter_model.safetensors").write_bytes(b"\0" * 100)  # cut short
    if what == "kill":
        os._exit(137)
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(partial / "adapter_model.safetensors"))


def training_kwargs(plan: Plan, run_dir: Path, distributed: bool, validation: bool) -> dict[str, Any]:
    """TrainingArguments fields every objective shares, all from the plan."""
    t, s, b = plan.train, plan.schedule, plan.batch
    early = bool(t.early_stopping_patience) and validation
    kwargs: dict[str, Any] = dict(
        output_dir=str(run_dir / "checkpoints"),
        per_device_train_batch_size=b.micro,
        per_device_eval_batch_size=b.micro,
        gradient_accumulation_steps=b.grad_accum,
        learning_rate=t.lr,
        lr_scheduler_type=t.scheduler,
        warmup_steps=t.warmup_ratio,  # transformers 5 reads warmup_steps < 1 as a fraction of the steps (ratio)
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        optim=t.optim,
        bf16=plan.precision == "bf16",
        fp16=plan.precision == "fp16",
        activation_checkpointing=t.gradient_checkpointing,  # transformers 5's name for gradient checkpointing
        eval_strategy="steps" if validation else "no",
        eval_steps=s.eval_steps,
        save_strategy="steps",
        save_steps=s.eval_steps if early else s.save_steps,
        save_total_limit=t.save_total_limit,
        load_best_model_at_end=early,
        metric_for_best_model="eval_loss" if early else None,
        greater_is_better=False if early else None,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        logging_nan_inf_filter=False,  # a NaN loss is logged as NaN, never averaged away (or as 0.0)
        seed=t.seed,
        data_seed=t.seed,
        report_to="none",  # the plan's trackers are ftc's (runtime/trackers.py): named runs, the plan's parameters
        max_length=plan.data.max_length,
        include_num_input_tokens_seen="non_padding",
        deepspeed=plan.deepspeed,
        # On CPU workers, DeepSpeed needs accelerate's multi-CPU state without cpu=True (launch/ray.py's shim);
        # FSDP takes accelerate's own multi-CPU state, which the shim turns into FSDP.
        use_cpu=plan.hardware.accelerator == "cpu" and (not distributed or plan.fsdp is not None),
        ddp_backend="gloo" if distributed and plan.hardware.accelerator == "cpu" else None,
        dataloader_num_workers=0,
        dataloader_pin_memory=plan.hardware.accelerator == "cuda",  # page-locked host memory is for copies to a GPU
        disable_tqdm=True,  # ftc's own progress bar (runtime/console.py) replaces the bar and the printed dicts
        prediction_loss_only=True,  # validation needs the loss only (the selective loss builds no logits)
    )
    if plan.fsdp:  # FSDP2 through accelerate: the plan's generated settings (compile._fsdp)
        kwargs["fsdp"] = plan.fsdp["fsdp"]
        kwargs["fsdp_config"] = dict(plan.fsdp["fsdp_config"])
    # max_steps wins when the experiment set it; otherwise epochs over the data actually loaded
    # (the plan's step count is an estimate from file sizes; the summary reports both).
    if t.max_steps:
        kwargs["max_steps"] = t.max_steps
    else:
        kwargs["num_train_epochs"] = plan.schedule.epochs
    return kwargs


def sft_config(plan: Plan, run_dir: Path, distributed: bool, validation: bool = True) -> Any:
    from trl import SFTConfig

    d = plan.data
    # ftc's data is tokenized, truncated and labelled already (runtime/data.py); TRL's preparation would pass over
    # every row again (minutes on a million rows). Packing still needs it (it packs there).
    return SFTConfig(**training_kwargs(plan, run_dir, distributed, validation), packing=d.packing,
                     train_sampling_strategy="group_by_length" if d.group_by_length and not d.packing else "random",
                     packing_strategy="bfd", completion_only_loss=d.completion_only_loss,
                     dataset_kwargs={"skip_prepare_dataset": not d.packing}, **plan.train.trainer_kwargs)


def dpo_config(plan: Plan, run_dir: Path, distributed: bool, validation: bool = True) -> Any:
    from trl import DPOConfig

    o = plan.objective
    return DPOConfig(**training_kwargs(plan, run_dir, distributed, validation), beta=o.beta,
                     loss_type=[o.loss_type], **plan.train.trainer_kwargs)


def orpo_config(plan: Plan, run_dir: Path, distributed: bool, validation: bool = True) -> Any:
    from trl.experimental.orpo import ORPOConfig

    d = plan.data
    # ORPO's batches have no input_ids: the Trainer cannot count tokens (it warns); FtcORPOTrainer counts them.
    kwargs = {**training_kwargs(plan, run_dir, distributed, validation), "include_num_input_tokens_seen": "no"}
    return ORPOConfig(**kwargs, beta=plan.objective.beta, max_completion_length=d.max_length - d.max_prompt_length,
                      **plan.train.trainer_kwargs)


def kto_config(plan: Plan, run_dir: Path, distributed: bool, validation: bool = True) -> Any:
    from trl import KTOConfig

    o = plan.objective
    return KTOConfig(**training_kwargs(plan, run_dir, distributed, validation), beta=o.beta, loss_type=o.loss_type,
                     **plan.train.trainer_kwargs)


def grpo_config(plan: Plan, run_dir: Path, distributed: bool, validation: bool = True,
                generation_url: Optional[str] = None) -> Any:
    from trl import GRPOConfig

    from ftc.data.rewards import weights

    o = plan.objective
    kwargs = training_kwargs(plan, run_dir, distributed, validation=False)  # GRPO's validation would generate
    kwargs.pop("max_length")  # GRPO bounds completions (max_completion_length), not sequences
    kwargs["include_num_input_tokens_seen"] = "no"  # GRPOTrainer counts prompt + completion tokens itself
    return GRPOConfig(**kwargs, num_generations=o.num_generations, max_completion_length=o.max_completion_length,
                      temperature=o.temperature, beta=o.beta, loss_type=o.loss_type,
                      reward_weights=weights(list(o.rewards)), log_completions=False,
                      **_vllm_kwargs(plan, generation_url), **plan.train.trainer_kwargs)


def _vllm_kwargs(plan: Plan, generation_url: Optional[str]) -> dict[str, Any]:
    """GRPOConfig's vLLM fields for the plan's generation: colocated at the plan's share of the training GPU, or
    the server ``ftc.launch.local`` started on the second GPU."""
    o = plan.objective
    if o.generation == "vllm":
        return {"use_vllm": True, "vllm_mode": "colocate",
                "vllm_gpu_memory_utilization": o.vllm_gpu_memory_utilization}
    if o.generation == "vllm_server":
        if not generation_url:
            raise RuntimeError("the plan generates with a vLLM server and none was started (the local launcher "
                               "starts it)")
        return {"use_vllm": True, "vllm_mode": "server", "vllm_server_base_url": generation_url}
    return {"use_vllm": False}


class _Timed:
    """Mixed into the TRL trainers: times validation passes and checkpoint saves apart from training steps, and
    stops at the first micro-step whose loss is NaN or infinite (``nonfinite_step``), before its weights can be
    checkpointed: the Trainer's own filter (``logging_nan_inf_filter``, off in ftc) would log such a loss as 0.0."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seconds = {"validation": 0.0, "checkpoints": 0.0}
        self.nonfinite_step: Optional[int] = None

    def training_step(self, model, inputs, num_items_in_batch=None):
        import torch

        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.nonfinite_step is None and not bool(torch.isfinite(loss.detach()).all()):
            self.nonfinite_step = self.state.global_step + 1  # the optimizer step this micro-step belongs to
            self.control.should_training_stop = True
            self.log({"loss": float(loss.detach().float().mean())})  # recorded as NaN/inf in metrics.jsonl
        return loss

    @contextlib.contextmanager
    def _timing(self, what: str):
        start = time.time()
        try:
            yield
        finally:
            self.seconds[what] += time.time() - start

    def evaluate(self, *args, **kwargs):
        with self._timing("validation"):
            return super().evaluate(*args, **kwargs)

    def _save_checkpoint(self, *args, **kwargs):
        if self.nonfinite_step is not None:
            return None  # weights after a non-finite loss are no checkpoint to resume from
        with self._timing("checkpoints"):
            save_fault(Path(self.args.output_dir), self.state.global_step)
            saved = super()._save_checkpoint(*args, **kwargs)
            # Every rank writes files of its own (its RNG state, its shard): the manifest records them once all have
            # finished, or a slower rank's file is recorded half-written and the checkpoint refused on resume.
            self.accelerator.wait_for_everyone()
            if self.is_world_process_zero():  # last: a checkpoint without it, or unlike it, is not resumed from
                checkpoints.write_manifest(Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}")
            return saved


def trainer_class(plan: Plan) -> type:
    """The trainer of the plan's objective (``BUILDERS``)."""
    return BUILDERS[plan.objective.trainer][1](plan)


def _sft_trainer(plan: Plan) -> type:
    """TRL's SFTTrainer (data preparation, packing, collator, PEFT wiring) with the loss the plan chose
    (``plan.train.loss``): ``selective`` / ``liger`` compute the output head only where the loss counts
    (runtime/loss.py); ``model`` is the model's own causal-LM loss; ``trl`` is SFTTrainer's own (with its per-step
    entropy/accuracy pass over the logits, ``train.token_metrics=true``)."""
    from transformers import Trainer
    from trl import SFTTrainer

    loss, chunk, recompute = plan.train.loss, plan.train.loss_chunk_tokens, plan.train.loss_recompute

    class FtcSFTTrainer(_Timed, SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if loss == "trl":
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if loss == "model" or "labels" not in inputs:
                inputs["use_cache"] = False
                return Trainer.compute_loss(self, model, inputs, return_outputs=return_outputs,
                                            num_items_in_batch=num_items_in_batch)
            from ftc.runtime.loss import selective_loss

            # As Trainer.compute_loss does for a model that takes loss kwargs: sum / tokens of the accumulated
            # batch, scaled by the processes that average it (so gradients equal the model's own loss).
            per_batch = num_items_in_batch if self.model_accepts_loss_kwargs else None
            value = selective_loss(model, inputs, chunk, per_batch, fused=loss == "liger", recompute=recompute)
            if self.args.average_tokens_across_devices and self.model_accepts_loss_kwargs and \
                    num_items_in_batch is not None:
                scale = self.accelerator.num_processes // self.get_tp_size()
                value = value * (scale if self.args.n_gpu <= 1 else self.args.n_gpu)
            return (value, {"loss": value}) if return_outputs else value

    return FtcSFTTrainer


def _dpo_trainer(plan: Plan) -> type:
    """TRL's DPOTrainer on ftc's pre-tokenized pairs (prompt_ids, chosen_ids, rejected_ids: same BOS/EOS and
    truncation rules as SFT, counted in the data report). With a PEFT method the reference is the model as training
    starts: TRL disables the new adapter, or keeps a frozen copy of a starting adapter (model.adapter)."""
    from trl import DPOTrainer

    class FtcDPOTrainer(_Timed, DPOTrainer):
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            if "prompt_ids" in dataset.column_names:
                return dataset  # tokenized by ftc's data pipeline
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

    return FtcDPOTrainer


def _orpo_trainer(plan: Plan) -> type:
    """TRL's ORPOTrainer (experimental in TRL 1.x): SFT on the chosen answer plus an odds-ratio term against the
    rejected one, no reference model. It tokenizes text pairs itself: ftc hands it the pairs' text (prompt formatted
    as for SFT), the same rows its data report counted."""
    from trl.experimental.orpo import ORPOTrainer

    class FtcORPOTrainer(_Timed, ORPOTrainer):
        def tokenize_row(self, feature, model=None):
            if "prompt_ids" not in feature:
                return super().tokenize_row(feature, model)
            prompt = feature["prompt_ids"]  # tokenized by ftc's data pipeline, truncation counted there
            row = {"prompt_input_ids": prompt, "prompt_attention_mask": [1] * len(prompt)}
            for side in ("chosen", "rejected"):
                answer = feature[f"{side}_ids"]
                row[f"{side}_input_ids"] = prompt + answer
                row[f"{side}_attention_mask"] = [1] * (len(prompt) + len(answer))
                row[f"{side}_labels"] = [-100] * len(prompt) + answer
            return row

        def training_step(self, model, inputs, num_items_in_batch=None):
            seen = sum(int(inputs[f"{side}_attention_mask"].sum()) for side in ("chosen", "rejected")
                       if f"{side}_attention_mask" in inputs)
            self.state.num_input_tokens_seen = (self.state.num_input_tokens_seen or 0) + seen
            return super().training_step(model, inputs, num_items_in_batch)

    return FtcORPOTrainer


def _kto_trainer(plan: Plan) -> type:
    """TRL's KTOTrainer on ftc's pre-tokenized pairs, unpaired: each pair gives a desirable (chosen) and an
    undesirable (rejected) example with the same prompt ids; the KL estimate's mismatched completions are rotated
    within each micro batch, as TRL does for its own tokenization."""
    from trl import KTOTrainer

    class FtcKTOTrainer(_Timed, KTOTrainer):
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            from datasets import Dataset

            if "chosen_ids" in dataset.column_names:
                rows = {"prompt_ids": [], "completion_ids": [], "label": []}
                for p, c, r in zip(dataset["prompt_ids"], dataset["chosen_ids"], dataset["rejected_ids"]):
                    for ids, label in ((c, True), (r, False)):
                        rows["prompt_ids"].append(p)
                        rows["completion_ids"].append(ids)
                        rows["label"].append(label)
                unpaired = Dataset.from_dict(rows)
            elif "completion_ids" in dataset.column_names:  # labelled rows (data.format=kto), tokenized by ftc
                unpaired = dataset
            else:
                return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
            if self.calculate_KL:
                def mismatched(batch):
                    batch["KL_completion_ids"] = [batch["completion_ids"][-1]] + batch["completion_ids"][:-1]
                    return batch

                unpaired = unpaired.map(mismatched, batched=True, batch_size=args.per_device_train_batch_size)
            return unpaired

    return FtcKTOTrainer


def _grpo_trainer(plan: Plan) -> type:
    """TRL's GRPOTrainer with the plan's rewards (ftc.data.rewards). Its prompts are ftc's tokenized training
    examples decoded back to text (the prompt formatted as for SFT; the completion becomes the ``answer`` column
    the rewards compare with), so the data report's counts are the rows GRPO samples from."""
    from trl import GRPOTrainer

    from ftc.data.rewards import build

    rewards = [build(dict(r)) for r in plan.objective.rewards]

    class FtcGRPOTrainer(_Timed, GRPOTrainer):
        def __init__(self, *args, train_dataset=None, eval_dataset=None, processing_class=None, **kwargs):
            super().__init__(*args, reward_funcs=rewards, train_dataset=_prompts(train_dataset, processing_class),
                             eval_dataset=None, processing_class=processing_class, **kwargs)

    return FtcGRPOTrainer


def _prompts(dataset: Any, tokenizer: Any) -> Any:
    """Tokenized SFT examples (input_ids, completion_mask) as GRPO's rows: the prompt's text and the answer's."""
    from datasets import Dataset

    if dataset is None or "input_ids" not in dataset.column_names:
        return dataset
    prompts, answers = [], []
    for ids, mask in zip(dataset["input_ids"], dataset["completion_mask"]):
        prompts.append(tokenizer.decode([t for t, m in zip(ids, mask) if not m], skip_special_tokens=True))
        answers.append(tokenizer.decode([t for t, m in zip(ids, mask) if m], skip_special_tokens=True).strip())
    return Dataset.from_dict({"prompt": prompts, "answer": answers})


# objective.trainer -> (arguments builder, trainer class builder), keyed as ftc.config.objectives.TRAINERS (what
# every other layer reads of a trainer; a test holds the two key sets equal).
BUILDERS = {"sft": (sft_config, _sft_trainer), "dpo": (dpo_config, _dpo_trainer), "orpo": (orpo_config, _orpo_trainer),
            "kto": (kto_config, _kto_trainer), "grpo": (grpo_config, _grpo_trainer)}


def peak_memory_gb(device: str) -> dict[str, float]:
    """The run's peaks, named as the plan names its predictions: on CUDA the live tensors (max_memory_allocated)
    and the allocator's reservation (max_memory_reserved; nvidia-smi adds the CUDA context to it); on the CPU the
    process's peak resident memory."""
    if device == "cuda":
        import torch

        return {"live_gb": torch.cuda.max_memory_allocated() / 1e9,
                "reserved_gb": torch.cuda.max_memory_reserved() / 1e9}
    return {"process_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9}  # Linux reports KiB


def train(plan: Plan, run_dir: str, *, distributed: bool = False, return_model: bool = False,
          extra_callbacks: tuple[Any, ...] = (), fault_dir: Path | None = None,
          generation_url: Optional[str] = None, stopper: Optional[Any] = None) -> Any:
    """Trains per the plan, saves the adapter (or model) into ``run_dir``; returns training figures (rank 0),
    or (figures, model, tokenizer) with ``return_model``. ``stopper`` (a Ray worker's ``remote_stop``) replaces the
    local signal handlers; a stop it asks for raises RunStopped after the checkpoint, on every rank.

    Re-running over a run dir with checkpoints resumes from the newest complete one.
    """
    import torch
    from transformers import set_seed

    from ftc.runtime import environment
    from ftc.runtime.data import build
    from ftc.runtime.model import load_base_model, load_tokenizer, lora_config

    environment.check(plan)  # the packages the plan's decisions need, before any weight is loaded
    run = Path(run_dir)
    set_seed(plan.train.seed)
    tokenizer = load_tokenizer(plan)
    splits = build(plan.data, tokenizer, plan.train.seed)
    config = BUILDERS[plan.objective.trainer][0](plan, run, distributed, validation=bool(splits.validation),
                                                 **({"generation_url": generation_url} if generation_url else {}))
    # TrainingArguments exist before the model so that ZeRO-3's zero.Init applies while weights load.
    model = load_base_model(plan, for_training=True)
    if plan.method.quantization and not plan.fsdp:  # sharded QLoRA keeps one dtype in a unit (TRL's own rule):
        from peft import prepare_model_for_kbit_training  # no fp32 upcast; checkpointing comes from the arguments

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=plan.train.gradient_checkpointing)
    peft_config = lora_config(plan) if plan.method.peft else None
    if plan.model.adapter:  # continue from an earlier run's adapter (SFT -> DPO): it keeps its own config
        from peft import PeftModel

        model, peft_config = PeftModel.from_pretrained(model, plan.model.adapter, is_trainable=True), None
    trainer = trainer_class(plan)(
        model=model,
        args=config,
        train_dataset=splits.train,
        eval_dataset=splits.validation,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=make_callbacks(plan, run, fault_dir) + list(extra_callbacks),
    )
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(console.progress_callback(plan.schedule.steps))
    if plan.deepspeed:
        checkpoints.deepspeed_weights_only()  # DeepSpeed's own loader would unpickle anything a checkpoint holds
    resume = checkpoints.last_intact(run / "checkpoints") if plan.train.resume else None
    rank0 = trainer.is_world_process_zero()
    if rank0:
        print(console.data_line(splits.report, plan.data.part), file=sys.stderr)
        drift = console.data_drift(plan.data, splits.report)
        if drift:
            print(drift, file=sys.stderr)
            artifacts.event(run, "data_drift", planned={"examples": plan.data.examples, "tokens": plan.data.tokens},
                            trained={"examples": splits.report.examples, "tokens": splits.report.tokens})
        artifacts.event(run, "resume" if resume else "start", checkpoint=resume,
                        world_size=trainer.args.world_size)
    if stopper is None and not distributed:
        stopper = stop_on_signals()  # SIGTERM / SIGINT: checkpoint, then a resumable stop
    if stopper is not None:
        trainer.add_callback(stopper)
    start = time.time()
    try:
        result = trainer.train(resume_from_checkpoint=resume)
    finally:
        if stopper is not None:
            stopper.restore()
    wall = time.time() - start
    if stopper is not None and stopper.signal:
        _stopped(stopper, run, plan.train.preemption_grace_s, record=not distributed)
    # Training throughput counts training steps only: the Trainer's validation passes (it runs one at the end even
    # when eval_steps > max_steps) and checkpoint saves are timed apart and reported on their own lines.
    validation_s, checkpoints_s = trainer.seconds["validation"], trainer.seconds["checkpoints"]
    train_s = max(wall - validation_s - checkpoints_s, 1e-9)
    diverged = trainer.nonfinite_step or next(
        (c.diverged for c in trainer.callback_handler.callbacks if hasattr(c, "diverged")), None)
    if diverged is not None:
        if rank0:
            artifacts.event(run, "diverged", step=diverged)
        raise TrainingDiverged(f"loss became NaN/inf at step {diverged}; stopped there. Try a lower train.lr, "
                               "train.precision=bf16 instead of fp16, or train.max_grad_norm=1.0")
    _save_weights(trainer, plan, run, tokenizer)
    state = trainer.state
    tokens_seen = int(getattr(state, "num_input_tokens_seen", 0) or 0)
    before = artifacts.read_json(Path(resume) / "trainer_state.json").get("num_input_tokens_seen", 0) if resume else 0
    tokens_this_attempt = tokens_seen - int(before or 0)
    device = "cuda" if torch.cuda.is_available() and plan.hardware.accelerator == "cuda" else "cpu"
    figures = {
        "steps": state.global_step,
        "train_loss": result.training_loss,
        "train_runtime_s": train_s,
        "validation_s": validation_s,
        "checkpoints_s": checkpoints_s,
        "trainer_wall_s": wall,
        "resumed_from": resume,
        "tokens_seen": tokens_seen,
        "tokens_per_s": tokens_this_attempt / train_s,  # this attempt's tokens over its training steps' time
        "peak_memory": peak_memory_gb(device),
        "data": splits.report.__dict__,
        "world_size": trainer.args.world_size,
        "best_checkpoint": state.best_model_checkpoint,
    }
    figures = figures if rank0 else {}
    return (figures, trainer.model, tokenizer) if return_model else figures


def _stopped(stopper: Any, run: Path, grace_s: float, record: bool = True) -> None:
    """Records the signal's stop (``record``: the local launcher; on Ray the driver records it) and raises it as a
    resumable, incomplete run (exit 143 / 130). A save that took longer than ``grace_s`` (train.preemption_grace_s)
    is said loudly: on a real preemption the provider would have killed the process first, and the run would resume
    from the checkpoint before."""
    checkpoint = checkpoints.last_intact(run / "checkpoints", announce=False)
    raise stop_record(stopper.signal, stopper.step, checkpoint, time.time() - stopper.received_at, grace_s,
                      run if record else None)


def stop_record(signal_name: str, step: Optional[int], checkpoint: Optional[str], saved_s: float, grace_s: float,
                run: Optional[Path]) -> RunStopped:
    """The stop as an event in ``run``'s events.jsonl (when given) and the RunStopped that says it."""
    kind = "preempted" if signal_name == "SIGTERM" else "interrupted"
    within = saved_s <= grace_s
    if run is not None:
        artifacts.event(run, kind, signal=signal_name, step=step, checkpoint=checkpoint,
                        seconds_after_signal=round(saved_s, 2), grace_s=grace_s, within_grace=within)
    late = "" if within else (
        f" That is longer than train.preemption_grace_s={grace_s:g}: a provider would have killed the process before "
        "the save (fix: a smaller train.micro_batch_size for shorter steps, or a longer grace if the provider gives "
        "one).")
    return RunStopped(f"ftc: {kind} by {signal_name} at step {step}: checkpoint {checkpoint} saved "
                      f"{saved_s:.1f} s after the signal.{late} The run is not complete; re-run the same command (same "
                      "output_dir) to resume from it.", EXIT_CODES[signal_name])


def _save_weights(trainer: Any, plan: Plan, run: Path, tokenizer: Any) -> None:
    """Saves adapter (or full model) + tokenizer to a temp dir on every rank (ZeRO-3 gathers), then renames on rank
    0."""
    name = "adapter" if plan.method.peft else "model"
    tmp = run / f".{name}.tmp"
    if plan.fsdp:
        _save_fsdp(trainer, plan, tmp)
    else:
        trainer.save_model(str(tmp))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(tmp))
        (tmp / "training_args.bin").unlink(missing_ok=True)  # a pickle; the run dir keeps plan.json instead
        weights = list(tmp.glob("*.safetensors"))
        if not weights or all(w.stat().st_size < 64 for w in weights):
            raise RuntimeError(f"saved {name} in {tmp} is empty: refusing to publish it")
        bad = non_finite_tensors(weights)
        if bad:
            artifacts.event(run, "diverged", step=trainer.state.global_step, non_finite_tensors=len(bad))
            raise TrainingDiverged(f"{len(bad)} tensors of the trained {name} are NaN/inf (first: {bad[0]}); it is "
                                   "not saved. Try a lower train.lr, train.precision=bf16 instead of fp16, or "
                                   "train.max_grad_norm=1.0")
        publish(tmp, run / name)


def _save_fsdp(trainer: Any, plan: Plan, tmp: Path) -> None:
    """FSDP2 keeps every parameter sharded (a DTensor): each rank takes part in gathering the ones the artifact holds,
    one at a time (the adapter's alone with a PEFT method, never the frozen base), and rank 0 saves them through the
    model's own ``save_pretrained``, so the files are the ones a single-device run writes."""
    from torch.distributed.tensor import DTensor

    model = trainer.accelerator.unwrap_model(trainer.model)
    state = {}
    for key, param in model.named_parameters():
        if plan.method.peft and not param.requires_grad:
            continue
        full = param.full_tensor() if isinstance(param, DTensor) else param
        if trainer.is_world_process_zero():
            state[key] = full.detach().to("cpu", copy=True)
        del full
    if trainer.is_world_process_zero():
        model.save_pretrained(str(tmp), state_dict=state, safe_serialization=True)
    trainer.accelerator.wait_for_everyone()


def non_finite_tensors(files: list[Path]) -> list[str]:
    """Names of the tensors in these safetensors files holding a NaN or infinite value."""
    import torch
    from safetensors import safe_open

    bad = []
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                t = f.get_tensor(key)
                if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                    bad.append(key)
    return bad
