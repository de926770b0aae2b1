"""The PTI face editor in the browser: photo -> aligned face -> PTI with live progress -> stacked edits -> paste-back.

UI only: layout, events and per-session state. Every computation goes through `pti.editor.FaceEditor`.
Run `python app.py --help` for the flags (each also reads an environment variable, e.g. PTI_MODEL=tiny).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import re
import shutil
import signal
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import gradio as gr
import torch

from alignment import DEFAULT_MAX_FACES, AlignmentError
from editing_directions.edit import Edit
from editing_directions import global_directions
from editing_directions.errors import EditingError
from pti import weights
from pti.config import PRESET_NAMES, ConfigError
from pti.cpu_allocator import keep_freed_memory, release_freed_memory
from pti.e4e import E4ECheckpointError, E4EGeneratorMismatchError
from pti.editor import DEFAULT_MODEL, EditingSession, EditorUnavailableError, FaceEditor, Inversion, \
    GroupPhoto, GroupSession, InversionSettings, Photo, Session, SettingsError
from pti.images import side_by_side
from pti.ops import cuda_plugin
from pti.progress import Progress
from pti.serving.download_folders import DownloadFolders
from pti.serving.durations import MAX_SECONDS, MIN_SECONDS
from pti.serving.gradio_cache import install_atomic_cache_writes
from pti.serving.gradio_launch import without_local_url_check
from pti.serving.hardware import unusable_gpu_reason
from pti.serving.zerogpu import on_zerogpu
from pti.session_spill import SessionSpiller
from pti.session_store import SessionStore, SessionTooLargeError, format_bytes

LOGGER = logging.getLogger("pti.app")
EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
EXAMPLES = (("astronaut.png", "Eileen Collins (NASA)"), ("grace_hopper.jpg", "Grace Hopper (US Navy)"))
# Seconds between two progress updates sent to the browser (previews are sent as soon as they come).
UI_UPDATE_INTERVAL_S = 0.5
# Errors whose message is meant for people; anything else is logged and shown as a short generic message.
READABLE_ERRORS = (AlignmentError, EditorUnavailableError, EditingError, ConfigError, SettingsError,
                   SessionTooLargeError, weights.WeightsError, E4ECheckpointError, E4EGeneratorMismatchError)
# Display names of the edit kinds.
KIND_LABELS = {"interfacegan": "InterfaceGAN", "ganspace": "GANSpace", "styleclip": "StyleCLIP", "text": "Text"}
# Labels of the ways to find the pivot.
PIVOT_LABELS = {"w": ("W projection (the paper's; optimised over the projection steps)", "w"),
                "e4e": ("e4e encoder (one pass; fast, best for StyleCLIP edits)", "e4e")}
# What the pivot choice means, under the radio buttons.
PIVOT_INFO = ("e4e is recommended for the StyleCLIP edits (their mappers were trained on e4e codes) and on a CPU "
              "(one encoder pass instead of the projection's steps; the projection steps are then not used). "
              "The W projection is the paper's pivot.")
PIVOT_INFO_CPU = "Preselected: e4e, because this runs on a CPU. "
# The footer's licence lines: what the files are, and one registry entry whose licence they share.
LICENCE_LINES = (
    ("StyleGAN2 FFHQ generator", "stylegan2-ffhq-1024"),
    ("dlib 68-point landmark model", "dlib-landmarks-68"),
    ("LPIPS backbones (VGG16, AlexNet)", "lpips-vgg16"),
    ("InterfaceGAN directions and GANSpace PCA", "interfacegan-age"),
    ("StyleCLIP hairstyle mappers", "styleclip-afro-hairstyle"),
    ("e4e encoder", "e4e-ffhq-encode"),
    ("StyleCLIP global directions (fs3)", "styleclip-fs3-ffhq"),
    ("CLIP ViT-B/32 (text edits)", "clip-vit-b-32-openai"),
)
# The choice after a photo with several faces: invert the face picked under the photo, or every face together.
ONE_FACE, ALL_FACES_CHOICE = "one", "all"
# The face a group's edit applies to: every face (this), or one, numbered from 0.
ALL_FACES = -1
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~:])/(?:[\w.@+-]+/)+([\w.@+-]+)")

CSS = """
#banner {border-left: 4px solid var(--color-accent); padding-left: 12px;}
#status {min-height: 2.5em;}
#licences {font-size: var(--text-sm); opacity: 0.85;}
.upscale img {width: 100% !important; height: 100% !important; object-fit: contain !important;}
"""


@dataclass(frozen=True)
class AppOptions:
    """How the app runs: model, device, network, and the bounds on sessions, queue and uploads."""

    model: str = DEFAULT_MODEL  # registry generator name, 'tiny', or a local generator file
    device: str = "auto"  # 'auto' (CUDA when available), 'cpu', 'cuda', 'cuda:1', ...
    host: str | None = None  # interface to listen on (None: gradio's default, or GRADIO_SERVER_NAME)
    port: int | None = None  # port (None: gradio's default 7860, or GRADIO_SERVER_PORT)
    share: bool = False  # also open a public gradio.live link
    max_sessions: int = 8  # tuned generators kept at once (least recently used evicted first)
    max_session_mb: int = 4096  # MiB of tuned generators kept in memory at once
    max_session_disk_gb: float = 20.0  # GiB of sessions written to disk when memory is full (0: drop them instead)
    session_idle_minutes: float = 60.0  # sessions unused this long are freed (as Gradio keeps a closed tab's state)
    concurrency: int = 1  # GPU jobs (inversions, edit renders) running at once
    queue_size: int = 16  # jobs waiting at most; more are refused with a message
    max_file_size: str = "20mb"  # largest upload
    max_faces: int = DEFAULT_MAX_FACES  # faces of a group photo inverted together at most (the largest are kept)
    landmarks: str | None = None  # dlib 68-landmark model file (None: through the weights registry)
    lpips: str = "auto"  # 'auto', 'pretrained' or 'random' LPIPS backbones
    mapper_dir: str | None = None  # folder of extra StyleCLIP mapper files (*.pt)
    e4e: str | None = None  # e4e encoder checkpoint for e4e pivots (None: through the weights registry)
    zerogpu_max_seconds: int = MAX_SECONDS  # the longest ZeroGPU call asked for; longer settings are refused
    approximate: bool = False  # on a GPU: fp16 layers and 256 px tuning LPIPS (faster; not the paper's method)

    def resolved_device(self) -> str:
        """The device to run on: CUDA when asked for ('auto' or 'cuda...') and usable, else the CPU."""
        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return "cpu" if self.gpu_problem() is not None else self.device

    def gpu_problem(self) -> str | None:
        """Why a GPU that was expected (asked for, or its driver present) cannot be used; None if all is well."""
        return None if self.device == "cpu" else unusable_gpu_reason(self.device)


def parse_args(argv: Sequence[str] | None = None) -> AppOptions:
    """Command-line flags, each defaulting to an environment variable (PTI_MODEL, PTI_DEVICE, ...)."""
    env = os.environ.get
    defaults = AppOptions()
    parser = argparse.ArgumentParser(description="PTI face editor (Gradio app)")
    parser.add_argument("--model", default=env("PTI_MODEL", defaults.model),
                        help="generator: 'stylegan2-ffhq-1024' (default, from the Hub), 'tiny' (offline test "
                             "model) or a local .pkl/.safetensors file [PTI_MODEL]")
    parser.add_argument("--device", default=env("PTI_DEVICE", defaults.device),
                        help="'auto' (CUDA if available), 'cpu', 'cuda' [PTI_DEVICE]")
    parser.add_argument("--host", default=env("PTI_HOST"), help="interface to listen on, e.g. 0.0.0.0 [PTI_HOST]")
    parser.add_argument("--port", type=int, default=env("PTI_PORT"), help="port (default 7860) [PTI_PORT]")
    parser.add_argument("--share", action="store_true", default=env("PTI_SHARE", "") not in ("", "0", "false"),
                        help="also create a public gradio.live link [PTI_SHARE=1]")
    parser.add_argument("--max-sessions", type=int, default=int(env("PTI_MAX_SESSIONS", defaults.max_sessions)),
                        help="tuned generators kept at once [PTI_MAX_SESSIONS]")
    parser.add_argument("--max-session-mb", type=int,
                        default=int(env("PTI_MAX_SESSION_MB", defaults.max_session_mb)),
                        help="MiB of tuned generators kept in memory at once [PTI_MAX_SESSION_MB]")
    parser.add_argument("--max-session-disk-gb", type=float,
                        default=float(env("PTI_MAX_SESSION_DISK_GB", defaults.max_session_disk_gb)),
                        help="GiB of sessions written to disk when memory is full; 0 drops them instead "
                             "[PTI_MAX_SESSION_DISK_GB]")
    parser.add_argument("--session-idle-minutes", type=float,
                        default=float(env("PTI_SESSION_IDLE_MINUTES", defaults.session_idle_minutes)),
                        help="sessions unused this long are freed [PTI_SESSION_IDLE_MINUTES]")
    parser.add_argument("--concurrency", type=int, default=int(env("PTI_CONCURRENCY", defaults.concurrency)),
                        help="GPU jobs running at once [PTI_CONCURRENCY]")
    parser.add_argument("--queue-size", type=int, default=int(env("PTI_QUEUE_SIZE", defaults.queue_size)),
                        help="jobs waiting at most [PTI_QUEUE_SIZE]")
    parser.add_argument("--max-file-size", default=env("PTI_MAX_FILE_SIZE", defaults.max_file_size),
                        help="largest upload, e.g. 20mb [PTI_MAX_FILE_SIZE]")
    parser.add_argument("--max-faces", type=int, default=int(env("PTI_MAX_FACES", defaults.max_faces)),
                        help="faces of a group photo inverted together at most; the largest are kept (each face "
                             "adds about one inversion's time) [PTI_MAX_FACES]")
    parser.add_argument("--landmarks", default=env("PTI_LANDMARKS"),
                        help="dlib shape_predictor_68_face_landmarks.dat to use instead of the Hub's [PTI_LANDMARKS]")
    parser.add_argument("--lpips", choices=("auto", "pretrained", "random"), default=env("PTI_LPIPS", "auto"),
                        help="LPIPS backbones: pretrained, random (offline tests) or auto [PTI_LPIPS]")
    parser.add_argument("--mapper-dir", default=env("PTI_MAPPER_DIR"),
                        help="folder of extra StyleCLIP mapper files (*.pt) [PTI_MAPPER_DIR]")
    parser.add_argument("--e4e", default=env("PTI_E4E"),
                        help="e4e encoder checkpoint (e4e_ffhq_encode.pt layout) to use instead of the Hub's; "
                             "also offers the e4e pivot for a model of another W+ shape [PTI_E4E]")
    parser.add_argument("--zerogpu-max-seconds", type=int,
                        default=int(env("PTI_ZEROGPU_MAX_SECONDS", defaults.zerogpu_max_seconds)),
                        help="on ZeroGPU: the longest GPU call to ask for; settings that need more are refused "
                             "[PTI_ZEROGPU_MAX_SECONDS]")
    parser.add_argument("--approximate", action="store_true",
                        default=env("PTI_APPROXIMATE", "") not in ("", "0", "false"),
                        help="on a GPU, tune faster with fp16 layers and LPIPS on 256 px images: departs from the "
                             "paper's method (default: float32, full-resolution LPIPS) [PTI_APPROXIMATE=1]")
    args = parser.parse_args(argv)
    options = AppOptions(model=args.model, device=args.device, host=args.host,
                         port=None if args.port in (None, "") else int(args.port), share=args.share,
                         max_sessions=args.max_sessions, max_session_mb=args.max_session_mb,
                         max_session_disk_gb=args.max_session_disk_gb, session_idle_minutes=args.session_idle_minutes,
                         concurrency=args.concurrency, queue_size=args.queue_size, max_file_size=args.max_file_size,
                         max_faces=args.max_faces,
                         landmarks=args.landmarks, lpips=args.lpips, mapper_dir=args.mapper_dir, e4e=args.e4e,
                         zerogpu_max_seconds=args.zerogpu_max_seconds, approximate=args.approximate)
    for name in ("max_sessions", "max_session_mb", "concurrency", "queue_size", "max_faces"):
        if getattr(options, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if options.max_session_disk_gb < 0 or options.session_idle_minutes <= 0:
        parser.error("--max-session-disk-gb must be 0 or more and --session-idle-minutes more than 0")
    if options.zerogpu_max_seconds < MIN_SECONDS:
        parser.error(f"--zerogpu-max-seconds must be at least {MIN_SECONDS}")
    return options


def load_editor(options: AppOptions) -> FaceEditor:
    """The editor for these options (missing files are recorded, not raised: the app still starts)."""
    lpips_pretrained = {"auto": None, "pretrained": True, "random": False}[options.lpips]
    return FaceEditor(options.model, device=options.resolved_device(), landmarks_path=options.landmarks,
                      lpips_pretrained=lpips_pretrained, mapper_dir=options.mapper_dir, e4e=options.e4e,
                      gpu_max_seconds=options.zerogpu_max_seconds, approximate=options.approximate)


def readable_message(error: BaseException) -> str:
    """An error's message for people: the text of known errors with server paths cut to file names."""
    if isinstance(error, READABLE_ERRORS):
        return _ABSOLUTE_PATH.sub(lambda match: match.group(1), str(error))
    return f"Something went wrong on the server ({type(error).__name__}); it has been logged."


