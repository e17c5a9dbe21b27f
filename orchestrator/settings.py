"""Everything one search needs besides the trainable: one dataclass, one set of defaults.

``orch search`` has one option per field before ``mode`` (generated from this class, so the
two cannot drift apart), and Python callers get the same defaults. Validation happens
here, once, and its messages name the option a user typed (``--trials``, not ``num_samples``).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

from orchestrator.strategies import SAMPLERS, SCHEDULERS
from orchestrator.tracking.runs import DEFAULT_EXPERIMENT, metric_mode
from orchestrator.tracking.store import default_root

DEFAULT_GPU_MEMORY_GB = 11.0  # the paper's card
DEFAULT_EPOCHS = 10  # TrainConfig's default, when the space does not fix epochs
DEFAULT_TRIALS = 40
ASHA_TELLS = ("pruned", "complete")


class SettingsError(ValueError):
    """A setting out of range; the message starts with the option's name."""


def resolve_storage(storage: str | None) -> str:
    """An absolute path or a URI (Ray's pyarrow filesystem rejects relative paths).

    Default: ``ray/`` inside the project's MLflow folder (``./mlruns``), so one project
    folder holds everything its searches write, and two folders never share search names."""
    if storage and "://" in storage:
        return storage
    return str(Path(storage).expanduser().resolve() if storage else default_root() / "ray")


def experiment_path(storage: str, name: str) -> str:
    """Where Tune keeps search ``name``: ``<storage>/<name>`` (a path or a URI)."""
    return f"{storage.rstrip('/')}/{name}"


