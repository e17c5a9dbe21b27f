"""Checkpoints: written atomically, read with ``torch.load(weights_only=True)``.

A checkpoint is a folder:
    config.json    model config, train config, dataset name and label names (plain JSON)
    model.pt       the model's state dict at the training precision (without a frozen
                   pretrained encoder's weights)
    trainer.pt     optimizer, scheduler, grad scaler and RNG states, and the fp32 master
                   weights when model.pt is 16-bit (resume state: only the latest checkpoint of
                   a trial that may still run keeps it)
    state.json     epoch, best epoch, best score and the per-epoch history
    tokenizer/     the encoder's tokenizer (the tiny encoder's vocabulary is trained per dataset)
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch


class CheckpointError(RuntimeError):
    """A checkpoint folder is missing, incomplete or unreadable."""


def save_checkpoint(
    path: Path,
    *,
    model: torch.nn.Module,
    meta: dict,
    state: dict,
    tokenizer=None,
    trainer_state: dict | None = None,
    skip_prefix: str | None = None,
    weights: dict | None = None,
) -> Path:
    """Write every file into a temporary sibling folder, then move it into place.

    ``weights`` is the state dict for ``model.pt`` (default: the model's own).
    ``skip_prefix`` leaves weights out of ``model.pt`` (a frozen pretrained encoder: the
    loader takes them from the encoder's own files, and each checkpoint stays small)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    try:
        weights = model.state_dict() if weights is None else weights
        if skip_prefix:
            weights = {k: v for k, v in weights.items() if not k.startswith(skip_prefix)}
        torch.save(weights, tmp / "model.pt")
        if trainer_state is not None:
            torch.save(trainer_state, tmp / "trainer.pt")
        (tmp / "config.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        (tmp / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp / "tokenizer"))
        old = None
        if path.exists():
            old = path.parent / f".{path.name}.old-{tmp.name[-8:]}"
            path.rename(old)
        tmp.rename(path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_json(path: Path, name: str) -> dict:
    file = Path(path) / name
    if not file.exists():
        raise CheckpointError(f"checkpoint {path} has no {name}: not a complete orch checkpoint")
    try:
        return json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"checkpoint file {file} is not valid JSON: {error}") from None


def load_tensors(path: Path, name: str, map_location="cpu") -> dict:
    file = Path(path) / name
    if not file.exists():
        raise CheckpointError(f"checkpoint {path} has no {name}")
    try:
        return torch.load(file, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001 - corrupt or foreign files all get one line
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"cannot read {file}: {first}") from None


def load_tokenizer_from(path: Path):
    from transformers import AutoTokenizer

    folder = Path(path) / "tokenizer"
    if not folder.exists():
        raise CheckpointError(f"checkpoint {path} has no tokenizer/ folder")
    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
