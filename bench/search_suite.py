"""Search strategies compared on a suite of benchmarks at equal trial-epochs (issue 19).

    python bench/search_suite.py --suite --json suite.json           # 8 LCBench tasks + MELD
    python bench/search_suite.py --benchmark lcbench:3945 meld --seeds 10 --json part.json
    python bench/search_suite.py --from-json part1.json part2.json   # merge parts, summarise

A benchmark is ``meld`` (the replayed MELD table of ``orchestrator/replay.py``, metric dev
weighted F1) or ``lcbench:TASK`` (YAHPO Gym's LCBench surrogate, ``bench/lcbench.py``, metric
val accuracy, 51 epochs a trial). ``--suite`` is ABOUT.md's 8 development tasks and MELD.
Every search is a real ``run_search`` (Ray Tune, OptunaSearch, ASHA, the MLflow callback on
a temporary sqlite store) given ``--full-trials`` full trials' worth of trial-epochs
(``--budget`` = full trials x the benchmark's epochs), so strategies are compared at equal
compute whatever ASHA saves.

Printed per benchmark (over seeds): the final best, median [quartiles]; the test score of
the epoch it picked (LCBench's test balanced accuracy, MELD's test weighted F1); how many
seeds reached the reference strategy's median final best (``--reference``, default random
search without stopping) and the trial-epochs the median seed needed for it, as a ratio of
the budget (``-``: the median seed never did). Then each strategy's mean rank across the
benchmarks (rank 1: the highest median final best on a benchmark; ties share the mean
rank). ``--json`` keeps every search's trace (its anytime curve, best config and epoch) and
the run's provenance; parts run in parallel processes (other ``--benchmark``,
``--strategies`` or ``--first-seed``) are merged by ``--from-json``, as are the records of
``bench/field_optimisers.py`` (the field's optimisers run directly, at the same budget).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import shlex
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # before Ray starts: its workers import bench.lcbench by name

from ray.tune import Callback  # noqa: E402

from bench.lcbench import DEV_TASKS, EPOCHS  # noqa: E402
from bench.search_efficiency import Strategy, epochs_to_reach, quartiles  # noqa: E402

STRATEGIES = [
    Strategy("random", "random", "none"),
    Strategy("random+asha", "random", "asha"),
    Strategy("tpe", "tpe", "none"),
    Strategy("tpe+asha", "tpe", "asha", "complete"),
    Strategy("bohb+asha", "bohb", "asha", "complete"),
    # The two further ideas: Hyperband-style brackets (grace 1, 3 and 9 epochs), and
    # a grace period of 3 epochs for the model-based samplers.
    Strategy("tpe+hyperband", "tpe", "asha", "complete", brackets=3),
    Strategy("bohb+hyperband", "bohb", "asha", "complete", brackets=3),
    Strategy("tpe+asha grace3", "tpe", "asha", "complete", grace_period=3),
    Strategy("bohb+asha grace3", "bohb", "asha", "complete", grace_period=3),
]
DEFAULT_STRATEGIES = [s.name for s in STRATEGIES[:5]]
"""What --strategies runs unless told: the five of seeds 0-9's first run."""
SUITE = [f"lcbench:{task}" for task in DEV_TASKS] + ["meld"]
FULL_TRIALS = 20
"""The default budget, in full trials' worth of trial-epochs (bench/field_optimisers.py too)."""


def trial_epochs_budget(full_trials: int, epochs: int) -> int:
    """A search's budget: ``full_trials`` trials of the benchmark's ``epochs``, whatever the
    strategy stops early (one rule for orch's runs and the field's, so they compare)."""
    return full_trials * epochs


@dataclass
class Benchmark:
    name: str
    space: Callable
    trainable: Callable
    metric: str
    tie_metric: str
    test_metric: str
    epochs: int


def benchmark(spec: str, args) -> Benchmark:
    """``meld`` or ``lcbench:TASK`` as a space, trainable and metrics; SystemExit naming the
    option when it is neither or its files are missing."""
    if spec == "meld":
        from orchestrator.replay import ReplaySpace, TableError, load_table, replay_trial

        try:
            table = load_table(args.meld_table)
        except TableError as error:
            raise SystemExit(f"error: --benchmark meld: {error}") from None
        return Benchmark(spec, ReplaySpace(args.meld_table), replay_trial, "dev_weighted_f1",
                         "dev_loss", "test_weighted_f1", table.epochs)  # fmt: skip
    if spec.startswith("lcbench:"):
        from bench.lcbench import LCBenchError, LCBenchSpace, lcbench_trial

        try:
            space = LCBenchSpace(spec.split(":", 1)[1], args.lcbench_dir, args.epochs or EPOCHS)
        except LCBenchError as error:
            raise SystemExit(f"error: --benchmark {spec}: {error}") from None
        return Benchmark(spec, space, lcbench_trial, "val_accuracy", "val_cross_entropy",
                         "test_balanced_accuracy", space.epochs)  # fmt: skip
    raise SystemExit(f"error: --benchmark {spec!r} is unknown; expected meld or lcbench:TASK")