@dataclass
class SearchSettings:
    dataset: str | None = None
    """A dataset of ``trainable.datasets.DATASETS``: the data, and the preset of space and
    metric."""
    space: str | Callable | None = None
    """Search space: paper, quick, module:function or a .toml/.json ranges file [default: the
    dataset's preset]."""
    metric: str | None = None
    """Metric to optimise [default: the dataset's, e.g. dev_weighted_f1]. Losses and errors
    are minimised, everything else maximised."""
    encoder: str | None = None
    """Utterance encoder: a Hugging Face id, a local folder, minilm or tiny [default: the
    space's]. The learning-rate range and the memory budget follow it."""
    freeze_encoder: bool = False
    """Screening fidelity: a frozen encoder, only the layers above it train. Its vectors are
    computed once and cached; MLflow and orch best label such scores frozen."""
    trials: int | None = None
    """Number of trials (configs) to run [default: 40]; give --trials or --budget, not both."""
    budget: int | None = None
    """Compute budget in trial-epochs: sample configs until that many epochs (summed over
    trials) are reported, then stop; give --trials or --budget, not both."""
    sampler: str = "bohb"
    """Optuna sampler: bohb, random, tpe or gp. bohb (the default) is TPE on the scores of the
    highest ASHA rung that has enough of them, a third drawn at random
    (orchestrator/rung_sampler.py): it had the best mean rank over the search suite, 8 LCBench
    tasks and the replayed MELD table, 10 seeds each (README, Search efficiency)."""
    startup_trials: int = 10
    """tpe, gp: configs sampled at random before the model proposes any (Optuna's
    n_startup_trials)."""
    seed: int | None = None
    """Seed of the sampler [default: a new one per search, printed and recorded]: give the
    seed of an earlier search to draw its configs again."""
    scheduler: str = "asha"
    """asha (stop weak trials early) or none."""
    epochs: int | None = None
    """Epochs per trial, ASHA's last rung [default: the space's]."""
    grace_period: int = 1
    """ASHA: epochs every trial gets before it can be stopped."""
    reduction_factor: float = 3.0
    """ASHA: 1 in this many trials goes on at each rung."""
    brackets: int = 1
    """ASHA: Hyperband-style brackets. Bracket s first judges trials after grace period x
    reduction factor^s epochs; each new trial joins one at random, weighted as Ray's ASHA does
    (the bracket with most rungs most often)."""
    tie_metric: str = "dev_loss"
    """ASHA: what ranks trials tied on --metric at a rung (none: Ray's rule). Minimised if a
    loss or error, else maximised."""
    asha_tells: str = "complete"
    """tpe, gp: what Optuna hears of a trial ASHA stopped: complete or pruned. complete: its
    last score as final (Ray's rule; on the replayed MELD benchmark TPE did as well or better
    with it); pruned: its intermediate values."""
    warm_start: str | None = None
    """Tell the sampler search NAME's finished trials first. Same MLflow store; configs that
    no longer fit the space are skipped and counted."""
    enqueue: str | None = None
    """Run first: paper (the paper's recipe) or NAME (that search's best config). Only the
    dimensions the space has, in its ranges."""
    max_concurrent: int | None = None
    """Trials running at once at most [default: as many as resources allow]."""
    cpus_per_trial: float = 1.0
    """CPUs per trial."""
    gpu_memory_gb: float = DEFAULT_GPU_MEMORY_GB
    """GPU memory budget per trial in GB: bounds K, and shares larger cards."""
    max_failures: int = 2
    """Retries of a failed trial from its last checkpoint."""
    keep_checkpoints: int = 1
    """Checkpoints kept per trial once it ends: its best by the metric, weights only."""
    max_checkpoint_gb: float | None = None
    """Disk budget for the search's checkpoints in GB [default: 90 % of the free space]. Beyond
    it the worst ended trials' checkpoints are deleted, never the best 3 trials' best; the
    default is taken when the search starts, and a URI storage has none."""
    name: str | None = None
    """Name of the search [default: dataset-date-time]."""
    storage: str | None = None
    """Where trial checkpoints live: a path or URI shared by all nodes [default: mlruns/ray]."""
    tracking_uri: str | None = None
    """MLflow tracking URI [default: sqlite store under ./mlruns]."""
    address: str | None = None
    """Join a Ray cluster: auto or host:port [default: start a local Ray]."""
    data_dir: str | None = None
    """Folder with the dataset's files [default: looked up, see README]."""
    max_dialogues: int | None = None
    """Dialogues per split (a subset, for smoke searches)."""
    # ---- from here on, not command-line options ----
    mode: str | None = None
    """max or min; decided by ``metric_mode(metric)`` unless given."""
    modalities: tuple[str, ...] | None = None
    """Modalities the data has (u, a, v): a space samples fusion only for two or more."""
    train_dialogues: int | None = None
    """Training dialogues the trials see: bounds a space's warmup by the run's length."""
    gpus_per_trial: float = 0.0
    """GPU (fraction) per trial: ``resources.gpu_share`` of the budget on the cluster's card."""
    experiment: str = DEFAULT_EXPERIMENT
    constants: dict = field(default_factory=dict)
    """Added to every trial's config (cache_dir, label, ...)."""
    points_to_evaluate: list[dict] | None = None
    """Configs (sampled keys only) to try first, e.g. the paper's recipe."""
    command_line: str | None = None
    reuse_actors: bool = True
    """Reuse trial processes: a fresh one costs ~2 s of start-up per trial on 2 CPUs
    (bench/search_overhead.py: 2.15 s -> 0.36 s of overhead per trial); trials keep no state."""
    live: bool = True
    """Draw the live table on stderr."""
    resume: bool = False
    """Continue search ``name`` saved under ``storage``: space, sampler, scheduler and trial
    count are the saved ones."""
    resume_failed: bool = False
    """With ``resume``: failed trials continue from their last checkpoint too (set when one
    failed because its checkpoint found the disk full)."""

    def __post_init__(self) -> None:
        from search_spaces import search_preset

        preset = None
        if self.dataset is not None:
            try:
                preset = search_preset(self.dataset)
            except ValueError as error:
                raise SettingsError(str(error)) from None
        self.space = self.space or (preset.space if preset else "quick")
        self.metric = self.metric or (preset.metric if preset else "dev_weighted_f1")
        self.mode = self.mode or metric_mode(self.metric)
        for name, known in (("sampler", SAMPLERS), ("scheduler", SCHEDULERS)):
            if getattr(self, name) not in known:
                raise SettingsError(
                    f"{option(name)} {getattr(self, name)!r} is unknown; expected one of "
                    f"{', '.join(known)}"
                )
        if self.asha_tells not in ASHA_TELLS:
            raise SettingsError(
                f"--asha-tells {self.asha_tells!r} is unknown; expected one of "
                f"{', '.join(ASHA_TELLS)}"
            )
        if self.trials is not None and self.budget is not None:
            raise SettingsError(
                f"--trials {self.trials} and --budget {self.budget} both say when the search "
                "ends; give one"
            )
        if self.trials is None and self.budget is None:
            self.trials = DEFAULT_TRIALS
        if self.seed is None:  # a new search draws new configs; the seed is recorded
            self.seed = secrets.randbelow(1_000_000)
        if not self.tie_metric:
            raise SettingsError("--tie-metric must name a metric, or none")
        if self.mode not in ("max", "min"):
            raise SettingsError(f"mode must be max or min, got {self.mode!r}")
        at_least = {
            "trials": 1, "budget": 1, "startup_trials": 1, "epochs": 1, "grace_period": 1,
            "brackets": 1, "max_concurrent": 1, "keep_checkpoints": 1, "max_failures": 0, "max_dialogues": 1,
        }  # fmt: skip
        for name, low in at_least.items():
            value = getattr(self, name)
            if value is not None and value < low:
                raise SettingsError(f"{option(name)} must be >= {low}, got {value}")
        for name in ("gpu_memory_gb", "cpus_per_trial", "max_checkpoint_gb"):
            value = getattr(self, name)
            if value is not None and not value > 0:  # NaN too
                raise SettingsError(f"{option(name)} must be > 0, got {value}")
        if not self.reduction_factor > 1:
            raise SettingsError(f"--reduction-factor must be > 1, got {self.reduction_factor}")
        self.storage = resolve_storage(self.storage)
        if self.data_dir is not None:
            self.data_dir = str(Path(self.data_dir).expanduser().resolve())
        if not self.name:
            self.name = f"{self.dataset or 'search'}-{time.strftime('%Y%m%d-%H%M%S')}"

    @property
    def num_samples(self) -> int:
        """Tune's ``num_samples``: --trials, or unbounded (-1) when --budget ends the search."""
        return -1 if self.budget is not None else self.trials

    @property
    def tie_break(self) -> str | None:
        """The metric that breaks ties at ASHA's rungs, or None."""
        return None if self.tie_metric.lower() == "none" else self.tie_metric

    @property
    def experiment_path(self) -> str:
        return experiment_path(self.storage, self.name)

    def build_space(self) -> WithConstants:
        """The space, K bounded by the GPU budget, run constants appended; SettingsError
        (naming --space) when it cannot be built or drawn, or when a space given by name
        draws fields no config has."""
        from search_spaces import bounded, describe
        from trainable.features import default_cache_dir

        try:
            space = self.space
            if not callable(space):
                space = bounded(
                    space,
                    self.gpu_memory_gb,
                    encoder=self.encoder,
                    frozen=self.freeze_encoder,
                    modalities=self.modalities,
                    train_dialogues=self.train_dialogues,
                    epochs=self.epochs,
                )
            names, constants = describe(space)
        except ValueError as error:
            raise SettingsError(str(error)) from None
        except Exception as error:  # noqa: BLE001 - a module:function space is user code
            raise SettingsError(
                f"--space {self.space}: drawing a config failed: {error!r}"
            ) from None
        if not callable(self.space):  # a Python caller's space may feed its own trainable
            _check_keys(self.space, names, constants)
        run = {
            "dataset": self.dataset,
            "data_dir": self.data_dir,
            "max_dialogues": self.max_dialogues,
            "epochs": self.epochs,
            "encoder": self.encoder,
            "freeze_encoder": True if self.freeze_encoder else None,
            # Trials run in their own working folder: the driver's absolute cache path.
            "cache_dir": str(default_cache_dir().resolve()),
            **self.constants,
        }
        if self.gpus_per_trial > 0:  # the trial caps its own GPU memory to the budget
            run["gpu_memory_gb"] = self.gpu_memory_gb
        return WithConstants(space, {k: v for k, v in run.items() if v is not None})

    def max_t(self, space_constants: dict) -> int:
        """Epochs per trial: --epochs, else the space's ``epochs`` constant, else 10."""
        return self.epochs or int(space_constants.get("epochs", DEFAULT_EPOCHS))


def option(name: str) -> str:
    return "--" + name.replace("_", "-")


def option_fields() -> list:
    """The fields that are ``orch search`` options, in order."""
    names = [f.name for f in fields(SearchSettings)]
    return [f for f in fields(SearchSettings) if names.index(f.name) < names.index("mode")]


def _check_keys(space, names: list[str], constants: dict) -> None:
    from trainable.tune_trainable import MODEL_KEYS, RUN_KEYS, TRAIN_KEYS

    unknown = sorted((set(names) | set(constants)) - MODEL_KEYS - TRAIN_KEYS - RUN_KEYS)
    if unknown:
        raise SettingsError(
            f"--space {space}: unknown parameter(s) {', '.join(unknown)}; expected fields of "
            "DialogueTRMConfig or TrainConfig (see orch train --help)"
        )


class WithConstants:
    """A space whose returned constants are extended with run settings (dataset, paths).

    A class, not a closure: Ray pickles the searcher, space included, with plain pickle."""

    def __init__(self, space: Callable, constants: dict):
        from search_spaces.spaces import space_name

        self.space, self.constants = space, dict(constants)
        self.__name__ = space_name(space)

    def __call__(self, trial) -> dict:
        return {**(self.space(trial) or {}), **self.constants}
