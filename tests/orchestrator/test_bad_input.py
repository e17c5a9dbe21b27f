"""The bad-input table: every wrong input to `orch search`, `orch best` and `orch train` is one
line on stderr, exit 2 (usage) or 1 (runtime), no traceback, and nothing left behind.

Each row runs in-process through Typer's CliRunner with the working directory a fresh tmp
folder, so "nothing left behind" is checked by looking for ``mlruns/`` there and at the
``--storage`` folder the row passes. Every row must fail before Ray starts (checked, and what
keeps this file fast: no row may reach a trial).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.errors import RUNTIME, USAGE
from tests.orchestrator.bad_input_rows import (
    MELD_HEADER,
    MELD_ROWS,
    Row,
    closed_port,
    count_runs,
    lines,
    meld,
    search,
    seeded,
    space_file,
    unwritable_path,
)  # fmt: skip

runner = CliRunner()

TABLE = {
    # --- orch search: usage errors (exit 2) -------------------------------------------------
    "unknown-dataset": Row(search("--dataset", "nope"), USAGE, ("--dataset", "nope")),
    "unknown-space": Row(search("--dataset", "synthetic", "--space", "nope"), USAGE, ("--space",)),
    "trials-0": Row(search("--dataset", "synthetic", "--trials", "0"), USAGE, ("--trials",)),
    "trials-negative": Row(
        search("--dataset", "synthetic", "--trials", "-3"), USAGE, ("--trials", "-3")
    ),
    "max-concurrent-0": Row(
        search("--dataset", "synthetic", "--max-concurrent", "0"), USAGE, ("--max-concurrent",)
    ),
    "space-lr-low-0": Row(
        space_file("my.toml", "[lr]\nlow = 0\nhigh = 1e-3\nlog = true\n"),
        USAGE,
        ("my.toml", "lr", "low"),
    ),
    "space-lr-low-above-high": Row(
        space_file("my.toml", "[ranges]\nlr = { low = 1e-2, high = 1e-3 }\n"),
        USAGE,
        ("my.toml", "lr", "low", "high"),
    ),
    "space-lr-negative-json": Row(
        space_file("my.json", '{"ranges": {"lr": {"low": -1e-4, "high": 1e-3}}}'),
        USAGE,
        ("my.json", "lr", "low"),
    ),
    "space-file-missing": Row(
        lambda tmp: ["search", "--dataset", "synthetic", "--space", str(tmp / "none.toml")],
        USAGE,
        ("--space", "none.toml"),
    ),
    "space-file-bad-toml": Row(
        space_file("my.toml", "[lr\nlow = 0\n"), USAGE, ("my.toml", "invalid TOML")
    ),
    "space-file-bad-json": Row(space_file("my.json", "{ranges: 1}"), USAGE, ("my.json", "JSON")),
    "space-string-step": Row(
        space_file("my.toml", '[k]\nlow = 1\nhigh = 4\nstep = "2"\n'),
        USAGE,
        ("my.toml", "k", "step"),
    ),
    "space-unknown-field": Row(
        space_file("my.toml", "[ranges]\nlrr = { low = 1e-5, high = 1e-3, log = true }\n"),
        USAGE,
        ("my.toml", "lrr"),
    ),
    "space-module-missing": Row(
        search("--dataset", "synthetic", "--space", "no_such_module:space"), USAGE, ("--space",)
    ),
    "sampler-unknown": Row(
        search("--dataset", "synthetic", "--sampler", "grid"), USAGE, ("--sampler", "grid")
    ),
    "scheduler-unknown": Row(
        search("--dataset", "synthetic", "--scheduler", "pbt"), USAGE, ("--scheduler", "pbt")
    ),
    "epochs-0": Row(search("--dataset", "synthetic", "--epochs", "0"), USAGE, ("--epochs",)),
    "max-dialogues-0": Row(
        search("--dataset", "synthetic", "--max-dialogues", "0"), USAGE, ("--max-dialogues",)
    ),
    "gpu-memory-0": Row(
        search("--dataset", "synthetic", "--gpu-memory-gb", "0"), USAGE, ("--gpu-memory-gb",)
    ),
    "gpu-memory-too-small": Row(
        search("--dataset", "meld", "--gpu-memory-gb", "0.5"), USAGE, ("--gpu-memory-gb", "0.5")
    ),
    "cpus-per-trial-0": Row(
        search("--dataset", "synthetic", "--cpus-per-trial", "0"), USAGE, ("--cpus-per-trial",)
    ),
    "max-failures-negative": Row(
        search("--dataset", "synthetic", "--max-failures", "-1"), USAGE, ("--max-failures",)
    ),
    # --- orch search: runtime failures (exit 1) ---------------------------------------------
    "missing-data-dir": Row(
        lambda tmp: ["search", "--dataset", "meld", "--data-dir", str(tmp / "absent")],
        RUNTIME,
        ("absent", "--data-dir"),
    ),
    "meld-missing-column": Row(
        meld(
            "search",
            dev=lines(
                "Sr No.,Utterance,Speaker,Sentiment,Dialogue_ID,Utterance_ID",
                "1,hi,Joey,neutral,0,0",
            ),
        ),
        RUNTIME,
        ("dev_sent_emo.csv", "Emotion"),
    ),
    "meld-unknown-emotion": Row(
        meld("search", train=lines(MELD_HEADER, MELD_ROWS[0].replace("sadness", "sadnes"))),
        RUNTIME,
        ("train_sent_emo.csv", "row 2", "sadnes"),
    ),
    "meld-empty-split": Row(
        meld("search", test=lines(MELD_HEADER)), RUNTIME, ("test_sent_emo.csv", "no rows")
    ),
    "meld-invalid-utf8": Row(
        meld("search", train=lines(MELD_HEADER, MELD_ROWS[0]) + b"4,caf\xe9,Joey,joy\n"),
        RUNTIME,
        ("train_sent_emo.csv", "UTF-8", "line 3"),
    ),
    "storage-not-writable": Row(
        lambda tmp: ["search", "--dataset", "synthetic", "--storage", str(unwritable_path(tmp))],
        RUNTIME,
        ("--storage", "not-a-folder.txt"),
        storage=False,
    ),
    # --- rows owned by the resume/cluster work ----------------------------------------------
    "unreachable-address": Row(
        lambda tmp: ["search", "--dataset", "synthetic", "--address", f"127.0.0.1:{closed_port()}"],
        RUNTIME,
        ("--address", "127.0.0.1"),
    ),
    "unreachable-tracking-uri": Row(
        lambda tmp: [
            "search",
            "--dataset",
            "synthetic",
            "--tracking-uri",
            f"http://127.0.0.1:{closed_port()}",
        ],
        RUNTIME,
        ("--tracking-uri", "127.0.0.1"),
    ),
    "name-exists": Row(
        seeded("search", "--dataset", "synthetic", "--name", "taken"),
        USAGE,
        ("--name", "taken", "--resume"),
    ),
    "resume-unknown": Row(search("--resume", "ghost"), USAGE, ("--resume", "ghost")),
    "resume-unknown-in-store": Row(
        seeded("search", "--resume", "ghost"),
        USAGE,
        ("ghost", "taken"),  # names what exists
    ),
    "resume-latest-no-search": Row(search("--resume", "latest"), USAGE, ("--resume", "no search")),
    "resume-with-search-options": Row(
        seeded("search", "--resume", "taken", "--trials", "5", "--seed", "3"),
        USAGE,
        ("--trials", "--seed", "taken"),
    ),
    "no-dataset": Row(search("--trials", "3"), USAGE, ("--dataset", "--resume")),
    # --- orch best ---------------------------------------------------------------------------
    "best-no-search": Row(lambda tmp: ["best"], RUNTIME, ("no search",), storage=False),
    # No search by the name given is a usage error in every command (issue 17).
    "best-unknown-name": Row(
        lambda tmp: ["best", "--name", "ghost"], USAGE, ("ghost",), storage=False
    ),
    "best-unknown-name-in-store": Row(
        seeded("best", "--name", "ghost"),
        USAGE,
        ("ghost", "taken"),  # the searches that do exist are named
        storage=False,
    ),
    "best-unreachable-tracking-uri": Row(
        lambda tmp: ["best", "--tracking-uri", f"http://127.0.0.1:{closed_port()}"],
        RUNTIME,
        ("--tracking-uri", "127.0.0.1"),
        storage=False,
    ),
    # --- orch evaluate ------------------------------------------------------------------------
    "evaluate-seeds-0": Row(
        seeded("evaluate", "taken", "--seeds", "0"), USAGE, ("--seeds", "0"), storage=False
    ),
    "evaluate-encoder-lr-0": Row(
        seeded("evaluate", "taken", "--encoder-lr", "0"),
        USAGE,
        ("--encoder-lr", "0"),
        storage=False,
    ),
    "evaluate-no-search": Row(
        lambda tmp: ["evaluate", "ghost"], USAGE, ("ghost", "no search"), storage=False
    ),
    "evaluate-unknown-in-store": Row(
        seeded("evaluate", "ghost"), USAGE, ("ghost", "taken"), storage=False
    ),
    "evaluate-no-finished-trial": Row(
        seeded("evaluate", "taken"), RUNTIME, ("taken", "no finished trial"), storage=False
    ),
    # --- orch train (same loaders, same rules) ----------------------------------------------
    "train-missing-data-dir": Row(
        lambda tmp: ["train", "--dataset", "meld", "--data-dir", str(tmp / "absent")],
        RUNTIME,
        ("absent", "--data-dir"),
        storage=False,
    ),
    "train-meld-invalid-utf8": Row(
        meld("train", dev=lines(MELD_HEADER) + b"1,\xff\xfe,Joey,joy,positive,0,0,1,1,a,b\n"),
        RUNTIME,
        ("dev_sent_emo.csv", "UTF-8", "line 2"),
        storage=False,
    ),
    "train-meld-unknown-emotion": Row(
        meld(
            "train",
            test=lines(MELD_HEADER, MELD_ROWS[2].replace("neutral,neutral", "calm,neutral")),
        ),
        RUNTIME,
        ("test_sent_emo.csv", "row 2", "calm"),
        storage=False,
    ),
}


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """cwd = an empty tmp folder (the default MLflow store would be ./mlruns), no env store."""
    for var in ("MLFLOW_TRACKING_URI", "ORCH_MLRUNS", "ORCH_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)
    # A row whose check is missing must fail fast, not retry a dead server for minutes.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


@pytest.fixture
def ray_calls(monkeypatch) -> list:
    """``ray.init`` replaced by a tripwire: no bad input may get as far as Ray, and a row
    whose check is missing fails in a second instead of starting a cluster (or waiting
    minutes for an unreachable one)."""
    import ray

    calls = []

    def tripwire(*args, **kwargs):
        calls.append(kwargs)
        raise RuntimeError("tripwire: a bad-input row reached ray.init")

    monkeypatch.setattr(ray, "init", tripwire)
    # A Ray left up by the session's ray_local must not let a row skip ray.init.
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    return calls


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "row",
    [pytest.param(row, id=key) for key, row in TABLE.items()],
)
def test_bad_input_is_one_line_and_leaves_nothing(row: Row, isolated: Path, ray_calls: list):
    args = row.build(isolated)
    seeded_store = (isolated / "mlruns").exists()  # rows about existing searches seed one
    runs_before = count_runs()
    storage = isolated / "storage"
    if row.storage and args[0] == "search" and "--storage" not in args:
        args += ["--storage", str(storage)]

    result = runner.invoke(app, args)

    shown = f"{args}\nexit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert not ray_calls, f"reached ray.init: {shown}"
    assert result.exit_code == row.code, shown
    err = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: "), shown
    for word in row.mentions:
        assert word in err[0], f"{word!r} not named: {shown}"
    assert "Traceback" not in result.stdout + result.stderr, shown
    assert result.exception is None or isinstance(result.exception, SystemExit), shown
    # Nothing left behind: no MLflow store (or no new run in a seeded one), no storage folder.
    if seeded_store:
        assert count_runs() == runs_before, shown
    else:
        assert not (isolated / "mlruns").exists(), shown
    assert not storage.exists(), shown


def test_top_level_range_table_is_the_same_as_under_ranges(tmp_path):
    """``[lr]`` on its own (the shorthand the lr-bounds row uses) means ``[ranges] lr = ...``,
    so that row fails on its bound, not on an unknown section."""
    from search_spaces.spaces import describe, get_space

    short, long = tmp_path / "short.toml", tmp_path / "long.toml"
    short.write_text('[lr]\nlow = 1e-5\nhigh = 1e-3\nlog = true\n[constants]\nencoder = "tiny"\n')
    long.write_text(
        '[ranges]\nlr = { low = 1e-5, high = 1e-3, log = true }\n[constants]\nencoder = "tiny"\n'
    )
    assert describe(get_space(str(short))) == describe(get_space(str(long)))
    both = tmp_path / "both.toml"
    both.write_text("[lr]\nlow = 1e-5\nhigh = 1e-3\n[ranges]\nlr = { low = 1e-5, high = 1e-3 }\n")
    with pytest.raises(ValueError, match="lr: given both"):
        get_space(str(both))
