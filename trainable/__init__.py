"""DialogueTRM: model, contexts, datasets and the training engine (never imports orchestrator).

``DialogueTRM`` and ``DialogueTRMConfig`` are imported on first use, so that light modules
of this package (configs, metrics' names) load without torch: ``orch best`` and ``--help``
stay fast.
"""

from __future__ import annotations

import importlib

__all__ = ["DialogueTRM", "DialogueTRMConfig"]

_LAZY = {"DialogueTRM": "trainable.model", "DialogueTRMConfig": "trainable.config"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'trainable' has no attribute {name!r}")
