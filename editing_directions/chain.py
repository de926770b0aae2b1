"""The edit chain: edits applied one after another to a W+ code, every step rendered in one batched call.

Each edit sees the code produced by the edits before it (a mapper maps the already-edited code; a GANSpace
edit reads its coordinate from it). Strength 0 is the identity for InterfaceGAN, StyleCLIP and text edits; a
GANSpace strength is a target coordinate, so that edit is the identity at the code's current coordinate
(`EditLibrary.ganspace_coordinate`).

Text edits (StyleCLIP global directions) act in StyleSpace, after the affines: they leave the W+ code as it is and
add `alpha * delta_s` to the styles; a step's offsets are the sum of the text edits up to it. So the W+ edits of a
chain apply first, then the affines, then the offsets, whatever the order of the edits.
"""
from __future__ import annotations

import json
from typing import Iterable

import torch
from PIL import Image
from torch import nn

from editing_directions.edit import TEXT_KIND, Edit
from editing_directions.errors import EditingError, EditSyntaxError, LatentShapeError
from editing_directions.library import EditLibrary

CHAIN_FORMAT = "pti-edit-chain"  # `format` field of the chain JSON
CHAIN_VERSION = 1


def as_wplus(w: torch.Tensor, num_ws: int) -> torch.Tensor:
    """A pivot as W+ codes (N, num_ws, D): a W code (N, D) is repeated on every layer, a W+ code is checked."""
    if w.ndim == 2:
        return w[:, None, :].repeat(1, num_ws, 1)
    if w.ndim == 3 and w.shape[1] == num_ws:
        return w
    raise LatentShapeError(f"expected a W code (N, D) or a W+ code (N, {num_ws}, D), got {tuple(w.shape)}")