@contextlib.contextmanager
def shown_as_gradio_errors() -> Iterator[None]:
    """Turn any exception into a `gr.Error` with a readable message (no traceback, no server path)."""
    try:
        yield
    except gr.Error:
        raise
    except Exception as error:
        if not isinstance(error, READABLE_ERRORS):
            LOGGER.exception("unexpected error in the app")
        raise gr.Error(readable_message(error), print_exception=False) from None


class StopRequests:
    """One stop flag per session while its inversion runs (the Stop button sets it)."""

    def __init__(self) -> None:
        self._flags: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def begin(self, session_id: str) -> threading.Event:
        """A fresh flag for a new run of this session."""
        with self._lock:
            flag = self._flags[session_id] = threading.Event()
            return flag

    def end(self, session_id: str, flag: threading.Event) -> None:
        """Forget the flag of a finished run (unless a newer run replaced it)."""
        with self._lock:
            if self._flags.get(session_id) is flag:
                del self._flags[session_id]

    def request(self, session_id: str) -> bool:
        """Ask the session's running inversion to stop; False when none is running."""
        with self._lock:
            flag = self._flags.get(session_id)
        if flag is None:
            return False
        flag.set()
        return True


def format_seconds(seconds: float) -> str:
    """12 -> '12 s', 125 -> '2 min 5 s', 4000 -> '1 h 7 min'."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    minutes = round(seconds / 60)  # to the nearest minute, as a person reads a clock
    return f"{minutes // 60} h {minutes % 60} min"


def faces_choices(count: int) -> list[tuple[str, str]]:
    """The choices 'this face / all faces' for a photo with `count` usable faces."""
    return [("This face (picked under the photo)", ONE_FACE), (f"All {count} faces together (one generator)",
                                                                ALL_FACES_CHOICE)]


def edit_face_choices(count: int) -> list[tuple[str, int]]:
    """The choices of the face a group's edits apply to: every face, or face 1..count (values from 0)."""
    return [("All faces", ALL_FACES)] + [(f"Face {number}", number - 1) for number in range(1, count + 1)]


