"""MELD from its official CSVs (read with Hugging Face ``datasets``), plus optional audio.

Files in the data folder: ``train_sent_emo.csv``, ``dev_sent_emo.csv``, ``test_sent_emo.csv``
(UTF-8, CRLF, RFC-4180 quoting). Every column is read as a string, so nothing is mangled into
numbers or NaN. Rows are grouped by ``Dialogue_ID`` and ordered by ``Utterance_ID`` as integers:
ids have gaps and ``Sr No.`` repeats, so neither row order nor ``Sr No.`` is trusted. Speakers
keep their names (only equality matters). Row numbers in errors count the header as row 1, as a
spreadsheet shows them.

Labels: 7 emotions in conv-emotion's order (``EMOTIONS``), or with ``label="sentiment"`` the
3 sentiments. Dialogue ids are ``"<split>/<Dialogue_ID>"``.

Audio (optional): when ``MELD_features_raw.pkl`` (conv-emotion's layout) lies beside the CSVs,
each utterance gets its 300-d acoustic vector; without it the dataset is text-only. There is no
visual modality for MELD.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from trainable.data_types import DatasetSplits, Dialogue
from trainable.datasets.common import DataError, feature_matrix, one_line, read_pickle, take

EMOTIONS = ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger")
SENTIMENTS = ("neutral", "positive", "negative")
SPLIT_FILES = {
    "train": "train_sent_emo.csv",
    "dev": "dev_sent_emo.csv",
    "test": "test_sent_emo.csv",
}
COLUMNS = ("Utterance", "Speaker", "Dialogue_ID", "Utterance_ID")  # + the label column used
FEATURES_FILE = "MELD_features_raw.pkl"
FEATURES_LAYOUT = (
    "videoIDs",
    "videoSpeakers",
    "videoLabels",
    "videoText",
    "videoAudio",
    "videoSentence",
    "trainVid",
    "testVid",
    "videoSentiment",
)
# How conv-emotion's MELD pickle keys dialogues: one integer range over all three splits in the
# order train, dev, test. Train keys are the train Dialogue_IDs (0..1038: 1039 slots, id 60 is
# absent from the CSV), dev keys are 1039 + Dialogue_ID (1039..1152, inside trainVid) and test
# keys are 1153 + Dialogue_ID (1153..1432 = testVid). videoIDs[key] lists each turn's
# Utterance_ID, so turns are matched by id, not by position. Anything that does not line up
# raises a DataError naming the key, rather than attaching another dialogue's audio.
PICKLE_KEY_OFFSET = {"train": 0, "dev": 1039, "test": 1153}


@dataclass
class _Conversation:
    """A loaded dialogue plus the ids needed to match it with the feature pickle."""

    split: str
    dialogue_id: int
    utterance_ids: list[int]
    dialogue: Dialogue


def load_meld(
    data_dir: Path, *, max_dialogues: int | None = None, label: str = "emotion"
) -> DatasetSplits:
    label_names = EMOTIONS if label == "emotion" else SENTIMENTS
    column = "Emotion" if label == "emotion" else "Sentiment"
    conversations: dict[str, list[_Conversation]] = {}
    checksums = {}
    for split, filename in SPLIT_FILES.items():
        path = data_dir / filename
        columns, checksums[filename] = read_csv_columns(path, (*COLUMNS, column))
        built = build_conversations(columns, split, path, column, label_names)
        conversations[split] = take(built, max_dialogues)  # before audio: match only these
    audio_dim = 0
    features = data_dir / FEATURES_FILE
    if features.is_file():
        audio_dim = attach_audio(features, conversations)
    splits = {s: [c.dialogue for c in cs] for s, cs in conversations.items()}
    source = {"dir": str(data_dir), "sha256": checksums, "label": label}
    if audio_dim:
        source["audio"] = {"file": str(features), "bytes": features.stat().st_size}
    return DatasetSplits(
        name="meld",
        task="categorical",
        label_names=list(label_names),
        **splits,
        audio_dim=audio_dim,
        source=source,
    )


def read_csv_columns(path: Path, required=COLUMNS) -> tuple[dict[str, list[str]], str]:
    """All columns of a MELD CSV as lists of strings, and the file's sha256."""
    if not path.is_file():
        raise DataError(
            f"missing file {path} (expected the official MELD {path.name}; "
            "pass --data-dir or set ORCH_DATA_DIR to the folder that holds it)"
        )
    raw = path.read_bytes()
    header, has_rows = _check_text(path, raw, required)
    if not has_rows:
        raise DataError(f"{path}: no rows (the split is empty; expected one row per utterance)")
    return _load_with_datasets(path, header), hashlib.sha256(raw).hexdigest()


