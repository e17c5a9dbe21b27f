"""Search settings: one set of defaults, validation with the option names a user types,
the metric's direction, where a search writes, the space it runs, and what must pickle."""

from __future__ import annotations

import functools
import inspect
import json
import pickle
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.commands.search import OPTIONS, search
from orchestrator.settings import (
    SearchSettings,
    SettingsError,
    WithConstants,
    option_fields,
    resolve_storage,
)
from trainable.datasets import DATASETS


def test_storage_is_absolute_or_uri_and_defaults_into_the_project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ORCH_MLRUNS", raising=False)
    assert resolve_storage("runs") == str(tmp_path / "runs")
    assert resolve_storage("s3://bucket/runs") == "s3://bucket/runs"
    # Everything a search writes by default lives in the project's mlruns/ folder.
    assert resolve_storage(None) == str(tmp_path / "mlruns" / "ray")
    assert SearchSettings(dataset="meld").storage == str(tmp_path / "mlruns" / "ray")


def test_every_option_is_a_settings_field_and_back():
    """The CLI's options are generated from the settings: same names, defaults left to the
    settings (an option left out is None, so the dataclass default applies)."""
    params = inspect.signature(search).parameters
    generated = [name for name in params if name in OPTIONS]
    assert generated == [f.name for f in option_fields()]
    assert all(params[name].default.default is None for name in generated)
    own = {"quick", "dry_run", "json_out", "resume", "verbose"}
    assert set(params) == own | set(OPTIONS)


def test_defaults_are_one_set(tmp_path, monkeypatch):
    """A search started from Python gets what the CLI gets (retries, actor reuse)."""
    monkeypatch.chdir(tmp_path)
    plan = dry_run("--dataset", "synthetic")
    settings = SearchSettings(dataset="synthetic")
    assert (settings.max_failures, settings.reuse_actors, settings.trials) == (2, True, 40)
    assert plan["trials"] == settings.trials and plan["sampler"] == settings.sampler
    assert plan["storage"] == settings.storage


@pytest.mark.parametrize(
    ("metric", "mode"),
    [
        ("dev_weighted_f1", "max"),
        ("dev_mean_pearson", "max"),
        ("dev_mse", "min"),
        ("dev_rmse", "min"),
        ("dev_mae", "min"),
        ("dev_loss", "min"),
        ("dev_error", "min"),
        ("dev_weighted_acc", "max"),
    ],
)
def test_metric_direction(metric, mode):
    assert SearchSettings(metric=metric).mode == mode


def test_metric_direction_through_the_cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert dry_run("--dataset", "synthetic", "--metric", "dev_mse")["mode"] == "min"
    assert dry_run("--dataset", "synthetic", "--metric", "dev_loss")["mode"] == "min"
    assert dry_run("--dataset", "synthetic")["mode"] == "max"
    # AVEC's Pearson r is maximised (its preset), whatever its name contains.
    assert SearchSettings(dataset="avec").metric == "dev_mean_pearson"
    assert SearchSettings(dataset="avec").mode == "max"


def dry_run(*args: str) -> dict:
    result = CliRunner().invoke(app, ["search", *args, "--dry-run", "--json"])
    assert result.exit_code == 0, result.stdout + result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("bad", "option"),
    [
        (dict(sampler="cmaes"), "--sampler"),
        (dict(scheduler="pbt"), "--scheduler"),
        (dict(trials=0), "--trials"),
        (dict(max_concurrent=0), "--max-concurrent"),
        (dict(epochs=0), "--epochs"),
        (dict(grace_period=0), "--grace-period"),
        (dict(startup_trials=0), "--startup-trials"),
        (dict(reduction_factor=1), "--reduction-factor"),
        (dict(brackets=0), "--brackets"),
        (dict(max_failures=-1), "--max-failures"),
        (dict(keep_checkpoints=0), "--keep-checkpoints"),
        (dict(gpu_memory_gb=0), "--gpu-memory-gb"),
        (dict(cpus_per_trial=0), "--cpus-per-trial"),
        (dict(max_dialogues=0), "--max-dialogues"),
        (dict(dataset="nope"), "--dataset"),
    ],
)
def test_bad_settings_name_their_option(bad, option):
    with pytest.raises(SettingsError) as error:
        SearchSettings(**bad)
    assert str(error.value).startswith(option)