class EditChain:
    """An ordered list of edits over one EditLibrary; validated on entry, replayable through JSON."""

    def __init__(self, library: EditLibrary, edits: Iterable[Edit] = ()):
        self.library = library
        self._edits: list[Edit] = []
        for edit in edits:
            self.append(edit)

    @property
    def edits(self) -> tuple[Edit, ...]:
        """The edits, in the order they are applied."""
        return tuple(self._edits)

    def __len__(self) -> int:
        """Number of edits."""
        return len(self._edits)

    def append(self, edit: Edit) -> None:
        """Add an edit at the end (unknown name or out-of-range strength -> a clear error, chain unchanged)."""
        self.library.validate(edit)
        self._edits.append(edit)

    def replace(self, index: int, edit: Edit) -> Edit:
        """Put `edit` in place of the edit at `index` (e.g. a new slider value); returns the old edit."""
        self._check_index(index)
        self.library.validate(edit)
        old, self._edits[index] = self._edits[index], edit
        return old

    def remove(self, index: int) -> Edit:
        """Drop the edit at `index` and return it."""
        self._check_index(index)
        return self._edits.pop(index)

    def move(self, old_index: int, new_index: int) -> None:
        """Move the edit at `old_index` so that it ends up at `new_index`."""
        self._check_index(old_index)
        self._check_index(new_index)
        count = len(self._edits)
        self._edits.insert(new_index % count, self._edits.pop(old_index % count))

    def clear(self) -> None:
        """Remove every edit."""
        self._edits.clear()

    def steps(self, w: torch.Tensor) -> list[torch.Tensor]:
        """W+ codes (N, L, D) of every step: the start, then the code after each edit (len(chain) + 1 tensors)."""
        codes = [w]
        for edit in self._edits:
            codes.append(self.library.apply(edit, codes[-1]))
        return codes

    def apply(self, w: torch.Tensor) -> torch.Tensor:
        """The code after every edit."""
        return self.steps(w)[-1]

    def style_steps(self) -> list[torch.Tensor] | None:
        """StyleSpace offsets of every step, one float32 tensor (len(chain) + 1, C) per conv layer (the start's row
        is zero); None when the chain has no text edit. CLIP runs here for sentences not seen before."""
        text_edits = [(index, edit) for index, edit in enumerate(self._edits) if edit.kind == TEXT_KIND]
        if not text_edits:
            return None
        rows: list[torch.Tensor] | None = None
        for index, edit in text_edits:
            offsets = self.library.style_offsets(edit)
            if rows is None:
                rows = [torch.zeros(len(self._edits) + 1, len(offset)) for offset in offsets]
            for layer, offset in zip(rows, offsets):
                layer[index + 1:] += offset  # this step and every later one
        return rows

    def render_tensor(
        self,
        G: nn.Module,  # generator with `.synthesis(ws, noise_mode=..., force_fp32=...)` and `.num_ws`
        w: torch.Tensor,  # one pivot: W (1, D) or W+ (1, num_ws, D); moved to G's device
        *,
        noise_mode: str = "const",  # 'const', 'random' or 'none'
        batch_size: int | None = None,  # codes per generator call; None renders all steps in one call
        force_fp32: bool = False,  # passed to the synthesis network
    ) -> torch.Tensor:
        """Images (len(chain) + 1, 3, R, R) in [-1, 1] of every step, in one batched generator call by default."""
        parameter = next(G.parameters())
        w = as_wplus(w.to(device=parameter.device, dtype=torch.float32), G.num_ws)
        if w.shape[0] != 1:
            raise LatentShapeError(f"render one pivot at a time, got a batch of {w.shape[0]}")
        codes = torch.cat(self.steps(w), dim=0)
        offsets = self.style_steps()
        chunk = codes.shape[0] if batch_size is None else batch_size
        if chunk < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        images = []
        with torch.no_grad():
            for start in range(0, codes.shape[0], chunk):
                part = None if offsets is None else [layer[start:start + chunk] for layer in offsets]
                images.append(G.synthesis(codes[start:start + chunk], noise_mode=noise_mode, force_fp32=force_fp32,
                                          **({} if part is None else {"style_offsets": part})))
        return torch.cat(images, dim=0)

    def render(self, G: nn.Module, w: torch.Tensor, **options) -> list[Image.Image]:
        """PIL images of every step (the start first); `options` as for `render_tensor`."""
        from pti.images import tensor_to_pil

        return tensor_to_pil(self.render_tensor(G, w, **options))

    def to_json(self) -> str:
        """The chain as JSON, for replay with `EditChain.from_json`."""
        edits = [{"kind": e.kind, "name": e.name, "strength": e.strength,
                  **({"neutral": e.neutral, "beta": e.beta} if e.kind == TEXT_KIND else {})} for e in self._edits]
        return json.dumps({"format": CHAIN_FORMAT, "version": CHAIN_VERSION, "edits": edits}, indent=1)

    @classmethod
    def from_json(cls, text: str, library: EditLibrary) -> EditChain:
        """Rebuild a chain written by `to_json`; every edit is validated against `library`."""
        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            raise EditSyntaxError(f"edit chain JSON is not valid JSON: {error}") from None
        if not isinstance(document, dict) or document.get("format") != CHAIN_FORMAT:
            raise EditSyntaxError(f"not an edit chain: expected a JSON object with format {CHAIN_FORMAT!r}")
        if document.get("version") != CHAIN_VERSION:
            raise EditSyntaxError(f"unsupported edit chain version {document.get('version')!r} "
                                  f"(this code reads version {CHAIN_VERSION})")
        records = document.get("edits")
        if not isinstance(records, list):
            raise EditSyntaxError("edit chain JSON: 'edits' should be a list")
        edits = []
        for index, record in enumerate(records):
            text = isinstance(record, dict) and record.get("kind") == TEXT_KIND
            fields = {"kind", "name", "strength"} | ({"neutral", "beta"} if text else set())
            if not isinstance(record, dict) or set(record) != fields:
                raise EditSyntaxError(f"edit chain JSON: edit {index} should be an object with exactly "
                                      + (", ".join(f"'{f}'" for f in sorted(fields))))
            try:
                edits.append(Edit(**record))
            except EditingError as error:
                raise type(error)(f"edit chain JSON, edit {index}: {error}") from None
        return cls(library, edits)

    def _check_index(self, index: int) -> None:
        """Refuse an index outside the chain (negative indices count from the end, as for lists)."""
        if not -len(self._edits) <= index < len(self._edits):
            raise IndexError(f"edit index {index} is out of range for a chain of {len(self._edits)} edits")
