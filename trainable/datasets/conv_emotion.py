"""IEMOCAP and AVEC from conv-emotion's feature pickles.

IEMOCAP: ``IEMOCAP_features_raw.pkl``, a 9-tuple (videoIDs, videoSpeakers, videoLabels,
videoText, videoAudio, videoVisual, videoSentence, trainVid, testVid); each ``video*`` item is a
dict dialogue id -> per-utterance list. We use the transcripts (videoSentence) for the text
encoder, the acoustic (100-d) and visual (512-d) vectors as they are, and ignore the 100-d text
vectors. Speakers are 'M'/'F'; labels 0..5 = happy, sad, neutral, angry, excited, frustrated.

AVEC: ``AVEC_features_{1..4}.pkl``, the same 9-tuple once per attribute (valence, arousal,
expectancy, power), each with real-valued labels. Every turn's label is the vector of the four;
sentences, speakers and features come from file 1, and all four files must agree on dialogue ids
and lengths.

Splits: trainVid (IEMOCAP sessions 1-4) is train, testVid (session 5) is test, and dev is a
seeded random 10 % of the train dialogues (at least one), drawn before ``max_dialogues`` applies
so a smoke run sees the same dev dialogues as the full run. Dialogues are sorted by id so the
order never depends on how the pickle stored them (sets have no stable order across runs).
"""

from __future__ import annotations

import math
import random
from pathlib import Path

from trainable.data_types import DatasetSplits, Dialogue
from trainable.datasets.common import (
    DataError,
    clean_text,
    feature_matrix,
    lookup,
    natural_order,
    read_pickle,
    take,
)

LAYOUT = (
    "videoIDs",
    "videoSpeakers",
    "videoLabels",
    "videoText",
    "videoAudio",
    "videoVisual",
    "videoSentence",
    "trainVid",
    "testVid",
)
IEMOCAP_FILE = "IEMOCAP_features_raw.pkl"
IEMOCAP_LABELS = ("happy", "sad", "neutral", "angry", "excited", "frustrated")
AVEC_FILES = tuple(f"AVEC_features_{i}.pkl" for i in range(1, 5))
AVEC_DIMENSIONS = ("valence", "arousal", "expectancy", "power")
DEV_FRACTION = 0.1


def split_keys(fields: dict, path: Path, seed: int) -> dict[str, list]:
    """Sorted train/dev/test dialogue ids; dev is a seeded 10 % of trainVid."""
    train = sorted(fields["trainVid"], key=natural_order)
    test = sorted(fields["testVid"], key=natural_order)
    both = set(train) & set(test)
    if both:
        raise DataError(
            f"{path}: dialogue {sorted(both, key=natural_order)[0]!r} is in both trainVid and testVid"
        )
    if len(train) < 2:
        raise DataError(
            f"{path}: trainVid has {len(train)} dialogue(s); need at least 2 to hold out dev"
        )
    if not test:
        raise DataError(f"{path}: testVid is empty (expected the test dialogue ids)")
    n_dev = max(1, round(DEV_FRACTION * len(train)))
    held = set(random.Random(seed).sample(range(len(train)), n_dev))
    return {
        "train": [k for i, k in enumerate(train) if i not in held],
        "dev": [k for i, k in enumerate(train) if i in held],
        "test": test,
    }


class _Widths:
    """(width, name) of the first dialogue's features: every later dialogue must match."""

    def __init__(self):
        self.audio: tuple[int, str] | None = None
        self.visual: tuple[int, str] | None = None

    def check(self, fields: dict, modality: str, key, path: Path):
        table = "videoAudio" if modality == "audio" else "videoVisual"
        name = f"{table}[{key!r}]"
        first = getattr(self, modality)
        matrix = feature_matrix(lookup(fields, table, key, path), f"{path}: {name}", first)
        if first is None:
            setattr(self, modality, (matrix.shape[1], name))
        return matrix

    def dims(self) -> dict[str, int]:
        return {
            "audio_dim": self.audio[0] if self.audio else 0,
            "visual_dim": self.visual[0] if self.visual else 0,
        }


