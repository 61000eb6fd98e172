"""What the user-facing commands do (``gagavatar reenact``, ``novel-views``, ``export-ply``,
``demo``), as plain functions the CLI, the app and scripts call."""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.console import Console

from gagavatar import io as gio
from gagavatar.reenact import Animator, MotionControls, bundled, drive_parameters, load_tracked
from gagavatar.render.cameras import Camera, orbit

console = Console(stderr=True)
DEMO_DATA = "demo/clips"  # bundled tracked clips: video "source" (1 frame) and "driver"


@dataclass
class ReenactSummary:
    out: Path
    n_frames: int
    n_repeated: int  # driver frames without a face, filled with the last good one
    seconds: float
    fps: float
    frames: list | None = None  # the avatar's frames (uint8 [R,R,3]) when asked to keep them

    def __str__(self) -> str:
        note = f", {self.n_repeated} driver frame(s) without a face repeated the last good one" if self.n_repeated else ""
        return f"wrote {self.out}: {self.n_frames} frames in {self.seconds:.1f} s ({self.fps:.1f} FPS){note}"


def _progress(iterable, total: int, desc: str):
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, dynamic_ncols=True, leave=False)


def reenact(source, driver, out, checkpoint=None, head_model=None, side_by_side: bool = False,
            controls: MotionControls | None = None, animator: Animator | None = None, fps: float | None = None,
            workdir=None, background=(0.0, 0.0, 0.0), keep_frames: bool = False) -> ReenactSummary:
    """Animate ``source`` (image or tracked folder) with ``driver`` (video, image folder or
    tracked folder) and write an H.264 mp4 to ``out``; ``background`` RGB in [0, 1] behind the avatar."""
    t0 = time.perf_counter()
    animator = animator or Animator.from_checkpoint(checkpoint, head_model, background=background)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(workdir or tmp)
        src = load_tracked(source, work / "source", animator.head)
        drv = load_tracked(driver, work / "driver", animator.head)
        frame = int(np.flatnonzero(src.params["valid"])[0]) if src.params["valid"].any() else 0
        avatar = animator.reconstruct(src, frame)
        motion = drive_parameters(src.params.frame(frame), drv.params, controls)
        size = animator.size
        kept = [] if keep_frames else None

        def frames():
            rendered = animator.render(avatar, motion)
            for i, image in enumerate(_progress(rendered, drv.n_frames, "reenact")):
                if kept is not None:
                    kept.append(image)
                if side_by_side:
                    driver_image = torch.from_numpy(drv.frame(i)).permute(2, 0, 1)[None].float()
                    driver_image = gio.resize_image(driver_image, size)
                    image = np.concatenate([driver_image[0].permute(1, 2, 0).clamp(0, 255).byte().numpy(), image], 1)
                yield image

        path = gio.write_video(out, frames(), fps=fps or drv.info.fps)
    seconds = time.perf_counter() - t0
    return ReenactSummary(path, drv.n_frames, int(motion["repeated"].sum()), seconds, drv.n_frames / seconds, kept)


def novel_views(source, out, checkpoint=None, head_model=None, n_frames: int = 60, yaw: float = 30.0,
                animator: Animator | None = None, workdir=None) -> Path:
    """An orbit around the reconstructed avatar of ``source``, written as an mp4."""
    animator = animator or Animator.from_checkpoint(checkpoint, head_model)
    with tempfile.TemporaryDirectory() as tmp:
        src = load_tracked(source, Path(workdir or tmp) / "source", animator.head)
        frames = list(_orbit_frames(animator, src, n_frames, yaw))
    return gio.write_video(out, frames, fps=25)


def _orbit_frames(animator: Animator, src, n_frames: int, yaw: float):
    avatar = animator.reconstruct(src, 0)
    params = {k: np.repeat(v[None], n_frames, 0) for k, v in src.params.frame(0).items() if np.ndim(v) >= 1}
    camera = Camera.from_reference(torch.from_numpy(src.params["transform"][0].copy())[None], animator.size)
    return animator.render(avatar, params, cameras=orbit(camera, n_frames, yaw))


