"""Driving an avatar: a tracked source and a tracked driver in, frames out.

    animator = Animator.from_checkpoint()                  # bundled tiny model + synthetic head
    source = load_tracked("photo.jpg", workdir)            # tracks it (or reads a tracked folder)
    avatar = animator.reconstruct(source, frame=0)         # once
    driver = load_tracked("clip.mp4", workdir)
    motion = drive_parameters(source.params.frame(0), driver.params, MotionControls())
    for image in animator.render(avatar, motion): ...      # every frame, uint8 [R,R,3]

The source gives the identity (its image and head shape); the driver gives the
expression, jaw, eyes and the head pose, which lives in the camera as in the
reference (SPEC §7.1, §9). ``MotionControls`` chooses what is transferred.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from gagavatar.data.format import INDEX_FILE, VIDEO_FILE, Dataset, VideoRecord, composite, image_to_tensor
from gagavatar.io import resize_image, tensor_to_image
from gagavatar.render.cameras import Camera, reference_to_viewmat, viewmat_to_reference

log = logging.getLogger(__name__)

TRANSFER_MODES = ("all", "expression", "pose")
MOTION_KEYS = ("expression", "jaw_pose", "eye_pose", "neck_pose")  # what a face does (not the camera)


def bundled(name: str) -> Path:
    """Path of a file shipped in ``gagavatar/assets``."""
    return Path(str(resources.files("gagavatar.assets").joinpath(name)))


DEFAULT_CHECKPOINT = "demo/tiny.safetensors"


# --------------------------------------------------------------------------- inputs
def load_tracked(path: str | Path, workdir: str | Path | None = None, head=None, size: int = 512,
                 smooth: float = 0.0) -> VideoRecord:
    """A tracked video: read a tracked folder as it is, or track an image / video / image folder.

    ``path`` may be a dataset folder (its first video), one video folder of a dataset
    (``video.json``), a GAGAvatar_track output folder (imported into ``workdir``, or a
    new temporary folder), or raw input, which is tracked into ``workdir`` first.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_dir() and (path / INDEX_FILE).is_file():
        videos = Dataset(path).videos
        if not videos:
            raise ValueError(f"{path}: the dataset has no videos")
        return videos[0]
    if path.is_dir() and (path / VIDEO_FILE).is_file():
        return VideoRecord.open(path)
    from gagavatar.data.reference import import_reference, is_reference_folder

    if is_reference_folder(path):  # checked after ours: `track --reference-format` writes both
        import tempfile

        out = Path(workdir) / path.name if workdir is not None else Path(tempfile.mkdtemp(prefix="gagavatar-ref-"))
        import_reference(path, out)
        return Dataset(out).videos[0]

    from gagavatar.tracking.tracker import track

    if workdir is None:
        raise ValueError(f"{path} is not tracked yet: give a workdir to track it into")
    out = Path(workdir) / path.stem
    summary = track(path, out, head_model=head, size=size, smooth=smooth)
    if summary.n_tracked == 0:
        raise ValueError(f"{path}: no face found in any frame; use a photo or video that shows a face")
    return Dataset(out).videos[0]


def parse_color(value) -> tuple[float, float, float]:
    """A colour as RGB floats in [0, 1] from "#rrggbb", "rgb(r, g, b)", "rgba(r, g, b, a)",
    "R,G,B" (0-255, or 0-1 when all <= 1) or a sequence of three numbers (the CLI's
    --background and the app's colour picker)."""
    if value is None or value == "":
        return (0.0, 0.0, 0.0)
    if isinstance(value, str):
        s = value.strip().lower()
        if s.startswith("#") and len(s) in (4, 7):
            h = s[1:] if len(s) == 7 else "".join(c * 2 for c in s[1:])
            try:
                return tuple(int(h[i:i + 2], 16) / 255.0 for i in (0, 2, 4))
            except ValueError:
                pass
        else:
            s = s.removeprefix("rgba").removeprefix("rgb").strip("() ")
            try:
                parts = [float(p) for p in s.split(",")][:3]
            except ValueError:
                parts = []
            if len(parts) == 3:
                value = parts
    if not isinstance(value, str):
        c = np.asarray(value, float).reshape(-1)
        if c.size == 3 and np.all((c >= 0) & (c <= 255)):
            return tuple(float(x) for x in (c if c.max() <= 1.0 else c / 255.0))
    raise ValueError(f"background {value!r}: give a colour as #rrggbb or R,G,B (0-255)")


