"""Multiclass losses of the paper: class-balanced focal loss (Cui et al. 2019) and soft dice."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def class_balanced_weights(counts: torch.Tensor, beta: float | None = None) -> torch.Tensor:
    """Weights ∝ 1 / effective number (1 − β^n) / (1 − β), normalised to sum to the class count.

    ``beta`` None: (N − 1) / N with N = the total count, Cui et al.'s β for a data volume of N
    samples. A class with no sample gets the weight of a class with one (it cannot contribute to
    the loss anyway, but must not produce inf).
    """
    counts = counts.double()
    if beta is None:
        total = float(counts.sum())
        beta = (total - 1.0) / total if total > 1 else 0.0
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"class-balance β must be in [0, 1), got {beta}")
    effective = (1.0 - torch.pow(torch.tensor(beta, dtype=torch.double), counts.clamp(min=1.0))) / (1.0 - beta)
    weights = 1.0 / effective
    return (weights / weights.sum() * len(weights)).float()


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float, weights: torch.Tensor | None) -> torch.Tensor:
    """Multiclass focal loss. logits B×C×H×W, target B×H×W (class indices), weights C (α per class)."""
    log_probs = F.log_softmax(logits, dim=1)
    log_pt = log_probs.gather(1, target.unsqueeze(1)).squeeze(1)
    loss = -((1.0 - log_pt.exp()) ** gamma) * log_pt
    if weights is not None:
        loss = loss * weights.to(loss.device)[target]
    return loss.mean()


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft dice averaged over the C classes (probabilities from a softmax over classes)."""
    probs = logits.softmax(dim=1)
    one_hot = F.one_hot(target, num_classes=logits.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    dims = (0, 2, 3)
    intersection = (probs * one_hot).sum(dims)
    total = probs.sum(dims) + one_hot.sum(dims)
    return (1.0 - (2.0 * intersection + eps) / (total + eps)).mean()


def segmentation_loss(
    logits: torch.Tensor, target: torch.Tensor, gamma: float, weights: torch.Tensor | None
) -> torch.Tensor:
    """Focal + dice on logits up-sampled to the target's resolution."""
    if logits.shape[-2:] != target.shape[-2:]:
        logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    return focal_loss(logits, target, gamma, weights) + dice_loss(logits, target)
