"""What a failure inside a library during a run means for the user: one message, the traceback in train.log.

``explain`` turns an exception that escaped training or evaluation into ``RunFailed``: what failed, the likely
cause and fix when the message is one ftc knows, and where the full log is. The hints match the libraries' own
wording (checked against transformers 5, PEFT 0.21, torch 2.13); an unknown failure still gets the log pointer.
"""

from __future__ import annotations

import traceback
from pathlib import Path

from ftc.errors import RunFailed

# (substrings of the library's message, likely cause, fix)
HINTS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("CUDA out of memory", "OutOfMemoryError"),
     "the device ran out of memory, beyond what the plan predicted",
     "train.micro_batch_size=<half>, train.gradient_checkpointing=true or a shorter data.max_length"),
    (("is not supported. Currently, only the following modules are supported", "Target module"),
     "PEFT cannot put LoRA on one of the targeted modules of this architecture",
     "method.target_modules=[...] naming linear layers only (`ftc plan` lists the model's modules)"),
    (("does not work with lora_dropout",),
     "PEFT's LoRA on fused parameters (MoE experts) takes no dropout",
     "method.dropout=0"),
    (("No space left on device",),
     "the disk holding the run directory or the cache is full",
     "free space, or output_dir=<a larger disk>; the last complete checkpoint is kept"),
    (("does not support an attention implementation",),
     "transformers has no such attention kernel for this architecture",
     "model.attn_implementation=eager"),
)


def explain(error: BaseException, run_dir: str | Path, what: str = "training") -> RunFailed:
    """Appends the full traceback to ``run_dir/train.log`` and returns the one-message error for the console."""
    log = Path(run_dir) / "train.log"
    with open(log, "a") as f:
        f.write(f"\nftc: {what} failed:\n" + "".join(traceback.format_exception(error)))
    text = str(error)
    lines = [f"ftc: {what} failed: {type(error).__name__}: {_first_lines(text)}"]
    for needles, cause, fix in HINTS:
        if any(n in text or n in type(error).__name__ for n in needles):
            lines += [f"  likely cause: {cause}", f"  fix: {fix}"]
            break
    lines.append(f"  full log: {log}; the run is not complete (no summary.json). Once fixed, the same command "
                 "resumes from the last complete checkpoint.")
    return RunFailed("\n".join(lines))


def _first_lines(text: str, limit: int = 400) -> str:
    short = " ".join(text.strip().splitlines()[:3])
    return short if len(short) <= limit else short[: limit - 3] + "..."