class Trace(Callback):
    """Every result the driver receives, in order: (trial, epoch, metric, test metric)."""

    def __init__(self, metric: str, test_metric: str):
        self.metric, self.test_metric = metric, test_metric
        self.rows: list[tuple[str, int, float, float]] = []
        self.configs: dict[str, dict] = {}

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.configs[trial.trial_id] = trial.config
        self.rows.append((trial.trial_id, int(result["training_iteration"]),
                          float(result[self.metric]), float(result[self.test_metric])))  # fmt: skip


def run_one(strategy: Strategy, bench: Benchmark, seed: int, args, root: Path) -> dict:
    """One search at the benchmark's budget; its trace summarised."""
    from orchestrator.settings import SearchSettings
    from orchestrator.tuner import run_search

    budget = trial_epochs_budget(args.full_trials, bench.epochs)
    name = re.sub(r"[^A-Za-z0-9]+", "-", f"{bench.name}-{strategy.name}-s{seed}")
    settings = SearchSettings(
        space=bench.space, metric=bench.metric, mode="max", budget=budget,
        sampler=strategy.sampler, seed=seed, scheduler=strategy.scheduler,
        asha_tells=strategy.asha_tells, tie_metric=bench.tie_metric, **strategy.asha_settings(),
        max_concurrent=args.concurrency, cpus_per_trial=1.0, keep_checkpoints=1,
        storage=str(root / "ray"), name=name, tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        live=False,
    )  # fmt: skip
    trace, started = Trace(bench.metric, bench.test_metric), time.perf_counter()
    result = run_search(bench.trainable, settings, callbacks=[trace])
    draws = getattr(result.study.sampler, "draws", None)  # bohb: how each config was drawn
    best, test, at, anytime = float("-inf"), float("nan"), None, []
    for trial_id, epoch, value, test_value in trace.rows:
        if value > best:
            best, test, at = value, test_value, (trial_id, epoch)
        anytime.append(best)
    config = {k: v for k, v in trace.configs[at[0]].items() if k != "cache_dir"} if at else {}
    return {"benchmark": bench.name, "strategy": strategy.name, "seed": seed,
            "concurrency": args.concurrency, "budget": budget, "best": best, "picked_test": test,
            "best_config": config, "best_epoch": at[1] if at else None,
            "epochs": len(trace.rows), "trials": len(trace.configs), "anytime": anytime,
            "wall_s": round(time.perf_counter() - started, 1),
            **({"draws": dict(draws)} if draws is not None else {})}  # fmt: skip


def summarise(runs: list[dict], reference: str) -> tuple[dict[str, list[dict]], dict[str, float]]:
    """Rows per benchmark, and each strategy's mean rank over the benchmarks."""
    tables: dict[str, list[dict]] = {}
    ranks: dict[str, list[float]] = {}
    by_bench: dict[str, dict[str, list[dict]]] = {}
    for run in runs:
        by_bench.setdefault(run["benchmark"], {}).setdefault(run["strategy"], []).append(run)
    for name, groups in by_bench.items():
        ref = groups.get(reference, [])
        # median_low: with an even number of seeds, a score half the reference's seeds reached.
        target = statistics.median_low(r["best"] for r in ref) if ref else None
        rows = []
        for strategy, group in groups.items():
            reach = [epochs_to_reach(r["anytime"], target) for r in group] if ref else []
            budget = statistics.median(r["budget"] for r in group)
            median_reach = statistics.median(reach) if reach else float("inf")
            rows.append({"strategy": strategy, "seeds": len(group), "target": target,
                         "best": quartiles([r["best"] for r in group]),
                         "picked_test": quartiles([r["picked_test"] for r in group]),
                         "reached": f"{sum(x != float('inf') for x in reach)}/{len(group)}"
                                    if ref else "-",
                         "ratio": median_reach / budget, "budget": budget})  # fmt: skip
        order = sorted(rows, key=lambda r: -r["best"][1])
        for row in order:  # ties (equal medians) share the mean of their ranks
            tied = [i + 1 for i, r in enumerate(order) if r["best"][1] == row["best"][1]]
            row["rank"] = statistics.mean(tied)
            ranks.setdefault(row["strategy"], []).append(row["rank"])
        tables[name] = order
    return tables, {s: statistics.mean(r) for s, r in sorted(ranks.items())}


