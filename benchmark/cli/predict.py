"""``scrapbench predict``: apply a saved model folder to new images."""

from __future__ import annotations

from pathlib import Path

import typer

from scrapbench.cli.console import FORCE_HELP, PRECISION_HELP, console, error_text, fail


def predict(
    model: Path = typer.Argument(..., help="A run's model folder: OUT/<dataset>/<preset>/<method>/seed<k>/model."),
    images: Path = typer.Argument(..., help="A folder of images (any size) or one image."),
    out: Path = typer.Option(..., help="Folder for overlays/, maps/, regions.json and regions.csv (a new folder, "
                                       "or one `scrapbench predict` wrote)."),
    threshold: float = typer.Option(None, help="Score threshold (default: the run's F1-max threshold)."),
    patch_size: int = typer.Option(None, help="Tile size (default: the patch size the method was run on)."),
    overlap: int = typer.Option(0, help="Pixels shared by neighbouring tiles (maps are averaged there)."),
    min_area: int = typer.Option(1, help="Smallest region reported, in pixels."),
    batch_size: int = typer.Option(8, help="Tiles per forward pass."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:1 ..."),
    save_maps: bool = typer.Option(True, "--maps/--no-maps", help="Write the raw maps (.npy)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    precision: str = typer.Option("auto", help=PRECISION_HELP),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
) -> None:
    """Apply a fitted method to new images: tiled, stitched, with overlays and detected regions."""
    from scrapbench.core.method import WeightsError
    from scrapbench.datasets import DatasetError
    from scrapbench.run.predict_images import predict_folder

    try:
        summary = predict_folder(model, images, out, threshold=threshold, patch_size=patch_size, overlap=overlap,
                                 batch_size=batch_size, min_area=min_area, device=device, save_maps=save_maps,
                                 show_progress=progress, precision=precision, force=force)
    except (OSError, ValueError, DatasetError, WeightsError) as exc:
        fail(error_text(exc))
    flagged = sum(1 for entry in summary["images"] if entry["anomalous"])
    regions = sum(len(entry["regions"]) for entry in summary["images"])
    console.print(f"{summary['method']}: {len(summary['images'])} images, {flagged} with anomalies "
                  f"({regions} regions at threshold {summary['threshold']:.4g}, {summary['threshold_source']}) → {out}")
