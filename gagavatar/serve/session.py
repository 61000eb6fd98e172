"""One drive session's state and its flow control.

Each session keeps its own motion state (its ``Motion``; for webcam sessions its
``FrameTracker``) and two slots of one item each: the newest input not yet rendered and the
newest frame not yet sent. A newer item replaces an older one, which is counted as dropped,
so a fast sender gets the latest frame rather than a queue, and a slow reader gets fewer
frames rather than a backlog; nothing grows without bound.

- ``ack`` / ``window``: a client that acknowledges the frames it receives gets at most
  ``window`` frames ahead; one that stops reading costs nothing more after those, and is
  closed after ``send_timeout_s``.
- ``RateGuard``: ``--max-fps``, applied to a message before it is parsed (one over the rate
  costs a length check); a session that keeps sending faster is told so, then read no
  faster than its rate (TCP then slows the sender), then closed (1008).
"""
from __future__ import annotations

import asyncio
import io
import secrets
import threading
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from gagavatar.data.frame import FrameParams
from gagavatar.geometry import Camera, reference_to_viewmat
from gagavatar.reenact import Motion, MotionControls
from gagavatar.serve.cache import AvatarEntry
from gagavatar.serve.config import ServeConfig
from gagavatar.serve.engine import Rendered
from gagavatar.serve.protocol import CONTROL_FIELDS, DEFAULT_FORMAT, DEFAULT_QUALITY, ProtocolError

COUNTERS = ("received", "served", "dropped_input", "dropped_output", "rate_limited", "no_face")


class ClientGone(Exception):
    """The client closed the connection (or it broke)."""


class SessionEnd(Exception):
    """The server ends a session (idle, not reading, over its rate); ``code`` is the close code."""

    def __init__(self, message: str, code: int = 1000):
        super().__init__(message)
        self.code = code


class Finished(Exception):
    """A session has said all it had to say (a speak session's last frame): closed with 1000."""


# --------------------------------------------------------------------------- slots and rates
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

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
        self.t = now

    def allow(self, now: float) -> bool:
        self._refill(now)
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def wait(self, now: float) -> float:
        """Seconds until a message would be allowed."""
        self._refill(now)
        return max(0.0, (1 - self.tokens) / self.rate)


# A session over its rate, window by window (a second, or less for a flood): warned in its
# first window over the rate, read no faster than its rate from the THROTTLE_AFTER-th, closed
# at the CLOSE_AFTER-th. A window is over when more than OVER_SHARE of a second's allowance
# was dropped (or, while throttled, found already waiting); one where more than a whole
# second's allowance was dropped ends at once (a client sending as fast as it can is
# throttled within milliseconds, not after a second of the event loop's time).
WARN_AFTER, THROTTLE_AFTER, CLOSE_AFTER = 1, 2, 5
def rate_so_far(frames: int, since: float) -> float:
    """A session's render priority (``RenderEngine.render``: the lowest first): its frames per
    second since ``since`` (``time.perf_counter``), over one second more (a new session is not
    ranked by its first frame alone)."""
    return frames / (time.perf_counter() - since + 1.0)


OVER_RATE = 1e6  # added to the priority of a session over its rate: it waits for every other
OVER_SHARE = 0.1
BACKLOG_S = 0.002  # a message that arrives within this of a throttled read was already waiting


