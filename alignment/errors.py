"""Exceptions raised by the alignment package, each with a message that says what went wrong."""
from __future__ import annotations


class AlignmentError(ValueError):
    """Base class of every error raised by `alignment`."""


class ImageInputError(AlignmentError):
    """The input is not a usable image: empty, truncated, corrupt, not an image, unsupported or too large."""


class NoFaceError(AlignmentError):
    """The face detector found no face in the image."""


class FaceIndexError(AlignmentError):
    """A face was asked for by an index outside the faces that were found."""


class LandmarkModelError(AlignmentError):
    """The dlib 68-point landmark model file is missing or is not the expected file (wrong sha256)."""
