"""One latent edit as a record, `Edit(kind, name, strength)`, and its text form `[kind:]name=strength`."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from editing_directions.errors import EditStrengthError, EditSyntaxError, UnknownEditError

KINDS = ("interfacegan", "ganspace", "styleclip")
DEFAULT_KIND = "interfacegan"  # kind of a bare `name=strength`
_UNSAFE_FILENAME_CHARACTERS = re.compile(r"[^A-Za-z0-9_.+-]+")


@dataclass(frozen=True)
class Edit:
    """One edit: `kind` in KINDS, the edit's `name` in that kind, and its `strength`.

    Strength is the InterfaceGAN factor, the StyleCLIP alpha, or the GANSpace target coordinate (std units).
    """

    kind: str
    name: str
    strength: float

    def __post_init__(self):
        if self.kind not in KINDS:
            raise UnknownEditError(f"unknown edit kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        if not isinstance(self.name, str) or not self.name:
            raise EditSyntaxError(f"an edit needs a non-empty name, got {self.name!r}")
        if isinstance(self.strength, bool) or not isinstance(self.strength, (int, float)):
            raise EditStrengthError(f"edit {self.kind}:{self.name}: strength must be a number, got {self.strength!r}")
        if not math.isfinite(self.strength):
            raise EditStrengthError(f"edit {self.kind}:{self.name}: strength must be finite, got {self.strength!r}")
        object.__setattr__(self, "strength", float(self.strength))

    @classmethod
    def parse(cls, text: str) -> Edit:
        """Parse `[kind:]name=strength` (a bare name is InterfaceGAN), e.g. `smile=2`, `styleclip:afro=0.1`."""
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

    def to_text(self) -> str:
        """The text form that `Edit.parse` reads back, e.g. `ganspace:smile=-6`."""
        return f"{self.kind}:{self.name}={self.strength!r}"

    @property
    def slug(self) -> str:
        """A file-name-safe short form, e.g. `smile+2`, `ganspace-smile-6`, `styleclip-afro+0.1`."""
        prefix = "" if self.kind == DEFAULT_KIND else f"{self.kind}-"
        return _UNSAFE_FILENAME_CHARACTERS.sub("_", f"{prefix}{self.name}{self.strength:+g}")
