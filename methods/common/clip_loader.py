"""Training batches of the CLIP methods through a ``torch.utils.data.DataLoader``.

Workers decode each sample and resize it with PIL (the official pipeline, on the CPU) into a uint8
3×S×S tensor with its S×S class-index target; the main process moves the uint8 batch to the device
(pinned memory on CUDA) and normalises it there
(:func:`scrapbench.methods.common.clip_backbone.normalise_pixels`). The batches themselves, which
images and in which order, are chosen by the method per epoch (its own seeded order), so the loader
changes neither the order nor the numbers: with 0 workers or 4 the steps see the same tensors.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from scrapbench.datasets.types import Split
from scrapbench.methods.common.clip_backbone import (
    RESIZE_MODES,
    normalise_pixels,
    pil_resize,
    resize_masks,
    resize_on_device,
)


class ResizedSamples(Dataset):
    """Sample ``i`` of a split as (uint8 3×S×S image, int64 S×S target), both at the model's input size.

    ``binary``: the target is 1 where the mask is anomalous (AnomalyCLIP); otherwise the class
    indices (``ours``). Masks are resized as AnomalyCLIP does (``resize_masks``), here, unless
    ``targets`` holds them already at S×S by sample id (every anomalous sample; the others get zeros).
    """

    def __init__(self, split: Split, image_size: int, binary: bool,
                 targets: dict[str, np.ndarray] | None = None, resize: str = "pil") -> None:
        if resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
        self.split = split
        self.image_size = image_size
        self.binary = binary
        self.targets = targets
        self.resize = resize

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        sample = self.split[index]
        # "pil" resizes here (CPU, the official pipeline); the device-side modes resize on the device.
        image = pil_resize(sample.image, self.image_size) if self.resize == "pil" else sample.image
        pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous()  # a writable copy
        if self.targets is not None:  # every anomalous sample is in it: the others are normal
            found = self.targets.get(sample.id)
            target = torch.from_numpy(np.asarray(found)).long() if found is not None else \
                torch.zeros(self.image_size, self.image_size, dtype=torch.long)
        else:
            mask = sample.mask > 0 if self.binary else sample.mask
            target = resize_masks([mask], self.image_size)[0]
        return pixels, target


def collate(samples: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor | list[torch.Tensor], torch.Tensor]:
    """Stack targets, and images when they share a size (always after a PIL resize); else a list."""
    images, targets = zip(*samples, strict=True)
    same = all(image.shape == images[0].shape for image in images)
    return (torch.stack(images) if same else list(images)), torch.stack(targets)


def device_pixels(images: torch.Tensor | list[torch.Tensor], image_size: int, resize: str,
                  device: str | torch.device) -> torch.Tensor:
    """A loader's uint8 images → normalised B×3×S×S on ``device``, resized there unless PIL did it."""
    non_blocking = torch.device(device).type == "cuda"
    parts = [images] if isinstance(images, torch.Tensor) else [image[None] for image in images]
    out = []
    for part in parts:
        part = part.to(device, non_blocking=non_blocking)
        if resize != "pil":
            part = resize_on_device(part, image_size, resize)
        out.append(normalise_pixels(part))
    return out[0] if len(out) == 1 else torch.cat(out)


class ChosenBatches(Sampler[list[int]]):
    """Yields the batches set by :meth:`set` (index lists): the method picks them per epoch."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def set(self, batches: Sequence[Sequence[int]]) -> None:
        self.batches = [[int(i) for i in batch] for batch in batches]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def batch_loader(dataset: ResizedSamples, sampler: ChosenBatches, workers: int, device: str) -> DataLoader:
    """A loader over ``sampler``'s batches: ``workers`` processes (0: this one), pinned memory on CUDA.

    Workers persist across epochs (the sampler is read in this process each epoch). The loader's
    own seed comes from a private generator, so making it does not advance the global torch RNG.
    """
    # Forked workers inherit the split as it is; a spawned worker would have to pickle its loader
    # (often a closure). Where fork is missing (Windows) the main process loads.
    if workers > 0 and "fork" not in multiprocessing.get_all_start_methods():
        workers = 0
    return DataLoader(dataset, batch_sampler=sampler, num_workers=workers, collate_fn=collate,
                      pin_memory=torch.device(device).type == "cuda", persistent_workers=workers > 0,
                      multiprocessing_context="fork" if workers > 0 else None,
                      generator=torch.Generator().manual_seed(0))


def device_batch(batch: tuple[Any, torch.Tensor], image_size: int, resize: str,
                 device: str | torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A loader batch as (normalised pixels, targets) on ``device``."""
    images, target = batch
    non_blocking = torch.device(device).type == "cuda"
    return device_pixels(images, image_size, resize, device), target.to(device, non_blocking=non_blocking)
