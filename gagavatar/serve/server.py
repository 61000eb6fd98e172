"""The service: avatars over HTTP, live driving over WebSockets (docs/serve.md).

    POST   /avatars                  a photo (multipart field ``photo``, or the raw body) or a .zip
                                     of a tracked folder -> {"id": ...}
    DELETE /avatars/{id}             forget an avatar
    WS     /avatars/{id}/drive       head parameters (JSON) or webcam frames (JPEG) in, frames out
    GET    /                         the browser client (one self-contained page)
    GET    /health, /metrics         JSON

One model serves every session: ``RenderEngine`` is the one thread that runs it. Each
session keeps its own state (its ``Motion``; for webcam sessions its ``FrameTracker``)
and two slots of one item each: the newest input not yet rendered and the newest frame
not yet sent. A newer item replaces an older one, which is counted as dropped, so a fast
sender gets the latest frame rather than a queue, and a slow reader gets fewer frames
rather than a backlog; nothing grows without bound. A client that acknowledges the frames
it receives (``ack``: the ``seq`` of the last one, on its next message; the page and the
Python client do) gets at most ``window`` frames ahead: one that stops reading costs
nothing more after those, and is closed after ``send_timeout_s``.

Safe by default: loopback only unless a token is given (then checked on every request),
loopback host names only on a loopback bind (no DNS rebinding), same-origin browsers
only, every upload and message size limited, uploads sniffed and unpacked safely under
names the server chooses.
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import os
import secrets
import shutil
import socket
import tempfile
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import torch
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from gagavatar.data.frame import FrameParams
from gagavatar.geometry import Camera, reference_to_viewmat
from gagavatar.reenact import BUNDLED_MODEL_NOTE, Animator, Motion, MotionControls, load_tracked, source_frame
from gagavatar.serve import uploads
from gagavatar.serve.engine import Rendered, RenderEngine
from gagavatar.serve.protocol import (CONTROL_FIELDS, DEFAULT_FORMAT, DEFAULT_QUALITY, ProtocolError, frame_id,
                                      pack, parse_options, parse_params, parse_text, unpack)

log = logging.getLogger("gagavatar.serve")

DEFAULT_PORT = 8765
TOKEN_ENV = "GAGAVATAR_TOKEN"
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


# --------------------------------------------------------------------------- configuration
@dataclass
class ServeConfig:
    """Where the service listens and its limits (``gagavatar serve --help`` names each)."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token: str | None = None            # required for a non-loopback host; env GAGAVATAR_TOKEN
    checkpoint: str | None = None       # None: the bundled tiny model
    head_model: str | None = None       # None: the bundled synthetic head
    device: str | None = None           # None: cuda when present
    allowed_origins: tuple[str, ...] = ()  # browser origins besides the page's own (e.g. https://app.example)
    # avatars
    max_avatars: int = 32               # kept in memory, least recently used evicted first
    max_avatar_mb: float = 2048.0       # the same, by their tensors' bytes
    max_upload_mb: float = 20.0         # one POST /avatars body
    max_unpacked_mb: float = 200.0      # a tracked-folder .zip, unpacked
    max_archive_files: int = 5000
    max_image_pixels: int = 4096 * 4096  # a photo or a webcam frame, decoded
    # sessions
    max_sessions: int = 16
    max_message_kb: float = 1024.0      # one binary WebSocket message (a webcam frame)
    max_text_kb: float = 64.0           # one text WebSocket message (params, config)
    max_fps: float = 30.0               # input frames per session and second; faster ones are dropped
    idle_timeout_s: float = 120.0       # a session without any message for this long is closed
    send_timeout_s: float = 10.0        # a client that takes no frame for this long is closed
    window: int = 8                     # frames sent and not acknowledged, at most (clients that acknowledge)
    # the model
    max_batch: int = 4                  # frames rendered in one call (of one or several sessions)
    track_workers: int = 2              # threads that track webcam frames and uploaded photos
    threads: int = 0                    # torch's CPU threads (``serve`` only); 0: half the cores, 1 to 4

    def __post_init__(self):
        if self.token is None:
            self.token = os.environ.get(TOKEN_ENV) or None

    def check(self) -> None:
        """Refuse a setup that would expose the model to the network without a token."""
        if not is_loopback(self.host) and not self.token:
            raise ValueError(f"--host {self.host} serves beyond this machine: give a token (--token, or better the "
                             f"environment variable {TOKEN_ENV}) that every client must send, or bind 127.0.0.1")
        for name in ("max_avatars", "max_sessions", "max_batch", "track_workers", "max_archive_files",
                     "max_image_pixels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: use 1 or more")
        if self.window < 0 or self.threads < 0:
            raise ValueError("window and threads must be 0 or more")
        for name in ("max_avatar_mb", "max_upload_mb", "max_unpacked_mb", "max_message_kb", "max_text_kb",
                     "max_fps", "idle_timeout_s", "send_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)}: use a positive number")

    def limits(self) -> dict:
        """What a client may send (the ``ready`` message, /health)."""
        return {"window": self.window, "max_upload_bytes": int(self.max_upload_mb * 2**20),
                "max_message_bytes": self.max_message_bytes,
                "max_text_bytes": int(self.max_text_kb * 1024), "max_fps": self.max_fps,
                "max_image_pixels": self.max_image_pixels, "idle_timeout_s": self.idle_timeout_s,
                "send_timeout_s": self.send_timeout_s}

    @property
    def max_message_bytes(self) -> int:
        return int(self.max_message_kb * 1024)


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --------------------------------------------------------------------------- avatars
@dataclass
class AvatarEntry:
    id: str
    avatar: object         # the network's Avatar, batch 1, on the model's device
    source: FrameParams    # the source frame [1] the avatar was made from (CPU)
    nbytes: int
    created: float = field(default_factory=time.time)


