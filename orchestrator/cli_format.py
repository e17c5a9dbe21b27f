"""How `orch` prints its help and its usage errors.

Help: click's plain layout (option names whole on their own line when long, descriptions
wrapped at the terminal's width), grouped in sections by each option's panel. Typer's rich
boxes gave option names a fixed column and cut them (``--gradient-checkpoi…``) and wrapped
descriptions at ~22 characters at 80 columns.

Errors: every usage error is one ``error:`` line on stderr and exit status 2, like the errors
orch raises itself (``orchestrator.errors.fail``), instead of click's three-line block or
Typer's boxed panel.
"""

from __future__ import annotations

import re
import sys
import textwrap

from typer import Abort
from typer._click import Context, HelpFormatter  # Typer 0.29 vendors its own click
from typer._click import exceptions as errors
from typer.core import TyperCommand, TyperGroup

OTHER = "Other"
NAME_COLUMN = 30  # names longer than this put their help on the next line
# A sentence ends at ". " unless the period closes an abbreviation.
_SENTENCE_END = re.compile(r"(?<!\be\.g)(?<!\bi\.e)(?<!\betc)\.\s+")


def short_help(doc: str) -> str:
    """The first sentence of a field's docstring, without reST markup: what fits in a help
    line; the rest of the docstring is for readers of the code and the README."""
    text = " ".join(doc.replace("``", "").split())
    first = _SENTENCE_END.split(text, maxsplit=1)[0]
    return first if first.endswith(".") else first + "."


class _OneLineErrors:
    """``main`` that turns click's usage errors into one ``error:`` line, exit 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except errors.NoArgsIsHelpError as error:
            error.show()
            sys.exit(error.exit_code)
        except errors.ClickException as error:
            where = error.ctx.command_path if getattr(error, "ctx", None) else "orch"
            message = " ".join(error.format_message().split()).rstrip(".")
            hint = f" (see {where} --help)" if isinstance(error, errors.UsageError) else ""
            print(f"error: {message}{hint}", file=sys.stderr)
            sys.exit(error.exit_code)
        except Abort:
            print("error: aborted", file=sys.stderr)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


class OrchCommand(_OneLineErrors, TyperCommand):
    def format_options(self, ctx: Context, formatter: HelpFormatter) -> None:
        sections: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None:
                panel = getattr(param, "rich_help_panel", None) or OTHER
                sections.setdefault(panel, []).append(record)
        if OTHER in sections:  # --help and the command's own odds and ends last
            sections[OTHER] = sections.pop(OTHER)
        names = max((len(n) for rows in sections.values() for n, _ in rows), default=0)
        column = min(names, NAME_COLUMN) + 2  # one column for every section: they line up
        for title, rows in sections.items():
            with formatter.section(title):
                for name, help_text in rows:
                    formatter.write(_row(name, help_text, formatter, column))


def _row(name: str, help_text: str, formatter: HelpFormatter, column: int) -> str:
    """One option: its names whole, its help wrapped beside them (or below when the names are
    wider than the column), never breaking a word at a hyphen (``mgif-no-prototype``)."""
    indent = " " * formatter.current_indent
    width = max(formatter.width - formatter.current_indent - column, 20)
    lines = textwrap.wrap(help_text, width, break_on_hyphens=False, break_long_words=False)
    lines = lines or [""]
    text = f"{indent}{name}"
    if len(name) + 2 > column:
        text += "\n" + indent + " " * column + lines[0]
    else:
        text += " " * (column - len(name)) + lines[0]
    for line in lines[1:]:
        text += "\n" + indent + " " * column + line
    return text.rstrip() + "\n"


class OrchGroup(_OneLineErrors, TyperGroup):
    pass
