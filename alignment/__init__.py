"""FFHQ face alignment: robust image input, detection, landmarks, the FFHQ crop and paste-back."""
from .align import DEFAULT_OUTPUT_SIZE, AlignedFace, align_face
from .detection import FaceBox, detect_faces
from .errors import AlignmentError, FaceIndexError, ImageInputError, LandmarkModelError, NoFaceError
from .ffhq_crop import aligned_to_original, ffhq_quad, original_to_aligned, render_aligned
from .image_io import DEFAULT_MAX_PIXELS, load_image
from .landmarks import landmark_predictor, predict_landmarks
from .paste import face_mask, paste_back

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_OUTPUT_SIZE",
    "AlignedFace",
    "AlignmentError",
    "FaceBox",
    "FaceIndexError",
    "ImageInputError",
    "LandmarkModelError",
    "NoFaceError",
    "align_face",
    "aligned_to_original",
    "detect_faces",
    "face_mask",
    "ffhq_quad",
    "landmark_predictor",
    "load_image",
    "original_to_aligned",
    "paste_back",
    "predict_landmarks",
    "render_aligned",
]
