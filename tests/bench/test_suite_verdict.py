"""bench/suite_verdict.py: mean ranks, the bootstrap, and the goal's three checks."""

from __future__ import annotations

import json
import math

import pytest

from bench.suite_verdict import bootstrap_best, group, main, mean_ranks, ratio, verdict


def run(bench, strategy, seed, best, reached_at=None, budget=10, **extra):
    """A search whose best-so-far is 0 until ``reached_at`` (1-based), then ``best``."""
    at = reached_at or budget
    anytime = [0.0] * (at - 1) + [best] * (budget - at + 1)
    return {"benchmark": bench, "strategy": strategy, "seed": seed, "concurrency": 2,
            "budget": budget, "best": best, "anytime": anytime, **extra}  # fmt: skip


def test_mean_ranks_share_ties_and_skip_benchmarks_missing_a_strategy():
    medians = {"b1": {"x": 3.0, "y": 2.0, "z": 2.0}, "b2": {"x": 1.0, "y": 5.0, "z": 4.0},
               "b3": {"x": 9.0, "y": 1.0}}  # fmt: skip
    assert mean_ranks(medians, ["x", "y", "z"]) == {"x": 2.0, "y": 1.75, "z": 2.25}


def test_ratio_is_the_median_seeds_trial_epochs_over_the_budget():
    runs = [run("b", "s", i, 1.0, reached_at=at) for i, at in enumerate([2, 3, 9])]
    assert ratio(runs, 1.0) == pytest.approx(0.3)
    assert ratio(runs, 2.0) == math.inf


def test_verdict_checks_wins_gap_and_ratio():
    runs = []
    for task in range(8):  # "new" beats both on 6 tasks, loses by 0.2 on two
        bench = f"lcbench:{task}"
        lead = 0.5 if task < 6 else -0.2
        for seed in range(3):
            runs += [run(bench, "random", seed, 70.0),
                     run(bench, "random+asha", seed, 80.0, reached_at=3),
                     run(bench, "tpe+asha", seed, 79.0, reached_at=3),
                     run(bench, "new", seed, 80.0 + lead, reached_at=1),
                     run(bench, "field", seed, 80.6, reached_at=1, producer="x")]  # fmt: skip
    rows = {r["strategy"]: r for r in verdict(runs, None, "random", n=50)}
    assert set(rows) == {"new", "random", "random+asha", "tpe+asha"}  # the field: no candidate
    new = rows["new"]
    assert (new["wins"], new["tasks"]) == (6, 8)
    assert new["worst_gap"] == pytest.approx(0.8)  # the field's 80.6 against 79.8
    assert new["median_ratio"] == pytest.approx(0.1) and not new["meets_goal"]
    assert new["mean_rank"] == pytest.approx((6 * 1 + 2 * 2) / 8)
    assert new["p_best"] == 1.0  # equal seeds: every resample ranks alike
    assert rows["random+asha"]["wins"] == 8  # judged against tpe+asha only (80 > 79 on all)


def test_bootstrap_splits_a_tie_and_sees_the_seeds():
    runs = [run("b", "a", s, v) for s, v in enumerate([1.0, 1.0, 1.0])]
    runs += [run("b", "c", s, v) for s, v in enumerate([1.0, 1.0, 1.0])]
    assert bootstrap_best(group(runs), ["a", "c"], 20) == {"a": 0.5, "c": 0.5}
    noisy = [run("b", "a", s, v) for s, v in enumerate([0.0, 2.0, 2.0, 0.0, 2.0])]
    noisy += [run("b", "c", s, 1.0) for s in range(5)]
    share, ahead = bootstrap_best(group(noisy), ["a", "c"], 400, against="c")
    assert 0.5 < share["a"] < 0.95  # a's median is 2 but resamples often draw 0s
    assert ahead["a"] == share["a"] and ahead["c"] == 0.5  # two strategies: ahead = best


def test_the_cli_reads_files_and_names_a_missing_one(tmp_path, capsys):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"runs": [run("meld", s, 0, v) for s, v in (("a", 1), ("c", 2))]}))
    rows = main([str(path), "--bootstrap", "10", "--markdown"])
    assert [r["strategy"] for r in rows] == ["c", "a"]
    out = capsys.readouterr().out
    assert "not met" in out
    table = out[out.index("| strategy") :].splitlines()  # best median in bold, c ranked first
    assert table[0].startswith("| strategy | meld |")
    assert table[2].startswith("| c | **2.00** |") and table[3].startswith("| a | 1.00 |")
    with pytest.raises(SystemExit, match="no such file: .*nope"):
        main([str(tmp_path / "nope.json")])
