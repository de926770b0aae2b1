"""FFHQ face alignment: robust image input, detection, landmarks, the FFHQ crop and paste-back."""
from .align import DEFAULT_OUTPUT_SIZE, AlignedFace, align_face
from .detection import FaceBox, detect_faces
from .errors import AlignmentError, FaceIndexError, ImageInputError, LandmarkModelError, NoFaceError
from .ffhq_crop import aligned_to_original, ffhq_quad, original_to_aligned, render_aligned
from .group import DEFAULT_MAX_FACES, MIN_GROUP_FACE_SIZE, GroupAlignment, SkippedFace, align_faces, draw_faces
from .image_io import DEFAULT_MAX_PIXELS, load_image
from .landmarks import landmark_predictor, predict_landmarks
from .paste import FacePlacement, face_mask, paste_back, paste_back_faces

__all__ = [
    "DEFAULT_MAX_FACES",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_OUTPUT_SIZE",
    "AlignedFace",
    "AlignmentError",
    "FaceBox",
    "FaceIndexError",
    "FacePlacement",
    "GroupAlignment",
    "ImageInputError",
    "LandmarkModelError",
    "MIN_GROUP_FACE_SIZE",
    "NoFaceError",
    "SkippedFace",
    "align_face",
    "align_faces",
    "aligned_to_original",
    "detect_faces",
    "draw_faces",
    "face_mask",
    "ffhq_quad",
    "landmark_predictor",
    "load_image",
    "original_to_aligned",
    "paste_back",
    "paste_back_faces",
    "predict_landmarks",
    "render_aligned",
]
