"""DialogueTRM: model, contexts, datasets and the training engine (never imports orchestrator)."""

from trainable.config import DialogueTRMConfig
from trainable.model import DialogueTRM

__all__ = ["DialogueTRM", "DialogueTRMConfig"]
