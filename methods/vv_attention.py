"""AnomalyCLIP's V-V ("DPAM") path through a frozen open_clip vision transformer.

From block ``vv_from_layer`` on (1-based), every block keeps two token streams:

- the ordinary path, exactly the frozen block (q·k attention, then the MLP), and
- the V-V path, which accumulates a v·v self-attention (q = k = v, with the block's own value and
  output projections) computed on the *ordinary* path's normalised tokens, and skips the MLP.

The V-V path starts from the ordinary tokens entering block ``vv_from_layer``. Its attention is
diagonally prominent (each token attends mostly to itself), which keeps patch tokens local and
makes them comparable with text features. Nothing here has parameters of its own; the image
encoder stays frozen.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from scrapbench.methods.clip_backbone import embed_patches


def vv_attention(block: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """v·v self-attention of ``block`` on already normalised ``tokens`` (B×N×width), output-projected."""
    attn = block.attn
    if not isinstance(attn, nn.MultiheadAttention) or not attn._qkv_same_embed_dim:
        raise NotImplementedError(f"V-V attention needs a packed nn.MultiheadAttention, got {type(attn).__name__}")
    width, heads = attn.embed_dim, attn.num_heads
    bias = attn.in_proj_bias[2 * width:] if attn.in_proj_bias is not None else None
    value = F.linear(tokens, attn.in_proj_weight[2 * width:], bias)
    batch, length = tokens.shape[:2]
    value = value.view(batch, length, heads, width // heads).transpose(1, 2)
    # scaled_dot_product_attention scales by 1/sqrt(head_dim), as the q·k path does.
    mixed = F.scaled_dot_product_attention(value, value, value)
    return attn.out_proj(mixed.transpose(1, 2).reshape(batch, length, width))


def vv_layer_tokens(
    visual: nn.Module, pixels: torch.Tensor, layers: Sequence[int], vv_from_layer: int
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Tokens after each 1-based block in ``layers`` and the final ordinary tokens.

    A layer ≥ ``vv_from_layer`` yields the V-V path's tokens, an earlier one the ordinary tokens
    (as the released code does). ``vv_from_layer`` past the last block turns the V-V path off.
    """
    blocks = visual.transformer.resblocks
    wanted = set(layers)
    if not wanted or min(wanted) < 1 or max(wanted) > len(blocks):
        raise ValueError(f"layers {tuple(layers)} outside 1..{len(blocks)}")
    if vv_from_layer < 1:
        raise ValueError(f"vv_from_layer must be ≥ 1, got {vv_from_layer}")
    x = embed_patches(visual, pixels)
    vv: torch.Tensor | None = None
    taken: dict[int, torch.Tensor] = {}
    for index, block in enumerate(blocks, start=1):
        if index >= vv_from_layer:
            update = block.ls_1(vv_attention(block, block.ln_1(x)))
            vv = (x if vv is None else vv) + update  # out of place: each layer keeps its own tensor
        x = block(x)
        if index in wanted:
            taken[index] = vv if vv is not None else x
    return [taken[i] for i in layers], x
