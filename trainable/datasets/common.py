"""The error every loader raises for bad data, and small helpers the loaders share."""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np

T = TypeVar("T")


class DataError(ValueError):
    """Bad or missing dataset files. ``str(err)`` is one line naming the file, row or key."""


def one_line(err: BaseException | str) -> str:
    """An exception's text squeezed onto one line (parsers like multi-line messages)."""
    return " ".join(str(err).split()) or type(err).__name__


def take(dialogues: list[T], max_dialogues: int | None) -> list[T]:
    """The first ``max_dialogues`` dialogues (all of them when None), for smoke runs."""
    return dialogues if max_dialogues is None else dialogues[:max_dialogues]


def natural_order(key) -> tuple:
    """Sort key for dialogue ids that may be ints (MELD pickles) or strings (IEMOCAP)."""
    if isinstance(key, int | np.integer):
        return (0, int(key), "")
    return (1, 0, str(key))


_CP1252_CONTROL = re.compile("[\x80-\x9f]")


def _cp1252(match: re.Match) -> str:
    try:
        return match.group().encode("latin-1").decode("cp1252")
    except UnicodeDecodeError:  # the five bytes cp1252 leaves undefined: keep them as they are
        return match.group()


def clean_text(value) -> str:
    """Text from a Python 2 pickle read with ``encoding='latin1'``.

    conv-emotion's transcripts hold raw cp1252 bytes (0x92 for a right quote, 0x85 for an
    ellipsis), which latin-1 decoding turns into C1 control characters; map them back.
    """
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            value = value.decode("latin-1")
    return _CP1252_CONTROL.sub(_cp1252, str(value)).strip()


def read_pickle(path: Path, layout: Sequence[str]) -> dict[str, object]:
    """A conv-emotion feature pickle as {field name: value}, checked against ``layout``.

    Unpickling can run code, so this is only ever called on a file the user put in their own
    data folder for this purpose (the same trust as running conv-emotion's loaders).
    """
    if not path.is_file():
        raise DataError(f"missing file {path} (expected conv-emotion's {path.name})")
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f, encoding="latin1")  # Python 2 pickles, as conv-emotion loads them
    except Exception as err:  # any unpickling failure is the same bad-file case
        raise DataError(f"{path}: not a readable pickle ({one_line(err)})") from None
    if not isinstance(obj, tuple | list) or len(obj) != len(layout):
        got = f"{len(obj)} items" if isinstance(obj, tuple | list) else type(obj).__name__
        raise DataError(f"{path}: expected a {len(layout)}-tuple ({', '.join(layout)}), got {got}")
    fields = dict(zip(layout, obj, strict=True))
    for name, value in fields.items():
        if name.startswith("video") and not isinstance(value, Mapping):
            raise DataError(
                f"{path}: {name} should be a dict dialogue id -> per-utterance list, "
                f"got {type(value).__name__}"
            )
    return fields


def lookup(fields: dict, name: str, key, path: Path):
    """``fields[name][key]``, or a DataError naming the dialogue key that is missing."""
    table = fields[name]
    if key not in table:
        raise DataError(f"{path}: dialogue {key!r} is missing from {name}")
    return table[key]


def feature_matrix(values, where: str, first: tuple[int, str] | None) -> np.ndarray:
    """Per-utterance feature vectors as a finite (L, D) float32 array.

    ``first`` is (width, name) of the first dialogue loaded, or None for the first one: all
    dialogues of a dataset must agree, since the model projects one fixed width.
    """
    try:
        array = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError):
        array = None  # ragged rows: find the first one that differs below
    if array is None or array.ndim != 2:
        rows = list(values) if isinstance(values, Sequence | np.ndarray) else [values]
        widths = [np.size(row) for row in rows]
        odd = next((i for i, w in enumerate(widths) if w != widths[0]), None)
        if odd is None:
            raise DataError(f"{where}: expected one feature vector per utterance")
        raise DataError(
            f"{where}: utterance {odd} has {widths[odd]} features, expected {widths[0]}"
        )
    if first is not None and array.shape[1] != first[0]:
        raise DataError(
            f"{where}: features have width {array.shape[1]}, but {first[1]} has {first[0]} "
            "(every dialogue must have the same width)"
        )
    if not np.isfinite(array).all():
        raise DataError(f"{where}: features contain NaN or infinite values")
    return array
