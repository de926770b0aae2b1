"""CLIP text encoder: sentence checks at CLIP's token limit, the feature cache, loading open_clip weights, the tiny
random tower. Only tiny random towers: no CLIP weights are downloaded or needed."""
from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch
from open_clip.transformer import QuickGELU
from safetensors.torch import save_file

from editing_directions.clip_text import CLIP_MODEL_NAME, TextEncoder, imagenet_templates, load_text_encoder, \
    random_text_encoder
from editing_directions.errors import DirectionFileError, TextEditError


@pytest.fixture(scope="module")
def text_encoder() -> TextEncoder:
    """A tiny random open_clip text tower (16-d features) with the real tokenizer."""
    return random_text_encoder(embed_dim=16, seed=3)


class Tokenizer:
    """open_clip's tokenizer with or without a `context_length` attribute."""

    def __init__(self, context_length: int | None = None):
        self.real = open_clip.get_tokenizer(CLIP_MODEL_NAME)
        if context_length is not None:
            self.context_length = context_length

    def __call__(self, texts):
        return self.real(texts)

    def encode(self, text):
        return self.real.encode(text)


def sentence(words: int) -> str:
    return "a face with " + "very " * words + "long hair"


def longest_prompt(tokenizer, text: str) -> int:
    """Tokens of the text in its longest template, without the start and end tokens."""
    return max(len(tokenizer.encode(template(text))) for template in imagenet_templates())


def test_the_encoder_is_frozen_in_eval_mode(text_encoder):
    assert not text_encoder.model.training
    assert not any(p.requires_grad for p in text_encoder.model.parameters())


def test_a_sentence_filling_the_75_tokens_passes_and_one_more_token_is_refused(text_encoder):
    tokenizer = open_clip.get_tokenizer(CLIP_MODEL_NAME)
    words = 75 - longest_prompt(tokenizer, sentence(0))  # "very " is one token
    assert (longest_prompt(tokenizer, sentence(words)), longest_prompt(tokenizer, sentence(words + 1))) == (75, 76)
    assert text_encoder.check(sentence(words)) == sentence(words)
    overhead = max(len(tokenizer.encode(template(""))) for template in imagenet_templates())
    with pytest.raises(TextEditError, match=f"^the sentence is too long for CLIP: in the longest prompt template it "
                                            f"takes 76 of the 75 tokens CLIP reads; shorten it to at most about "
                                            f"{75 - overhead} tokens$"):
        text_encoder.check(sentence(words + 1))
    with pytest.raises(TextEditError, match="^the sentence is empty"):
        text_encoder.check(" \t")
    with pytest.raises(TextEditError, match="^the target is empty"):
        text_encoder.check(None, "target")


def test_the_token_limit_comes_from_the_tokenizer_or_is_clips_77():
    model = random_text_encoder(embed_dim=16, seed=3).model
    assert TextEncoder(model, Tokenizer()).context_length == 77
    short = TextEncoder(model, Tokenizer(context_length=20))
    assert short.context_length == 20
    tokenizer = open_clip.get_tokenizer(CLIP_MODEL_NAME)
    fits = 18 - longest_prompt(tokenizer, sentence(0))
    assert longest_prompt(tokenizer, sentence(fits)) == 18
    short.check(sentence(fits))
    with pytest.raises(TextEditError, match="takes 19 of the 18 tokens"):
        short.check(sentence(fits + 1))


def test_own_templates_and_a_least_recently_used_cache(monkeypatch):
    encoder = TextEncoder(random_text_encoder(embed_dim=16, seed=3).model, open_clip.get_tokenizer(CLIP_MODEL_NAME),
                          templates=[lambda text: f"a photo of {text}."], cache_size=2)
    calls = []
    original = encoder.model.encode_text
    monkeypatch.setattr(encoder.model, "encode_text", lambda tokens: calls.append(len(tokens)) or original(tokens))
    a = encoder.encode("grey hair")
    assert calls == [1]  # one template: one text encoded
    with torch.no_grad():
        direct = original(open_clip.get_tokenizer(CLIP_MODEL_NAME)(["a photo of grey hair."]))[0].double()
    np.testing.assert_allclose(a, (direct / direct.norm()).numpy(), rtol=1e-5, atol=1e-6)
    assert not a.flags.writeable
    encoder.encode("a smile")
    assert encoder.encode("grey hair") is a and len(calls) == 2  # both kept; "grey hair" now the most recent
    encoder.encode("glasses")  # evicts "a smile", the least recently used
    assert encoder.encode("grey hair") is a and len(calls) == 3
    encoder.encode("a smile")
    assert len(calls) == 4


