"""bench/paired_seeds.py on a committed fixture whose numbers are worked out here by hand."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from bench import paired_seeds

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "paired_seeds"


def test_means_differences_and_p_value(capsys, tmp_path):
    assert paired_seeds.main(["--folder", str(FIXTURE), "--json", str(tmp_path / "p.json")]) == 0
    out = json.loads((tmp_path / "p.json").read_text())
    ref, found, pair = out["reference"], out["searched"], out["paired"]
    assert ref["weighted_f1"]["mean"] == pytest.approx(60.1666667)
    assert ref["weighted_f1"]["std"] == pytest.approx(
        math.sqrt((0.0277778 + 0.6944444 + 0.4444444) / 2)
    )
    assert found["accuracy"]["mean"] == pytest.approx(63.5)
    assert found["class_f1"]["fear"]["per_seed"] == [10.0, 0.0, 5.0]
    assert found["class_f1"]["joy"]["mean"] == pytest.approx(58.0)
    # Differences searched - reference: 1.5, 0.0, 2.5.
    assert pair["diff_per_seed"] == pytest.approx([1.5, 0.0, 2.5])
    mean, std = 4.0 / 3, math.sqrt(((1.5 - 4 / 3) ** 2 + (4 / 3) ** 2 + (2.5 - 4 / 3) ** 2) / 2)
    assert (pair["mean"], pair["std"]) == (pytest.approx(mean), pytest.approx(std))
    # Student's t with 2 degrees of freedom has a closed form: two-sided p = 1 - t/sqrt(2+t^2).
    t = mean / (std / math.sqrt(3))
    assert pair["p"] == pytest.approx(1 - t / math.sqrt(2 + t * t))
    assert pair["b_won"] == 2  # a tie is not a win
    text = capsys.readouterr().out
    assert "better on 2 of 3 seeds, mean difference +1.33 ± 1.26, paired t-test p = 0.208" in text
    assert "fear F1 per seed: reference 0.0 0.0 0.0; searched 10.0 0.0 5.0" in text


def test_seeds_trained_with_other_settings_are_not_averaged(tmp_path, capsys):
    for path in FIXTURE.glob("*.json"):
        shutil.copy(path, tmp_path / path.name)
    odd = tmp_path / "searched_seed2.json"
    record = json.loads(odd.read_text())
    record["params"]["lr"] = "0.001"
    odd.write_text(json.dumps(record))
    assert paired_seeds.main(["--folder", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "error: searched_seed2.json: lr = 0.001 but searched_seed0.json has 0.00018; "
        "seeds of one config must differ only by the seed"
    )


def test_seeds_without_params_are_paired_by_their_command(tmp_path, capsys):
    """`orch train --json` prints no params: bench/seed_runs.py's files carry the command."""
    for path in FIXTURE.glob("*.json"):
        record = json.loads(path.read_text())
        record.pop("params")
        seed = path.stem.rsplit("seed", 1)[1]
        lr = "3e-5" if path.name.startswith("reference") else "1.8e-4"
        record["command"] = f"orch train --dataset meld --lr {lr} --epochs 3 --seed {seed} --json"
        (tmp_path / path.name).write_text(json.dumps(record))
    assert paired_seeds.main(["--folder", str(tmp_path)]) == 0
    assert "better on 2 of 3 seeds" in capsys.readouterr().out

    odd = tmp_path / "searched_seed2.json"
    record = json.loads(odd.read_text())
    record["command"] = record["command"].replace("--epochs 3", "--epochs 6")
    odd.write_text(json.dumps(record))
    assert paired_seeds.main(["--folder", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "error: searched_seed2.json: --epochs 6 but searched_seed0.json has 3; "
        "seeds of one config must differ only by the seed"
    )


def test_markdown_rows_link_each_seed_to_its_file(tmp_path, capsys):
    for path in FIXTURE.glob("*.json"):
        shutil.copy(path, tmp_path / path.name)
    (tmp_path / "reference_seed2.json").unlink()  # a seed still running: an empty cell
    record = json.loads((tmp_path / "searched_seed1.json").read_text())
    record.update(best_epoch=2, wall_s=3907)
    (tmp_path / "searched_seed1.json").write_text(json.dumps(record))
    assert paired_seeds.main(["--folder", str(tmp_path), "--markdown"]) == 0
    rows = capsys.readouterr().out.split("\n\n", 1)[1].strip().splitlines()
    assert rows[:2] == [
        "| config | seed 0 | seed 1 | seed 2 | mean ± std |",
        "|---|---|---|---|---|",
    ]
    base = tmp_path.as_posix()
    assert rows[2] == (
        f"| reference | [60.00]({base}/reference_seed0.json) | [61.00]({base}/reference_seed1.json)"
        " |  | 60.50 ± 0.71 (2 seeds) |"
    )
    assert rows[3].startswith(
        f"| searched | [61.50]({base}/searched_seed0.json) | "
        f"[61.00]({base}/searched_seed1.json) (best epoch 2; 3907 s) | "
    )
