"""CLIP text features of a sentence for StyleCLIP global directions (open_clip's ViT-B/32 text tower).

Each sentence is put into the ImageNet prompt templates that open_clip ships (`OPENAI_IMAGENET_TEMPLATES`, 80 of
them) less the one the StyleCLIP authors left out ('a photo of many {}.', commented out in their list), so 79;
every text is encoded, L2-normalised, the features averaged and the mean normalised again. Features are cached per
sentence. open_clip is imported when an encoder is built (it takes seconds), never at import.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from editing_directions.errors import DirectionFileError, TextEditError

CLIP_KEY = "clip-vit-b-32-openai"  # registry key of the CLIP weights (open_clip safetensors)
CLIP_MODEL_NAME = "ViT-B-32-quickgelu"  # open_clip's config of OpenAI's ViT-B/32 (QuickGELU)
LEFT_OUT_TEMPLATES = ("a photo of many {}.",)  # commented out of the StyleCLIP authors' template list
CACHE_SIZE = 256  # sentences whose features are kept


def imagenet_templates() -> tuple[Callable[[str], str], ...]:
    """open_clip's 80 ImageNet templates less `LEFT_OUT_TEMPLATES`: the StyleCLIP authors' 79."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    left_out = {template.format("{}") for template in LEFT_OUT_TEMPLATES}
    return tuple(t for t in OPENAI_IMAGENET_TEMPLATES if t("{}") not in left_out)


class TextEncoder:
    """Sentence -> normalised CLIP text feature (D,), averaged over prompt templates, cached per sentence."""

    def __init__(
        self,
        model: torch.nn.Module,  # an open_clip CLIP model (only `encode_text` is used)
        tokenizer: Callable,  # open_clip tokenizer: texts -> (N, context_length) tokens; `.encode(text)` -> ids
        *,
        templates: Sequence[Callable[[str], str]] | None = None,  # default `imagenet_templates()`
        cache_size: int = CACHE_SIZE,
    ):
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.templates = tuple(templates) if templates is not None else imagenet_templates()
        self.context_length = int(getattr(tokenizer, "context_length", 77))
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def check(self, sentence: str, what: str = "sentence") -> str:
        """The sentence, stripped; empty or too long for CLIP (in any template) -> `TextEditError` saying the fix."""
        if not isinstance(sentence, str) or not sentence.strip():
            raise TextEditError(f"the {what} is empty; type a short description, e.g. 'a smiling face'")
        sentence = " ".join(sentence.split())
        longest = max(len(self.tokenizer.encode(template(sentence))) for template in self.templates)
        room = self.context_length - 2  # the start and end tokens
        if longest > room:
            overhead = max(len(self.tokenizer.encode(template(""))) for template in self.templates)
            raise TextEditError(f"the {what} is too long for CLIP: in the longest prompt template it takes {longest} "
                                f"of the {room} tokens CLIP reads; shorten it to at most about "
                                f"{room - overhead} tokens")
        return sentence

    def encode(self, sentence: str) -> np.ndarray:
        """The sentence's CLIP text feature (D,), float32, unit norm (the template average, renormalised)."""
        sentence = self.check(sentence)
        with self._lock:
            if sentence in self._cache:
                self._cache.move_to_end(sentence)
                return self._cache[sentence]
        parameter = next(self.model.parameters())
        tokens = self.tokenizer([template(sentence) for template in self.templates]).to(parameter.device)
        with torch.no_grad():
            features = self.model.encode_text(tokens).float()
        features = features / features.norm(dim=-1, keepdim=True)
        mean = features.mean(dim=0)
        feature = (mean / mean.norm()).cpu().numpy().astype(np.float32)
        feature.setflags(write=False)
        with self._lock:
            self._cache[sentence] = feature
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return feature


def load_text_encoder(path: str | Path, *, device: torch.device | str = "cpu") -> TextEncoder:
    """OpenAI's CLIP ViT-B/32 from open_clip's safetensors file (both towers, strictly matched; no pickle)."""
    import open_clip
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except Exception as error:  # noqa: BLE001 - OSError, or safetensors' own SafetensorError for damaged bytes
        raise DirectionFileError(f"{path}: unreadable CLIP safetensors file ({type(error).__name__}: {error})") \
            from None
    model = open_clip.create_model(CLIP_MODEL_NAME, pretrained=None)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise DirectionFileError(f"{path}: not open_clip's {CLIP_MODEL_NAME} weights: {str(error)[:300]}") from None
    return TextEncoder(model.to(device), open_clip.get_tokenizer(CLIP_MODEL_NAME))


def random_text_encoder(*, embed_dim: int = 512, width: int = 32, layers: int = 1, seed: int = 0) -> TextEncoder:
    """A tiny open_clip CLIP with seeded random weights and the real tokenizer: the encoding path, no meaning."""
    import open_clip
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.CLIP(embed_dim, CLIPVisionCfg(layers=1, width=64, head_width=32, patch_size=16, image_size=32),
                               CLIPTextCfg(width=width, heads=2, layers=layers), quick_gelu=True)
    return TextEncoder(model, open_clip.get_tokenizer(CLIP_MODEL_NAME))
