"""Reading images, videos and tensor files, writing files and videos: the project's one
input/output layer.

Every image reader returns RGB uint8 arrays [H, W, 3] whatever the file holds
(grayscale, palette, 16-bit, alpha, EXIF-rotated); every failure is an
``InputError`` that names the file and says what to do (``TensorFileError`` for
checkpoints: truncated, not a checkpoint, or a pickle that would run code).

Outputs are written through ``atomic_path`` (a temporary file beside the target,
renamed over it when complete: a crash, Ctrl-C or a full disk leaves the previous
file as it was); what cannot be written is an ``OutputError``, one line naming the
folder or device and the fix. ``check_writable`` checks an output before long work.
"""
from __future__ import annotations

import errno
import os
import re
import subprocess
import threading
import warnings
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


class OutputError(OSError):
    """An output file or folder cannot be written; the message names it and the fix.
    ``errno`` is set (``errno.ENOSPC`` for a full disk)."""

    def __init__(self, message: str, errno_: int | None = None):
        super().__init__(message)
        self.errno = errno_


def _mount(path: Path) -> tuple[Path, str]:
    """(mount point, device) of the file system holding ``path`` (an existing folder)."""
    mount = Path(os.path.realpath(path))
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    device = str(mount)
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) > 1 and fields[1] == str(mount):
                device = fields[0]  # the last entry for a mount point is the one in use
    except OSError:
        pass
    return mount, device


def _existing_folder(path: Path) -> Path:
    folder = Path(os.path.abspath(path))
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    return folder


def no_space_error(path: str | Path) -> OutputError:
    """The one-line error for a full disk while writing ``path``: names the device and its mount."""
    folder = _existing_folder(Path(path).parent)
    mount, device = _mount(folder)
    where = f"{device} (mounted at {mount})" if device != str(mount) else str(mount)
    return OutputError(f"no space left on device {where} while writing {path}: free some space there "
                       f"or write to another folder", errno.ENOSPC)


def output_error(path: str | Path, err: OSError) -> OSError:
    """``err``, raised while writing ``path``, as one line naming the folder and the fix;
    an error that is not about the output (a missing input, say) is returned unchanged."""
    if isinstance(err, OutputError):
        return err
    path = Path(path)
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return no_space_error(path)
    folder = path.parent
    if err.filename is not None:  # e.g. a missing input read while writing: not ours to reword
        written = {Path(os.path.abspath(p)) for p in (path, temp_path(path), *path.parents)}
        if Path(os.path.abspath(err.filename)) not in written:
            return err
    blocked = Path(err.filename).parent if err.filename is not None else folder  # the folder refusing it
    if err.errno == errno.EROFS:
        return OutputError(f"cannot write to {blocked}: it is on a read-only file system; "
                           f"choose another output folder", err.errno)
    if err.errno in (errno.EACCES, errno.EPERM):
        return OutputError(f"cannot write to {blocked}: permission denied; choose another output folder "
                           f"or make it writable (chmod u+w {blocked})", err.errno)
    if err.errno == errno.EISDIR or path.is_dir():
        return OutputError(f"{path} is a folder; give a file name in it", errno.EISDIR)
    if err.errno in (errno.ENOTDIR, errno.EEXIST) and not folder.is_dir():
        return OutputError(f"cannot write {path}: {_existing_file_in(folder)} is a file, not a folder; "
                           f"choose another output path", err.errno)
    return err


@contextmanager
def output_errors(path: str | Path) -> Iterator[None]:
    """Inside: an OSError while writing ``path`` (or files beside it) becomes ``output_error``'s one line."""
    try:
        yield
    except OSError as e:
        error = output_error(path, e)
        if error is e:
            raise
        raise error from None


def _existing_file_in(folder: Path) -> Path:
    """The first component of ``folder`` that exists but is not a folder."""
    for p in reversed([folder, *folder.parents]):
        if p.exists() and not p.is_dir():
            return p
    return folder


_TEMP = re.compile(r"^\.(?P<name>.+)\.tmp(?P<pid>\d+)(\.[^.]*)?$")


