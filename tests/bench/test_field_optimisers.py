"""bench/field_optimisers.py, the field's optimisers run directly on LCBench: a search spends
search_suite.py's budget exactly (never an epoch more), what it reports is what the surrogate
says of the config it picked, and its records merge with orch's in ``search_suite.py
--from-json``. Optuna only: DEHB needs its own venv (numpy<2), which CI does not have."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("optuna")

from bench import field_optimisers, search_suite  # noqa: E402
from bench.lcbench import surrogate  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
ORCH = REPO / "bench" / "data" / "search_suite" / "smoke_2tasks_3seeds.json"
ARGS = ["--benchmark", "lcbench:3945", "--strategies", "optuna-tpe+hyperband", "--seeds", "1",
        "--first-seed", "4", "--full-trials", "4", "--epochs", "9"]  # fmt: skip


def test_the_ledger_stops_at_the_budget():
    args = argparse.Namespace(epochs=9, lcbench_dir=None)
    ledger = field_optimisers.Ledger("lcbench:3945", "x", 0, 12, args)
    config = {"batch_size": 64, "learning_rate": 0.01, "momentum": 0.9, "weight_decay": 1e-4,
              "num_layers": 2, "max_units": 256, "max_dropout": 0.1}  # fmt: skip
    assert len(ledger.trial(config, 9)) == 9
    assert len(ledger.trial(config, 9)) == 3  # cut at the budget: counts the 3 it ran
    assert ledger.trial(config, 9) == [] and ledger.trial_epochs == [9, 3]
    assert ledger.record("test")["epochs"] == 12 == len(ledger.anytime)


def test_a_hyperband_search_spends_the_budget_and_merges_with_orch(tmp_path, capsys):
    out = tmp_path / "field.json"
    field_optimisers.main([*ARGS, "--json", str(out)])
    saved = json.loads(out.read_text())
    assert "--full-trials 4" in saved["provenance"]["command"] and saved["provenance"]["commit"]
    (run,) = saved["runs"]
    assert (run["benchmark"], run["strategy"], run["seed"]) == ("lcbench:3945",
                                                                "optuna-tpe+hyperband", 4)  # fmt: skip
    # The budget to the epoch: 4 full trials of 9 epochs, the pruned trials' epochs included.
    assert run["budget"] == 36 == run["epochs"] == sum(run["trial_epochs"]) == len(run["anytime"])
    assert run["pruned"] >= 1 and max(run["trial_epochs"]) <= 9 and run["trials"] > 3
    anytime = run["anytime"]
    assert anytime == sorted(anytime) and run["best"] == anytime[-1]
    # What the surrogate says of the picked config at the picked epoch (e -> e + 1).
    config, epoch = run["best_config"], run["best_epoch"]
    assert config["lcbench_task"] == "3945" and config["epochs"] == 9 and 1 <= epoch <= 9
    curves = surrogate(config["lcbench_dir"]).curves("3945", config, 9)
    assert run["best"] == pytest.approx(curves["val_accuracy"][epoch - 1], rel=1e-6)
    assert run["picked_test"] == pytest.approx(curves["test_balanced_accuracy"][epoch - 1])
    # Every field an orch record has, of the same type (orch's draws are bohb's alone).
    orch = next(
        r for r in json.loads(ORCH.read_text())["runs"] if r["benchmark"] == run["benchmark"]
    )
    for key, value in orch.items():
        if key != "draws":
            assert type(run[key]) is type(value), key
    # The same seed searches the same way (Hyperband's brackets hash the study's name).
    assert field_optimisers.main(ARGS)["runs"][0]["anytime"] == anytime
    # One orch record and one of these, loaded together.
    part = tmp_path / "orch.json"
    part.write_text(json.dumps({"runs": [orch]}))
    capsys.readouterr()
    merged = search_suite.main(
        ["--reference", orch["strategy"], "--from-json", str(part), str(out)]
    )
    rows = {r["strategy"]: r for r in merged["tables"]["lcbench:3945"]}
    assert set(rows) == {orch["strategy"], "optuna-tpe+hyperband"}
    assert (
        rows["optuna-tpe+hyperband"]["budget"] == 36 and rows[orch["strategy"]]["reached"] == "1/1"
    )
    printed = capsys.readouterr().out
    assert "lcbench:3945: budget" in printed and "\noptuna-tpe+hyperband " in printed


def test_misuse_is_named(tmp_path):
    with pytest.raises(SystemExit, match="lcbench:TASK only"):
        field_optimisers.main(["--benchmark", "meld"])
    missing = tmp_path / "no-venv" / "python"
    with pytest.raises(SystemExit, match=re.escape(f"{missing} is missing") + ".*pip install dehb"):
        field_optimisers.main([*ARGS[:2], "--strategies", "dehb", "--dehb-python", str(missing)])
