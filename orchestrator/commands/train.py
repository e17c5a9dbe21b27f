"""`orch train`: one DialogueTRM training run, no Ray, tracked as one MLflow run."""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from orchestrator.driver import set_verbose
from orchestrator.errors import RUNTIME, USAGE, fail
from orchestrator.options import (
    DERIVED,
    MODEL_FIELDS,
    TRAIN_FIELDS,
    dataclass_parameters,
    option_name,
)
from orchestrator.tracking.journal import journal_dir, journal_path, settle_s
from orchestrator.tracking.runs import FIDELITY_TAG, fidelity
from orchestrator.tracking.writer import MlflowWriter
from trainable.config import DialogueTRMConfig, TrainConfig
from trainable.datasets.registry import dataset_help
from trainable.presets import TRAIN_PRESETS, default_preset

SHOWN = ("weighted_f1", "weighted_acc", "macro_f1", "mean_pearson", "mse", "loss")
MEMORY_MODES = ("manual", "auto")
CHOSEN = ("precision", "gradient_checkpointing", "chunk_size")  # what --memory auto sets


def build_configs(preset: str | None, given: dict) -> tuple[DialogueTRMConfig, TrainConfig]:
    """Preset values, then every option the user set; a bad value names its option."""
    name = preset or default_preset(given.get("encoder"))
    if name not in TRAIN_PRESETS:
        raise fail(
            f"--preset {name!r} is unknown; expected one of {', '.join(TRAIN_PRESETS)}", USAGE
        )
    values = {**TRAIN_PRESETS[name], **{k: v for k, v in given.items() if v is not None}}
    try:
        model = DialogueTRMConfig(**{k: v for k, v in values.items() if k in MODEL_FIELDS})
        train = TrainConfig(**{k: v for k, v in values.items() if k in TRAIN_FIELDS})
    except ValueError as error:
        field = str(error).split()[0]
        option = option_name(field) if field in MODEL_FIELDS + TRAIN_FIELDS else "option"
        raise fail(f"{option}: {error}", USAGE) from None
    return model, train


def choose_memory(
    model: DialogueTRMConfig, train: TrainConfig, dataset: str, budget_gb: float, given: dict
) -> tuple[DialogueTRMConfig, dict]:
    """``--memory auto``: the model config with the cheapest precision, checkpointing and
    chunk size whose estimated peak fits ``budget_gb`` (search_spaces.memory_plan, as a
    search's ``memory=auto`` trials), and the params that record the choice."""
    from search_spaces.budget import estimate_gb
    from search_spaces.memory_plan import config_profile, plan_memory
    from trainable.datasets import DATASETS

    typed = [option_name(name) for name in CHOSEN if given.get(name) is not None]
    if typed:
        raise fail(f"--memory auto chooses {', '.join(typed)} itself; drop it or use manual", USAGE)
    if not budget_gb > 0:
        raise fail(f"--gpu-memory-gb must be > 0, got {budget_gb}", USAGE)
    profile = config_profile(model, train.batch_size, len(DATASETS[dataset].modalities))
    plan = plan_memory(model.k, budget_gb, profile)
    if plan is None:
        saving = dataclasses.replace(profile, precision="bf16", gradient_checkpointing=True)
        least = estimate_gb(model.k, dataclasses.replace(saving, chunk_size=1))
        raise fail(
            f"--gpu-memory-gb {budget_gb:g} is too small for this model at K = {model.k}: even "
            f"bf16, checkpointing and chunks of one turn need ~{least:.1f} GB",
            USAGE,
        )
    estimate = estimate_gb(model.k, dataclasses.replace(profile, **plan.settings()))
    params = {"gpu_memory_gb": budget_gb, "memory_estimate_gb": round(estimate, 2)}
    return dataclasses.replace(model, **plan.settings()), params


def run_params(dataset, data_dir, max_dialogues, model: DialogueTRMConfig, train: TrainConfig):
    return {
        "dataset": dataset,
        "data_dir": str(data_dir) if data_dir else None,
        "max_dialogues": max_dialogues,
        **model.to_dict(),
        **asdict(train),
    }


