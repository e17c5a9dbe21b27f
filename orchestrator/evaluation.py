"""`orch evaluate`: the paper's protocol on a search's winner, one training per seed.

The best trial's config is trained again from scratch with seeds 0..N-1 (Ray trials, in
parallel where resources allow), each tested at its best-dev epoch, and the test scores are
reported per seed and as mean and standard deviation. Each seed is one MLflow run under the
search's parent (``orch.kind = evaluation``, ``orch.seed``, ``orch.fidelity``); the mean and
std land on the parent as ``eval_<fidelity>_<metric>_mean`` / ``_std``. A seed whose run
finished is never trained again, so an interrupted evaluation continues where it stopped.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field

from ray.tune import Callback

from orchestrator.tracking.callback import RAY_KEYS, error_text
from orchestrator.tracking.runs import (
    FIDELITY_TAG,
    KIND_TAG,
    PARENT_TAG,
    SEARCH_TAG,
    STATE_TAG,
    failure_reason,
)
from orchestrator.tracking.writer import MlflowWriter

SEED_TAG = "orch.seed"
KIND = "evaluation"


@dataclass
class SeedResult:
    seed: int
    run_id: str
    best_epoch: int
    dev: dict
    test: dict


@dataclass
class Evaluation:
    search: str
    fidelity: str
    metric: str
    seeds: list[SeedResult]
    mean: dict = field(default_factory=dict)
    std: dict = field(default_factory=dict)
    """Sample standard deviation over seeds (n - 1); 0 for a single seed."""

    def to_dict(self) -> dict:
        return asdict(self)


FINETUNE_ENCODER_LR = 3e-5
"""The encoder's rate when a frozen screen's winner is fine-tuned: inside the range BERT's
authors recommend for fine-tuning (2e-5 to 5e-5), and the hand-set MiniLM reference's."""


def trial_config(params: dict, finetune: bool, encoder_lr: float | None = None) -> dict:
    """A trial's config back from its MLflow params (strings), typed by the config fields;
    ``finetune`` turns a frozen screen's winner into the paper's fine-tuning protocol. The
    screen searched ``lr`` for the layers above a frozen encoder, a rate far too high for a
    pretrained encoder, so the encoder gets ``encoder_lr`` (default FINETUNE_ENCODER_LR) and
    the layers above keep the searched ``lr``."""
    from orchestrator.options import parse_value
    from trainable.config import DialogueTRMConfig, TrainConfig
    from trainable.tune_trainable import MODEL_KEYS, RUN_KEYS, TRAIN_KEYS

    run_types = {"max_dialogues": int, "gpu_memory_gb": float}
    config = {}
    for key, text in params.items():
        if key in MODEL_KEYS:
            config[key] = parse_value(DialogueTRMConfig, key, text)
        elif key in TRAIN_KEYS:
            config[key] = parse_value(TrainConfig, key, text)
        elif key in RUN_KEYS and text != "None":
            config[key] = run_types.get(key, str)(text)
    if finetune and config.get("freeze_encoder"):
        config["freeze_encoder"] = False
        config["encoder_lr"] = encoder_lr or config.get("encoder_lr") or FINETUNE_ENCODER_LR
    elif encoder_lr is not None:
        config["encoder_lr"] = encoder_lr
    return config


def evaluation_runs(client, experiment_id: str, parent_run_id: str, fidelity: str) -> dict:
    """Seed -> the latest evaluation run of that seed and fidelity under the parent."""
    runs = client.search_runs(
        [experiment_id],
        f"tags.`{PARENT_TAG}` = '{parent_run_id}' and tags.`{KIND_TAG}` = '{KIND}' "
        f"and tags.`{FIDELITY_TAG}` = '{fidelity}'",
        order_by=["attributes.start_time ASC"],
        max_results=1000,
    )
    return {int(r.data.tags[SEED_TAG]): r for r in runs}


def seed_result(client, run) -> SeedResult:
    """What a finished seed's run says at its best-dev epoch (the last epoch's ``best_*``)."""
    last = {k: v for k, v in run.data.metrics.items()}
    dev = {k[len("best_dev_") :]: v for k, v in last.items() if k.startswith("best_dev_")}
    test = {k[len("best_test_") :]: v for k, v in last.items() if k.startswith("best_test_")}
    return SeedResult(
        seed=int(run.data.tags[SEED_TAG]),
        run_id=run.info.run_id,
        best_epoch=int(last.get("best_epoch", 0)),
        dev=dev,
        test=test,
    )


