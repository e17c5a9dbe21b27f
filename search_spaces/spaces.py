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
import itertools
from collections.abc import Callable
from pathlib import Path

import optuna

from search_spaces.budget import MemoryProfile, estimate_gb, largest_k
from search_spaces.custom import space_from_file
from search_spaces.memory_plan import candidate_settings, plan_cost

Space = Callable[[optuna.Trial], dict]


# Learning rates by what trains (see ``lr_range``): fine-tuning a pretrained encoder wants small
# steps (paper: 6e-6 for BERT-base), a random-init encoder trained from scratch large ones, and
# the layers above a frozen encoder (all random-init, none pretrained) sit in between.
LR_RANGES = {
    "finetune": (1e-6, 1e-4),
    "scratch": (3e-4, 1e-2),
    "frozen": (1e-5, 3e-3),
}


@dataclasses.dataclass(frozen=True, repr=False)
class MemoryBounds:
    """What a budget affords a joint space, precomputed by ``memory_bounds`` so that a space
    only samples and looks up (and pickles with plain data for Ray)."""

    budget_gb: float
    """The budget the bounds were computed for."""
    modes: tuple[str, ...]
    """Precisions that fit at all (a joint space samples among them), or ``("auto",)``."""
    sampled: bool
    """True: precision is sampled; False: ``plan`` picks each trial's memory settings."""
    ks: dict
    """(mode, batch, intra, inter) -> largest K that fits (0: none)."""
    plans: dict
    """(batch, intra, inter) -> ((precision, checkpointing, chunk, largest K), ...)."""
    profile: MemoryProfile
    """The profile the bounds were computed for (batch and layers replaced per entry)."""

    def __repr__(self) -> str:  # in a space's name: a summary, not thousands of table entries
        return f"MemoryBounds({self.budget_gb:g} GB, {'/'.join(self.modes) or 'nothing fits'})"

    def k_max(self, mode: str, batch: int, intra: int, inter: int) -> int:
        return self.ks.get((mode, batch, intra, inter), 0)

    def inter_max(self, mode: str, batch: int, intra: int) -> int:
        return max((j for j in range(1, 5) if self.k_max(mode, batch, intra, j) >= 1), default=1)

    def intra_max(self, mode: str, batch: int) -> int:
        return max((i for i in range(1, 7) if self.k_max(mode, batch, i, 1) >= 1), default=1)

    def batch_max(self, mode: str) -> int:
        return max((b for b in range(1, 9) if self.k_max(mode, b, 1, 1) >= 1), default=1)

    def plan(self, batch: int, intra: int, inter: int, k: int) -> dict:
        """The cheapest settings under which (batch, layers, K) fit, as trial constants."""
        fits = [
            (plan_cost(ckpt, chunk), rank, precision, ckpt, chunk)
            for rank, (precision, ckpt, chunk, top) in enumerate(self.plans[(batch, intra, inter)])
            if top >= k
        ]
        _, _, precision, ckpt, chunk = min(fits)
        profile = dataclasses.replace(
            self.profile,
            batch_size=batch,
            intra_layers=intra,
            inter_layers=inter,
            precision=precision,
            gradient_checkpointing=ckpt,
            chunk_size=chunk,
        )
        return {
            "memory": "auto",
            "precision": precision,
            "gradient_checkpointing": ckpt,
            "chunk_size": chunk,
            "memory_estimate_gb": round(estimate_gb(k, profile), 2),
        }


def memory_bounds(
    budget_gb: float, profile: MemoryProfile, ceiling: int, name: str, fusion: bool = True
) -> MemoryBounds:
    """Largest K per (precision or auto, batch size, intra, inter layers) within
    ``budget_gb``, at most ``ceiling``, for the batch sizes and layers space ``name`` samples."""
    batches = range(1, 9) if name.startswith("joint") else (profile.batch_size,)
    intra_range = range(1, 3) if name == "quick" else range(1, 7)
    inter_range = (range(1, 3) if name == "quick" else range(1, 5)) if fusion else (0,)
    settings = candidate_settings(profile.turns)
    ks, plans = {}, {}
    for b, i, j in itertools.product(batches, intra_range, inter_range):
        base = dataclasses.replace(profile, batch_size=b, intra_layers=i, inter_layers=j)
        tops = []
        for precision, ckpt, chunk in settings:
            p = dataclasses.replace(
                base, precision=precision, gradient_checkpointing=ckpt, chunk_size=chunk
            )
            top = min(largest_k(budget_gb, p) or 0, ceiling)
            tops.append((precision, ckpt, chunk, top))
            if not ckpt and not chunk:
                ks[(precision, b, i, j)] = top
        plans[(b, i, j)] = tuple(tops)
        ks[("auto", b, i, j)] = max(top for *_, top in tops)
    if name == "joint":
        modes = tuple(p for p in ("fp32", "bf16") if ks[(p, 1, 1, inter_range[0])] >= 1)
    else:
        modes = ("auto",) if ks[("auto", batches[0], 1, inter_range[0])] >= 1 else ()
    return MemoryBounds(budget_gb, modes, name == "joint", ks, plans, profile)


