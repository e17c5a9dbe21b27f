"""`orch train` options map one to one onto the config dataclasses; presets match the code."""

from dataclasses import fields

import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.commands.train import DERIVED, build_configs, train
from orchestrator.options import field_docs, option_name
from trainable.config import DialogueTRMConfig
from trainable.engine import TrainConfig
from trainable.presets import TRAIN_PRESETS as PRESETS

runner = CliRunner()


def _option_names():
    import typer.main

    command = typer.main.get_command(app).commands["train"]
    return {name for p in command.params for name in p.opts}


def test_every_config_field_is_an_option_and_back():
    names = _option_names()
    for cls in (DialogueTRMConfig, TrainConfig):
        for f in fields(cls):
            if f.name in DERIVED:
                assert option_name(f.name) not in names  # the dataset decides these
            else:
                assert option_name(f.name) in names, f.name
    assert "--warmup" in names  # the paper's word works too


def test_every_field_has_a_docstring():
    for cls in (DialogueTRMConfig, TrainConfig):
        docs = field_docs(cls)
        assert set(docs) == {f.name for f in fields(cls)}, cls


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_name_real_fields_and_validate(name):
    known = {f.name for f in fields(DialogueTRMConfig)} | {f.name for f in fields(TrainConfig)}
    assert set(PRESETS[name]) <= known
    model, train_cfg = build_configs(name, {})
    for key, value in PRESETS[name].items():
        assert getattr(model if hasattr(model, key) else train_cfg, key) == value


def test_options_override_presets_and_tiny_is_default_for_tiny():
    model, train_cfg = build_configs(None, {"encoder": "tiny", "k": 9, "lr": 0.5})
    assert (model.hidden_size, model.k, train_cfg.lr) == (PRESETS["tiny"]["hidden_size"], 9, 0.5)
    paper, paper_train = build_configs(None, {})
    assert (paper.encoder, paper.hidden_size, paper_train.lr) == ("bert-base-uncased", 768, 6e-6)


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--dataset", "nope"], "--dataset 'nope' is unknown"),
        (["--dataset", "synthetic", "--k", "-1"], "--k: k must be >= 0"),
        (["--dataset", "synthetic", "--lr", "0"], "--lr: lr must be > 0"),
        (["--dataset", "synthetic", "--fusion", "sum"], "--fusion: fusion must be one of"),
        (["--dataset", "synthetic", "--hidden-size", "30", "--intra-heads", "4"], "--hidden-size"),
        (["--dataset", "synthetic", "--preset", "huge"], "--preset 'huge' is unknown"),
        (["--dataset", "synthetic", "--max-dialogues", "0"], "--max-dialogues must be >= 1"),
        (["--dataset", "synthetic", "--memory", "some"], "--memory must be one of manual, auto"),
        (
            ["--dataset", "synthetic", "--memory", "auto", "--precision", "bf16"],
            "--memory auto chooses --precision itself",
        ),
        (
            ["--dataset", "synthetic", "--memory", "auto", "--gpu-memory-gb", "0"],
            "--gpu-memory-gb must be > 0",
        ),
        (
            ["--dataset", "synthetic", "--memory", "auto", "--gpu-memory-gb", "2"],
            "--gpu-memory-gb 2 is too small for this model at K = 14",
        ),
    ],
)
def test_bad_options_are_one_line_usage_errors(args, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["train", *args])
    assert result.exit_code == 2
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output
    assert not (tmp_path / "mlruns").exists()  # nothing half-written


def test_train_signature_has_no_var_kwargs():
    import inspect

    kinds = {p.kind for p in inspect.signature(train).parameters.values()}
    assert inspect.Parameter.VAR_KEYWORD not in kinds
