"""Segmentation losses of the methods that train: binary (AnomalyCLIP) and multiclass (ours).

Both families are focal + soft Dice, but on different inputs, so they keep separate functions:
the binary ones take AnomalyCLIP's two-way softmax probabilities per layer and follow its release
(smoothing included); the multiclass ones take logits over the classes, with class-balanced focal
weights (Cui et al. 2019), as the paper trains its method.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# -- binary: normal / abnormal probabilities per layer (AnomalyCLIP) ------------------------------


def binary_focal_loss(probs: torch.Tensor, target: torch.Tensor, gamma: float, smooth: float = 1e-5) -> torch.Tensor:
    """Per-layer focal loss [L] of normal/abnormal probabilities [B, L, 2, H, W] and binary targets [B, L, H, W].

    torchvision's ``sigmoid_focal_loss`` expects logits; AnomalyCLIP applies focal loss to the
    two-way softmax probabilities, so it is written out here, with the release's smoothing: the
    one-hot target clipped to [smooth, 1 − smooth] and ``smooth`` added before the log.
    """
    p_true = torch.where(target > 0.5, probs[:, :, 1], probs[:, :, 0])
    p_true = (1 - smooth) * p_true + smooth * (1 - p_true) + smooth
    return (-((1 - p_true).clamp_min(0) ** gamma) * p_true.log()).mean(dim=(0, 2, 3))


def binary_dice_loss(probs: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Per-layer 1 − soft Dice of [B, L, H, W] maps, averaged over images → [L].

    ``smooth`` keeps images without foreground defined (and pushes their map towards zero).
    """
    probs, target = probs.flatten(2), target.flatten(2)
    dice = (2 * (probs * target).sum(-1) + smooth) / (probs.sum(-1) + target.sum(-1) + smooth)
    return (1 - dice).mean(dim=0)


# -- multiclass: logits over the classes (the paper's method) -------------------------------------


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


def multiclass_focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float,
                          weights: torch.Tensor | None) -> torch.Tensor:
    """Multiclass focal loss. logits B×C×H×W, target B×H×W (class indices), weights C (α per class)."""
    log_probs = F.log_softmax(logits, dim=1)
    log_pt = log_probs.gather(1, target.unsqueeze(1)).squeeze(1)
    loss = -((1.0 - log_pt.exp()) ** gamma) * log_pt
    if weights is not None:
        loss = loss * weights.to(loss.device)[target]
    return loss.mean()


def multiclass_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft dice averaged over the C classes (probabilities from a softmax over classes)."""
    probs = logits.softmax(dim=1)
    one_hot = F.one_hot(target, num_classes=logits.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    dims = (0, 2, 3)
    intersection = (probs * one_hot).sum(dims)
    total = probs.sum(dims) + one_hot.sum(dims)
    return (1.0 - (2.0 * intersection + eps) / (total + eps)).mean()


def multiclass_segmentation_loss(
    logits: torch.Tensor, target: torch.Tensor, gamma: float, weights: torch.Tensor | None
) -> torch.Tensor:
    """Focal + dice on logits up-sampled to the target's resolution."""
    if logits.shape[-2:] != target.shape[-2:]:
        logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    return multiclass_focal_loss(logits, target, gamma, weights) + multiclass_dice_loss(logits, target)
