"""AnomalyCLIP-style learnable text prompts on a frozen open_clip text tower.

Shared by ``anomalyclip`` (two groups: normal / abnormal) and ``ours`` (one normal group plus one
anomaly group per class). Each *group* is one prompt sentence, e.g. ``"object which is made of
steel"``. The learner builds, per group, the token sequence

    [SOT] [ctx_1 … ctx_L] [words of the group] [.] [EOT]

where ``ctx`` are learnable vectors in token-embedding space (one set per group; AnomalyCLIP's
object-agnostic context, default L = 12, the steel paper uses 16). With ``learn_words=True`` the
group's words become part of the learnable span and are *initialised* from their token embeddings
(CoOp's ``ctx_init``); the span then has L tokens in all: random ones first, then the words.

Deep prompts (AnomalyCLIP's "learnable text embedding", MaPLe-style): ``deep_depth - 1`` tensors of
``deep_length`` vectors, shared by all groups. Before text block ``i`` (0-based, ``1 <= i <
deep_depth``) the tokens at positions ``1 … deep_length`` (the first context slots, right after SOT)
are *replaced* by the i-th tensor, as the released AnomalyCLIP code does (it does not concatenate).
``deep_depth`` 0 or 1 means no deep prompts. The steel paper: "length of 16, depth of 9, embedding
length of 4" → ``context_length=16, deep_depth=9, deep_length=4``.

Why the text forward is written here and not delegated to ``model.encode_text``: open_clip's
``encode_text`` starts from token ids, and the learnable context lives in embedding space and has to
be swapped in between blocks; so we run ``token_embedding`` → blocks → ``ln_final`` → pooling →
``text_projection`` ourselves over the same frozen modules.

Notes for users of this module (the ``ours`` engineer):

- ``PromptLearner(model, tokenizer, texts, ...)``: ``model`` is an open_clip ``CLIP`` (or
  ``CustomTextCLIP``); the text tower's parameters are set to ``requires_grad=False`` here; the
  image tower is left alone (``ours`` fine-tunes it). The CLIP model is *not* a submodule, so
  ``learner.parameters()`` / ``state_dict()`` hold only the prompt parameters (put them in the
  optimiser next to the image encoder's); ``learner.to(device)`` moves only the prompts, move the
  CLIP model yourself.
- ``learner()`` → L2-normalised text features ``[N, embed_dim]`` in group order, differentiable
  with respect to the prompt parameters. Call it once per training step (it re-encodes all N
  groups; N is small) and once after training for inference.
- :func:`class_prompt_texts` builds the paper's multiclass groups from class names.
- ``learner.encode_with_context(texts, context)`` encodes *other* sentences with given learnable
  context vectors through the same deep prompts (``ours`` tests with one anomaly prompt whose
  context is the mean of the trained anomaly contexts).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

NORMAL_PROMPT = "object which is made of steel"
ANOMALY_PROMPT = "object which is not steel"
CLASS_ANOMALY_TEMPLATE = "object which is not steel but {}"

# A one-token placeholder whose embedding is overwritten by the learnable context.
_PLACEHOLDER = "X"


def class_prompt_texts(
    class_names: Sequence[str], normal: str = NORMAL_PROMPT, template: str = CLASS_ANOMALY_TEMPLATE
) -> tuple[str, ...]:
    """The steel paper's multiclass groups: the normal prompt, then one anomaly prompt per class."""
    return (normal, *(template.format(name.replace("_", " ")) for name in class_names))


class _TextTower:
    """The frozen text modules of an open_clip model, held without registering them as submodules."""

    def __init__(self, model: nn.Module) -> None:
        # CustomTextCLIP keeps its tower in ``model.text``; the built-in CLIP flattens it onto itself.
        tower = model.text if hasattr(model, "text") else model
        needed = ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection")
        missing = [name for name in needed if not hasattr(tower, name)]
        if missing:
            raise TypeError(f"{type(tower).__name__} is not an open_clip text transformer (missing {missing})")
        if getattr(tower, "cls_emb", None) is not None:
            raise NotImplementedError("text towers with a CLS embedding are not supported by the prompt learner")
        self.tower = tower
        self.pool_type = getattr(tower, "text_pool_type", getattr(tower, "pool_type", "argmax"))
        self.eos_id = getattr(tower, "text_eos_id", getattr(tower, "eos_id", None))

    @property
    def blocks(self) -> nn.ModuleList:
        return self.tower.transformer.resblocks

    @property
    def width(self) -> int:
        return int(self.tower.positional_embedding.shape[-1])

    @property
    def dtype(self) -> torch.dtype:
        return self.tower.positional_embedding.dtype

    @property
    def device(self) -> torch.device:
        return self.tower.positional_embedding.device

    def freeze(self) -> None:
        for name in ("token_embedding", "transformer", "ln_final"):
            getattr(self.tower, name).requires_grad_(False)
        self.tower.positional_embedding.requires_grad_(False)
        projection = self.tower.text_projection
        if projection is not None:
            projection.requires_grad_(False)

    def is_causal(self) -> bool:
        mask = getattr(self.tower, "attn_mask", None)
        if mask is None:
            return False
        future = torch.ones(mask.shape, dtype=torch.bool, device=mask.device).triu(1)
        return bool(torch.isinf(mask[future]).all() and not torch.isinf(mask[~future]).any())

    def pool_index(self, tokens: torch.Tensor) -> torch.Tensor:
        """Position of the token whose output is the sentence feature (as ``text_global_pool``)."""
        if self.pool_type == "argmax":
            return tokens.argmax(dim=-1)
        if self.pool_type == "eos":
            return (tokens == self.eos_id).int().argmax(dim=-1)
        if self.pool_type == "first":
            return torch.zeros(len(tokens), dtype=torch.long, device=tokens.device)
        if self.pool_type == "last":
            return torch.full((len(tokens),), tokens.shape[1] - 1, dtype=torch.long, device=tokens.device)
        raise NotImplementedError(f"text pool type {self.pool_type!r} is not supported")

    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        projection = self.tower.text_projection
        if projection is None:
            return pooled
        if isinstance(projection, nn.Linear):
            return projection(pooled)
        return pooled @ projection


