"""Where a dataset's files are found, and the one download orch ever tries (MELD's CSVs).

Search order for a dataset ``name``:

1. the ``data_dir`` argument (``--data-dir``), which must exist;
2. ``$ORCH_DATA_DIR/<name>`` when that folder exists;
3. the user cache ``<cache>/<name>``, where ``<cache>`` is ``$ORCH_CACHE_DIR`` or
   ``$XDG_CACHE_HOME/orch`` (default ``~/.cache/orch``), the same root as the feature cache.

Only for MELD, when none of these holds the three CSVs, the missing ones are fetched from the
MELD GitHub repository into the cache (10 s timeout, sha256-checked, written atomically).
``ORCH_OFFLINE=1`` skips the attempt. Without the files the error says which files to put where.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from pathlib import Path

from trainable.datasets.common import DataError, one_line
from trainable.datasets.registry import DATASETS

MELD_URL = "https://raw.githubusercontent.com/declare-lab/MELD/master/data/MELD/{}"
MELD_SHA256 = {
    "train_sent_emo.csv": "d2fa2d6529cf03cac2989efec05c9b27d8fd2f4c8fc5974c7ae88aa537fa02db",
    "dev_sent_emo.csv": "2e89c6f8aa182d6f62f8c6331aece905ac7273ca4999660bfb5213e1d0370c1c",
    "test_sent_emo.csv": "8d37103938f7067600839fe29d5a114a6cd1bcdafb75bec101e06464c5006888",
}
DOWNLOAD_TIMEOUT_S = 10
MAX_DOWNLOAD_BYTES = 16 * 2**20  # the largest CSV is 1.1 MB; refuse anything absurd


def cache_root() -> Path:
    """orch's user cache folder (shared with the feature cache)."""
    if os.environ.get("ORCH_CACHE_DIR"):
        return Path(os.environ["ORCH_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"  # empty means unset
    return Path(base).expanduser() / "orch"


def offline() -> bool:
    return os.environ.get("ORCH_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")


def _where_to_put(name: str, folder: Path) -> str:
    spec = DATASETS[name]
    return (
        f"put {', '.join(spec.required_files)} ({spec.where_to_get}) in {folder}, "
        f"or pass --data-dir FOLDER, or set ORCH_DATA_DIR to a folder that holds {name}/"
    )


def _complete(folder: Path, name: str) -> bool:
    return all((folder / f).is_file() for f in DATASETS[name].required_files)


def find_data_dir(name: str, data_dir: str | Path | None = None) -> Path:
    """The folder holding dataset ``name``'s files (see the module docstring for the order)."""
    if name not in DATASETS or not DATASETS[name].needs_files:
        choices = ", ".join(n for n, spec in DATASETS.items() if spec.needs_files)
        raise DataError(f"dataset {name!r} has no data folder; expected one of {choices}")
    if data_dir is not None:
        path = Path(data_dir).expanduser()
        if not path.is_dir():
            files = ", ".join(DATASETS[name].required_files)
            raise DataError(
                f"data directory {path} does not exist (--data-dir must be a folder holding {files})"
            )
        return path  # the loader names any file missing from a folder the user chose
    env = os.environ.get("ORCH_DATA_DIR")
    if env and (Path(env).expanduser() / name).is_dir():
        return Path(env).expanduser() / name
    cached = cache_root() / name
    if _complete(cached, name):
        return cached
    if name == "meld":
        return download_meld(cached)
    if cached.is_dir():
        return cached
    raise DataError(f"no {name} data found: {_where_to_put(name, cached)}")


def download_meld(folder: Path) -> Path:
    """Fetch the MELD CSVs missing from ``folder``; DataError (one line) when that fails."""
    missing = [f for f in MELD_SHA256 if not (folder / f).is_file()]
    if not missing:
        return folder
    if offline():
        raise DataError(
            f"MELD CSVs not found (ORCH_OFFLINE is set): {_where_to_put('meld', folder)}"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for filename in missing:
            fetch_verified(MELD_URL.format(filename), folder / filename, MELD_SHA256[filename])
    except (OSError, ValueError) as err:  # URLError, timeouts and disk errors are all OSError
        raise DataError(
            f"MELD CSVs not found and the download failed ({one_line(err)}): "
            f"{_where_to_put('meld', folder)}"
        ) from None
    return folder


def fetch_verified(url: str, target: Path, sha256: str) -> None:
    """Download ``url`` to ``target`` if its sha256 matches; never leaves a partial file."""
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
        body = response.read(MAX_DOWNLOAD_BYTES + 1)
    if len(body) > MAX_DOWNLOAD_BYTES:
        raise ValueError(f"{url} is larger than {MAX_DOWNLOAD_BYTES} bytes")
    digest = hashlib.sha256(body).hexdigest()
    if digest != sha256:
        raise ValueError(f"checksum mismatch for {target.name}: got {digest}, expected {sha256}")
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(body)
        os.replace(tmp, target)  # atomic: readers see the whole file or none
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
