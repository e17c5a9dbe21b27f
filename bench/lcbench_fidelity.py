"""How well an LCBench task's early epochs rank configs: the case for and against ASHA there.

    python bench/lcbench_fidelity.py --configs 500 --json bench/data/search_suite/lcbench_fidelity.json

For each development task, ``--configs`` configs drawn at random from the space (seeded) are
replayed through the surrogate (trial epoch e = surrogate epoch e + 1, as in the suite), and
each ASHA rung of orch's default (epochs 1, 3, 9, 27; grace 1, reduction factor 3) is judged
against the config's best val accuracy over all 51 epochs (what a search keeps):

- Spearman's rank correlation between the score at the rung and that final best;
- kept: the share of the final top 5 % that ASHA's cut at that rung (the top third) keeps.

A task where epoch 1 ranks poorly (low correlation, top configs cut) is one where stopping
after one epoch throws the best configs away, and a grace period or brackets should pay.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.lcbench import DEV_TASKS, EPOCHS, METRIC, LCBenchSpace, surrogate  # noqa: E402

RUNGS = (1, 3, 9, 27)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Rank correlation (average ranks for ties)."""

    def ranks(x):
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x))
        for value in np.unique(x):  # ties share their mean rank
            tied = x == value
            r[tied] = r[tied].mean()
        return r

    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def task_table(task: str, configs: int, seed: int, folder=None) -> dict:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = LCBenchSpace(task, folder)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    model = surrogate(space.folder)
    curves = []
    for _ in range(configs):
        trial = study.ask()
        space(trial)
        curves.append(model.curves(task, trial.params, EPOCHS)[METRIC])
    curves = np.asarray(curves)  # (configs, 51)
    final = curves.max(axis=1)
    top = final >= np.quantile(final, 0.95)
    out = {"task": task, "configs": configs, "final_best": float(final.max())}
    for rung in RUNGS:
        at = curves[:, rung - 1]
        kept = at >= np.quantile(at, 2 / 3)  # ASHA keeps the top 1/rf = 1/3
        out[f"spearman_e{rung}"] = round(spearman(at, final), 3)
        out[f"top5_kept_e{rung}"] = round(float((kept & top).sum() / top.sum()), 3)
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(DEV_TASKS))
    parser.add_argument("--configs", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lcbench-dir", default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.configs < 20:
        raise SystemExit("error: --configs must be >= 20")
    rows = [task_table(t, args.configs, args.seed, args.lcbench_dir) for t in args.tasks]
    head = "task      " + "".join(f"  rho e{r:<3}" for r in RUNGS)
    head += "".join(f" kept e{r:<3}" for r in RUNGS)
    print(head)
    for row in rows:
        print(f"{row['task']:<10}" + "".join(f"{row[f'spearman_e{r}']:>9.2f}" for r in RUNGS)
              + "".join(f"{row[f'top5_kept_e{r}']:>10.2f}" for r in RUNGS))  # fmt: skip
    print("rho: Spearman, rung score vs final best; kept: share of the final top 5 % in the "
          "rung's top third")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"command": " ".join(["python", *sys.argv]),
                                         "rows": rows}, indent=1))  # fmt: skip
    return rows


if __name__ == "__main__":
    main()