def train(
    dataset: str = typer.Option(..., help=f"{dataset_help()}."),
    data_dir: Path | None = typer.Option(None, help="Folder with the dataset's files."),
    max_dialogues: int | None = typer.Option(
        None, help="Use only the first N dialogues of each split (smoke runs)."
    ),
    label: str = typer.Option("emotion", help="emotion, or sentiment (MELD only)."),
    preset: str | None = typer.Option(
        None, help="Starting values: paper, or tiny (default when --encoder tiny)."
    ),
    tracking_uri: str | None = typer.Option(
        None, help="MLflow tracking URI [default: sqlite store under ./mlruns]."
    ),
    experiment: str = typer.Option("orch-train", help="MLflow experiment of the run."),
    output: Path | None = typer.Option(
        None, help="Also keep the best and last checkpoints in this folder."
    ),
    json_out: bool = typer.Option(
        False, "--json", help="Print final dev/test metrics as one JSON line on stdout."
    ),
    memory: str = typer.Option(
        "manual",
        help="manual: --precision, --gradient-checkpointing and --chunk-size as given; auto: "
        "the cheapest of them whose estimated peak memory fits --gpu-memory-gb.",
    ),
    gpu_memory_gb: float = typer.Option(
        11.0, help="GPU memory budget of --memory auto, in GB (the paper's card)."
    ),
    verbose: bool = typer.Option(False, "--verbose", help="Show MLflow's own logs."),
    **options,
) -> None:
    """Train one DialogueTRM on a dataset and record it in MLflow."""
    set_verbose(verbose)
    from trainable.datasets import DATASETS, DataError
    from trainable.encoder import EncoderNotFoundError
    from trainable.run import prepare

    if dataset not in DATASETS:
        raise fail(
            f"--dataset {dataset!r} is unknown; expected one of {', '.join(DATASETS)}", USAGE
        )
    if max_dialogues is not None and max_dialogues < 1:
        raise fail(f"--max-dialogues must be >= 1, got {max_dialogues}", USAGE)
    if memory not in MEMORY_MODES:
        raise fail(f"--memory must be one of {', '.join(MEMORY_MODES)}, got {memory!r}", USAGE)
    model_cfg, train_cfg = build_configs(preset, options)
    memory_params = {"memory": memory}
    if memory == "auto":
        model_cfg, chosen = choose_memory(model_cfg, train_cfg, dataset, gpu_memory_gb, options)
        memory_params |= chosen
    out = Console(stderr=json_out)
    err = Console(stderr=True)
    if memory == "auto":
        chunks = f"chunks of {model_cfg.chunk_size} turns" if model_cfg.chunk_size else "no chunks"
        err.print(
            f"memory auto: {model_cfg.precision}, checkpointing "
            f"{'on' if model_cfg.gradient_checkpointing else 'off'}, {chunks} "
            f"(estimate {memory_params['memory_estimate_gb']} GB of {gpu_memory_gb:g} GB)"
        )
    try:
        wait_s = settle_s()  # a bad ORCH_MLFLOW_SETTLE_S fails now, not after the run
        trainer = prepare(
            dataset,
            model_cfg,
            train_cfg,
            data_dir=data_dir,
            max_dialogues=max_dialogues,
            label=label,
        )
    except (DataError, EncoderNotFoundError) as error:
        raise fail(str(error), RUNTIME) from None
    except ValueError as error:
        raise fail(str(error), USAGE) from None

    # A tracking server that goes away mid-run costs nothing: writes are kept in order in
    # mlruns/journal/<name>.jsonl and replayed when it answers (or by `orch sync <name>`).
    name = f"train-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    writer = MlflowWriter(tracking_uri, journal=journal_path(name))
    params = run_params(dataset, data_dir, max_dialogues, trainer.model.config, train_cfg)
    params.update(label=label, num_parameters=trainer.model.num_parameters(), **memory_params)
    run_id = writer.start_run(
        writer.experiment(experiment),
        tags={
            "orch.command": shlex.join(["orch", *sys.argv[1:]]),
            FIDELITY_TAG: fidelity(params),
        },
        params=params,
    )

    # Checkpoints go to --output, else to a scratch folder removed at the end. With a server,
    # that folder sits beside the journal: a kept upload names its files, which must outlast
    # the run until they are replayed.
    if output:
        work = Path(output)
    elif writer.journal_on:  # `orch sync` removes it once the writes are replayed
        work = journal_dir() / f"{name}.files"
        work.mkdir(parents=True)
    else:
        work = Path(tempfile.mkdtemp(prefix="orch-train-"))
    status = "FAILED"
    try:
        best = _fit(trainer, writer, run_id, work, err)
        writer.log_artifacts(run_id, work / "best", "best_checkpoint")
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise fail("interrupted; the MLflow run is marked KILLED", 130) from None
    finally:
        writer.end_run(run_id, status)
        # Kept writes: wait a little for the server (not when interrupted), else say where
        # they are and what to run.
        waiting = writer.settle(wait_s if status == "FINISHED" else 0.0)
        if waiting:
            print(f"warning: {waiting}", file=sys.stderr)  # one line, never wrapped
        if not output:  # scratch: all of it, or what no kept write needs
            shutil.rmtree(work / "last" if waiting else work, ignore_errors=True)
    run_id = writer.resolve(run_id)  # a run created offline has its real id once replayed
    _summary(out, trainer, best, run_id)
    if json_out:
        where = (
            str(work / "best")
            if waiting
            else f"{writer.client.get_run(run_id).info.artifact_uri}/best_checkpoint"
        )
        result = {
            "dataset": dataset,
            "run_id": run_id,
            "best_epoch": best["epoch"],
            "dev": {k[4:]: v for k, v in best.items() if k.startswith("dev_")},
            "test": {k[5:]: v for k, v in best.items() if k.startswith("test_")},
            "checkpoint": where,
            **({"tracking": "kept in " + str(journal_path(name))} if waiting else {}),
        }
        print(json.dumps(result))


def _fit(trainer, writer: MlflowWriter, run_id: str, work: Path, console: Console) -> dict:
    steps = -(-len(trainer.data.train) // trainer.cfg.batch_size)
    columns = (
        TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        bar = progress.add_task("train", total=steps, epoch=1, epochs=trainer.cfg.epochs, loss=0.0)

        def on_step(step, total, loss):
            progress.update(bar, completed=step, loss=loss)

        def on_epoch(row, t):
            writer.log_metrics(run_id, row, step=row["epoch"])
            t.save(work / "last")
            if row["is_best"]:
                t.save(work / "best", resumable=False)
            console.print(
                f"epoch {row['epoch']}: train loss {row['train_loss']:.4f}, "
                f"dev {t.metric} {row['dev_' + t.metric]:.2f}"
            )
            progress.update(bar, completed=0, epoch=min(row["epoch"] + 1, t.cfg.epochs))

        return trainer.fit(on_epoch=on_epoch, on_step=on_step)


def _summary(console: Console, trainer, best: dict, run_id: str) -> None:
    table = Table(
        title=f"best epoch {best['epoch']} of {trainer.cfg.epochs}", caption=f"MLflow run {run_id}"
    )
    table.add_column("metric")
    table.add_column("dev", justify="right")
    table.add_column("test", justify="right")
    for name in SHOWN:
        if f"dev_{name}" in best:
            test = best.get(f"test_{name}")
            table.add_row(name, f"{best[f'dev_{name}']:.4g}", "" if test is None else f"{test:.4g}")
    console.print(table)


def _in_panel(option, panel: str):
    option.rich_help_panel = panel
    return option


# One option per config field, generated so the CLI and the dataclasses cannot drift apart.
_base = [
    p
    for p in inspect.signature(train).parameters.values()
    if p.kind != inspect.Parameter.VAR_KEYWORD
]
train.__signature__ = inspect.Signature(
    [p.replace(default=_in_panel(p.default, "Run")) for p in _base]
    + dataclass_parameters(DialogueTRMConfig, skip=DERIVED, panel="Model (DialogueTRMConfig)")
    + dataclass_parameters(TrainConfig, panel="Training (TrainConfig)")
)
