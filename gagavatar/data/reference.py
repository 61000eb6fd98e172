"""The reference tracker's output folders (xg-chu/GAGAvatar_track, SPEC §9) in and out of the dataset format.

A reference folder holds ``optim.pkl`` and/or ``smoothed.pkl`` (dict
``"{video}_{frame}"`` -> numpy arrays, layout in ``gagavatar.data.reference_format``)
and ``img_lmdb/`` (the same keys -> JPEG/PNG of the 512 crop matted on black).
The single-image tracker writes no LMDB but keeps each crop in its record
(``image``, float [3,H,W] in [0,1]); both are read.

    if is_reference_folder(path):
        import_reference(path, "dataset/")          # -> docs/data-format.md layout
    export_reference(Dataset("dataset/").videos[0], "ref/")  # and back

Mapping (per frame): shapecode -> shape, expcode -> expression, posecode[:3]
-> global_pose (FLAME's global rotation: small, as head pose lives in the camera,
but the reference applies it and so do we), posecode[3:6] -> jaw_pose, eyecode
-> eye_pose, transform_matrix -> the camera (focal 12), bbox -> bbox.
Frames in the LMDB without a record (the tracker lost the face) become
``valid = False`` frames holding the nearest tracked frame's parameters.
Pickles are read with ``load_reference_pickle`` (numpy arrays and plain
containers only: a pickle that would run code is refused).
"""
from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from gagavatar.data.format import (
    SPLITS, DatasetError, MissingFileError, VideoInfo, VideoRecord, VideoWriter, default_params, update_index,
)
from gagavatar.data.frame import FrameParams
from gagavatar.data.reference_format import (
    LmdbImageWriter, lmdb_errors, lmdb_keys, load_reference_pickle, make_record, open_lmdb, reference_key,
    save_reference_pickle,
)
from gagavatar.geometry import Camera
from gagavatar.io import staging_folder, swap_in

log = logging.getLogger(__name__)

PICKLES = {"smoothed": "smoothed.pkl", "optim": "optim.pkl"}
LMDB_DIR = "img_lmdb"
SPLIT_FILE = "dataset.json"  # the reference's training data: {"train": [keys], "val": [...], "test": [...]}
REQUIRED_FIELDS = ("shapecode", "expcode", "posecode", "eyecode", "transform_matrix")
# Pixels brighter than this (max over RGB, of 255) count as head when a matte is
# recovered from a crop matted on black; holes inside the silhouette are filled.
MATTE_THRESHOLD = 12
REFERENCE_HEAD_MODEL = "flame2020"  # the reference tracker fits FLAME 2020 (SPEC §7.10)


def is_reference_folder(path: str | Path) -> bool:
    """True for a folder with the reference tracker's optim.pkl or smoothed.pkl."""
    path = Path(path)
    return path.is_dir() and any((path / name).is_file() for name in PICKLES.values())


