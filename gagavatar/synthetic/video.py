"""Synthetic talking-head videos in the dataset format (``gagavatar synth``).

Each identity is a random shape of the head model plus a random ``Appearance``
(gagavatar.synthetic.appearance), drawn as coloured 3D Gaussians. Each video
of an identity has its own motion (expression, talking jaw, gaze, head pose),
lighting and background:

* head pose lives in the CAMERA, as in the reference tracker: the head model's
  global rotation stays zero and the camera orbits the head (yaw up to about
  +-45 degrees, pitch +-20, some roll);
* framing as the reference crops: focal 12 (half-image units), the camera
  distance chosen so the head box is 1/1.65 of the frame;
* lighting: Lambertian from the surface normals, a key light fixed in the room
  (so it moves over the face as the head turns) plus ambient light;
* backgrounds: solid, gradient or smooth noise, composited with the
  rasterizer's alpha, which is also the stored matte.

Everything is a function of the seed: identity ``i`` uses
``default_rng([seed, i])`` and its video ``v`` ``default_rng([seed, i, v])``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gagavatar.data.format import (FRAME_FORMATS, INDEX_FILE, SPLITS, Dataset, VideoWriter, default_params,
                                   update_index)
from gagavatar.head.model import BUNDLED_HEAD_ID, vertex_normals
from gagavatar.io import OutputError, atomic_folder, check_output_folder, write_image_grid
from gagavatar.geometry import (REFERENCE_FOCAL, WORLD_SCALE, Camera, axis_rotation, intrinsics, look_at,
                                viewmat_to_reference)
from gagavatar.synthetic.appearance import HAIR_STYLES, Appearance, GaussianHead, build_gaussian_head, shade
from gagavatar.synthetic.basis_names import EXPRESSIONS
from gagavatar.system import check_memory, set_torch_threads
from gagavatar.tracking.framing import CROP_SCALE  # the reference crops a square of 1.65 x the head box


@dataclass
class SynthConfig:
    """What ``generate`` makes. ``splits``: fractions of identities for train, val, test."""

    identities: int = 8
    videos_per_identity: int = 2
    frames: int = 32
    size: int = 128
    seed: int = 0
    splits: tuple[float, float, float] = (0.8, 0.1, 0.1)
    frame_format: str = "png"
    fps: float = 25.0
    n_gaussians: int | None = None   # per identity; None: from the image size
    chunk: int = 16                  # frames rendered per rasterizer call
    workers: int = 1                 # processes (one torch thread each when > 1)
    hair_styles: tuple[str, ...] = HAIR_STYLES  # styles to draw from
    accessories: bool = True         # glasses, beards, shirts

    MIN_SIZE = 32  # smaller frames hold no face worth training on

    def __post_init__(self):
        """Refuse settings that would make an empty or broken dataset, one line each."""
        for name, option in (("identities", "--identities"), ("videos_per_identity", "--videos-per-identity"),
                             ("frames", "--frames"), ("chunk", "chunk"), ("workers", "--workers")):
            if getattr(self, name) < 1:
                raise ValueError(f"{option} must be at least 1, got {getattr(self, name)}")
        if self.size < self.MIN_SIZE:
            raise ValueError(f"--size must be at least {self.MIN_SIZE} pixels, got {self.size}")
        if not (self.fps > 0 and math.isfinite(self.fps)):
            raise ValueError(f"--fps must be a positive number, got {self.fps}")
        if self.n_gaussians is not None and self.n_gaussians < 1:
            raise ValueError(f"--gaussians must be at least 1, got {self.n_gaussians}")
        if self.frame_format not in FRAME_FORMATS:
            raise ValueError(f"--frame-format must be one of {', '.join(FRAME_FORMATS)}, got {self.frame_format!r}")
        # what one rasterizer call of ``chunk`` frames holds: the Gaussians projected per frame, and the images
        what = f"--gaussians {self.n_gaussians}" if self.n_gaussians is not None else f"--size {self.size}"
        check_memory(self.chunk * (self.gaussians() * 256 + self.size ** 2 * 64), what)

    def gaussians(self) -> int:
        if self.n_gaussians is not None:
            return self.n_gaussians
        return int(np.clip(14000 * (self.size / 128) ** 1.5, 8000, 150000))


def assign_splits(n_identities: int, fractions, seed: int) -> list[str]:
    """A split per identity: shuffled with the seed, sizes from the fractions.

    Every split with a positive fraction gets at least one identity when there
    are enough identities (train keeps at least one).
    """
    f = np.asarray(fractions, float)
    if f.shape != (3,) or (f < 0).any() or f.sum() <= 0:
        raise ValueError(f"splits must be three non-negative fractions (train, val, test), got {fractions}")
    f = f / f.sum()
    counts = np.floor(f * n_identities).astype(int)
    for k in (1, 2):  # held-out splits asked for get one identity if any can be spared
        if f[k] > 0 and counts[k] == 0 and n_identities - counts.sum() > 0 and n_identities >= 3:
            counts[k] = 1
    counts[0] = n_identities - counts[1] - counts[2]
    labels = np.repeat(np.array(SPLITS), counts)
    np.random.default_rng([seed, 7919]).shuffle(labels)
    return [str(s) for s in labels]


# ---------------------------------------------------------------------------
# Random identities and motion

def sample_shape(head, rng: np.random.Generator, sigma: float = 1.0) -> torch.Tensor:
    """Shape coefficients [n_shape]: N(0, sigma) on the columns the model has."""
    shape = np.zeros(head.n_shape, np.float32)
    n = head.shape_columns
    shape[:n] = rng.normal(0, sigma, n) * np.linspace(1.0, 0.5, n)
    return torch.from_numpy(shape)


def smooth_noise(rng: np.random.Generator, n: int, fps: float, low: float, high: float,
                 dims: int = 1) -> np.ndarray:
    """[n, dims] smooth random signals with unit standard deviation (sums of sinusoids, low..high Hz)."""
    t = np.arange(n)[:, None, None] / fps
    k = 5
    freq = rng.uniform(low, high, (1, dims, k))
    phase = rng.uniform(0, 2 * np.pi, (1, dims, k))
    amp = rng.uniform(0.5, 1.0, (1, dims, k))
    x = (amp * np.sin(2 * np.pi * freq * t + phase)).sum(-1)
    return (x / np.sqrt((amp ** 2).sum(-1) / 2)).astype(np.float32)


@dataclass
class Motion:
    """Per-frame parameters of one video (angles in radians)."""

    expression: np.ndarray   # [F,E]
    jaw_pose: np.ndarray     # [F,3]
    eye_pose: np.ndarray     # [F,6]
    head_rotation: np.ndarray  # [F,3] yaw, pitch, roll of the head (applied to the camera)
    shift: np.ndarray        # [F,3] small head translation jitter, in units of the head box


def sample_motion(head, rng: np.random.Generator, n_frames: int, fps: float) -> Motion:
    """A talking, looking-around, head-turning clip."""
    F = n_frames
    expression = sample_expressions(head, rng, F, fps)
    # talking: a fast open/close of the jaw under a slow on/off envelope, sometimes a wide open mouth
    talk = np.clip(smooth_noise(rng, F, fps, 0.05, 0.3)[:, 0] + rng.uniform(-0.2, 1.0), 0, 1)
    syllables = np.clip(smooth_noise(rng, F, fps, 1.5, 4.0)[:, 0], 0, None)
    wide = rng.uniform(0.0, 0.25) * np.clip(smooth_noise(rng, F, fps, 0.1, 0.4)[:, 0] - 0.5, 0, None)
    jaw = np.zeros((F, 3), np.float32)
    jaw[:, 0] = 0.12 * talk * syllables + wide
    jaw[:, 1] = 0.02 * smooth_noise(rng, F, fps, 0.2, 1.0)[:, 0]
    # gaze: fixations with quick saccades between them, both eyes together
    gaze = np.zeros((F, 2), np.float32)
    i = 0
    target = rng.uniform([-0.25, -0.35], [0.25, 0.35])
    while i < F:
        hold = int(rng.uniform(0.3, 1.5) * fps) + 1
        gaze[i:i + hold] = target
        target = np.clip(0.5 * target + rng.uniform([-0.25, -0.35], [0.25, 0.35]), [-0.3, -0.45], [0.3, 0.45])
        i += hold
    gaze = np.stack([np.convolve(np.pad(g, 2, mode="edge"), np.ones(3) / 3, "same")[2:-2] for g in gaze.T], 1)
    eye = np.zeros((F, 6), np.float32)
    eye[:, 0] = eye[:, 3] = gaze[:, 0]  # pitch (about x)
    eye[:, 1] = eye[:, 4] = gaze[:, 1]  # yaw (about y)
    # head pose: a wandering pose, or (one video in three) a deliberate left-right turn
    deg = math.pi / 180
    if rng.random() < 0.35:
        amp = rng.uniform(25, 45)
        period = rng.uniform(1.0, 3.0) * max(F, 2) / fps
        yaw = amp * np.sin(2 * np.pi * np.arange(F) / fps / period + rng.uniform(0, 2 * np.pi))
    else:
        yaw = rng.uniform(-25, 25) + rng.uniform(5, 22) * smooth_noise(rng, F, fps, 0.05, 0.5)[:, 0]
    pitch = rng.uniform(-10, 10) + rng.uniform(2, 8) * smooth_noise(rng, F, fps, 0.05, 0.6)[:, 0]
    roll = rng.uniform(-6, 6) + rng.uniform(1, 4) * smooth_noise(rng, F, fps, 0.05, 0.5)[:, 0]
    rotation = np.stack([np.clip(yaw, -50, 50), np.clip(pitch, -20, 20), np.clip(roll, -12, 12)], 1) * deg
    shift = 0.02 * smooth_noise(rng, F, fps, 0.05, 0.4, 3)
    return Motion(expression, jaw, eye.astype(np.float32), rotation.astype(np.float32), shift.astype(np.float32))


def sample_expressions(head, rng: np.random.Generator, n_frames: int, fps: float) -> np.ndarray:
    """Expression coefficients [F, n_expression] of a clip.

    For the bundled synthetic head, whose first columns are named (smile, blink, ...;
    1 = a full expression), each gets its own kind of motion: eyes blink every few
    seconds, smiles come and go, the rest flickers a little. Other heads (FLAME) get
    smooth random coefficients, larger on the first columns.
    """
    F = n_frames
    expression = np.zeros((F, head.n_expression), np.float32)
    used = head.expression_columns
    if not used:
        return expression
    names = _expression_names(head)[:used]
    if not names:
        sigma = np.where(np.arange(used) < 10, 0.8, 0.3).astype(np.float32)
        base = rng.normal(0, 0.5, used) * sigma
        amp = rng.uniform(0.3, 1.0, used) * sigma
        expression[:, :used] = base + amp * smooth_noise(rng, F, fps, 0.1, 1.2, used)
        return expression
    # unnamed columns: small random fields
    expression[:, :used] = 0.15 * rng.uniform(0.3, 1.0, used) * smooth_noise(rng, F, fps, 0.1, 1.0, used)
    for k, name in enumerate(names):
        if name.startswith("blink"):
            continue
        level = rng.uniform(0.0, 0.5) if name.startswith("smile") or name == "brow_raise" else rng.uniform(0.0, 0.2)
        expression[:, k] = np.clip(level * (0.6 + 0.8 * smooth_noise(rng, F, fps, 0.05, 0.6)[:, 0]), -0.3, 1.0)
    # blinks: both eyes, about 150 ms, every 2-6 s
    blink = np.zeros(F, np.float32)
    t = rng.uniform(0, 3) * fps
    while t < F:
        c, w = t, 0.08 * fps
        blink = np.maximum(blink, np.exp(-0.5 * ((np.arange(F) - c) / w) ** 2))
        t += rng.uniform(2, 6) * fps
    squint = rng.uniform(0, 0.15)
    for k, name in enumerate(names):
        if name.startswith("blink"):
            expression[:, k] = np.clip(squint + blink, 0, 1)
    return expression


def _expression_names(head) -> tuple[str, ...]:
    """Names of the first expression columns when ``head`` is the synthetic head, else ()."""
    if not str(getattr(head, "version", "")).startswith("synthetic"):
        return ()
    return tuple(EXPRESSIONS)


def _rotation(yaw: torch.Tensor, pitch: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """Head rotations [F,3,3] = Rz(roll) Ry(yaw) Rx(pitch) in head-model axes (y up, z forward)."""
    return axis_rotation("z", roll) @ axis_rotation("y", yaw) @ axis_rotation("x", pitch)


def head_box(gh: GaussianHead, vertices: torch.Tensor, normals: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Min and max corners [3] of the head Gaussians (not neck or shirt) at ``vertices`` [1,V,3]."""
    centres, _ = gh.centres(vertices, normals)
    head = centres[0, gh.in_head_box]
    return head.min(0).values.numpy(), head.max(0).values.numpy()


