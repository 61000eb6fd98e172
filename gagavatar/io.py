"""Reading images and videos, writing videos: the project's one input/output layer.

Every reader returns RGB uint8 arrays [H, W, 3] whatever the file holds
(grayscale, palette, 16-bit, alpha, EXIF-rotated); every failure is an
``InputError`` that names the file and says what to do.
"""
from __future__ import annotations

import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")
VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")


class InputError(ValueError):
    """An input file or folder cannot be used; the message names it and the fix."""


def to_rgb_uint8(image) -> np.ndarray:
    """Any image array -> RGB uint8 [H, W, 3].

    Accepts [H, W] (gray), [H, W, 1], [H, W, 3] or [H, W, 4] (alpha dropped), as
    uint8, uint16 (scaled down) or float in [0, 1].
    """
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise InputError(f"expected an image array [H,W], [H,W,3] or [H,W,4], got shape {list(a.shape)}")
    a = a[..., :3]
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if a.dtype == np.uint16:
        return (a >> 8).astype(np.uint8)
    if np.issubdtype(a.dtype, np.floating):
        return (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if np.issubdtype(a.dtype, np.integer) or a.dtype == bool:
        return np.clip(a, 0, 255).astype(np.uint8)
    raise InputError(f"unsupported image dtype {a.dtype}")


def tensor_to_image(image) -> np.ndarray:
    """A float image tensor [3, H, W] in [0, 1] -> RGB uint8 [H, W, 3] (rounded, clamped)."""
    return (image.detach().clamp(0, 1) * 255 + 0.5).byte().permute(1, 2, 0).cpu().numpy()


_UMASK = os.umask(0)  # read once, at import: setting it later would race other threads' file creation
os.umask(_UMASK)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path beside ``path`` to write to; on success it replaces ``path`` in one
    rename (so a reader, or a run killed mid-write, sees the old file or the new one, never half
    of one), with the permissions a new file would get. On error the temporary file is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}{path.suffix}")  # keeps the suffix (np.savez adds one)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # some writers (safetensors) create 0600 files
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_tensor_file(path: str | Path) -> dict:
    """Every tensor of a .safetensors file or a torch zip (``torch.load(weights_only=True)``: a
    pickle that tries to run code is refused), as {name: tensor}; a torch file holding
    ``{'model': state_dict, ...}`` (the released GAGAvatar.pt) gives its state dict."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - re-raised with the reason
        raise InputError(
            f"{path} is not a plain tensor checkpoint: torch.load(weights_only=True) refused it ({err}). "
            f"Only files holding tensors and plain containers are loaded; nothing in them is executed.") from err
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(f"{path} holds no state dict of tensors (expected {{'model': {{name: tensor}}}})")
    return obj


def write_image_grid(rows: list[list[np.ndarray | None]], path: str | Path, row_labels: list[str] | None = None,
                     column_labels: list[str] | None = None, gap: int = 2,
                     background: tuple[int, int, int] = (255, 255, 255)) -> Path:
    """Rows of equally sized RGB uint8 images [H, W, 3] into one PNG; ``None`` leaves a cell empty.

    Row labels go in a margin on the left, column labels in a strip on top.
    """
    from PIL import ImageDraw

    h, w = next(image for row in rows for image in row if image is not None).shape[:2]
    left = 90 if row_labels else 0
    top = 14 if column_labels else 0
    n_cols = max(len(row) for row in rows)
    sheet = Image.new("RGB", (left + gap + n_cols * (w + gap), top + gap + len(rows) * (h + gap)), background)
    draw = ImageDraw.Draw(sheet)
    text = (0, 0, 0) if sum(background) > 382 else (230, 230, 230)
    for c, label in enumerate(column_labels or []):
        draw.text((left + gap + c * (w + gap) + 2, 1), label[: max(4, w // 6)], fill=text)
    for r, row in enumerate(rows):
        y = top + gap + r * (h + gap)
        for c, image in enumerate(row):
            if image is not None:
                sheet.paste(Image.fromarray(image), (left + gap + c * (w + gap), y))
        if row_labels:
            draw.text((6, y + h // 2 - 6), row_labels[r], fill=text)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def resize_image(image, size):
    """Bilinear, antialiased resize (align_corners=False, as torchvision's ``resize``) of a
    float tensor [..., C, H, W] to ``size`` (an int for a square, or (H, W)); unchanged when
    it already has that size. The one resize of the data loader, the network's input and eval."""
    import torch.nn.functional as F

    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(image.shape[-2:]) == size:
        return image
    out = F.interpolate(image.reshape(-1, *image.shape[-3:]), size=size, mode="bilinear", align_corners=False,
                        antialias=True)
    return out.reshape(*image.shape[:-2], *size)


def resize_frame(image: np.ndarray, size) -> np.ndarray:
    """``resize_image`` for an RGB uint8 image [H, W, 3] -> [S, S, 3] uint8 (rounded)."""
    import torch

    t = resize_image(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float(), size)
    return t.round().clamp(0, 255).byte().permute(1, 2, 0).numpy()


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as RGB uint8 [H, W, 3] (EXIF orientation applied)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: image file not found")
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                a = np.asarray(im, dtype=np.float64)
                return to_rgb_uint8(a / max(a.max(), 1.0))
            return np.asarray(im.convert("RGB")).copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InputError(f"{path}: cannot read this image ({type(e).__name__}: {e}); "
                         f"convert it to PNG or JPEG") from e


def natural_key(name: str) -> list:
    """Sort key that orders 'frame2' before 'frame10'."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def list_images(folder: str | Path) -> list[Path]:
    """The image files of a folder (not recursive), in natural order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: folder not found")
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    if not files:
        raise InputError(f"{folder}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
    return sorted(files, key=lambda p: natural_key(p.name))


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def is_image(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


@dataclass
class VideoFileInfo:
    """What a video file says about itself. ``n_frames`` may be an estimate (from duration)."""

    fps: float
    width: int
    height: int
    n_frames: int


def video_info(path: str | Path) -> VideoFileInfo:
    """Frame rate, size and (approximate) frame count of a video file."""
    reader = _open_video(path)
    try:
        meta = reader.get_meta_data()
    finally:
        reader.close()
    fps = float(meta.get("fps") or 25.0)
    width, height = meta.get("size", (0, 0))
    n = meta.get("nframes")
    if not n or n == float("inf"):
        n = int(round(float(meta.get("duration") or 0.0) * fps))
    return VideoFileInfo(fps, int(width), int(height), int(n))


def _open_video(path: str | Path):
    import imageio.v2 as iio

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: video file not found")
    try:
        return iio.get_reader(path, "ffmpeg")
    except (OSError, RuntimeError, ValueError, IndexError) as e:
        raise InputError(f"{path}: cannot open this video ({type(e).__name__}: {e}); re-encode it, "
                         f"e.g. ffmpeg -i IN -c:v libx264 -pix_fmt yuv420p OUT.mp4") from e


def iter_video(path: str | Path) -> Iterator[np.ndarray]:
    """Yield the frames of a video file as RGB uint8 [H, W, 3]."""
    reader = _open_video(path)
    n = 0
    try:
        for frame in reader:
            n += 1
            yield to_rgb_uint8(frame)
    except (OSError, RuntimeError, ValueError) as e:
        raise InputError(f"{path}: cannot decode frame {n} ({type(e).__name__}: {e}); re-encode the video, "
                         f"e.g. ffmpeg -i IN -c:v libx264 -pix_fmt yuv420p OUT.mp4") from e
    finally:
        reader.close()
    if n == 0:
        raise InputError(f"{path}: the video has no frames that can be decoded")


def iter_frames(source: str | Path) -> Iterator[np.ndarray]:
    """Frames of an image file, a folder of images, or a video file (RGB uint8 [H, W, 3])."""
    source = Path(source)
    if source.is_dir():
        for p in list_images(source):
            yield read_image(p)
    elif is_video(source):
        yield from iter_video(source)
    elif source.is_file():
        yield read_image(source)
    else:
        raise InputError(f"{source}: no such file or folder")


def frame_names(source: str | Path) -> list[str] | None:
    """Names of a folder's images or a single image's stem; None for a video (frames are numbered)."""
    source = Path(source)
    if source.is_dir():
        return [p.stem for p in list_images(source)]
    if source.is_file() and not is_video(source):
        return [source.stem]
    return None


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float = 25.0, quality: int = 8) -> Path:
    """Write frames (RGB uint8 [H, W, 3]) as an H.264 yuv420p mp4 that every player opens.

    Odd sizes are padded by one black pixel (yuv420p needs even sizes). ``quality``
    is imageio's 0-10 scale. Returns the path.
    """
    import imageio.v2 as iio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = iio.get_writer(path, fps=fps, codec="libx264", pixelformat="yuv420p", quality=quality,
                            macro_block_size=1, ffmpeg_log_level="error")
    n = 0
    try:
        for frame in frames:
            f = to_rgb_uint8(frame)
            H, W = f.shape[:2]
            if H % 2 or W % 2:
                f = np.pad(f, ((0, H % 2), (0, W % 2), (0, 0)))
            writer.append_data(f)
            n += 1
    finally:
        writer.close()
    if n == 0:
        path.unlink(missing_ok=True)
        raise ValueError(f"{path}: no frames to write")
    return path
