"""`orch search --dry-run`: a plan a person reads, and the settings that surprised users."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.settings import SearchSettings, SettingsError


@pytest.fixture(autouse=True)
def _project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ORCH_MLRUNS", str(tmp_path / "mlruns"))


def dry_run(*args: str) -> tuple[str, str]:
    done = CliRunner().invoke(app, ["search", *args, "--dry-run"])
    assert done.exit_code == 0, done.output
    return done.stdout, done.stderr


def test_the_plan_is_lines_a_person_reads():
    text, _ = dry_run("--dataset", "synthetic", "--quick", "--seed", "7")
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 100  # one 4,623-character line before
    assert "MemoryBounds" not in text and "functools" not in text
    rows = {line.split()[0]: line for line in lines if line.startswith("  ") and line[2] != " "}
    assert set(rows) >= {"data", "space", "fixed", "strategy", "length", "goal", "per", "disk"}
    assert "bohb sampling, seed 7" in rows["strategy"]  # the default sampler
    assert "40 trials of up to 2 epochs (at most 80 trial-epochs)" in rows["length"]
    # Every sampled dimension on its own line, with its range.
    assert any(line.split()[:4] == ["lr", "0.0003", "..", "0.01,"] for line in lines)
    assert any(line.split()[:4] == ["k", "1", "..", "8"] for line in lines)


def test_the_plan_says_how_bohb_and_brackets_work():
    text, _ = dry_run("--dataset", "synthetic", "--quick", "--sampler", "bohb", "--brackets", "3")
    strategy = " ".join(text.split())  # the row may wrap
    assert "bohb sampling" in strategy and "random configs first" not in strategy
    assert "TPE on the highest rung with enough scores" in strategy
    assert "3 brackets (grace x rf^0..2)" in strategy
    tpe, _ = dry_run("--dataset", "synthetic", "--quick", "--sampler", "tpe")
    assert "10 random configs first" in " ".join(tpe.split()) and "brackets" not in tpe


def test_the_plan_as_json_has_typed_ranges():
    text, _ = dry_run("--dataset", "synthetic", "--quick", "--seed", "7", "--json")
    plan = json.loads(text)
    assert plan["dimensions"]["k"] == {"low": 1, "high": 8, "log": False, "step": 1}
    assert plan["seed"] == 7 and plan["trials"] == 40 and plan["budget"] is None
    assert "cache_dir" not in plan["constants"]


def test_a_paper_space_plan_summarises_the_memory_plan_instead_of_listing_it():
    from orchestrator import plan
    from search_spaces import bounded
    from tests.helpers import toy_splits

    settings = SearchSettings(dataset="meld", seed=1)
    space = bounded("paper", 11.0, encoder="tiny", modalities=("u",))
    planned = plan.plan(settings, space, toy_splits(), {"encoder": "tiny"})
    memory = next(line for line in plan.lines(planned) if line.split()[0] == "memory")
    assert "K up to" in memory and "cheapest precision" in " ".join(plan.lines(planned))
    assert sum(planned["memory_plans"].values()) == plan.DRAWS
    assert "precision" not in planned["constants"]  # per trial, not fixed


def test_warmup_is_bounded_by_the_runs_length(meld_dir):
    # 40 dialogues, batch 8, 2 epochs: 10 optimizer steps; a warmup of up to 30 (or the
    # paper space's 2,000) would never reach the peak rate.
    text, _ = dry_run(
        "--dataset", "meld", "--data-dir", str(meld_dir), "--quick", "--max-dialogues", "40",
        "--json",
    )  # fmt: skip
    plan = json.loads(text)
    assert plan["run_steps"] == 10
    assert plan["dimensions"]["warmup_steps"]["high"] == 5


def test_warmup_bound_in_the_paper_space():
    from search_spaces import describe
    from search_spaces.spaces import bounded

    full = bounded("paper", None, encoder="tiny", train_dialogues=1038, epochs=10)
    short = bounded("paper", None, encoder="tiny", train_dialogues=40, epochs=2)
    draws = [describe(full, seed=s)[0] for s in range(3)]  # names only; ranges below
    assert "warmup_steps" in draws[0]
    assert full.keywords["run_steps"] == 2600 and short.keywords["run_steps"] == 20

    import optuna

    for space, high, step in ((full, 1300, 100), (short, 10, 1)):
        trial = optuna.create_study().ask()
        space(trial)
        dist = trial.distributions["warmup_steps"]
        assert (dist.high, dist.step) == (high, step)


def test_trials_and_budget_together_are_refused():
    with pytest.raises(SettingsError, match="--trials 4 and --budget 10 both say when"):
        SearchSettings(dataset="synthetic", trials=4, budget=10)
    done = CliRunner().invoke(
        app, ["search", "--dataset", "synthetic", "--trials", "4", "--budget", "10", "--dry-run"]
    )
    assert done.exit_code == 2
    assert done.stderr.strip() == (
        "error: --trials 4 and --budget 10 both say when the search ends; give one"
    )
    assert SearchSettings(dataset="synthetic", budget=10).trials is None
    assert SearchSettings(dataset="synthetic").trials == 40


def test_each_new_search_draws_its_own_seed_unless_given():
    seeds = {SearchSettings(dataset="synthetic").seed for _ in range(5)}
    assert len(seeds) > 1  # five draws from a million: equal only by a 1e-5 chance
    assert SearchSettings(dataset="synthetic", seed=3).seed == 3


def test_resume_says_what_it_continues(tmp_path):
    from orchestrator.commands.search import _resuming
    from orchestrator.tracking.runs import (
        DEFAULT_EXPERIMENT,
        KIND_TAG,
        PARENT_TAG,
        SEARCH_TAG,
        STATE_TAG,
    )
    from orchestrator.tracking.store import client_for
    from orchestrator.tracking.writer import MlflowWriter

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    writer = MlflowWriter(uri)
    experiment = writer.experiment(DEFAULT_EXPERIMENT)
    parent = writer.start_run(experiment, "s", {KIND_TAG: "search", SEARCH_TAG: "s"}, {})
    for state in ("completed", "pruned", "pruned", None):
        tags = {KIND_TAG: "trial", PARENT_TAG: parent} | ({STATE_TAG: state} if state else {})
        writer.start_run(experiment, "t", tags, {})
    settings = SearchSettings(dataset="synthetic", name="s", trials=6, seed=11)
    line = _resuming(uri, client_for(uri).get_run(parent), settings)
    assert line == (
        "resuming search s (6 trials, seed 11): 1 completed, 2 pruned, 1 running so far; "
        "unfinished trials continue from their last checkpoint"
    )