def _check_text(path: Path, raw: bytes, required) -> tuple[list[str], bool]:
    """Checks done before ``datasets`` sees the file, whose own errors are less precise."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(
            f"{path}: invalid UTF-8 at line {line} (byte {err.start}); save the file as UTF-8"
        ) from None
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff")))
    try:
        header = next(reader, None)
        if not header:
            raise DataError(
                f"{path}: empty file (expected a header row with {', '.join(required)})"
            )
        has_rows = False
        for number, row in enumerate(reader, start=2):  # header is row 1
            if row and len(row) != len(header):  # pandas would pad short rows silently
                raise DataError(f"{path} row {number}: {len(row)} fields, expected {len(header)}")
            has_rows = has_rows or bool(row)
    except csv.Error as err:
        raise DataError(f"{path}: malformed CSV ({one_line(err)})") from None
    header = [name.strip() for name in header]
    for name in required:
        if name not in header:
            raise DataError(f"{path}: missing column {name!r} (header has {', '.join(header)})")
    if len(set(header)) != len(header):
        raise DataError(f"{path}: repeated column names in the header ({', '.join(header)})")
    return header, has_rows


@contextmanager
def _quiet_datasets():
    """``datasets`` logs parser errors itself before raising; we report them once, our way."""
    logger = logging.getLogger("datasets")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _load_with_datasets(path: Path, header: list[str]) -> dict[str, list[str]]:
    import datasets

    datasets.disable_progress_bars()
    # Strings for every column: no int/float guessing, and "NA"/"null" utterances stay text.
    features = datasets.Features({name: datasets.Value("string") for name in header})
    # A throwaway cache: nothing is written beside the data or left in the HF cache.
    with tempfile.TemporaryDirectory(prefix="orch-meld-") as tmp, _quiet_datasets():
        try:
            table = datasets.load_dataset(
                "csv",
                data_files={"rows": str(path)},
                split="rows",
                cache_dir=tmp,
                features=features,
                keep_default_na=False,
                na_filter=False,
                encoding="utf-8-sig",
                keep_in_memory=True,
            )
        except Exception as err:  # datasets wraps pandas' parser errors in its own types
            raise DataError(f"{path}: malformed CSV ({one_line(err.__cause__ or err)})") from None
        return {name.strip(): values for name, values in table.to_dict().items()}


def _int(value: str, where: str, column: str) -> int:
    text = value.strip()
    if not text.isdigit():
        raise DataError(f"{where}: {column} {value!r} is not a non-negative integer")
    return int(text)


def build_conversations(
    columns: dict[str, list[str]],
    split: str,
    path: Path,
    label_column: str,
    label_names: tuple[str, ...],
) -> list[_Conversation]:
    """Rows grouped into dialogues (by Dialogue_ID) with turns ordered by Utterance_ID."""
    index = {name: i for i, name in enumerate(label_names)}
    groups: dict[int, dict[int, tuple[int, str, str, int]]] = {}
    rows = zip(
        columns["Dialogue_ID"],
        columns["Utterance_ID"],
        columns["Utterance"],
        columns["Speaker"],
        columns[label_column],
        strict=True,
    )
    for number, (d, u, text, speaker, name) in enumerate(rows, start=2):  # header is row 1
        where = f"{path} row {number}"
        dialogue, utterance = _int(d, where, "Dialogue_ID"), _int(u, where, "Utterance_ID")
        label = index.get(name.strip().lower())
        if label is None:
            raise DataError(
                f"{where}: unknown {label_column} {name!r}; expected one of {', '.join(label_names)}"
            )
        turns = groups.setdefault(dialogue, {})
        if utterance in turns:
            raise DataError(
                f"{where}: duplicate key (Dialogue_ID {dialogue}, Utterance_ID {utterance}), "
                f"first seen at row {turns[utterance][0]}"
            )
        turns[utterance] = (number, text.strip(), speaker.strip(), label)
    conversations = []
    for dialogue in sorted(groups):
        ordered = sorted(groups[dialogue].items())
        conversations.append(
            _Conversation(
                split=split,
                dialogue_id=dialogue,
                utterance_ids=[u for u, _ in ordered],
                dialogue=Dialogue(
                    id=f"{split}/{dialogue}",
                    utterances=[t[1] for _, t in ordered],
                    speakers=[t[2] for _, t in ordered],
                    labels=[t[3] for _, t in ordered],
                ),
            )
        )
    return conversations


def attach_audio(path: Path, conversations: dict[str, list[_Conversation]]) -> int:
    """Set every dialogue's ``audio`` from conv-emotion's MELD pickle; returns the width."""
    fields = read_pickle(path, FEATURES_LAYOUT)
    ids, audio = fields["videoIDs"], fields["videoAudio"]
    first = None  # (width, name) of the first dialogue's audio
    for split, convs in conversations.items():
        for conv in convs:
            key = conv.dialogue_id + PICKLE_KEY_OFFSET[split]
            where = f"{path}: dialogue key {key} ({split} Dialogue_ID {conv.dialogue_id})"
            if key not in ids or key not in audio:
                raise DataError(
                    f"{where} is missing from videoIDs/videoAudio (keys are train Dialogue_ID, "
                    "dev 1039 + Dialogue_ID, test 1153 + Dialogue_ID)"
                )
            matrix = feature_matrix(audio[key], where, first)
            first = first or (matrix.shape[1], f"dialogue key {key}")
            rows = _rows_by_utterance(ids[key], where)
            if len(rows) != matrix.shape[0]:
                raise DataError(f"{where}: {len(rows)} videoIDs but {matrix.shape[0]} audio rows")
            missing = [u for u in conv.utterance_ids if u not in rows]
            if missing or len(rows) != len(conv.utterance_ids):
                raise DataError(
                    f"{where}: the pickle has utterances {sorted(rows)} but the CSV has "
                    f"{conv.utterance_ids}"
                )
            conv.dialogue.audio = matrix[[rows[u] for u in conv.utterance_ids]]
    return first[0] if first else 0


def _rows_by_utterance(values, where: str) -> dict[int, int]:
    """{Utterance_ID: row in the dialogue's feature matrix} from ``videoIDs[key]``."""
    rows = {}
    for row, value in enumerate(values):
        try:
            utterance = int(value)
        except (TypeError, ValueError):
            raise DataError(f"{where}: videoIDs entry {value!r} is not an utterance id") from None
        if utterance in rows:
            raise DataError(f"{where}: videoIDs lists Utterance_ID {utterance} twice")
        rows[utterance] = row
    return rows
