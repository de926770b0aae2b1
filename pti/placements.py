"""faces.json: where each face of a photo sits (its quad and landmarks), so that edited faces can be pasted back later.

Written by `python -m pti invert` and the app's group downloads; read by `python -m pti edit --paste-back`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from alignment import AlignedFace

FACES_FILENAME = "faces.json"
FACES_FORMAT = "pti-faces"


def write_placements(path: Path, photo: str | Path, faces: Sequence[AlignedFace]) -> None:
    """Write where each face sits in `photo` into `path` (faces numbered from 1). `photo` is written as given: a
    relative path is read relative to the folder of `path`."""
    placements = [{"number": number, "quad": face.quad.tolist(), "landmarks": face.landmarks.tolist()}
                  for number, face in enumerate(faces, start=1)]
    path.write_text(json.dumps({"format": FACES_FORMAT, "version": 1, "photo": str(photo),
                                "size": list(faces[0].original_size), "faces": placements}, indent=1))