def chosen_face(face: float | None, session: GroupSession) -> int | None:
    """The face (from 0) a group's edit applies to, None for every face; a readable error when out of range."""
    if face is None or int(face) == ALL_FACES:
        return None
    if float(face) != int(face) or not 0 <= int(face) < len(session.faces):
        raise gr.Error(f"There is no face {face!r} to edit: choose all faces ({ALL_FACES}) or a face from 0 to "
                       f"{len(session.faces) - 1} (face 1 to {len(session.faces)} in the preview).",
                       print_exception=False)
    return int(face)


def describe_progress(progress: Progress, pivot: str = "w", faces: int = 1) -> str:
    """One line about a running inversion of `faces` faces: phase (and face), step, losses and the time left in the
    phase."""
    finding = "e4e encoder (finding the pivot)" if pivot == "e4e" else "Projection (finding the pivot)"
    phase = finding if progress.phase == "projection" else "Pivotal tuning"
    if faces > 1:
        face = "" if progress.identity is None else f"face {progress.identity + 1} of {faces}"
        phase += (f" of {face}" if progress.phase == "projection" and face
                  else f" of all {faces} faces" + (f", this update {face}" if face else ""))
    losses = " · ".join(f"{name} {value:.4g}" for name, value in progress.losses.items())
    left = progress.elapsed_s / max(progress.step, 1) * (progress.total - progress.step)
    parts = [f"**{phase}** · step {progress.step}/{progress.total}", losses,
             f"{format_seconds(progress.elapsed_s)} elapsed, about {format_seconds(left)} left in this phase"]
    return " · ".join(part for part in parts if part)


def edit_count(count: int) -> str:
    """'no edits', '1 edit', '3 edits'."""
    return "no edits" if count == 0 else f"{count} edit{'s' if count != 1 else ''}"


def step_caption(index: int, edit: Edit, labels: dict[str, str]) -> str:
    """Gallery caption of a chain step, e.g. '2. Smile +1.5 · InterfaceGAN', '3. a face → grey hair +4.1 · Text β 0.15'."""
    if edit.kind == "text":
        return f"{index}. {edit.neutral} → {edit.name} {edit.strength:+g} · Text β {edit.beta:g}"
    label = labels.get(f"{edit.kind}:{edit.name}", edit.name)
    return f"{index}. {label} {edit.strength:+g} · {KIND_LABELS.get(edit.kind, edit.kind)}"