class RateGuard:
    """``--max-fps`` for one session, before parsing: ``admit(now, waited)`` says whether to take
    a message; ``step(now)`` what to do about a sender that keeps over the rate: "warn",
    "close" or None; ``delay(now)``: how long to wait before the next read (0 unless throttled)."""

    def __init__(self, rate: float):
        self.bucket = RateLimit(rate)
        self.rate = rate
        self.window_start = time.perf_counter()
        self.dropped = 0          # in this window
        self.backlogged = 0       # throttled reads that found a message waiting, in this window
        self.over = 0             # consecutive windows over the rate
        self.warned = False
        self.throttled = False
        self.slept = False        # the last read was held back

    def admit(self, now: float, waited: float) -> bool:
        if self.throttled and self.slept and waited < BACKLOG_S:
            self.backlogged += 1
        self.slept = False
        if self.bucket.allow(now):
            return True
        self.dropped += 1
        return False

    def delay(self, now: float) -> float:
        if not self.throttled:
            return 0.0
        wait = self.bucket.wait(now)
        self.slept = wait > 0
        return wait

    def step(self, now: float) -> str | None:
        """The verdict on the window that ends now, if one does."""
        excess, elapsed = self.dropped + self.backlogged, now - self.window_start
        flood = excess > max(10.0, self.rate)
        if elapsed < 1.0 and not flood:
            return None
        over = flood or (excess > max(1.0, OVER_SHARE * self.rate) and elapsed < 2.0)  # (2 s: a quiet gap)
        self.window_start, self.dropped, self.backlogged = now, 0, 0
        if not over:  # a window within the rate: forgiven
            self.over, self.warned, self.throttled = 0, False, False
            return None
        self.over += 1
        if self.over >= CLOSE_AFTER:
            return "close"
        if self.over >= THROTTLE_AFTER:
            self.throttled = True
        if self.over >= WARN_AFTER and not self.warned:
            self.warned = True
            return "warn"
        return None


# --------------------------------------------------------------------------- a session
@dataclass
class Input:
    kind: str            # "params" (data: FrameParams [1]) or "webcam" (data: encoded image bytes)
    data: object
    frame_id: object
    received: float      # time.perf_counter() when the message arrived at the socket


@dataclass
class Output:
    header: dict
    data: bytes
    received: float


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
        self.rate = RateGuard(config.max_fps)
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

    def priority(self) -> float:
        """Its place in the render queue (the lowest first): its frame rate so far, and after every
        session within its rate while it is over its own (warned, throttled)."""
        return rate_so_far(self.sent, self.started) + (OVER_RATE if self.rate.over else 0.0)

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
                from gagavatar.tracking.stream import FrameTracker

                self.tracker = FrameTracker(head)
            return self.tracker(image)

    def release(self, service) -> None:
        """The session has ended: its tracker (webcam sessions) is closed on a tracking thread,
        where it may be in use."""
        if self.kind == "webcam":
            asyncio.get_running_loop().run_in_executor(service.pool, self.close_tracker)

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
                "throttled": self.rate.throttled,
                "fps": round(self.counts["served"] / max(seconds, 1e-9), 2), **self.counts}


def decode_frame(data: bytes, max_pixels: int) -> np.ndarray:
    """A webcam frame (JPEG or PNG) as RGB uint8 [H, W, 3]; its size is checked before decoding
    (over ``max_pixels``, or a header claiming a decompression bomb: 1009)."""
    from PIL import Image, UnidentifiedImageError

    from gagavatar.io.files import describe_content

    too_big = "a webcam frame of {}x{} pixels; the limit is {:,} (--max-image-pixels)"
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format not in ("JPEG", "PNG"):
                raise ProtocolError(f"a webcam frame in {im.format} format: send JPEG or PNG", 1003)
            if im.width * im.height > max_pixels:
                raise ProtocolError(too_big.format(im.width, im.height, max_pixels), 1009)
            return np.asarray(im.convert("RGB"))
    except Image.DecompressionBombError:  # its header claims more pixels than Pillow will ever decode
        raise ProtocolError(f"a webcam frame whose header claims more than {2 * Image.MAX_IMAGE_PIXELS:,} pixels; "
                            f"the limit is {max_pixels:,} (--max-image-pixels)", 1009) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        if isinstance(e, ProtocolError):
            raise
        raise ProtocolError(f"a webcam frame that is not a readable JPEG or PNG image ({describe_content(data)})",
                            1003) from e
