"""The project's one input/output layer, one idea a module:

- ``images``: image files in (RGB uint8 [H, W, 3] whatever the file holds), grids out, resizing;
- ``video``: video files in and out through the bundled ffmpeg (``ffmpeg``), with a sound track;
- ``audio``: sound in (any audio or video file, 16 kHz mono; text spoken by espeak-ng), WAV out;
- ``files``: atomic writes (files and folders), outputs checked before any work (never over an input or a
  device) and the one-line ``OutputError`` (full disk, read-only, a folder);
- ``tensors``: checkpoints and weights read safely (``TensorFileError``);
- ``archive``: untrusted .zip files unpacked inside their folder, within limits.

Every failure is an ``InputError`` or ``OutputError`` (``gagavatar.errors``) naming the file
and the fix. Everything is importable from ``gagavatar.io`` itself.
"""
from gagavatar.errors import InputError, LimitError, OutputError, PathEscapeError
from gagavatar.io.archive import extract_zip
from gagavatar.io.audio import AUDIO_EXTENSIONS, SOUND_RATE, SPEECH_RATE, read_audio, read_speech, speak_text, write_wav
from gagavatar.io.ffmpeg import ffmpeg_exe
from gagavatar.io.files import (atomic_folder, atomic_path, check_output, check_output_folder, check_writable,
                                describe_content, fingerprint, no_space_error, output_error, output_errors,
                                refuse_special, remove_stale_temps, staging_folder, swap_in, temp_path)
from gagavatar.io.images import (IMAGE_EXTENSIONS, is_image, list_images, natural_key, read_image, resize_frame,
                                 resize_image, tensor_to_image, to_rgb_uint8, write_image_grid)
from gagavatar.io.tensors import (TensorFileError, check_finite, load_torch_file, read_safetensors_metadata,
                                  read_tensor_file, write_safetensors)
from gagavatar.io.video import (VIDEO_EXTENSIONS, VIDEO_OUTPUT_EXTENSIONS, VideoFileInfo, VideoFrames,
                                count_decodable_frames, frame_names, is_video, iter_frames, iter_video, video_info,
                                write_video)

__all__ = [
    "InputError", "LimitError", "OutputError", "PathEscapeError",
    "extract_zip",
    "AUDIO_EXTENSIONS", "SOUND_RATE", "SPEECH_RATE", "read_audio", "read_speech", "speak_text", "write_wav",
    "atomic_folder", "atomic_path", "check_output", "check_output_folder", "check_writable", "describe_content",
    "fingerprint",
    "no_space_error", "output_error", "output_errors", "refuse_special", "remove_stale_temps", "staging_folder",
    "swap_in", "temp_path",
    "IMAGE_EXTENSIONS", "is_image", "list_images", "natural_key", "read_image", "resize_frame", "resize_image",
    "tensor_to_image", "to_rgb_uint8", "write_image_grid",
    "TensorFileError", "check_finite", "load_torch_file", "read_safetensors_metadata", "read_tensor_file",
    "write_safetensors",
    "VIDEO_EXTENSIONS", "VIDEO_OUTPUT_EXTENSIONS", "VideoFileInfo", "VideoFrames", "count_decodable_frames",
    "ffmpeg_exe", "frame_names",
    "is_video", "iter_frames", "iter_video", "video_info", "write_video",
]
