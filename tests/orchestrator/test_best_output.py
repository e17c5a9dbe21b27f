"""What `orch best` prints: typed JSON, rounded tables, commands and paths that copy whole."""

from __future__ import annotations

import shlex

from orchestrator.best import BestTrial, command_lines, shown_params, typed
from orchestrator.tracking.runs import fidelity

PARAMS = {
    "k": "8",
    "lr": "0.004463064952673511",
    "dropout": "0.15866847592587133",
    "freeze_encoder": "False",
    "data_dir": "None",
    "encoder": "tiny",
    "cache_dir": "/root/.cache/orch",
}


def test_params_are_typed_and_plumbing_is_left_out():
    shown = shown_params(PARAMS)
    assert shown == {
        "data_dir": None,
        "dropout": 0.15866847592587133,  # full precision: --json is for machines
        "encoder": "tiny",
        "freeze_encoder": False,
        "k": 8,
        "lr": 0.004463064952673511,
    }
    assert typed("1e-05") == 1e-05 and typed("minilm") == "minilm"


def test_best_trial_json_has_typed_params():
    trial = BestTrial("s", "p", "r", "t", "completed", "dev_weighted_f1", "max", 1.0, 2, PARAMS)
    out = trial.to_dict()
    assert out["params"]["k"] == 8 and "cache_dir" not in out["params"]
    assert trial.params["k"] == "8"  # the trial keeps MLflow's strings for train_command


def test_the_reproduce_command_is_short_lines_that_paste_back_whole():
    command = (
        "orch train --preset paper --dataset meld --data-dir '/data/my meld' --encoder tiny "
        "--hidden-size 64 --intra-layers 1 --dropout 0.15866847592587133 --k 2 "
        "--lr 0.004463064952673511 --warmup-steps 1 --no-intra-transformer --epochs 2"
    )
    lines = command_lines(command, width=60)
    assert len(lines) > 2 and all(len(line) <= 60 for line in lines)
    assert all(line.endswith(" \\") for line in lines[:-1]) and not lines[-1].endswith("\\")
    # What a shell reads back: the same words, each option beside its value.
    joined = " ".join(line.removesuffix(" \\") for line in lines)
    assert shlex.split(joined) == shlex.split(command)
    assert any("--data-dir '/data/my meld'" in line for line in lines)
    assert any("--dropout 0.15866847592587133" in line for line in lines)


def test_the_tiny_encoder_is_trained_from_scratch_not_fine_tuned():
    assert fidelity({"encoder": "tiny"}) == "scratch"
    assert fidelity({"encoder": "minilm"}) == "finetune"
    assert fidelity({"encoder": "tiny", "freeze_encoder": "True"}) == "frozen"
