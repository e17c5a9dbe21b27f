"""The LCBench trainable (bench/lcbench.py): a trial's epoch e reports the surrogate's epoch
e + 1, checked against onnxruntime called directly on ../shared/bench/lcbench; the space is
config_space.json's 7 dims; a missing folder or task is named."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import optuna
import pytest

from bench.lcbench import DEV_TASKS, LCBenchError, LCBenchSpace, lcbench_dir, replay, surrogate

ORDER = ("batch_size", "learning_rate", "momentum", "weight_decay", "num_layers", "max_units",
         "max_dropout")  # fmt: skip


def direct(folder, task: str, config: dict, surrogate_epoch: int) -> np.ndarray:
    """One row straight from the ONNX model, as ABOUT.md documents it."""
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    index = json.loads((folder / "encoding.json").read_text())["OpenML_task_id"][task]
    x = np.array([[surrogate_epoch, *(config[k] for k in ORDER)]], dtype=np.float32)
    return session.run(None, {"x_cont": x, "x_cat": np.array([[index]], dtype=np.int32)})[0][0]


def test_a_trial_reports_the_surrogates_next_epoch():
    folder = lcbench_dir()
    space = LCBenchSpace("34539")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(2):
        trial = study.ask()
        constants = space(trial)
        config = {**trial.params, **constants}
        assert sorted(trial.params) == sorted(ORDER) and constants["epochs"] == 51
        assert isinstance(config["batch_size"], int) and 16 <= config["batch_size"] <= 512
        reports = []
        replay(config, reports.append)
        assert [r["epoch"] for r in reports] == list(range(1, 52))
        for epoch in (1, 2, 30, 51):
            row = direct(folder, "34539", config, epoch + 1)  # epoch 1 is the untrained net
            got = reports[epoch - 1]
            # columns: time, val_accuracy, val_ce, val_balanced, test_ce, test_balanced
            # (a batch of 51 rows and a single row round differently: ~1e-6 relative)
            assert got["val_accuracy"] == pytest.approx(float(row[1]), rel=1e-5)
            assert got["val_cross_entropy"] == pytest.approx(float(row[2]), rel=1e-5)
            assert got["test_balanced_accuracy"] == pytest.approx(float(row[5]), rel=1e-5)
        for epoch in (1, 2):  # early, where the curve moves: not the surrogate's own epoch
            unshifted = float(direct(folder, "34539", config, epoch)[1])
            assert reports[epoch - 1]["val_accuracy"] != pytest.approx(unshifted, rel=1e-3)
        study.tell(trial, reports[-1]["val_accuracy"])
    short = []
    replay({**config, "epochs": 4}, short.append)  # --epochs 4: the first 4 epochs
    assert [r["val_accuracy"] for r in short] == [r["val_accuracy"] for r in reports[:4]]
    assert surrogate(str(folder)) is surrogate(str(folder))  # loaded once per process
    assert len(DEV_TASKS) == 8


def test_a_missing_folder_or_task_is_named(tmp_path, monkeypatch):
    with pytest.raises(LCBenchError, match=r"not found: .*empty lacks model.onnx, encoding"):
        LCBenchSpace("3945", folder=tmp_path / "empty")
    monkeypatch.setenv("ORCH_LCBENCH_DIR", str(tmp_path))
    with pytest.raises(LCBenchError, match="or set ORCH_LCBENCH_DIR"):
        LCBenchSpace("3945")
    monkeypatch.delenv("ORCH_LCBENCH_DIR")
    with pytest.raises(LCBenchError, match="LCBench has no task '42'; its tasks: "):
        LCBenchSpace("42")


def test_fidelity_table_ranks_rungs_against_the_final_best():
    """bench/lcbench_fidelity.py: Spearman with tied ranks, and a task's table computed from
    the surrogate's own curves (epoch 27 ranks the final best better than epoch 1)."""
    from bench.lcbench_fidelity import spearman, task_table

    a = np.array([1.0, 2.0, 2.0, 3.0])
    assert spearman(a, a * 10) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert spearman(np.array([1.0, 2.0, 3.0]), np.array([1.0, 3.0, 2.0])) == pytest.approx(0.5)
    row = task_table("126025", configs=40, seed=0)
    assert row["spearman_e27"] > row["spearman_e1"]
    assert all(0 <= row[f"top5_kept_e{r}"] <= 1 for r in (1, 3, 9, 27))
