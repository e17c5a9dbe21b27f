"""Trainables and spaces for the fault-injection tests (imported by Ray workers too).

``faulty_train_trial`` is the real ``train_trial`` with one fault on demand, chosen by the
trial's ``fault`` parameter: ``kill-mid-epoch`` SIGKILLs the worker process in the middle of
the trial's second epoch, once (a marker file in ``fault_dir`` remembers it). Running out of
memory needs no hook: ``fault_space`` can sample a feed-forward size whose first weight
matrix (64 x 2e10 floats, 5 TB) no allocator grants.

``sleepy_trial`` is a cheap stand-in for a trial (no torch), for tests about the driver.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time
from pathlib import Path

HUGE_FFN = 20_000_000_000
KILL_AFTER_STEPS = 2  # optimizer steps into the second epoch


def fault_space(trial) -> dict:
    """A tiny quick-style space with two extra knobs: ``ffn_size`` (one value cannot fit in
    any memory) and ``fault``."""
    trial.suggest_float("lr", 1e-3, 5e-3, log=True)
    trial.suggest_categorical("ffn_size", [128, HUGE_FFN])
    trial.suggest_categorical("fault", ["none", "kill-mid-epoch"])
    return {
        "encoder": "tiny",
        "hidden_size": 64,
        "intra_heads": 2,
        "inter_heads": 2,
        "intra_layers": 1,
        "inter_layers": 1,
        "k": 2,
        "max_length": 64,
        "epochs": 3,
        "batch_size": 8,
        "warmup_steps": 2,
    }


def faulty_train_trial(config: dict) -> None:
    from ray import tune

    from trainable.engine import Trainer
    from trainable.tune_trainable import train_trial

    config = dict(config)
    fault = config.pop("fault", "none")
    fault_dir = Path(config.pop("fault_dir"))
    marker = fault_dir / f"killed-{tune.get_context().get_trial_id()}"
    original = Trainer._step
    if fault == "kill-mid-epoch" and not marker.exists():

        def step(self, batch):
            if self.epoch == 1:  # one epoch done and reported with its checkpoint
                self._fault_steps = getattr(self, "_fault_steps", 0) + 1
                if self._fault_steps > KILL_AFTER_STEPS:
                    marker.write_text(json.dumps({"pid": os.getpid(), "epoch": 2}))
                    os.kill(os.getpid(), signal.SIGKILL)
            return original(self, batch)

        Trainer._step = step
    try:
        train_trial(config)
    finally:
        Trainer._step = original


def sleepy_trial(config: dict) -> None:
    """Waits until ``together`` trials have started (files in ``starts``), then ``epochs``
    reports of ~30 metrics, ``sleep`` seconds apart, each with a checkpoint."""
    from ray import tune

    starts = Path(config["starts"])
    (starts / tune.get_context().get_trial_id()).write_text(str(time.time()))
    deadline = time.monotonic() + 60
    while len(list(starts.iterdir())) < config["together"]:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(list(starts.iterdir()))} trials ever ran at once")
        time.sleep(0.05)
    for epoch in range(1, config["epochs"] + 1):
        time.sleep(config["sleep"])
        metrics = {f"dev_m{i}": config["x"] * epoch + i for i in range(30)}
        # The last epoch is the worst: Tune keeps the 2 best checkpoints and the latest.
        metrics["dev_weighted_f1"] = config["x"] * epoch if epoch < config["epochs"] else -1.0
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "state.json").write_text(json.dumps({"epoch": epoch}))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def sleepy_space(trial) -> dict:
    trial.suggest_float("x", 0.0, 1.0)
    return {"epochs": 4, "sleep": 0.2}
