"""Merge the traces that parallel runs of bench/search_efficiency.py wrote (--json) into one
file per comparison, renaming the labels of runs made before the default changed:
"tpe+asha pruned (orch)" was orch's default then and is "tpe+asha pruned" now; random + ASHA
is the default now and is marked "(orch)". Usage: python combine.py OUT.json IN.json ..."""

import json
import sys
from pathlib import Path


def relabel(label: str) -> str:
    label = label.replace("tpe+asha pruned (orch)", "tpe+asha pruned")
    if label.startswith("random+asha") and "(orch)" not in label:
        label = label.replace("random+asha", "random+asha (orch)", 1)
    return label


def main(out: str, *paths: str) -> None:
    runs, sources = [], []
    for path in paths:
        data = json.loads(Path(path).read_text())
        sources.append(
            {"file": Path(path).name, "args": data["args"], "searches": len(data["runs"])}
        )
        for run in data["runs"]:
            runs.append({**run, "strategy": relabel(run["strategy"])})
    Path(out).write_text(json.dumps({"sources": sources, "runs": runs}))


if __name__ == "__main__":
    main(*sys.argv[1:])
