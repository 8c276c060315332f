"""``scrapbench evaluate``: score anomaly maps written by any tool against masks."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from scrapbench.cli.console import FORCE_HELP, console, error_text, fail


def evaluate(
    maps: Path = typer.Argument(..., help="Folder of anomaly maps (.npy/.npz/.tif/.tiff/.png), one per image."),
    masks: Path = typer.Argument(..., help="Folder of ground-truth masks (PNG, same stems; 0 = normal)."),
    compat: str = typer.Option("mvtec", help="AUPRO recipe: mvtec (default) or anomalyclip."),
    out: Path = typer.Option(None, help="Write the metrics as JSON here (a new file, or one this command wrote)."),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
) -> None:
    """Evaluate anomaly maps written by any tool against masks."""
    import json

    from scrapbench.metrics import evaluate_folders
    from scrapbench.storage.atomic import atomic_write_json
    from scrapbench.storage.outdir import guard_output_file

    try:
        if out is not None:
            guard_output_file(out, [maps, masks], "evaluate", force=force)
        result = evaluate_folders(maps, masks, compat=compat)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    table = Table("metric", "value (%)")
    for key in ("auroc", "aupro", "ap", "f1max"):
        table.add_row(key, f"{100 * result[key]:.2f}")
    console.print(table)
    if out is not None:
        try:
            atomic_write_json(out, {"written_by": "scrapbench evaluate", **result})
        except OSError as exc:  # the metrics are printed above: nothing is lost
            fail(f"--out {out}: could not be written: {error_text(exc)}")
    else:
        console.print_json(json.dumps({k: v for k, v in result.items() if isinstance(v, (int, float))}))
