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

from scrapbench.methods.common.clip_backbone import attention_heads, embed_patches, merge_heads, run_block, sdpa_ready


def vv_attention(block: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """v·v self-attention of ``block`` on already normalised ``tokens`` (B×N×width), output-projected."""
    _check(block)
    _, _, value = attention_heads(block, tokens)
    # scaled_dot_product_attention scales by 1/sqrt(head_dim), as the q·k path does.
    return block.attn.out_proj(merge_heads(F.scaled_dot_product_attention(value, value, value)))


def block_with_vv(block: nn.Module, x: torch.Tensor, class_token_only: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """``block(x)`` and the V-V path's update ``ls_1(vv_attention(block, ln_1(x)))`` in one pass.

    Both paths read the same ``ln_1(x)`` and the same value projection, so the normalisation and the
    q/k/v projection are computed once and the two attentions run as one batched
    ``scaled_dot_product_attention`` (q·k on the first half, v·v on the second) and one ``out_proj``.
    ``class_token_only``: the ordinary output only for the class token (``block(x)[:, :1]``), for a
    last block whose other ordinary tokens nobody reads; its q·k attention then has one query.
    """
    _check(block)
    if class_token_only:
        q, k, v = attention_heads(block, block.ln_1(x), queries=1)
        ordinary = F.scaled_dot_product_attention(q, k, v)
        vv = F.scaled_dot_product_attention(v, v, v)
        out = block.attn.out_proj(torch.cat([merge_heads(ordinary), merge_heads(vv)], dim=1))
        ordinary, vv = out[:, :1], out[:, 1:]
        x = x[:, :1]
    else:
        q, k, v = attention_heads(block, block.ln_1(x))
        mixed = F.scaled_dot_product_attention(torch.cat([q, v]), torch.cat([k, v]), torch.cat([v, v]))
        ordinary, vv = block.attn.out_proj(merge_heads(mixed)).split(x.shape[0])
    x = x + block.ls_1(ordinary)
    return x + block.ls_2(block.mlp(block.ln_2(x))), block.ls_1(vv)


def _check(block: nn.Module) -> None:
    if not sdpa_ready(block):
        raise NotImplementedError(f"V-V attention needs an open_clip block with a packed nn.MultiheadAttention, "
                                  f"got {type(getattr(block, 'attn', block)).__name__}")


def vv_layer_tokens(
    visual: nn.Module, pixels: torch.Tensor, layers: Sequence[int], vv_from_layer: int,
    final_class_token_only: bool = False,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Tokens after each 1-based block in ``layers`` and the final ordinary tokens.

    A layer ≥ ``vv_from_layer`` yields the V-V path's tokens, an earlier one the ordinary tokens
    (as the released code does). ``vv_from_layer`` past the last block turns the V-V path off.
    ``final_class_token_only``: the final ordinary tokens are only the class token (B×1×width);
    when the last block carries the V-V path, its ordinary output is then computed for that token
    alone (AnomalyCLIP reads nothing else of it).
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
    if final_class_token_only and vv_from_layer > len(blocks):
        raise ValueError("final_class_token_only needs the V-V path in the last block")
    for index, block in enumerate(blocks, start=1):
        if index >= vv_from_layer:
            entering = x
            x, update = block_with_vv(block, x, class_token_only=final_class_token_only and index == len(blocks))
            vv = (entering if vv is None else vv) + update  # out of place: each layer keeps its own tensor
        else:
            x = run_block(block, x)
        if index in wanted:
            taken[index] = vv if vv is not None else x
    return [taken[i] for i in layers], x
