"""metric_mode: the one place that says whether a metric is minimised or maximised."""

from __future__ import annotations

import pytest

from trainable.metrics import categorical_metrics, dimensional_metrics, metric_mode


@pytest.mark.parametrize(
    "metric",
    ["dev_mse", "dev_loss", "train_loss", "test_mse_valence", "dev_mae", "dev_rmse", "val_error"],
)
def test_losses_and_errors_are_minimised(metric):
    assert metric_mode(metric) == "min"


@pytest.mark.parametrize(
    "metric",
    [
        "dev_weighted_f1",
        "dev_weighted_acc",
        "dev_accuracy",
        "dev_macro_f1",
        "dev_mean_pearson",
        "dev_pearson_valence",
        "test_f1_joy",
    ],
)
def test_scores_are_maximised(metric):
    assert metric_mode(metric) == "max"


def test_every_reported_metric_gets_the_right_direction():
    # The names the engine reports: everything but the MSEs is higher-is-better.
    cat = categorical_metrics([0, 1, 1], [0, 1, 0], ["a", "b"])
    dim = dimensional_metrics([[0.0], [1.0], [2.0]], [[0.1], [0.9], [2.2]], ["valence"])
    modes = {name: metric_mode(f"dev_{name}") for name in {**cat, **dim}}
    assert {n for n, m in modes.items() if m == "min"} == {"mse", "mse_valence"}