# --------------------------------------------------------------------------- motion
@dataclass
class MotionControls:
    """What of the driver's motion reaches the avatar.

    transfer: "all"; "expression" (keep the source's head pose and camera); "pose"
        (keep the source's expression, jaw and eyes).
    relative: apply the driver's motion relative to its first frame on top of the
        source's own expression and pose (instead of copying it).
    expression_scale, jaw_scale, eye_scale: multipliers on the driver's motion.
    stabilize: smoothing of head pose and eyes over time (0 = off, 1 = the
        reference tracker's smoothed.pkl weights).
    """

    transfer: str = "all"
    relative: bool = False
    expression_scale: float = 1.0
    jaw_scale: float = 1.0
    eye_scale: float = 1.0
    stabilize: float = 0.0

    def __post_init__(self):
        if self.transfer not in TRANSFER_MODES:
            raise ValueError(f"transfer={self.transfer!r}: choose one of {TRANSFER_MODES}")
        if self.stabilize < 0:
            raise ValueError(f"stabilize={self.stabilize}: use a strength >= 0")


def _last_good(valid: np.ndarray) -> np.ndarray:
    """For each frame, the index of the latest valid frame at or before it (the first valid before any)."""
    good = np.flatnonzero(valid)
    if good.size == 0:
        raise ValueError("the driver has no frame with a face: nothing to drive the avatar with")
    idx = np.maximum.accumulate(np.where(valid, np.arange(len(valid)), -1))
    return np.where(idx < 0, good[0], idx)


def drive_parameters(source: dict, driver, controls: MotionControls | None = None) -> dict:
    """Per-frame parameters that drive the source's avatar.

    source: one frame's parameters (``VideoParams.frame(i)``: shape, expression, ...,
    transform [3,4]). driver: a ``VideoParams`` (arrays [F,...]). Frames where the
    driver found no face repeat the last good one. Returns arrays [F,...]: shape,
    expression, jaw_pose, eye_pose, neck_pose, transform [F,3,4], plus
    ``repeated`` [F] (bool: a frame that repeats an earlier one).
    """
    from gagavatar.tracking.smoothing import smooth_track

    c = controls or MotionControls()
    valid = np.asarray(driver["valid"], bool)
    take = _last_good(valid)
    n = len(valid)
    d = {k: np.asarray(driver[k], np.float32)[take] for k in MOTION_KEYS + ("transform",)}
    s = {k: np.asarray(source[k], np.float32) for k in MOTION_KEYS + ("transform",)}
    scales = {"expression": c.expression_scale, "jaw_pose": c.jaw_scale, "eye_pose": c.eye_scale, "neck_pose": 1.0}

    out = {"shape": np.broadcast_to(np.asarray(source["shape"], np.float32), (n,) + np.shape(source["shape"])).copy()}
    for k in MOTION_KEYS:
        if c.transfer == "pose":
            out[k] = np.broadcast_to(s[k], (n,) + s[k].shape).copy()
        elif c.relative:
            out[k] = s[k] + scales[k] * (d[k] - d[k][0])  # d[0] is the driver's first good frame
        else:
            out[k] = scales[k] * d[k]

    if c.transfer == "expression":
        transform = np.broadcast_to(s["transform"], (n, 3, 4)).copy()
    elif c.relative:
        # world-to-camera: V_t = V_drv_t V_drv_0^-1 V_src (the head moves as the driver's did)
        v_drv = reference_to_viewmat(torch.from_numpy(d["transform"]).double())
        v_first = v_drv[0]
        v_src = reference_to_viewmat(torch.from_numpy(s["transform"]).double())
        transform = viewmat_to_reference(v_drv @ torch.linalg.inv(v_first) @ v_src).float().numpy()
    else:
        transform = d["transform"]
    if c.stabilize > 0:
        transform, out["eye_pose"] = smooth_track(transform, out["eye_pose"], c.stabilize)
    out["transform"] = np.asarray(transform, np.float32)
    out["repeated"] = take != np.arange(n)
    return out


