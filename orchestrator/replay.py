"""Replaying a search from a table of recorded learning curves (a tabular benchmark).

A table (``bench/tabulate_curves.py`` builds one) holds a discrete grid of a space (the
values of each dimension) and, for every grid point, the curves one real training recorded
per epoch: dev weighted F1, dev loss, test weighted F1. ``replay_trial`` is a Ray Tune
function trainable that, given a config sampled from a space, snaps each gridded value to
the table's grid and reports that point's curves one epoch per report. A replayed epoch
costs one unit (one ``training_iteration``) and no time, so a whole search (Ray Tune,
OptunaSearch, ASHA, the PRUNED bookkeeping, concurrency: everything of ``run_search``) runs
in seconds and can be repeated over many seeds (``bench/search_efficiency.py``).

Snapping is deterministic: the nearest grid value (on a log scale for dimensions marked
``log``), the lower one when two are equally near. ``ReplaySpace`` samples the box the grid
spans (ints as ints, log dimensions on a log scale) and passes the table's path to trials.
"""

from __future__ import annotations

import bisect
import functools
import json
import math
from collections.abc import Callable
from pathlib import Path

CURVES = ("dev_weighted_f1", "dev_loss", "test_weighted_f1")


class TableError(ValueError):
    """A curve table that cannot be replayed; the message names the file."""


class CurveTable:
    """A loaded table: its grid, its configs' curves, and the snapping of configs to it."""

    def __init__(self, data: dict, path: str):
        self.path = path
        try:
            self.grid: dict[str, dict] = data["grid"]
            self.epochs: int = int(data["epochs"])
            self.metric: str = data.get("metric", "dev_weighted_f1")
            self.configs: dict[str, dict] = data["configs"]
        except (KeyError, TypeError, ValueError) as error:
            raise TableError(f"{path}: not a curve table (missing {error})") from None
        for name, dim in self.grid.items():
            if not dim.get("values"):
                raise TableError(f"{path}: grid dimension {name} has no values")
        self._values = {name: sorted(dim["values"]) for name, dim in self.grid.items()}

    @property
    def size(self) -> int:
        return math.prod(len(v) for v in self._values.values())

    def snap(self, config: dict) -> dict:
        """Each grid dimension of ``config`` moved to its nearest grid value."""
        missing = [name for name in self.grid if name not in config]
        if missing:
            raise TableError(f"{self.path}: the config has no {', '.join(missing)}")
        return {name: self._nearest(name, config[name]) for name in self.grid}

    def _nearest(self, name: str, value):
        values = self._values[name]
        if not all(isinstance(v, int | float) for v in values):
            if value not in values:
                raise TableError(f"{self.path}: {name}={value!r} is not one of {values}")
            return value
        log = bool(self.grid[name].get("log"))
        scale = math.log if log else float
        i = bisect.bisect_left(values, value)
        if i == 0 or i == len(values):
            return values[min(i, len(values) - 1)]  # outside the grid: its edge
        low, high = values[i - 1], values[i]
        # Ties go to the lower value, so the same config always lands on the same point.
        return low if scale(value) - scale(low) <= scale(high) - scale(value) else high

    def key(self, point: dict) -> str:
        """The table's key of a grid point (``bench/tabulate_curves.config_key``)."""
        return ",".join(f"{name}={point[name]!r}" for name in self.grid)

    def curves(self, config: dict) -> tuple[str, dict[str, list[float]]]:
        """(key, curves) of the grid point nearest ``config``."""
        key = self.key(self.snap(config))
        if key not in self.configs:
            raise TableError(f"{self.path}: no curves for {key} (a partial table?)")
        return key, self.configs[key]["curves"]

    def best(self, metric: str = "dev_weighted_f1", epochs: int | None = None) -> float:
        """The best value of ``metric`` any config reaches within ``epochs`` (the oracle)."""
        return max(max(c["curves"][metric][: epochs or self.epochs]) for c in self.configs.values())


@functools.lru_cache(maxsize=8)
def _read(path: str, mtime_ns: int) -> CurveTable:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise TableError(f"{path}: cannot read the curve table: {error}") from None
    return CurveTable(data, path)


def load_table(path: str | Path) -> CurveTable:
    """The table at ``path`` (read once per process while the file stays unchanged)."""
    path = str(Path(path).resolve())
    try:
        mtime = Path(path).stat().st_mtime_ns
    except OSError as error:
        raise TableError(f"{path}: cannot read the curve table: {error}") from None
    return _read(path, mtime)


def replay(config: dict, report: Callable[[dict], None]) -> str:
    """Report the recorded curves of ``config``'s grid point, one epoch per call, for
    ``config["epochs"]`` epochs (default: all the table has); returns the point's key."""
    table = load_table(config["table"])
    epochs = int(config.get("epochs") or table.epochs)
    if not 1 <= epochs <= table.epochs:
        raise TableError(f"{table.path}: {epochs} epochs asked, the table has {table.epochs}")
    key, curves = table.curves(config)
    for epoch in range(epochs):
        values = {name: curves[name][epoch] for name in CURVES}
        report({"epoch": epoch + 1, **values, "grid_point": key})
    return key


def replay_trial(config: dict) -> None:
    """Ray Tune entry point: ``replay`` with ``tune.report`` (no checkpoints: a replayed
    trial restarts from epoch 1 in no time)."""
    from ray import tune

    replay(config, tune.report)


class ReplaySpace:
    """The define-by-run space of a table: every grid dimension sampled over the range its
    values span (ints as ints, ``log`` dimensions on a log scale, other values as a choice),
    the table's path and epoch count as constants. A class so Ray can pickle it."""

    def __init__(self, table: str | Path):
        self.table = str(Path(table).resolve())
        self.__name__ = f"replay({Path(self.table).name})"

    def __call__(self, trial) -> dict:
        table = load_table(self.table)
        for name, dim in table.grid.items():
            values = sorted(dim["values"])
            if not all(isinstance(v, int | float) for v in values):
                trial.suggest_categorical(name, values)
            elif all(isinstance(v, int) for v in values) and not dim.get("log"):
                trial.suggest_int(name, values[0], values[-1])
            else:
                trial.suggest_float(name, values[0], values[-1], log=bool(dim.get("log")))
        return {"table": self.table, "epochs": table.epochs}
