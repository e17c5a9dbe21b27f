"""One module per `orch` subcommand."""
