"""Published files this project knows, recognised by size and SHA-256 (the released
GAGAvatar.pt, the reference's FLAME_with_eye.pt, ARTalk's ARTalk_wav2vec.pt), and the
cheap check the loaders run: a file of the release's size whose hash differs is said to differ.
"""
from __future__ import annotations

import hashlib
import logging
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KnownFile:
    """A published file, recognised by its size and SHA-256."""

    label: str  # how the report names it
    filename: str
    size: int  # bytes
    sha256: str


KNOWN_FILES = {
    # GAGAvatar.pt as listed in the authors' ARTalk asset manifest
    "checkpoint": KnownFile("the released checkpoint", "GAGAvatar.pt", 747_434_426,
                            "75d449fd1d67dd7bbc613cef17f0196b1c84766935adc75d5231bc89e33950f8"),
    # the reference implementation's FLAME 2020 file with its landmark embeddings
    "flame_with_eye": KnownFile("the reference's FLAME_with_eye.pt", "FLAME_with_eye.pt", 26_819_643,
                                "b87a1d3513b3df0504f1e1f93bcb85ac01abe4dadf92e75ac08046c4a68403be"),
    # ARTalk's released speech -> motion model (xg-chu/ARTalk, SPEC §11)
    "speech_model": KnownFile("ARTalk's released speech model", "ARTalk_wav2vec.pt", 1_959_150_898,
                              "d89615a32e2a6b4e35cf5494c1e400b2acedc43812f63423b9f5d705046d67c2"),
}

HASH_CHUNK = 1 << 22
HASH_PROGRESS_FROM = 1 << 26  # files smaller than 64 MiB hash without a progress bar


def sha256_file(path: str | Path, progress: bool | None = None) -> str:
    """SHA-256 of a file, read in chunks (a tqdm bar for large files unless ``progress=False``)."""
    from tqdm import tqdm

    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha256()
    show = size >= HASH_PROGRESS_FROM if progress is None else progress
    with open(path, "rb") as f, tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024, leave=False,
                                     desc=f"SHA-256 {path.name}", disable=not show) as bar:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def _incomplete_torch_zip(path: Path) -> bool:
    """True for the first part of a torch.save zip: its first entry (``<name>/data.pkl``)
    is there but the archive's closing directory is not."""
    with open(path, "rb") as f:
        head = f.read(30 + 512)
    if len(head) < 30 or head[:4] != b"PK\x03\x04":
        return False
    name_length = struct.unpack("<H", head[26:28])[0]
    first = head[30:30 + name_length]
    return first.endswith(b"data.pkl") and not zipfile.is_zipfile(path)


def compare_known(path: str | Path, known: KnownFile) -> str:
    """'match', 'differs' (same size, other bytes), 'truncated' (an incomplete torch zip
    smaller than the published file) or 'other'. Hashes only when the size matches."""
    path = Path(path)
    size = path.stat().st_size
    if size == known.size:
        return "match" if sha256_file(path) == known.sha256 else "differs"
    if size < known.size and _incomplete_torch_zip(path):
        return "truncated"
    return "other"


_RELEASE_HASHES: dict[tuple, bool] = {}  # (path, size, mtime, expected hash) -> matches


def check_release(path: str | Path, which: str = "checkpoint") -> str | None:
    """Warning text (also logged) when ``path`` has the size of the released file
    ``KNOWN_FILES[which]`` (default GAGAvatar.pt) but not its SHA-256; None otherwise.
    Cheap: a file of any other size is not read, and a file is hashed once per process."""
    known = KNOWN_FILES[which]
    path = Path(path)
    try:
        stat = path.stat()
    except OSError:
        return None
    if stat.st_size != known.size:
        return None
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, known.sha256)
    if key not in _RELEASE_HASHES:
        _RELEASE_HASHES[key] = sha256_file(path) == known.sha256
    if _RELEASE_HASHES[key]:
        return None
    text = (f"{path} has the size of the released {known.filename} ({known.size:,} bytes) but not its SHA-256: "
            f"it is not the released file (a corrupted download or a modified copy?), so results may differ "
            f"from the paper's")
    log.warning(text)
    return text
