"""bench/suite_plots.py: the curves it draws, and one PNG per benchmark."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.suite_plots import curve, load_runs, main, quartile_curves


def run(benchmark, strategy, seed, anytime, budget=6, **extra):
    return {"benchmark": benchmark, "strategy": strategy, "seed": seed, "concurrency": 2,
            "budget": budget, "best": max(anytime), "anytime": anytime, **extra}  # fmt: skip


def test_curve_is_cut_at_the_budget_and_held_after_the_last_report():
    assert curve([1, 2, 3, 4], 3).tolist() == [1, 2, 3]
    assert curve([1, 2], 4).tolist() == [1, 2, 2, 2]
    assert np.isnan(curve([], 2)).all()


def test_quartiles_are_taken_per_trial_epoch_over_seeds():
    runs = [run("b", "s", i, [v, v + 1]) for i, v in enumerate([0.0, 10.0, 20.0, 30.0, 40.0])]
    q25, q50, q75 = quartile_curves(runs, 3)
    assert q50.tolist() == [20.0, 21.0, 21.0]
    assert q25.tolist() == [10.0, 11.0, 11.0] and q75.tolist() == [30.0, 31.0, 31.0]


def test_one_png_per_benchmark_and_reruns_replace(tmp_path):
    first = [run(b, s, seed, [0.1 * seed, 0.2 + seed]) for b in ("lcbench:1", "meld")
             for s in ("random", "tpe") for seed in range(3)]  # fmt: skip
    rerun = [run("meld", "tpe", 0, [5.0, 6.0])]
    (tmp_path / "a.json").write_text(json.dumps({"runs": first}))
    (tmp_path / "b.json").write_text(json.dumps({"runs": rerun}))
    runs = load_runs([tmp_path / "a.json", tmp_path / "b.json"])
    assert len(runs) == 12
    assert [
        r["best"] for r in runs if (r["benchmark"], r["strategy"], r["seed"]) == ("meld", "tpe", 0)
    ] == [6.0]
    paths = main([str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--out", str(tmp_path / "p")])
    assert sorted(p.name for p in paths) == ["lcbench_1.png", "meld.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(SystemExit, match="no such file: .*nope.json"):
        main([str(tmp_path / "nope.json"), "--out", str(tmp_path)])
