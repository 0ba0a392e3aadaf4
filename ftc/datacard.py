"""The data card: what the data is, what was dropped and why, what it holds, in one page a person reads before
paying for a run.

``ftc plan --data-card DIR`` writes it from the plan (token lengths of the training file's first rows, counted with
the model's tokenizer when it is on disk); ``ftc train`` writes it into the run directory from the tokenized data
(every training example) and report.md embeds it. Both read the same selection (ftc.data.select).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from ftc.render import DROPPED

PNG = "data_tokens.png"
MD = "data_card.md"


def markdown(d: Any, examples: dict[str, int], dropped: dict[str, int], quality: Any, lengths: Sequence[int],
             lengths_what: str, truncated: Optional[int] = None, png: bool = True) -> str:
    """The card as Markdown. ``d`` is the Plan's DataSpec; ``quality`` its DataQuality (or the run's dict of it);
    ``lengths`` tokens per example as ``lengths_what`` says they were measured."""
    q = quality if isinstance(quality, dict) else quality.__dict__
    lines = ["## Data card", "", f"`{d.name}` ({d.format}), `{d.path}`"
             + (f", validation `{d.validation_path}`" if d.validation_path else "")
             + (f", test `{d.test_path}`" if d.test_path else ""), ""]
    part = getattr(d, "part", None)
    if part is not None:  # data.max_rows: a part of a hub split
        whole = f"{part.total:,} rows ({part.total_from})" if part.total else "an unknown number of rows"
        lines += [f"**A part of the split**: its first {part.rows:,} rows (`data.max_rows`), from {part.shards_read} "
                  f"of its {part.shards} files; the whole split holds {whole}.", ""]
    lines += ["| split | examples |", "|---|---:|"]
    lines += [f"| {role} | {examples.get(role, 0)} |" for role in ("train", "validation", "test")]
    gone = [f"{n} {DROPPED.get(k, k)}" for k, n in dropped.items() if n]
    lines += ["", "**Dropped before splitting**: " + (", ".join(gone) if gone else "nothing") + "."]
    if not q.get("checked", True):
        lines += ["", "The files are not readable before launch (remote): near-duplicates, personal data and "
                      "languages are checked when `ftc train` reads them."]
    else:
        threshold = d.near_dup_threshold
        lines += ["", f"**Near-duplicates** (Jaccard >= {threshold:g} on {q['compared_on']}): {q['near_groups']} "
                      "groups, one example of each kept." if threshold is not None else
                  "**Near-duplicates**: not checked (`data.near_dup_threshold=null`)."]
        lines += [f"- `{line}`" for line in q["near_shown"][:5]]
        if q["leaked"]:
            lines += ["", f"**Clean test set**: {q['leaked']} training rows that (nearly) duplicate test or validation "
                          "rows were dropped from training, so the verdict is measured on examples the model never saw "
                          "a copy of."]
            lines += [f"- `{line}`" for line in q["leaked_shown"][:5]]
        else:
            lines += ["", "**Clean test set**: no training example (nearly) duplicates a test or validation example."]
        if q["moved"]:
            lines += [f"{q['moved']} held-out examples were moved back to training (their near-duplicates train, "
                      "`data.dedup=false`)."]
        pii = q["pii"]
        lines += ["", "**Personal data and secrets**: " + (
            ", ".join(f"{n} {k}" for k, n in pii.items()) + f" (`data.pii={d.pii}`)" if pii else "none found") + "."]
        lines += [f"- `{line}`" for line in q["pii_shown"][:5]]
        langs = ", ".join(f"{k} {n}" for k, n in q["languages"].items())
        what = f"an even sample of {q['languages_sampled']} examples" if q.get("languages_sampled") else "per example"
        lines += ["", f"**Languages** (detected {what}): {langs or 'none'}"
                  + (f"; kept: {', '.join(d.languages)}" if d.languages else "") + "."]
    if lengths:
        over = sum(1 for n in lengths if n > d.max_length)
        lines += ["", f"**Tokens per example** ({lengths_what}): mean {sum(lengths) / len(lengths):.0f}, longest "
                      f"{max(lengths)}; {over} of {len(lengths)} over max_length {d.max_length}"
                  + (f" ({truncated} truncated in training)" if truncated is not None else "") + "."]
        if png:
            lines += ["", f"![tokens per example]({PNG})"]
    return "\n".join(lines) + "\n"


def histogram(path: Path, lengths: Sequence[int], max_length: int, what: str) -> Optional[Path]:
    """Tokens per example as a histogram with the max_length cut marked; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.hist(lengths, bins=min(40, max(5, len(set(lengths)))), color="#4C72B0")
    ax.axvline(max_length, color="#C44E52", linestyle="--", label=f"max_length {max_length}")
    ax.set_xlabel(f"tokens per example ({what})")
    ax.set_ylabel("examples")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write(directory: Path, d: Any, examples: dict[str, int], dropped: dict[str, int], quality: Any,
          lengths: Sequence[int], lengths_what: str, truncated: Optional[int] = None) -> str:
    """data_card.md (and data_tokens.png) in ``directory``; returns the Markdown."""
    from ftc.paths import atomic_path

    directory.mkdir(parents=True, exist_ok=True)
    png = bool(lengths) and histogram(directory / PNG, lengths, d.max_length, lengths_what) is not None
    text = markdown(d, examples, dropped, quality, lengths, lengths_what, truncated, png)
    with atomic_path(directory / MD) as tmp:
        tmp.write_text(text)
    return text
