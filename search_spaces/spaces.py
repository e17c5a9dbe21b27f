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

import functools
import importlib
from collections.abc import Callable
from pathlib import Path

import optuna

from search_spaces.budget import MemoryProfile, largest_k
from search_spaces.custom import space_from_file

Space = Callable[[optuna.Trial], dict]


def paper(trial: optuna.Trial, k_max: int = 14) -> dict:
    """Around the paper's recipe (Section 5.2: lr 6e-6, warmup 1,200, K 14, 6/4 layers).

    ``k_max`` is the largest window the trial's memory budget affords (paper: 14 on 11 GB).
    """
    trial.suggest_float("lr", 1e-6, 5e-5, log=True)
    trial.suggest_int("warmup_steps", 0, 2000, step=100)
    trial.suggest_int("k", 1, k_max)
    trial.suggest_int("intra_layers", 1, 6)
    trial.suggest_int("inter_layers", 1, 4)
    trial.suggest_float("dropout", 0.0, 0.3)
    # Pinned because the memory budget that bounds K assumes them.
    return {"encoder": "bert-base-uncased", "max_length": 256, "batch_size": 4}


def quick(trial: optuna.Trial, k_max: int = 8) -> dict:
    """Tiny random-init encoder, two epochs: a search that runs on a laptop CPU in minutes."""
    # A quick trial is only a few dozen steps: a short warmup, a learning rate for training a
    # random-init encoder from scratch.
    trial.suggest_float("lr", 3e-4, 1e-2, log=True)
    trial.suggest_int("warmup_steps", 0, 30)
    trial.suggest_int("k", 1, k_max)
    trial.suggest_int("intra_layers", 1, 2)
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


def bounded(name: str, gpu_memory_gb: float | None = None) -> Space:
    """Space ``name`` with K bounded by what ``gpu_memory_gb`` affords (see ``budget``).

    Without a budget the space keeps its own default bound. With one, K's upper bound is the
    largest K whose estimate fits, capped at the space's ceiling (so 11 GB gives the paper's
    1..14). Raises ValueError if the budget cannot hold even K = 1.
    """
    space = get_space(name)
    if gpu_memory_gb is None or name not in BUDGETS:
        return space
    profile, ceiling = BUDGETS[name]
    k = largest_k(gpu_memory_gb, profile)
    if k is None or k < 1:
        raise ValueError(
            f"--gpu-memory-gb {gpu_memory_gb} is too small for space {name!r}: its trials "
            "need more than that even at K = 1 (see search_spaces/budget.py)"
        )
    return functools.partial(space, k_max=min(k, ceiling))


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
