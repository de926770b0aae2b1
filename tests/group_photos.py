"""Group photos built from the two public-domain test photos, for the group tests."""
from __future__ import annotations

from PIL import Image

from conftest import FACES_DIR

GREY = (128, 128, 128)


def open_rgb(name: str) -> Image.Image:
    """A test photo as RGB."""
    with Image.open(FACES_DIR / name) as image:
        return image.convert("RGB")


def canvas(width: int, height: int, *pieces: tuple[Image.Image, tuple[int, int]]) -> Image.Image:
    """A grey canvas with each image pasted at its position (later ones on top)."""
    result = Image.new("RGB", (width, height), GREY)
    for piece, position in pieces:
        result.paste(piece, position)
    return result


def side_by_side() -> Image.Image:
    """Grace Hopper rotated 20 degrees on the left, the astronaut at 1.5x on the right (1546 x 768)."""
    grace = open_rgb("grace_hopper.jpg").rotate(20, Image.Resampling.BICUBIC, expand=True, fillcolor=GREY)
    astronaut = open_rgb("astronaut.png").resize((768, 768), Image.Resampling.LANCZOS)
    return canvas(grace.width + astronaut.width, max(grace.height, astronaut.height),
                  (grace, (0, 0)), (astronaut, (grace.width, 0)))


def nearly_touching() -> Image.Image:
    """The astronaut's face and a half-size Grace Hopper's, about 20 px apart: their crops and masks overlap."""
    grace = open_rgb("grace_hopper.jpg").resize((256, 300), Image.Resampling.LANCZOS)
    return canvas(560, 400, (open_rgb("astronaut.png").crop((100, 0, 340, 400)), (0, 0)),
                  (grace.crop((60, 20, 256, 300)), (170, 40)))