def cameras_for(motion: Motion, box_min: np.ndarray, box_max: np.ndarray, size: int, scale: float,
                rng: np.random.Generator, focal: float = REFERENCE_FOCAL) -> Camera:
    """Per-frame cameras that frame the head box like the reference's 1.65x crop.

    The head box (model units, frontal) is scaled to world units; a frontal camera at
    distance focal * sqrt(w h) * 1.65 / 2 looks at its centre; the head's rotation
    (yaw, pitch, roll) about that centre is folded into the camera.
    """
    lo, hi = box_min * scale, box_max * scale
    w, h = hi[0] - lo[0], hi[1] - lo[1]
    side = math.sqrt(w * h)
    centre = torch.tensor([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, (lo[2] + hi[2]) / 2], dtype=torch.float32)
    centre = centre + torch.from_numpy(rng.uniform(-0.03, 0.03, 3).astype(np.float32)) * side
    distance = focal * side * CROP_SCALE / 2 * rng.uniform(0.94, 1.06)
    F = len(motion.head_rotation)
    front = look_at((centre + torch.tensor([0.0, 0.0, distance]))[None], centre[None])  # [1,4,4]
    rot = torch.from_numpy(motion.head_rotation)
    R = _rotation(rot[:, 0], rot[:, 1], rot[:, 2])
    pivot = centre + torch.from_numpy(motion.shift) * side  # [F,3]
    # world -> rotated-head world: x' = R (x - c) + c, then the frontal camera
    M = torch.eye(4).repeat(F, 1, 1)
    M[:, :3, :3] = R
    M[:, :3, 3] = pivot - (R @ centre[:, None])[..., 0]
    view = front @ M
    return Camera(view, intrinsics(focal, size, size, F), size, size)