def test_presets_come_from_the_dataset_registry():
    for name, spec in DATASETS.items():
        settings = SearchSettings(dataset=name)
        assert (settings.space, settings.metric) == (spec.space, spec.metric)


def test_build_space_bounds_k_and_adds_run_constants(tmp_path):
    settings = SearchSettings(
        space="paper",
        dataset="meld",
        gpu_memory_gb=11,
        gpus_per_trial=0.5,
        data_dir=str(tmp_path),
        constants={"label": "emotion"},
    )
    space = settings.build_space()
    bounds = space.space.keywords
    # memory=auto: K reaches past the paper's 14 to the space's ceiling (32) for the widest
    # trial, each trial's settings then come from the budget model (search_spaces/budget.py).
    assert isinstance(space.space, functools.partial) and bounds["k_max"] == 32
    assert bounds["memory"].budget_gb == 11
    assert space.constants["data_dir"] == str(tmp_path)
    assert space.constants["dataset"] == "meld" and space.constants["label"] == "emotion"
    assert space.constants["gpu_memory_gb"] == 11
    assert Path(space.constants["cache_dir"]).is_absolute()
    # CPU trials: no GPU cap in the trial config.
    cpu = SearchSettings(space="quick", dataset="synthetic").build_space()
    assert "gpu_memory_gb" not in cpu.constants


def test_a_named_space_that_draws_unknown_fields_is_refused(tmp_path):
    ranges = tmp_path / "mine.toml"
    ranges.write_text("[ranges]\nlrr = { low = 1e-4, high = 1e-2, log = true }\n")
    with pytest.raises(SettingsError, match="--space .*lrr"):
        SearchSettings(space=str(ranges)).build_space()


def test_spaces_pickle_for_ray(tmp_path):
    # Ray saves the searcher (space included) with plain pickle.
    ranges = tmp_path / "mine.toml"
    ranges.write_text("[ranges]\nlr = { low = 1e-4, high = 1e-2, log = true }\n")
    for name in ("paper", "quick", str(ranges)):
        space = SearchSettings(space=name, dataset="meld").build_space()
        assert isinstance(pickle.loads(pickle.dumps(space)), WithConstants)


def test_resume_accepts_repeated_options_and_names_those_that_differ(tmp_path, monkeypatch):
    """The up arrow plus ``--resume NAME``: options equal to the saved settings pass; the
    error names only the ones that differ, with the saved value."""
    from orchestrator.resume import changed_settings
    from orchestrator.tracking.runs import DEFAULT_EXPERIMENT, KIND_TAG, SEARCH_TAG
    from orchestrator.tracking.writer import MlflowWriter
    from orchestrator.tuner import parent_params

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("ORCH_MLRUNS", raising=False)
    settings = SearchSettings(
        dataset="synthetic", space="quick", max_dialogues=300, trials=6, name="taken"
    )
    params = parent_params(settings, settings.build_space(), max_t=2, constants={})
    saved = {k: str(v) for k, v in params.items()}
    typed = SearchSettings(dataset="synthetic", trials=6, seed=3, storage=str(tmp_path / "x"))
    given = {k: getattr(typed, k) for k in ("dataset", "trials", "seed", "storage")}
    assert changed_settings(given, saved) == ["seed"]  # storage may move

    writer = MlflowWriter()
    tags = {KIND_TAG: "search", SEARCH_TAG: "taken"}
    parent = writer.start_run(writer.experiment(DEFAULT_EXPERIMENT), "taken", tags, params)
    writer.end_run(parent, "FINISHED")
    args = ["search", "--resume", "taken", "--dataset", "synthetic", "--quick", "--trials", "6"]
    same = CliRunner().invoke(app, args)
    assert same.exit_code == 0 and "finished already" in same.stderr, same.stderr
    differ = CliRunner().invoke(app, [*args, "--seed", "3"])
    assert differ.exit_code == 2
    assert f"--seed (was {settings.seed})" in differ.stderr and "--trials" not in differ.stderr
