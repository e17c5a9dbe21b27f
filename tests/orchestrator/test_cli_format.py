"""`orch --help` at 80 columns and usage errors, as a user's terminal gets them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from orchestrator.cli_format import short_help

COMMANDS = ("search", "train", "best", "evaluate", "ui")


def orch(*args: str, columns: int = 80) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": str(columns)}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def declared_names(command: str) -> list[str]:
    """Every option name the command accepts (``--x`` and ``--no-x`` of a flag)."""
    import typer.main

    from orchestrator.cli import app

    group = typer.main.get_command(app)
    params = group.commands[command].params
    return [name for p in params for name in (*p.opts, *p.secondary_opts)]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_at_80_columns_keeps_every_option_name_whole(command):
    done = orch(command, "--help")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "…" not in text and "``" not in text and "\\[" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    words = set(text.replace(",", " ").split())
    missing = [n for n in declared_names(command) if n not in words]
    assert not missing, f"cut or hidden in orch {command} --help: {missing}"


def test_search_help_is_grouped_and_short():
    text = orch("search", "--help").stdout
    sections = [
        line[:-1] for line in text.splitlines() if line and line[0] != " " and line.endswith(":")
    ]
    assert sections == [
        "What to search",
        "How long",
        "Strategy",
        "Resources",
        "Where it runs and records",
        "Run",
        "Other",
    ]
    assert len(text.splitlines()) < 100  # 170 lines of 22-character wraps before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("search", "--trials", "x"), "error: Invalid value for '--trials'"),
        (("best", "--bogus"), "error: No such option: --bogus"),
        (("nosuch",), "error: No such command 'nosuch'"),
        (("train",), "error: Missing option '--dataset'"),
    ],
)
def test_usage_errors_are_one_error_line_and_exit_2(args, message):
    done = orch(*args)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), done.stderr
    assert "Traceback" not in done.stderr and "╭" not in done.stderr


def test_short_help_is_the_first_sentence_without_rest_markup():
    doc = "Metric to optimise, e.g. ``dev_weighted_f1``. Losses are minimised."
    assert short_help(doc) == "Metric to optimise, e.g. dev_weighted_f1."
    assert short_help("Files: a .toml or .json ranges file") == (
        "Files: a .toml or .json ranges file."
    )
