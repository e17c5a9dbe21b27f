"""Command-line options generated from config dataclasses, one option per field.

Each option's help is the field's docstring, its default the field's default; a value left
unset stays None so presets can fill it, and what the user typed always wins.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
import types
import typing
from dataclasses import MISSING, fields
from functools import cache
from pathlib import Path

import typer

from orchestrator.cli_format import short_help
from trainable.config import DialogueTRMConfig, TrainConfig

# Fields the dataset decides (task, label count, feature widths): not options.
DERIVED = ("task", "num_labels", "audio_dim", "visual_dim")
MODEL_FIELDS = [f.name for f in fields(DialogueTRMConfig) if f.name not in DERIVED]
TRAIN_FIELDS = [f.name for f in fields(TrainConfig)]

# Extra spellings the paper's vocabulary suggests.
ALIASES = {"warmup_steps": ("--warmup",)}


@cache
def field_docs(cls) -> dict[str, str]:
    """Attribute docstrings (the string literal under each field) of a dataclass."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


@cache
def field_types(cls) -> dict[str, type]:
    """The command-line type of each field: its annotation without ``None`` (a field typed
    ``int | None`` takes an int); anything that is not a plain value (a callable) is a str."""
    hints = typing.get_type_hints(cls)
    kinds = {}
    for f in fields(cls):
        hint = hints[f.name]
        if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
            hint = next((a for a in typing.get_args(hint) if a is not type(None)), str)
        kinds[f.name] = hint if hint in (bool, int, float, str, Path) else str
    return kinds


def parse_value(cls, name: str, text: str):
    """A field's value from its text (as MLflow stores params); ``"None"`` is None."""
    if text is None or text == "None":
        return None
    kind = field_types(cls)[name]
    if kind is bool:
        return text == "True"
    return kind(text)


def option_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def dataclass_parameters(
    cls, skip=(), panel: str | dict[str, str] | None = None, only=None, helps=None
):
    """``inspect.Parameter``s (Typer options) for the fields of ``cls`` (those named in
    ``only``, if given) not in ``skip``; ``helps`` replaces some fields' docstrings. The help
    is the docstring's first sentence; ``panel`` is the help section of every option, or of
    each field by name."""
    docs = {**field_docs(cls), **(helps or {})}
    kinds = field_types(cls)
    params = []
    for f in fields(cls):
        if f.name in skip or (only is not None and f.name not in only):
            continue
        default = f.default if f.default is not MISSING else None
        kind = kinds[f.name]
        name = option_name(f.name)
        if kind is bool:
            decls = (f"{name}/--no-{f.name.replace('_', '-')}",)
        else:
            decls = (name, *ALIASES.get(f.name, ()))
        help_text = short_help(docs.get(f.name, ""))
        if default is True:  # a flag that is on unless turned off
            default = name
        if default is not None and default is not False and "[default:" not in help_text:
            help_text = f"{help_text.removesuffix('.')} [default: {default}]."  # None: doc says
        section = panel.get(f.name) if isinstance(panel, dict) else panel
        option = typer.Option(
            None, *decls, help=help_text, show_default=False, rich_help_panel=section
        )
        params.append(
            inspect.Parameter(
                f.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind | None
            )
        )
    return params