def folder_name(video: str) -> str:
    """A video id from a pickle as a folder name that stays inside the dataset ("../x" -> "_.._x")."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", video)
    return "_" + name if name.startswith(".") or not name else name


def split_key(key: str) -> tuple[str, int | None]:
    """``"obama_12"`` -> ("obama", 12); a key without a trailing frame number is its own video."""
    m = re.fullmatch(r"(.+)_(\d+)", key)
    return (m.group(1), int(m.group(2))) if m else (key, None)


@dataclass
class ReferenceVideo:
    """One video of a reference folder: its keys in frame order and which of them have a record."""

    id: str
    keys: list[str]          # every frame (image) of the video, in frame order
    records: dict[str, dict]  # key -> record, for the tracked frames


def read_reference(folder: str | Path, use: str = "auto") -> tuple[list[ReferenceVideo], Path | None]:
    """The videos of a reference folder and its LMDB (None when the crops live in the records).

    use: "smoothed", "optim", or "auto" (smoothed.pkl when present, as the reference's
    driver loader does, else optim.pkl).
    """
    folder = Path(folder)
    if use not in ("auto", *PICKLES):
        raise ValueError(f"use={use!r}; choose 'auto', 'smoothed' or 'optim'")
    names = [PICKLES["smoothed"], PICKLES["optim"]] if use == "auto" else [PICKLES[use]]
    pkl = next((folder / n for n in names if (folder / n).is_file()), None)
    if pkl is None:
        raise MissingFileError(f"{folder}: no {' or '.join(names)}; is this a GAGAvatar_track output folder?")
    data = load_reference_pickle(pkl)
    if not isinstance(data, dict) or not data:
        raise DatasetError(f"{pkl}: expected a non-empty dict of frame records, got {type(data).__name__}")
    if all(isinstance(v, np.ndarray) for v in data.values()):
        data = {folder.name: data}  # one un-keyed record (an older single-image layout)
    records: dict[str, dict] = {}
    for key, record in data.items():
        if not isinstance(key, str) or not isinstance(record, dict):
            raise DatasetError(f"{pkl}: entry {key!r} is not a frame record (a dict of arrays)")
        missing = [f for f in REQUIRED_FIELDS if f not in record]
        if missing:
            raise DatasetError(f"{pkl}: frame {key!r} lacks {missing}")
        records[key] = record

    lmdb_path = folder / LMDB_DIR
    if lmdb_path.is_dir():
        image_keys = set(lmdb_keys(lmdb_path))
        missing = sorted(set(records) - image_keys)
        if missing:
            raise DatasetError(f"{lmdb_path}: no image for tracked frame(s) {missing[:5]}"
                               f"{' ...' if len(missing) > 5 else ''}; the folder is incomplete - re-track it")
        keys = image_keys
    else:
        lacking = [k for k, r in records.items() if "image" not in r]
        if lacking:
            raise MissingFileError(f"{folder}: no {LMDB_DIR}/ folder and frame(s) {lacking[:5]} carry no image; "
                                   f"copy the tracker's whole output folder")
        lmdb_path, keys = None, set(records)

    by_video: dict[str, list[tuple[int, str]]] = {}
    for key in keys:
        video, frame = split_key(key)
        by_video.setdefault(video, []).append((-1 if frame is None else frame, key))
    videos = []
    for video in sorted(by_video):
        ordered = [k for _, k in sorted(by_video[video])]
        tracked = {k: records[k] for k in ordered if k in records}
        if tracked:  # a video whose every frame lost the face has nothing to import
            videos.append(ReferenceVideo(video, ordered, tracked))
    if not videos:
        raise DatasetError(f"{pkl}: no tracked frame has an image")
    return videos, lmdb_path


def _vector(record: dict, field: str, size: int | None, key: str) -> np.ndarray:
    a = np.asarray(record[field], dtype=np.float32).reshape(-1)
    if size is not None and a.size != size:
        raise DatasetError(f"frame {key!r}: {field} has {a.size} values; expected {size}")
    return a


def record_frames(records: list[dict], keys: list[str], width: int, height: int) -> FrameParams:
    """The frames of reference records (one per frame; ``keys`` name them in errors), seen by the
    reference camera (focal 12) at ``width`` x ``height``."""
    pose = torch.from_numpy(np.stack([_vector(r, "posecode", 6, k) for r, k in zip(records, keys)]))
    transform = torch.from_numpy(np.stack([_vector(r, "transform_matrix", 12, k).reshape(3, 4)
                                           for r, k in zip(records, keys)]))
    stack = lambda field, size: torch.from_numpy(np.stack([_vector(r, field, size, k)  # noqa: E731
                                                           for r, k in zip(records, keys)]))
    camera = Camera.from_reference(transform, (width, height))
    return FrameParams(shape=stack("shapecode", None), expression=stack("expcode", None), global_pose=pose[:, :3],
                       neck_pose=torch.zeros_like(pose[:, :3]), jaw_pose=pose[:, 3:], eye_pose=stack("eyecode", 6),
                       translation=torch.zeros_like(pose[:, :3]), camera=camera)


def record_boxes(records: list[dict], keys: list[str]) -> np.ndarray:
    """The head boxes [F, 4] (normalised xyxy) of reference records; zeros where a record has none."""
    return np.clip(np.stack([_vector(r, "bbox", 4, k) if "bbox" in r else np.zeros(4, np.float32)
                             for r, k in zip(records, keys)]), 0.0, 1.0)


def matte_from_black(image: np.ndarray, threshold: int = MATTE_THRESHOLD) -> np.ndarray:
    """uint8 [H,W] matte of a crop matted on black: bright pixels, holes filled.

    The reference keeps no matte; this recovers a silhouette so that the frame can be
    composited on other backgrounds (on black the frame is reproduced exactly).
    """
    from scipy.ndimage import binary_fill_holes

    mask = binary_fill_holes(image.max(axis=2) > threshold)
    return mask.astype(np.uint8) * 255


class _ImageSource:
    """Crops by key, from an LMDB or from the records' ``image`` arrays."""

    def __init__(self, lmdb_path: Path | None, records: dict[str, dict]):
        self.records = records
        self.env = None
        if lmdb_path is not None:
            self.path = lmdb_path
            self.env = open_lmdb(lmdb_path, readonly=True, lock=False, readahead=False)

    def __call__(self, key: str) -> np.ndarray:
        if self.env is None:
            a = np.asarray(self.records[key]["image"], dtype=np.float32)
            if a.ndim == 3 and a.shape[0] in (1, 3):
                a = a.transpose(1, 2, 0)
            scale = 255.0 if a.max() <= 1.0 + 1e-6 else 1.0  # [0,1] as the tracker writes, or [0,255]
            return np.repeat(np.clip(a * scale + 0.5, 0, 255).astype(np.uint8), 3 // a.shape[2], axis=2)
        with lmdb_errors(self.path), self.env.begin() as txn:
            payload = txn.get(key.encode())
        try:
            with Image.open(io.BytesIO(payload)) as im:
                return np.asarray(im.convert("RGB")).copy()
        except (UnidentifiedImageError, OSError) as e:
            raise DatasetError(f"{self.path}: the image under key {key!r} is not a JPEG/PNG ({e})") from e

    def close(self):
        if self.env is not None:
            self.env.close()
            self.env = None


def _read_splits(folder: Path) -> dict[str, str]:
    """video id -> split from the reference's dataset.json, when there is one."""
    path = folder / SPLIT_FILE
    if not path.is_file():
        return {}
    import json

    try:
        lists = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: invalid JSON ({e})") from e
    out = {}
    for split in SPLITS:
        for key in lists.get(split, []) if isinstance(lists, dict) else []:
            out.setdefault(split_key(str(key))[0], split)
    return out


def import_reference(folder: str | Path, out: str | Path, use: str = "auto", split: str = "test",
                     frame_format: str = "png", head_model: str = REFERENCE_HEAD_MODEL,
                     progress=None) -> list[VideoInfo]:
    """Convert a GAGAvatar_track output folder into a dataset in ``out`` (docs/data-format.md).

    Each video becomes its own identity; ``split`` is used unless the folder has the
    reference's dataset.json. ``progress(done, total)`` is called after each frame.
    Returns the index entries written.
    """
    folder, out = Path(folder), Path(out)
    if not folder.is_dir():
        raise MissingFileError(f"{folder}: no such folder")
    if split not in SPLITS:
        raise ValueError(f"split={split!r}; use one of {SPLITS}")
    videos, lmdb_path = read_reference(folder, use)
    splits = _read_splits(folder)
    total, done = sum(len(v.keys) for v in videos), 0
    all_records = {k: r for v in videos for k, r in v.records.items()}
    images = _ImageSource(lmdb_path, all_records)
    infos = []
    try:
        for video in videos:
            first = images(video.keys[0])
            H, W = first.shape[:2]
            staged = staging_folder(out / folder_name(video.id))  # built aside, swapped in whole
            writer = VideoWriter(out, video.id, identity=video.id, split=splits.get(video.id, split), width=W,
                                 height=H, head_model=head_model, frame_format=frame_format,
                                 source=f"GAGAvatar_track:{folder.name}", path=staged.name)
            writer.info.path = folder_name(video.id)  # recorded where it will be
            for key in video.keys:
                image = first if key == video.keys[0] else images(key)
                if image.shape[:2] != (H, W):
                    raise DatasetError(f"{folder}: frame {key!r} is {image.shape[1]}x{image.shape[0]}, "
                                       f"the video's first frame {W}x{H}")
                writer.add(image, matte_from_black(image))
                done += 1
                if progress:
                    progress(done, total)
            infos.append(writer.close(_video_params(video, W, H)))
            swap_in(staged, out / writer.info.path)
    finally:
        images.close()
    update_index(out)
    return infos


def _video_params(video: ReferenceVideo, width: int, height: int) -> dict[str, np.ndarray]:
    """params.npz arrays of a video; untracked frames copy the nearest earlier tracked one."""
    tracked = [k for k in video.keys if k in video.records]
    records = [video.records[k] for k in tracked]
    valid = np.array([k in video.records for k in video.keys])
    # index into the tracked rows: the last tracked frame at or before each frame (the first one before any)
    take = np.clip(np.cumsum(valid) - 1, 0, None)
    arrays = record_frames(records, tracked, width, height)[take].to_arrays()
    if np.all(arrays["shape"] == arrays["shape"][:1]):
        arrays["shape"] = arrays["shape"][0]  # the reference shares one shape over a video
    params = default_params(len(video.keys), width, height, n_shape=arrays["shape"].shape[-1],
                            n_expression=arrays["expression"].shape[1], n_landmarks=0)
    params.update(arrays, bbox=record_boxes(records, tracked)[take], valid=valid)
    params["landmark_set"] = np.str_("none")  # the reference keeps no landmarks
    return params


def export_reference(video: VideoRecord, out: str | Path, key_prefix: str | None = None) -> list[Path]:
    """Write one dataset video as the reference tracker would: optim.pkl, img_lmdb with the
    frames matted on black, and dataset.json (the video's keys under its split, as the
    reference's training loader reads). Only valid frames are written, numbered 0, 1,
    2, ... as the reference numbers the frames it tracked."""
    import json

    out = Path(out)
    prefix = key_prefix or video.id
    valid = np.flatnonzero(video.params["valid"])
    frames = video.frames(valid).to_arrays()
    writer = LmdbImageWriter(out / LMDB_DIR, len(valid), max(video.width, video.height))
    records = {}
    try:
        for k, i in enumerate(valid):
            key = reference_key(prefix, k)
            matted = video.image(int(i))  # on black, as the reference stores crops
            writer.add(key, (matted.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8))
            records[key] = make_record(*(frames[name][k] for name in ("shape", "expression", "jaw_pose", "eye_pose",
                                                                      "transform")),
                                       video.params["bbox"][i], global_pose=frames["global_pose"][k])
    finally:
        writer.close()
    (out / SPLIT_FILE).write_text(json.dumps({s: list(records) if s == video.split else [] for s in SPLITS}))
    return [save_reference_pickle(out / PICKLES["optim"], records), out / LMDB_DIR, out / SPLIT_FILE]