def temp_path(path: str | Path) -> Path:
    """The temporary file beside ``path`` that ``atomic_path`` writes: ``.NAME.tmpPID.SUFFIX``
    (it keeps the suffix, which np.savez and ffmpeg go by)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}{path.suffix}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a live process of another user
        return True
    return True


def remove_stale_temps(folder: str | Path, name: str | None = None) -> list[Path]:
    """Delete the temporary files ``atomic_path`` left in ``folder`` when its process was
    killed (``.NAME.tmpPID*`` whose process is gone from this machine; only those of the
    file ``name`` when given). Returns them."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for p in folder.glob(".*.tmp*"):
        m = _TEMP.match(p.name)
        if m and p.is_file() and name in (None, m["name"]) and not _alive(int(m["pid"])):
            _remove(p)
            removed.append(p)
    return removed


def _remove(path: Path) -> None:
    """Delete ``path`` if it is there (on a read-only file system unlink fails even for a missing file)."""
    try:
        path.unlink()
    except OSError:
        pass


def check_writable(path: str | Path) -> Path:
    """Before long work: can the file ``path`` be written? Makes its folder, creates and
    deletes a small file there (as ``atomic_path`` will), and removes stale temporary files
    of ``path``. Raises ``OutputError`` (one line: the folder and the fix). Returns ``path``."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path} is a folder; give a file name in it", errno.EISDIR)
    probe = temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path.parent, path.name)
        with open(probe, "wb") as f:
            f.write(b"\0" * 4096)  # a full disk refuses this; an empty file might still fit
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise output_error(path, e) from None
    finally:
        _remove(probe)
    return path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path beside ``path`` to write to; on success it replaces ``path`` in one
    rename (so a reader, or a run killed mid-write, sees the old file or the new one, never half
    of one), with the permissions a new file would get. On error (Ctrl-C included) the temporary
    file is removed and ``path`` is left as it was; a full disk, a read-only or unwritable folder
    raise ``OutputError`` (one line)."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        with output_errors(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            yield tmp
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~_UMASK)  # some writers (safetensors) create 0600 files
            os.replace(tmp, path)
    finally:
        _remove(tmp)


def extract_zip(archive: str | Path | bytes, dest: str | Path, max_bytes: int = 1 << 30,
                max_files: int = 100_000) -> Path:
    """Unpack the .zip ``archive`` (a file, or its bytes) into ``dest``: every member must stay inside ``dest`` (no absolute
    path, no ``..``, no link), and at most ``max_files`` members and ``max_bytes`` unpacked bytes
    are written, counted as they are written (a zip bomb stops at the limit, whatever its headers
    claim). Returns the archive's one top folder if it has one, else ``dest``. Any violation is an
    ``InputError`` and what was unpacked is removed."""
    import shutil
    import stat
    import zipfile

    import io

    name = "the archive" if isinstance(archive, bytes) else Path(archive).name
    source = io.BytesIO(archive) if isinstance(archive, bytes) else Path(archive)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    written = 0
    try:
        with zipfile.ZipFile(source) as z:
            members = z.infolist()
            if len(members) > max_files:
                raise InputError(f"{name}: the archive holds {len(members):,} files, more than the "
                                 f"{max_files:,} allowed")
            for member in members:
                target = (root / member.filename).resolve()
                if Path(member.filename).is_absolute() or not target.is_relative_to(root) or \
                        stat.S_ISLNK(member.external_attr >> 16):
                    raise InputError(f"{name}: the archive holds a path outside itself ({member.filename!r})")
                if member.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with z.open(member) as src, open(target, "wb") as out:
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        if written > max_bytes:
                            raise InputError(f"{name}: the archive unpacks to more than the "
                                             f"{max_bytes / 2**20:,.0f} MB allowed")
                        out.write(chunk)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError) as e:
        shutil.rmtree(dest, ignore_errors=True)
        raise InputError(f"{name}: not a readable zip archive ({e})") from e
    except InputError:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    entries = [p for p in dest.iterdir() if not p.name.startswith(("__MACOSX", "."))]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else dest


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
        raise InputError(f"{path}: the image is too large ({size}; at most "
                         f"{2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} are read); resize it, e.g. to 2048 pixels "
                         f"on its longer side") from None
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


def _header_info(meta: dict) -> VideoFileInfo:
    fps = float(meta.get("fps") or 25.0)
    width, height = meta.get("size", (0, 0))
    n = meta.get("nframes")
    if not n or n == float("inf"):
        n = int(round(float(meta.get("duration") or 0.0) * fps))
    return VideoFileInfo(fps, int(width), int(height), int(n))


def video_info(path: str | Path) -> VideoFileInfo:
    """Frame rate, size and (approximate) frame count of a video file."""
    reader = _open_video(path)
    try:
        return _header_info(reader.get_meta_data())
    finally:
        reader.close()


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


class VideoFrames:
    """The frames of a video file, an iterator of RGB uint8 [H, W, 3] (``iter_video``).

    A file whose end is damaged (cut short while copying or recording) decodes fewer
    frames than its header announces; the frames that decode are used, and after the
    last one ``damaged`` / ``warning()`` say so ("only N of M frames could be decoded").
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._reader = _open_video(self.path)
        self.n_expected = _header_info(self._reader.get_meta_data()).n_frames  # from the header's duration
        self.n_decoded = 0
        self.finished = False
        self._frames = self._decode()

    def _decode(self) -> Iterator[np.ndarray]:
        try:
            for frame in self._reader:
                self.n_decoded += 1
                yield to_rgb_uint8(frame)
        except (OSError, RuntimeError, ValueError) as e:
            raise InputError(f"{self.path}: cannot decode frame {self.n_decoded} ({type(e).__name__}: {e}); "
                             f"re-encode the video, e.g. ffmpeg -i IN -c:v libx264 -pix_fmt yuv420p OUT.mp4") from e
        finally:
            self._reader.close()
        self.finished = True
        if self.n_decoded == 0:
            raise InputError(f"{self.path}: the video has no frames that can be decoded")

    def __iter__(self) -> VideoFrames:
        return self

    def __next__(self) -> np.ndarray:
        return next(self._frames)

    def close(self) -> None:
        self._frames.close()
        self._reader.close()

    @property
    def damaged(self) -> bool:
        """All frames were read, and clearly fewer than the header announces (the estimate
        from the duration is off by a frame or two in healthy files)."""
        return self.finished and self.n_decoded < self.n_expected - max(2, self.n_expected // 100)

    def warning(self) -> str | None:
        """One line when the file is damaged, else None."""
        if not self.damaged:
            return None
        return f"only {self.n_decoded} of {self.n_expected} frames could be decoded; the rest of {self.path} is damaged"


def iter_video(path: str | Path) -> VideoFrames:
    """The frames of a video file as RGB uint8 [H, W, 3] (an iterator; see ``VideoFrames``
    for a file whose end is damaged)."""
    return VideoFrames(path)


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


# ---------------------------------------------------------------------------
# tensor files: checkpoints and weights


class TensorFileError(InputError):
    """A checkpoint or weights file that exists but cannot be used (truncated, not a
    checkpoint, or a pickle that would run code); the message names it and what to do.
    ``reason`` is the middle part alone ("is truncated or corrupt (812 bytes)")."""

    def __init__(self, path: Path, reason: str = "", fix: str = ""):
        super().__init__(f"{path} {reason}{fix}")
        self.path, self.reason = path, reason


def _check_file(path: Path) -> int:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise TensorFileError(path, "is a folder", "; give the checkpoint file itself")
    return path.stat().st_size


def _truncated(path: Path, size: int) -> TensorFileError:
    return TensorFileError(path, f"is truncated or corrupt ({size} bytes)", ": download it again")


def _not_a_checkpoint(path: Path, what: str = "neither safetensors nor a PyTorch file") -> TensorFileError:
    return TensorFileError(path, f"is not a checkpoint ({what})")


def _holds_code(path: Path, name: str | None) -> TensorFileError:
    what = f"the pickled object {name}" if name else "a pickled object other than tensors"
    return TensorFileError(path, f"holds code ({what}) and was not run", "; only files of tensors are loaded")


def _is_safetensors(head: bytes) -> bool:
    """A safetensors file starts with its JSON header's length (u64, little-endian) and '{'."""
    return len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < (1 << 30)


def _pickle_globals(data: bytes) -> list[str]:
    """The Python objects a pickle would import (read from its opcodes; nothing is run)."""
    import pickletools
    from io import BytesIO

    found, strings = [], []
    try:
        for op, arg, _ in pickletools.genops(BytesIO(data)):
            if op.name in ("GLOBAL", "INST"):
                found.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str):
                strings.append(arg)
    except Exception:  # noqa: BLE001 - a damaged pickle: what was read so far
        pass
    return found


