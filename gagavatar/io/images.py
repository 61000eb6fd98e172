"""Images in and out: every reader returns RGB uint8 [H, W, 3] whatever the file holds
(grayscale, palette, 16-bit, alpha, EXIF-rotated); one resize for the loader, the network and eval."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from gagavatar.errors import InputError, LimitError
from gagavatar.io.files import atomic_path, describe_content

# the ImageNet statistics DINOv2, AlexNet and LPIPS normalise their input with
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")


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
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
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
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty (0 bytes); give the photo itself")
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                a = np.asarray(im, dtype=np.float64)
                return to_rgb_uint8(a / max(a.max(), 1.0))
            return np.asarray(im.convert("RGB")).copy()
    except Image.DecompressionBombError as e:
        pixels = re.search(r"\((\d+) pixels\)", str(e))
        size = f"{int(pixels[1]) / 1e6:.0f} megapixels" if pixels else "too many pixels"
        raise LimitError(f"{path}: the image is too large ({size}; at most "
                         f"{2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} are read); resize it, e.g. to 2048 pixels "
                         f"on its longer side") from None
    except UnidentifiedImageError as e:  # what it is instead (Pillow's own words only repeat the path)
        with open(path, "rb") as f:
            what = describe_content(f.read(4096))
        raise InputError(f"{path}: not an image this reads ({what}); "
                         f"give a PNG or JPEG") from e
    except (OSError, SyntaxError, ValueError) as e:
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


def is_image(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS
