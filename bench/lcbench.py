"""LCBench as an orch search: YAHPO Gym's LCBench surrogate replayed through ``run_search``.

The surrogate (``../shared/bench/lcbench``, see its ABOUT.md) predicts the learning curve of
any MLP config of the LCBench space on 34 OpenML tasks: a public benchmark to compare search
strategies on, outside orch's own MELD table. As with ``orchestrator.replay``, a trial costs
one ``training_iteration`` per epoch and no training: ``lcbench_trial`` reports the curve the
surrogate predicts for its config, one epoch per report, through ``tune.report``.

Epoch 1 of the surrogate is the untrained network (YAHPO's FAQ), so a trial's epoch e is the
surrogate's epoch e + 1, and a trial has at most 51 epochs. Each report carries
``val_accuracy`` (percent; the metric to search), ``val_cross_entropy`` (the tie-break),
``val_balanced_accuracy`` and ``test_balanced_accuracy`` (fractions, as the surrogate gives
them). ``LCBenchSpace(task)`` is the define-by-run space of ``config_space.json`` (7 dims,
sampled only; the task and the surrogate's folder go to trials as constants). The ONNX model
is loaded once per process (a Ray worker keeps it for every trial it runs).

``onnxruntime`` is a bench/dev dependency (``pip install -e '.[dev]'``), never orch's.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DIR = REPO.parent / "shared" / "bench" / "lcbench"
ENV = "ORCH_LCBENCH_DIR"
FILES = ("model.onnx", "encoding.json", "config_space.json")
EPOCHS = 51  # the surrogate's 52 epochs less the untrained one
DEV_TASKS = ("3945", "34539", "126025", "146212", "167190", "168868", "189906", "189909")
"""ABOUT.md's development tasks; the other tasks are kept back."""
INPUTS = ("batch_size", "learning_rate", "momentum", "weight_decay", "num_layers", "max_units")
INPUTS += ("max_dropout",)  # x_cont's order after the epoch
OUTPUTS = ("time", "val_accuracy", "val_cross_entropy", "val_balanced_accuracy")
OUTPUTS += ("test_cross_entropy", "test_balanced_accuracy")
REPORTED = ("val_accuracy", "val_cross_entropy", "val_balanced_accuracy", "test_balanced_accuracy")
METRIC, TIE_METRIC, TEST_METRIC = "val_accuracy", "val_cross_entropy", "test_balanced_accuracy"


class LCBenchError(RuntimeError):
    """The surrogate cannot be used; the message says what to put where."""


def lcbench_dir(folder: str | Path | None = None) -> Path:
    """The surrogate's folder: ``folder``, else $ORCH_LCBENCH_DIR, else ../shared/bench/lcbench
    beside the repository; LCBenchError naming the missing files otherwise."""
    path = Path(folder or os.environ.get(ENV) or DEFAULT_DIR).expanduser().resolve()
    missing = [name for name in FILES if not (path / name).is_file()]
    if missing:
        raise LCBenchError(
            f"LCBench surrogate not found: {path} lacks {', '.join(missing)}; put YAHPO Gym's "
            f"lcbench files there (model.onnx, encoding.json, config_space.json) or set {ENV}"
        )
    return path


class Surrogate:
    """The ONNX model, the task encoding and the space of one surrogate folder."""

    def __init__(self, folder: Path):
        try:
            import onnxruntime as ort
        except ImportError:
            raise LCBenchError(
                "onnxruntime is needed for LCBench (a dev dependency): pip install -e '.[dev]'"
            ) from None
        options = ort.SessionOptions()
        # A trial holds one CPU; the model is small (~2 MB), so threads would only contend.
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        self.folder = folder
        self.session = ort.InferenceSession(
            str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self.tasks: dict[str, int] = json.loads((folder / "encoding.json").read_text())[
            "OpenML_task_id"
        ]
        space = json.loads((folder / "config_space.json").read_text())["hyperparameters"]
        self.space = {h["name"]: h for h in space if h["name"] in INPUTS}

    def task_index(self, task: str) -> int:
        if str(task) not in self.tasks or str(task) == "#na#":
            known = ", ".join(t for t in self.tasks if t != "#na#")
            raise LCBenchError(f"LCBench has no task {task!r}; its tasks: {known}")
        return int(self.tasks[str(task)])

    def predict(self, task: str, config: dict, surrogate_epochs: list[int]) -> np.ndarray:
        """The surrogate's outputs (rows: ``surrogate_epochs``; columns: OUTPUTS)."""
        x = np.array([[e, *(float(config[name]) for name in INPUTS)] for e in surrogate_epochs])
        cat = np.full((len(surrogate_epochs), 1), self.task_index(task), dtype=np.int32)
        return self.session.run(None, {"x_cont": x.astype(np.float32), "x_cat": cat})[0]

    def curves(self, task: str, config: dict, epochs: int = EPOCHS) -> dict[str, list[float]]:
        """A trial's curves: its epoch e (1..``epochs``) is the surrogate's epoch e + 1."""
        if not 1 <= epochs <= EPOCHS:
            raise LCBenchError(f"{epochs} epochs asked; LCBench trials have 1..{EPOCHS}")
        out = self.predict(task, config, list(range(2, epochs + 2)))
        return {name: out[:, OUTPUTS.index(name)].astype(float).tolist() for name in REPORTED}


@functools.lru_cache(maxsize=4)
def surrogate(folder: str | Path | None = None) -> Surrogate:
    """The surrogate of ``folder`` (see ``lcbench_dir``), loaded once per process."""
    return Surrogate(lcbench_dir(folder))


def replay(config: dict, report: Callable[[dict], None]) -> None:
    """Report the surrogate's curve of ``config`` on task ``config["lcbench_task"]``, one
    epoch per call, for ``config["epochs"]`` epochs (default 51)."""
    model = surrogate(config.get("lcbench_dir"))
    curves = model.curves(config["lcbench_task"], config, int(config.get("epochs") or EPOCHS))
    for epoch in range(len(curves[METRIC])):
        report({"epoch": epoch + 1, **{name: values[epoch] for name, values in curves.items()}})


def lcbench_trial(config: dict) -> None:
    """Ray Tune entry point: ``replay`` with ``tune.report`` (no checkpoints: a replayed
    trial restarts from epoch 1 in no time)."""
    from ray import tune

    replay(config, tune.report)


class LCBenchSpace:
    """The define-by-run space of LCBench (``config_space.json`` less the task and the
    epoch: 7 dims), on task ``task``; the task, the folder and the epoch count go to trials
    as constants. A class so Ray can pickle it; the folder and task are checked here, in the
    driver, before any trial starts."""

    def __init__(self, task: str, folder: str | Path | None = None, epochs: int = EPOCHS):
        self.folder = str(lcbench_dir(folder))
        self.task, self.epochs = str(task), int(epochs)
        surrogate(self.folder).task_index(self.task)
        self.__name__ = f"lcbench({self.task})"

    def __call__(self, trial) -> dict:
        for name, dim in surrogate(self.folder).space.items():
            log = bool(dim.get("log"))
            if dim["type"] == "uniform_int":
                trial.suggest_int(name, int(dim["lower"]), int(dim["upper"]), log=log)
            else:
                trial.suggest_float(name, float(dim["lower"]), float(dim["upper"]), log=log)
        return {"lcbench_task": self.task, "lcbench_dir": self.folder, "epochs": self.epochs}
