"""`orch train --memory auto`: the cheapest memory settings that fit --gpu-memory-gb, trained
with and recorded in the MLflow run (bad values: tests/orchestrator/test_train_options.py)."""

import json

from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.commands.train import build_configs
from orchestrator.tracking import client_for, default_tracking_uri
from search_spaces.memory_plan import config_profile, plan_memory

runner = CliRunner()
BUDGET_GB = 0.1  # small enough that the tiny preset needs bf16, checkpointing and chunks


def test_auto_trains_with_the_cheapest_settings_that_fit_and_records_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model, train = build_configs(None, {"encoder": "tiny"})
    plan = plan_memory(model.k, BUDGET_GB, config_profile(model, train.batch_size, 3))
    assert plan.precision == "bf16" and plan.gradient_checkpointing and plan.chunk_size > 0
    args = ["train", "--dataset", "synthetic", "--encoder", "tiny", "--max-dialogues", "4"]
    args += ["--epochs", "1", "--memory", "auto", "--gpu-memory-gb", str(BUDGET_GB), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output + result.stderr
    assert f"memory auto: bf16, checkpointing on, chunks of {plan.chunk_size} turns" in (
        result.stderr
    )
    out = json.loads(result.stdout.strip().splitlines()[-1])
    params = client_for(default_tracking_uri()).get_run(out["run_id"]).data.params
    # precision, checkpointing and chunk size are logged from the trained model's config.
    assert {k: params[k] for k in ("memory", "precision", "gradient_checkpointing")} == {
        "memory": "auto",
        "precision": "bf16",
        "gradient_checkpointing": "True",
    }
    assert params["chunk_size"] == str(plan.chunk_size) and params["gpu_memory_gb"] == "0.1"
    assert 0 < float(params["memory_estimate_gb"]) <= BUDGET_GB