def _safetensors_call(path: Path, size: int, read):
    from safetensors import SafetensorError

    try:
        return read()
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        if isinstance(e, OSError) and e.errno not in (None, errno.EINVAL, errno.EIO):
            raise  # permission denied and the like: not the file's content
        raise _truncated(path, size) from None


def read_safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a safetensors file (its header only), with ``read_tensor_file``'s errors."""
    from safetensors import safe_open

    path = Path(path)
    size = _check_file(path)
    with open(path, "rb") as f:
        head = f.read(9)
    if not _is_safetensors(head):
        if size < 9:
            raise _truncated(path, size)
        raise _not_a_checkpoint(path, "not a safetensors file")

    def read():
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}

    return _safetensors_call(path, size, read)


def load_torch_file(path: str | Path):
    """``torch.load(path, weights_only=True)`` on the CPU, whose errors are one line: a
    missing file, "PATH is truncated or corrupt (N bytes)", "PATH is not a checkpoint",
    or "PATH holds code ... and was not run" for a pickle that asks for anything but
    tensors and plain containers (it is refused, never run)."""
    import pickle

    import torch
    from safetensors import SafetensorError  # torch.load hands .safetensors files to it

    path = Path(path)
    size = _check_file(path)
    with open(path, "rb") as f:
        head = f.read(4)
    is_zip, is_pickle = head.startswith(b"PK"), head[:1] == b"\x80"
    try:
        with warnings.catch_warnings():  # a raw pickle's protocol warning: the error below says what matters
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        refused = re.search(r"GLOBAL ([\w.]+)", str(e))
        if refused:
            raise _holds_code(path, refused[1]) from None
        if is_pickle:
            others = [g for g in _pickle_globals(path.read_bytes()) if not g.startswith(("torch.", "collections."))]
            if others:
                raise _holds_code(path, others[0]) from None
        if is_zip or is_pickle:
            raise _truncated(path, size) from None
        raise _not_a_checkpoint(path) from None
    except (EOFError, RuntimeError, OSError, ValueError, IndexError, KeyError, SafetensorError) as e:
        if isinstance(e, OSError) and e.errno not in (None, errno.EINVAL, errno.EIO):
            raise  # permission denied and the like: not the file's content
        if is_zip or is_pickle or size < 4:
            raise _truncated(path, size) from None
        raise _not_a_checkpoint(path) from None


