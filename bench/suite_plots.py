"""One plot per benchmark of the search suite: each strategy's best-so-far against trial-epochs.

    python bench/suite_plots.py bench/data/search_suite/suite_seed*.json \
        bench/data/search_suite/field_suite_seeds*.json --out bench/data/search_suite/plots

Reads the traces ``bench/search_suite.py --json`` and ``bench/field_optimisers.py`` save (a
search saved twice counts once, as in ``search_suite.py --from-json``). A curve is the median
over seeds of the best validation score seen after each trial-epoch, with its quartiles shaded;
the dashed line is the reference strategy's median final best, the target of the suite's
"ratio" column. The first ``--skip`` of the budget is cut from the y-range, where every
strategy is still near its first random config.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np


def load_runs(paths: list[Path]) -> list[dict]:
    """Every saved search, keyed as search_suite.py keys them (a rerun part replaces)."""
    merged = {}
    for path in paths:
        for run in json.loads(path.read_text())["runs"]:
            merged[(run["benchmark"], run["strategy"], run["seed"], run["concurrency"])] = run
    return list(merged.values())


def group(runs: list[dict]) -> dict[str, dict[str, list[dict]]]:
    """benchmark -> strategy -> its runs (one per seed)."""
    out: dict[str, dict[str, list[dict]]] = {}
    for run in runs:
        out.setdefault(run["benchmark"], {}).setdefault(run["strategy"], []).append(run)
    return out


def curve(anytime: list[float], budget: int) -> np.ndarray:
    """Best so far after trial-epochs 1..budget: the trace cut at the budget, or held at its
    last value when the search spent less (NaN before the first report)."""
    out = np.full(budget, np.nan)
    values = np.asarray(anytime[:budget], dtype=float)
    out[: len(values)] = values
    if len(values):
        out[len(values) :] = values[-1]
    return out


def quartile_curves(runs: list[dict], budget: int) -> np.ndarray:
    """(3, budget): the 25th, 50th and 75th percentile over the runs, per trial-epoch."""
    stacked = np.stack([curve(r["anytime"], budget) for r in runs])
    return np.nanpercentile(stacked, [25, 50, 75], axis=0)


def plot_benchmark(
    name: str, by_strategy: dict[str, list[dict]], reference: str, out: Path, skip: float
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for seeds in by_strategy.values() for r in seeds]
    budget = int(statistics.median(r["budget"] for r in runs))
    x = np.arange(1, budget + 1)
    order = sorted(by_strategy, key=lambda s: -statistics.median(r["best"] for r in by_strategy[s]))
    fig, ax = plt.subplots(figsize=(8, 5))
    colours = plt.get_cmap("tab20").colors  # 20 before a colour repeats (tab10: 10)
    low = []
    for i, strategy in enumerate(order):
        seeds = by_strategy[strategy]
        q25, q50, q75 = quartile_curves(seeds, budget)
        style = "--" if seeds[0].get("producer") else "-"  # the field's optimisers dashed
        colour = colours[2 * i % 20 + (2 * i // 20) % 2]  # dark shades first, then light
        ax.plot(x, q50, style, lw=1.4, color=colour, label=f"{strategy} ({len(seeds)} seeds)")
        ax.fill_between(x, q25, q75, color=colour, alpha=0.10, lw=0)
        low.append(np.nanmin(q25[int(skip * budget) :]))
    if reference in by_strategy:
        target = statistics.median_low(r["best"] for r in by_strategy[reference])
        ax.axhline(target, color="grey", ls=":", lw=1, label=f"{reference}'s median final best")
    top = max(np.nanmax(quartile_curves(g, budget)[2]) for g in by_strategy.values())
    span = top - min(low)
    ax.set_ylim(min(low) - 0.05 * span, top + 0.05 * span)
    ax.set_xlim(1, budget)
    ax.set_xlabel("trial-epochs spent")
    ax.set_ylabel("best validation score so far (median over seeds, quartiles shaded)")
    ax.set_title(f"{name}: budget {budget} trial-epochs")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    path = out / f"{name.replace(':', '_')}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path, nargs="+", help="Saved suite traces.")
    parser.add_argument("--out", type=Path, required=True, help="Folder for the PNGs.")
    parser.add_argument("--reference", default="random")
    parser.add_argument("--skip", type=float, default=0.1,
                        help="Share of the budget left out of the y-range.")  # fmt: skip
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.json if not p.is_file()]
    if missing:
        raise SystemExit(f"error: no such file: {', '.join(missing)}")
    args.out.mkdir(parents=True, exist_ok=True)
    paths = [plot_benchmark(name, per, args.reference, args.out, args.skip)
             for name, per in group(load_runs(args.json)).items()]  # fmt: skip
    for path in paths:
        print(path)
    return paths


if __name__ == "__main__":
    main()
