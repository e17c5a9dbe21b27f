"""Which strategy should orch default to? The search suite's records against issue 19's goal.

    python bench/suite_verdict.py bench/data/search_suite/suite_seed*.json \
        bench/data/search_suite/suite_more_seed*.json bench/data/search_suite/field_suite_seeds*.json

For each candidate (``--candidates``, default every strategy of orch's own runs) it prints:

- its mean rank of the medians over the suite, among orch's strategies only (the field's
  optimisers have no MELD row, and the default can only be one of orch's);
- how often it has the best mean rank when each (benchmark, strategy)'s seeds are resampled
  with replacement (``--bootstrap`` resamples): the margin the seeds can see;
- the goal's three checks: a higher median than both ``--versus`` strategies (random + ASHA and
  TPE + ASHA) on how many LCBench tasks; its largest gap below the best median of any strategy
  (the field's included) on any benchmark; and the median over benchmarks of its ratio, the
  share of the budget its median seed needed to reach the reference's median final best
  (``inf``: it did not, on that benchmark).
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: bench is there

from bench.suite_plots import group, load_runs  # noqa: E402

VERSUS = ("random+asha", "tpe+asha")
DEFAULT = "random+asha"  # orch's default before issue 19: what a new one must beat
GOAL = {"wins": 6, "gap": 0.3, "ratio": 0.15}
"""Issue 19: higher median than both VERSUS on >= 6 of 8 LCBench tasks, never more than 0.3
below the best median, the median benchmark's ratio <= 0.15."""


def medians_of(grouped: dict[str, dict[str, list[dict]]]) -> dict[str, dict[str, float]]:
    """benchmark -> strategy -> median final best over its seeds."""
    return {b: {s: statistics.median(r["best"] for r in rs) for s, rs in per.items()}
            for b, per in grouped.items()}  # fmt: skip


def own_strategies(runs: list[dict]) -> list[str]:
    """orch's strategies: those not run by the field's optimisers (records with a producer)."""
    return sorted({r["strategy"] for r in runs if not r.get("producer")})


def mean_ranks(medians: dict[str, dict[str, float]], strategies: list[str]) -> dict[str, float]:
    """Mean over benchmarks of each strategy's rank among ``strategies`` (1: the highest
    median; ties share the mean of their ranks). Benchmarks lacking one of them are skipped."""
    ranks: dict[str, list[float]] = {s: [] for s in strategies}
    for per_strategy in medians.values():
        if not all(s in per_strategy for s in strategies):
            continue
        values = sorted((per_strategy[s] for s in strategies), reverse=True)
        for s in strategies:
            tied = [i + 1 for i, v in enumerate(values) if v == per_strategy[s]]
            ranks[s].append(statistics.mean(tied))
    return {s: statistics.mean(r) if r else math.nan for s, r in ranks.items()}


def bootstrap_best(
    grouped: dict[str, dict[str, list[dict]]],
    strategies: list[str],
    n: int,
    seed: int = 0,
    against: str | None = None,
) -> dict[str, float] | tuple[dict[str, float], dict[str, float]]:
    """Share of ``n`` seed resamples in which each strategy has the best mean rank (a tie for
    best is split between those tied). With ``against``, also each strategy's share of
    resamples in which its mean rank is better than ``against``'s (a tie counts half)."""
    rng = random.Random(seed)
    wins = dict.fromkeys(strategies, 0.0)
    ahead = dict.fromkeys(strategies, 0.0)
    for _ in range(n):
        medians = {
            bench: {s: statistics.median(rng.choices([r["best"] for r in rs], k=len(rs)))
                    for s, rs in per.items() if s in strategies}
            for bench, per in grouped.items()
        }  # fmt: skip
        ranks = mean_ranks(medians, strategies)
        low = min(ranks.values())
        best = [s for s, r in ranks.items() if r == low]
        for s in best:
            wins[s] += 1 / len(best)
        for s in strategies if against in ranks else ():
            ahead[s] += (
                1.0 if ranks[s] < ranks[against] else 0.5 if ranks[s] == ranks[against] else 0
            )
    shares = {s: w / n for s, w in wins.items()}
    return shares if against is None else (shares, {s: a / n for s, a in ahead.items()})


def ratio(runs: list[dict], target: float) -> float:
    """Trial-epochs the median seed needed to reach ``target``, over the budget (inf: never)."""
    reach = [next((i + 1 for i, v in enumerate(r["anytime"]) if v >= target), math.inf)
             for r in runs]  # fmt: skip
    return statistics.median(reach) / statistics.median(r["budget"] for r in runs)


