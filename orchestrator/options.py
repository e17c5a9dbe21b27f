"""Command-line options generated from config dataclasses, one option per field.

Each option's help is the field's docstring, its default the field's default; a value left
unset stays None so presets can fill it, and what the user typed always wins.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from dataclasses import MISSING, fields
from functools import cache

import typer
from rich.markup import escape

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


def option_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def dataclass_parameters(cls, skip: tuple[str, ...] = (), panel: str | None = None):
    """``inspect.Parameter``s (Typer options) for every field of ``cls`` not in ``skip``."""
    docs = field_docs(cls)
    params = []
    for f in fields(cls):
        if f.name in skip:
            continue
        default = f.default if f.default is not MISSING else None
        kind = type(default) if default is not None else str
        name = option_name(f.name)
        if kind is bool:
            decls = (f"{name}/--no-{f.name.replace('_', '-')}",)
        else:
            decls = (name, *ALIASES.get(f.name, ()))
        help_text = escape(f"{docs.get(f.name, '')} [default: {default}]")
        option = typer.Option(
            None, *decls, help=help_text, show_default=False, rich_help_panel=panel
        )
        params.append(
            inspect.Parameter(
                f.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind | None
            )
        )
    return params