# ---------------------------------------------------------------------------
# Lighting and backgrounds

@dataclass
class Lighting:
    direction_cam: np.ndarray  # [3] towards the light, OpenCV camera axes (fixed in the room)
    colour: np.ndarray         # [3]
    ambient: np.ndarray        # [3]


def sample_lighting(rng: np.random.Generator) -> Lighting:
    d = np.array([rng.uniform(-1.3, 1.3), -rng.uniform(-0.3, 1.0), -1.0])  # camera y is down: -y is up
    warm = rng.uniform(-0.12, 0.12)
    tint = np.array([1 + warm, 1.0, 1 - warm])
    key = rng.uniform(0.45, 0.85)
    amb = rng.uniform(0.3, 0.55)
    key, amb = (key, amb) if key + amb <= 1.15 else (key * 1.15 / (key + amb), amb * 1.15 / (key + amb))  # no blown-out skin
    return Lighting((d / np.linalg.norm(d)).astype(np.float32), (key * tint).astype(np.float32),
                    (amb * np.array([1.0, 1.0, 1.0]) * rng.uniform(0.95, 1.05, 3)).astype(np.float32))


def make_background(rng: np.random.Generator, size: int) -> torch.Tensor:
    """A [3,size,size] background: solid, linear gradient or smooth noise."""
    kind = rng.choice(["solid", "gradient", "noise"], p=[0.3, 0.35, 0.35])
    c0 = rng.uniform(0, 1, 3).astype(np.float32)
    c1 = rng.uniform(0, 1, 3).astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    if kind == "solid":
        t = np.zeros((size, size), np.float32)
    elif kind == "gradient":
        a = rng.uniform(0, 2 * np.pi)
        t = np.cos(a) * xx + np.sin(a) * yy
        t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
    else:
        cells = int(rng.integers(2, 7))
        grid = torch.from_numpy(rng.random((1, 1, cells, cells)).astype(np.float32))
        t = torch.nn.functional.interpolate(grid, size=(size, size), mode="bicubic", align_corners=True)[0, 0]
        t = ((t - t.min()) / max(float(t.max() - t.min()), 1e-6)).numpy()
    img = (1 - t)[None] * c0[:, None, None] + t[None] * c1[:, None, None]
    img = img + rng.normal(0, 0.01, img.shape).astype(np.float32)  # sensor grain
    return torch.from_numpy(np.clip(img, 0, 1).astype(np.float32))