def test_weights_load_into_open_clips_model_with_its_tokenizer(tmp_path, monkeypatch):
    reference = random_text_encoder(embed_dim=16, seed=3)
    path = tmp_path / "clip.safetensors"
    save_file({key: value.clone().contiguous() for key, value in reference.model.state_dict().items()}, str(path))
    created = []

    def create_model(name, **kwargs):  # the real ViT-B/32 is too big for a unit test: the tiny tower, other weights
        created.append((name, kwargs))
        return random_text_encoder(embed_dim=16, seed=4).model

    monkeypatch.setattr(open_clip, "create_model", create_model)
    encoder = load_text_encoder(path)
    assert created == [(CLIP_MODEL_NAME, {"pretrained": None})]
    assert isinstance(encoder.tokenizer, type(open_clip.get_tokenizer(CLIP_MODEL_NAME)))
    assert encoder.context_length == 77
    assert np.array_equal(encoder.encode("grey hair"), reference.encode("grey hair"))
    assert next(encoder.model.parameters()).device == torch.device("cpu")
    assert not any(p.requires_grad for p in encoder.model.parameters())


def test_a_file_for_another_model_is_refused_with_torchs_reason_cut_to_300_characters(tmp_path, monkeypatch):
    path = tmp_path / "other.safetensors"
    other = random_text_encoder(embed_dim=8, seed=3).model
    save_file({key: value.clone().contiguous() for key, value in other.state_dict().items()}, str(path))
    monkeypatch.setattr(open_clip, "create_model", lambda name, **kwargs: random_text_encoder(embed_dim=16).model)
    with pytest.raises(RuntimeError) as torch_error:
        random_text_encoder(embed_dim=16).model.load_state_dict(other.state_dict())
    reason = str(torch_error.value)
    assert len(reason) > 300
    with pytest.raises(DirectionFileError) as refusal:
        load_text_encoder(path)
    assert str(refusal.value) == f"{path}: not open_clip's {CLIP_MODEL_NAME} weights: {reason[:300]}"
    with pytest.raises(DirectionFileError, match=r"absent.safetensors: unreadable CLIP safetensors file "
                                                 r"\(FileNotFoundError: "):
        load_text_encoder(tmp_path / "absent.safetensors")


def test_the_random_tower_is_tiny_quickgelu_and_seeded():
    encoder = random_text_encoder()
    model = encoder.model
    assert encoder.encode("a face").shape == (512,)  # embed_dim 512 by default, as OpenAI's ViT-B/32
    text_block = model.transformer.resblocks[0]
    assert (model.transformer.width, len(model.transformer.resblocks), text_block.attn.num_heads) == (32, 1, 2)
    assert isinstance(text_block.mlp.gelu, QuickGELU)  # OpenAI's activation, as the real weights need
    visual = model.visual  # never used for text, kept as small as open_clip allows
    visual_heads = visual.transformer.resblocks[0].attn.num_heads
    assert (len(visual.transformer.resblocks), visual.conv1.out_channels, visual_heads, visual.conv1.kernel_size,
            tuple(visual.image_size)) == (1, 64, 2, (16, 16), (32, 32))
    assert sum(p.numel() for p in model.parameters()) < 2_000_000
    weights = model.state_dict()
    again = random_text_encoder(seed=0).model.state_dict()
    assert all(torch.equal(value, weights[key]) for key, value in again.items())
    assert not torch.equal(random_text_encoder(seed=1).model.token_embedding.weight, weights["token_embedding.weight"])
