"""The dataset format: tracked talking-head videos on disk (see docs/data-format.md).

A dataset is a folder::

    root/
      index.json                  # format version + one entry per video
      <video folder>/             # any relative path, listed in index.json
        video.json                # this video's entry (update_index rebuilds the index from these)
        frames/000000.png ...     # RGB frames (PNG or JPEG), or frames.mp4
        mattes/000000.png ...     # 8-bit foreground mattes (255 = head, hair, neck)
        params.npz                # every per-frame array of the video
        audio.wav                 # its sound, when it has one (16 kHz mono, aligned to the frames)

``params.npz`` holds head-model parameters (FLAME layout, x1 = metres), the
camera in the reference's 3x4 convention (SPEC §7.1) in world units = head
model x ``WORLD_SCALE``, pixel intrinsics at the stored frame size, the face box,
2D landmarks, the crop box and a validity flag. Writers: ``VideoWriter``,
``write_video``, ``update_index``. Readers: ``Dataset`` -> ``VideoRecord``
with lazy ``frame(i)``, ``matte(i)``, ``params`` and ``frames()`` (the one frame
type, ``gagavatar.data.frame.FrameParams``); nothing is read before it is asked
for, so a DataLoader worker only opens the files it samples.

The format is one import here; its parts, one idea a module:

- ``layout``: file and folder names, frame formats, splits, the arrays of params.npz;
- ``errors``: ``DatasetError``, ``MissingFileError``, ``DatasetPathError`` (a path leading out);
- ``json_files``: index.json and video.json read and written;
- ``index``: ``VideoInfo``, ``DatasetIndex``, ``scan_videos``, ``update_index``;
- ``params``: ``default_params``, ``validate_params``, ``VideoParams``, ``read_params``;
- ``images``: frame and matte files, ``image_to_tensor``, ``composite``;
- ``audio``: a video's sound tied to its frames (``fit_to_frames``, ``samples_for_frames``);
- ``writer``: ``VideoWriter``, ``write_video``;
- ``reader``: ``Dataset``, ``VideoRecord``.
"""
from gagavatar.data.audio import fit_to_frames, samples_for_frames
from gagavatar.data.errors import DatasetError, DatasetPathError, MissingFileError
from gagavatar.data.images import composite, image_to_tensor
from gagavatar.data.index import DatasetIndex, VideoInfo, scan_videos, update_index
from gagavatar.data.json_files import read_json, write_json
from gagavatar.data.layout import (AUDIO_FILE, AUDIO_RATE, FORMAT_NAME, FORMAT_VERSION, FRAME_ARRAYS, FRAME_FORMATS,
                                   FRAMES_DIR, INDEX_FILE, MATTES_DIR, MP4_FILE, OPTIONAL_ARRAYS, PARAMS_FILE, SPLITS,
                                   VIDEO_FILE, frame_name)
from gagavatar.data.params import VideoParams, default_params, read_params, validate_params
from gagavatar.data.reader import Dataset, VideoRecord
from gagavatar.data.writer import VideoWriter, write_video

__all__ = [
    "fit_to_frames", "samples_for_frames",
    "DatasetError", "DatasetPathError", "MissingFileError",
    "composite", "image_to_tensor",
    "DatasetIndex", "VideoInfo", "scan_videos", "update_index",
    "read_json", "write_json",
    "AUDIO_FILE", "AUDIO_RATE", "FORMAT_NAME", "FORMAT_VERSION", "FRAME_ARRAYS", "FRAME_FORMATS", "FRAMES_DIR",
    "INDEX_FILE", "MATTES_DIR", "MP4_FILE", "OPTIONAL_ARRAYS", "PARAMS_FILE", "SPLITS", "VIDEO_FILE", "frame_name",
    "VideoParams", "default_params", "read_params", "validate_params",
    "Dataset", "VideoRecord",
    "VideoWriter", "write_video",
]
