"""``ServeConfig``: where ``gagavatar serve`` listens and its limits, one field per command-line
option (``gagavatar.settings``: each default, help line and bound is written once, here), and
the loopback rule.

No torch, no starlette, no numpy: the CLI imports this module to build ``gagavatar serve``'s
options, and ``gagavatar --help`` stays fast.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import os
from dataclasses import dataclass

from gagavatar.settings import setting
from gagavatar.system import check_device

DEFAULT_PORT = 8765
TOKEN_ENV = "GAGAVATAR_TOKEN"  # the environment variable that holds the token (server and Python client)
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
MAX_RENDER_THREADS = 4


@dataclass
class ServeConfig:
    """Where the service listens and its limits (``gagavatar serve --help`` lists each)."""

    host: str = setting("127.0.0.1", "address to listen on; any other than loopback needs a token")
    port: int = setting(DEFAULT_PORT, "port to listen on (0: a free one)", min=0, max=65535)
    token: str | None = setting(None, "a secret every request must send (Authorization: Bearer ..., or ?token=); "
                                      "prefer the environment variable to the command line", envvar=TOKEN_ENV)
    checkpoint: str | None = setting(None, "checkpoint: ours (.safetensors) or the released GAGAvatar.pt "
                                           "(default: the bundled tiny model)")
    head_model: str | None = setting(None, "FLAME-format head model file (default: the bundled synthetic head)")
    device: str | None = setting(None, "cpu or cuda (default: cuda when present)", check=check_device)
    speech_model: str | None = setting(None, "speech model for WS /avatars/{id}/speak, e.g. ARTalk_wav2vec.pt "
                                             "(FLAME heads; default: the bundled voice of the head model, if any)")
    allowed_origins: tuple[str, ...] = setting(
        (), "a browser origin besides the server's own that may call it (repeatable), e.g. https://app.example.com; "
            "answered with CORS headers", flag="--allowed-origin")
    # avatars
    max_avatars: int = setting(32, "avatars kept in memory (least recently used evicted)", min=1)
    max_avatar_mb: float = setting(2048.0, "memory for the avatars, MB")
    cache_dir: str | None = setting(None, "folder that keeps avatars across restarts (default: none, memory only)")
    cache_mb: float = setting(1024.0, "disk for --cache-dir, MB (least recently used removed first)")
    max_upload_mb: float = setting(20.0, "one POST /avatars body, MB")
    max_unpacked_mb: float = setting(200.0, "a tracked-folder .zip, unpacked, MB")
    max_archive_files: int = setting(5000, "files in a tracked-folder .zip", min=1)
    max_image_pixels: int = setting(4096 * 4096, "a photo or webcam frame, decoded, pixels", min=1)
    # sessions
    max_sessions: int = setting(16, "drive and speak sessions at once", min=1)
    max_message_kb: float = setting(1024.0, "one binary WebSocket message (a webcam frame), KB")
    max_text_kb: float = setting(64.0, "one text WebSocket message (params, config), KB")
    max_fps: float = setting(30.0, "messages per session and second: faster ones are dropped unread; a "
                                   "session that keeps it up is warned, then read at this rate, then closed")
    idle_timeout_s: float = setting(120.0, "seconds a session may send nothing before it is closed",
                                    flag="--idle-timeout")
    send_timeout_s: float = setting(10.0, "seconds a client may take no frame before it is closed",
                                    flag="--send-timeout")
    window: int = setting(8, "frames a session may have unacknowledged (0: TCP flow control only)", min=0)
    max_speech_s: float = setting(600.0, "seconds of audio one speak session may send", flag="--max-speech-seconds")
    # the model
    max_batch: int = setting(4, "frames rendered in one call (from one or several sessions)", min=1)
    threads: int = setting(0, f"render threads on the CPU, each running torch on one core (0: one per usable "
                              f"core, at most {MAX_RENDER_THREADS}); on a GPU, torch's CPU threads", min=0)
    processes: bool = setting(True, "on the CPU, each render thread runs the model in a process of its own (a copy of "
                                    "the model each; the threads then never wait for Python's lock); "
                                    "--no-processes: in the server's process")
    track_workers: int = setting(2, "threads tracking webcam frames and uploaded photos", min=1)

    def __post_init__(self):
        if self.token is None:
            self.token = os.environ.get(TOKEN_ENV) or None
        self.allowed_origins = tuple(origin.rstrip("/") for origin in self.allowed_origins)

    def check(self) -> None:
        """Refuse a setup that would expose the model to the network without a token, and values
        out of their bounds (the command line checks those where it parses them)."""
        if not is_loopback(self.host) and not self.token:
            raise ValueError(f"--host {self.host} serves beyond this machine: give a token (--token, or better the "
                             f"environment variable {TOKEN_ENV}) that every client must send, or bind 127.0.0.1")
        for f in dataclasses.fields(self):
            meta = f.metadata.get("setting", {})
            low, high, value = meta.get("min"), meta.get("max"), getattr(self, f.name)
            if (low is not None and value < low) or (high is not None and value > high):
                raise ValueError(f"{f.name}={value}: use {low} to {high}" if high is not None else
                                 f"{f.name}={value}: use {low} or more")
        for name in ("max_avatar_mb", "cache_mb", "max_upload_mb", "max_unpacked_mb", "max_message_kb", "max_text_kb",
                     "max_fps", "idle_timeout_s", "send_timeout_s", "max_speech_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)}: use a positive number")
        for origin in self.allowed_origins:
            if "://" not in origin or origin.count("/") != 2:
                raise ValueError(f"--allowed-origin {origin!r}: give an origin, scheme://host[:port] (no path)")

    def limits(self) -> dict:
        """What a client may send (the ``ready`` message, /health)."""
        return {"window": self.window, "max_upload_bytes": int(self.max_upload_mb * 2**20),
                "max_message_bytes": self.max_message_bytes, "max_text_bytes": self.max_text_bytes,
                "max_fps": self.max_fps, "max_image_pixels": self.max_image_pixels,
                "idle_timeout_s": self.idle_timeout_s, "send_timeout_s": self.send_timeout_s,
                "max_speech_s": self.max_speech_s}

    @property
    def max_message_bytes(self) -> int:
        return int(self.max_message_kb * 1024)

    @property
    def max_text_bytes(self) -> int:
        return int(self.max_text_kb * 1024)


def is_loopback(host: str) -> bool:
    """A loopback name or address (``localhost``, 127.x, ::1)."""
    host = host.strip("[]")
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
