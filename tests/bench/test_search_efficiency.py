"""The search-efficiency comparison (bench/search_efficiency.py), 2 seeds x 6 trials on the
small committed table: random search and orch's default (random + ASHA;
the other strategies differ only in settings tested in tests/orchestrator) run through the
real run_search, and what it prints and writes agrees with the table it replayed. Its numbers are not judged here (a bench's
job); that the comparison runs and measures what it says is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TABLE = REPO / "tests" / "data" / "tiny_curves.json"


@pytest.mark.timeout(300)
def test_two_seed_smoke_comparison(tmp_path):
    strategies = ["random", "bohb+asha"]
    labels = ["random", "bohb+asha (orch)"]  # orch search's defaults are marked
    out, png = tmp_path / "runs.json", tmp_path / "anytime.png"
    done = subprocess.run(
        [sys.executable, "bench/search_efficiency.py", "--table", str(TABLE), "--seeds", "2",
         "--trials", "6", "--strategies", *strategies, "--default-concurrency",
         "--json", str(out), "--png", str(png)],
        cwd=REPO, capture_output=True, text=True, timeout=290,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    printed = {line.split("  ")[0].strip() for line in done.stdout.splitlines()}
    assert set(labels) <= printed
    assert png.stat().st_size > 10_000

    table = json.loads(TABLE.read_text())
    # Every (dev, test) pair a replayed epoch can report.
    epochs = {(d, t) for c in table["configs"].values()
              for d, t in zip(c["curves"]["dev_weighted_f1"], c["curves"]["test_weighted_f1"],
                              strict=True)}  # fmt: skip
    runs = json.loads(out.read_text())["runs"]
    assert sorted((r["strategy"], r["seed"]) for r in runs) == sorted(
        (s, seed) for s in labels for seed in (0, 1)
    )
    for run in runs:
        anytime = run["anytime"]
        assert len(anytime) == run["epochs"] and anytime == sorted(anytime)
        assert run["best_dev"] == anytime[-1] and (run["best_dev"], run["picked_test"]) in epochs
        assert run["trials"] == 6
        if "asha" in run["strategy"]:
            assert 6 <= run["epochs"] < 6 * table["epochs"]  # ASHA stopped some trials
        else:
            assert run["epochs"] == 6 * table["epochs"]  # no stopping: every epoch
    rows = {r["strategy"]: r for r in json.loads(out.read_text())["rows"]}
    # Random's best seed reaches random's median final best, within what it spent.
    assert rows["random"]["reached"] in ("1/2", "2/2")
    assert rows["random"]["ratio"] == float("inf") or 0 < rows["random"]["ratio"] <= 1
