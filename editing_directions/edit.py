"""One latent edit as a record, `Edit(kind, name, strength)`, and its text form `[kind:]name=strength`.

A text edit (StyleCLIP global direction) is `Edit('text', target, alpha, neutral=..., beta=...)`: its name is the
target sentence; its text form is `text:[NEUTRAL->]TARGET=ALPHA[,BETA]` (neutral 'a face' and beta 0.15 by default).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from editing_directions.errors import EditStrengthError, EditSyntaxError, UnknownEditError

KINDS = ("interfacegan", "ganspace", "styleclip", "text")
DEFAULT_KIND = "interfacegan"  # kind of a bare `name=strength`
_UNSAFE_FILENAME_CHARACTERS = re.compile(r"[^A-Za-z0-9_.+-]+")
TEXT_KIND = "text"
TEXT_ARROW = "->"  # between the neutral and the target sentence in the text form
DEFAULT_NEUTRAL = "a face"  # the neutral sentence of a text edit when none is given
DEFAULT_BETA = 0.15  # the threshold of a text edit when none is given (the StyleCLIP authors' default)


@dataclass(frozen=True)
class Edit:
    """One edit: `kind` in KINDS, the edit's `name` in that kind, and its `strength`.

    Strength is the InterfaceGAN factor, the StyleCLIP alpha (mapper or text edit), or the GANSpace target
    coordinate (std units). A text edit's name is its target sentence; it also has a neutral sentence and a beta.
    """

    kind: str
    name: str
    strength: float
    neutral: str | None = None  # text edits only: the sentence describing the face as it is
    beta: float | None = None  # text edits only: channels less relevant than this are not moved

    def __post_init__(self):
        if self.kind not in KINDS:
            raise UnknownEditError(f"unknown edit kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        if self.kind == TEXT_KIND:
            self._check_text()
        elif self.neutral is not None or self.beta is not None:
            raise EditSyntaxError(f"only text edits have a neutral sentence and a beta, not {self.kind} edits")
        if not isinstance(self.name, str) or not self.name:
            raise EditSyntaxError(f"an edit needs a non-empty name, got {self.name!r}")
        if isinstance(self.strength, bool) or not isinstance(self.strength, (int, float)):
            raise EditStrengthError(f"edit {self.kind}:{self.name}: strength must be a number, got {self.strength!r}")
        if not math.isfinite(self.strength):
            raise EditStrengthError(f"edit {self.kind}:{self.name}: strength must be finite, got {self.strength!r}")
        object.__setattr__(self, "strength", float(self.strength))

    def _check_text(self) -> None:
        """A text edit's sentences (non-empty, different; whitespace tidied) and beta (a finite number)."""
        for field, what in (("name", "target sentence"), ("neutral", "neutral sentence")):
            value = getattr(self, field)
            if not isinstance(value, str) or not value.strip():
                example = "'a smiling face'" if field == "name" else f"'{DEFAULT_NEUTRAL}'"
                raise EditSyntaxError(f"the {what} of the text edit is empty; type one, e.g. {example}")
            object.__setattr__(self, field, " ".join(value.split()))
        if self.name.casefold() == self.neutral.casefold():
            raise EditSyntaxError(f"the target sentence is the same as the neutral one ({self.name!r}); change the "
                                  "target to say what should change, e.g. 'a smiling face'")
        if isinstance(self.beta, bool) or not isinstance(self.beta, (int, float)) or not math.isfinite(self.beta):
            raise EditStrengthError(f"text edit {self.name!r}: beta must be a finite number, got {self.beta!r}")
        object.__setattr__(self, "beta", float(self.beta))

    @classmethod
    def text(cls, target: str, alpha: float, *, neutral: str = DEFAULT_NEUTRAL, beta: float = DEFAULT_BETA) -> Edit:
        """A text edit (StyleCLIP global direction) from `neutral` towards `target` at strength `alpha`."""
        return cls(TEXT_KIND, target, alpha, neutral=neutral, beta=beta)

    @classmethod
    def parse(cls, text: str) -> Edit:
        """Parse `[kind:]name=strength` (a bare name is InterfaceGAN), e.g. `smile=2`, `styleclip:afro=0.1`, or a
        text edit `text:[NEUTRAL->]TARGET=ALPHA[,BETA]`, e.g. `text:a face->a smiling face=4.1,0.15`."""
        if text.strip().startswith(f"{TEXT_KIND}:"):
            return cls._parse_text(text.strip()[len(TEXT_KIND) + 1:], text)
        spec, equals, value = text.strip().partition("=")
        if not equals or not value.strip():
            raise EditSyntaxError(f"cannot parse edit {text!r}: expected [kind:]name=strength, e.g. smile=2")
        kind, colon, name = spec.strip().rpartition(":")
        kind = kind.strip() if colon else DEFAULT_KIND
        if not name.strip():
            raise EditSyntaxError(f"cannot parse edit {text!r}: the name is empty")
        try:
            strength = float(value)
        except ValueError:
            raise EditSyntaxError(f"cannot parse edit {text!r}: strength {value.strip()!r} is not a number") from None
        return cls(kind, name.strip(), strength)

    @classmethod
    def _parse_text(cls, spec: str, text: str) -> Edit:
        """The part of a text edit after `text:`: `[NEUTRAL->]TARGET=ALPHA[,BETA]`."""
        sentences, equals, numbers = spec.rpartition("=")
        if not equals or not numbers.strip():
            raise EditSyntaxError(f"cannot parse edit {text!r}: expected text:[NEUTRAL->]TARGET=ALPHA[,BETA], "
                                  "e.g. text:a face->a smiling face=4.1")
        neutral, arrow, target = sentences.partition(TEXT_ARROW)
        if not arrow:
            neutral, target = DEFAULT_NEUTRAL, sentences
        values = numbers.split(",")
        if len(values) > 2:
            raise EditSyntaxError(f"cannot parse edit {text!r}: after '=' give ALPHA or ALPHA,BETA, e.g. 4.1,0.15")
        try:
            alpha, beta = float(values[0]), float(values[1]) if len(values) == 2 else DEFAULT_BETA
        except ValueError:
            raise EditSyntaxError(f"cannot parse edit {text!r}: {numbers.strip()!r} is not ALPHA or ALPHA,BETA "
                                  "(numbers)") from None
        return cls.text(target, alpha, neutral=neutral, beta=beta)

    def to_text(self) -> str:
        """The text form that `Edit.parse` reads back, e.g. `ganspace:smile=-6`, `text:a face->a smile=4.1,0.15`."""
        if self.kind == TEXT_KIND:
            return f"{TEXT_KIND}:{self.neutral}{TEXT_ARROW}{self.name}={self.strength!r},{self.beta!r}"
        return f"{self.kind}:{self.name}={self.strength!r}"

    @property
    def slug(self) -> str:
        """A file-name-safe short form, e.g. `smile+2`, `ganspace-smile-6`, `styleclip-afro+0.1`,
        `text-a_smiling_face+4.1`."""
        prefix = "" if self.kind == DEFAULT_KIND else f"{self.kind}-"
        return _UNSAFE_FILENAME_CHARACTERS.sub("_", f"{prefix}{self.name}{self.strength:+g}")
