"""A tabular benchmark of DialogueTRM: every config of a discrete grid trained once for the
full epoch budget, its per-epoch dev/test weighted F1 and dev loss recorded in one JSON.

    python bench/tabulate_curves.py                          # MELD, frozen MiniLM: the real one
    python bench/tabulate_curves.py --workers 2              # two configs at a time
    python bench/tabulate_curves.py --grid tiny --dataset synthetic --max-dialogues 40 \\
        --epochs 6 --set encoder=tiny --set hidden_size=64 --out tests/data/tiny_curves.json

The table lets ``orchestrator.replay`` replay a search in seconds through the real
``run_search`` (``bench/search_efficiency.py``): a config sampled from the space is snapped
to the grid and its recorded curve is reported epoch by epoch.

Every config is trained with the project's own code (``trainable.run.prepare`` and the
Trainer, as a search trial is), with the fidelity's constants (default: those of
``bench/spaces/meld_frozen.toml``: frozen MiniLM, hidden 384, batch 4, max length 256) and
``--seed``. Test weighted F1 is measured at every epoch (a search trial measures it only when
dev improves), so a replay can say what any epoch a search picked scores on test.

Resumable: each finished config is added to ``--out`` at once (written to a temporary file,
then renamed over it, so a kill never leaves half a table); a rerun with the same grid,
constants and epochs trains only the missing configs, in the same seeded order (a partial
table covers the grid evenly). Provenance (command, seed, code commit, machine, summed wall
and CPU time) is kept in the table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import shlex
import subprocess
import sys
import time
import tomllib
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FORMAT = 1

# The MELD space's five sampled dimensions (bench/spaces/meld_frozen.toml), a few values
# each across their ranges: 5 x 2 x 3 x 2 x 2 = 120 configs. What a config costs is set by
# its intra layers (measured, 1 thread, 10 epochs on full MELD: 1 layer ~50 s, 3 ~125 s,
# 6 ~245 s; K and dropout cost nothing with the encoder cached), so a first grid with
# intra in {1, 3, 6} and four K values (240 configs) needed ~5 h on 2 cores; this one keeps
# every dimension but the expensive values, and K takes three of the frozen space's values
# (each K needs one cached pass of MiniLM over MELD).
GRIDS = {
    "meld": {
        "lr": {"values": [3e-5, 1e-4, 3e-4, 1e-3, 3e-3], "log": True},
        "warmup_steps": {"values": [0, 1000]},
        "k": {"values": [1, 5, 13]},
        "intra_layers": {"values": [1, 2]},
        "dropout": {"values": [0.1, 0.3]},
    },
    # For the tests and the smoke comparison: 3 x 2 x 2 x 2 x 2 = 48 configs of a tiny model.
    "tiny": {
        "lr": {"values": [3e-4, 2e-3, 1e-2], "log": True},
        "warmup_steps": {"values": [0, 20]},
        "k": {"values": [1, 3]},
        "intra_layers": {"values": [1, 2]},
        "dropout": {"values": [0.0, 0.3]},
    },
}
CURVES = ("dev_weighted_f1", "dev_loss", "test_weighted_f1", "train_loss")


def config_key(params: dict, grid: dict) -> str:
    """The table's key of a grid point: ``name=value`` in the grid's order."""
    return ",".join(f"{name}={params[name]!r}" for name in grid)


def grid_points(grid: dict, seed: int) -> list[dict]:
    """Every point of ``grid``, in a seeded shuffled order (a partial table is spread out)."""
    names = list(grid)
    points = [dict(zip(names, values, strict=True)) for values in
              itertools.product(*(grid[n]["values"] for n in names))]  # fmt: skip
    random.Random(seed).shuffle(points)
    return points


def train_config(params: dict, constants: dict, setup: dict) -> dict:
    """Train one grid point for the whole budget; its per-epoch curves and seconds.

    Runs in a worker process with one torch thread (as a 1-CPU search trial does)."""
    import torch

    from trainable.tune_trainable import split_config

    torch.set_num_threads(1)
    from trainable.run import prepare

    flat = {**constants, **params, "epochs": setup["epochs"], "seed": setup["seed"]}
    model_cfg, train_cfg, _ = split_config({**flat, "device": "cpu"})
    started, cpu = time.perf_counter(), time.process_time()
    trainer = prepare(
        setup["dataset"], model_cfg, train_cfg, data_dir=setup["data_dir"],
        max_dialogues=setup["max_dialogues"], cache_dir=Path(setup["cache_dir"]),
    )  # fmt: skip
    curves: dict[str, list[float]] = {name: [] for name in CURVES}

    def on_epoch(row: dict, t) -> None:
        test = row.get("test_weighted_f1")
        if not row["is_best"]:  # the Trainer tests only improved epochs: these weights
            test = t.evaluate("test")["weighted_f1"]
        values = {**row, "test_weighted_f1": test}
        for name in CURVES:
            curves[name].append(round(float(values[name]), 6))

    trainer.fit(on_epoch=on_epoch)
    return {
        "params": params,
        "curves": curves,
        "seconds": round(time.perf_counter() - started, 2),
        "cpu_seconds": round(time.process_time() - cpu, 2),
    }


def load_table(path: Path, header: dict) -> dict:
    """The table at ``path`` to continue, or a new one; an existing table built with another
    grid, fidelity or epoch count is an error (a mixed table would compare unlike configs)."""
    if not path.exists():
        return {**header, "provenance": {"runs": [], "wall_s": 0.0, "cpu_s": 0.0}, "configs": {}}
    table = json.loads(path.read_text())
    for key in ("format", "dataset", "max_dialogues", "epochs", "seed", "grid", "constants"):
        if table.get(key) != header[key]:
            raise SystemExit(
                f"{path}: its {key} is {table.get(key)!r}, this command's is {header[key]!r}; "
                "use another --out to build a different table"
            )
    return table


def save_table(table: dict, path: Path) -> None:
    """Write ``table`` over ``path`` atomically: a temporary file renamed over it."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(table, indent=1, sort_keys=False) + "\n")
    os.replace(tmp, path)