# ---------------------------------------------------------------------------
# Rendering

def render_frames(head, gh: GaussianHead, shape: torch.Tensor, motion: Motion, camera: Camera,
                  lighting: Lighting, background: torch.Tensor, scale: float = WORLD_SCALE,
                  chunk: int = 16) -> dict:
    """Render every frame of a clip.

    Returns frames uint8 [F,H,W,3], mattes uint8 [F,H,W], landmarks [F,L,2] (pixels),
    bbox [F,4] (normalised xyxy head box).
    """
    from gagavatar.render.rasterize import rasterize

    F, size = len(motion.expression), camera.width
    frames = np.empty((F, size, size, 3), np.uint8)
    mattes = np.empty((F, size, size), np.uint8)
    landmarks, boxes = [], []
    quats = gh.quats[None]
    opac = gh.opacities[None]
    with torch.no_grad():
        for a in range(0, F, chunk):
            b = min(a + chunk, F)
            B = b - a
            vertices = head(shape[None], torch.from_numpy(motion.expression[a:b]),
                            jaw_pose=torch.from_numpy(motion.jaw_pose[a:b]),
                            eye_pose=torch.from_numpy(motion.eye_pose[a:b]))
            normals = vertex_normals(vertices, head.faces)
            centres, gnormals = gh.centres(vertices, normals)
            cam = camera[a:b]
            R = cam.viewmat[:, :3, :3]
            light = (R.transpose(1, 2) @ torch.from_numpy(lighting.direction_cam)[None, :, None])[..., 0]
            colours = shade(gh, gnormals, light, torch.from_numpy(lighting.colour).expand(B, 3),
                            torch.from_numpy(lighting.ambient).expand(B, 3))
            means = centres * scale
            opacities = opac * gh.facing(means, gnormals, cam.center)  # back faces: skipped
            scales = gh.scales_at(vertices, head.faces) * scale
            out = rasterize(means, quats.expand(B, -1, -1), scales, opacities,
                            colours, cam.viewmat, cam.K, size, size)
            alpha = out.alpha.clamp(0, 1)
            image = out.image + (1 - alpha) * background[None]
            frames[a:b] = (image.clamp(0, 1) * 255 + 0.5).byte().permute(0, 2, 3, 1).numpy()
            mattes[a:b] = (alpha[:, 0] * 255 + 0.5).byte().numpy()
            landmarks.append(cam.project(head.landmarks(vertices) * scale))
            uv = cam.project(means[:, gh.in_head_box])
            box = torch.cat([uv.min(1).values, uv.max(1).values], -1) / size
            boxes.append(box.clamp(0, 1))
    return {"frames": frames, "mattes": mattes, "landmarks": torch.cat(landmarks).numpy(),
            "bbox": torch.cat(boxes).numpy()}


