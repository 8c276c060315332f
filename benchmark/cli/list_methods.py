"""``scrapbench list``: the registered methods."""

from __future__ import annotations

import typer
from rich.table import Table

from scrapbench.cli.console import console


def list_command(suite: str = typer.Option(None, help="Only methods of this suite (table2, ablation).")) -> None:
    """Show every registered method."""
    from scrapbench.core.registry import list_methods

    table = Table("method", "suites", "description")
    for spec in list_methods(suite):
        table.add_row(spec.name, ",".join(spec.suites) or "-", spec.description)
    console.print(table)
