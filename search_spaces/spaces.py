"""Optuna define-by-run search spaces for DialogueTRM.

A space is ``def name(trial: optuna.Trial) -> dict``: it samples hyperparameters with
``trial.suggest_*`` and returns the constants every trial of the space shares (the style of
optuna-examples and Ray's ``OptunaSearch``). Sampled values and constants together form a
trial's flat config, whose keys are fields of ``trainable.config.DialogueTRMConfig`` or of the
training config (``lr``, ``warmup_steps``, ``epochs``, ...).

Spaces only sample: anything computed (such as the largest K a memory budget affords) is bound
beforehand with :func:`bounded`, which returns a ``functools.partial`` of the space.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from collections.abc import Callable
from pathlib import Path

import optuna

from search_spaces.budget import MemoryProfile, largest_k
from search_spaces.custom import space_from_file

Space = Callable[[optuna.Trial], dict]


# Learning rates by what trains (see ``lr_range``): fine-tuning a pretrained encoder wants small
# steps (paper: 6e-6 for BERT-base), a random-init encoder trained from scratch large ones, and
# the layers above a frozen encoder (all random-init, none pretrained) sit in between.
LR_RANGES = {
    "finetune": (1e-6, 1e-4),
    "scratch": (3e-4, 1e-2),
    "frozen": (1e-5, 3e-3),
}


def lr_range(encoder: str, frozen: bool = False) -> tuple[float, float]:
    """The learning-rate range for trials of ``encoder`` (frozen or not)."""
    if frozen:
        return LR_RANGES["frozen"]
    return LR_RANGES["scratch" if encoder == "tiny" else "finetune"]


def paper(
    trial: optuna.Trial,
    k_max: int = 14,
    lr: tuple[float, float] = LR_RANGES["finetune"],
    fusion: bool = True,
) -> dict:
    """Around the paper's recipe (Section 5.2: lr 6e-6, warmup 1,200, K 14, 6/4 layers).

    ``k_max`` is the largest window the trial's memory budget affords (paper: 14 on 11 GB);
    ``lr`` the range for what trains (``lr_range``); ``fusion`` whether the data has more
    than one modality (text-only data has no fusion, so its layer count would be noise).
    """
    trial.suggest_float("lr", *lr, log=True)
    trial.suggest_int("warmup_steps", 0, 2000, step=100)
    trial.suggest_int("k", 1, k_max)
    trial.suggest_int("intra_layers", 1, 6)
    if fusion:
        trial.suggest_int("inter_layers", 1, 4)
    trial.suggest_float("dropout", 0.0, 0.3)
    # Pinned because the memory budget that bounds K assumes them.
    return {"encoder": "bert-base-uncased", "max_length": 256, "batch_size": 4}


def quick(
    trial: optuna.Trial,
    k_max: int = 8,
    lr: tuple[float, float] = LR_RANGES["scratch"],
    fusion: bool = True,
) -> dict:
    """Tiny random-init encoder, two epochs: a search that runs on a laptop CPU in minutes."""
    # A quick trial is only a few dozen steps: a short warmup.
    trial.suggest_float("lr", *lr, log=True)
    trial.suggest_int("warmup_steps", 0, 30)
    trial.suggest_int("k", 1, k_max)
    trial.suggest_int("intra_layers", 1, 2)
    if fusion:
        trial.suggest_int("inter_layers", 1, 2)
    trial.suggest_float("dropout", 0.0, 0.3)
    return {
        "encoder": "tiny",
        "hidden_size": 64,
        "intra_heads": 2,
        "inter_heads": 2,
        "ffn_size": 128,
        "max_length": 128,
        "epochs": 2,
        "batch_size": 8,
    }


SPACES: dict[str, Space] = {"paper": paper, "quick": quick}

# The worst-case memory profile of each space's trials (its largest layer counts) and the
# most K the space ever asks for; ``bounded`` lowers K below that to fit a budget.
BUDGETS: dict[str, tuple[MemoryProfile, int]] = {
    "paper": (MemoryProfile(), 32),
    "quick": (
        MemoryProfile(
            encoder="tiny",
            hidden_size=64,
            intra_layers=2,
            intra_heads=2,
            inter_layers=2,
            inter_heads=2,
            ffn_size=128,
            max_length=128,
            batch_size=8,
        ),
        8,
    ),
}


def bounded(
    name: str,
    gpu_memory_gb: float | None = None,
    *,
    encoder: str | None = None,
    frozen: bool = False,
    modalities: tuple[str, ...] | None = None,
) -> Space:
    """Space ``name`` with its bounds fitted to the search: K to what ``gpu_memory_gb``
    affords with ``encoder`` (see ``budget``), the learning rate to what trains (``encoder``,
    default the space's own, and ``frozen``), and fusion dimensions only when the data has
    more than one of ``modalities``. Other spaces (files, module:function) come as they are.

    Without a budget K keeps the space's default bound; with one, K's upper bound is the
    largest K whose estimate fits, capped at the space's ceiling (so 11 GB gives the paper's
    1..14). Raises ValueError if the budget cannot hold even K = 1.
    """
    space = get_space(name)
    if name not in SPACES:
        return space
    own = describe(space)[1].get("encoder", "bert-base-uncased")
    bounds: dict = {"lr": lr_range(encoder or own, frozen)}
    if modalities is not None:
        bounds["fusion"] = len(modalities) > 1
    if gpu_memory_gb is not None and name in BUDGETS:
        profile, ceiling = BUDGETS[name]
        if encoder:
            profile = dataclasses.replace(profile, encoder=encoder)
        k = largest_k(gpu_memory_gb, profile)
        if k is None or k < 1:
            raise ValueError(
                f"--gpu-memory-gb {gpu_memory_gb} is too small for space {name!r}: its trials "
                "need more than that even at K = 1 (see search_spaces/budget.py)"
            )
        bounds["k_max"] = min(k, ceiling)
    return functools.partial(space, **bounds)


def get_space(name: str) -> Space:
    """A space by registry name, ``package.module:function``, or a ``.toml``/``.json`` file
    of ranges (see ``search_spaces.custom``)."""
    if name in SPACES:
        return SPACES[name]
    if name.endswith((".toml", ".json")):
        return space_from_file(Path(name))
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            space = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as error:
            raise ValueError(f"--space {name!r} cannot be imported: {error}") from None
        if not callable(space):
            raise ValueError(f"--space {name!r} is not a function")
        return space
    raise ValueError(
        f"--space {name!r} is unknown; expected one of {', '.join(SPACES)}, "
        "a module:function, or a .toml/.json file of ranges"
    )


def space_name(space: Space) -> str:
    """A readable name for logs: the function's name, with bound arguments."""
    if isinstance(space, functools.partial):
        args = ", ".join(f"{k}={v}" for k, v in space.keywords.items())
        return f"{space_name(space.func)}({args})"
    return getattr(space, "__name__", repr(space))


def describe(space: Space, seed: int = 0) -> tuple[list[str], dict]:
    """Names the space samples and the constants it returns, from one throwaway trial."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        trial = study.ask()
        constants = space(trial) or {}
    finally:
        optuna.logging.set_verbosity(verbosity)
    return list(trial.params), dict(constants)
