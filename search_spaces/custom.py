"""User-defined spaces from plain ranges: validated when built, so a bad bound fails before any
trial starts, with the field it belongs to in the message.

A file for ``--space my_space.toml``::

    [ranges]
    lr = { low = 1e-5, high = 1e-3, log = true }
    warmup_steps = { low = 0, high = 500, step = 50 }   # ints when low and high are ints
    k = { low = 1, high = 10 }
    fusion = { choices = ["mgif", "concat"] }

    [constants]
    encoder = "tiny"
    epochs = 3

A range may also be its own top-level table (``[lr]`` with ``low = ...`` lines under it).
JSON with the same keys works too. Every error names the file and the field.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import optuna

# Fields whose every value must be positive: a range reaching 0 would start trials that fail.
POSITIVE = ("lr",)
RANGE_KEYS = {"low", "high", "log", "step", "choices"}


@dataclass(frozen=True)
class Float:
    low: float
    high: float
    log: bool = False
    step: float | None = None


@dataclass(frozen=True)
class Int:
    low: int
    high: int
    step: int = 1
    log: bool = False


@dataclass(frozen=True)
class Choice:
    choices: tuple


Range = Float | Int | Choice


def _number(value) -> bool:
    """A finite int or float (TOML's ``true`` is not a bound)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def validate(name: str, spec: Range) -> None:
    """Raise ValueError naming ``name`` if ``spec`` cannot be sampled sensibly."""
    if isinstance(spec, Choice):
        if not spec.choices:
            raise ValueError(f"{name}: choices must not be empty")
        return
    # Checked before any comparison: a string bound would raise TypeError, not a message.
    if spec.step is not None and not _number(spec.step):
        raise ValueError(f"{name}: step must be a number, got {spec.step!r}")
    low, high = spec.low, spec.high
    if not all(_number(v) for v in (low, high)):
        raise ValueError(f"{name}: low and high must be finite numbers, got {low!r}, {high!r}")
    if low >= high:
        raise ValueError(
            f"{name}: low ({low}) must be < high ({high}); put a fixed value in constants"
        )
    if (spec.log or name in POSITIVE) and low <= 0:
        raise ValueError(f"{name}: low must be > 0 (log scale or a positive quantity), got {low}")
    if spec.log and spec.step not in (None, 1):
        raise ValueError(f"{name}: step cannot be combined with log scale")
    if spec.step is not None and spec.step <= 0:
        raise ValueError(f"{name}: step must be > 0, got {spec.step}")


def suggest(trial: optuna.Trial, name: str, spec: Range):
    if isinstance(spec, Choice):
        return trial.suggest_categorical(name, list(spec.choices))
    if isinstance(spec, Int):
        return trial.suggest_int(name, spec.low, spec.high, step=spec.step, log=spec.log)
    return trial.suggest_float(name, spec.low, spec.high, step=spec.step, log=spec.log)


class RangeSpace:
    """A define-by-run space sampling validated ranges and returning constants.

    A class rather than a closure so that it pickles (Ray saves the searcher, space included).
    """

    def __init__(self, ranges: Mapping[str, Range], constants: Mapping | None = None, name=None):
        self.ranges, self.constants = dict(ranges), dict(constants or {})
        self.__name__ = name or "custom"
        for key, spec in self.ranges.items():
            validate(key, spec)
        both = sorted(set(self.ranges) & set(self.constants))
        if both:
            raise ValueError(f"{', '.join(both)}: both sampled and constant; keep one")

    def __call__(self, trial: optuna.Trial) -> dict:
        for key, spec in self.ranges.items():
            suggest(trial, key, spec)
        return dict(self.constants)


def space_from_ranges(
    ranges: Mapping[str, Range], constants: Mapping | None = None, name: str | None = None
) -> RangeSpace:
    """A validated define-by-run space sampling ``ranges`` and returning ``constants``."""
    return RangeSpace(ranges, constants, name)


def parse_range(name: str, raw) -> Range:
    """``{low, high[, log, step]}`` (ints when both bounds are ints) or ``{choices}``."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"{name}: expected a table with low/high or choices, got {raw!r}")
    unknown = sorted(set(raw) - RANGE_KEYS)
    if unknown:
        raise ValueError(f"{name}: unknown key(s) {', '.join(unknown)}")
    if "choices" in raw:
        if not isinstance(raw["choices"], list | tuple):
            raise ValueError(f"{name}: choices must be a list, got {raw['choices']!r}")
        return Choice(tuple(raw["choices"]))
    if "low" not in raw or "high" not in raw:
        raise ValueError(f"{name}: needs both low and high")
    low, high, log = raw["low"], raw["high"], bool(raw.get("log", False))
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high))
    if ints and not isinstance(raw.get("step", 1), float):
        return Int(low, high, step=raw.get("step", 1), log=log)
    return Float(low, high, log=log, step=raw.get("step"))


def space_from_dict(spec: Mapping, name: str | None = None) -> RangeSpace:
    """``{"ranges": {...}, "constants": {...}}`` -> a validated space.

    Any other top-level table holding range keys (``[lr]`` with ``low``/``high``) is a range
    too: the shorthand people write for a field or two, which used to be rejected as an
    unknown section before its bounds were even looked at.
    """
    if not isinstance(spec, Mapping):
        raise ValueError(f"expected a table with ranges and constants, got {type(spec).__name__}")
    for section in ("ranges", "constants"):
        if not isinstance(spec.get(section, {}), Mapping):
            raise ValueError(f"[{section}] must be a table, got {spec[section]!r}")
    raw_ranges = dict(spec.get("ranges", {}))
    for key, raw in spec.items():
        if key in ("ranges", "constants"):
            continue
        if not isinstance(raw, Mapping) or not set(raw) & RANGE_KEYS:
            raise ValueError(
                f"{key}: unknown top-level entry; expected [ranges], [constants] or a range "
                f"table such as [{key}] with low/high or choices"
            )
        if key in raw_ranges:
            raise ValueError(f"{key}: given both as [{key}] and under [ranges]; keep one")
        raw_ranges[key] = raw
    ranges = {key: parse_range(key, raw) for key, raw in raw_ranges.items()}
    return space_from_ranges(ranges, spec.get("constants"), name)


def space_from_file(path: Path) -> RangeSpace:
    """A space from a .toml or .json ranges file; every error names ``--space`` and the file."""
    where = f"--space {path}"
    if not path.is_file():
        raise ValueError(f"{where}: no such file (expected a .toml or .json file of ranges)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{where}: not UTF-8 text (byte {error.start})") from None
    except OSError as error:
        raise ValueError(f"{where}: cannot be read ({error.strerror or error})") from None
    kind = "TOML" if path.suffix == ".toml" else "JSON"
    try:
        spec = tomllib.loads(text) if kind == "TOML" else json.loads(text)
    except ValueError as error:  # TOMLDecodeError and JSONDecodeError are ValueErrors
        raise ValueError(f"{where}: invalid {kind} ({error})") from None
    try:
        return space_from_dict(spec, name=path.stem)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None