@functools.cache
def default_bounds(name: str) -> MemoryBounds:
    """A joint space's bounds when none were bound: the paper's 11 GB, BERT-base, MELD."""
    return memory_bounds(11.0, BUDGETS["paper"][0], BUDGETS["paper"][1], name)


def lr_range(encoder: str, frozen: bool = False) -> tuple[float, float]:
    """The learning-rate range for trials of ``encoder`` (frozen or not)."""
    if frozen:
        return LR_RANGES["frozen"]
    return LR_RANGES["scratch" if encoder == "tiny" else "finetune"]


def warmup_steps(trial: optuna.Trial, high: int, run_steps: int | None) -> None:
    """Warmup of 0..``high`` optimizer steps, and at most half of a full trial's ``run_steps``:
    a warmup longer than the run never reaches the peak rate (a 40-dialogue MELD search drew
    900-1,500 warmup steps for ~10 steps an epoch, and every trial stayed at the majority)."""
    if run_steps is not None:
        high = min(high, run_steps // 2)
    step = 100 if high >= 1000 else 1
    trial.suggest_int("warmup_steps", 0, high - high % step, step=step)


def paper(
    trial: optuna.Trial,
    k_max: int = 14,
    lr: tuple[float, float] = LR_RANGES["finetune"],
    fusion: bool = True,
    memory: MemoryBounds | None = None,
    run_steps: int | None = None,
) -> dict:
    """Around the paper's recipe (Section 5.2: lr 6e-6, warmup 1,200, K 14, 6/4 layers).

    ``k_max`` is the largest window the trial's memory budget affords (paper: 14 on 11 GB);
    ``lr`` the range for what trains (``lr_range``); ``fusion`` whether the data has more
    than one modality (text-only data has no fusion, so its layer count would be noise);
    ``memory`` (bound by ``bounded``) picks each trial's memory settings (``memory=auto``);
    ``run_steps`` (a full trial's optimizer steps) caps the warmup (``warmup_steps``).
    """
    trial.suggest_float("lr", *lr, log=True)
    warmup_steps(trial, 2000, run_steps)
    k = trial.suggest_int("k", 1, k_max)
    intra = trial.suggest_int("intra_layers", 1, 6)
    inter = trial.suggest_int("inter_layers", 1, 4) if fusion else 0
    trial.suggest_float("dropout", 0.0, 0.3)
    # Pinned because the memory budget that bounds K assumes them.
    constants = {"encoder": "bert-base-uncased", "max_length": 256, "batch_size": 4}
    if memory is not None:  # the cheapest precision/checkpointing/chunking that fits
        constants |= memory.plan(4, intra, inter, k)
    return constants


def quick(
    trial: optuna.Trial,
    k_max: int = 8,
    lr: tuple[float, float] = LR_RANGES["scratch"],
    fusion: bool = True,
    run_steps: int | None = None,
) -> dict:
    """Tiny random-init encoder, two epochs: a search that runs on a laptop CPU in minutes."""
    # A quick trial is only a few dozen steps: a short warmup.
    trial.suggest_float("lr", *lr, log=True)
    warmup_steps(trial, 30, run_steps)
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


def joint(
    trial: optuna.Trial,
    memory: MemoryBounds | None = None,
    lr: tuple[float, float] = LR_RANGES["finetune"],
    fusion: bool = True,
    run_steps: int | None = None,
) -> dict:
    """The paper's model with memory-driving choices sampled jointly, define-by-run: precision
    (unless ``memory`` chooses it per trial: ``joint-auto``), then batch size, layer counts and
    K, each up to the most the budget affords with the choices before it (``MemoryBounds``).
    Unbound, the bounds are the paper's 11 GB with BERT-base on MELD."""
    memory = memory or default_bounds("joint")
    trial.suggest_float("lr", *lr, log=True)
    warmup_steps(trial, 2000, run_steps)
    mode = trial.suggest_categorical("precision", memory.modes) if memory.sampled else "auto"
    batch = trial.suggest_int("batch_size", 1, memory.batch_max(mode))
    intra = trial.suggest_int("intra_layers", 1, memory.intra_max(mode, batch))
    inter = (
        trial.suggest_int("inter_layers", 1, memory.inter_max(mode, batch, intra)) if fusion else 0
    )
    k = trial.suggest_int("k", 1, memory.k_max(mode, batch, intra, inter))
    trial.suggest_float("dropout", 0.0, 0.3)
    constants = {"encoder": "bert-base-uncased", "max_length": 256}
    if not memory.sampled:
        constants |= memory.plan(batch, intra, inter, k)
    return constants


def joint_auto(
    trial: optuna.Trial,
    memory: MemoryBounds | None = None,
    lr: tuple[float, float] = LR_RANGES["finetune"],
    fusion: bool = True,
    run_steps: int | None = None,
) -> dict:
    """``joint`` with ``memory=auto``: batch size, layers and K are sampled up to what the
    most saving settings afford, then each trial gets the cheapest settings that fit it
    (recorded in its config: ``memory``, ``precision``, ``gradient_checkpointing``,
    ``chunk_size``, ``memory_estimate_gb``)."""
    return joint(trial, memory or default_bounds("joint-auto"), lr, fusion, run_steps)


SPACES: dict[str, Space] = {
    "paper": paper,
    "quick": quick,
    "joint": joint,
    "joint-auto": joint_auto,
}

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
    train_dialogues: int | None = None,
    epochs: int | None = None,
) -> Space:
    """Space ``name`` with its bounds fitted to the search: K to what ``gpu_memory_gb``
    affords with ``encoder`` (see ``budget``), the learning rate to what trains (``encoder``,
    default the space's own, and ``frozen``), and fusion dimensions only when the data has
    more than one of ``modalities``. Other spaces (files, module:function) come as they are.

    With ``train_dialogues`` (and ``epochs``, default the space's) the warmup is capped at
    half of a full trial's optimizer steps. Without a budget K keeps the space's default
    bound; with one, K's upper bound is the
    largest K whose estimate fits, capped at the space's ceiling (so 11 GB gives the paper's
    1..14). Raises ValueError if the budget cannot hold even K = 1.
    """
    space = get_space(name)
    if name not in SPACES:
        return space
    own_constants = describe(space)[1]
    own = own_constants.get("encoder", "bert-base-uncased")
    bounds: dict = {"lr": lr_range(encoder or own, frozen)}
    if train_dialogues is not None:
        bounds["run_steps"] = run_steps(train_dialogues, own_constants, epochs)
    if modalities is not None:
        bounds["fusion"] = len(modalities) > 1
    if name in ("joint", "joint-auto") or (gpu_memory_gb is not None and name in BUDGETS):
        profile, ceiling = BUDGETS["paper" if name.startswith("joint") else name]
        changes = {"encoder": encoder} if encoder else {}
        if frozen:
            changes["freeze_encoder"] = True
        if modalities is not None:
            changes["modalities"] = len(modalities)
        profile = dataclasses.replace(profile, **changes)
        budget = 11.0 if gpu_memory_gb is None else gpu_memory_gb
        memory = memory_bounds(budget, profile, ceiling, name, fusion=bounds.get("fusion", True))
        if name in BUDGETS:
            # K for the space's widest trial (its most layers) under the memory settings
            # ``memory`` picks; each trial then gets the cheapest settings that fit it.
            mode = "auto" if name == "paper" else profile.precision
            intra, inter = WIDEST[name]
            fused = bounds.get("fusion", True)
            bounds["k_max"] = memory.k_max(mode, profile.batch_size, intra, inter if fused else 0)
            if name == "paper":
                bounds["memory"] = memory
        else:
            bounds["memory"] = memory
        if name in BUDGETS and bounds["k_max"] < 1 or name not in BUDGETS and not memory.modes:
            raise ValueError(
                f"--gpu-memory-gb {gpu_memory_gb} is too small for space {name!r}: its trials "
                "need more than that even at K = 1 (see search_spaces/budget.py)"
            )
    return functools.partial(space, **bounds)


def run_steps(train_dialogues: int, constants: dict, epochs: int | None = None) -> int:
    """Optimizer steps of a full trial: batches per epoch x epochs. A space that samples its
    batch size counts with the largest it may draw (the fewest steps)."""
    batch = int(constants.get("batch_size", 8))
    return -(-train_dialogues // batch) * int(epochs or constants.get("epochs", 10))  # TrainConfig


# Most layers (intra, inter) a space samples: the trial its K bound must fit.
WIDEST = {"paper": (6, 4), "quick": (2, 2)}


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


def sample(space: Space, draws: int, seed: int = 0) -> list[tuple[dict, dict, dict]]:
    """``draws`` random configs of a define-by-run space (seeded), each as its params, the
    distributions it drew them from and the constants it returned: what a plan shows of a
    space's ranges and what a disk estimate sizes."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        out = []
        for _ in range(draws):
            trial = study.ask()
            constants = space(trial) or {}
            out.append((dict(trial.params), dict(trial.distributions), dict(constants)))
            study.tell(trial, 0.0)
    finally:
        optuna.logging.set_verbosity(verbosity)
    return out


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