def build_dialogue(fields: dict, key, split: str, labels: list, path: Path, widths: _Widths):
    """One Dialogue from the per-dialogue tables; ``labels`` are already validated."""
    sentences = [clean_text(s) for s in lookup(fields, "videoSentence", key, path)]
    speakers = [str(s) for s in lookup(fields, "videoSpeakers", key, path)]
    audio = widths.check(fields, "audio", key, path)
    visual = widths.check(fields, "visual", key, path)
    counts = {
        "sentences": len(sentences),
        "speakers": len(speakers),
        "labels": len(labels),
        "audio rows": audio.shape[0],
        "visual rows": visual.shape[0],
    }
    if len(set(counts.values())) != 1 or not sentences:
        shown = ", ".join(f"{n} {what}" for what, n in counts.items())
        raise DataError(f"{path}: dialogue {key!r} has {shown} (expected one per utterance, >= 1)")
    return Dialogue(
        id=f"{split}/{key}",
        utterances=sentences,
        speakers=speakers,
        labels=labels,
        audio=audio,
        visual=visual,
    )


def _class_labels(values, key, path: Path) -> list[int]:
    labels = []
    for turn, value in enumerate(values):
        try:
            label = int(value)
        except (TypeError, ValueError):
            label = -1
        if label != value or not 0 <= label < len(IEMOCAP_LABELS):
            raise DataError(
                f"{path}: videoLabels[{key!r}] turn {turn} is {value!r}; expected an integer "
                f"0..{len(IEMOCAP_LABELS) - 1} ({', '.join(IEMOCAP_LABELS)})"
            )
        labels.append(label)
    return labels


def load_iemocap(
    data_dir: Path, *, max_dialogues: int | None = None, seed: int = 0
) -> DatasetSplits:
    path = data_dir / IEMOCAP_FILE
    fields = read_pickle(path, LAYOUT)
    widths = _Widths()
    splits = {}
    for split, keys in split_keys(fields, path, seed).items():
        splits[split] = [
            build_dialogue(
                fields,
                key,
                split,
                _class_labels(lookup(fields, "videoLabels", key, path), key, path),
                path,
                widths,
            )
            for key in take(keys, max_dialogues)
        ]
    return DatasetSplits(
        name="iemocap",
        task="categorical",
        label_names=list(IEMOCAP_LABELS),
        **splits,
        **widths.dims(),
        source={"dir": str(data_dir), "files": {IEMOCAP_FILE: path.stat().st_size}, "seed": seed},
    )


def _real_labels(values, key, path: Path) -> list[float]:
    labels = []
    for turn, value in enumerate(values):
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number):
            raise DataError(
                f"{path}: videoLabels[{key!r}] turn {turn} is {value!r}; expected a finite number"
            )
        labels.append(number)
    return labels


def _avec_labels(files: list[dict], paths: list[Path], key) -> list[list[float]]:
    """Per-turn [valence, arousal, expectancy, power] from the four files' labels."""
    columns = [
        _real_labels(lookup(f, "videoLabels", key, p), key, p)
        for f, p in zip(files, paths, strict=True)
    ]
    for column, p in zip(columns[1:], paths[1:], strict=True):
        if len(column) != len(columns[0]):
            raise DataError(
                f"{p}: dialogue {key!r} has {len(column)} labels but {paths[0].name} has "
                f"{len(columns[0])}"
            )
    return [list(turn) for turn in zip(*columns, strict=True)]


def _check_same_ids(files: list[dict], paths: list[Path]) -> None:
    for name in ("trainVid", "testVid"):
        first = set(files[0][name])
        for f, p in zip(files[1:], paths[1:], strict=True):
            other = set(f[name])
            if other != first:
                odd = sorted(first ^ other, key=natural_order)[0]
                raise DataError(
                    f"{p}: {name} differs from {paths[0].name} (dialogue {odd!r} is in only one)"
                )


def load_avec(data_dir: Path, *, max_dialogues: int | None = None, seed: int = 0) -> DatasetSplits:
    paths = [data_dir / name for name in AVEC_FILES]
    files = [read_pickle(p, LAYOUT) for p in paths]
    _check_same_ids(files, paths)
    widths = _Widths()
    splits = {}
    for split, keys in split_keys(files[0], paths[0], seed).items():
        splits[split] = [
            build_dialogue(files[0], key, split, _avec_labels(files, paths, key), paths[0], widths)
            for key in take(keys, max_dialogues)
        ]
    return DatasetSplits(
        name="avec",
        task="dimensional",
        label_names=list(AVEC_DIMENSIONS),
        **splits,
        **widths.dims(),
        source={
            "dir": str(data_dir),
            "files": {p.name: p.stat().st_size for p in paths},
            "seed": seed,
        },
    )