class SessionHandlers:
    """The event handlers: each reads the session's state, asks the editor, and returns what the screen shows.

    A session is one face (`EditingSession`) or every face of a group photo (`GroupSession`); for a group, the edit
    handlers take the face they edit (`face` from 0, or ALL_FACES)."""

    def __init__(self, editor: FaceEditor, store: SessionStore[Session], downloads_root: Path, *,
                 max_faces: int = DEFAULT_MAX_FACES) -> None:
        self.editor = editor
        self.max_faces = max_faces
        self.store = store
        self.folders = DownloadFolders(downloads_root)
        self.stops = StopRequests()
        self.labels = {option.key: option.label for option in editor.edit_options()}

    # ----- per-session helpers -----------------------------------------------------------------------------------

    def forget(self, session_id: str) -> None:
        """Delete a session's download folders once no event returns them (the store let go of its session)."""
        self.folders.forget(session_id)

    def release(self, request: gr.Request) -> None:
        """Free everything of a session whose browser tab closed."""
        self.stops.request(request.session_hash)
        self.store.release(request.session_hash)

    def session(self, request: gr.Request) -> Session:
        """The session's inversion, or a readable error (never inverted, or evicted to make room)."""
        session = self.store.get(request.session_hash)
        if session is None:
            notice = self.store.eviction_notice(request.session_hash)
            raise gr.Error(notice or "Invert the face first (press Invert), then add edits.", print_exception=False)
        return session

    def answer(self, outputs: Callable[[list[Path]], tuple]) -> Iterator[tuple]:
        """Yield `outputs(held)` as an event's answer, readable errors included; the download folders it appends to
        `held` stay held until Gradio has copied their files into its cache (it resumes a generator handler only
        after its answer was processed), then are released."""
        held: list[Path] = []
        try:
            with shown_as_gradio_errors():
                answer = outputs(held)
            yield answer
        finally:
            self.folders.release(held)

    def result_outputs(self, session: Session, paste_back: bool, request: gr.Request, held: list[Path],
                       face: float | None = ALL_FACES, *, downloads: bool = True) -> tuple:
        """Gallery, step picker, result image and downloads of a session (written to a new folder, added to `held`);
        for a group, of the face `face` edits (ALL_FACES: every face's final image in the gallery), and without
        `downloads` its files are left as they are (they do not depend on the face shown)."""
        if isinstance(session, GroupSession):
            return self.group_result_outputs(session, paste_back, request, held, chosen_face(face, session),
                                             downloads=downloads)
        gallery = [(session.step_images[0], "0. start: PTI reconstruction")]
        gallery += [(image, step_caption(i + 1, edit, self.labels))
                    for i, (image, edit) in enumerate(zip(session.step_images[1:], session.edits, strict=True))]
        steps = self.step_picker(session.edits)
        pasted = self.editor.paste_back(session.photo, session.final_image) if paste_back else None
        folder = self.downloads_folder(session.files.pivot.parent, request, held)
        files = self.editor.write_downloads(session, folder, pasted=pasted)
        result = gr.Image(value=pasted if pasted is not None else session.final_image,
                          label="Pasted back into the photo" if pasted is not None else "Final face")
        return gallery, steps, result, [str(path) for path in files.paths]

    def group_result_outputs(self, session: GroupSession, paste_back: bool, request: gr.Request, held: list[Path],
                             face: int | None, *, downloads: bool = True) -> tuple:
        """`result_outputs` of a group: the gallery of every face (face None) or of one face's steps."""
        finals = [one.final_image for one in session.faces]
        if face is None:
            gallery = [(one.final_image, f"Face {number} · {edit_count(len(one.edits))} (click to edit this face)")
                       for number, one in enumerate(session.faces, start=1)]
            chains = {one.edits for one in session.faces}
            steps = self.step_picker(chains.pop() if len(chains) == 1 else ())
        else:
            one = session.faces[face]
            gallery = [(one.step_images[0], f"Face {face + 1} · 0. start: PTI reconstruction")]
            gallery += [(image, f"Face {face + 1} · {step_caption(i + 1, edit, self.labels)}")
                        for i, (image, edit) in enumerate(zip(one.step_images[1:], one.edits, strict=True))]
            steps = self.step_picker(one.edits)
        pasted = self.editor.paste_back_group(session, finals) if paste_back else None
        files = gr.skip()
        if downloads:
            folder = self.downloads_folder(session.files.pivots.parent, request, held)
            files = [str(path) for path in self.editor.write_group_downloads(session, folder, pasted=pasted).paths]
        if pasted is not None:
            result = gr.Image(value=pasted, label="Every face pasted back into the photo")
        elif face is None:
            result = gr.Image(value=side_by_side(finals), label=f"Final faces 1-{len(finals)}, left to right")
        else:
            result = gr.Image(value=finals[face], label=f"Final face {face + 1}")
        return gallery, steps, result, files

    def step_picker(self, edits: Sequence[Edit]) -> gr.Dropdown:
        """The picker of a chain's steps (the last one chosen)."""
        return gr.Dropdown(choices=[(step_caption(i + 1, e, self.labels), i) for i, e in enumerate(edits)],
                           value=len(edits) - 1 if edits else None)

    def downloads_folder(self, inversion_folder: Path, request: gr.Request, held: list[Path]) -> Path:
        """Hold the inversion's folder and a new folder for this answer's files (both added to `held`)."""
        if not self.folders.hold(inversion_folder):
            raise gr.Error("A newer photo or inversion replaced this one.", print_exception=False)
        held.append(inversion_folder)
        folder = self.folders.new_folder(request.session_hash, "edits")
        held.append(folder)
        return folder

    # ----- photo and alignment -----------------------------------------------------------------------------------

    def align(self, upload: dict | None, request: gr.Request) -> tuple:
        """A new photo: stop and drop the previous one's work, load it, align its best face, reset what follows."""
        self.stops.request(request.session_hash)
        self.store.release(request.session_hash)
        if upload is None:
            return None, None, gr.Dropdown(choices=[], value=None, visible=False), "", *self.cleared_results()
        with shown_as_gradio_errors():
            photo = self.editor.align(read_upload(upload))  # from bytes, so no server path can leak
        return (photo, photo.aligned.image, self.face_picker(photo), self.aligned_status(photo),
                *self.cleared_results())

    def find_faces(self, photo: Photo | None) -> tuple:
        """Every usable face of a photo with several: the numbered preview, the choice 'this face / all faces', the
        face picker labelled with the preview's numbers, and a status naming any skipped face and why."""
        hidden = (None, gr.Image(value=None, visible=False), gr.Radio(value=ONE_FACE, visible=False))
        if photo is None or len(photo.aligned.faces) < 2:
            return *hidden, gr.skip(), gr.skip()
        try:
            group = self.editor.align_group(photo, max_faces=self.max_faces)
        except AlignmentError:  # no face usable for a group (too small, cut off): the one-face path still works
            return *hidden, gr.skip(), gr.skip()
        count = len(group.group.faces)
        if count > 1:
            status = (f"{count} faces found (numbered in the preview). Invert **this face** (pick another under the "
                      f"photo) or **all faces** together, then press **Invert**.")
        else:
            status = self.aligned_status(photo)
        skipped = [f"the face at ({face.box.left:.0f}, {face.box.top:.0f}) is skipped: "
                   + face.reason.replace("(max_faces)", "(the app's --max-faces)") for face in group.group.skipped]
        if skipped:
            listed = "; ".join(skipped)
            status += f" {listed[0].upper()}{listed[1:]}."
        return (group, gr.Image(value=self.editor.faces_preview(group), visible=True),
                gr.Radio(choices=faces_choices(count), value=ONE_FACE, visible=count > 1),
                self.face_picker(photo, group), status)

    def choose_face(self, face_index: int | None, photo: Photo | None, request: gr.Request) -> tuple:
        """Align another of the faces found in the photo."""
        if photo is None:
            raise gr.Error("Give a photo first.", print_exception=False)
        if face_index is None or face_index == photo.aligned.face_index:
            return photo, photo.aligned.image, gr.skip(), gr.skip(), *[gr.skip()] * 6
        self.stops.request(request.session_hash)
        self.store.release(request.session_hash)
        with shown_as_gradio_errors():
            chosen = self.editor.align(photo.encoded, int(face_index))
        return chosen, chosen.aligned.image, gr.skip(), self.aligned_status(chosen), *self.cleared_results()

    @staticmethod
    def face_picker(photo: Photo, group: GroupPhoto | None = None) -> gr.Dropdown:
        """The face picker: shown only when the photo has several faces; with their numbers in the group preview."""
        faces = photo.aligned.faces
        numbers = {} if group is None else {face.face_index: number
                                            for number, face in enumerate(group.group.faces, start=1)}

        def label(index: int) -> str:
            if group is None:
                name = f"Face {index + 1}"
            else:
                name = f"Face {numbers[index]}" if index in numbers else "A skipped face"
            return name + (" (most confident)" if index == 0 else "") + f" · score {faces[index].score:.2f}"

        return gr.Dropdown(choices=[(label(i), i) for i in range(len(faces))], value=photo.aligned.face_index,
                           visible=len(faces) > 1)

    @staticmethod
    def aligned_status(photo: Photo) -> str:
        """What the status line says once a face is aligned."""
        count = len(photo.aligned.faces)
        found = "1 face found" if count == 1 else f"{count} faces found: pick another one under the photo"
        return f"{found}. Check the settings and press **Invert**."

    @staticmethod
    def cleared_results() -> tuple:
        """Empty pivot, reconstruction, gallery, step picker, result and downloads."""
        return (gr.Image(value=None, label="Pivot (original generator)"),
                gr.Image(value=None, label="PTI reconstruction (tuned generator)"),
                [], gr.Dropdown(choices=[], value=None), gr.Image(value=None, label="Final face"), None)

    def group_to_invert(self, photo: Photo, faces: str | None, group: GroupPhoto | None) -> GroupPhoto | None:
        """The group to invert when `faces` asks for all of them and the photo has several usable faces (found again
        when `group` is not this photo's), else None (the one face)."""
        if faces != ALL_FACES_CHOICE:
            return None
        if group is None or group.encoded is not photo.encoded:
            group = self.editor.align_group(photo, max_faces=self.max_faces)
        return group if len(group.group.faces) > 1 else None

    # ----- settings ----------------------------------------------------------------------------------------------

    def preset_values(self, preset_name: str) -> tuple:
        """Step counts and locality of a preset (shown in the sliders)."""
        settings = self.editor.settings_for(preset_name)
        return settings.projection_steps, settings.tuning_steps, settings.locality

    def estimate(self, preset_name: str, projection_steps: float, tuning_steps: float, locality: bool,
                 seed: float, pivot: str, faces: str | None = ONE_FACE, group: GroupPhoto | None = None) -> str:
        """The settings in one line and their time estimate (for every face when all are inverted), shown under the
        Invert button."""
        count = len(group.group.faces) if faces == ALL_FACES_CHOICE and group is not None else 1
        try:
            settings = self.settings(preset_name, projection_steps, tuning_steps, locality, seed, pivot)
            estimate = self.editor.estimate(settings, faces=count)
        except READABLE_ERRORS as error:
            return readable_message(error)
        per_face = " per face" if count > 1 else ""
        steps = (f"e4e pivot (one encoder pass) + {settings.tuning_steps} tuning steps{per_face}"
                 if settings.pivot == "e4e" else
                 f"{settings.projection_steps} projection + {settings.tuning_steps} tuning steps{per_face}")
        locality = "locality regularisation on" if settings.locality else "locality regularisation off"
        basis = "" if estimate.measured else " (a first guess: the first inversion here measures it)"
        faces_text = f" for all {count} faces" if count > 1 else ""
        return (f"Settings: {steps}, {locality} (*Inversion settings* below) · about "
                f"**{format_seconds(estimate.seconds)}**{faces_text} on this {self.editor.hardware}{basis}.")

    @staticmethod
    def settings(preset_name: str, projection_steps: float, tuning_steps: float, locality: bool, seed: float,
                 pivot: str) -> InversionSettings:
        """Settings from the widgets' values (numbers arrive as floats)."""
        def whole(value: float, name: str) -> int:
            if value is None or float(value) != int(float(value)):
                raise SettingsError(f"{name} must be a whole number, got {value!r}")
            return int(float(value))

        return InversionSettings(preset=preset_name, projection_steps=whole(projection_steps, "projection steps"),
                                 tuning_steps=whole(tuning_steps, "tuning steps"), locality=bool(locality),
                                 seed=whole(seed, "seed"), pivot=pivot)

    # ----- inversion ---------------------------------------------------------------------------------------------

    def invert(self, photo: Photo | None, preset_name: str, projection_steps: float, tuning_steps: float,
               locality: bool, seed: float, pivot: str, faces: str | None, group: GroupPhoto | None,
               request: gr.Request, progress: gr.Progress = gr.Progress()) -> Iterator[tuple]:
        """PTI with live progress: yields status + previews, then the reconstructions, the gallery and downloads.
        With `faces` = all and several usable faces: every face into one generator (multi-ID PTI)."""
        if photo is None:
            raise gr.Error("Give a photo first: upload one, use the webcam, paste one or click an example.",
                           print_exception=False)
        session_id = request.session_hash
        with shown_as_gradio_errors():
            settings = self.settings(preset_name, projection_steps, tuning_steps, locality, seed, pivot)
            self.editor.prepare_pivot(settings.pivot)  # e.g. e4e weights that fail to load: the session stays
            group = self.group_to_invert(photo, faces, group)
        count = 1 if group is None else len(group.group.faces)
        self.store.release(session_id)  # the previous inversion's edits no longer apply
        stop = self.stops.begin(session_id)
        skip = gr.skip()
        inverted: Inversion | GroupSession | None = None
        last_update = 0.0
        try:
            with shown_as_gradio_errors():
                steps = (self.editor.invert_steps(photo.aligned, settings) if group is None
                         else self.editor.invert_group_steps(group, settings))
                for item in steps:
                    if stop.is_set():
                        steps.close()
                        yield "Stopped. Press **Invert** to start again.", skip, skip, [], skip, skip, None
                        return
                    if not isinstance(item, Progress):
                        inverted = item
                        continue
                    face = "" if count == 1 or item.identity is None else f" · face {item.identity + 1}/{count}"
                    progress((item.step, item.total), desc=f"{item.phase} step {item.step}/{item.total}{face}")
                    now = time.monotonic()
                    if item.preview is None and now - last_update < UI_UPDATE_INTERVAL_S:
                        continue
                    last_update = now
                    preview = skip if item.preview is None else item.preview
                    yield (describe_progress(item, settings.pivot, count),
                           preview if item.phase == "projection" else skip,
                           preview if item.phase == "tuning" else skip, skip, skip, skip, skip)
        finally:
            self.stops.end(session_id, stop)
            release_freed_memory()  # the tuning's activations: back to the system, not kept at peak
        if isinstance(inverted, GroupSession):
            yield from self.answer(lambda held: self.group_inverted_outputs(inverted, request, held))
        else:
            yield from self.answer(lambda held: self.inverted_outputs(photo, inverted, request, held))

    def inverted_outputs(self, photo: Photo, inversion: Inversion, request: gr.Request, held: list[Path]) -> tuple:
        """Store a new inversion as the session's start, write its files once, and show it."""
        folder = self.folders.new_folder(request.session_hash, "inversion")
        held.append(folder)
        start = EditingSession(photo=photo, inversion=inversion, step_images=(inversion.tuned_render.image,))
        start = dataclasses.replace(start, files=self.editor.write_inversion_files(start, folder))
        self.store.put(request.session_hash, start)
        gallery, steps_picker, result, files = self.result_outputs(start, False, request, held)
        pivot_render, tuned_render = inversion.pivot_render, inversion.tuned_render
        return (
            f"Inverted in {format_seconds(inversion.seconds)}. LPIPS / MSE to the aligned face: pivot "
            f"{pivot_render.lpips:.3f} / {pivot_render.mse:.4f}, PTI {tuned_render.lpips:.3f} / "
            f"{tuned_render.mse:.4f} (LPIPS-AlexNet; MSE on pixels in [-1, 1]). Now add edits below.",
            gr.Image(value=pivot_render.image,
                     label=f"Pivot · LPIPS {pivot_render.lpips:.3f} · MSE {pivot_render.mse:.4f}"),
            gr.Image(value=tuned_render.image,
                     label=f"PTI reconstruction · LPIPS {tuned_render.lpips:.3f} · MSE {tuned_render.mse:.4f}"),
            gallery, steps_picker, result, files,
        )

    def group_inverted_outputs(self, session: GroupSession, request: gr.Request, held: list[Path]) -> tuple:
        """Store a new group inversion as the session's start, write its files once, and show every face."""
        folder = self.folders.new_folder(request.session_hash, "inversion")
        held.append(folder)
        session = dataclasses.replace(session, files=self.editor.write_group_inversion_files(session, folder))
        self.store.put(request.session_hash, session)
        gallery, steps_picker, result, files = self.result_outputs(session, False, request, held)
        count = len(session.faces)
        metrics = "; ".join(
            f"face {number}: pivot {one.inversion.pivot_render.lpips:.3f} / {one.inversion.pivot_render.mse:.4f}, "
            f"PTI {one.inversion.tuned_render.lpips:.3f} / {one.inversion.tuned_render.mse:.4f}"
            for number, one in enumerate(session.faces, start=1))
        return (
            f"Inverted all {count} faces into one generator in {format_seconds(session.seconds)}. LPIPS / MSE to each "
            f"aligned face: {metrics} (LPIPS-AlexNet; MSE on pixels in [-1, 1]). Now add edits below, to every face "
            f"or to one (*Edit which face*).",
            gr.Image(value=side_by_side([one.inversion.pivot_render.image for one in session.faces]),
                     label=f"Pivots of faces 1-{count} (original generator)"),
            gr.Image(value=side_by_side([one.inversion.tuned_render.image for one in session.faces]),
                     label=f"PTI reconstructions of faces 1-{count} (one tuned generator)"),
            gallery, steps_picker, result, files,
        )

    def stop(self, request: gr.Request) -> str:
        """Ask this session's running inversion to stop (within one optimisation step); says what it did."""
        message = "Stopping…" if self.stops.request(request.session_hash) else "Nothing is running."
        gr.Info(message)
        return message

    # ----- edits -------------------------------------------------------------------------------------------------

    def edit_slider(self, key: str | None) -> gr.Slider:
        """The strength slider for the chosen edit: its range, step and default."""
        option = next((o for o in self.editor.edit_options() if o.key == key), None)
        if option is None:
            return gr.Slider()
        return gr.Slider(minimum=option.min, maximum=option.max, step=option.step, value=option.default,
                         label=f"Strength of {option.label}")

    def add_edit(self, key: str, strength: float, paste_back: bool, face: float | None,
                 request: gr.Request) -> Iterator[tuple]:
        """Append an edit to the chain (of the chosen face, or of every face) and render every step; a failed edit
        leaves the chains as they were."""
        session = self.session(request)

        def outputs(held: list[Path]) -> tuple:
            edit = self.editor.parse_edit(key, strength)
            return self.apply_edits(session, lambda edits: (*edits, edit), paste_back, request, held, face)

        yield from self.answer(outputs)

    def add_text_edit(self, neutral: str, target: str, alpha: float, beta: float, paste_back: bool,
                      face: float | None, request: gr.Request) -> Iterator[tuple]:
        """Append an edit typed as two sentences (StyleCLIP global direction); says how many channels it moves. CLIP
        runs here, outside the GPU call; a refused edit (empty or too long sentence, same sentences, a beta that
        keeps no channel) leaves the chains as they were."""
        session = self.session(request)

        def outputs(held: list[Path]) -> tuple:
            edit = self.editor.text_edit(neutral, target, alpha, beta)
            channels = self.editor.text_channels(edit)
            *shown, status = self.apply_edits(session, lambda edits: (*edits, edit), paste_back, request, held, face)
            return (*shown, f"Text edit '{edit.neutral}' → '{edit.name}' moves **{channels}** style channel"
                            f"{'s' if channels != 1 else ''} (about 10-20 for a colour, 100-200 for a shape is "
                            f"typical; beta sets how many). {status}")

        yield from self.answer(outputs)

    def remove_edit(self, index: float | None, paste_back: bool, face: float | None,
                    request: gr.Request) -> Iterator[tuple]:
        """Drop one step of the chain (of the chosen face, or of every face when their chains are the same); the
        steps after it are rendered again."""
        session = self.session(request)
        if isinstance(session, GroupSession) and (chosen := chosen_face(face, session)) is not None:
            edits = session.faces[chosen].edits
        elif isinstance(session, GroupSession):
            chains = {one.edits for one in session.faces}
            if len(chains) > 1:
                raise gr.Error("The faces' chains differ: choose one face under *Edit which face* to remove its "
                               "steps.", print_exception=False)
            edits = chains.pop()
        else:
            edits = session.edits
        if index is None or not 0 <= int(index) < len(edits):
            raise gr.Error(f"Pick a step to remove (1 to {len(edits)})." if edits else "The chain is empty.",
                           print_exception=False)
        step = int(index)
        yield from self.answer(lambda held: self.apply_edits(
            session, lambda chain: chain[:step] + chain[step + 1:], paste_back, request, held, face))

    def clear_edits(self, paste_back: bool, face: float | None, request: gr.Request) -> Iterator[tuple]:
        """Remove every edit (of the chosen face, or of every face): back to the PTI reconstruction."""
        session = self.session(request)

        def outputs(held: list[Path]) -> tuple:
            *shown, _ = self.apply_edits(session, lambda edits: (), paste_back, request, held, face)
            return *shown, "Chain cleared."

        yield from self.answer(outputs)

    def apply_edits(self, session: Session, change: Callable[[tuple[Edit, ...]], tuple[Edit, ...]],
                    paste_back: bool, request: gr.Request, held: list[Path], face: float | None = ALL_FACES) -> tuple:
        """Render the chain `change` makes of the session's (for a group: of the chosen face's, or of every face's);
        store and show the new chains only if that worked. An emptied chain needs no rendering."""
        if isinstance(session, GroupSession):
            updated, status = self.apply_group_edits(session, change, chosen_face(face, session))
        else:
            edits = change(session.edits)
            images = self.editor.render_chain(session, edits) if edits else session.step_images[:1]
            updated = dataclasses.replace(session, edits=edits, step_images=images)
            status = f"{edit_count(len(edits)).capitalize()} in the chain." if edits else "The chain is empty."
        self.store.put(request.session_hash, updated)
        return (*self.result_outputs(updated, paste_back, request, held, face), status)

    def apply_group_edits(self, session: GroupSession, change: Callable[[tuple[Edit, ...]], tuple[Edit, ...]],
                          face: int | None) -> tuple[GroupSession, str]:
        """The group with the chains of face `face` (None: every face) changed and rendered in one call, and a
        status line."""
        chosen = range(len(session.faces)) if face is None else (face,)
        chains = {index: change(session.faces[index].edits) for index in chosen}
        images = self.editor.render_group(session, {index: edits for index, edits in chains.items() if edits})
        faces = list(session.faces)
        for index, edits in chains.items():
            faces[index] = dataclasses.replace(faces[index], edits=edits,
                                               step_images=images.get(index, faces[index].step_images[:1]))
        counts = [len(one.edits) for one in faces]
        if face is not None:
            status = f"Face {face + 1}: {edit_count(counts[face])} (the other faces are unchanged)."
        elif len(set(counts)) == 1:
            status = f"Every face: {edit_count(counts[0])}."
        else:
            status = "; ".join(f"face {number}: {edit_count(count)}"
                               for number, count in enumerate(counts, start=1)).capitalize() + "."
        return dataclasses.replace(session, faces=tuple(faces)), status

    def show_result(self, paste_back: bool, face: float | None, request: gr.Request) -> Iterator[tuple]:
        """The final face (for a group: every face, or the chosen one), or the photo with the faces pasted back, and
        the downloads."""
        session = self.session(request)
        yield from self.answer(lambda held: self.result_outputs(session, paste_back, request, held, face)[2:])

    def show_face(self, face: float | None, paste_back: bool, request: gr.Request) -> Iterator[tuple]:
        """A group's gallery, step picker and result for the face chosen to edit (or every face); the downloads,
        which do not depend on it, stay as they are."""
        session = self.store.get(request.session_hash)
        if not isinstance(session, GroupSession):
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip()
            return
        yield from self.answer(lambda held: self.result_outputs(session, paste_back, request, held, face,
                                                                downloads=False))

    def gallery_selected(self, face: float | None, paste_back: bool, event: gr.SelectData,
                         request: gr.Request) -> Iterator[tuple]:
        """A click in the gallery: in a group's every-face view it chooses that face to edit (and shows its steps);
        otherwise it picks the clicked step of the chain."""
        session = self.store.get(request.session_hash)
        if not isinstance(session, GroupSession) or chosen_face(face, session) is not None:
            yield selected_step(event), gr.skip(), gr.skip(), gr.skip(), gr.skip()
            return

        def outputs(held: list[Path]) -> tuple:
            gallery, steps, result, files = self.result_outputs(session, paste_back, request, held, event.index,
                                                                downloads=False)
            return steps, event.index, gallery, result, files

        yield from self.answer(outputs)

    def edit_face_picker(self, request: gr.Request) -> gr.Dropdown:
        """The choice of the face to edit: shown after a group's inversion (every face, or face 1..N)."""
        session = self.store.get(request.session_hash)
        if not isinstance(session, GroupSession):
            return gr.Dropdown(value=ALL_FACES, visible=False)
        return gr.Dropdown(choices=edit_face_choices(len(session.faces)), value=ALL_FACES, visible=True)