class AvatarCache:
    """Avatars by id, bounded by count and bytes; the least recently used go first. A session
    keeps its avatar alive after eviction (only new sessions need the cache)."""

    def __init__(self, max_count: int, max_bytes: int):
        self.max_count, self.max_bytes = max_count, max_bytes
        self._entries: OrderedDict[str, AvatarEntry] = OrderedDict()
        self.created = self.evicted = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self._entries.values())

    def get(self, avatar_id: str) -> AvatarEntry | None:
        entry = self._entries.get(avatar_id)
        if entry is not None:
            self._entries.move_to_end(avatar_id)
        return entry

    def put(self, entry: AvatarEntry) -> None:
        self._entries[entry.id] = entry
        self.created += 1
        while len(self._entries) > 1 and (len(self._entries) > self.max_count or self.nbytes > self.max_bytes):
            self._entries.popitem(last=False)
            self.evicted += 1

    def remove(self, avatar_id: str) -> bool:
        return self._entries.pop(avatar_id, None) is not None


def avatar_bytes(avatar) -> int:
    return sum(v.nbytes for v in vars(avatar).values() if isinstance(v, torch.Tensor))


# --------------------------------------------------------------------------- sessions
class LatestSlot:
    """One item: ``put`` replaces an item not yet taken (and says so, to count the drop)."""

    def __init__(self):
        self._item, self._ready = None, asyncio.Event()

    def put(self, item) -> bool:
        replaced = self._item is not None
        self._item = item
        self._ready.set()
        return replaced

    async def get(self):
        await self._ready.wait()
        item, self._item = self._item, None
        self._ready.clear()
        return item

    @property
    def pending(self) -> bool:
        return self._item is not None


