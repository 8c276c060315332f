"""``scrapbench weights check``: every configured weight, found or where to put it, and whether it fits."""

from __future__ import annotations

import typer
from rich.table import Table
from rich.text import Text

from scrapbench.cli.console import console, fail, with_weights


def weights_check(
    preset: str = typer.Option("paper", help="smoke | cpu | paper | a preset YAML file."),
    methods: list[str] = typer.Option(["all", "ablation"], "--methods", "-m",
                                      help="Names, comma lists, `all` (Table 2) or `ablation` (Table 3)."),
    set_: list[str] = typer.Option([], "--set", help="Config override METHOD.FIELD=VALUE (repeatable)."),
    weights: str = typer.Option(None, help="Pretrained weights (tag or file) for a single chosen method."),
) -> None:
    """Every configured weight: found, where to put it, format and architecture, checksum. Loads no model."""
    from scrapbench.core.presets import resolve_preset
    from scrapbench.core.registry import resolve_method_names
    from scrapbench.core.weights import check_weights, problems

    try:
        names = resolve_method_names(methods)
        resolved = resolve_preset(preset, set_)
        overrides = with_weights(names, resolved.overrides, weights)
        reports = check_weights(names, resolved.name, overrides)
    except (KeyError, ValueError) as exc:
        fail(str(exc.args[0]) if isinstance(exc, KeyError) else str(exc))
    table = Table("weight", "used by", "status", "format · architecture", "SHA-256 · checksum",
                  title=f"weights of preset {preset}")
    table.add_column("file", overflow="fold")
    marks = {"ok": Text("✓ found", "green"), "random": Text("random init"),
             "download": Text("↓ downloads at run", "yellow"), "missing": Text("✗ missing", "red"),
             "invalid": Text("✗ invalid", "red")}
    for report in reports:
        check = report.check
        table.add_row(check.weight, ", ".join(report.methods), marks[check.status],
                      " · ".join(t for t in (check.format, check.architecture) if t),
                      " · ".join(t for t in ((check.sha256 or "")[:16], check.checksum) if t),
                      check.path or "-")
    console.print(table)
    bad = problems(reports)
    print_weight_problems(bad)
    if bad:
        raise typer.Exit(code=1)
    console.print(f"all {len(reports)} weights ready.")


def print_weight_problems(reports) -> None:
    for report in reports:
        check = report.check
        console.print(Text.assemble(("✗", "red"), f" {check.weight} ({', '.join(report.methods)}): "
                                                  f"{check.detail or check.status}"))
        if check.where:
            console.print(f"  → {check.where}")
