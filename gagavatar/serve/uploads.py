"""What ``POST /avatars`` accepts, checked before anything reads it.

- a photo: its content is sniffed (a text file named .jpg is refused with a clear message),
  its decoded size is limited, and it is written under a name the server chooses;
- a .zip of a tracked folder (this project's dataset format: ``index.json`` or
  ``video.json`` at its top or in its one top folder): extracted with every path kept
  inside the folder, the unpacked size and the number of files limited, the index's
  video paths kept inside the folder, params.npz's unpacked size limited (read without
  pickle) and the source frame's size checked before it is decoded.

Errors are ``UploadError`` s with the HTTP status to answer and a message for the person,
chosen by the type of what went wrong (``gagavatar.errors``), never by its words.
"""
from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from gagavatar.data.format import INDEX_FILE, PARAMS_FILE, VIDEO_FILE, Dataset, VideoRecord
from gagavatar.errors import InputError, LimitError, PathEscapeError
from gagavatar.io.files import describe_content
from gagavatar.serve.protocol import MAX_JSON_DEPTH, nests_deeper

ZIP_MAGIC = b"PK\x03\x04"
PHOTO_FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif", "GIF": ".gif",
                 "PPM": ".ppm"}
UPLOADED_FRAME_FORMATS = ("png", "jpg")  # tracked folders with frames.mp4 are refused (no video decoder on uploads)


MAX_JSON_BYTES = 4 * 2**20  # an index.json or video.json of an uploaded tracked folder