def selected_step(event: gr.SelectData) -> int | None:
    """The chain step of a clicked gallery image (the first image is the start, not a step)."""
    return event.index - 1 if event.index > 0 else None


def read_upload(upload: dict | str) -> bytes:
    """The bytes of an uploaded image (a gradio file payload or path); reading by bytes keeps paths out of errors."""
    path = upload.get("path") if isinstance(upload, dict) else upload
    if not path:
        raise gr.Error("The upload did not arrive; try again.", print_exception=False)
    return Path(path).read_bytes()


def serving_notes(editor: FaceEditor, options: AppOptions) -> list[str]:
    """What people should know about the hardware: a GPU that was expected but is unusable, the state of the fused
    CUDA ops on a GPU, how ZeroGPU calls are sized."""
    notes = []
    problem = options.gpu_problem()
    if problem is not None:
        notes.append(f"**{problem}**")
    if editor.zerogpu:
        notes.append(f"ZeroGPU: each inversion asks for about its measured time with a margin (at most "
                     f"{editor.durations.max_seconds} s); the reference ops run there (no compiler).")
    elif editor.device.type == "cuda":
        ops = cuda_plugin.status()
        serving = "in use" if ops.state == "ready" else "not in use: the reference ops serve"
        notes.append(f"Fused CUDA ops: {ops.state} ({ops.detail}); {serving}.")
    return notes


