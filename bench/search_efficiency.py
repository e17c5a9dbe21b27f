"""What TPE, ASHA and telling Optuna "pruned" buy over random search, measured by replaying a
table of real learning curves through orch's own ``run_search``.

    python bench/search_efficiency.py                  # bench/data/meld_curves.json, 10 seeds
    python bench/search_efficiency.py --smoke          # the small table, 3 seeds x 16 trials, < 3 minutes
    python bench/search_efficiency.py --budget 120     # every strategy spends 120 trial-epochs

Each search is a real ``orch search`` minus the training: Ray Tune, OptunaSearch, the ASHA
scheduler, the PRUNED bookkeeping, concurrency and the driver's MLflow callback (a temporary
sqlite store), with ``orchestrator.replay.replay_trial`` reporting the recorded curve of the
grid point nearest each sampled config (one epoch = one unit of cost). A driver callback
records every result in the order the driver received it, which gives the anytime curve:
best dev F1 so far against trial-epochs spent.

Printed per strategy and concurrency (median [quartiles] over seeds): the final best dev
weighted F1; the test weighted F1 of the epoch it picked (its best dev epoch, as ``orch best``
does); trial-epochs spent; the trial-epochs needed to reach random-without-stopping's median
final best, as a ratio of random's median spend (median over seeds, a seed that never
reaches it counted as infinite: ``-`` when the median seed does not reach it); the grid points
looked at (a sampler that keeps proposing near one config lands on the same grid point
again: on a coarse grid that is a duplicate replay, in a real search a near neighbour).
``--png`` draws the anytime curves; ``--json`` keeps every search's trace; ``--from-json``
summarises saved traces (several files: parts run in parallel processes) without searching.
ASHA settings other than ``orch search``'s defaults are appended to the row label. The
end-of-search plots (``search_reports.log_plots``: drawn once per search from the study) are
skipped: they cost seconds per search and no report.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ray.tune import Callback  # noqa: E402

from orchestrator.replay import ReplaySpace, load_table, replay_trial  # noqa: E402


@dataclass(frozen=True)
class Strategy:
    name: str
    """Row label."""
    sampler: str
    """--sampler."""
    scheduler: str
    """--scheduler."""
    asha_tells: str = "pruned"
    """--asha-tells: what Optuna hears of an ASHA stop."""
    grace_period: int | None = None
    """--grace-period, where the strategy sets its own (bench/search_suite.py)."""
    brackets: int = 1
    """--brackets: ASHA's Hyperband-style brackets (bench/search_suite.py)."""

    def asha_settings(self) -> dict:
        """The ASHA settings this strategy sets itself, as SearchSettings fields."""
        own = {"brackets": self.brackets}
        return own | ({"grace_period": self.grace_period} if self.grace_period else {})


STRATEGIES = [
    Strategy("random", "random", "none"),
    Strategy("random+asha", "random", "asha"),
    Strategy("tpe", "tpe", "none"),
    Strategy("tpe+asha complete", "tpe", "asha", "complete"),
    Strategy("tpe+asha pruned", "tpe", "asha", "pruned"),
    Strategy("gp+asha", "gp", "asha", "pruned"),
    Strategy("bohb+asha", "bohb", "asha", "complete"),  # scores per rung: tells don't matter
]


def is_default(strategy: Strategy) -> bool:
    """The strategy ``orch search`` runs when given no --sampler, --scheduler, --asha-tells
    (what Optuna is told matters only to a sampler that learns: tpe, gp)."""
    from orchestrator.settings import SearchSettings

    fields = SearchSettings.__dataclass_fields__
    return (strategy.sampler, strategy.scheduler) == (
        fields["sampler"].default,
        fields["scheduler"].default,
    ) and (strategy.sampler == "random" or strategy.asha_tells == fields["asha_tells"].default)


class Trace(Callback):
    """Every result the driver receives, in order: (trial, epoch, dev F1, test F1)."""

    def __init__(self):
        self.rows: list[tuple[str, int, float, float]] = []
        self.configs: dict[str, dict] = {}

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.configs[trial.trial_id] = trial.config
        self.rows.append((trial.trial_id, int(result["training_iteration"]),
                          float(result["dev_weighted_f1"]), float(result["test_weighted_f1"])))  # fmt: skip


