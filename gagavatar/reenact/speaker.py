"""``Speaker``: a voice drives the avatar. Speech -> motion (ARTalk, ``gagavatar.speech``) ->
the frames that drive one source, through the same motion controls as a video driver.

    animator = Animator.load("GAGAvatar.pt", "generic_model.pkl")     # FLAME: the speech model's head
    speaker = Speaker.load("ARTalk_wav2vec.pt")       # None: the bundled voice (for the bundled head)
    frames, vertices = speaker.drive(source, read_audio("voice.wav"), animator.head)
    video = animator.render(avatar, frames, vertices=vertices)        # 25 frames per second of audio

The speech model's motion is a driver like any other: ``motion_frames`` turns it into
FrameParams (expression, jaw, head rotation as the camera's), and ``Motion`` applies the
controls (expression and jaw scale, stabilise, ``transfer="expression"`` to keep the
source's head pose). The forehead is smoothed over time as ARTalk's glue does.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gagavatar.assets import bundled
from gagavatar.data.format import VideoRecord
from gagavatar.data.frame import FrameParams
from gagavatar.errors import InputError
from gagavatar.head import BUNDLED_HEAD_ID, canonical_head_id
from gagavatar.reenact.motion import Motion, MotionControls
from gagavatar.system import default_device
from gagavatar.tracking.inputs import source_frame

FLAME_VERTICES = 5023
BUNDLED_VOICE = "speech/tiny_voice.safetensors"  # in gagavatar/assets: the demonstration voice
BUNDLED_VOICE_NOTE = ("speaking with the bundled demonstration voice: a tiny speech model trained on synthetic "
                      "espeak-ng speech for the bundled head; for real faces use ARTalk's model "
                      "(--speech-model ARTalk_wav2vec.pt) with FLAME and GAGAvatar.pt")


class Speaker:
    """A speech model (``gagavatar.speech.SpeechModel``) with an optional speaking style.

    style: a style motion [T, 106] (ARTalk's ``style_motion/*.pt``), None for the model's own;
    fix_pose: keep the head still (the motion's head rotation zeroed); path: the file the model
    came from, when loaded from one."""

    def __init__(self, model, style: torch.Tensor | None = None, fix_pose: bool = False, path=None):
        self.model, self.style, self.fix_pose, self.path = model.eval(), style, fix_pose, path

    @classmethod
    def load(cls, speech_model=None, style=None, fix_pose: bool = False, device=None, head=None) -> "Speaker":
        """A speech model file (ARTalk_wav2vec.pt, or one ``train-speech`` made) and a style
        motion file (``style``). ``speech_model`` None: the bundled demonstration voice when
        ``head`` is the bundled head (or not given), else one line saying where to get ARTalk's."""
        from gagavatar.speech.weights import WHERE_TO_GET, load_speech_model, load_style_motion

        if speech_model is None:
            if head is not None and canonical_head_id(head.id) != BUNDLED_HEAD_ID:
                raise FileNotFoundError(f"speaking with the head model {head.id} needs a speech model for it: give "
                                        f"--speech-model ARTalk_wav2vec.pt (FLAME); "
                                        + WHERE_TO_GET.format(name="ARTalk_wav2vec.pt"))
            speech_model = bundled(BUNDLED_VOICE)
        model = load_speech_model(speech_model, device=default_device(device))
        style = None if style is None else load_style_motion(style, model.config.motion_dim)
        return cls(model, style, fix_pose, path=speech_model)

    @property
    def is_bundled(self) -> bool:
        """The bundled demonstration voice (trained on espeak-ng speech, for the bundled head); a
        voice ``train-speech`` made on the same preset and head is the user's own."""
        return self.path is not None and Path(self.path).resolve() == bundled(BUNDLED_VOICE).resolve()

    @property
    def fps(self) -> float:
        return float(self.model.config.fps)

    @property
    def sample_rate(self) -> int:
        return int(self.model.config.sample_rate)

    def check_head(self, head) -> None:
        """The motion is in one head model's expression space (``config.head``): refuse any
        other head in one line. "flame" (ARTalk's release) takes any FLAME-layout file."""
        speaks = self.model.config.head
        if speaks == "flame":
            if head.id == BUNDLED_HEAD_ID or head.n_vertices != FLAME_VERTICES:
                raise InputError(f"the speech model drives FLAME ({FLAME_VERTICES} vertices, FLAME's expressions), "
                                 f"not the head model {head.id}: give --head-model generic_model.pkl (FLAME 2020) "
                                 f"with a checkpoint trained on it (the released GAGAvatar.pt)")
        elif canonical_head_id(speaks) != canonical_head_id(head.id):
            raise InputError(f"the speech model was trained on the head model {speaks}, not {head.id}: give the "
                             f"--head-model it was trained on, or a speech model trained on {head.id}")

    @torch.no_grad()
    def motion(self, audio: np.ndarray) -> torch.Tensor:
        """Mono samples [N] at ``sample_rate`` -> smoothed motion [F, 106] at ``fps``
        (F = ceil(seconds x fps); silence gives a still, closed mouth)."""
        from tqdm import tqdm

        from gagavatar.speech.postprocess import smooth_motion

        like = self.model.pos_embed
        chunks = -(-self.model.frame_count(len(audio)) // self.model.config.chunk_frames)
        with tqdm(total=2 * chunks, desc="speech", dynamic_ncols=True, leave=False, disable=chunks < 3) as bar:
            motion = self.model.generate(torch.as_tensor(np.asarray(audio, np.float32)).to(like),
                                         None if self.style is None else self.style.to(like), step=bar.update)
        return smooth_motion(motion.float().cpu(), fix_pose=self.fix_pose)

    def drive(self, source: VideoRecord, audio: np.ndarray, head, controls: MotionControls | None = None,
              frame: int | None = None) -> tuple[FrameParams, torch.Tensor]:
        """(FrameParams [F], world vertices [F, V, 3]) that make ``source``'s avatar (its frame
        ``frame``, default ``source_frame``) say ``audio``."""
        self.check_head(head)  # before the speech model runs
        return self.frames(source.frames(source_frame(source) if frame is None else frame),
                           self.motion(audio), head, controls)

    def frames(self, source: FrameParams, motion: torch.Tensor, head,
               controls: MotionControls | None = None) -> tuple[FrameParams, torch.Tensor]:
        """Motion [F, 106] -> (FrameParams [F], vertices [F, V, 3]) for one source frame."""
        from gagavatar.speech.postprocess import motion_frames, motion_vertices

        self.check_head(head)
        frames = Motion(source, controls)(motion_frames(motion, source))
        return frames, motion_vertices(frames, head)


def save_motion(path, frames: FrameParams, fps: float) -> Path:
    """Speech-driven frames as a motion file ``reenact`` takes as its driver (``load_motion``)."""
    from gagavatar.io import atomic_path

    arrays = frames.to_arrays() | {"fps": np.float32(fps), "width": np.int32(frames.camera.width),
                                   "height": np.int32(frames.camera.height)}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return Path(path)


def load_motion(path) -> tuple[FrameParams, float]:
    """(FrameParams [F], fps) of a motion file ``save_motion`` wrote (``speak --motion-out``)."""
    from gagavatar.data.frame import HEAD_FIELDS

    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as e:
        raise InputError(f"{path}: not a motion file ({type(e).__name__}); write one with gagavatar speak "
                         f"--motion-out") from None
    missing = [k for k in (*HEAD_FIELDS, "transform", "K", "fps", "width", "height") if k not in arrays]
    if missing:
        raise InputError(f"{path}: not a motion file (no {', '.join(missing)}); write one with gagavatar speak "
                         f"--motion-out")
    frames = FrameParams.from_arrays(arrays, int(arrays["width"]), int(arrays["height"]))
    return frames, float(arrays["fps"])