def banner_text(editor: FaceEditor, notes: Sequence[str] = ()) -> str:
    """The notice under the title: the model and device, missing files and how to provide them, caveats, `notes`."""
    lines = [f"Model **{editor.model_name}** on **{editor.hardware}**.", *(f"- {note}" for note in notes)]
    missing = editor.missing_files()
    if missing:
        lines.append("**Some pretrained files are missing**, so parts of the app are off until they are provided:")
        lines += [f"- for {m.needed_for}: {m.message}" for m in missing]
        lines.append("To try the whole app offline, start it with `python app.py --model tiny`.")
    lines += [f"- {note}" for note in editor.notices()]
    return "\n".join(lines)


def pivot_info(editor: FaceEditor) -> str:
    """The text under the pivot choice: when e4e is recommended, and why it is preselected (on a CPU)."""
    return (PIVOT_INFO_CPU if editor.default_pivot == "e4e" else "") + PIVOT_INFO


def licences_text() -> str:
    """The footer: the pretrained files the app uses with their licences, and the example photos' credits."""
    lines = [f"- {what}: {weights.REGISTRY[key].licence} (`{weights.REGISTRY[key].repo_id}`)"
             for what, key in LICENCE_LINES]
    return "\n".join(["**Licences of the weights** (fetched from the Hugging Face Hub; not part of this code):",
                      *lines, "- Example photos: public domain (NASA; US Navy), see `examples/CREDITS.md`."])