class PromptLearner(nn.Module):
    """Learnable context + deep prompts for N prompt groups; ``forward()`` → normalised [N, D].

    Args:
        model: open_clip model whose text tower is frozen and used (not registered as a submodule).
        tokenizer: the model's open_clip tokenizer (``open_clip.get_tokenizer(name)``).
        texts: one sentence per group (normal first for AnomalyCLIP and ``ours``).
        context_length: learnable context tokens per group (12 in AnomalyCLIP, 16 in the steel paper).
        deep_depth: text layers carrying learnable tokens, counting the input layer (9 in both papers).
        deep_length: learnable tokens per deep layer (4 in both papers); must be ≤ ``context_length``
            so that the replaced positions never reach the words or EOT.
        learn_words: make the words learnable too, initialised from their embeddings.
        init_std: std of the normal initialisation of random context / deep vectors (0.02 as CoOp).
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        texts: Sequence[str],
        context_length: int = 12,
        deep_depth: int = 9,
        deep_length: int = 4,
        learn_words: bool = False,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        texts = tuple(texts)
        if not texts:
            raise ValueError("the prompt learner needs at least one prompt text")
        text = _TextTower(model)
        num_blocks = len(text.blocks)
        if context_length < 1:
            raise ValueError(f"context_length must be ≥ 1, got {context_length}")
        if not 0 <= deep_depth <= num_blocks:
            raise ValueError(f"deep_depth {deep_depth} outside 0..{num_blocks} (text layers of this model)")
        num_deep = max(deep_depth - 1, 0)
        if num_deep and not 1 <= deep_length <= context_length:
            raise ValueError(f"deep_length {deep_length} must be in 1..context_length ({context_length})")
        text.freeze()
        self._text = text
        self._tokenizer = tokenizer  # a plain callable, not state: kept for encode_with_context
        self.texts = texts
        self.context_length = context_length
        self.deep_length = deep_length
        self.learn_words = learn_words

        tokens, random_mask = self._tokenize(tokenizer, texts, context_length, learn_words, text)
        # Pooling positions are read on the host (no device round trip); the token ids then go to the
        # device of the embedding table, wherever the CLIP model is (they come from the tokenizer on the CPU).
        pool_index = text.pool_index(tokens)
        keep = int(pool_index.max()) + 1 if text.is_causal() and text.pool_type in ("argmax", "eos") \
            else tokens.shape[1]
        tokens, random_mask = tokens.to(text.device), random_mask.to(text.device)
        with torch.no_grad():
            embedded = text.tower.token_embedding(tokens).to(text.dtype)
        words = embedded[:, 1 : 1 + context_length]
        noise = torch.empty_like(words).normal_(0.0, init_std)
        context = torch.where(random_mask.unsqueeze(-1), noise, words)  # words only where learn_words put them
        self.context = nn.Parameter(context)  # [N, L, width]
        self.deep_prompts = nn.ParameterList(
            nn.Parameter(torch.empty(deep_length, text.width, dtype=text.dtype).normal_(0.0, init_std))
            for _ in range(num_deep)
        )
        # Fixed parts of each sentence; derived from the frozen model, so not saved in state_dict.
        self.register_buffer("prefix", embedded[:, :1].clone(), persistent=False)
        self.register_buffer("suffix", embedded[:, 1 + context_length:].clone(), persistent=False)
        self.register_buffer("pool_index", pool_index.to(text.device), persistent=False)
        # With a causal mask, tokens after the pooled one cannot change it: run only up to it.
        self._keep = keep

    @staticmethod
    def _tokenize(
        tokenizer: Any, texts: tuple[str, ...], context_length: int, learn_words: bool, text: _TextTower
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids of every group with placeholders where random context goes, and that mask."""
        limit = int(text.tower.positional_embedding.shape[0])
        if learn_words:
            if text.pool_type not in ("argmax", "eos"):
                raise NotImplementedError(f"learn_words needs an end-of-text pooled tower, not {text.pool_type!r}")
            word_counts = [int(text.pool_index(tokenizer([t]))[0]) - 1 for t in texts]
            too_long = [t for t, n in zip(texts, word_counts, strict=True) if n > context_length]
            if too_long:
                raise ValueError(f"prompts {too_long} have more tokens than context_length={context_length}")
            num_random = [context_length - n for n in word_counts]
        else:
            num_random = [context_length] * len(texts)
        sentences = [" ".join([_PLACEHOLDER] * n + [t]) + "." for t, n in zip(texts, num_random, strict=True)]
        tokens = tokenizer(sentences)
        if tokens.shape[1] != limit:
            raise ValueError(f"tokenizer context {tokens.shape[1]} differs from the text tower's {limit}")
        placeholder = int(tokenizer([_PLACEHOLDER])[0, 1])
        random_mask = torch.zeros(len(texts), context_length, dtype=torch.bool)
        for i, (sentence, n) in enumerate(zip(sentences, num_random, strict=True)):
            # open_clip's tokenizer truncates silently; a sentence reaching the last slot may have lost words.
            if text.pool_type == "argmax" and tokens[i, -1] != 0:
                raise ValueError(f"prompt {sentence!r} does not fit the text context of {limit} tokens")
            if not bool((tokens[i, 1 : 1 + n] == placeholder).all()):
                raise ValueError(f"tokenizer split the placeholder context of {sentence!r} unexpectedly")
            random_mask[i, :n] = True
        return tokens, random_mask

    @property
    def num_groups(self) -> int:
        return len(self.texts)

    def prompt_embeddings(self) -> torch.Tensor:
        """Input token embeddings [N, context, width] with the learnable context in place."""
        return torch.cat([self.prefix, self.context, self.suffix], dim=1)

    def forward(self) -> torch.Tensor:
        """L2-normalised text features [N, embed_dim] of all groups."""
        return self._encode(self.prompt_embeddings(), self.pool_index, self._keep)

    def encode_with_context(self, texts: Sequence[str], context: torch.Tensor) -> torch.Tensor:
        """Normalised features [M, embed_dim] of ``texts`` with learnable context ``context`` [M, L, width].

        The sentences are built as the groups' are ([SOT] context words . [EOT]) and pass the same
        deep prompts; a text equal to a group's with that group's context gives that group's feature.
        """
        texts = tuple(texts)
        if self.learn_words:
            raise NotImplementedError("encode_with_context needs fixed words (learn_words=False)")
        if context.shape != (len(texts), *self.context.shape[1:]):
            raise ValueError(f"context of shape {tuple(context.shape)} for {len(texts)} texts; expected "
                             f"{(len(texts), *self.context.shape[1:])}")
        text = self._text
        tokens, _ = self._tokenize(self._tokenizer, texts, self.context_length, False, text)
        pool_index = text.pool_index(tokens)  # on the host, as in __init__
        keep = int(pool_index.max()) + 1 if text.is_causal() and text.pool_type in ("argmax", "eos") \
            else tokens.shape[1]
        with torch.no_grad():
            embedded = text.tower.token_embedding(tokens.to(text.device)).to(context.dtype)
        embeddings = torch.cat([embedded[:, :1], context, embedded[:, 1 + self.context_length:]], dim=1)
        return self._encode(embeddings, pool_index.to(text.device), keep)

    def _encode(self, embeddings: torch.Tensor, pool_index: torch.Tensor, keep: int) -> torch.Tensor:
        """Prompt token embeddings [N, context, width] → normalised features, deep prompts swapped in."""
        tower = self._text.tower
        x = (embeddings + tower.positional_embedding.to(embeddings.dtype))[:, :keep]
        attn_mask = getattr(tower, "attn_mask", None)
        attn_mask = attn_mask[:keep, :keep] if attn_mask is not None else None
        batch_first = getattr(tower.transformer, "batch_first", True)
        for index, block in enumerate(self._text.blocks):
            if 1 <= index <= len(self.deep_prompts):
                deep = self.deep_prompts[index - 1].unsqueeze(0).expand(x.shape[0], -1, -1)
                x = torch.cat([x[:, :1], deep, x[:, 1 + self.deep_length:]], dim=1)
            if batch_first:
                x = block(x, attn_mask=attn_mask)
            else:
                x = block(x.transpose(0, 1), attn_mask=attn_mask).transpose(0, 1)
        x = tower.ln_final(x)
        pooled = x[torch.arange(x.shape[0], device=x.device), pool_index]
        return F.normalize(self._text.project(pooled), dim=-1)