def video_params(head, shape: torch.Tensor, motion: Motion, camera: Camera, rendered: dict,
                 scale: float = WORLD_SCALE) -> dict:
    """The params.npz arrays of a synthetic clip (full-frame crop, global pose zero)."""
    F, size = len(motion.expression), camera.width
    p = default_params(F, size, size, head.n_shape, head.n_expression, rendered["landmarks"].shape[1])
    p.update({
        "shape": shape.numpy(), "expression": motion.expression, "jaw_pose": motion.jaw_pose,
        "eye_pose": motion.eye_pose, "transform": viewmat_to_reference(camera.viewmat).numpy(),
        "focal": camera.focal.numpy(), "K": camera.K.numpy(), "bbox": rendered["bbox"],
        "landmarks": rendered["landmarks"], "scale": np.float32(scale),
        "landmark_set": np.str_(head.landmark_format or "custom"),
        "landmark_ids": head.landmark_indices.numpy(),
    })
    return p


# ---------------------------------------------------------------------------
# The whole dataset

def render_identity(out: str | Path, config: SynthConfig, i: int, split: str, head=None) -> int:
    """Render and write every video of identity ``i``; returns the number of frames written."""
    if head is None:
        from gagavatar.head import HeadModel
        head = HeadModel.default()
    rng = np.random.default_rng([config.seed, i])
    identity = f"id{i:05d}"
    shape = sample_shape(head, rng)
    look = Appearance.sample(rng, config.hair_styles, config.accessories)
    gh = build_gaussian_head(head, shape, look, rng, config.gaussians())
    with torch.no_grad():
        neutral = head(shape[None])
        box = head_box(gh, neutral, vertex_normals(neutral, head.faces))
    for v in range(config.videos_per_identity):
        vrng = np.random.default_rng([config.seed, i, v])
        motion = sample_motion(head, vrng, config.frames, config.fps)
        camera = cameras_for(motion, *box, config.size, WORLD_SCALE, vrng)
        lighting = sample_lighting(vrng)
        background = make_background(vrng, config.size)
        rendered = render_frames(head, gh, shape, motion, camera, lighting, background, chunk=config.chunk)
        writer = VideoWriter(out, f"{identity}_v{v:02d}", identity, split, config.size, config.size,
                             BUNDLED_HEAD_ID, config.frame_format, config.fps, source="synthetic")
        for frame, matte in zip(rendered["frames"], rendered["mattes"]):
            writer.add(frame, matte)
        writer.close(video_params(head, shape, motion, camera, rendered))
    return config.videos_per_identity * config.frames


