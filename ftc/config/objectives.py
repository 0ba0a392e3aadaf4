"""The trainers an objective can name: what ``objective.trainer`` may be, with everything every layer reads of it.

An objective *option* (``conf/objective/<name>.yaml``) names a trainer and its settings (beta, loss type); the
compiler (sequences, reference forwards, packing, loss), the rules (data formats, loss names), rendering, evaluation,
the run report and the sweep summary read the trainer's entry here, never the option's or the trainer's name. The
runtime keeps only the TRL builders (``ftc.runtime.train.BUILDERS``), keyed by the same names; a test holds the two
sets equal. A new objective on an existing trainer is therefore one YAML file (``conf/objective/ipo.yaml``); a new
trainer is one entry here and one builder.
"""

from __future__ import annotations

from dataclasses import dataclass

# TRL's DPOConfig.loss_type names (trl/trainer/dpo_config.py).
DPO_LOSSES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
              "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")
# TRL's KTOConfig.loss_type names (trl/trainer/kto_config.py).
KTO_LOSSES = ("kto", "apo_zero_unpaired")
# TRL's GRPOConfig.loss_type names (trl/trainer/grpo_config.py).
GRPO_LOSSES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo")


@dataclass(frozen=True)
class Trainer:
    name: str
    trl: str
    """The TRL trainer that implements it."""
    formats: tuple[str, ...]
    """data.format values it trains on."""
    format_fix: str
    """The override that gives it data it accepts."""
    sequences_per_example: int
    """Sequences one example runs through the model with gradient (preference pairs: chosen and rejected)."""
    reference_forwards: int
    """Forward passes per sequence without gradient (DPO's reference log-probabilities; KTO adds its KL estimate)."""
    examples_per_row: int
    """Training examples one preference pair gives (KTO unpairs it into a desirable and an undesirable example;
    other rows give one): the steps of an epoch count these."""
    generates: bool
    """Online: completions are sampled during training (GRPO), objective.num_generations per prompt; each is a
    training example and generation is priced in time and memory."""
    packs: bool
    """Padding-free packing is possible (TRL's preference trainers pad)."""
    selective_loss: bool
    """ftc's selective loss can replace the trainer's (SFT's causal-LM loss); else TRL computes its own loss."""
    evaluation: str
    """How ``ftc eval`` judges it: ``generation`` (exact match, ROUGE-L, test loss) or ``pairs`` (preference
    accuracy and margins on held-out pairs)."""
    headline: str
    """The metric a sweep ranks trials by unless told otherwise."""
    uses_beta: bool
    losses: tuple[str, ...]
    """objective.loss_type values TRL accepts for it (empty: it has one loss)."""
    default_loss: str
    loss_doc: str
    """What its loss is, for the plan's decision line."""


TRAINERS = {t.name: t for t in (
    Trainer("sft", trl="SFTTrainer", formats=("alpaca", "prompt_completion", "chat", "text"),
            format_fix="data=sample (or data.format=alpaca|prompt_completion|chat|text)",
            sequences_per_example=1, reference_forwards=0, examples_per_row=1, generates=False, packs=True,
            selective_loss=True, evaluation="generation",
            headline="exact_match", uses_beta=False, losses=(), default_loss="",
            loss_doc="next-token cross-entropy"),
    Trainer("dpo", trl="DPOTrainer", formats=("preference",),
            format_fix="data=sample_preference, or data.format=preference with {prompt, chosen, rejected} rows",
            sequences_per_example=2, reference_forwards=1, examples_per_row=1, generates=False, packs=False,
            selective_loss=False, evaluation="pairs", headline="preference_accuracy", uses_beta=True, losses=DPO_LOSSES,
            default_loss="sigmoid",
            loss_doc="TRL's DPO loss over the per-token log-probabilities of both sequences and the reference's"),
    Trainer("orpo", trl="experimental.orpo.ORPOTrainer", formats=("preference",),
            format_fix="data=sample_preference, or data.format=preference with {prompt, chosen, rejected} rows",
            sequences_per_example=2, reference_forwards=0, examples_per_row=1, generates=False, packs=False,
            selective_loss=False, evaluation="pairs", headline="preference_accuracy", uses_beta=True, losses=(),
            default_loss="",
            loss_doc="TRL's ORPO loss: SFT on the chosen answer + beta x the odds-ratio term; no reference model"),
    Trainer("kto", trl="KTOTrainer", formats=("kto", "preference"),
            format_fix="data=sample_kto ({prompt, completion, label} rows), or data=sample_preference (pairs are "
                       "unpaired: chosen desirable, rejected undesirable)",
            sequences_per_example=1, reference_forwards=3, examples_per_row=2, generates=False, packs=False,
            selective_loss=False, evaluation="pairs", headline="preference_accuracy", uses_beta=True,
            losses=KTO_LOSSES, default_loss="kto",
            loss_doc="TRL's KTO loss on unpaired desirable/undesirable answers, with a reference and a KL estimate "
                     "from mismatched pairs"),
    Trainer("grpo", trl="GRPOTrainer", formats=("alpaca", "prompt_completion"),
            format_fix="data=sample (prompts with a reference answer: alpaca or prompt_completion rows)",
            sequences_per_example=1, reference_forwards=0, examples_per_row=0, generates=True, packs=False,
            selective_loss=False, evaluation="reward", headline="reward", uses_beta=True, losses=GRPO_LOSSES,
            default_loss="dapo",
            loss_doc="TRL's GRPO loss: group-relative advantages of the sampled completions' rewards"),
)}
