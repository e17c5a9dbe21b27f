"""Export a finished search from an MLflow store into small committed files for RESULTS.md.

    python bench/export_search.py --tracking-uri sqlite:///PATH/mlflow.db --name NAME \
        --out results/meld/frozen_search.json --plot results/meld/frozen_search_history.png

Writes the parent's params and metrics, every trial's state, params, per-epoch dev/test
weighted F1 and dev loss, the best trial as `orch best --json` reports it, and draws the
search's optimization history (every trial, pruned ones included) from those curves.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args()

    from orchestrator.best import best_trial
    from orchestrator.tracking.runs import STATE_TAG, TRIAL_TAG, open_search, trial_runs

    client, experiment_id, parent = open_search(args.tracking_uri, args.name)
    trials = []
    for run in trial_runs(client, experiment_id, parent.info.run_id):
        history = {}
        for key in ("dev_weighted_f1", "test_weighted_f1", "dev_loss"):
            for m in client.get_metric_history(run.info.run_id, key):
                history.setdefault(m.step, {})[key] = m.value
        trials.append({
            "trial_id": run.data.tags.get(TRIAL_TAG),
            "state": run.data.tags.get(STATE_TAG),
            "params": {k: v for k, v in run.data.params.items() if k not in ("cache_dir", "data_dir")},
            "epochs": [{"epoch": step, **values} for step, values in sorted(history.items())],
            "seconds": (run.info.end_time - run.info.start_time) / 1000 if run.info.end_time else None,
            "start": run.info.start_time,
        })  # fmt: skip
    best = best_trial(args.tracking_uri, name=args.name).to_dict()
    best["params"] = {k: v for k, v in best["params"].items() if k not in ("cache_dir", "data_dir")}
    export = {
        "search": args.name,
        "params": dict(parent.data.params),
        "metrics": dict(parent.data.metrics),
        "wall_s": (parent.info.end_time - parent.info.start_time) / 1000
        if parent.info.end_time
        else None,
        "best": best,
        "trials": sorted(trials, key=lambda t: t["trial_id"] or ""),
    }
    args.out.write_text(json.dumps(export, indent=1))
    if args.plot:
        from orchestrator.history_plot import TrialCurve, draw_history

        metric, mode = best["metric"], best["mode"]
        ordered = sorted(trials, key=lambda t: t["start"])
        curves = [
            TrialCurve(t["state"], tuple(e[metric] for e in t["epochs"] if metric in e))
            for t in ordered
        ]
        draw_history(curves, metric, mode, args.plot)


if __name__ == "__main__":
    main()
