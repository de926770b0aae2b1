"""Latent edits: InterfaceGAN directions, GANSpace components, StyleCLIP mappers and the edit chain."""
from editing_directions.chain import EditChain, as_wplus
from editing_directions.edit import KINDS, Edit
from editing_directions.errors import DirectionFileError, EditingError, EditStrengthError, EditSyntaxError, \
    LatentShapeError, MapperFileError, UnknownEditError
from editing_directions.ganspace import GANSPACE_EDITS, GanspacePCA, load_pca
from editing_directions.interfacegan import INTERFACEGAN_DIRECTIONS, load_direction
from editing_directions.library import EditLibrary, EditOption, demo_library
from editing_directions.styleclip import LevelsMapper, load_mapper

__all__ = [
    "KINDS", "Edit", "EditChain", "EditLibrary", "EditOption", "GANSPACE_EDITS", "GanspacePCA",
    "INTERFACEGAN_DIRECTIONS", "LevelsMapper", "as_wplus", "demo_library", "load_direction", "load_mapper",
    "load_pca", "DirectionFileError", "EditingError", "EditStrengthError", "EditSyntaxError", "LatentShapeError",
    "MapperFileError", "UnknownEditError",
]
