"""``scrapbench prepare``: raw annotated images to a dataset folder."""

from __future__ import annotations

from pathlib import Path

import typer

from scrapbench.cli.console import FORCE_HELP, console, fail


def prepare(
    source: Path = typer.Argument(..., help="Folder of raw images (for --format mvtec: an MVTec category folder)."),
    out: Path = typer.Option(..., help="Dataset folder to write (on-disk format; an existing one only if scrapbench "
                                       "wrote it, replaced atomically)."),
    format_: str = typer.Option("masks", "--format", help="Annotations: masks (class-index PNGs) | coco | mvtec."),
    annotations: Path = typer.Option(None, help="masks: folder of <stem>.png; coco: the instances JSON file."),
    classes: str = typer.Option(None, help="Comma-separated class names, index 1..K (coco: default = its "
                                           "categories by id; mvtec: one name, default `anomaly`)."),
    patch_size: int = typer.Option(512, help="Patch side in pixels (the paper: 512)."),
    overlap: int = typer.Option(0, help="Pixels shared by neighbouring patches."),
    test_fraction: float = typer.Option(0.2, help="Share of source images in the test split."),
    split_seed: int = typer.Option(0, help="Seed of the split by source image."),
    keep_split: bool = typer.Option(False, help="Keep the split of the source layout (MVTec train/test)."),
    missing_mask_normal: bool = typer.Option(False, help="masks: an image without a mask is normal."),
    roi_file: Path = typer.Option(None, help="JSON crop per image: {\"img.jpg\": {\"box\": [x0,y0,x1,y1]}} or "
                                             "{\"polygon\": [[x,y],...]}."),
    roi_prompt: str = typer.Option(None, help="Crop by text, e.g. 'the scrap' (SAM masks scored by CLIP)."),
    sam_checkpoint: Path = typer.Option(None, help="SAM checkpoint for --roi-prompt (e.g. sam_vit_h_4b8939.pth)."),
    sam_model: str = typer.Option("vit_h", help="SAM size of the checkpoint: vit_h | vit_l | vit_b."),
    clip_model: str = typer.Option("ViT-B-16", help="open_clip architecture scoring the regions."),
    clip_weights: str = typer.Option("openai", help="open_clip pretrained tag or checkpoint path."),
    min_roi_fraction: float = typer.Option(0.5, help="Keep a patch only if this share lies inside the crop."),
    preview: Path = typer.Option(None, help="Write one PNG per image with its crop and kept patches here."),
    preview_only: bool = typer.Option(False, help="Only write the previews (check a crop before tiling)."),
    device: str = typer.Option("cpu", help="Device for SAM/CLIP."),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
) -> None:
    """Turn raw annotated images (e.g. 4K crane-camera frames) into a scrapbench dataset folder."""
    from scrapbench.core.method import WeightsError
    from scrapbench.datasets import DatasetError
    from scrapbench.datasets.folder import read_folder_dataset
    from scrapbench.datasets.prepare.roi import ClipTextScorer, RoiFile, TextPromptedRoi, sam_mask_generator
    from scrapbench.datasets.prepare.tiling import PrepareConfig, prepare_dataset, preview_rois, read_sources
    from scrapbench.storage.outdir import guard_output

    names = tuple(c.strip() for c in classes.split(",") if c.strip()) if classes else None
    try:
        if roi_file is not None and roi_prompt is not None:
            fail("choose one of --roi-file and --roi-prompt")
        config = PrepareConfig(patch_size=patch_size, overlap=overlap, test_fraction=test_fraction, seed=split_seed,
                               keep_split=keep_split, min_roi_fraction=min_roi_fraction)
        inputs = [source, annotations, roi_file]
        if not preview_only:
            # before the (possibly slow) reading of the sources
            guard_output(out, inputs, command="prepare", force=force)
        sources, class_names = read_sources(format_, source, annotations, names, missing_mask_normal)
        roi = None
        if roi_file is not None:
            roi = RoiFile(roi_file)
        elif roi_prompt is not None:
            if sam_checkpoint is None:
                fail("--roi-prompt needs --sam-checkpoint (Segment Anything weights, e.g. sam_vit_h_4b8939.pth)")
            roi = TextPromptedRoi(sam_mask_generator(sam_model, sam_checkpoint, device=device),
                                  ClipTextScorer(clip_model, clip_weights, device=device), prompt=roi_prompt)
        if preview_only:
            if preview is None:
                fail("--preview-only needs --preview DIR")
            if roi is None:
                fail("--preview-only shows a crop: give --roi-file or --roi-prompt")
            paths = preview_rois(sources, roi, preview, config, inputs=inputs)
            console.print(f"{len(paths)} previews written to {preview}")
            return
        path = prepare_dataset(sources, class_names, out, roi=roi, config=config, preview_dir=preview, inputs=inputs,
                               force=force)
        data = read_folder_dataset(path)
    except (DatasetError, WeightsError, ValueError) as exc:
        fail(str(exc))
    console.print(f"wrote {path}: {len(data.train)} train / {len(data.test)} test patches "
                  f"({sum(data.test.has_anomaly)} anomalous test patches), classes {', '.join(data.class_names)}")
