"""The live table fits an 80-column terminal without cutting a header, id or value short."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
from rich.console import Console

from orchestrator.live_view import LiveTable, fmt, short_ids, short_names

PAPER = ["lr", "warmup_steps", "k", "intra_layers", "inter_layers", "dropout"]
METRIC = "dev_weighted_f1"
# Ray's two id styles: a searcher's (8 hex characters), the variant generator's (prefix_N).
SEARCHER_IDS = ["5b0d5a8f", "0c1e2f3a", "9d8c7b6a", "e4f5a6b7", "11223344"]
VARIANT_IDS = [f"5b0d5_{n:05d}" for n in range(5)]


def trial(trial_id: str, **config) -> SimpleNamespace:
    return SimpleNamespace(trial_id=trial_id, config=config)


def widest_configs() -> list[dict]:
    """Paper-space values at their widest once formatted (tiny floats, 4-digit warmup)."""
    return [
        dict(lr=6.04e-06, warmup_steps=2000, k=32, intra_layers=6, inter_layers=4, dropout=0.00512),
        dict(lr=1.23e-05, warmup_steps=1200, k=14, intra_layers=6, inter_layers=4, dropout=0.1),
        dict(lr=4.99e-05, warmup_steps=0, k=1, intra_layers=1, inter_layers=1, dropout=0.299),
        dict(lr=2.5e-06, warmup_steps=100, k=7, intra_layers=3, inter_layers=2, dropout=0.0),
        dict(lr=1e-06, warmup_steps=1900, k=20, intra_layers=2, inter_layers=3, dropout=0.0123),
    ]


def search_table(ids: list[str]) -> LiveTable:
    """A search seen through Tune's callbacks, one trial in each state the table shows."""
    table = LiveTable(METRIC, "max", PAPER, total=40, title="paper-meld")
    trials = [trial(i, **c) for i, c in zip(ids, widest_configs(), strict=True)]
    for t in trials:
        table.on_trial_start(0, trials, t)
    for epoch in range(1, 101):  # three-digit epochs
        for n, t in enumerate(trials):
            score = 0.5 + 0.01 * n + 0.0001 * epoch
            table.on_trial_result(0, trials, t, {"training_iteration": epoch, METRIC: score})
    table.on_trial_complete(0, trials, trials[0])  # completed
    table.on_trial_error(0, trials, trials[1])  # failed
    table.on_trial_recover(0, trials, trials[2])  # restarting
    table.is_pruned = lambda trial_id: trial_id == trials[3].trial_id
    table.on_trial_complete(0, trials, trials[3])  # pruned; trials[4] still running
    return table


def render(table: LiveTable, width: int = 80) -> str:
    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    console.print(table.render())
    return console.export_text()


@pytest.mark.parametrize("ids", [SEARCHER_IDS, VARIANT_IDS], ids=["searcher", "variant"])
def test_paper_space_fits_80_columns_uncut(ids):
    table = search_table(ids)
    text = render(table)
    lines = text.splitlines()

    assert "…" not in text, text
    assert max(len(line) for line in lines) <= 80, text
    header = next(line for line in lines if line.lstrip().startswith("trial"))
    assert header.split() == [
        "trial", "state", "lr", "warmup", "K", "intra", "inter", "drop", "epoch", "F1", "best",
    ]  # fmt: skip
    # Every row whole: its id, state and formatted values, in the columns' order.
    shown = short_ids(ids)
    rows = {cells[0]: cells for line in lines if (cells := line.split())}
    assert len(set(shown.values())) == len(ids)
    for trial_id, config in zip(ids, widest_configs(), strict=True):
        row = rows[shown[trial_id]]
        assert row[2:8] == [fmt(config[p]) for p in PAPER], row
        assert row[8] == "100"
    states = {rows[shown[i]][1] for i in ids}
    assert states == {"completed", "failed", "restarting", "pruned", "running"}
    assert f"best {METRIC} 0.55 ({shown[ids[4]]})" in text  # the title names the full metric


def test_trial_ids_stay_unique():
    assert short_ids(SEARCHER_IDS) == {i: i for i in SEARCHER_IDS}
    assert short_ids(VARIANT_IDS) == {i: f"{n:05d}" for n, i in enumerate(VARIANT_IDS)}
    # The same counter under two prefixes (two generators): cut, they would read alike.
    mixed = ["aaaaa_00001", "bbbbb_00001"]
    assert short_ids(mixed) == {i: i for i in mixed}
    long = ["trial-number-one-x1", "trial-number-two-x2"]
    assert set(short_ids(long).values()) == {"r-one-x1", "r-two-x2"}


def test_short_names_known_cut_and_colliding():
    assert short_names(PAPER) == ["lr", "warmup", "K", "intra", "inter", "drop"]
    assert short_names(["label_smoothing"]) == ["label_"]
    # Cut alike: kept whole rather than two columns with one header.
    assert short_names(["grad_clip_a", "grad_clip_b"]) == ["grad_clip_a", "grad_clip_b"]


def test_compact_numbers():
    assert fmt(6.04e-06) == "6.04e-6" and fmt(1e12) == "1e+12" and fmt(0.612345) == "0.612"
    assert fmt(2000) == "2000" and fmt(None) == ""


def test_disabled_table_draws_nothing_but_keeps_the_rows():
    out = io.StringIO()
    table = LiveTable(METRIC, "max", PAPER, console=Console(file=out, width=80), enabled=False)
    t = trial("5b0d5a8f", **widest_configs()[0])
    table.setup(total_num_samples=1)
    table.on_trial_start(0, [t], t)
    table.on_trial_result(0, [t], t, {"training_iteration": 1, METRIC: 0.5})
    table.stop()
    assert out.getvalue() == ""
    assert table.rows["5b0d5a8f"].best == 0.5


def test_trials_are_listed_before_their_first_report():
    """Ctrl-C seconds into a search once showed "0/6 trials done" and no row while two
    trials ran: rows come from Tune's trial list, not from the first result."""
    table = LiveTable(METRIC, "max", PAPER, total=6, title="s", enabled=False)
    trials = [trial(i, **c) for i, c in zip(SEARCHER_IDS[:2], widest_configs(), strict=False)]
    trials[0].status, trials[1].status = "RUNNING", "PENDING"
    table.on_step_begin(0, trials)
    assert [(r.trial_id, r.state) for r in table.rows.values()] == [
        (SEARCHER_IDS[0], "running"),
        (SEARCHER_IDS[1], "pending"),
    ]
    out = io.StringIO()
    Console(file=out, width=80).print(table.render())
    assert SEARCHER_IDS[0][:4] in out.getvalue() and "running" in out.getvalue()


def test_unstarted_trials_fetch_warning_is_dropped_other_failures_stay():
    import logging

    from orchestrator.driver import _DropUnstartedFetch

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("ray.tune", logging.WARNING, "", 0, message, None, None)

    keep = _DropUnstartedFetch().filter
    missing = "FileNotFoundError('both result.json and progress.csv were not found')"
    assert not keep(
        record(f"Failed to fetch metrics for 2 trial(s):\n- a: {missing}\n- b: {missing}")
    )
    assert keep(
        record(f"Failed to fetch metrics for 2 trial(s):\n- a: {missing}\n- b: KeyError('x')")
    )
    assert keep(record("Trial a errored"))
