"""The ``orch`` command line. Each subcommand lives in its own module and is registered here."""

from __future__ import annotations

import typer

from orchestrator import __version__
from orchestrator.cli_format import OrchCommand, OrchGroup
from orchestrator.driver import set_verbose

app = typer.Typer(
    name="orch",
    help="Hyperparameter search and experiment tracking for DialogueTRM.",
    cls=OrchGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"orch {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Tune and track DialogueTRM: `orch search`, `orch best`, `orch evaluate`, `orch train`,
    `orch ui`."""
    # MLflow announces store creation and migrations at INFO: shown with --verbose only.
    set_verbose(False)


from orchestrator.commands.best import best  # noqa: E402
from orchestrator.commands.evaluate import evaluate  # noqa: E402
from orchestrator.commands.search import search  # noqa: E402
from orchestrator.commands.sync import sync  # noqa: E402
from orchestrator.commands.train import train  # noqa: E402
from orchestrator.commands.ui import ui  # noqa: E402

app.command(cls=OrchCommand)(search)
app.command(cls=OrchCommand)(best)
app.command(cls=OrchCommand)(evaluate)
app.command(cls=OrchCommand)(train)
app.command(cls=OrchCommand)(ui)
app.command(cls=OrchCommand)(sync)

if __name__ == "__main__":
    app()