_WORKER_HEAD = None


def _worker_init(head) -> None:
    global _WORKER_HEAD
    set_torch_threads(1)  # one process per core beats threads for small frames
    _WORKER_HEAD = head


def _worker_render(args) -> int:
    return render_identity(*args, head=_WORKER_HEAD)


def generate(out: str | Path, config: SynthConfig, head=None, progress: bool = True) -> Dataset:
    """Write a synthetic dataset to ``out`` (index, videos, contact sheets); returns it.

    Identities are rendered by ``config.workers`` processes; the result does not
    depend on the number of workers. The dataset is built beside ``out`` and replaces it whole
    (never frames of two runs mixed); an ``out`` that holds anything but a dataset is refused.
    """
    out = Path(out)
    check_output_folder(out)
    if out.is_dir() and any(out.iterdir()) and not (out / INDEX_FILE).is_file():
        raise OutputError(f"{out} holds files that are not a dataset (no {INDEX_FILE}); synth replaces its --out "
                          f"whole: choose a new or empty folder")
    with atomic_folder(out) as tmp:
        _generate(tmp, config, head, progress)
    return Dataset(out)


def _generate(out: Path, config: SynthConfig, head=None, progress: bool = True) -> None:
    """``generate``'s work, into the folder ``out``."""
    from tqdm import tqdm

    if head is None:
        from gagavatar.head import HeadModel
        head = HeadModel.default()
    splits = assign_splits(config.identities, config.splits, config.seed)
    total = config.identities * config.videos_per_identity * config.frames
    bar = tqdm(total=total, unit="frame", disable=not progress, desc="synth")
    t0 = time.perf_counter()
    jobs = [(str(out), config, i, splits[i]) for i in range(config.identities)]
    if config.workers > 1 and config.identities > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(min(config.workers, config.identities), _worker_init, (head,)) as pool:
            for n in pool.imap_unordered(_worker_render, jobs):
                bar.update(n)
    else:
        for job in jobs:
            bar.update(render_identity(*job, head=head))
    bar.close()
    update_index(out)
    dataset = Dataset(out)
    for split in SPLITS:
        if dataset.split(split):
            contact_sheet(dataset, split, out / f"contact_{split}.png")
    if progress:
        dt = time.perf_counter() - t0
        print(f"{total} frames in {dt:.1f} s ({total / dt:.1f} frames/s)")


def contact_sheet(dataset: Dataset, split: str, path: str | Path, rows: int = 8, cols: int = 8) -> Path:
    """A grid PNG: one row per video (one video per identity first), frames spread over the clip."""
    videos = dataset.split(split)
    seen, order = set(), []
    for v in videos:  # one video of each identity, then the rest
        if v.identity not in seen:
            seen.add(v.identity)
            order.append(v)
    order += [v for v in videos if v not in order]
    order = order[:rows]
    return write_image_grid([[v.frame(int(f)) for f in np.linspace(0, v.n_frames - 1, cols).round().astype(int)]
                             for v in order], path)
