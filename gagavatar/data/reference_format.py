"""The reference tracker's output layout (xg-chu/GAGAvatar_track, SPEC §9), written and read.

    OUT/optim.pkl      dict "{video}_{frame}" -> {shapecode [300], expcode [100],
                       posecode [6] = (zeros, jaw), eyecode [6], transform_matrix [3,4],
                       bbox [4] = head box xyxy / 512}, float32 numpy arrays
    OUT/smoothed.pkl   the same after smoothing rotation/translation and eyes
    OUT/img_lmdb/      LMDB: key "{video}_{frame}" (utf-8) -> JPEG (quality 95) of the
                       512x512 crop matted on black

As in the reference, ``frame`` counts the frames that were tracked (frames
without a face are left out and the rest numbered 0, 1, 2, ...); the reference
code (GAGAvatar's ``core/data/loader_track.py``) reads these files unchanged.
Pickles are read back with ``load_reference_pickle``, which admits numpy arrays
and plain containers only.
"""
from __future__ import annotations

import io
import pickle
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from gagavatar.data.format import DatasetError
from gagavatar.system import require

RECORD_SHAPES = {"shapecode": (300,), "expcode": (100,), "posecode": (6,), "eyecode": (6,),
                 "transform_matrix": (3, 4), "bbox": (4,)}
JPEG_QUALITY = 95  # the reference's LMDBEngine.dump encodes with torchvision's encode_jpeg(quality=95)


def reference_key(video: str, frame: int) -> str:
    return f"{video}_{frame}"


def make_record(shape, expression, jaw_pose, eye_pose, transform, bbox, global_pose=(0.0, 0.0, 0.0)
                ) -> dict[str, np.ndarray]:
    """One frame's entry: posecode = (global rotation, jaw); the reference tracker leaves the
    global rotation at zero (head pose lives in the camera)."""
    f32 = lambda a: np.asarray(a, dtype=np.float32).copy()  # noqa: E731
    return {
        "bbox": np.clip(f32(bbox), 0.0, 1.0),
        "shapecode": f32(shape),
        "expcode": f32(expression),
        "posecode": np.concatenate([f32(global_pose), f32(jaw_pose)]),
        "eyecode": f32(eye_pose),
        "transform_matrix": f32(transform),
    }


def save_reference_pickle(path: str | Path, records: dict[str, dict[str, np.ndarray]]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(records, f, protocol=4)
    return path


_NUMPY_GLOBALS = {
    "_reconstruct": np.zeros(1).__reduce__()[0],  # arrays
    "scalar": np.float32(0).__reduce__()[0],  # numpy scalars
    "_frombuffer": np.zeros(1).__reduce_ex__(5)[0],  # protocol-5 arrays
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Admits numpy arrays, dtypes and scalars, and what the reference tracker's protocol-2
    pickles and ordered dicts need (``_codecs.encode``: str -> bytes; ``collections.OrderedDict``);
    anything else (code) is refused."""

    def find_class(self, module: str, name: str):
        if (module, name) == ("_codecs", "encode"):
            import codecs

            return codecs.encode
        if (module, name) == ("collections", "OrderedDict"):
            from collections import OrderedDict

            return OrderedDict
        if module.split(".")[0] == "numpy":
            if name in _NUMPY_GLOBALS and module.endswith(("multiarray", "numeric")):
                return _NUMPY_GLOBALS[name]
            if module == "numpy" and name in ("ndarray", "dtype"):
                return getattr(np, name)
            if module == "numpy.dtypes" and name.endswith("DType"):
                import numpy.dtypes

                return getattr(numpy.dtypes, name)
        raise pickle.UnpicklingError(f"refused {module}.{name}: a tracking pickle holds only numpy arrays")


def load_reference_pickle(path: str | Path) -> dict:
    """Read an optim.pkl / smoothed.pkl (ours or the reference's) without running code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such tracking file")
    with open(path, "rb") as f:
        try:
            return _ArraysOnlyUnpickler(f).load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
            raise DatasetError(f"{path}: not a tracking pickle of numpy arrays ({e})") from e


def video_keys(keys, video: str) -> list[str]:
    """The keys of one video ("{video}_{frame}") among ``keys``."""
    prefix = f"{video}_"
    return [k for k in keys if k.startswith(prefix) and k[len(prefix):].isdigit()]


def merge_reference_pickle(path: str | Path, video: str, records: dict[str, dict[str, np.ndarray]]) -> Path:
    """Write one video's records into ``path``, keeping the other videos already there
    (as the reference keeps many videos in one optim.pkl); the video's old keys go."""
    path = Path(path)
    merged = load_reference_pickle(path) if path.is_file() else {}
    for k in video_keys(list(merged), video):
        del merged[k]
    merged.update(records)
    return save_reference_pickle(path, merged)


@contextmanager
def lmdb_errors(path: str | Path):
    """Turns an LMDB error (a damaged or foreign ``img_lmdb``) into one line naming the folder."""
    lmdb = _lmdb()

    try:
        yield
    except lmdb.Error as e:
        reason = str(e).removeprefix(f"{path}: ")
        raise ValueError(f"{path}: this image database cannot be read ({reason}); it is damaged or not an "
                         f"LMDB: copy the folder again or re-run the tracker") from None


def _lmdb():
    return require("lmdb", "reference", "the reference tracker's img_lmdb")


def open_lmdb(path: str | Path, **options):
    """``lmdb.open(path, **options)`` with ``lmdb_errors``'s one-line error."""
    lmdb = _lmdb()

    with lmdb_errors(path):
        return lmdb.open(str(path), **options)


class LmdbImageWriter:
    """Writes the reference's ``img_lmdb``: key -> JPEG bytes of an RGB uint8 image.

    An existing database is added to; ``video``'s old images are removed first.
    """

    def __init__(self, path: str | Path, max_images: int, size: int = 512, video: str | None = None):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        existing = self.path / "data.mdb"
        # Address space for every new image uncompressed plus what is there; the file
        # only grows as written.
        map_size = (max(max_images, 1) * (size * size * 3 + 4096) + (64 << 20)
                    + (existing.stat().st_size if existing.is_file() else 0))
        self._env = open_lmdb(self.path, map_size=map_size)
        with lmdb_errors(self.path):
            self._txn = self._env.begin(write=True)
            if video is not None:
                old = video_keys([k.decode() for k in self._txn.cursor().iternext(values=False)], video)
                for k in old:
                    self._txn.delete(k.encode())
        self.keys: list[str] = []

    def add(self, key: str, image: np.ndarray) -> None:
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="JPEG", quality=JPEG_QUALITY)
        with lmdb_errors(self.path):
            self._txn.put(key.encode(), buf.getvalue())
        self.keys.append(key)

    def close(self) -> None:
        if self._env is not None:
            with lmdb_errors(self.path):
                self._txn.commit()
                self._env.close()
            self._env = None


def read_lmdb_image(path: str | Path, key: str) -> np.ndarray:
    """One image of an img_lmdb as RGB uint8 [H, W, 3]."""
    env = open_lmdb(path, readonly=True, lock=False)
    try:
        with lmdb_errors(path), env.begin() as txn:
            payload = txn.get(key.encode())
    finally:
        env.close()
    if payload is None:
        raise KeyError(f"{path}: no image under key {key!r}")
    return np.asarray(Image.open(io.BytesIO(payload)).convert("RGB"))


def lmdb_keys(path: str | Path) -> list[str]:
    env = open_lmdb(path, readonly=True, lock=False)
    try:
        with lmdb_errors(path), env.begin() as txn:
            return [k.decode() for k in txn.cursor().iternext(values=False)]
    finally:
        env.close()