class UploadError(ValueError):
    """An upload the server refuses: ``status`` (4xx) and a message that says what to send instead."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def sniff(data: bytes, max_pixels: int) -> str:
    """"zip" or the image format of an upload (its content, not its name); a photo whose header
    claims a decompression bomb is refused here (413, naming ``max_pixels``)."""
    if data[:4] == ZIP_MAGIC:
        return "zip"
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format
    except Image.DecompressionBombError:  # its header alone claims more pixels than Pillow decodes
        raise bomb(max_pixels) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        fmt = None
    if fmt not in PHOTO_FORMATS:
        raise UploadError(415, f"the photo is not an image ({describe_content(data)}): send a JPEG or PNG photo of "
                               f"a face, or a .zip of a tracked folder")
    return fmt


def too_many_pixels(width: int, height: int, limit: int) -> UploadError:
    return UploadError(413, f"the photo is {width}x{height} pixels; the limit is {limit:,} pixels "
                            f"(--max-image-pixels): send a smaller photo")


def bomb(limit: int) -> UploadError:
    """Pillow refuses to open an image whose header claims over twice its MAX_IMAGE_PIXELS."""
    return UploadError(413, f"the photo's header claims more than {2 * Image.MAX_IMAGE_PIXELS:,} pixels; the "
                            f"limit is {limit:,} pixels (--max-image-pixels): send a smaller photo")


def save_photo(data: bytes, folder: Path, max_pixels: int) -> Path:
    """Write a checked photo as ``folder/photo.<ext>`` (the name is the server's)."""
    fmt = sniff(data, max_pixels)
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            if width * height > max_pixels:
                raise too_many_pixels(width, height, max_pixels)
            im.load()  # decodes it: a truncated or corrupt file fails here, not in the tracker
    except Image.DecompressionBombError:
        raise bomb(max_pixels) from None
    except (OSError, ValueError, SyntaxError) as e:
        if isinstance(e, UploadError):
            raise
        raise UploadError(415, f"the photo cannot be decoded ({type(e).__name__}: {e}): send a JPEG or PNG") from e
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"photo{PHOTO_FORMATS[fmt]}"
    path.write_bytes(data)
    return path


def extract_archive(data: bytes, dest: Path, max_bytes: int, max_files: int) -> Path:
    """``gagavatar.io.extract_zip`` of an upload, its refusals as 4xx: 413 over a limit, else 400."""
    from gagavatar.io import extract_zip

    try:
        return extract_zip(data, dest, max_bytes, max_files)
    except LimitError as e:
        raise UploadError(413, str(e)) from e
    except InputError as e:  # a member outside the archive (PathEscapeError), not a zip
        raise UploadError(400, str(e)) from e


def check_json_files(root: Path) -> None:
    """The tracked folder's JSON files (index.json, video.json) are small and shallow: read
    before the dataset code parses them (``json.loads`` recurses once per nesting level)."""
    for path in root.rglob("*.json"):
        if not path.is_file():
            continue
        name = path.relative_to(root).as_posix()
        if path.stat().st_size > MAX_JSON_BYTES:
            raise UploadError(413, f"{name} is {path.stat().st_size:,} bytes; a tracked folder's JSON files are "
                                   f"at most {MAX_JSON_BYTES:,}")
        if nests_deeper(path.read_bytes()):
            raise UploadError(400, f"{name} nests arrays or objects more than {MAX_JSON_DEPTH} deep: not a "
                                   f"tracked folder's index")


def open_tracked(folder: Path, max_pixels: int, max_bytes: int) -> VideoRecord:
    """The first video of an extracted tracked folder, checked to stay inside it; its params.npz
    may unpack to at most ``max_bytes`` (its arrays are compressed: a few MB can claim GBs)."""
    root = folder.resolve()
    check_json_files(root)
    if (root / INDEX_FILE).is_file():
        try:
            dataset = Dataset(root)
        except PathEscapeError as e:
            raise UploadError(400, "the tracked folder's index.json points outside itself (a video path "
                                   "that is absolute, has '..' or leads out through a link)") from e
        if not dataset.videos:
            raise UploadError(422, "the tracked folder's index.json lists no videos")
        video = dataset.videos[0]
    elif (root / VIDEO_FILE).is_file():
        video = VideoRecord.open(root)
    else:
        raise UploadError(422, "the archive holds no tracked folder (index.json or video.json at its top): zip a "
                               "folder written by `gagavatar track` (a GAGAvatar_track folder: run `gagavatar "
                               "import-reference` on it first)")
    if video.info.frames not in UPLOADED_FRAME_FORMATS:
        raise UploadError(422, f"the tracked video stores its frames as {video.info.frames}: upload a folder "
                               f"with {' or '.join(UPLOADED_FRAME_FORMATS)} frames")
    try:
        with zipfile.ZipFile(video.folder / PARAMS_FILE) as z:
            unpacked = sum(m.file_size for m in z.infolist())
    except (OSError, zipfile.BadZipFile) as e:
        raise UploadError(422, f"the tracked folder's {PARAMS_FILE} cannot be read ({type(e).__name__})") from e
    if unpacked > max_bytes:
        raise UploadError(413, f"the tracked folder's {PARAMS_FILE} unpacks to {unpacked:,} bytes; the limit is "
                               f"{max_bytes:,} (--max-unpacked-mb)")
    if video.width * video.height > max_pixels:
        raise UploadError(413, f"the tracked frames are {video.width}x{video.height} pixels; the limit is "
                               f"{max_pixels:,} pixels")
    return video


def check_frame(video: VideoRecord, frame: int) -> None:
    """Frame ``frame`` and its matte are images of the size the index says (read from their
    headers, before anything decodes them)."""
    for path in (video.frame_path(frame), video.matte_path(frame)):
        try:
            with Image.open(path) as im:
                size = im.size
        except (OSError, ValueError, SyntaxError, UnidentifiedImageError) as e:
            raise UploadError(422, f"{path.relative_to(video.root)}: not a readable image ({type(e).__name__})") from e
        if size != (video.width, video.height):
            raise UploadError(422, f"{path.relative_to(video.root)} is {size[0]}x{size[1]}, but the index says "
                                   f"{video.width}x{video.height}")


def remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