def summarise(search: str, fidelity: str, metric: str, seeds: list[SeedResult]) -> Evaluation:
    keys = sorted(set.intersection(*(set(s.test) for s in seeds))) if seeds else []
    mean, std = {}, {}
    for key in keys:
        values = [s.test[key] for s in seeds]
        mean[key] = statistics.fmean(values)
        std[key] = statistics.stdev(values) if len(values) > 1 else 0.0
    return Evaluation(search, fidelity, metric, sorted(seeds, key=lambda s: s.seed), mean, std)


class EvaluationRecorder(Callback):
    """One MLflow run per seed under the search's parent, written from the driver."""

    def __init__(self, tracking_uri: str, experiment_id: str, parent: str, search: str, fid: str):
        self.writer = MlflowWriter(tracking_uri)
        self.experiment_id, self.parent, self.search, self.fidelity = (
            experiment_id,
            parent,
            search,
            fid,
        )
        self.runs: dict[str, str] = {}  # trial id -> run id
        self.open: set[str] = set()

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        if trial.trial_id in self.runs:
            return  # a retry after a worker died: the same run goes on
        tags = {
            PARENT_TAG: self.parent,
            KIND_TAG: KIND,
            SEARCH_TAG: self.search,
            SEED_TAG: trial.config["seed"],
            FIDELITY_TAG: self.fidelity,
        }
        name = f"{self.search}-seed{trial.config['seed']}-{self.fidelity}"
        self.runs[trial.trial_id] = self.writer.start_run(
            self.experiment_id, name, tags, trial.config
        )
        self.open.add(trial.trial_id)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        metrics = {k: v for k, v in result.items() if k not in RAY_KEYS}
        step = int(result.get("training_iteration", 0))
        self.writer.log_metrics(self.runs[trial.trial_id], metrics, step)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.writer.end_run(self.runs[trial.trial_id], "FINISHED", {STATE_TAG: "completed"})
        self.open.discard(trial.trial_id)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        reason = failure_reason(error_text(trial))
        self.writer.end_run(
            self.runs[trial.trial_id], "FAILED", {STATE_TAG: "failed", "orch.failure": reason}
        )
        self.open.discard(trial.trial_id)

    def close(self) -> None:
        """Runs of seeds that did not end (Ctrl-C): KILLED, trained again next time."""
        for trial_id in list(self.open):
            self.writer.end_run(self.runs[trial_id], "KILLED", {STATE_TAG: "interrupted"})
            self.open.discard(trial_id)


def run_seeds(trainable, config: dict, seeds: list[int], recorder, settings) -> bool:
    """Train ``config`` once per seed as Ray trials (``settings``: resources, storage);
    returns False when it was interrupted (Ctrl-C, SIGTERM) with seeds left."""
    from ray import tune

    from orchestrator.driver import quiet_driver, sigterm_as_interrupt
    from orchestrator.resources import connect_ray
    from orchestrator.tuner import missing_loggers

    connect_ray(settings.address)
    resources = {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial}
    tuner = tune.Tuner(
        tune.with_resources(trainable, resources),
        param_space={**config, "seed": tune.grid_search(seeds)},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=settings.max_concurrent, reuse_actors=True
        ),
        run_config=tune.RunConfig(
            name=f"{settings.name}-evaluate-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=settings.storage,
            verbose=0,
            callbacks=[recorder, *missing_loggers([recorder])],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            failure_config=tune.FailureConfig(max_failures=settings.max_failures),
        ),
    )
    try:
        with quiet_driver(live=True), sigterm_as_interrupt():
            tuner.fit()
    except KeyboardInterrupt:
        recorder.close()
        return False
    finished = not recorder.open
    recorder.close()
    return finished


def log_summary(writer: MlflowWriter, parent_run_id: str, evaluation: Evaluation) -> None:
    """Mean and std of every test metric on the search's parent run."""
    values = {f"eval_{evaluation.fidelity}_{k}_mean": v for k, v in evaluation.mean.items()}
    values |= {f"eval_{evaluation.fidelity}_{k}_std": v for k, v in evaluation.std.items()}
    values[f"eval_{evaluation.fidelity}_seeds"] = len(evaluation.seeds)
    writer.log_metrics(parent_run_id, values, step=0)
