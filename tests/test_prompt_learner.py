"""The shared AnomalyCLIP-style prompt learner on a tiny random CLIP."""

from __future__ import annotations

import pytest
import torch

from scrapbench.methods.common.clip_weights import load_clip
from scrapbench.methods.common.prompt_learner import (
    ANOMALY_PROMPT,
    NORMAL_PROMPT,
    PromptLearner,
    class_prompt_texts,
)

CLASSES = ("motor", "cable", "spray_can")


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    return load_clip("scrapbench-vit-tiny", None, 64)


def _learner(clip, texts=(NORMAL_PROMPT, ANOMALY_PROMPT), seed=0, **kwargs) -> PromptLearner:
    torch.manual_seed(seed)
    kwargs.setdefault("deep_depth", 2)  # the tiny text tower has 2 layers
    return PromptLearner(clip.model, clip.tokenizer, texts, **kwargs)


def test_shapes_and_normalised_output(clip):
    learner = _learner(clip, context_length=12, deep_length=4)
    features = learner()
    assert features.shape == (2, clip.model.text_projection.shape[1])
    torch.testing.assert_close(features.norm(dim=-1), torch.ones(2))
    assert learner.context.shape == (2, 12, 64)
    assert [tuple(p.shape) for p in learner.deep_prompts] == [(4, 64)]  # depth − 1 deep tensors


def test_only_prompt_parameters_train(clip):
    learner = _learner(clip)
    assert {name for name, _ in learner.named_parameters()} == {"context", "deep_prompts.0"}
    assert set(learner.state_dict()) == {"context", "deep_prompts.0"}  # no CLIP weights in the state
    text_params = [p for n, p in clip.model.named_parameters() if not n.startswith("visual.") and n != "logit_scale"]
    assert text_params and not any(p.requires_grad for p in text_params)
    # The image tower stays trainable: ``ours`` fine-tunes it next to the prompts.
    assert all(p.requires_grad for p in clip.model.visual.parameters())


def test_gradients_reach_context_and_deep_prompts(clip):
    learner = _learner(clip)
    learner()[1].sum().backward()  # a loss on the abnormal group only
    assert learner.context.grad[1].abs().sum() > 0
    assert torch.all(learner.context.grad[0] == 0)  # each group owns its context
    assert learner.deep_prompts[0].grad.abs().sum() > 0  # deep prompts are shared by all groups


def test_deep_prompts_change_the_output(clip):
    shallow = _learner(clip, deep_depth=0)
    deep = _learner(clip, deep_depth=2)
    with torch.no_grad():
        deep.context.copy_(shallow.context)
    assert len(shallow.deep_prompts) == 0
    assert not torch.allclose(shallow(), deep())
    before = deep().detach()
    with torch.no_grad():
        deep.deep_prompts[0].add_(0.5)
    assert not torch.allclose(before, deep())


def test_deep_prompts_replace_the_first_context_tokens(clip):
    """AnomalyCLIP's release: before text block i ≥ 1, positions 1..deep_length are overwritten (not appended)."""
    learner = _learner(clip, context_length=6, deep_depth=2, deep_length=4)
    model = clip.model
    x = learner.prompt_embeddings() + model.positional_embedding
    x = model.transformer.resblocks[0](x, attn_mask=model.attn_mask)
    x = torch.cat([x[:, :1], learner.deep_prompts[0].expand(2, -1, -1), x[:, 5:]], dim=1)
    x = model.ln_final(model.transformer.resblocks[1](x, attn_mask=model.attn_mask))
    eot = clip.tokenizer(["X " * 6 + NORMAL_PROMPT + ".", "X " * 6 + ANOMALY_PROMPT + "."]).argmax(dim=-1)
    expected = torch.nn.functional.normalize(x[torch.arange(2), eot] @ model.text_projection, dim=-1)
    torch.testing.assert_close(learner(), expected)


def test_learned_words_start_as_the_plain_sentence(clip):
    """With the words as the whole learnable span and no deep prompts, the text forward is CLIP's own."""
    text = "object which is made of steel"
    words = int(clip.tokenizer([text]).argmax(dim=-1)[0]) - 1
    learner = _learner(clip, texts=(text,), context_length=words, deep_depth=0, learn_words=True)
    expected = clip.model.encode_text(clip.tokenizer([text + "."]), normalize=True)
    torch.testing.assert_close(learner(), expected)


def test_class_specific_prompts_differ(clip):
    texts = class_prompt_texts(CLASSES)
    assert texts == (NORMAL_PROMPT, "object which is not steel but motor", "object which is not steel but cable",
                     "object which is not steel but spray can")
    learner = _learner(clip, texts=texts, context_length=16, learn_words=True)
    features = learner()
    assert features.shape[0] == 4
    similarity = features @ features.T
    off_diagonal = similarity[~torch.eye(4, dtype=torch.bool)]
    assert torch.all(off_diagonal < 1 - 1e-4)


def test_prompts_train_towards_a_target(clip):
    learner = _learner(clip)
    target = torch.nn.functional.normalize(torch.randn(2, learner().shape[1]), dim=-1)
    optimiser = torch.optim.Adam(learner.parameters(), lr=1e-2)
    start = (learner() * target).sum().item()
    for _ in range(20):
        loss = -(learner() * target).sum()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert (learner() * target).sum().item() > start + 0.1


def test_bad_settings_are_rejected(clip):
    with pytest.raises(ValueError, match="deep_length"):
        _learner(clip, context_length=2, deep_length=4)
    with pytest.raises(ValueError, match="deep_depth"):
        _learner(clip, deep_depth=3)
    with pytest.raises(ValueError, match="context_length"):
        _learner(clip, texts=("object which is not steel but spray can",), context_length=3, learn_words=True)
    with pytest.raises(ValueError, match="does not fit"):
        _learner(clip, texts=(" ".join(["steel"] * 40),))


def test_encode_with_context_reproduces_the_groups_and_takes_new_sentences(clip):
    learner = _learner(clip, texts=class_prompt_texts(CLASSES), context_length=8, deep_length=4)
    torch.testing.assert_close(learner.encode_with_context(learner.texts, learner.context), learner())
    mean = learner.context[1:].mean(0, keepdim=True)
    pair = learner.encode_with_context((NORMAL_PROMPT, ANOMALY_PROMPT), torch.cat([learner.context[:1], mean]))
    torch.testing.assert_close(pair[0], learner()[0])
    # the same as a learner built on the new sentence whose context is set to the mean
    other = _learner(clip, texts=(ANOMALY_PROMPT,), context_length=8, deep_length=4)
    with torch.no_grad():
        other.context.copy_(mean)
        for mine, theirs in zip(other.deep_prompts, learner.deep_prompts, strict=True):
            mine.copy_(theirs)
    torch.testing.assert_close(pair[1], other()[0])
    with pytest.raises(ValueError, match="context of shape"):
        learner.encode_with_context((ANOMALY_PROMPT,), learner.context)
