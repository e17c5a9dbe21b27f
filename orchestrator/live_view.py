"""A live terminal table of a search (rich), replacing Ray's verbose reporter.

One row per trial: its sampled params, state (running / completed / pruned / failed /
restarting), epoch, last and best value of the search metric; the title carries the best so
far. Running trials come first, then the rest best first, so the interesting rows stay on
screen when there are more trials than ``max_rows``.

The table fits an 80-column terminal, where rich would otherwise cut every column down to a
few letters: short headers for known params (``warmup_steps`` -> ``warmup``), trial ids cut
to what tells them apart within the search, compact numbers, one space between columns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ray.tune import Callback
from rich import box
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


# Column headers of known params and metrics; any other name is cut to HEADER_MAX characters.
SHORT_NAMES = {
    "lr": "lr",
    "learning_rate": "lr",
    "warmup_steps": "warmup",
    "k": "K",
    "intra_layers": "intra",
    "inter_layers": "inter",
    "intra_heads": "iheads",
    "inter_heads": "xheads",
    "dropout": "drop",
    "batch_size": "batch",
    "weight_decay": "wd",
    "hidden_size": "hidden",
    "ffn_size": "ffn",
    "max_length": "maxlen",
    "epochs": "epochs",
    "dev_weighted_f1": "F1",
    "dev_accuracy": "acc",
    "dev_loss": "loss",
}
HEADER_MAX = 6
STATES = {"PENDING": "pending", "RUNNING": "running"}  # Tune's status of a trial not ended
ID_MAX = 8


def fmt(value) -> str:
    """Three significant digits; exponents without padding (``6.04e-6``, not ``6.04e-06``)."""
    if isinstance(value, float):
        return f"{value:.3g}".replace("e-0", "e-").replace("e+0", "e+")
    return "" if value is None else str(value)


def short_names(names: list[str]) -> list[str]:
    """Headers for ``names``: known short names, else cut to HEADER_MAX; a name whose cut
    collides with another's stays whole (a wide column beats two alike)."""
    short = [SHORT_NAMES.get(n, n[:HEADER_MAX]) for n in names]
    return [s if short.count(s) == 1 else n for n, s in zip(names, short, strict=True)]


def short_ids(trial_ids: list[str]) -> dict[str, str]:
    """At most ID_MAX characters per trial id, unique within the search. Searchers' trials
    have 8 hex characters already; Ray's variant generator gives ``<prefix>_<00003>`` with
    one prefix per search, where the counter tells the trials apart. Ids that would collide
    stay whole."""

    def cut(trial_id: str) -> str:
        if len(trial_id) <= ID_MAX:
            return trial_id
        head, _, counter = trial_id.rpartition("_")
        if head and counter.isdigit() and len(counter) <= ID_MAX:
            return counter
        return trial_id[-ID_MAX:]

    short = {t: cut(t) for t in trial_ids}
    if len(set(short.values())) < len(short):
        return {t: t for t in trial_ids}
    return short


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
        enabled: draw at all; when False the rows are still kept (a resumed search that
            turns the table on again shows the whole search).
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
        enabled: bool = True,
    ):
        self.metric, self.mode, self.params = metric, mode, list(params)
        self.total, self.console, self.is_pruned = total, console, is_pruned
        self.title, self.max_rows, self.enabled = title, max_rows, enabled
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
        self.__dict__.update({"enabled": True, **state, "_restored": True})

    def _better(self, a: float, b: float | None) -> bool:
        return b is None or (a > b if self.mode == "max" else a < b)

    def best(self, rows: list[Row] | None = None) -> Row | None:
        scored = [r for r in (self.rows.values() if rows is None else rows) if r.best is not None]
        if not scored:
            return None
        pick = max if self.mode == "max" else min
        return pick(scored, key=lambda r: r.best)

    def render(self) -> Table:
        # rich's refresh thread calls this while Tune's callbacks add rows: work on a copy
        # (list() of a dict is taken in one step under the GIL).
        snapshot = list(self.rows.values())
        best = self.best(snapshot)
        ids = short_ids([r.trial_id for r in snapshot])
        done = sum(r.state in ("completed", "pruned", "failed") for r in snapshot)
        total = f"/{self.total}" if self.total else ""
        head = f"{self.title}: {done}{total} trials done"
        if best is not None:
            head += f", best {self.metric} {fmt(best.best)} ({ids[best.trial_id]})"
        # No vertical rules and no padding: columns are one space apart, 80 columns hold the
        # paper space with room to spare.
        table = Table(
            title=head,
            title_justify="left",
            expand=False,
            box=box.SIMPLE_HEAD,
            show_edge=False,
            padding=0,
        )
        *param_heads, metric_head = short_names([*self.params, self.metric])
        headers = ["trial", "state", *param_heads, "epoch", metric_head, "best"]
        for i, name in enumerate(headers):
            table.add_column(name, justify="left" if i < 2 else "right", no_wrap=True)
        sign = -1 if self.mode == "max" else 1

        def key(r: Row):
            running = r.state in ("running", "restarting")
            return (not running, r.best is None, sign * (r.best or 0.0), r.order)

        rows = sorted(snapshot, key=key)
        for r in rows[: self.max_rows]:
            style = "bold green" if best is not None and r is best else None
            cells = [ids[r.trial_id], r.state, *(fmt(r.params.get(p)) for p in self.params)]
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

    def setup(self, **info) -> None:
        from orchestrator.tracking.runs import trial_count

        self.total = self.total or trial_count(info)
        if not self.enabled:
            return
        # Drawn by rich's refresh thread twice a second, not on every event: a redraw sorts
        # every row, and per report that cost grew with the trial count.
        self._live = Live(
            console=self.console or Console(stderr=True),
            refresh_per_second=2,
            transient=False,
            get_renderable=self.render,
        )
        self._live.start()

    def on_step_begin(self, iteration, trials, **info) -> None:
        if self._restored:  # a resumed search: show what the earlier drivers ran
            self._restored = False
            for trial in trials:
                self._restored_row(trial)
        elif len(trials) != len(self.rows):  # new trials: a row each from the start, so that
            for trial in trials:  # an interrupt before their first report still lists them
                if trial.trial_id not in self.rows:
                    self._row(trial).state = STATES.get(trial.status, "pending")

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

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        self._row(trial).state = "restarting"

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        row = self._row(trial)
        row.epoch = int(result.get("training_iteration", row.epoch))
        value = result.get(self.metric)
        if isinstance(value, int | float):
            row.last = float(value)
            if self._better(row.last, row.best):
                row.best = row.last

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        pruned = self.is_pruned is not None and self.is_pruned(trial.trial_id)
        self._row(trial).state = "pruned" if pruned else "completed"

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._row(trial).state = "failed"

    def on_experiment_end(self, trials, **info) -> None:
        self.stop()

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()  # draws the last state once more
            if not self._live.console.is_terminal:  # rich leaves the last line open there
                self._live.console.line()
            self._live = None
