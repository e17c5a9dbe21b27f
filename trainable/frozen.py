"""The frozen-encoder fidelity: eq 1's [CLS] vectors computed once, cached, and reused.

With ``freeze_encoder`` the utterance encoder never trains, so f_i(u) of every turn depends
only on the encoder and the turn's input ``[CLS] utterance [SEP] indi-context [SEP]``: the
encoder runs once in inference mode over every input of a split (length-sorted batches,
padded per batch) and trials train only what sits above it. The vectors are cached beside
the tokenized features they come from, so they are keyed on everything that shapes those
(data, encoder, K, max length, segment and [SEP] switches; see ``features.feature_key``),
plus the encoder's weights when they are not pretrained (a tiny encoder is random-init).

A file lock makes concurrent trials that need the same vectors compute them once: the first
computes, the others wait and read. On a cluster, put the cache (``ORCH_CACHE_DIR``) on the
shared file system and every node reuses it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

FROZEN_VERSION = 1
BATCH_SIZE = 64  # inputs per encoder call; sorted by length, so padding stays small
SPLITS = ("train", "dev", "test")


def weights_digest(encoder: torch.nn.Module) -> str:
    """A digest of the encoder's weights (for random-init encoders, whose weights depend on
    the seed): two trials share vectors only when they would compute the same ones."""
    h = hashlib.sha256()
    for name, tensor in sorted(encoder.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@contextmanager
def file_lock(path: Path):
    """An exclusive lock on ``path`` (created if missing), held for the ``with`` block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@torch.inference_mode()
def encode_inputs(
    encoder: torch.nn.Module, turns: list[dict], segments: bool, device="cpu"
) -> np.ndarray:
    """[CLS] vectors (N, He) of N turn inputs ``{"input_ids", "token_type_ids"}``."""
    was_training = encoder.training
    encoder.eval()
    width = encoder.config.hidden_size
    out = np.zeros((len(turns), width), dtype=np.float32)
    order = sorted(range(len(turns)), key=lambda i: len(turns[i]["input_ids"]))
    try:
        for start in range(0, len(order), BATCH_SIZE):
            idx = order[start : start + BATCH_SIZE]
            T = max(len(turns[i]["input_ids"]) for i in idx)
            ids = torch.zeros((len(idx), T), dtype=torch.long)
            types = torch.zeros((len(idx), T), dtype=torch.long)
            mask = torch.zeros((len(idx), T), dtype=torch.long)
            for row, i in enumerate(idx):
                n = len(turns[i]["input_ids"])
                ids[row, :n] = torch.as_tensor(turns[i]["input_ids"])
                types[row, :n] = torch.as_tensor(turns[i]["token_type_ids"])
                mask[row, :n] = 1
            hidden = encoder(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                token_type_ids=types.to(device) if segments else None,
            ).last_hidden_state[:, 0]  # (n, He) at [CLS]
            out[idx] = hidden.float().cpu().numpy()
    finally:
        encoder.train(was_training)
    return out


def _turns(dialogues: list[dict]) -> list[dict]:
    return [
        {"input_ids": ids, "token_type_ids": types}
        for d in dialogues
        for ids, types in zip(d["input_ids"], d["token_type_ids"], strict=True)
    ]


def _split_back(dialogues: list[dict], vectors: np.ndarray) -> list[np.ndarray]:
    sizes = np.cumsum([0] + [len(d["input_ids"]) for d in dialogues])
    return [vectors[a:b] for a, b in zip(sizes[:-1], sizes[1:], strict=True)]


def frozen_path(data, config, encoder: torch.nn.Module) -> Path | None:
    """Where the vectors of ``data`` (``features.EncodedSplits``) live; None for in-memory
    data (a checkpoint evaluated with its own tokenizer)."""
    if not data.path or data.path == Path():
        return None
    key = {"version": FROZEN_VERSION, "features": data.path.name}
    if config.encoder == "tiny":  # random-init: the vectors depend on the weights
        key["weights"] = weights_digest(encoder)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return data.path.parent / f"{data.path.name}-frozen-{digest}"


def attach_frozen_features(data, config, encoder, segments: bool, device="cpu") -> bool:
    """Give every dialogue of ``data`` its ``features`` (L, He) and drop its token lists;
    returns whether the vectors came from the cache."""
    path = frozen_path(data, config, encoder)

    def encode_all() -> dict[str, np.ndarray]:
        return {
            s: encode_inputs(encoder, _turns(getattr(data, s)), segments, device) for s in SPLITS
        }

    if path is None:
        vectors, cached = encode_all(), False
    else:
        with file_lock(path.parent / f"{path.name}.lock"):
            cached = (path / "complete").exists()
            if cached:
                vectors = {s: np.load(path / f"{s}.npy", allow_pickle=False) for s in SPLITS}
            else:
                vectors = encode_all()
                _write(path, vectors)
    for split in SPLITS:
        dialogues = getattr(data, split)
        for d, features in zip(dialogues, _split_back(dialogues, vectors[split]), strict=True):
            d["features"] = features
            d.pop("input_ids", None)
            d.pop("token_type_ids", None)
    return cached


def _write(path: Path, vectors: dict[str, np.ndarray]) -> None:
    """All splits into a temporary sibling, then renamed: readers never see half a cache."""
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    try:
        for split, array in vectors.items():
            np.save(tmp / f"{split}.npy", array, allow_pickle=False)
        (tmp / "complete").write_text(json.dumps({s: list(a.shape) for s, a in vectors.items()}))
        if path.exists():  # an incomplete leftover of a crash
            shutil.rmtree(path)
        tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
