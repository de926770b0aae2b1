"""Exceptions raised by the editing package, each with a readable message."""
from __future__ import annotations


class EditingError(Exception):
    """Base class of every error raised by `editing_directions`."""


class DirectionFileError(EditingError, ValueError):
    """An InterfaceGAN direction, GANSpace PCA or global-direction file (fs3, CLIP weights) is missing, corrupt or
    has the wrong content."""


class MapperFileError(EditingError, ValueError):
    """A StyleCLIP mapper checkpoint is missing, corrupt, or lacks keys / has wrong shapes."""


class UnknownEditError(EditingError, ValueError):
    """An edit names a kind or a name that the edit library does not know."""


class EditStrengthError(EditingError, ValueError):
    """An edit's strength is not a finite number inside the allowed range."""


class EditSyntaxError(EditingError, ValueError):
    """A textual edit such as `styleclip:afro=0.1` or a chain JSON document could not be parsed."""


class LatentShapeError(EditingError, ValueError):
    """A latent code does not have the shape an edit needs (e.g. W+ (N, L, D) with matching D)."""


class TextEditError(EditingError, ValueError):
    """A text edit cannot be made: an empty or too long sentence, equal sentences, a beta that keeps no channel."""
