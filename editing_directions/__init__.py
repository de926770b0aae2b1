"""Latent edits: InterfaceGAN directions, GANSpace components, StyleCLIP mappers and global directions (text edits),
and the edit chain."""
from editing_directions.chain import EditChain, as_wplus
from editing_directions.clip_text import TextEncoder, load_text_encoder
from editing_directions.edit import KINDS, Edit
from editing_directions.errors import DirectionFileError, EditingError, EditStrengthError, EditSyntaxError, \
    LatentShapeError, MapperFileError, TextEditError, UnknownEditError
from editing_directions.ganspace import GANSPACE_EDITS, GanspacePCA, load_pca
from editing_directions.global_directions import GlobalDirection, cached_style_std, global_direction, load_fs3, \
    style_std
from editing_directions.interfacegan import INTERFACEGAN_DIRECTIONS, load_direction
from editing_directions.library import EditLibrary, EditOption, demo_library
from editing_directions.styleclip import LevelsMapper, load_mapper

__all__ = [
    "KINDS", "Edit", "EditChain", "EditLibrary", "EditOption", "GANSPACE_EDITS", "GanspacePCA",
    "INTERFACEGAN_DIRECTIONS", "LevelsMapper", "as_wplus", "demo_library", "load_direction", "load_mapper",
    "load_pca", "DirectionFileError", "EditingError", "EditStrengthError", "EditSyntaxError", "LatentShapeError",
    "MapperFileError", "UnknownEditError", "GlobalDirection", "TextEditError", "TextEncoder", "cached_style_std",
    "global_direction", "load_fs3", "load_text_encoder", "style_std",
]