def label(strategy: Strategy, args) -> str:
    """The row label: the strategy, and the ASHA settings where they are not orch's."""
    from orchestrator.settings import SearchSettings

    defaults = SearchSettings.__dataclass_fields__
    startup = defaults["startup_trials"].default
    name = f"{strategy.name} (orch)" if is_default(strategy) else strategy.name
    if strategy.sampler != "random" and args.startup_trials != startup:
        name = f"{name} [startup {args.startup_trials}]"
    if strategy.scheduler != "asha":
        return name
    changed = [f"{flag} {getattr(args, name):g}" if isinstance(getattr(args, name), float)
               else f"{flag} {getattr(args, name)}"
               for name, flag in (("grace_period", "grace"), ("reduction_factor", "rf"),
                                  ("tie_metric", "tie"))
               if getattr(args, name) != defaults[name].default]  # fmt: skip
    return f"{name} [{', '.join(changed)}]" if changed else name


def run_one(strategy: Strategy, seed: int, concurrency: int, args, root: Path, table) -> dict:
    """One search; its trace summarised (best so far per trial-epoch, the pick)."""
    from orchestrator.settings import SearchSettings
    from orchestrator.tuner import run_search

    name = f"{strategy.sampler}-{strategy.scheduler}-{strategy.asha_tells}-c{concurrency}-s{seed}"
    settings = SearchSettings(
        space=ReplaySpace(args.table), metric="dev_weighted_f1", mode="max",
        trials=args.trials, budget=args.budget, sampler=strategy.sampler, seed=seed,
        startup_trials=args.startup_trials,
        scheduler=strategy.scheduler, asha_tells=strategy.asha_tells,
        grace_period=args.grace_period, reduction_factor=args.reduction_factor,
        tie_metric=args.tie_metric, max_concurrent=concurrency, cpus_per_trial=1.0,
        keep_checkpoints=1, storage=str(root / "ray"), name=name,
        tracking_uri=f"sqlite:///{root / 'mlflow.db'}", live=False,
    )  # fmt: skip
    trace = Trace()
    run_search(replay_trial, settings, callbacks=[trace])
    best, best_test, anytime = -1.0, float("nan"), []
    for _, _, dev, test in trace.rows:
        if dev > best:
            best, best_test = dev, test
        anytime.append(best)
    # Grid points looked at: a sampler that proposes near a good config often lands on the
    # same point of a coarse grid again (a replayed duplicate costs epochs, finds nothing).
    distinct = len({table.key(table.snap(c)) for c in trace.configs.values()})
    return {"strategy": label(strategy, args), "seed": seed, "concurrency": concurrency,
            "best_dev": best, "picked_test": best_test, "epochs": len(trace.rows),
            "trials": len({r[0] for r in trace.rows}), "distinct": distinct, "anytime": anytime}  # fmt: skip


def quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def epochs_to_reach(anytime: list[float], target: float) -> float:
    return next((i + 1 for i, v in enumerate(anytime) if v >= target), float("inf"))


