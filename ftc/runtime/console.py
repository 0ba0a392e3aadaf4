"""A quiet, informative console for `ftc train`: one progress bar (step, loss, tokens/s, ETA), one line per
validation, then the verdict. Everything else goes to ``<run>/train.log`` (and metrics to metrics.jsonl).

Third-party messages that matter still reach the console: warnings and errors of any library are shown, except the
known ones below that carry no action for an ftc user.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, Optional

from ftc import secrets

# Library messages that are noise for an ftc run; each one is still written to train.log.
NOISE = (
    "kernels-community",  # bitsandbytes on CPU: an optional `kernels` package would speed up 4-bit matmuls
    "Setting accelerator to CPU",  # DeepSpeed probing for a GPU on a CPU run
    "Setting ds_accelerator to",
    "is deprecated and will be removed in v6",  # transformers deprecations raised by peft/trl internals, not by ftc
    "generated new fontManager",
    "Please use `torch.distributed.",  # torch deprecating a collective that DeepSpeed / accelerate call, not ftc
)


class NoiseFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(n in message for n in NOISE)


class _ConsoleLevel(logging.Filter):
    """On a library's own console handler (DeepSpeed's): warnings and up, without the noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING and NoiseFilter().filter(record)


def setup(run_dir: str | Path, accelerator: str) -> None:
    """Routes logging and Python warnings: all of it to ``run_dir/train.log``; warnings and errors, minus the
    noise, to the console. Call before the training libraries are imported."""
    if accelerator == "cpu":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # DeepSpeed would otherwise probe for a GPU and say so
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.captureWarnings(True)
    root = logging.getLogger()
    for h in list(root.handlers):  # Hydra's console handler among them: during a run ftc owns the console
        root.removeHandler(h)
    root.setLevel(logging.INFO)
    log_file = logging.FileHandler(Path(run_dir) / "train.log")
    log_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.WARNING)
    console.addFilter(NoiseFilter())
    console.setFormatter(logging.Formatter("%(levelname)s (%(name)s): %(message)s"))
    for handler in (log_file, console):
        handler.addFilter(secrets.MaskedRecords())  # train.log and the console never hold a secret
        root.addHandler(handler)
    # DeepSpeed logs through its own stdout handler: filter at the logger so only real warnings get through.
    logging.getLogger("DeepSpeed").addFilter(_ConsoleLevel())
    for name in ("transformers", "datasets", "peft", "trl", "accelerate"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if "transformers" in sys.modules or _importable("transformers"):
        from transformers.utils import logging as hf_logging

        hf_logging.disable_default_handler()  # its records propagate to the handlers above
        hf_logging.enable_propagation()
        hf_logging.disable_progress_bar()  # "Loading weights", "Writing model shards"
    if _importable("datasets"):
        import datasets

        datasets.disable_progress_bars()  # "Saving the dataset", "Building labels..."


def errors_only() -> None:
    """The console of a worker process other than rank 0: errors only (train.log still gets everything)."""
    for handler in logging.getLogger().handlers:
        if not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.ERROR)


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def data_line(report: Any, part: Any = None) -> str:
    """One line about the data that trains: examples per split and everything dropped or truncated, and where the
    plan read only a part of a hub split (``part``: the Plan's PartSpec), which part."""
    ex = report.examples
    dropped = sum(report.dropped.values()) + report.dropped_no_completion_after_truncation
    whole = f" of {part.total:,}" if part is not None and part.total else ""
    return (f"ftc: data {ex.get('train', 0)} train / {ex.get('validation', 0)} validation / {ex.get('test', 0)} test "
            f"examples" + (f" from the split's first {part.rows:,} rows{whole} (data.max_rows)" if part else "")
            + f", {report.tokens.get('train', 0):,} training tokens; {dropped} dropped, {report.truncated} "
            "truncated (train.log and report.md have the details)")


def data_drift(planned: Any, report: Any) -> Optional[str]:
    """A warning when the data that trains differs from what the plan counted (examples per split, and tokens where
    the plan counted them exactly): the plan's memory, time and cost figures were made for other data; None when
    they agree."""
    roles = [r for r in ("train", "validation", "test") if r in planned.examples or r in planned.tokens]
    differ = [r for r in roles if planned.examples.get(r, 0) != report.examples.get(r, 0)
              or (r in planned.tokens and planned.tokens[r] != report.tokens.get(r, 0))]
    if not differ:
        return None
    said = "; ".join(f"{r}: planned {planned.examples.get(r, 0)} examples"
                     + (f" / {planned.tokens[r]:,} tokens" if r in planned.tokens else "")
                     + f", trains {report.examples.get(r, 0)} / {report.tokens.get(r, 0):,}" for r in differ)
    return (f"ftc: warning: the data differs from the plan's ({said}): the plan's memory and time figures were made "
            "for other data (a data file changed since the plan, another transformers here than where it was made, "
            "or a bug in ftc's plan-time data reading: please report that one)")


def progress_callback(total_steps: int) -> Any:
    """One tqdm bar on rank 0: step/total, ETA, the latest train loss and tokens/s; a line per validation."""
    from tqdm.auto import tqdm
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        bar = None

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                self.bar = tqdm(total=state.max_steps or total_steps, initial=state.global_step, desc="train",
                                unit="step", dynamic_ncols=True, file=sys.stderr,
                                mininterval=0.5 if sys.stderr.isatty() else 30)  # a log file gets a line per 30 s

        def on_step_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.bar is None or not logs:
                return
            if "loss" in logs:
                postfix = {"loss": f"{logs['loss']:.4f}"}
                if logs.get("train_tokens_per_second"):
                    postfix["tok/s"] = f"{logs['train_tokens_per_second']:,.0f}"
                self.bar.set_postfix(postfix, refresh=sys.stderr.isatty())
            if "eval_loss" in logs:
                self.bar.write(f"ftc: step {state.global_step}: validation loss {logs['eval_loss']:.4f}",
                               file=sys.stderr)

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    return Progress()