class RateLimit:
    """A token bucket: ``rate`` per second, bursts of up to one second's worth."""

    def __init__(self, rate: float):
        self.rate, self.burst = rate, max(1.0, rate)
        self.tokens, self.t = self.burst, time.perf_counter()

    def allow(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
        self.t = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


COUNTERS = ("received", "served", "dropped_input", "dropped_output", "rate_limited", "no_face")


@dataclass
class Input:
    kind: str            # "params" (data: FrameParams [1]) or "webcam" (data: encoded image bytes)
    data: object
    frame_id: object
    received: float      # time.perf_counter() when the message arrived


@dataclass
class Output:
    header: dict
    data: bytes
    received: float


class ClientGone(Exception):
    """The client closed the connection (or it broke)."""


class SessionEnd(Exception):
    """The server ends a session (idle, not reading); ``code`` is the close code."""

    def __init__(self, message: str, code: int = 1000):
        super().__init__(message)
        self.code = code


class Session:
    """One WebSocket: its motion state, its tracker (webcam frames), its two slots, its counts."""

    def __init__(self, entry: AvatarEntry, options: dict, config: ServeConfig, totals: dict):
        self.id = secrets.token_hex(4)
        self.entry, self.config, self.totals = entry, config, totals
        self.controls, self.motion = MotionControls(), None
        self.format, self.quality = DEFAULT_FORMAT, DEFAULT_QUALITY
        self.configure(options)
        self.inbox, self.outbox = LatestSlot(), LatestSlot()
        self.sending = False  # the sender is blocked on a client that does not read
        self.sent = 0  # frames handed to the socket (the ``seq`` of the last one)
        self.acked: int | None = None  # the last ``seq`` the client says it received (None: it never said)
        self.behind_since: float | None = None  # since when the client has been a window behind
        self.rate = RateLimit(config.max_fps)
        self.counts = dict.fromkeys(COUNTERS, 0)
        self.kind: str | None = None
        self.last: Rendered | None = None  # repeated when a webcam frame shows no face
        self.next_id = 0
        self.started = time.perf_counter()
        self.tracker, self._tracker_lock, self._closed = None, threading.Lock(), False

    def acknowledge(self, message: dict) -> None:
        """The ``ack`` of a client message: the ``seq`` of the last frame it received."""
        ack = message.get("ack")
        if ack is None:
            return
        if isinstance(ack, bool) or not isinstance(ack, int) or ack < 0:
            raise ProtocolError(f"ack {ack!r}: send the 'seq' of the last frame received (an integer)")
        self.acked = max(self.acked or 0, min(ack, self.sent))

    def behind(self, now: float) -> bool:
        """True while the client has ``window`` frames unacknowledged (only clients that acknowledge)."""
        window = self.config.window
        late = (window > 0 and self.acked is not None
                and self.sent + self.outbox.pending - self.acked >= window)
        self.behind_since = (self.behind_since or now) if late else None
        return late

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] += n
        self.totals[name] += n

    def configure(self, options: dict) -> None:
        """Apply a config message: new motion controls start the motion afresh (relative motion
        from the next frame); a new format applies to the next frame."""
        controls = {name: options[name] for name in CONTROL_FIELDS if name in options}
        if controls or self.motion is None:
            try:
                self.controls = MotionControls(**{**asdict(self.controls), **controls})
            except ValueError as e:
                raise ProtocolError(str(e)) from e
            self.motion = Motion(self.entry.source, self.controls)
        if "format" in options or "quality" in options:
            self.format = options.get("format", self.format)
            self.quality = options.get("quality", self.quality)
            self.last = None

    def driver_frame(self, arrays: dict) -> FrameParams:
        """A params message's arrays as the one frame type (shape: the source's; missing poses zero)."""
        source = self.entry.source
        n_expression = source.expression.shape[1]
        expression = arrays["expression"]
        if expression.shape[0] > n_expression:
            raise ProtocolError(f"expression has {expression.shape[0]} values; this avatar's head model takes at "
                                f"most {n_expression}")
        expression = np.pad(expression, (0, n_expression - expression.shape[0]))
        row = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float32))[None]  # noqa: E731
        zeros = np.zeros(3, np.float32)
        transform = row(arrays["transform"])
        if "K" in arrays:
            camera = Camera(reference_to_viewmat(transform), row(arrays["K"]), *arrays["size"])
        else:  # the reference's focal (12) at the source's size
            camera = Camera.from_reference(transform, (source.camera.width, source.camera.height))
        return FrameParams(source.shape, row(expression), row(arrays.get("global_pose", zeros)),
                           row(arrays.get("neck_pose", zeros)), row(arrays["jaw_pose"]), row(arrays["eye_pose"]),
                           row(arrays.get("translation", zeros)), camera)

    def track(self, data: bytes, head) -> FrameParams | None:
        """A webcam frame -> FrameParams [1], or None without a face (on a tracking thread)."""
        image = decode_frame(data, self.config.max_image_pixels)
        with self._tracker_lock:
            if self._closed:
                return None
            if self.tracker is None:
                from gagavatar.live import FrameTracker

                self.tracker = FrameTracker(head)
            return self.tracker(image)

    def close_tracker(self) -> None:
        with self._tracker_lock:
            self._closed = True
            if self.tracker is not None:
                self.tracker.close()
                self.tracker = None

    def info(self) -> dict:
        seconds = time.perf_counter() - self.started
        return {"id": self.id, "avatar": self.entry.id, "input": self.kind, "seconds": round(seconds, 1),
                "pending_input": int(self.inbox.pending), "pending_output": int(self.outbox.pending),
                "blocked_sending": self.sending, "sent_seq": self.sent, "acked_seq": self.acked,
                "fps": round(self.counts["served"] / max(seconds, 1e-9), 2), **self.counts}


