"""``Animator``: the one driving engine. A network plus the head model it drives.

    animator = Animator.load()                                 # bundled tiny model + synthetic head
    source = load_tracked("photo.jpg", workdir)                # tracks it (or reads a tracked folder)
    avatar = animator.reconstruct(source)                      # once (from ``source_frame(source)``)
    driver = load_tracked("clip.mp4", workdir)
    frames = animator.drive(source, driver, MotionControls())  # FrameParams [F]
    for image in animator.render(avatar, frames): ...          # uint8 [R, R, 3] per frame

``reenact``, ``novel-views``, ``export-ply``, ``live``, the app, the service and the
evaluation all go through these methods.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from gagavatar.assets import bundled
from gagavatar.data.format import VideoRecord
from gagavatar.data.frame import FrameParams
from gagavatar.errors import NoFaceError, NonFiniteError
from gagavatar.geometry import orbit
from gagavatar.io import tensor_to_image
from gagavatar.reenact.inputs import DEFAULT_CHECKPOINT, is_bundled_model
from gagavatar.reenact.motion import MotionControls, drive
from gagavatar.system import default_device
from gagavatar.tracking.inputs import source_frame


class Animator:
    """Reconstruct an avatar once, then drive and render it frame by frame.

    model: a ``GAGAvatar``; head: the ``HeadModel`` it was trained with; background:
    RGB in [0, 1] behind the avatar (the network renders on black; the avatar is
    composited with its alpha).
    """

    def __init__(self, model, head, device="cpu", background=(0.0, 0.0, 0.0), checkpoint: Path | None = None):
        self.model, self.head, self.device = model.eval(), head.to(device), torch.device(device)
        self.background = tuple(float(b) for b in background)
        self.checkpoint = checkpoint  # where the weights came from, when loaded from a file
        from gagavatar.model import check_head

        check_head(model, head, f"the checkpoint {checkpoint.name}" if checkpoint is not None else "the model")

    @classmethod
    def load(cls, checkpoint=None, head_model=None, device=None, background=(0.0, 0.0, 0.0)) -> "Animator":
        """Any checkpoint (ours, the released GAGAvatar.pt or its conversion, a run folder; None:
        the bundled tiny model) with a head model (a FLAME-format file or a ``HeadModel``; None:
        the bundled synthetic head, which must be the one the checkpoint needs: a checkpoint made
        for another head is refused in one line naming both)."""
        from gagavatar.head import HeadModel, load_head_model
        from gagavatar.model import load

        device = default_device(device)
        path = bundled(DEFAULT_CHECKPOINT) if checkpoint is None else Path(checkpoint)
        if checkpoint is None and not path.is_file():
            raise FileNotFoundError(f"the bundled tiny model is missing from this install: {path}")
        head = head_model if isinstance(head_model, HeadModel) else load_head_model(head_model)
        return cls(load(path, device=device), head, device, background, checkpoint=path)

    @property
    def size(self) -> int:
        """Side of the rendered images."""
        return self.model.config.render_size

    @property
    def uses_bundled_model(self) -> bool:
        """True when the weights are the bundled demonstration model (trained on synthetic heads only)."""
        return self.checkpoint is not None and is_bundled_model(self.checkpoint)

    # ------------------------------------------------------------------ once per source
    def source_image(self, video: VideoRecord, frame: int) -> torch.Tensor:
        """The network's input [1, 3, R, R]: the frame matted on black (as trained, whatever the
        render background), at the render size."""
        return video.image(frame, self.size)[None]

    @torch.no_grad()
    def reconstruct(self, video: VideoRecord, frame: int | None = None):
        """The avatar (batch 1) of one tracked frame; None: ``source_frame(video)``."""
        frame = source_frame(video) if frame is None else frame
        if not video.params["valid"][frame]:
            raise NoFaceError(f"source frame {frame} of {video.id} has no tracked face: use a frame that shows one")
        camera = video.frames(frame).camera.to(self.device)
        return self.model.reconstruct(self.source_image(video, frame).to(self.device), camera)

    # ------------------------------------------------------------------ every frame
    def drive(self, source: VideoRecord, driver: VideoRecord, controls: MotionControls | None = None,
              frame: int | None = None) -> tuple[FrameParams, np.ndarray]:
        """``gagavatar.reenact.motion.drive``: (FrameParams [F], repeated [F]) that drive ``source``'s
        avatar with ``driver``."""
        return drive(source, driver, controls, frame)

    @torch.no_grad()
    def images(self, avatar, frames: FrameParams, coarse: bool = False, vertices: torch.Tensor | None = None
               ) -> torch.Tensor:
        """Rendered frames [F, 3, R, R] in [0, 1] on the background: the network's output, or
        with ``coarse`` the splatted RGB before the neural renderer. ``vertices`` [F, V, 3]: the
        frames' world vertices when the caller has them (a speaker's, forehead smoothed), else
        ``frames.vertices(head)``."""
        frames = frames.to(self.device)
        vertices = frames.vertices(self.head) if vertices is None else vertices.to(self.device)
        out = self.model.render(avatar, vertices, frames.camera)
        rgb = (out.coarse if coarse else out.fine).float()
        if not torch.isfinite(rgb).all():  # would be written as black frames
            raise NonFiniteError("the rendered frames hold NaN or Inf values: the tracked parameters or the model "
                                 "hold non-finite numbers; check the checkpoint and head model with gagavatar doctor")
        if self.background != (0.0, 0.0, 0.0):  # the network renders on black
            rgb = rgb + (1 - out.alpha.float()) * torch.tensor(self.background, device=rgb.device).view(1, 3, 1, 1)
        return rgb.clamp(0, 1)

    def render(self, avatar, frames: FrameParams, batch_size: int = 4, vertices: torch.Tensor | None = None
               ) -> Iterator[np.ndarray]:
        """One RGB uint8 image [R, R, 3] per frame of ``frames``, on the background (``vertices``:
        as ``images`` takes them)."""
        for start in range(0, len(frames), batch_size):
            part = None if vertices is None else vertices[start:start + batch_size]
            for image in self.images(avatar, frames[start:start + batch_size], vertices=part):
                yield tensor_to_image(image)

    def orbit(self, avatar, source: VideoRecord, n_frames: int = 48, yaw: float = 30.0,
              frame: int | None = None) -> Iterator[np.ndarray]:
        """The avatar with the source's own expression, from ``n_frames`` cameras orbiting the head."""
        frame = source_frame(source) if frame is None else frame
        still = source.frames(frame)
        return self.render(avatar, still.repeat(n_frames).replace(camera=orbit(still.camera, n_frames, yaw)))

    @torch.no_grad()
    def to_ply(self, avatar, source: VideoRecord, path, frame: int | None = None) -> Path:
        """The avatar's Gaussians as a 3D Gaussian splatting PLY, the expression Gaussians at the
        source frame's own vertices."""
        from gagavatar.export import avatar_to_ply

        frame = source_frame(source) if frame is None else frame
        return avatar_to_ply(path, avatar, source.frames(frame).to(self.device).vertices(self.head))
