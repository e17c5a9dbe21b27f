"""Bytes a search leaves on disk, before and after issue 18, measured and at the paper's size.

    python bench/checkpoint_disk.py --old /tmp/old             # measure both trees
    python bench/checkpoint_disk.py --old /tmp/old --trials 4 --max-dialogues 40
    python bench/checkpoint_disk.py --estimate-only            # the paper-size table only

Measured: the same small search (frozen MiniLM on MELD, ``--trials`` trials, seed 0) runs
once with this tree and once with ``--old`` (a ``git worktree add /tmp/old <commit>`` of
the code before the change, run with this venv through PYTHONPATH), each in its own empty
project folder; then every file under its ``mlruns/`` is summed (Ray's checkpoints, MLflow's
artifacts and the sqlite store), and copies of one ``model.pt`` are counted by hash.

Estimated: the paper's model (BERT-base, IEMOCAP text+audio+visual, 238 M parameters) at 40
trials, with the shape of the user's 40-trial search in issue 18 (51 checkpoints kept: ~35
trials stopped by ASHA after one epoch keep 1, the rest 2 or 3 before trimming). Before:
every kept checkpoint whole (fp32 weights + AdamW state) and the best twice more in MLflow.
After: each trial its best checkpoint's weights only, at its training precision (the
paper space trains in bf16 on an 11 GB budget: fp32 does not fit MELD's worst batch), the
best once; no optimizer state once the search has ended.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MELD = REPO.parent / "shared" / "data" / "meld"
PAPER_PARAMS = 238_351_622  # README: the full-size configuration (IEMOCAP, T+A+V)
USER_CHECKPOINTS = 51  # kept by today's rules in the user's 40-trial search (issue 18)


def folder_bytes(root: Path) -> dict[str, int]:
    """Bytes under ``root`` by kind: model.pt, trainer.pt, other checkpoint files, rest."""
    kinds = {"model.pt": 0, "trainer.pt": 0, "ray other": 0, "mlflow other": 0}
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        size = path.stat().st_size
        if path.name in ("model.pt", "trainer.pt"):
            kinds[path.name] += size
        elif "ray" in path.relative_to(root).parts[:1]:
            kinds["ray other"] += size
        else:
            kinds["mlflow other"] += size
    return kinds


def copies(root: Path, name: str) -> int:
    """The most copies any one ``name`` file has under ``root`` (by content)."""
    seen: dict[str, int] = {}
    for path in root.rglob(name):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        seen[digest] = seen.get(digest, 0) + 1
    return max(seen.values(), default=0)


def run_search(code: Path, args) -> dict:
    """One ``orch search`` of ``code`` in a fresh project folder; its bytes on disk."""
    project = Path(tempfile.mkdtemp(prefix="orch-disk-bench-"))
    command = [
        sys.executable, "-c", "from orchestrator.cli import app; app()", "search",
        "--dataset", "meld", "--data-dir", str(args.data_dir), "--encoder", "minilm",
        "--freeze-encoder", "--max-dialogues", str(args.max_dialogues),
        "--trials", str(args.trials), "--epochs", str(args.epochs), "--seed", "0",
        "--max-concurrent", "2", "--name", "bench", "--json",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(code), "ORCH_MLRUNS": str(project / "mlruns")}
    start = time.time()
    done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"search of {code} failed:\n{done.stderr[-3000:]}")
    mlruns = project / "mlruns"
    kinds = folder_bytes(mlruns)
    ray = mlruns / "ray" / "bench"
    return {
        "code": str(code),
        "wall_s": round(time.time() - start, 1),
        "bytes": sum(kinds.values()),
        "by_kind": kinds,
        "checkpoints": len(list(ray.glob("*/checkpoint_*"))),
        "trainer_pt_files": len(list(mlruns.rglob("trainer.pt"))),
        "best_model_pt_copies": copies(mlruns, "model.pt"),
        "project": str(project),
    }


def paper_estimate() -> dict:
    """Before/after bytes for the paper's model at 40 trials (see the module docstring)."""
    weights32 = PAPER_PARAMS * 4
    resume = PAPER_PARAMS * 8  # AdamW's two fp32 moments
    before = USER_CHECKPOINTS * (weights32 + resume) + 2 * (weights32 + resume)
    out = {"parameters": PAPER_PARAMS, "before_bytes": before}
    for precision, width in (("bf16", 2), ("fp32", 4)):
        after = 40 * PAPER_PARAMS * width  # each trial's best, weights only; best once
        out[f"after_{precision}_bytes"] = after
        out[f"after_{precision}_ratio"] = after / before
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, help="a checkout of the code before the change")
    parser.add_argument("--data-dir", type=Path, default=MELD)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-dialogues", type=int, default=40)
    parser.add_argument("--estimate-only", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    gb = lambda b: f"{b / 1e9:.2f} GB"  # noqa: E731
    results: dict = {"paper_40_trials": paper_estimate()}
    if not args.estimate_only:
        runs = {"after": run_search(REPO, args)}
        if args.old:
            runs["before"] = run_search(args.old, args)
        results["measured"] = runs
        for label, run in runs.items():
            print(
                f"{label:6s} {run['bytes'] / 1e6:8.1f} MB under mlruns/ "
                f"(model.pt {run['by_kind']['model.pt'] / 1e6:.1f} MB, trainer.pt "
                f"{run['by_kind']['trainer.pt'] / 1e6:.1f} MB), {run['checkpoints']} "
                f"checkpoints in Ray's storage, {run['trainer_pt_files']} trainer.pt, best "
                f"model.pt x{run['best_model_pt_copies']}; {run['wall_s']} s"
            )
        if "before" in runs:
            print(f"after / before: {runs['after']['bytes'] / runs['before']['bytes']:.3f}")
    paper = results["paper_40_trials"]
    print(
        f"paper model (238 M params), 40 trials: before {gb(paper['before_bytes'])}; after "
        f"{gb(paper['after_bf16_bytes'])} in bf16 ({paper['after_bf16_ratio']:.1%} of before), "
        f"{gb(paper['after_fp32_bytes'])} in fp32 ({paper['after_fp32_ratio']:.1%})"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
