"""`orch train --memory auto`: the cheapest memory settings that fit --gpu-memory-gb, trained
with and recorded in the MLflow run (bad values: tests/orchestrator/test_train_options.py)."""

import json
from dataclasses import replace

from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.commands.train import build_configs
from orchestrator.tracking.store import client_for, default_tracking_uri
from search_spaces.budget import estimate_gb
from search_spaces.memory_plan import config_profile, plan_memory

runner = CliRunner()


def test_auto_trains_with_the_cheapest_settings_that_fit_and_records_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model, train = build_configs(None, {"encoder": "tiny"})
    profile = config_profile(model, train.batch_size, 3)
    # A budget that needs bf16, checkpointing and chunks of one turn: between their estimate
    # and fp32's with the same savings (the next cheapest at equal compute).
    least = {
        p: estimate_gb(model.k, replace(profile, precision=p, gradient_checkpointing=True,
                                        chunk_size=1))
        for p in ("bf16", "fp32")
    }  # fmt: skip
    assert least["bf16"] < least["fp32"]
    budget = round((least["bf16"] + least["fp32"]) / 2, 5)
    plan = plan_memory(model.k, budget, profile)
    assert plan.precision == "bf16" and plan.gradient_checkpointing and plan.chunk_size > 0
    args = ["train", "--dataset", "synthetic", "--encoder", "tiny", "--max-dialogues", "4"]
    args += ["--epochs", "1", "--memory", "auto", "--gpu-memory-gb", str(budget), "--json"]
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
    assert params["chunk_size"] == str(plan.chunk_size) and params["gpu_memory_gb"] == str(budget)
    estimate = estimate_gb(model.k, replace(profile, **plan.settings()))
    assert 0 < estimate <= budget and float(params["memory_estimate_gb"]) == round(estimate, 2)
