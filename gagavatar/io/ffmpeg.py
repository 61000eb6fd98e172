"""The ffmpeg every install has (imageio-ffmpeg ships it), and its errors as one line."""
from __future__ import annotations

import re


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg_error(stderr: str) -> str:
    """The last error ffmpeg printed, without its ``[muxer @ 0x...]`` prefixes (one line)."""
    lines = [re.sub(r"\[[^\]]*@ 0x[0-9a-f]+\]\s*", "", line).strip() for line in stderr.splitlines()]
    lines = [line for line in lines if line]
    return lines[-1] if lines else "no message"
