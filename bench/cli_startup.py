"""How long the `orch` command line takes to answer, against a bare Python start-up.

    python bench/cli_startup.py            # median of 5 runs per command
    python bench/cli_startup.py --runs 9
    python bench/cli_startup.py --code /tmp/old-checkout   # the same commands of another tree

Each command runs as a fresh process (the way a user types it) with the interpreter of this
process; the baseline is ``python -c pass`` in the same loop, so the ratio says what orch's
imports add. ``orch best`` reads a search seeded into a temporary sqlite store (one parent run
and one trial run with a metric), so it does its whole job: MLflow only, no torch, no Ray.
Targets: ``orch --help`` and ``orch best --help`` under 1 s on 2 cores.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = {
    "python -c pass": ["-c", "pass"],
    "orch --help": ["-m", "orchestrator.cli", "--help"],
    "orch best --help": ["-m", "orchestrator.cli", "best", "--help"],
    "orch search --help": ["-m", "orchestrator.cli", "search", "--help"],
    "orch train --help": ["-m", "orchestrator.cli", "train", "--help"],
    "orch best": ["-m", "orchestrator.cli", "best"],
}


def seed(folder: Path) -> None:
    """A finished search with one scored trial in ``folder/mlruns`` (what `orch best` reads)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from orchestrator.tracking.runs import (
        DEFAULT_EXPERIMENT,
        KIND_TAG,
        PARENT_TAG,
        SEARCH_TAG,
        TRIAL_TAG,
    )
    from orchestrator.tracking.writer import MlflowWriter

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # store creation notices
    writer = MlflowWriter(f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}")
    exp = writer.experiment(DEFAULT_EXPERIMENT)
    tags = {KIND_TAG: "search", SEARCH_TAG: "bench"}
    parent = writer.start_run(exp, "bench", tags, {"metric": "dev_weighted_f1", "mode": "max"})
    child_tags = {PARENT_TAG: parent, TRIAL_TAG: "t1", KIND_TAG: "trial", SEARCH_TAG: "bench"}
    child = writer.start_run(exp, "t1", child_tags, {"lr": 1e-3, "k": 3, "dataset": "meld"})
    for step in (1, 2):
        writer.log_metrics(child, {"dev_weighted_f1": 40.0 + step, "test_weighted_f1": 39.0}, step)
    writer.end_run(child, "FINISHED", {"orch.state": "completed"})
    writer.end_run(parent, "FINISHED")


def timed(argv: list[str], cwd: Path, env: dict) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, *argv], cwd=cwd, env=env, capture_output=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{argv} failed: {done.stderr.decode()[-500:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--code", type=Path, default=None, help="Time another checkout's orch (e.g. an old one)."
    )
    args = parser.parse_args()
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str((args.code or repo).resolve())}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("ORCH_MLRUNS", None)
    with tempfile.TemporaryDirectory(prefix="orch-cli-bench-") as tmp:
        folder = Path(tmp)
        seed(folder)
        times: dict[str, list[float]] = {name: [] for name in COMMANDS}
        for _ in range(args.runs):  # interleaved, so a busy moment hits every command alike
            for name, argv in COMMANDS.items():
                times[name].append(timed(argv, folder, env))
    base = statistics.median(times["python -c pass"])
    print(f"median of {args.runs} runs, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    print(f"{'command':<22}{'median s':>10}{'min s':>8}{'x python':>10}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<22}{median:>10.2f}{min(values):>8.2f}{median / base:>10.1f}")


if __name__ == "__main__":
    main()