def read_tensor_file(path: str | Path, nested: str | None = "model") -> dict:
    """All tensors {name: Tensor} of a safetensors file or a PyTorch file (``torch.save``;
    loaded with ``weights_only=True``: a pickle that asks for code is refused, never run).
    A PyTorch file holding {``nested``: {name: tensor}, ...} (the released GAGAvatar.pt)
    gives the inner dict. The format is recognised from the content, not the suffix.
    Errors are one line (``load_torch_file``'s, ``TensorFileError``)."""
    import torch

    path = Path(path)
    size = _check_file(path)
    with open(path, "rb") as f:
        head = f.read(9)
    if _is_safetensors(head):
        from safetensors.torch import load_file

        return _safetensors_call(path, size, lambda: load_file(str(path)))
    if path.suffix == ".safetensors":  # torch.load would hand it to safetensors
        raise _truncated(path, size) if size < 9 else _not_a_checkpoint(path, "not a safetensors file")
    obj = load_torch_file(path)
    if isinstance(obj, dict) and nested is not None and isinstance(obj.get(nested), dict):
        obj = obj[nested]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        kind = f"a {type(obj).__name__}" if not isinstance(obj, dict) else \
            f"a dict of {sorted({type(v).__name__ for v in obj.values()})}" if obj else "an empty dict"
        raise _not_a_checkpoint(path, f"it holds {kind}, not named tensors")
    return obj


def _ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _ffmpeg_error(stderr: str) -> str:
    """The last error ffmpeg printed, without its ``[muxer @ 0x...]`` prefixes (one line)."""
    lines = [re.sub(r"\[[^\]]*@ 0x[0-9a-f]+\]\s*", "", line).strip() for line in stderr.splitlines()]
    lines = [line for line in lines if line]
    return lines[-1] if lines else "no message"


