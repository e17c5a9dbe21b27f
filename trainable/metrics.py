"""Evaluation metrics of the paper (Section 5.3) and a few more for analysis.

Categorical (MELD, IEMOCAP): weighted F1 (the paper's headline number), weighted accuracy
(class-frequency-weighted mean recall, which equals plain accuracy), macro F1 and per-class F1.
Dimensional (AVEC): Pearson r and mean squared error per dimension.
Which way is better for a metric name (for searches and schedulers): ``metric_mode``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Name parts that mark a metric where lower is better: losses and errors.
LOWER_IS_BETTER = ("loss", "mse", "mae", "rmse", "error")


def categorical_metrics(
    labels: Sequence[int], preds: Sequence[int], label_names: Sequence[str]
) -> dict[str, float]:
    from sklearn.metrics import f1_score, recall_score  # here: search_spaces imports this module

    y, p = np.asarray(labels), np.asarray(preds)
    if y.size == 0:
        raise ValueError("no labelled turns to evaluate")
    classes = list(range(len(label_names)))
    per_class = f1_score(y, p, labels=classes, average=None, zero_division=0)
    present = np.bincount(y, minlength=len(classes)) > 0
    recall = recall_score(y, p, labels=classes, average=None, zero_division=0)
    support = np.bincount(y, minlength=len(classes)) / y.size
    out = {
        "weighted_f1": 100 * f1_score(y, p, labels=classes, average="weighted", zero_division=0),
        "weighted_acc": 100 * float((support * recall).sum()),
        "macro_f1": 100 * float(per_class[present].mean()),
        "accuracy": 100 * float((y == p).mean()),
    }
    for name, value in zip(label_names, per_class, strict=True):
        out[f"f1_{name}"] = 100 * float(value)
    return out


def dimensional_metrics(
    targets: np.ndarray, preds: np.ndarray, dim_names: Sequence[str]
) -> dict[str, float]:
    y, p = np.asarray(targets, dtype=np.float64), np.asarray(preds, dtype=np.float64)
    if y.shape[0] < 2:
        raise ValueError("Pearson r needs at least two labelled turns")
    out: dict[str, float] = {}
    rs = []
    for d, name in enumerate(dim_names):
        yd, pd = y[:, d], p[:, d]
        denom = yd.std() * pd.std()
        r = float(((yd - yd.mean()) * (pd - pd.mean())).mean() / denom) if denom > 0 else 0.0
        rs.append(r)
        out[f"pearson_{name}"] = r
        out[f"mse_{name}"] = float(((yd - pd) ** 2).mean())
    out["mean_pearson"] = float(np.mean(rs))
    out["mse"] = float(((y - p) ** 2).mean())
    return out


def primary_metric(task: str) -> str:
    """The metric model selection uses: weighted F1 (CE) or mean Pearson r (DE)."""
    return "weighted_f1" if task == "categorical" else "mean_pearson"


def metric_mode(metric: str) -> str:
    """``"min"`` for losses and errors, ``"max"`` for everything else.

    The one place that decides the direction of a reported metric (``dev_mse``, ``train_loss``,
    ``test_mae_valence`` are minimised; ``dev_weighted_f1``, ``dev_accuracy``,
    ``dev_mean_pearson`` maximised), so a search preset, a ``--metric`` override and the
    scheduler cannot disagree. Matching is on the lower-cased name, so prefixes such as
    ``dev_`` and per-dimension suffixes do not matter.
    """
    name = metric.lower()
    return "min" if any(part in name for part in LOWER_IS_BETTER) else "max"
