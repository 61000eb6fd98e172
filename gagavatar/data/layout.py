"""Where things are in a dataset folder: the format's name and version, its file and folder
names, the frame formats and splits, and the per-frame arrays params.npz holds."""
from __future__ import annotations

FORMAT_NAME = "gagavatar-dataset"
FORMAT_VERSION = 1
INDEX_FILE = "index.json"
VIDEO_FILE = "video.json"
PARAMS_FILE = "params.npz"
FRAMES_DIR = "frames"
MATTES_DIR = "mattes"
MP4_FILE = "frames.mp4"
AUDIO_FILE = "audio.wav"  # the video's sound: 16 kHz mono PCM16, sample 0 at frame 0, as long as the frames
AUDIO_RATE = 16000
FRAME_FORMATS = ("png", "jpg", "mp4")
SPLITS = ("train", "val", "test")

# Per-frame arrays of params.npz: name -> trailing shape (None = model-dependent size).
# All float32 except ``valid`` (bool). ``shape`` may also be one row [S] for the whole video.
FRAME_ARRAYS: dict[str, tuple] = {
    "shape": (None,),
    "expression": (None,),
    "global_pose": (3,),
    "neck_pose": (3,),
    "jaw_pose": (3,),
    "eye_pose": (6,),
    "translation": (3,),
    "transform": (3, 4),
    "focal": (),
    "K": (3, 3),
    "bbox": (4,),
    "landmarks": (None, 2),
    "crop_box": (4,),
    "valid": (),
}
# Arrays a writer may leave out; the reader fills them with these defaults.
OPTIONAL_ARRAYS = ("global_pose", "neck_pose", "translation", "valid")


def frame_name(i: int, ext: str = "png") -> str:
    """File name of frame ``i``: ``000123.png``."""
    return f"{i:06d}.{ext}"
