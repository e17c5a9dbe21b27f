"""Tokenized features of a dataset, cached as Arrow with Hugging Face ``datasets``.

The cache key covers everything that changes the encoder inputs: the dialogues' content and the
config fields marked ``shapes_features`` in ``trainable.config`` (the encoder, the tiny
encoder's vocabulary size, K, max length and the input ablations). A tiny encoder's trained
tokenizer is stored beside the features so a cached run reuses the exact vocabulary.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from trainable.config import DialogueTRMConfig, feature_fields
from trainable.data_types import DatasetSplits, Dialogue
from trainable.datasets.locate import cache_root
from trainable.encoder import InputBuilder, encoder_has_segments, load_tokenizer

FORMAT_VERSION = 1


def default_cache_dir() -> Path:
    """Root of the feature cache: orch's user cache, shared with the dataset downloads."""
    return cache_root()


def content_hash(splits: DatasetSplits) -> str:
    """A digest of every dialogue's text, speakers, labels and feature shapes/values."""
    h = hashlib.sha256()
    for split, dialogues in splits.splits().items():
        h.update(split.encode())
        for d in dialogues:
            h.update(json.dumps([d.id, d.utterances, d.speakers, d.labels]).encode())
            for x in (d.audio, d.visual):
                h.update(b"-" if x is None else x.tobytes())
    return h.hexdigest()


def feature_key(splits: DatasetSplits, config: DialogueTRMConfig) -> str:
    """Cache key: the data's digest and every config field that shapes the features."""
    values = {name: getattr(config, name) for name in feature_fields()}
    if config.encoder != "tiny":
        values["tiny_vocab_size"] = None  # only the tiny encoder trains a vocabulary
    values |= {"version": FORMAT_VERSION, "data": content_hash(splits)}
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:20]


@dataclass
class EncodedSplits:
    """Per-split lists of encoded dialogues (dicts ready for ``batching.collate``)."""

    tokenizer: object
    train: list[dict]
    dev: list[dict]
    test: list[dict]
    path: Path
    from_cache: bool
    frozen_from_cache: bool | None = None
    """With a frozen encoder: whether its [CLS] vectors came from the cache."""


def _rows(dialogues: list[Dialogue], builder: InputBuilder) -> dict[str, list]:
    rows: dict[str, list] = {"id": [], "input_ids": [], "token_type_ids": [], "labels": []}
    audio = dialogues and dialogues[0].audio is not None
    visual = dialogues and dialogues[0].visual is not None
    if audio:
        rows["audio"] = []
    if visual:
        rows["visual"] = []
    for d in dialogues:
        turns = builder.dialogue(d.utterances, d.speakers)
        rows["id"].append(d.id)
        rows["input_ids"].append([t.input_ids for t in turns])
        rows["token_type_ids"].append([t.token_type_ids for t in turns])
        rows["labels"].append(d.labels)
        if audio:
            rows["audio"].append(d.audio.tolist())
        if visual:
            rows["visual"].append(d.visual.tolist())
    return rows


def encode_splits(
    splits: DatasetSplits,
    config: DialogueTRMConfig,
    cache_dir: Path | None = None,
    tokenizer=None,
) -> EncodedSplits:
    """Encode every split (eq 1 inputs), reading from or writing to the Arrow cache.

    With ``tokenizer`` (a checkpoint's own), the splits are encoded with it in memory. A tiny
    encoder's vocabulary is built from the training texts it saw (so it depends on the data
    and on ``--max-dialogues``); a trained model must read inputs made with its own vocabulary,
    not one rebuilt from whatever texts are loaded now.
    """
    import datasets

    datasets.disable_progress_bars()
    names = ("train", "dev", "test")
    if tokenizer is not None:
        builder = InputBuilder(tokenizer, config, segment_ids=encoder_has_segments(config))
        lists = {s: _to_list(_rows(getattr(splits, s), builder)) for s in names}
        return EncodedSplits(tokenizer, **lists, path=Path(), from_cache=False)
    root = Path(cache_dir or default_cache_dir()) / "features" / splits.name
    path = root / feature_key(splits, config)
    if (path / "complete").exists():
        tokenizer = _load_tokenizer(path, config)
        loaded = {s: datasets.load_from_disk(str(path / s)).to_list() for s in names}
        return EncodedSplits(tokenizer, **loaded, path=path, from_cache=True)

    texts = [u for d in splits.train for u in d.utterances]
    tokenizer = load_tokenizer(config, texts)
    builder = InputBuilder(tokenizer, config, segment_ids=encoder_has_segments(config))
    encoded = {s: datasets.Dataset.from_dict(_rows(getattr(splits, s), builder)) for s in names}
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
    try:  # write everything, then move it into place: a crash never leaves a half cache
        for s in names:
            encoded[s].save_to_disk(str(tmp / s))
        if config.encoder == "tiny":
            tokenizer.save_pretrained(str(tmp / "tokenizer"))
        (tmp / "complete").write_text(json.dumps({"dataset": splits.name, **config.to_dict()}))
        try:
            tmp.rename(path)
        except OSError:  # another process (a concurrent trial) finished the same key first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    lists = {s: encoded[s].to_list() for s in names}
    return EncodedSplits(tokenizer, **lists, path=path, from_cache=False)


def _to_list(rows: dict[str, list]) -> list[dict]:
    return [dict(zip(rows, values, strict=True)) for values in zip(*rows.values(), strict=True)]


def _load_tokenizer(path: Path, config: DialogueTRMConfig):
    if config.encoder == "tiny":
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast.from_pretrained(str(path / "tokenizer"))
    return load_tokenizer(config)
