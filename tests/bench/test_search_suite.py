"""The strategy suite (bench/search_suite.py) in small: 2 benchmarks (an LCBench task and the
small committed MELD-style table) x 2 strategies x 2 seeds, 3 full trials' worth of
trial-epochs each, through the real run_search. Its numbers are not judged here (a bench's
job); that each search spent its budget and that what it reports is what the surrogate or
the table says of the config it picked, is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.lcbench import surrogate

REPO = Path(__file__).resolve().parents[2]
TABLE = REPO / "tests" / "data" / "tiny_curves.json"


@pytest.mark.timeout(300)
def test_two_benchmark_two_seed_smoke_suite(tmp_path):
    out = tmp_path / "suite.json"
    command = [sys.executable, "bench/search_suite.py", "--benchmark", "lcbench:3945", "meld",
               "--meld-table", str(TABLE), "--seeds", "2", "--full-trials", "3", "--epochs", "9",
               "--strategies", "random+asha", "bohb+asha", "--reference", "random+asha",
               "--json", str(out)]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=290)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "lcbench:3945: budget 27 trial-epochs; random+asha's median final best" in done.stdout
    assert "meld: budget 27 trial-epochs" in done.stdout
    saved = json.loads(out.read_text())
    assert saved["provenance"]["commit"] and "--full-trials 3" in saved["provenance"]["command"]
    runs = saved["runs"]
    assert sorted((r["benchmark"], r["strategy"], r["seed"]) for r in runs) == sorted(
        (b, s, seed) for b in ("lcbench:3945", "meld") for s in ("random+asha", "bohb+asha")
        for seed in (0, 1)
    )  # fmt: skip
    table = json.loads(TABLE.read_text())
    pairs = {(d, t) for c in table["configs"].values()
             for d, t in zip(c["curves"]["dev_weighted_f1"], c["curves"]["test_weighted_f1"],
                             strict=True)}  # fmt: skip
    for run in runs:
        anytime = run["anytime"]
        assert len(anytime) == run["epochs"] and anytime == sorted(anytime)
        assert run["best"] == anytime[-1]
        # The budget, and at most one more epoch per trial running at once (2).
        assert 27 <= run["epochs"] <= 27 + 2 and run["trials"] > 3  # ASHA stopped some
        if run["strategy"] == "bohb+asha":  # how each config was drawn is recorded
            assert sum(run["draws"].values()) >= run["trials"] and run["draws"]["random"] >= 1
        if run["benchmark"] == "meld":
            assert (run["best"], run["picked_test"]) in pairs
            continue
        # What the surrogate says of the picked config at the picked epoch (e -> e + 1).
        config, epoch = run["best_config"], run["best_epoch"]
        assert config["lcbench_task"] == "3945" and 1 <= epoch <= 9
        curves = surrogate(config["lcbench_dir"]).curves("3945", config, 9)
        assert run["best"] == pytest.approx(curves["val_accuracy"][epoch - 1], rel=1e-6)
        assert run["picked_test"] == pytest.approx(curves["test_balanced_accuracy"][epoch - 1])
    ranks = saved["mean_ranks"]
    assert set(ranks) == {"random+asha", "bohb+asha"} and sum(ranks.values()) == 3.0
    # Parts saved by separate processes merge back into the same summary.
    part = tmp_path / "part.json"
    part.write_text(json.dumps({"runs": [r for r in runs if r["seed"] == 1]}))
    merged = subprocess.run(
        [sys.executable, "bench/search_suite.py", "--reference", "random+asha", "--from-json",
         str(out), str(part)], cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert merged.returncode == 0, merged.stderr[-3000:]
    first = "lcbench:3945: budget"
    assert merged.stdout[merged.stdout.index(first) :] == done.stdout[done.stdout.index(first) :]
