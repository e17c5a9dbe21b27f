"""Padding a list of encoded dialogues into the model's batch tensors."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def collate(items: Sequence[dict], pad_id: int = 0, task: str = "categorical") -> dict:
    """Pad dialogues to (B, L, T) tokens and (B, L) turns.

    Each item has ``input_ids`` and ``token_type_ids`` (one token list per turn), or instead
    ``features`` ((L, He) [CLS] vectors of a frozen encoder); ``labels`` (one per turn: class
    index or a list of floats) and optionally ``audio`` / ``visual`` ((L, D) arrays or nested
    lists). Missing labels (padding) are -100 / 0.0 and masked by ``turn_mask``.
    """
    if not items:
        raise ValueError("cannot collate an empty batch")
    if "features" in items[0]:
        return _collate_frozen(items, task)
    B = len(items)
    L = max(len(it["input_ids"]) for it in items)
    T = max(len(turn) for it in items for turn in it["input_ids"])
    input_ids = torch.full((B, L, T), pad_id, dtype=torch.long)
    token_type_ids = torch.zeros((B, L, T), dtype=torch.long)
    attention_mask = torch.zeros((B, L, T), dtype=torch.long)
    turn_mask = torch.zeros((B, L), dtype=torch.bool)
    for b, it in enumerate(items):
        for i, (ids, types) in enumerate(zip(it["input_ids"], it["token_type_ids"], strict=True)):
            input_ids[b, i, : len(ids)] = torch.as_tensor(ids)
            token_type_ids[b, i, : len(types)] = torch.as_tensor(types)
            attention_mask[b, i, : len(ids)] = 1
        turn_mask[b, : len(it["input_ids"])] = True
    batch = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": token_type_ids,
        "turn_mask": turn_mask,
    }
    return _add_labels_and_features(batch, items, task)


def _collate_frozen(items: Sequence[dict], task: str) -> dict:
    """Frozen-encoder dialogues: (B, L, He) vectors instead of (B, L, T) tokens."""
    B, L = len(items), max(len(it["features"]) for it in items)
    features = torch.zeros((B, L, np.asarray(items[0]["features"]).shape[1]))
    turn_mask = torch.zeros((B, L), dtype=torch.bool)
    for b, it in enumerate(items):
        x = np.asarray(it["features"], dtype=np.float32)
        features[b, : len(x)] = torch.from_numpy(x)
        turn_mask[b, : len(x)] = True
    return _add_labels_and_features({"features": features, "turn_mask": turn_mask}, items, task)


def _add_labels_and_features(batch: dict, items: Sequence[dict], task: str) -> dict:
    B, L = batch["turn_mask"].shape
    if "labels" in items[0]:
        if task == "categorical":
            labels = torch.full((B, L), -100, dtype=torch.long)
            for b, it in enumerate(items):
                labels[b, : len(it["labels"])] = torch.as_tensor(it["labels"], dtype=torch.long)
        else:
            dims = len(items[0]["labels"][0])
            labels = torch.zeros((B, L, dims), dtype=torch.float32)
            for b, it in enumerate(items):
                labels[b, : len(it["labels"])] = torch.as_tensor(
                    np.asarray(it["labels"], dtype=np.float32)
                )
        batch["labels"] = labels
    for key in ("audio", "visual"):
        if items[0].get(key) is not None:
            dim = np.asarray(items[0][key]).shape[1]
            feats = torch.zeros((B, L, dim), dtype=torch.float32)
            for b, it in enumerate(items):
                x = np.asarray(it[key], dtype=np.float32)
                feats[b, : len(x)] = torch.from_numpy(x)
            batch[key] = feats
    return batch


def model_inputs(batch: dict) -> dict:
    """The subset of a batch that ``DialogueTRM.forward`` takes."""
    keys = (
        "input_ids",
        "attention_mask",
        "token_type_ids",
        "turn_mask",
        "audio",
        "visual",
        "features",
    )
    return {k: batch[k] for k in keys if k in batch}
