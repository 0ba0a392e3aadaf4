"""Builds the built-in ``data=sample`` set: support-ticket triage in alpaca format (and its chat and preference-pair
variants, ``data=sample_chat`` and ``data=sample_preference``).

The task is a narrow format + classification job of the kind people fine-tune for: read a ticket, answer exactly
``category: <billing|technical|account|shipping> | priority: <low|normal|high>``. The category follows from what
the ticket is about, the priority from urgency cues. A random-init model scores 0% exact match; a short LoRA run
learns both the format and the labels.

Deterministic: ``python -m ftc.data.make_sample`` rewrites ftc/assets/sample/*.jsonl identically.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

INSTRUCTION = ("Triage the support ticket. Answer as: category: <billing|technical|account|shipping> | "
               "priority: <low|normal|high>")

PROBLEMS = {
    "billing": [
        "I was charged twice for my {plan} subscription this month.",
        "My invoice shows {amount} dollars but I expected less.",
        "Please refund the {amount} dollar charge on my card.",
        "Why did my {plan} plan price go up?",
        "The payment for order {order} failed but money left my account.",
        "I need a copy of the invoice for order {order}.",
    ],
    "technical": [
        "The {app} app crashes when I open the settings page.",
        "I get error {code} every time I try to sync.",
        "The {app} dashboard does not load in my browser.",
        "Uploads fail with error {code} after a few seconds.",
        "Since the last update the {app} app is very slow.",
        "The export button in {app} does nothing.",
    ],
    "account": [
        "I cannot log in to my account after resetting my password.",
        "Please change the email address on my account to a new one.",
        "How do I delete my account and all my data?",
        "My account was locked after too many login attempts.",
        "I want to add a second user to my {plan} account.",
        "Two factor codes never arrive on my phone.",
    ],
    "shipping": [
        "My package for order {order} has not arrived yet.",
        "The tracking number for order {order} does not work.",
        "Order {order} arrived damaged.",
        "Can I change the delivery address for order {order}?",
        "I received the wrong item in order {order}.",
        "Shipping for order {order} has been stuck for a week.",
    ],
}
URGENCY = {
    "high": ["This is urgent.", "Please fix this asap.", "I need help immediately.", "This blocks my whole team.",
             "Critical issue, please respond today."],
    "normal": ["", "Thanks.", "Can you take a look?", "Please advise.", "Let me know what to do."],
    "low": ["No rush.", "Whenever you have time.", "Just curious.", "Not important, low priority.",
            "It can wait until next week."],
}
GREETINGS = ["", "Hi,", "Hello,", "Hi team,", "Good morning,"]
SLOTS = {
    "plan": ["basic", "pro", "team", "family", "yearly"],
    "app": ["mobile", "desktop", "web", "android", "ios"],
    "amount": [str(n) for n in (9, 12, 19, 29, 49, 99, 120)],
    "order": [str(n) for n in range(1000, 1100)],
    "code": [str(n) for n in (401, 403, 404, 500, 502, 503)],
}


def make_example(rng: random.Random) -> dict[str, str]:
    category = rng.choice(sorted(PROBLEMS))
    priority = rng.choice(["low", "normal", "normal", "high"])
    problem = rng.choice(PROBLEMS[category])
    problem = problem.format(**{k: rng.choice(v) for k, v in SLOTS.items()})
    parts = [rng.choice(GREETINGS), problem, rng.choice(URGENCY[priority])]
    ticket = " ".join(p for p in parts if p)
    return {"instruction": INSTRUCTION, "input": ticket, "output": f"category: {category} | priority: {priority}"}


def build(seed: int = 1234, sizes: dict[str, int] | None = None) -> dict[str, list[dict[str, str]]]:
    """Unique examples per split; the test tickets never appear in train or validation."""
    sizes = sizes or {"train": 1200, "validation": 100, "test": 100}
    rng = random.Random(seed)
    seen: set[str] = set()
    splits: dict[str, list[dict[str, str]]] = {}
    for split in ("test", "validation", "train"):
        rows = []
        while len(rows) < sizes[split]:
            ex = make_example(rng)
            if ex["input"] in seen:
                continue
            seen.add(ex["input"])
            rows.append(ex)
        splits[split] = rows
    return splits


def as_chat(row: dict[str, str]) -> dict[str, list[dict[str, str]]]:
    """The same example as a chat: the instruction becomes the system message."""
    return {"messages": [{"role": "system", "content": row["instruction"]}, {"role": "user", "content": row["input"]},
                         {"role": "assistant", "content": row["output"]}]}


def as_preference(row: dict[str, str], rng: random.Random) -> dict[str, str]:
    """A preference pair: the right triage is chosen, one with a wrong category or a wrong priority rejected."""
    category, priority = (part.split(": ")[1] for part in row["output"].split(" | "))
    if rng.random() < 0.5:
        category = rng.choice([c for c in sorted(PROBLEMS) if c != category])
    else:
        priority = rng.choice([p for p in URGENCY if p != priority])
    return {"prompt": f"{row['instruction']}\n\nTicket: {row['input']}", "chosen": row["output"],
            "rejected": f"category: {category} | priority: {priority}"}


PREFERENCE_SIZES = {"train": 400, "validation": 50, "test": 100}


def as_kto(row: dict[str, str], rng: random.Random) -> dict[str, Any]:
    """An unpaired, labelled answer (KTO's thumbs-up/down data): the right triage (label true) or a wrong one (label
    false), each prompt once."""
    pair = as_preference(row, rng)
    good = rng.random() < 0.5
    return {"prompt": pair["prompt"], "completion": pair["chosen"] if good else pair["rejected"], "label": good}


def main() -> None:
    assets = Path(__file__).resolve().parent.parent / "assets"
    rng = random.Random(99)
    out = assets / "sample_preference"
    out.mkdir(parents=True, exist_ok=True)
    for split, rows in build().items():
        with open(out / f"{split}.jsonl", "w") as f:
            for r in rows[: PREFERENCE_SIZES[split]]:
                f.write(json.dumps(as_preference(r, rng)) + "\n")
    rng_kto = random.Random(7)
    out = assets / "sample_kto"
    out.mkdir(parents=True, exist_ok=True)
    for split, rows in build().items():
        with open(out / f"{split}.jsonl", "w") as f:
            for r in rows[: 2 * PREFERENCE_SIZES[split]]:
                f.write(json.dumps(as_kto(r, rng_kto)) + "\n")
    for name, convert in (("sample", lambda r: r), ("sample_chat", as_chat)):
        out = assets / name
        out.mkdir(parents=True, exist_ok=True)
        for split, rows in build().items():
            with open(out / f"{split}.jsonl", "w") as f:
                for r in rows:
                    f.write(json.dumps(convert(r)) + "\n")
            print(f"{name}/{split}: {len(rows)} rows -> {out / (split + '.jsonl')}")


if __name__ == "__main__":
    main()
