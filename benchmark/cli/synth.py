"""``scrapbench synth``: write the synthetic dataset to a folder."""

from __future__ import annotations

from pathlib import Path

import typer

from scrapbench.cli.console import FORCE_HELP, console, fail


def synth(
    out: Path = typer.Option(..., help="Folder to write the dataset to (on-disk format; an existing one only if "
                                       "scrapbench wrote it)."),
    preset: str = typer.Option("cpu", help="Size: smoke | cpu | paper."),
    seed: int = typer.Option(0, help="Generator seed."),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
) -> None:
    """Write the synthetic steel-scrap dataset to a folder, to look at or to edit."""
    from scrapbench.core.presets import SYNTHETIC_PRESETS
    from scrapbench.datasets.synthetic.generator import write_synthetic

    if preset not in SYNTHETIC_PRESETS:
        fail(f"unknown preset {preset!r}; choose from {sorted(SYNTHETIC_PRESETS)}")
    try:
        path = write_synthetic(out, SYNTHETIC_PRESETS[preset], seed=seed, force=force)
    except ValueError as exc:  # OutputError: an --out scrapbench did not write
        fail(str(exc))
    console.print(f"wrote {path}")