def verdict(runs: list[dict], candidates: list[str] | None, reference: str, n: int) -> list[dict]:
    grouped = group(runs)
    orch = own_strategies(runs)
    candidates = candidates or orch
    medians = medians_of(grouped)
    ranks = mean_ranks(medians, orch)
    shares, ahead = bootstrap_best(grouped, orch, n, against=DEFAULT) if n else ({}, {})
    rows = []
    for strategy in candidates:
        wins, gaps, ratios = 0, {}, []
        for bench, per in grouped.items():
            if strategy not in per:
                continue
            mine = medians[bench][strategy]
            gaps[bench] = max(medians[bench].values()) - mine
            if bench.startswith("lcbench:") and all(
                v in per and mine > medians[bench][v] for v in VERSUS if v != strategy
            ):
                wins += 1
            if reference in per:
                target = statistics.median_low(r["best"] for r in per[reference])
                ratios.append(ratio(per[strategy], target))
        worst = max(gaps, key=gaps.get)
        rows.append({"strategy": strategy, "mean_rank": ranks.get(strategy, math.nan),
                     "p_best": shares.get(strategy, math.nan),
                     "p_ahead": ahead.get(strategy, math.nan),
                     "tasks": sum(b.startswith("lcbench:") for b in gaps), "wins": wins,
                     "worst_gap": gaps[worst], "worst_at": worst,
                     "median_ratio": statistics.median(ratios) if ratios else math.nan,
                     "meets_goal": wins >= GOAL["wins"] and gaps[worst] <= GOAL["gap"]
                     and ratios and statistics.median(ratios) <= GOAL["ratio"]})  # fmt: skip
    return sorted(rows, key=lambda r: (math.isnan(r["mean_rank"]), r["mean_rank"]))


def markdown(runs: list[dict], reference: str) -> str:
    """The README's table: per strategy, its median final best per benchmark, the median
    benchmark's ratio, and its mean rank among all strategies over the LCBench tasks and
    among orch's own over the whole suite."""
    grouped = group(runs)
    benches = sorted(grouped, key=lambda b: (b == "meld", int(b.split(":")[1]) if ":" in b else 0))
    medians = medians_of(grouped)
    strategies = sorted({r["strategy"] for r in runs})
    orch = own_strategies(runs)
    lcbench = {b: m for b, m in medians.items() if b.startswith("lcbench:")}
    all_ranks, orch_ranks = mean_ranks(lcbench, strategies), mean_ranks(medians, orch)
    ratios = {}
    for s in strategies:
        per = [ratio(grouped[b][s], statistics.median_low(r["best"] for r in grouped[b][reference]))
               for b in benches if s in grouped[b] and reference in grouped[b]]  # fmt: skip
        ratios[s] = statistics.median(per) if per else math.nan
    head = ["strategy", *(b.replace("lcbench:", "") for b in benches), "ratio (median task)",
            "rank, all (LCBench)", "rank, orch (suite)"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def order(s):  # by the LCBench rank, then orch's (a suite of MELD alone has only that)
        return tuple(math.inf if math.isnan(r) else r
                     for r in (all_ranks[s], orch_ranks.get(s, math.nan)))  # fmt: skip

    for s in sorted(strategies, key=order):
        cells = [f"**{m:.2f}**" if (m := medians[b].get(s)) == max(medians[b].values())
                 else f"{m:.2f}" if m is not None else "-" for b in benches]  # fmt: skip
        orch_rank = f"{orch_ranks[s]:.2f}" if s in orch_ranks else "-"
        lines.append("| " + " | ".join([s, *cells, f"{ratios[s]:.2f}", f"{all_ranks[s]:.2f}",
                                        orch_rank]) + " |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path, nargs="+", help="Saved suite traces.")
    parser.add_argument("--candidates", nargs="+", default=None)
    parser.add_argument("--reference", default="random")
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--markdown", action="store_true", help="Also print the README table.")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.json if not p.is_file()]
    if missing:
        raise SystemExit(f"error: no such file: {', '.join(missing)}")
    runs = load_runs(args.json)
    rows = verdict(runs, args.candidates, args.reference, args.bootstrap)
    w = max(len(r["strategy"]) for r in rows) + 2
    print(f"{'strategy':<{w}}{'mean rank':>10}{'P(best)':>9}{'P(>' + DEFAULT + ')':>18}{'wins':>7}  "
          f"{'worst gap (where)':<30}{'median ratio':>13}  goal")  # fmt: skip
    for r in rows:
        where = f"{r['worst_gap']:.2f} ({r['worst_at']})"
        print(f"{r['strategy']:<{w}}{r['mean_rank']:>10.2f}{r['p_best']:>9.2f}{r['p_ahead']:>18.2f}"
              f"{r['wins']:>4}/{r['tasks']:<2} {where:<30}{r['median_ratio']:>13.2f}  "
              f"{'met' if r['meets_goal'] else 'not met'}")  # fmt: skip
    print(f"mean rank and P(best) among orch's own strategies ({args.bootstrap} seed resamples); "
          f"wins: tasks with a higher median than {' and '.join(VERSUS)}; goal: wins >= "
          f"{GOAL['wins']}, gap <= {GOAL['gap']}, median ratio <= {GOAL['ratio']}")  # fmt: skip
    if args.markdown:
        print("\n" + markdown(runs, args.reference))
    return rows


if __name__ == "__main__":
    main()
