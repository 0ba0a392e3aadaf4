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
import re
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
        "My card was declined although it has enough funds.",
        "Can I pay the {plan} plan yearly instead of monthly?",
        "The discount code was not applied to order {order}.",
        "I cancelled my {plan} plan but was billed again.",
    ],
    "technical": [
        "The {app} app crashes when I open the settings page.",
        "I get error {code} every time I try to sync.",
        "The {app} dashboard does not load in my browser.",
        "Uploads fail with error {code} after a few seconds.",
        "Since the last update the {app} app is very slow.",
        "The export button in {app} does nothing.",
        "Notifications stopped working in the {app} app.",
        "The {app} app logs me out every few minutes.",
        "Search returns error {code} for every query.",
        "Dark mode makes the text unreadable in {app}.",
    ],
    "account": [
        "I cannot log in to my account after resetting my password.",
        "Please change the email address on my account to a new one.",
        "How do I delete my account and all my data?",
        "My account was locked after too many login attempts.",
        "I want to add a second user to my {plan} account.",
        "Two factor codes never arrive on my phone.",
        "I want to change the name on my {plan} account.",
        "Someone else seems to be using my account.",
        "How do I transfer my account to a colleague?",
        "The password reset link has expired already.",
    ],
    "shipping": [
        "My package for order {order} has not arrived yet.",
        "The tracking number for order {order} does not work.",
        "Order {order} arrived damaged.",
        "Can I change the delivery address for order {order}?",
        "I received the wrong item in order {order}.",
        "Shipping for order {order} has been stuck for a week.",
        "Part of order {order} is missing from the box.",
        "The courier left order {order} at the wrong house.",
        "Do you ship order {order} to another country?",
        "I want to return order {order} for a refund.",
    ],
}
URGENCY = {
    "high": ["This is urgent.", "Please fix this asap.", "I need help immediately.", "This blocks my whole team.",
             "Critical issue, please respond today.", "We lose money every hour this is broken.",
             "Our launch is tomorrow, please hurry."],
    "normal": ["", "Thanks.", "Can you take a look?", "Please advise.", "Let me know what to do.",
               "Thank you for your help.", "What should I do next?"],
    "low": ["No rush.", "Whenever you have time.", "Just curious.", "Not important, low priority.",
            "It can wait until next week.", "Only a small thing, no hurry.", "Answer when you can."],
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
    """Distinct examples per split: no two tickets in any split are near-duplicates as ``ftc.data.select`` finds
    them (Jaccard >= 0.8 on the ticket and answer, the fixed instruction left out), so the selection keeps every row
    and the test tickets never have a copy in train or validation."""
    from ftc.data.quality import near_duplicate_pairs

    sizes = sizes or {"train": 1200, "validation": 100, "test": 100}
    need = sum(sizes.values())
    rng = random.Random(seed)
    seen: set[str] = set()
    candidates: list[dict[str, str]] = []
    while len(candidates) < 4 * need:
        ex = make_example(rng)
        if ex["input"] not in seen:
            seen.add(ex["input"])
            candidates.append(ex)
    pairs = list(near_duplicate_pairs([ex["input"] + "\n" + ex["output"] for ex in candidates], 0.8))
    near: dict[int, list[int]] = {}
    for i, j, _ in pairs:
        near.setdefault(j, []).append(i)
        near.setdefault(i, []).append(j)
    kept: list[int] = []
    taken: set[int] = set()
    for i in range(len(candidates)):
        if len(kept) == need:
            break
        if not taken.intersection(near.get(i, ())):
            kept.append(i)
            taken.add(i)
    if len(kept) < need:
        raise RuntimeError(f"only {len(kept)} distinct tickets; add templates to PROBLEMS/URGENCY")
    splits: dict[str, list[dict[str, str]]] = {}
    start = 0
    for split in ("test", "validation", "train"):
        splits[split] = [candidates[i] for i in kept[start:start + sizes[split]]]
        start += sizes[split]
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


# The messy variant (``data=sample_messy``): what real exports hold and ``ftc plan`` must find before training.
GERMAN = {
    "billing": ["Mir wurde das {plan} Abo diesen Monat doppelt berechnet.", "Bitte erstatten Sie die Abbuchung von "
                "{amount} Euro."],
    "technical": ["Die {app} App stürzt beim Öffnen der Einstellungen ab.", "Beim Synchronisieren kommt immer der "
                  "Fehler {code}."],
    "account": ["Ich kann mich nach dem Zurücksetzen des Passworts nicht mehr anmelden.", "Mein Konto wurde nach zu "
                "vielen Anmeldeversuchen gesperrt."],
    "shipping": ["Mein Paket für die Bestellung {order} ist noch nicht angekommen.", "Die Bestellung {order} kam "
                 "beschädigt an."],
}
GERMAN_URGENCY = {"high": "Das ist dringend, bitte heute noch antworten.", "normal": "Danke im Voraus.",
                  "low": "Keine Eile."}
# One planted value per kind (fictitious; the card and IBAN numbers pass their checksums, as real ones do).
PII = {
    "email": "Please reply to anna.berg@example.com.",
    "phone": "Call me back on +44 20 7946 0958.",
    "iban": "Refund it to DE89 3704 0044 0532 0130 00.",
    "card": "The card was 4111 1111 1111 1111.",
    "ip": "It happens from 203.0.113.42 only.",
    "credential": "Our key is AKIAIOSFODNN7EXAMPLE.",
}
MESSY_SIZES = {"train": 300, "test": 60}


def messy(seed: int = 2024) -> dict[str, list[dict[str, str]]]:
    """300 training and 60 test tickets with faults planted where ``ftc plan`` must find them: 20 training copies of
    test tickets with another greeting (leakage across the split), 15 near-copies inside training (another order
    number), 3 tickets per kind of personal data or secret, and 30 tickets in German."""
    rng = random.Random(seed)
    base = build(seed, {"test": MESSY_SIZES["test"], "validation": 0, "train": MESSY_SIZES["train"] - 65})
    train, test = base["train"], base["test"]
    other = {g: [x for x in GREETINGS if x != g] for g in GREETINGS}
    for row in test[:20]:  # the same ticket as a test one, greeted differently
        greeting = next((g for g in GREETINGS if g and row["input"].startswith(g)), "")
        body = row["input"][len(greeting):].strip()
        train.append({**row, "input": f"{rng.choice([g for g in other[greeting] if g])} {body}"})
    for row in train[:15]:  # another order number / amount in the same ticket
        train.append({**row, "input": re.sub(r"\b(\d{2,4})\b", lambda m: str(int(m.group()) + 7), row["input"],
                                        count=1)
                      + (" Thanks." if not re.search(r"\d", row["input"]) else "")})
    for i, sentence in enumerate(PII.values()):
        for row in train[20 + 3 * i: 23 + 3 * i]:
            row["input"] = f"{row['input']} {sentence}"
    for _ in range(MESSY_SIZES["train"] - len(train)):
        category, priority = rng.choice(sorted(GERMAN)), rng.choice(["low", "normal", "high"])
        problem = rng.choice(GERMAN[category]).format(**{k: rng.choice(v) for k, v in SLOTS.items()})
        train.append({"instruction": INSTRUCTION, "input": f"Hallo, {problem} {GERMAN_URGENCY[priority]}",
                      "output": f"category: {category} | priority: {priority}"})
    random.Random(seed + 1).shuffle(train)
    return {"train": train, "test": test}


def distinct(splits: dict[str, list[dict[str, Any]]], fmt: str, sizes: dict[str, int]) -> dict[str, list[dict]]:
    """The first ``sizes[split]`` rows of each split such that no two kept rows of any split are near-duplicates as
    ``ftc.data.select`` compares rows of format ``fmt`` (held-out splits first, as it groups them)."""
    from ftc.data.formats import check_row, pieces
    from ftc.data.quality import near_duplicate_pairs, own_text

    order = [(split, row) for split in ("test", "validation", "train") for row in splits[split]]
    texts = [own_text(pieces(check_row(row, fmt, {}), fmt), frozenset([INSTRUCTION])) for _, row in order]
    near: dict[int, set[int]] = {}
    for i, j, _ in near_duplicate_pairs(texts, 0.8):
        near.setdefault(i, set()).add(j)
        near.setdefault(j, set()).add(i)
    kept: set[int] = set()
    out: dict[str, list[dict]] = {split: [] for split in splits}
    for i, (split, row) in enumerate(order):
        if len(out[split]) < sizes[split] and not kept & near.get(i, set()):
            kept.add(i)
            out[split].append(row)
    short = {split: len(rows) for split, rows in out.items() if len(rows) < sizes[split]}
    if short:
        raise RuntimeError(f"too few distinct {fmt} rows: {short}")
    return out


def _write(out: Path, splits: dict[str, list[dict[str, Any]]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        with open(out / f"{split}.jsonl", "w") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        print(f"{out.name}/{split}: {len(rows)} rows -> {out / (split + '.jsonl')}")


def main() -> None:
    assets = Path(__file__).resolve().parent.parent / "assets"
    tickets = build()
    _write(assets / "sample", tickets)
    _write(assets / "sample_chat", {split: [as_chat(r) for r in rows] for split, rows in tickets.items()})
    # Pairs and labelled answers compare on their answers too: a few more tickets than needed, near-copies dropped.
    spare = build(sizes={"train": 1220, "validation": 110, "test": 110})
    rng = random.Random(99)
    pairs = {split: [as_preference(r, rng) for r in rows] for split, rows in spare.items()}
    _write(assets / "sample_preference", distinct(pairs, "preference", PREFERENCE_SIZES))
    rng = random.Random(7)
    labelled = {split: [as_kto(r, rng) for r in rows] for split, rows in spare.items()}
    _write(assets / "sample_kto", distinct(labelled, "kto", {"train": 800, "validation": 100, "test": 100}))
    _write(assets / "sample_messy", messy())


if __name__ == "__main__":
    main()
