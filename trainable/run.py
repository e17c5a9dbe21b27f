"""From a dataset name and two configs to a ready Trainer, and back from a checkpoint.

Both `orch train` and every search trial go through ``prepare``; nothing here knows about
Ray or MLflow.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import numpy as np
import torch

from trainable.checkpoint import load_tensors, load_tokenizer_from, read_json
from trainable.config import DialogueTRMConfig
from trainable.encoder import build_encoder, encoder_from_config
from trainable.engine import TrainConfig, Trainer, load_weights
from trainable.features import encode_splits
from trainable.model import DialogueTRM


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def fit_to_dataset(config: DialogueTRMConfig, splits) -> DialogueTRMConfig:
    """The dataset decides the task, label count and feature widths."""
    return dataclasses.replace(
        config,
        task=splits.task,
        num_labels=splits.num_labels,
        audio_dim=splits.audio_dim,
        visual_dim=splits.visual_dim,
    )


def prepare(
    dataset: str,
    model_config: DialogueTRMConfig,
    train_config: TrainConfig,
    *,
    data_dir: str | Path | None = None,
    max_dialogues: int | None = None,
    label: str = "emotion",
    cache_dir: Path | None = None,
) -> Trainer:
    from trainable.datasets import load_dataset

    splits = load_dataset(
        dataset, data_dir, max_dialogues=max_dialogues, seed=train_config.seed, label=label
    )
    model_config = fit_to_dataset(model_config, splits)
    data = encode_splits(splits, model_config, cache_dir)
    seed_everything(train_config.seed)
    model = DialogueTRM(model_config, build_encoder(model_config, data.tokenizer))
    if model_config.freeze_encoder:
        freeze(model, data, train_config)
    return Trainer(
        model,
        data.tokenizer,
        data,
        train_config,
        label_names=splits.label_names,
        dataset=splits.name,
    )


def freeze(model: DialogueTRM, data, train_config: TrainConfig) -> None:
    """The frozen-encoder fidelity: no encoder gradients, ever, and every dialogue carries
    its cached [CLS] vectors instead of tokens (``trainable.frozen``)."""
    from trainable.engine import resolve_device
    from trainable.frozen import attach_frozen_features

    encoder = model.utterance.encoder
    encoder.requires_grad_(False)
    device = resolve_device(train_config.device)
    encoder.to(device)
    data.frozen_from_cache = attach_frozen_features(
        data, model.config, encoder, model.utterance.segments, device
    )


def load_model(path: str | Path, device: str = "cpu") -> tuple[DialogueTRM, object, dict]:
    """Rebuild a trained model from a checkpoint folder (no download, no unpickling)."""
    meta = read_json(path, "config.json")
    config = DialogueTRMConfig.from_dict(meta["model"])
    tokenizer = load_tokenizer_from(path)
    outside = meta.get("encoder_weights") == "pretrained"  # a frozen encoder's own files
    encoder = build_encoder(config, tokenizer) if outside else None
    model = DialogueTRM(config, encoder or encoder_from_config(meta["encoder_config"]))
    load_weights(model, load_tensors(path, "model.pt", device), outside)
    if config.freeze_encoder:
        model.utterance.encoder.requires_grad_(False)
    return model.to(device).eval(), tokenizer, meta


def evaluate_checkpoint(
    path: str | Path,
    *,
    data_dir: str | Path | None = None,
    max_dialogues: int | None = None,
    label: str = "emotion",
    split: str = "dev",
    device: str = "cpu",
) -> dict[str, float]:
    """Metrics of a saved model on a split of the dataset it was trained on, with its own
    tokenizer and the dataset recorded in the checkpoint."""
    from trainable.datasets import load_dataset

    model, tokenizer, meta = load_model(path, device)
    train = TrainConfig.from_dict({**meta["train"], "device": device})
    splits = load_dataset(
        meta["dataset"], data_dir, max_dialogues=max_dialogues, seed=train.seed, label=label
    )
    data = encode_splits(splits, model.config, tokenizer=tokenizer)
    if model.config.freeze_encoder:
        freeze(model, data, train)
    trainer = Trainer(
        model, tokenizer, data, train, label_names=meta["label_names"], dataset=meta["dataset"]
    )
    return trainer.evaluate(split)