# --------------------------------------------------------------------------- model
def load_checkpoint(checkpoint: str | Path | None = None, head=None, device="cpu"):
    """(model, head model) for a checkpoint: ours (.safetensors), the released GAGAvatar.pt,
    or its conversion; None = the bundled tiny model. Fails clearly when the checkpoint
    was made for another head model."""
    from gagavatar.head import HeadModel
    from gagavatar.model import CheckpointError, load, load_official
    from gagavatar.model.checkpoint import is_gagavatar_checkpoint

    path = bundled(DEFAULT_CHECKPOINT) if checkpoint is None else Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}" + (
            "" if checkpoint else " (the bundled tiny model is missing from this install)"))
    if path.suffix == ".safetensors" and is_gagavatar_checkpoint(path):
        model = load(path, device=device)
    elif path.suffix in (".pt", ".pth", ".safetensors"):
        model = load_official(path, device=device)
    else:
        raise CheckpointError(f"{path}: not a checkpoint (expected .safetensors, or the released GAGAvatar.pt)")
    head = HeadModel.default() if head is None else head
    if model.config.n_vertices != head.n_vertices:
        raise CheckpointError(
            f"{path} was made for a head model with {model.config.n_vertices} vertices, but the head model "
            f"has {head.n_vertices}: pass the one it was trained with (--head-model; the released weights "
            f"need FLAME 2020, the bundled tiny model the bundled synthetic head)")
    return model.eval(), head.to(device)


class Animator:
    """A network plus the head model it drives: reconstruct once, render every frame."""

    def __init__(self, model, head, device="cpu", background=(0.0, 0.0, 0.0)):
        self.model, self.head, self.device = model, head, torch.device(device)
        self.background = tuple(float(b) for b in background)
        self.size = model.config.render_size

    @classmethod
    def from_checkpoint(cls, checkpoint=None, head_model=None, device=None, background=(0.0, 0.0, 0.0)):
        from gagavatar.head import HeadModel

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        head = HeadModel.load(head_model) if isinstance(head_model, (str, Path)) else head_model
        model, head = load_checkpoint(checkpoint, head, device)
        return cls(model, head, device, background)

    def source_image(self, video: VideoRecord, frame: int = 0) -> torch.Tensor:
        """Frame matted on black (what the network was trained on, whatever the render
        background) and resized to the render size, [1,3,R,R]."""
        image = composite(image_to_tensor(video.frame(frame)), image_to_tensor(video.matte(frame)), (0.0, 0.0, 0.0))
        return resize_image(image[None], self.size).clamp(0, 1)

    @torch.no_grad()
    def reconstruct(self, video: VideoRecord, frame: int = 0):
        """The avatar of one tracked frame (the source)."""
        if not video.params["valid"][frame]:
            raise ValueError(f"source frame {frame} of {video.id} has no tracked face")
        transform = torch.from_numpy(video.params["transform"][frame].copy())[None]
        camera = Camera.from_reference(transform, self.size)
        return self.model.reconstruct(self.source_image(video, frame).to(self.device), camera.to(self.device))

    @torch.no_grad()
    def vertices(self, params: dict, index: slice, scale: float = 5.0) -> torch.Tensor:
        """Driven head-model vertices [B,V,3] (x scale) of frames ``index`` of ``params``."""
        t = lambda k: torch.from_numpy(np.ascontiguousarray(params[k][index])).to(self.device)  # noqa: E731
        return self.head(t("shape"), t("expression"), neck_pose=t("neck_pose"), jaw_pose=t("jaw_pose"),
                         eye_pose=t("eye_pose")) * scale

    @torch.no_grad()
    def render(self, avatar, params: dict, batch_size: int = 4, scale: float = 5.0, cameras: Camera | None = None):
        """Yield one RGB uint8 image [R,R,3] per frame of ``params`` (``drive_parameters``'s
        output); ``cameras`` [F] replaces the transforms (novel views)."""
        n = len(params["transform"])
        for start in range(0, n, batch_size):
            index = slice(start, min(start + batch_size, n))
            vertices = self.vertices(params, index, scale)
            camera = cameras[index] if cameras is not None else \
                Camera.from_reference(torch.from_numpy(params["transform"][index].copy()), self.size)
            out = self.model.render(avatar, vertices, camera.to(self.device))
            fine = out.fine if self.background == (0.0, 0.0, 0.0) else \
                out.fine + (1 - out.alpha) * torch.tensor(self.background, device=self.device).view(1, 3, 1, 1)
            for image in fine:
                yield tensor_to_image(image)