def parse_value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def fidelity_constants(args) -> dict:
    constants = tomllib.loads(Path(args.constants_from).read_text()).get("constants", {})
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected NAME=VALUE")
        constants[name] = parse_value(value)
    return constants


def git_commit() -> str:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                           capture_output=True, text=True).stdout.strip()  # fmt: skip
    return done.stdout.strip() + ("-dirty" if dirty else "")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="meld")
    parser.add_argument("--data-dir", default=None, help="Default: the dataset's lookup.")
    parser.add_argument("--max-dialogues", type=int, default=None, help="Per split (subset).")
    parser.add_argument("--grid", choices=sorted(GRIDS), default="meld")
    parser.add_argument("--epochs", type=int, default=10, help="The full budget per config.")
    parser.add_argument("--seed", type=int, default=0, help="Training seed (every config).")
    parser.add_argument(
        "--constants-from", default=str(REPO / "bench" / "spaces" / "meld_frozen.toml"),
        help="A space file whose [constants] fix the fidelity (encoder, widths, batch).",
    )  # fmt: skip
    parser.add_argument("--set", action="append", default=[], help="NAME=VALUE over those.")
    parser.add_argument("--workers", type=int, default=1, help="Configs trained at once.")
    parser.add_argument("--limit", type=int, default=None, help="Train at most N configs now.")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "data" / "meld_curves.json")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.workers < 1:
        raise SystemExit("--epochs and --workers must be >= 1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from trainable.features import default_cache_dir

    grid = GRIDS[args.grid]
    constants = fidelity_constants(args)
    overlap = sorted(set(constants) & set(grid))
    if overlap:
        raise SystemExit(f"--set/--constants-from fix {', '.join(overlap)}: the grid varies them")
    header = {
        "format": FORMAT, "dataset": args.dataset, "max_dialogues": args.max_dialogues,
        "epochs": args.epochs, "seed": args.seed, "metric": "dev_weighted_f1",
        "grid": grid, "constants": constants,
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table = load_table(args.out, header)
    todo = [p for p in grid_points(grid, args.seed) if config_key(p, grid) not in table["configs"]]
    todo = todo[: args.limit] if args.limit is not None else todo
    total = len(grid_points(grid, args.seed))
    print(f"{args.out}: {len(table['configs'])}/{total} configs done, {len(todo)} to train now")
    setup = {
        "dataset": args.dataset, "data_dir": args.data_dir, "max_dialogues": args.max_dialogues,
        "epochs": args.epochs, "seed": args.seed, "cache_dir": str(default_cache_dir().resolve()),
    }  # fmt: skip
    run = {
        "command": shlex.join(["python", "bench/tabulate_curves.py", *(argv or sys.argv[1:])]),
        "commit": git_commit(),
        "machine": f"{platform.node()}: {platform.machine()}, {os.cpu_count()} CPUs, "
        f"{platform.python_implementation()} {platform.python_version()}",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "workers": args.workers,
        "configs": 0,
    }
    table["provenance"]["runs"].append(run)
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        pending = {pool.submit(train_config, p, constants, setup) for p in todo[: args.workers]}
        queue = todo[args.workers :]
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                entry = future.result()  # a failing config stops the build: fix, rerun
                table["configs"][config_key(entry["params"], grid)] = entry
                run["configs"] += 1
                run["wall_s"] = round(time.perf_counter() - started, 1)
                prov = table["provenance"]
                prov["wall_s"] = round(sum(r.get("wall_s", 0.0) for r in prov["runs"]), 1)
                prov["cpu_s"] = round(prov["cpu_s"] + entry["cpu_seconds"], 1)
                save_table(table, args.out)
                best = max(entry["curves"]["dev_weighted_f1"])
                print(f"{len(table['configs'])}/{total} {config_key(entry['params'], grid)}: "
                      f"best dev F1 {best:.2f} ({entry['seconds']:.0f} s)", flush=True)  # fmt: skip
                if queue:
                    pending.add(pool.submit(train_config, queue.pop(0), constants, setup))
    print(f"{args.out}: {len(table['configs'])}/{total} configs, {run.get('wall_s', 0)} s now")


if __name__ == "__main__":
    main()