class _Encoder:
    """ffmpeg encoding raw RGB frames from a pipe into an H.264 yuv420p mp4 at ``path``.

    Its own process group, so Ctrl-C reaches only Python (which then stops it: ffmpeg
    would otherwise finish a short but playable file); stderr is kept for the message."""

    def __init__(self, path: Path, width: int, height: int, fps: float, quality: int):
        from fractions import Fraction

        crf = int((1 - quality / 10.0) * 51)  # imageio's 0-10 quality scale, as before
        cmd = [_ffmpeg(), "-y", "-nostdin", "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
               "-s", f"{width}x{height}", "-r", str(Fraction(fps).limit_denominator()), "-i", "-", "-an",
               "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", str(crf), str(path)]
        self.process = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, start_new_session=True)
        self._stderr: list[bytes] = []
        self._reader = threading.Thread(target=lambda: self._stderr.extend(self.process.stderr), daemon=True)
        self._reader.start()

    @property
    def stderr(self) -> str:
        return b"".join(self._stderr).decode(errors="replace")

    def write(self, frame: np.ndarray) -> bool:
        """False when ffmpeg has stopped reading (it failed; ``finish`` says why)."""
        try:
            self.process.stdin.write(frame.tobytes())
            return True
        except (BrokenPipeError, OSError):
            return False

    def finish(self) -> int:
        """Close the input, wait for ffmpeg; its exit status."""
        try:
            self.process.stdin.close()
        except OSError:
            pass
        code = self.process.wait()
        self._reader.join()
        return code

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        self._reader.join()


def count_decodable_frames(path: str | Path) -> tuple[int, str]:
    """(frames that decode, ffmpeg's error text) of a video file: every frame is decoded."""
    result = subprocess.run([_ffmpeg(), "-nostdin", "-v", "error", "-i", str(path), "-map", "0:v:0", "-f", "null",
                             "-progress", "pipe:1", "-"], capture_output=True, text=True, errors="replace")
    counts = re.findall(r"^frame=(\d+)$", result.stdout, flags=re.M)
    return (int(counts[-1]) if counts and result.returncode == 0 else 0), result.stderr


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float = 25.0, quality: int = 8) -> Path:
    """Write frames (RGB uint8 [H, W, 3], all one size) as an H.264 yuv420p mp4 that every player opens.

    Atomic: the video is encoded into a temporary file beside ``path``, checked (the encoder
    succeeded and every frame decodes), then renamed over ``path``. On any error or Ctrl-C
    ``path`` keeps what it held and the temporary file is removed. A full disk or an
    unwritable folder raise ``OutputError``, one line. Odd sizes are padded by one black
    pixel (yuv420p needs even sizes). ``quality`` is imageio's 0-10 scale. Returns the path.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path} is a folder; give a file name in it, e.g. {path / 'out.mp4'}", errno.EISDIR)
    if not (fps > 0 and np.isfinite(fps)):
        raise ValueError(f"{path}: the frame rate must be a positive number, got {fps}")
    remove_stale_temps(path.parent, path.name)  # what an earlier writer, killed, left
    with atomic_path(path) as tmp:
        open(tmp, "wb").close()  # an unwritable folder fails here, in Python, with a plain error
        encoder, n, size = None, 0, None
        try:
            for frame in frames:
                f = to_rgb_uint8(frame)
                H, W = f.shape[:2]
                if encoder is None:
                    size = (H, W)
                    encoder = _Encoder(tmp, W + W % 2, H + H % 2, fps, quality)
                elif (H, W) != size:
                    raise InputError(f"{path}: frame {n} is {W}x{H}, the first frame {size[1]}x{size[0]}; "
                                     f"a video needs frames of one size")
                if H % 2 or W % 2:
                    f = np.pad(f, ((0, H % 2), (0, W % 2), (0, 0)))
                if not encoder.write(np.ascontiguousarray(f)):
                    break  # ffmpeg stopped: finish() gives its status and message
                n += 1
            if encoder is None:
                raise InputError(f"{path}: no frames to write")
            code = encoder.finish()
        except BaseException:
            if encoder is not None:
                encoder.kill()
            raise
        if code != 0 or "No space left on device" in encoder.stderr:
            if "No space left on device" in encoder.stderr:
                raise no_space_error(path)
            raise OutputError(f"could not write {path}: the video encoder (ffmpeg) failed: "
                              f"{_ffmpeg_error(encoder.stderr)}")
        decoded, errors = count_decodable_frames(tmp)
        if decoded != n:
            if "No space left on device" in errors or _free_bytes(tmp.parent) == 0:
                raise no_space_error(path)
            raise OutputError(f"could not write {path}: the encoded video has {decoded} readable frames "
                              f"of {n} ({_ffmpeg_error(errors)})")
    return path


def _free_bytes(folder: Path) -> int:
    try:
        st = os.statvfs(folder)
    except OSError:
        return -1
    return st.f_bavail * st.f_frsize
