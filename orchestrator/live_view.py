"""A live terminal table of a search (rich), replacing Ray's verbose reporter.

One row per trial: its sampled params, state (running / completed / pruned / failed /
restarting), epoch, last and best value of the search metric; the title carries the best so
far. Running trials come first, then the rest best first, so the interesting rows stay on
screen when there are more trials than ``max_rows``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ray.tune import Callback
from rich.console import Console
from rich.live import Live
from rich.table import Table


@dataclass
class Row:
    trial_id: str
    params: dict
    state: str = "pending"
    epoch: int = 0
    last: float | None = None
    best: float | None = None
    order: int = 0


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return "" if value is None else str(value)


class LiveTable(Callback):
    """Tune callback rendering the search as a ``rich.live.Live`` table.

    Args:
        metric, mode: the search metric and direction (for "best").
        params: names of the sampled params to show as columns.
        total: trials the search will run (for the title), if known.
        console: where to draw (default: stderr, so stdout stays for ``--json``).
        is_pruned: tells whether the scheduler stopped a trial early.
        title: shown before the counts, e.g. the search name.
        max_rows: rows drawn at most.
    """

    def __init__(
        self,
        metric: str,
        mode: str,
        params: list[str],
        total: int | None = None,
        console: Console | None = None,
        is_pruned: Callable[[str], bool] | None = None,
        title: str = "search",
        max_rows: int = 20,
    ):
        self.metric, self.mode, self.params = metric, mode, list(params)
        self.total, self.console, self.is_pruned = total, console, is_pruned
        self.title, self.max_rows = title, max_rows
        self.rows: dict[str, Row] = {}
        self._live: Live | None = None
        self._restored = False

    # Tuner pickles its callbacks; a console and a live display cannot be pickled. What
    # unpickles the state is the driver of a resumed search (Tuner.restore).
    def __getstate__(self):
        state = self.__dict__.copy()
        state["console"], state["_live"] = None, None
        return state

    def __setstate__(self, state):
        self.__dict__.update({**state, "_restored": True})

    def _better(self, a: float, b: float | None) -> bool:
        return b is None or (a > b if self.mode == "max" else a < b)

    def best(self) -> Row | None:
        scored = [r for r in self.rows.values() if r.best is not None]
        if not scored:
            return None
        pick = max if self.mode == "max" else min
        return pick(scored, key=lambda r: r.best)

    def render(self) -> Table:
        best = self.best()
        done = sum(r.state in ("completed", "pruned", "failed") for r in self.rows.values())
        total = f"/{self.total}" if self.total else ""
        head = f"{self.title}: {done}{total} trials done"
        if best is not None:
            head += f", best {self.metric} {fmt(best.best)} ({best.trial_id})"
        table = Table(title=head, title_justify="left", expand=False)
        for name in ("trial", "state", *self.params, "epoch", self.metric, "best"):
            table.add_column(name, justify="left" if name in ("trial", "state") else "right")
        sign = -1 if self.mode == "max" else 1

        def key(r: Row):
            running = r.state in ("running", "restarting")
            return (not running, r.best is None, sign * (r.best or 0.0), r.order)

        rows = sorted(self.rows.values(), key=key)
        for r in rows[: self.max_rows]:
            style = "bold green" if best is not None and r is best else None
            cells = [r.trial_id, r.state, *(fmt(r.params.get(p)) for p in self.params)]
            table.add_row(*cells, str(r.epoch), fmt(r.last), fmt(r.best), style=style)
        if len(rows) > self.max_rows:
            table.caption = f"... {len(rows) - self.max_rows} more trials"
        return table

    def _row(self, trial) -> Row:
        if trial.trial_id not in self.rows:
            self.rows[trial.trial_id] = Row(
                trial.trial_id, dict(trial.config), order=len(self.rows)
            )
        return self.rows[trial.trial_id]

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self.render())

    def setup(self, **info) -> None:
        self.total = self.total or info.get("total_num_samples")
        self._live = Live(
            self.render(),
            console=self.console or Console(stderr=True),
            refresh_per_second=2,
            transient=False,
        )
        self._live.start()

    def on_step_begin(self, iteration, trials, **info) -> None:
        if self._restored:  # a resumed search: show what the earlier drivers ran
            self._restored = False
            for trial in trials:
                self._restored_row(trial)
            self._refresh()

    def _restored_row(self, trial) -> None:
        row = self._row(trial)
        result = trial.last_result or {}
        row.epoch = int(result.get("training_iteration") or 0)
        value = result.get(self.metric)
        if isinstance(value, int | float):
            row.last = float(value)
        best = (trial.metric_analysis.get(self.metric) or {}).get(self.mode)
        if isinstance(best, int | float):
            row.best = float(best)
        if trial.status == "TERMINATED":
            pruned = self.is_pruned is not None and self.is_pruned(trial.trial_id)
            row.state = "pruned" if pruned else "completed"
        elif trial.status == "ERROR":
            row.state = "failed"

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._row(trial).state = "running"
        self._refresh()

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        self._row(trial).state = "restarting"
        self._refresh()

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        row = self._row(trial)
        row.epoch = int(result.get("training_iteration", row.epoch))
        value = result.get(self.metric)
        if isinstance(value, int | float):
            row.last = float(value)
            if self._better(row.last, row.best):
                row.best = row.last
        self._refresh()

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        pruned = self.is_pruned is not None and self.is_pruned(trial.trial_id)
        self._row(trial).state = "pruned" if pruned else "completed"
        self._refresh()

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._row(trial).state = "failed"
        self._refresh()

    def on_experiment_end(self, trials, **info) -> None:
        self.stop()

    def stop(self) -> None:
        if self._live is not None:
            self._live.update(self.render())
            self._live.stop()
            if not self._live.console.is_terminal:  # rich leaves the last line open there
                self._live.console.line()
            self._live = None
