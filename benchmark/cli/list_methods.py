"""``scrapbench list``: the registered methods."""

from __future__ import annotations

import typer
from rich.table import Table

from scrapbench.cli.console import console


def list_command(suite: str = typer.Option(None, help="Only methods of this suite (table2, ablation, zoo).")) -> None:
    """Show every registered method with its learning type (under the paper preset)."""
    from scrapbench.core.registry import build_config, list_methods

    table = Table("method", "suites", "learning type", "description")
    for spec in list_methods(suite):
        try:
            learning = spec.load_class().learning_type_for(build_config(spec.name, "paper")).value
        except ImportError as exc:  # a plugin whose library is not installed: listed, its type unknown
            learning = f"? ({str(exc).splitlines()[0]})"
        table.add_row(spec.name, ",".join(spec.suites) or "-", learning, spec.description)
    console.print(table)
