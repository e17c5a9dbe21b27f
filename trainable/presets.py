"""Named starting points for `orch train`: the paper's recipe, and a tiny one for CPUs.

A preset is a set of overrides of DialogueTRMConfig and TrainConfig fields; options given on
the command line override the preset. (Search presets, per dataset: ``search_spaces.presets``.)
"""

from __future__ import annotations

TRAIN_PRESETS: dict[str, dict] = {
    # Section 5.2 as is: every field at its dataclass default.
    "paper": {},
    # Random-init tiny BERT: small widths, and a learning rate/warmup that suit training from
    # scratch on a few hundred steps instead of fine-tuning BERT-base.
    "tiny": {
        "encoder": "tiny",
        "hidden_size": 64,
        "intra_layers": 2,
        "intra_heads": 2,
        "inter_layers": 2,
        "inter_heads": 2,
        "ffn_size": 256,
        "max_length": 128,
        "k": 5,
        "lr": 1e-3,
        "warmup_steps": 20,
        "batch_size": 4,
    },
}


def default_preset(encoder: str | None) -> str:
    return "tiny" if encoder == "tiny" else "paper"