def export_ply(source, out, checkpoint=None, head_model=None, animator: Animator | None = None, workdir=None) -> Path:
    """The reconstructed avatar of ``source`` as a 3D Gaussian splatting PLY."""
    from gagavatar.export import avatar_to_ply

    animator = animator or Animator.from_checkpoint(checkpoint, head_model)
    with tempfile.TemporaryDirectory() as tmp:
        src = load_tracked(source, Path(workdir or tmp) / "source", animator.head)
        avatar = animator.reconstruct(src, 0)
        params = {k: v[None] for k, v in src.params.frame(0).items() if np.ndim(v) >= 1}
        return avatar_to_ply(out, avatar, animator.vertices(params, slice(0, 1)))


def make_demo_clips(out, seed: int = 7, frames: int = 48, size: int = 128) -> Path:
    """Write the bundled demo clips: two synthetic people never seen in training (their
    seed differs from the training data's); the first frame of one is the source, the
    other's video is the driver. ``gagavatar/assets/demo/clips`` was made with the defaults."""
    from gagavatar.data.format import FRAME_ARRAYS, Dataset, update_index, write_video
    from gagavatar.synthetic.video import SynthConfig, generate

    out = Path(out)
    with tempfile.TemporaryDirectory() as tmp:
        made = Dataset(generate(tmp, SynthConfig(identities=2, videos_per_identity=1, frames=frames, size=size,
                                                 seed=seed, splits=(0.0, 0.0, 1.0)), progress=False).root)
        a, b = made.videos
        for name, video, n in (("source", a, 1), ("driver", b, b.n_frames)):
            arrays = video.params.arrays  # only the per-frame arrays are cut to n frames
            params = {k: v[:n] if k in FRAME_ARRAYS and np.ndim(v) > (k == "shape") else v for k, v in arrays.items()}
            write_video(out, name, np.stack([video.frame(i) for i in range(n)]),
                        np.stack([video.matte(i) for i in range(n)]), params, video.identity, "test",
                        head_model=video.info.head_model, fps=video.info.fps, source=f"synthetic seed {seed}")
    update_index(out)
    return out


def demo(out="demo", checkpoint=None, head_model=None) -> dict[str, Path]:
    """The built-in demo: bundled tiny model, synthetic head and clips -> reenactment mp4,
    orbit mp4 and a contact sheet in ``out``. Offline; about a minute on 2 CPU cores."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    clips = bundled(DEMO_DATA)
    animator = Animator.from_checkpoint(checkpoint, head_model, device="cpu")
    from gagavatar.data.format import Dataset

    videos = {v.id: v for v in Dataset(clips).videos}
    source, driver = videos["source"], videos["driver"]
    summary = reenact(source.folder, driver.folder, out / "reenact.mp4", side_by_side=True, animator=animator,
                      keep_frames=True)
    console.print(str(summary))
    orbit_video = novel_views(source.folder, out / "novel_views.mp4", animator=animator, n_frames=48)
    console.print(f"wrote {orbit_video}")

    # contact sheet: driver frames, reenacted frames, orbit frames
    picks = np.linspace(0, driver.n_frames - 1, 6).round().astype(int)
    results = summary.frames
    views = list(_orbit_frames(animator, source, 6, 30.0))
    size = animator.size

    def resize(image: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))

    seen = gio.tensor_to_image(animator.source_image(source, 0)[0])  # as the network sees it
    sheet = gio.write_image_grid([[seen] + [resize(driver.frame(i)) for i in picks[:-1]],
                                  [seen] + [results[i] for i in picks[:-1]],
                                  [seen] + views[:-1]],
                                 out / "contact_sheet.png", row_labels=["driver", "avatar", "novel views"],
                                 background=(20, 20, 20))
    console.print(f"wrote {sheet}")
    return {"reenact": summary.out, "novel_views": orbit_video, "contact_sheet": sheet}