def session_store(options: AppOptions) -> SessionStore[Session]:
    """The per-session store of tuned generators, bounded as `options` say; sessions that leave memory are written
    to a folder of its own, removed with the store (or at exit, SIGTERM included)."""
    spill_root = Path(tempfile.mkdtemp(prefix="pti-sessions-"))
    store = SessionStore(max_sessions=options.max_sessions, max_bytes=options.max_session_mb * 1024 * 1024,
                         spiller=SessionSpiller(spill_root),
                         max_disk_bytes=int(options.max_session_disk_gb * 1024 ** 3),
                         idle_seconds=options.session_idle_minutes * 60)
    weakref.finalize(store, shutil.rmtree, spill_root, True)
    return store


def build_demo(editor: FaceEditor, options: AppOptions, *,
               store: SessionStore[Session] | None = None) -> gr.Blocks:
    """The Blocks app over `editor`; sessions live in `store` (default: a new one bounded by `options`)."""
    install_atomic_cache_writes()  # before any image is returned (a no-op outside the Gradio versions it fixes)
    store = store if store is not None else session_store(options)
    downloads_root = Path(tempfile.mkdtemp(prefix="pti-app-"))
    handlers = SessionHandlers(editor, store, downloads_root, max_faces=options.max_faces)
    store.add_release_listener(handlers.forget)
    edit_options = editor.edit_options()
    defaults = editor.settings_for("fast" if editor.runs_on_cpu else "paper")
    gpu = {"concurrency_id": "gpu", "concurrency_limit": options.concurrency}
    light = {"concurrency_id": "cpu", "concurrency_limit": 4}

    with gr.Blocks(title="PTI face editor", delete_cache=(3600, 3600), analytics_enabled=False) as demo:
        gr.Markdown("# PTI face editor\nPivotal Tuning Inversion (Roich et al., 2022) on StyleGAN2: give a photo, "
                    "invert the face, stack edits, paste the result back into the photo.")
        banner = gr.Markdown(banner_text(editor, serving_notes(editor, options)), elem_id="banner")
        photo_state = gr.State(None)
        group_state = gr.State(None)  # every usable face of the photo, when it has several

        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=240):
                upload = gr.Image(label="1 · Photo", sources=["upload", "webcam", "clipboard"], type="filepath",
                                  height=250, elem_id="photo")
                face = gr.Dropdown(label="Face", choices=[], visible=False, interactive=True, elem_id="face")
                faces_preview = gr.Image(label="Faces found, numbered left to right", interactive=False,
                                         format="png", height=250, visible=False, elem_id="faces-preview")
                faces_choice = gr.Radio(faces_choices(2), value=ONE_FACE, label="Invert", visible=False,
                                        elem_id="faces-choice")
                gr.Examples(examples=[[str(EXAMPLES_DIR / name)] for name, _ in EXAMPLES], inputs=[upload],
                            example_labels=[label for _, label in EXAMPLES], label="Examples (public domain)")
            with gr.Column(scale=3):
                with gr.Row():
                    aligned = gr.Image(label="2 · Aligned face", interactive=False, format="png", height=250,
                                       elem_id="aligned", elem_classes="upscale")
                    pivot_image = gr.Image(label="Pivot (original generator)", interactive=False, format="png",
                                           height=250, elem_id="pivot", elem_classes="upscale")
                    tuned_image = gr.Image(label="PTI reconstruction (tuned generator)", interactive=False,
                                           format="png", height=250, elem_id="reconstruction",
                                           elem_classes="upscale")
                status = gr.Markdown("Give a photo to start: upload one, use the webcam, paste one or click an "
                                     "example.", elem_id="status")
                with gr.Row():
                    invert_button = gr.Button("3 · Invert", variant="primary", interactive=editor.can_invert,
                                              scale=3, elem_id="invert")
                    stop_button = gr.Button("Stop", variant="stop", scale=1, elem_id="stop")
                    stop_answer = gr.Markdown(visible=False)
                estimate = gr.Markdown(elem_id="estimate")
                with gr.Accordion("Inversion settings", open=False, elem_id="settings"):
                    with gr.Row():
                        preset_choice = gr.Radio(list(PRESET_NAMES), value=defaults.preset, label="Preset",
                                                 info="paper: the paper's step counts · fast: few steps, for a CPU "
                                                      "· custom: your own")
                        pivot_choice = gr.Radio([PIVOT_LABELS.get(name, (name, name)) for name in editor.pivot_choices],
                                                value=editor.default_pivot, label="Pivot", info=pivot_info(editor),
                                                visible=len(editor.pivot_choices) > 1, elem_id="pivot-choice")
                    with gr.Row():
                        projection_steps = gr.Slider(1, 1000, value=defaults.projection_steps, step=1,
                                                     label="Projection steps", elem_id="projection-steps")
                        tuning_steps = gr.Slider(1, 1000, value=defaults.tuning_steps, step=1, label="Tuning steps",
                                                 elem_id="tuning-steps")
                    with gr.Row():
                        locality = gr.Checkbox(value=defaults.locality, label="Locality regularisation")
                        seed = gr.Number(value=0, precision=0, minimum=0, label="Seed")

        gr.Markdown("### 4 · Edit")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=280):
                # Every face number a group can have: the API checks a value against the choices given here.
                edit_face = gr.Dropdown(edit_face_choices(options.max_faces), value=ALL_FACES,
                                        label="Edit which face",
                                        info="the numbers of the faces preview; or click a face in the gallery",
                                        visible=False, interactive=True, elem_id="edit-face")
                first = edit_options[0] if edit_options else None
                edit_choice = gr.Dropdown([(f"{KIND_LABELS[o.kind]} · {o.label}", o.key) for o in edit_options],
                                          value=first.key if first else None, label="Edit", elem_id="edit")
                # The widest range of all edits, so that any edit's strength passes the slider's own check from
                # the API; the page narrows it to the chosen edit's range (each edit checks its own range too).
                strength = gr.Slider(min((o.min for o in edit_options), default=-3.0),
                                     max((o.max for o in edit_options), default=3.0),
                                     value=first.default if first else 0.0, step=first.step if first else 0.1,
                                     label="Strength", elem_id="strength")
                add_button = gr.Button("Add to the chain", variant="primary", elem_id="add")
                with gr.Accordion("Edit from a sentence (StyleCLIP global direction)", open=True,
                                  visible=editor.offers_text_edits, elem_id="text-edit"):
                    neutral_text = gr.Textbox(value=global_directions.DEFAULT_NEUTRAL, label="Neutral: the face as it "
                                              "is", max_lines=1, elem_id="neutral")
                    target_text = gr.Textbox(label="Target: what it should become", placeholder="a smiling face",
                                             max_lines=1, elem_id="target")
                    with gr.Row():
                        alpha = gr.Slider(global_directions.ALPHA_MIN, global_directions.ALPHA_MAX,
                                          value=global_directions.DEFAULT_ALPHA, step=global_directions.ALPHA_STEP,
                                          label="Strength (alpha)", elem_id="alpha")
                        beta = gr.Slider(global_directions.BETA_MIN, global_directions.BETA_MAX,
                                         value=global_directions.DEFAULT_BETA, step=global_directions.BETA_STEP,
                                         label="Disentanglement (beta)", info="higher: fewer channels move",
                                         elem_id="beta")
                    add_text_button = gr.Button("Add the text edit to the chain", elem_id="add-text")
                with gr.Row():
                    step_choice = gr.Dropdown(label="Step", choices=[], value=None, interactive=True, scale=2,
                                              elem_id="step")
                    with gr.Column(scale=1, min_width=90):
                        remove_button = gr.Button("Remove", size="sm", elem_id="remove")
                        clear_button = gr.Button("Clear all", size="sm", elem_id="clear")
                edit_status = gr.Markdown(elem_id="edit-status")
            with gr.Column(scale=2):
                gallery = gr.Gallery(label="The chain, step by step (click a step to pick it)", columns=4,
                                     height=300, object_fit="contain", format="png", elem_id="gallery")

        gr.Markdown("### 5 · Result")
        with gr.Row(equal_height=False):
            with gr.Column(scale=2):
                result = gr.Image(label="Final face", interactive=False, format="png", height=380, elem_id="result",
                                  elem_classes="upscale")
            with gr.Column(scale=1):
                paste_back = gr.Checkbox(value=False, label="Paste the edited face back into the photo",
                                         elem_id="paste-back")
                downloads = gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id="downloads")
        gr.Markdown(licences_text(), elem_id="licences")

        cleared = [pivot_image, tuned_image, gallery, step_choice, result, downloads]
        upload.change(handlers.align, [upload], [photo_state, aligned, face, status, *cleared], api_name="align",
                      preprocess=False, **light).then(
            handlers.find_faces, [photo_state], [group_state, faces_preview, faces_choice, face, status],
            api_name="find_faces", **light).then(
            handlers.edit_face_picker, None, [edit_face], api_visibility="private", queue=False)
        face.input(handlers.choose_face, [face, photo_state], [photo_state, aligned, face, status, *cleared],
                   api_name="choose_face", **light)
        settings_inputs = [preset_choice, projection_steps, tuning_steps, locality, seed, pivot_choice]
        faces_inputs = [faces_choice, group_state]
        preset_choice.input(handlers.preset_values, [preset_choice], [projection_steps, tuning_steps, locality],
                            api_visibility="private", queue=False)
        for widget in (projection_steps, tuning_steps, locality):
            widget.input(lambda: "custom", None, [preset_choice], api_visibility="private", queue=False)
        if editor.can_invert:  # the first estimate times a few steps, so it runs once the page is open
            gr.on([demo.load, *(w.change for w in [*settings_inputs, faces_choice])], handlers.estimate,
                  [*settings_inputs, *faces_inputs], [estimate],
                  api_visibility="private", concurrency_id="estimate", concurrency_limit=1, trigger_mode="always_last")
        invert_button.click(handlers.invert, [photo_state, *settings_inputs, *faces_inputs],
                            [status, pivot_image, tuned_image, gallery, step_choice, result, downloads],
                            api_name="invert", show_progress_on=[aligned], **gpu).then(
            handlers.edit_face_picker, None, [edit_face], api_visibility="private", queue=False)
        # Outside the queue, so it runs at once even when the queue is full (the answer is for API users; people see
        # a toast and then the inversion's own "Stopped" line).
        stop_button.click(handlers.stop, None, [stop_answer], api_name="stop", queue=False)
        gr.on([demo.load, edit_choice.change], handlers.edit_slider, [edit_choice], [strength],
              api_visibility="private", queue=False)
        edit_outputs = [gallery, step_choice, result, downloads, edit_status]
        add_button.click(handlers.add_edit, [edit_choice, strength, paste_back, edit_face], edit_outputs,
                         api_name="add_edit", **gpu)
        add_text_button.click(handlers.add_text_edit, [neutral_text, target_text, alpha, beta, paste_back, edit_face],
                              edit_outputs, api_name="add_text_edit", **gpu)
        remove_button.click(handlers.remove_edit, [step_choice, paste_back, edit_face], edit_outputs,
                            api_name="remove_edit", **gpu)
        clear_button.click(handlers.clear_edits, [paste_back, edit_face], edit_outputs, api_name="clear_edits",
                           **light)
        gallery.select(handlers.gallery_selected, [edit_face, paste_back],
                       [step_choice, edit_face, gallery, result, downloads], api_visibility="private", **light)
        edit_face.input(handlers.show_face, [edit_face, paste_back], [gallery, step_choice, result, downloads],
                        api_name="edit_face", **light)
        paste_back.change(handlers.show_result, [paste_back, edit_face], [result, downloads], api_name="paste_back",
                          **light)
        demo.unload(handlers.release)
        # The state of the CUDA ops' background build changes after start-up: each page shows it as it is then.
        demo.load(lambda: banner_text(editor, serving_notes(editor, options)), None, [banner], queue=False,
                  api_visibility="private")

    demo.queue(max_size=options.queue_size, default_concurrency_limit=options.concurrency)
    weakref.finalize(demo, shutil.rmtree, downloads_root, True)  # the downloads go with the app (or at exit)
    return demo