def decode_frame(data: bytes, max_pixels: int) -> np.ndarray:
    """A webcam frame (JPEG or PNG) as RGB uint8 [H, W, 3]; its size is checked before decoding."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format not in ("JPEG", "PNG"):
                raise ProtocolError(f"a webcam frame in {im.format} format: send JPEG or PNG", 1003)
            if im.width * im.height > max_pixels:
                raise ProtocolError(f"a webcam frame of {im.width}x{im.height} pixels; the limit is {max_pixels:,}",
                                    1009)
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        if isinstance(e, ProtocolError):
            raise
        raise ProtocolError(f"a webcam frame that is not a readable JPEG or PNG image ({uploads.describe(data)})",
                            1003) from e


# --------------------------------------------------------------------------- the service
class Service:
    """The model, its render thread, the avatars, the sessions and the counts."""

    def __init__(self, config: ServeConfig, animator: Animator):
        self.config, self.animator = config, animator
        self.engine = RenderEngine(animator, config.max_batch)
        self.cache = AvatarCache(config.max_avatars, int(config.max_avatar_mb * 2**20))
        self.sessions: dict[str, Session] = {}
        self.totals = dict.fromkeys(COUNTERS, 0)
        self.latencies: deque[float] = deque(maxlen=5000)  # ms, input received -> frame handed to the socket
        self.ended: dict[str, int] = {}  # why sessions ended -> how many
        self.uploads = {"created": 0, "refused": 0}
        self.server_errors = 0
        self.started = time.time()
        self.pool: ThreadPoolExecutor | None = None
        self.workdir: Path | None = None
        self._upload_lock = asyncio.Lock()
        self._uploads_waiting = 0

    # ------------------------------------------------------------------ lifecycle
    @contextlib.asynccontextmanager
    async def lifespan(self, app):
        self.workdir = Path(tempfile.mkdtemp(prefix="gagavatar-serve-"))
        self.pool = ThreadPoolExecutor(self.config.track_workers, thread_name_prefix="gagavatar-track")
        self._upload_lock = asyncio.Lock()
        self.engine.start()
        try:
            yield
        finally:
            self.engine.stop()
            self.pool.shutdown(wait=False, cancel_futures=True)
            shutil.rmtree(self.workdir, ignore_errors=True)

    # ------------------------------------------------------------------ HTTP
    async def page(self, request: Request) -> Response:
        html = resources.files("gagavatar.serve").joinpath("page.html").read_text()
        return HTMLResponse(html, headers={
            "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                                       "img-src 'self' blob: data:; media-src 'self' blob: mediastream:; "
                                       "connect-src 'self'; base-uri 'none'; form-action 'none'",
            "Cache-Control": "no-store"})

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "sessions": len(self.sessions), "avatars": len(self.cache),
                             "device": str(self.animator.device), "render_size": self.animator.size,
                             "bundled_model": self.animator.uses_bundled_model,
                             "note": BUNDLED_MODEL_NOTE if self.animator.uses_bundled_model else None,
                             "uptime_s": round(time.time() - self.started, 1), "limits": self.config.limits()})

    async def metrics(self, request: Request) -> Response:
        lat = np.asarray(self.latencies, np.float64)
        pct = (lambda q: round(float(np.percentile(lat, q)), 1) if lat.size else None)  # noqa: E731
        return JSONResponse({
            "uptime_s": round(time.time() - self.started, 1),
            "sessions": {"active": len(self.sessions), "ended": dict(self.ended),
                         "list": [s.info() for s in self.sessions.values()]},
            "queues": {"render": self.engine.depth,
                       "pending_input": sum(s.inbox.pending for s in self.sessions.values()),
                       "pending_output": sum(s.outbox.pending for s in self.sessions.values())},
            "frames": dict(self.totals),
            "latency_ms": {"p50": pct(50), "p95": pct(95), "p99": pct(99), "n": int(lat.size),
                           "window": self.latencies.maxlen},
            "render": {"frames": self.engine.frames, "busy_s": round(self.engine.busy_s, 2),
                       "batches": {str(k): v for k, v in sorted(self.engine.batches.items())}},
            "avatars": {"count": len(self.cache), "bytes": self.cache.nbytes, "created": self.cache.created,
                        "evicted": self.cache.evicted},
            "uploads": dict(self.uploads),
            "errors": {"server": self.server_errors},
            "rss_mb": rss_mb(),
        })

    async def create_avatar(self, request: Request) -> Response:
        t0 = time.perf_counter()
        try:
            data = await self._upload(request)
            kind = uploads.sniff(data)
            if self._uploads_waiting >= 2 * self.config.track_workers + 2:
                raise uploads.UploadError(503, "the server is busy making other avatars: try again in a few seconds")
            self._uploads_waiting += 1
            try:
                async with self._upload_lock:  # one at a time: tracking and reconstruction compete with rendering
                    entry = await self._make_avatar(data, kind)
            finally:
                self._uploads_waiting -= 1
        except uploads.UploadError as e:
            self.uploads["refused"] += 1
            return JSONResponse({"error": str(e)}, e.status)
        except Exception as e:  # a bug or a failed reconstruction: this request fails, the server stays up
            log.exception("making an avatar failed")
            self.server_errors += 1
            return JSONResponse({"error": f"internal error ({type(e).__name__}): see the server's log"}, 500)
        self.uploads["created"] += 1
        return JSONResponse({"id": entry.id, "width": self.animator.size, "height": self.animator.size,
                             "seconds": round(time.perf_counter() - t0, 2)}, 201)

    async def delete_avatar(self, request: Request) -> Response:
        if not self.cache.remove(request.path_params["avatar_id"]):
            return JSONResponse({"error": "no such avatar"}, 404)
        return JSONResponse({"deleted": request.path_params["avatar_id"]})

    async def _upload(self, request: Request) -> bytes:
        """The photo or archive of a POST: the multipart field ``photo``, or the whole body."""
        limit = int(self.config.max_upload_mb * 2**20)
        too_big = uploads.UploadError(413, f"the upload is larger than {self.config.max_upload_mb:g} MB "
                                           f"(--max-upload-mb)")
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit + 64 * 1024):
            raise too_big
        chunks, n = [], 0
        async for chunk in request.stream():
            n += len(chunk)
            if n > limit + 64 * 1024:  # the multipart framing around the file may add a little
                raise too_big
            chunks.append(chunk)
        body = b"".join(chunks)
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            if not body:
                raise uploads.UploadError(400, "no photo: send it as the multipart field 'photo' (curl -F "
                                               "photo=@face.jpg) or as the request body")
            return body

        async def replay():
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(request.scope, replay).form(max_files=1, max_fields=8)
        except Exception as e:  # python-multipart's parse errors have no common base
            raise uploads.UploadError(400, f"a multipart body that cannot be read ({e})") from e
        try:
            photo = form.get("photo")
            if photo is None or isinstance(photo, str):
                raise uploads.UploadError(400, "no file in the multipart field 'photo' (curl -F photo=@face.jpg)")
            data = await photo.read()
        finally:
            await form.close()
        if len(data) > limit:
            raise too_big
        return data

    async def _make_avatar(self, data: bytes, kind: str) -> AvatarEntry:
        folder = Path(tempfile.mkdtemp(prefix="upload-", dir=self.workdir))
        loop = asyncio.get_running_loop()
        try:
            video, frame = await loop.run_in_executor(self.pool, self._prepare, data, kind, folder)
            try:
                avatar = await self.engine.call(lambda: self.animator.reconstruct(video, frame))
            except (ValueError, OSError) as e:
                raise uploads.UploadError(422, _without(str(e), folder)) from e
            entry = AvatarEntry(secrets.token_urlsafe(12), avatar, video.frames(frame), avatar_bytes(avatar))
        finally:
            uploads.remove(folder)
        self.cache.put(entry)
        return entry

    def _prepare(self, data: bytes, kind: str, folder: Path):
        """(tracked video, source frame) of an upload, on a worker thread."""
        c = self.config
        try:
            if kind == "zip":
                max_bytes = int(c.max_unpacked_mb * 2**20)
                root = uploads.extract_archive(data, folder / "archive", max_bytes, c.max_archive_files)
                video = uploads.open_tracked(root, c.max_image_pixels, max_bytes)
            else:
                photo = uploads.save_photo(data, folder / "photo", c.max_image_pixels)
                try:
                    video = load_tracked(photo, folder / "tracked", self.animator.head, progress=False)
                except ValueError as e:
                    if "no face" in str(e).lower():
                        raise uploads.UploadError(422, "no face found in the photo: send a photo that shows a "
                                                       "face, large and from the front") from e
                    raise
            frame = source_frame(video)
            if kind == "zip":
                uploads.check_frame(video, frame)
            return video, frame
        except uploads.UploadError:
            raise
        except (ValueError, OSError, KeyError, IndexError) as e:  # dataset, image and tracking errors
            message = _without(str(e), folder)
            if "no face" in message.lower() or "has no tracked face" in message.lower():
                raise uploads.UploadError(422, f"no face found: {message}") from e
            raise uploads.UploadError(422, f"the upload cannot be used: {message}") from e

    # ------------------------------------------------------------------ WebSocket
    async def drive(self, websocket: WebSocket) -> None:
        entry = self.cache.get(websocket.path_params["avatar_id"])
        if entry is None:
            return await deny(websocket, 404, "no such avatar: create one with POST /avatars (the server forgets "
                                              "the least recently used ones when its cache is full)")
        if len(self.sessions) >= self.config.max_sessions:
            return await deny(websocket, 503, f"the server has {len(self.sessions)} sessions, its limit "
                                              f"(--max-sessions): try again later")
        try:
            session = Session(entry, parse_options(dict(websocket.query_params), strings=True), self.config,
                              self.totals)
        except ProtocolError as e:
            return await deny(websocket, 400, str(e))
        await websocket.accept()
        self.sessions[session.id] = session
        tasks = []
        try:
            await websocket.send_text(json.dumps({
                "type": "ready", "session": session.id, "avatar": entry.id, "width": self.animator.size,
                "height": self.animator.size, "format": session.format, "quality": session.quality,
                "controls": asdict(session.controls), "limits": self.config.limits()}))
            tasks = [asyncio.create_task(c) for c in (self._receive(websocket, session), self._pump(session),
                                                      self._send(websocket, session))]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            error = next(t.exception() for t in done)
            raise error if error is not None else SessionEnd("the session ended")
        except (ClientGone, WebSocketDisconnect):
            self._ended("client closed")
        except ProtocolError as e:  # a broken client: its session ends, with the reason
            self._ended(f"protocol error {e.code}")
            await self._close(websocket, e.code, str(e))
        except SessionEnd as e:
            self._ended(str(e).split(":")[0])
            await self._close(websocket, e.code, str(e))
        except Exception as e:  # a bug or a failed render: this session ends, the server stays up
            log.exception("session %s failed", session.id)
            self.server_errors += 1
            self._ended("server error")
            await self._close(websocket, 1011, f"internal error ({type(e).__name__}): see the server's log")
        except asyncio.CancelledError:  # the server is stopping
            self._ended("cancelled")
            raise
        finally:  # the bookkeeping first: an await here may be cancelled again
            self.sessions.pop(session.id, None)
            for task in tasks:
                task.cancel()
            if session.kind == "webcam":  # its tracker may be in use on a tracking thread: closed there
                asyncio.get_running_loop().run_in_executor(self.pool, session.close_tracker)
            await asyncio.gather(*tasks, return_exceptions=True)

    def _ended(self, why: str) -> None:
        self.ended[why] = self.ended.get(why, 0) + 1

    async def _close(self, websocket: WebSocket, code: int, message: str) -> None:
        """Say why, then close; a client that reads nothing is left behind after 2 s."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(websocket.send_text(json.dumps({"type": "error", "message": message,
                                                                   "code": code})), 2.0)
            await asyncio.wait_for(websocket.close(code, _reason(message)), 2.0)

    async def _receive(self, websocket: WebSocket, s: Session) -> None:
        """Messages in: configs applied at once, frames put in the input slot (newest wins)."""
        max_binary, max_text = self.config.max_message_bytes, int(self.config.max_text_kb * 1024)
        while True:
            try:
                message = await asyncio.wait_for(websocket.receive(), self.config.idle_timeout_s)
            except asyncio.TimeoutError:
                raise SessionEnd(f"idle: no message for {self.config.idle_timeout_s:g} s", 1000) from None
            if message["type"] == "websocket.disconnect":
                raise ClientGone()
            now = time.perf_counter()
            if message.get("bytes") is not None:
                data = message["bytes"]
                if len(data) > max_binary:
                    raise ProtocolError(f"a binary message of {len(data):,} bytes; the limit is {max_binary:,} "
                                        f"(--max-message-kb)", 1009)
                header, payload = unpack(data)
                s.acknowledge(header)
                item = Input("webcam", payload, frame_id(header, s.next_id), now)
            else:
                text = message.get("text") or ""
                if len(text) > max_text:
                    raise ProtocolError(f"a text message of {len(text):,} characters; the limit is {max_text:,} "
                                        f"(--max-text-kb)", 1009)
                msg = parse_text(text)
                s.acknowledge(msg)
                if msg["type"] == "config":
                    s.configure(parse_options(msg))
                    continue
                item = Input("params", s.driver_frame(parse_params(msg)), frame_id(msg, s.next_id), now)
            if s.kind is not None and s.kind != item.kind:
                raise ProtocolError(f"a session is driven by params or by webcam frames, not both (it began "
                                    f"with {s.kind})")
            s.kind = item.kind
            s.next_id += 1
            s.count("received")
            if not s.rate.allow(now):
                s.count("rate_limited")
            elif s.inbox.put(item):
                s.count("dropped_input")

    async def _pump(self, s: Session) -> None:
        """Inputs -> (tracking ->) the render thread -> the output slot, one frame at a time."""
        loop = asyncio.get_running_loop()
        while True:
            item = await s.inbox.get()
            now = time.perf_counter()
            if s.sending or s.behind(now):  # the client is not taking its frames: render none for it
                s.count("dropped_output")
                if s.behind_since is not None and now - s.behind_since > self.config.send_timeout_s:
                    raise SessionEnd(f"not reading: the client acknowledged no frame for "
                                     f"{self.config.send_timeout_s:g} s", 1008)
                continue
            track_ms, face = 0.0, True
            driver = item.data
            if item.kind == "webcam":
                t = time.perf_counter()
                driver = await loop.run_in_executor(self.pool, s.track, item.data, self.animator.head)
                track_ms = (time.perf_counter() - t) * 1000
                face = driver is not None
                if not face:
                    s.count("no_face")
            if face:
                try:
                    rendered = await self.engine.render(s.entry.avatar, s.motion, driver, s.format, s.quality)
                except ValueError as e:  # the motion controls refused this input
                    raise ProtocolError(f"this frame cannot drive the avatar: {e}") from e
                s.last = rendered
            else:  # the last frame again (the source's own face before any)
                rendered = s.last or await self.engine.render(s.entry.avatar, None, s.entry.source, s.format,
                                                              s.quality)
            header = {"type": "frame", "frame_id": item.frame_id, "format": s.format, "width": rendered.width,
                      "height": rendered.height, "face": face, "batch": rendered.batch,
                      "timings": {"track_ms": round(track_ms, 2), "queue_ms": round(rendered.queue_ms, 2),
                                  "render_ms": round(rendered.render_ms, 2),
                                  "encode_ms": round(rendered.encode_ms, 2)},
                      "dropped": {"input": s.counts["dropped_input"] + s.counts["rate_limited"],
                                  "output": s.counts["dropped_output"]}}
            if s.outbox.put(Output(header, rendered.data, item.received)):
                s.count("dropped_output")

    async def _send(self, websocket: WebSocket, s: Session) -> None:
        """The output slot -> the client; a client that takes nothing for ``send_timeout_s`` is closed."""
        while True:
            out = await s.outbox.get()
            out.header["timings"]["server_ms"] = round((time.perf_counter() - out.received) * 1000, 2)
            out.header["seq"] = s.sent + 1
            s.sending = True
            try:
                await asyncio.wait_for(websocket.send_bytes(pack(out.header, out.data)), self.config.send_timeout_s)
            except asyncio.TimeoutError:
                raise SessionEnd(f"not reading: the client took no frame for {self.config.send_timeout_s:g} s",
                                 1008) from None
            except (WebSocketDisconnect, OSError, RuntimeError) as e:
                raise ClientGone() from e
            finally:
                s.sending = False
            s.sent += 1
            self.latencies.append((time.perf_counter() - out.received) * 1000)
            s.count("served")