def summarise(runs: list[dict]) -> tuple[list[dict], float]:
    """One row per (strategy, concurrency) and random's median final best (the target)."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for run in runs:
        groups.setdefault((run["strategy"], run["concurrency"]), []).append(run)
    random_runs = [r for (s, _), rs in groups.items() if s == "random" for r in rs]
    # median_low: with an even number of seeds, a score half of random's seeds did reach.
    target = statistics.median_low(r["best_dev"] for r in random_runs) if random_runs else None
    random_spend = statistics.median(r["epochs"] for r in random_runs) if random_runs else None
    rows = []
    for (strategy, c), group in groups.items():
        reach = sorted(epochs_to_reach(r["anytime"], target) for r in group) if target else []
        reached = [x for x in reach if x != float("inf")]
        # The median over seeds, counting a seed that never reached the target as infinite.
        median_reach = statistics.median(reach) if reach else float("inf")
        rows.append({
            "strategy": strategy, "concurrency": c, "seeds": len(group),
            "best_dev": quartiles([r["best_dev"] for r in group]),
            "picked_test": quartiles([r["picked_test"] for r in group]),
            "epochs": quartiles([r["epochs"] for r in group]),
            "distinct": statistics.median(counted) if (counted := [r["distinct"] for r in group
                                                                   if "distinct" in r]) else None,
            "reached": f"{len(reached)}/{len(group)}" if target is not None else "-",
            "ratio": median_reach / random_spend if random_spend else float("nan"),
        })  # fmt: skip
    return rows, target


def print_table(rows: list[dict], target: float | None, oracle: float) -> None:
    def q(t, fmt="{:.2f}"):
        return f"{fmt.format(t[1])} [{fmt.format(t[0])}, {fmt.format(t[2])}]"

    against = (
        "no random run to compare with"
        if target is None
        else (f"random's median final best: {target:.2f}")
    )
    print(f"best dev F1 in the table (oracle): {oracle:.2f}; {against}")
    w = max([24, *(len(r["strategy"]) + 1 for r in rows)])
    head = (f"{'strategy':<{w}}{'c':>3}{'seeds':>6}  {'best dev F1':<22}{'test F1 of pick':<22}"
            f"{'trial-epochs':<20}{'reach':>6}{'ratio':>7}{'grid pts':>9}")  # fmt: skip
    print(head)
    print("-" * len(head))
    for r in rows:
        ratio = "-" if not math.isfinite(r["ratio"]) else f"{r['ratio']:.2f}"
        points = "-" if r["distinct"] is None else f"{r['distinct']:.0f}"
        print(f"{r['strategy']:<{w}}{r['concurrency']:>3}{r['seeds']:>6}  {q(r['best_dev']):<22}"
              f"{q(r['picked_test']):<22}{q(r['epochs'], '{:.0f}'):<20}{r['reached']:>6}"
              f"{ratio:>7}{points:>9}")  # fmt: skip


def plot(runs: list[dict], path: Path, target: float | None = None) -> None:
    """Best dev so far vs cumulative trial-epochs (log scale): median and quartile band over
    seeds; a dashed line at random search's median final best."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(8, 5))
    groups: dict[str, list[list[float]]] = {}
    for run in runs:
        groups.setdefault(f"{run['strategy']} c={run['concurrency']}", []).append(run["anytime"])
    for label, curves in groups.items():
        # A search that stopped sooner keeps its final best for the rest of the x axis.
        width = max(len(c) for c in curves)
        padded = np.array([c + [c[-1]] * (width - len(c)) for c in curves])
        x = np.arange(1, width + 1)
        q1, q2, q3 = np.percentile(padded, [25, 50, 75], axis=0)
        (line,) = ax.plot(x, q2, label=label)
        ax.fill_between(x, q1, q3, color=line.get_color(), alpha=0.15)
    if target is not None:
        ax.axhline(target, color="grey", linestyle="--", linewidth=1,
                   label=f"random's median final best ({target:.2f})")  # fmt: skip
        ax.set_ylim(bottom=target - 6)  # zoomed on the race to the top; the first epochs are off
    ax.set_xscale("log")
    ax.set_xlabel("trial-epochs spent")
    ax.set_ylabel("best dev weighted F1 so far")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[dict]:
    from orchestrator.settings import SearchSettings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, default=REPO / "bench" / "data" / "meld_curves.json")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0,
                        help="Seeds first-seed .. first-seed+seeds-1 (more seeds in another run).")  # fmt: skip
    parser.add_argument("--trials", type=int, default=None, help="Default 40 (--smoke: 16).")
    parser.add_argument("--budget", type=int, default=None, help="Trial-epochs per search.")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[2])
    parser.add_argument("--default-concurrency", type=int, nargs="*", default=[8],
                        help="Extra concurrencies for orch's default only.")  # fmt: skip
    parser.add_argument("--strategies", nargs="+", default=[s.name for s in STRATEGIES])
    # orch search's defaults: a changed default shows in every row label that differs.
    for name, kind in (("grace_period", int), ("reduction_factor", float),
                       ("tie_metric", str), ("startup_trials", int)):  # fmt: skip
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind,
                            default=SearchSettings.__dataclass_fields__[name].default)  # fmt: skip
    parser.add_argument("--smoke", action="store_true", help="Small table, 3 seeds, 16 trials.")
    parser.add_argument("--png", type=Path, default=None, help="Draw the anytime curves.")
    parser.add_argument("--json", type=Path, default=None, help="Write every search's trace.")
    parser.add_argument("--from-json", type=Path, nargs="+", default=None,
                        help="Summarise these saved traces instead of searching.")  # fmt: skip
    parser.add_argument("--labels", nargs="+", default=None,
                        help="With --from-json: only the rows with these labels.")  # fmt: skip
    args = parser.parse_args(argv)
    if args.smoke:
        args.table = REPO / "tests" / "data" / "tiny_curves.json"
        args.seeds = min(args.seeds, 3)
    if args.budget is not None and args.trials is not None:
        raise SystemExit("--trials and --budget both say when a search ends; give one")
    if args.budget is None:  # a budget ends a search by itself: no trial count beside it
        args.trials = args.trials or (16 if args.smoke else 40)
    unknown = set(args.strategies) - {s.name for s in STRATEGIES}
    if unknown:
        raise SystemExit(f"--strategies: unknown {', '.join(sorted(unknown))}")
    table = load_table(args.table)
    if args.from_json:
        return summarise_saved(args, table)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("orchestrator.tracking.reports").setLevel(logging.ERROR)  # no checkpoints
    warnings.filterwarnings("ignore")  # Optuna's experimental-feature notices, per search

    from orchestrator.resources import connect_ray
    from orchestrator.tracking import reports as search_reports

    search_reports.log_plots = lambda recorder, study: None  # per search, not per report

    connect_ray(num_cpus=max([*args.concurrency, *args.default_concurrency]))
    plan = [(s, c) for s in STRATEGIES if s.name in args.strategies for c in args.concurrency]
    plan += [(s, c) for s in STRATEGIES if is_default(s) and s.name in args.strategies
             for c in args.default_concurrency if c not in args.concurrency]  # fmt: skip
    runs, started = [], time.perf_counter()
    # MLflow's sqlite store commits once per reported epoch: on tmpfs that costs ~9 ms
    # instead of ~25 ms per report on this machine's disk (bench/search_overhead.py --per-report).
    shm = "/dev/shm" if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(prefix="orch-efficiency-", dir=shm) as tmp:
        for strategy, c in plan:
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                runs.append(run_one(strategy, seed, c, args, Path(tmp), table))
    wall = time.perf_counter() - started
    size = f"budget {args.budget} trial-epochs" if args.budget else f"{args.trials} trials"
    print(f"table {args.table.name}: {len(table.configs)} configs x {table.epochs} epochs; "
          f"{size} per search, {args.seeds} seeds, ASHA grace {args.grace_period} rf "
          f"{args.reduction_factor:g} tie {args.tie_metric}, TPE/GP startup "
          f"{args.startup_trials}; {len(runs)} searches in "
          f"{wall:.0f} s")  # fmt: skip
    rows, target = summarise(runs)
    print_table(rows, target, table.best())
    if args.png:
        plot(runs, args.png, target)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "rows": rows, "runs": runs}, indent=1))  # fmt: skip
    return rows


def summarise_saved(args, table) -> list[dict]:
    """The table (and ``--png``) of the searches saved in ``--from-json`` files."""
    runs = [run for path in args.from_json for run in json.loads(path.read_text())["runs"]
            if args.labels is None or run["strategy"] in args.labels]  # fmt: skip
    print(f"table {args.table.name}: {len(table.configs)} configs x {table.epochs} epochs; "
          f"{len(runs)} searches from {', '.join(p.name for p in args.from_json)}")  # fmt: skip
    rows, target = summarise(runs)
    print_table(rows, target, table.best())
    if args.png:
        plot(runs, args.png, target)
    return rows


if __name__ == "__main__":
    main()