def launch_options(options: AppOptions) -> dict:
    """Arguments of `demo.launch` for these options."""
    return {"server_name": options.host, "server_port": options.port, "share": options.share,
            "max_file_size": options.max_file_size, "css": CSS, "allowed_paths": [str(EXAMPLES_DIR)],
            "show_error": False, **without_local_url_check()}


def offline_if_the_hub_is_unreachable(endpoint: str | None = None) -> bool:
    """Use only cached and local files when the Hub cannot be reached (as `HF_HUB_OFFLINE=1` does), so that a
    missing file is reported at once instead of after the Hub client's ~20 s of retries per file; True if so."""
    if weights.hub_offline() or weights.hub_reachable(endpoint):
        return False
    LOGGER.warning("the Hugging Face Hub cannot be reached: using only cached and local files (as with "
                   "HF_HUB_OFFLINE=1)")
    weights.go_offline()
    return True


def prepare_text_edits(editor: FaceEditor) -> None:
    """Load what text edits need, logging (not raising) a failure: the first text edit then reports it."""
    try:
        editor.prepare_text_edits()
    except Exception as error:  # noqa: BLE001 - a background warm-up; the edit itself says what went wrong
        LOGGER.warning("text edits could not be prepared at start: %s", readable_message(error))


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the flags, load the models once, and serve the app."""
    keep_freed_memory()  # process-wide, first: large CPU tensors reuse freed memory instead of faulting in pages
    logging.basicConfig(level=logging.INFO)
    options = parse_args(argv)
    # SIGTERM (docker stop, systemd, a Space restart) stops the app as Ctrl-C does, so its clean-up runs too
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    offline_if_the_hub_is_unreachable()
    if on_zerogpu():  # its GPU worker has no compiler for the fused ops
        os.environ.setdefault(cuda_plugin.IMPL_ENV_VAR, "ref")
    if (problem := options.gpu_problem()) is not None:
        LOGGER.warning(problem)
    editor = load_editor(options)
    LOGGER.info("model %s on %s; sessions: %d / %s in memory, %s on disk, freed after %g min unused", options.model,
                editor.hardware, options.max_sessions, format_bytes(options.max_session_mb * 1024 * 1024),
                format_bytes(int(options.max_session_disk_gb * 1024 ** 3)), options.session_idle_minutes)
    if editor.device.type == "cuda":  # compiled in the background; the reference ops serve until it is ready
        LOGGER.info("CUDA ops: %s", cuda_plugin.start_background_build())
    if editor.offers_text_edits and not editor.is_tiny and not editor.zerogpu:  # CLIP, fs3 and the std of s
        # load in the background, so the first text edit need not wait for them (the tiny model's random demo ones
        # load in seconds on first use; on ZeroGPU nothing heavy runs in the process its GPU worker is forked from
        # until someone asks: see the README's text edits section)
        threading.Thread(target=prepare_text_edits, args=(editor,), name="pti-text-edits", daemon=True).start()
    build_demo(editor, options).launch(**launch_options(options))


if __name__ == "__main__":
    main()