def _reason(message: str) -> str:
    """A close frame's reason: at most 123 bytes of UTF-8."""
    return message.encode()[:120].decode(errors="ignore")


def _without(text: str, folder: Path) -> str:
    """A message without the server's own paths."""
    for f in sorted({str(folder), str(folder.resolve())}, key=len, reverse=True):
        text = text.replace(f.rstrip("/") + "/", "").replace(f, "")
    return text


async def deny(websocket: WebSocket, status: int, message: str) -> None:
    """Refuse a WebSocket before accepting it: an HTTP answer with the reason where the server
    supports it, else a close."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(JSONResponse({"error": message}, status))
    else:
        await websocket.close(1008, _reason(message))


def rss_mb() -> float | None:
    """This process's resident memory (Linux), MB."""
    try:
        with open("/proc/self/statm") as f:
            return round(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
    except (OSError, ValueError, IndexError):
        return None


# --------------------------------------------------------------------------- the gate
class Guard:
    """Every HTTP and WebSocket request passes here first: the token (when the server has one,
    as ``Authorization: Bearer ...`` or ``?token=``), the Host header (loopback names only on a
    loopback bind: no DNS rebinding) and the Origin (the page's own, or ``allowed_origins``)."""

    def __init__(self, app, config: ServeConfig):
        self.app, self.config = app, config
        self.token = config.token.encode() if config.token else None
        self.loopback = is_loopback(config.host)

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            problem = self.check(scope)
            if problem is not None:
                status, message = problem
                if scope["type"] == "http":
                    return await JSONResponse({"error": message}, status)(scope, receive, send)
                return await deny(WebSocket(scope, receive, send), status, message)
        await self.app(scope, receive, send)

    def check(self, scope) -> tuple[int, str] | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        if self.loopback and not is_loopback(urlsplit(f"//{host}").hostname or ""):
            return 421, f"this server answers to its loopback address only, not {host!r}"
        if self.token is not None:
            given = ""
            auth = headers.get("authorization", "")
            if auth.lower().startswith("bearer "):
                given = auth[7:].strip()
            else:
                from urllib.parse import parse_qs

                given = (parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token") or [""])[0]
            if not hmac.compare_digest(given.encode(), self.token):
                return 401, "a token is required: send the header 'Authorization: Bearer TOKEN' (or ?token=TOKEN)"
        origin = headers.get("origin")
        if origin is not None and urlsplit(origin).netloc != host and origin not in self.config.allowed_origins:
            return 403, f"requests from the page at {origin} are not allowed (--allowed-origin)"
        return None


# --------------------------------------------------------------------------- the app
def create_app(config: ServeConfig | None = None, animator: Animator | None = None) -> Guard:
    """The ASGI app (Starlette, behind ``Guard``); ``animator``: a loaded model to serve (else loaded
    from the config's checkpoint and head model)."""
    config = config or ServeConfig()
    config.check()
    animator = animator or Animator.load(config.checkpoint, config.head_model, config.device)
    service = Service(config, animator)
    app = Starlette(routes=[
        Route("/", service.page),
        Route("/health", service.health),
        Route("/metrics", service.metrics),
        Route("/avatars", service.create_avatar, methods=["POST"]),
        Route("/avatars/{avatar_id}", service.delete_avatar, methods=["DELETE"]),
        WebSocketRoute("/avatars/{avatar_id}/drive", service.drive),
    ], lifespan=service.lifespan)
    app.state.service = service
    guard = Guard(app, config)
    guard.service = service
    return guard


SEND_BUFFER_BYTES = 64 * 1024  # the kernel's send buffer per WebSocket (Linux doubles it)
WRITE_BUFFER_BYTES = 16 * 1024  # what asyncio queues above that before the sender waits


def _ws_protocol():
    """uvicorn's WebSocket protocol with bounded send buffers: a client that stops reading blocks
    its sender after a few hundred kilobytes (its own receive buffer included; then its frames
    are dropped) rather than after the megabytes an autotuned buffer holds."""
    try:
        from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
    except ImportError:  # another uvicorn: its default protocol, unbounded buffer
        return "auto"

    class BoundedSendBuffer(WebSocketsSansIOProtocol):
        def connection_made(self, transport):
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
            transport.set_write_buffer_limits(high=WRITE_BUFFER_BYTES)
            super().connection_made(transport)

    return BoundedSendBuffer


def _quiet_denials(record) -> bool:
    # uvicorn's websockets-sansio protocol logs a refused WebSocket (an HTTP 4xx answer, ``deny``)
    # as an error "returned without completing handshake"; the client did get the answer
    return "without completing handshake" not in record.getMessage()


def uvicorn_config(app, config: ServeConfig):
    import uvicorn

    logging.getLogger("uvicorn.error").addFilter(_quiet_denials)
    return uvicorn.Config(app, host=config.host, port=config.port, log_level="warning", ws=_ws_protocol(),
                          access_log=False,  # an access log would record ?token= in URLs
                          ws_max_size=max(config.max_message_bytes, int(config.max_text_kb * 1024)) + 1024,
                          ws_per_message_deflate=False,  # JPEG does not compress; deflate costs CPU
                          ws_ping_interval=20.0, ws_ping_timeout=20.0, timeout_graceful_shutdown=3,
                          h11_max_incomplete_event_size=64 * 1024)


def cpu_threads(threads: int = 0) -> int:
    """torch's CPU threads for a server: ``threads``, or 0: half the cores (1 to 4). On a busy
    machine more threads than free cores make torch's parallel loops wait on each other (a frame
    of the tiny model took 26 ms with 1 thread on 2 shared cores, 0.1 to 3.4 s with 2); the other
    cores run the event loop, the trackers and the uploads."""
    return threads if threads > 0 else max(1, min(4, (os.cpu_count() or 2) // 2))


def serve(config: ServeConfig, animator: Animator | None = None, say=print) -> None:
    """Serve until stopped (Ctrl-C). Sets torch's CPU threads (``config.threads``)."""
    import uvicorn

    torch.set_num_threads(cpu_threads(config.threads))
    app = create_app(config, animator)
    server = uvicorn.Server(uvicorn_config(app, config))
    host = f"[{config.host}]" if ":" in config.host else config.host
    say(f"serving on http://{host}:{config.port}/ (the browser client; API: docs/serve.md)"
        + ("; clients must send the token" if config.token else ""))
    server.run()


class RunningServer:
    """The service on a background thread (tests, benchmarks, embedding): ``.url``, ``.stop()``.
    ``port=0`` picks a free port."""

    def __init__(self, config: ServeConfig, animator: Animator | None = None, timeout: float = 60.0):
        import uvicorn

        self.app = create_app(config, animator)
        self.service: Service = self.app.service
        self.server = uvicorn.Server(uvicorn_config(self.app, config))
        self.thread = threading.Thread(target=self.server.run, name="gagavatar-serve", daemon=True)
        self.thread.start()
        deadline = time.time() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.time() > deadline:
                raise RuntimeError(f"the server did not start on {config.host}:{config.port}")
            time.sleep(0.05)
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)

    def __enter__(self) -> "RunningServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