def print_summary(tables: dict[str, list[dict]], mean_ranks: dict[str, float], ref: str) -> None:
    def q(t):
        return f"{t[1]:.3f} [{t[0]:.3f}, {t[2]:.3f}]"

    w = max([14, *(len(s) + 2 for s in mean_ranks)])
    for name, rows in tables.items():
        target = rows[0]["target"]
        against = f"{ref}'s median final best {target:.3f}" if target is not None else "no " + ref
        print(f"\n{name}: budget {rows[0]['budget']:.0f} trial-epochs; {against}")
        head = (f"{'strategy':<{w}}{'seeds':>6}  {'final best':<28}{'test of pick':<28}"
                f"{'reach':>6}{'ratio':>7}{'rank':>6}")  # fmt: skip
        print(head + "\n" + "-" * len(head))
        for r in rows:
            ratio = f"{r['ratio']:.2f}" if r["ratio"] != float("inf") else "-"
            print(f"{r['strategy']:<{w}}{r['seeds']:>6}  {q(r['best']):<28}"
                  f"{q(r['picked_test']):<28}{r['reached']:>6}{ratio:>7}{r['rank']:>6.1f}")  # fmt: skip
    print(f"\nmean rank over {len(tables)} benchmark(s) (1 = best median final best):")
    for strategy, rank in sorted(mean_ranks.items(), key=lambda kv: kv[1]):
        print(f"  {strategy:<{w}}{rank:.2f}")


def provenance(argv: list[str], wall: float, commit: str) -> dict:
    return {"command": shlex.join(["python", "bench/search_suite.py", *argv]),
            "commit": commit, "wall_s": round(wall, 1),
            "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs",
            "load_avg_start": os.getloadavg()[0]}  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", nargs="+", default=None, help="meld or lcbench:TASK.")
    parser.add_argument("--suite", action="store_true", help="The 8 LCBench dev tasks + meld.")
    parser.add_argument("--strategies", nargs="+", default=DEFAULT_STRATEGIES,
                        help=f"Of: {', '.join(s.name for s in STRATEGIES)}.")  # fmt: skip
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--full-trials", type=int, default=FULL_TRIALS,
                        help="Budget per search, in full trials' worth of trial-epochs.")  # fmt: skip
    parser.add_argument("--epochs", type=int, default=None,
                        help="LCBench epochs per trial (default 51; fewer for a smoke).")  # fmt: skip
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--reference", default="random", help="The strategy to reach.")
    parser.add_argument("--meld-table", type=Path, default=REPO / "bench/data/meld_curves.json")
    parser.add_argument("--lcbench-dir", default=None, help="Default ../shared/bench/lcbench.")
    parser.add_argument("--json", type=Path, default=None, help="Write every search's trace.")
    parser.add_argument("--from-json", type=Path, nargs="+", default=None,
                        help="Merge and summarise these saved traces instead of searching.")  # fmt: skip
    args = parser.parse_args(argv)
    if args.from_json:
        from bench.suite_plots import load_runs

        runs = load_runs(args.from_json)  # a search saved twice (a part rerun) counts once
        tables, ranks = summarise(runs, args.reference)
        print_summary(tables, ranks, args.reference)
        return {"runs": runs, "tables": tables, "mean_ranks": ranks}
    if args.suite == (args.benchmark is not None):
        raise SystemExit("error: give --suite or --benchmark (one of them)")
    unknown = set(args.strategies) - {s.name for s in STRATEGIES}
    if unknown:
        raise SystemExit(f"error: --strategies: unknown {', '.join(sorted(unknown))}")
    for name in ("seeds", "full_trials", "concurrency"):
        if getattr(args, name) < 1:
            raise SystemExit(f"error: --{name.replace('_', '-')} must be >= 1")
    benches = [benchmark(spec, args) for spec in (SUITE if args.suite else args.benchmark)]
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("orchestrator.tracking.reports").setLevel(logging.ERROR)  # no checkpoints
    warnings.filterwarnings("ignore")  # Optuna's experimental-feature notices, per search

    from orchestrator.resources import connect_ray
    from orchestrator.tracking import reports as search_reports

    search_reports.log_plots = lambda recorder, study: None  # per search, not per report
    connect_ray(num_cpus=args.concurrency)
    from orchestrator.tracking.writer import git_commit

    commit = git_commit()  # the code that runs: read before, as others may commit meanwhile
    runs, started = [], time.perf_counter()
    # MLflow's sqlite store commits per reported epoch: tmpfs makes that cheaper.
    shm = "/dev/shm" if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(prefix="orch-suite-", dir=shm) as tmp:
        for bench in benches:
            for strategy in (s for s in STRATEGIES if s.name in args.strategies):
                for seed in range(args.first_seed, args.first_seed + args.seeds):
                    runs.append(run_one(strategy, bench, seed, args, Path(tmp)))
                    print(f"{bench.name} {strategy.name} seed {seed}: best "
                          f"{runs[-1]['best']:.3f} ({runs[-1]['wall_s']:.0f} s)",
                          file=sys.stderr, flush=True)  # fmt: skip
    wall = time.perf_counter() - started
    print(f"{len(runs)} searches in {wall:.0f} s; concurrency {args.concurrency}, "
          f"{args.full_trials} full trials' worth of trial-epochs per search")  # fmt: skip
    tables, ranks = summarise(runs, args.reference)
    print_summary(tables, ranks, args.reference)
    out = {"provenance": provenance(argv, wall, commit), "args": {k: str(v) for k, v in vars(args).items()},
           "tables": tables, "mean_ranks": ranks, "runs": runs}  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
