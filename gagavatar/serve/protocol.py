"""The wire format of ``gagavatar serve`` (docs/serve.md), shared by the server and the clients.

No torch here: a client needs only this module (numpy and Pillow).

Binary messages, both ways, are one length-prefixed JSON header and a payload::

    [4 bytes: header length N, big-endian][N bytes: JSON header, UTF-8][payload]

- client -> server: a webcam frame (JPEG or PNG) with header ``{"frame_id": 7, "ack": 5}``;
  a bare JPEG (starting with FF D8) is accepted too and numbered by the server.
- server -> client: a rendered frame, header ``{"type": "frame", "seq": 6, "frame_id": 7,
  "format": "jpeg", "width", "height", "face", "timings": {...}, "dropped": {...}}``.

``ack`` (optional, on any client message): the ``seq`` of the last frame received. A client
that acknowledges gets at most ``window`` frames it has not acknowledged (the ready
message says how many); frames beyond are not rendered for it (latest frame wins).

Text messages are JSON objects with a ``type``: ``config`` (motion controls and the output
format), ``params`` (one frame of head parameters; the default type), and from the server
``ready`` and ``error``.

A speak session (``WS /avatars/{id}/speak``) takes audio instead:

- client -> server: binary messages of PCM16 (signed 16-bit little-endian, mono, 16 kHz), any
  length, then the text message ``{"type": "end"}``; or, with the option ``audio=file``, one
  binary message holding a whole sound file (wav, mp3, m4a, flac, ...: decoded by ffmpeg),
  which is all the speech. ``config`` (controls, format) only before the audio.
- server -> client: frames as they are made, header ``{"type": "frame", "seq": 1, "index": 0,
  "t": 0.0, ...}`` (frame ``index`` shows the speech at ``t = index / fps`` seconds), every
  frame in order, none dropped; then the text message ``{"type": "done", "frames", "seconds",
  "fps"}`` and a normal close (1000).
"""
from __future__ import annotations

import io
import json
import math
import re
import struct

import numpy as np

HEADER_LENGTH = struct.Struct(">I")
MAX_HEADER_BYTES = 64 * 1024
JPEG_MAGIC = b"\xff\xd8"

FORMATS = ("jpeg", "png", "raw")  # raw: RGB bytes, row-major [height, width, 3]
DEFAULT_FORMAT, DEFAULT_QUALITY = "jpeg", 85

# One frame of head parameters, as the dataset format names them (docs/data-format.md):
# name -> trailing shape. expression may have 1..E values (missing ones are zero).
PARAM_FIELDS = {"expression": (None,), "jaw_pose": (3,), "eye_pose": (6,), "global_pose": (3,), "neck_pose": (3,),
                "translation": (3,), "transform": (3, 4), "K": (3, 3)}
REQUIRED_FIELDS = ("expression", "jaw_pose", "eye_pose", "transform")
MAX_EXPRESSION = 400
MAX_ABS_VALUE = 1e4  # parameters and cameras are small numbers; anything larger is garbage
MAX_JSON_DEPTH = 32  # a params message nests 3 deep; json.loads recurses once per level

CONTROL_FIELDS = {"transfer": str, "relative": bool, "expression_scale": float, "jaw_scale": float,
                  "eye_scale": float, "stabilize": float}
OUTPUT_FIELDS = {"format": str, "quality": int}
SPEAK_FIELDS = {"audio": str}  # how a speak session's audio comes: AUDIO_INPUTS
AUDIO_INPUTS = ("pcm16", "file")  # PCM16 LE mono at the speech model's rate, in pieces; one sound file
PCM16_SCALE = 32768.0  # full scale of a 16-bit sample (what ffmpeg divides by as well)


class ProtocolError(ValueError):
    """A message that does not follow the protocol; ``code`` is the WebSocket close code."""

    def __init__(self, message: str, code: int = 1007):
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------- JSON
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(r"[\[\]{}]")


def nests_deeper(text: str | bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the arrays and objects of a JSON text nest more than ``limit`` deep, found without
    parsing it (no recursion, linear time): ``json.loads`` recurses once per level, so a text
    nested 30,000 deep would exhaust the stack before it is refused."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if text.count("[") + text.count("{") <= limit:  # the usual case: too few to nest that deep
        return False
    depth = 0
    for m in _BRACKET.finditer(_JSON_STRING.sub("", text)):
        depth += 1 if m.group() in "[{" else -1
        if depth > limit:
            return True
    return False


def loads(text: str | bytes, what: str, code: int = 1007):
    """``json.loads`` of a client's message, its nesting checked first (``ProtocolError``, ``code``)."""
    if nests_deeper(text):
        raise ProtocolError(f"{what} nests arrays or objects more than {MAX_JSON_DEPTH} deep", code)
    try:
        return json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        detail = f"{e.msg} at character {e.pos}" if isinstance(e, json.JSONDecodeError) else str(e)
        raise ProtocolError(f"{what} is not JSON ({detail})", code) from e


# --------------------------------------------------------------------------- binary messages
def pack(header: dict, payload: bytes = b"") -> bytes:
    """One binary message: the length-prefixed JSON header, then the payload."""
    head = json.dumps(header, separators=(",", ":")).encode()
    return HEADER_LENGTH.pack(len(head)) + head + payload


def unpack(message: bytes) -> tuple[dict, bytes]:
    """(header, payload) of a binary message; a bare JPEG is ({}, message)."""
    message = bytes(message)
    if message[:2] == JPEG_MAGIC:
        return {}, message
    if len(message) < HEADER_LENGTH.size:
        raise ProtocolError(f"a binary message of {len(message)} bytes: expected a 4-byte header length, a JSON "
                            f"header and an image (docs/serve.md)", 1003)
    (n,) = HEADER_LENGTH.unpack_from(message)
    if n > min(MAX_HEADER_BYTES, len(message) - HEADER_LENGTH.size):
        raise ProtocolError(f"a binary message whose header length is {n} bytes (the message has {len(message)}): "
                            f"expected [u32 big-endian N][N bytes JSON][image]", 1003)
    header = loads(message[HEADER_LENGTH.size:HEADER_LENGTH.size + n], "the header of a binary message", 1003)
    if not isinstance(header, dict):
        raise ProtocolError("the header of a binary message must be a JSON object", 1003)
    return header, message[HEADER_LENGTH.size + n:]


def parse_text(text: str) -> dict:
    """A text message as a JSON object (type "params" when it names none)."""
    message = loads(text, "a text message")
    if not isinstance(message, dict):
        raise ProtocolError("a text message must be a JSON object with a 'type' (config or params)")
    message.setdefault("type", "params")
    if message["type"] not in ("config", "params"):
        raise ProtocolError(f"unknown message type {message['type']!r}: send 'config' or 'params'")
    return message


def frame_id(header: dict, fallback: int):
    """The client's frame id (an integer or a short string), or ``fallback``."""
    value = header.get("frame_id", fallback)
    if isinstance(value, bool) or not isinstance(value, (int, str)) or (isinstance(value, str) and len(value) > 64):
        raise ProtocolError(f"frame_id {value!r}: use an integer or a string of at most 64 characters")
    return value


# --------------------------------------------------------------------------- head parameters
def parse_params(fields: dict) -> dict:
    """The arrays of a params message, checked: {name: float32 array} for the fields it has
    (``REQUIRED_FIELDS`` always), plus ``size`` (width, height) when it gives ``K``."""
    missing = [name for name in REQUIRED_FIELDS if name not in fields]
    if missing:
        raise ProtocolError(f"a params message lacks {missing}: send expression [E], jaw_pose [3], eye_pose [6] "
                            f"and transform [3, 4] (docs/serve.md)")
    out = {}
    for name, shape in PARAM_FIELDS.items():
        if name not in fields or fields[name] is None:
            continue
        try:
            value = np.asarray(fields[name], dtype=np.float32)
        except (TypeError, ValueError) as e:
            raise ProtocolError(f"{name}: expected numbers ({e})") from e
        ok = value.ndim == len(shape) and all(s is None or s == v for s, v in zip(shape, value.shape))
        if name == "expression":
            ok = ok and 1 <= value.shape[0] <= MAX_EXPRESSION
        if not ok:
            want = "[1..%d]" % MAX_EXPRESSION if name == "expression" else list(shape)
            raise ProtocolError(f"{name} has shape {list(value.shape)}; expected {want}")
        if not np.all(np.isfinite(value)) or np.abs(value).max(initial=0) > MAX_ABS_VALUE:
            raise ProtocolError(f"{name} holds a value that is not finite or larger than {MAX_ABS_VALUE:g}")
        out[name] = value
    if abs(np.linalg.det(out["transform"][:, :3].astype(np.float64))) < 1e-3:
        raise ProtocolError("transform: its 3x3 part must be a camera rotation (the reference 3x4, SPEC 7.1)")
    if "K" in out:
        size = fields.get("size")
        if (not isinstance(size, (list, tuple)) or len(size) != 2
                or not all(isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= 16384 for s in size)):
            raise ProtocolError(f"K is in pixels of an image: give its size as [width, height] (got {size!r})")
        if out["K"][0, 0] <= 0 or out["K"][1, 1] <= 0:
            raise ProtocolError("K must have positive focal lengths")
        out["size"] = (int(size[0]), int(size[1]))
    return out


def params_message(arrays, index: int, width: int, height: int, frame_id=None) -> dict:
    """Frame ``index`` of tracked parameters (a params.npz, a ``VideoParams``, any mapping of the arrays) as a
    params message: what a tracker on the client side sends. ``width`` x ``height``: the
    image size ``K`` is given at (the video's)."""
    arrays = getattr(arrays, "arrays", arrays)  # a VideoParams holds them in .arrays
    message = {"type": "params", "frame_id": index if frame_id is None else frame_id}
    for name in PARAM_FIELDS:
        if name in arrays:
            message[name] = np.asarray(arrays[name], np.float32)[index].tolist()
    message["size"] = [int(width), int(height)]
    return message


# --------------------------------------------------------------------------- options
def parse_options(items: dict, strings: bool = False, speak: bool = False) -> dict:
    """Motion controls and output options of a config message or of the query string
    (``strings``: values are text, as in a URL); ``speak``: a speak session's, with ``audio``.
    Unknown names are refused."""
    out, known = {}, CONTROL_FIELDS | OUTPUT_FIELDS | (SPEAK_FIELDS if speak else {})
    for name, value in items.items():
        if name in ("type", "token"):
            continue
        if name not in known:
            raise ProtocolError(f"unknown option {name!r}: use {', '.join(known)}")
        kind = known[name]
        try:
            if kind is bool:
                if strings or isinstance(value, str):
                    if str(value).lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                        raise ValueError(value)
                    value = str(value).lower() in ("1", "true", "yes", "on")
                elif not isinstance(value, bool):
                    raise ValueError(value)
            elif kind is float:
                value = float(value)
                if not math.isfinite(value):
                    raise ValueError(value)
            elif kind is int:
                value = int(value)
            else:
                value = str(value)
        except (TypeError, ValueError):
            raise ProtocolError(f"option {name}={value!r}: expected a {kind.__name__}") from None
        out[name] = value
    if "format" in out and out["format"] not in FORMATS:
        raise ProtocolError(f"format={out['format']!r}: choose one of {FORMATS}")
    if "quality" in out and not 1 <= out["quality"] <= 100:
        raise ProtocolError(f"quality={out['quality']}: use 1 to 100")
    if "audio" in out and out["audio"] not in AUDIO_INPUTS:
        raise ProtocolError(f"audio={out['audio']!r}: choose one of {AUDIO_INPUTS}")
    return out


# --------------------------------------------------------------------------- speech
def parse_speak_text(text: str) -> dict:
    """A speak session's text message: ``config`` (before the audio) or ``end``."""
    message = loads(text, "a text message")
    if not isinstance(message, dict) or message.get("type") not in ("config", "end"):
        raise ProtocolError("a speak session's text message is {\"type\": \"end\"} after the audio, or a "
                            "{\"type\": \"config\", ...} before it")
    return message


def pcm16_samples(data: bytes) -> np.ndarray:
    """PCM16 bytes (signed, little-endian, mono) -> float32 samples [N] in [-1, 1)."""
    if len(data) % 2:
        raise ProtocolError(f"PCM16 audio of {len(data):,} bytes, an odd count: send whole 16-bit samples "
                            f"(signed, little-endian, mono)", 1003)
    return np.frombuffer(data, "<i2").astype(np.float32) / np.float32(PCM16_SCALE)


def pcm16_bytes(samples: np.ndarray) -> bytes:
    """Float samples [N] in [-1, 1] -> PCM16 bytes, as a 16-bit WAV file holds them
    (``gagavatar.io.write_wav``'s rounding)."""
    return (np.clip(np.asarray(samples, np.float32), -1, 1) * 32767).round().astype("<i2").tobytes()


# --------------------------------------------------------------------------- images
def encode_image(image: np.ndarray, format: str = DEFAULT_FORMAT, quality: int = DEFAULT_QUALITY) -> bytes:
    """RGB uint8 [H, W, 3] -> bytes: JPEG (Pillow, ``quality``), PNG (lossless) or raw RGB."""
    if format == "raw":
        return np.ascontiguousarray(image, np.uint8).tobytes()
    from PIL import Image

    buffer = io.BytesIO()
    if format == "jpeg":
        Image.fromarray(image).save(buffer, "JPEG", quality=int(quality))
    elif format == "png":
        Image.fromarray(image).save(buffer, "PNG", compress_level=1)
    else:
        raise ValueError(f"format={format!r}: choose one of {FORMATS}")
    return buffer.getvalue()


def decode_image(data: bytes, format: str = DEFAULT_FORMAT, width: int | None = None,
                 height: int | None = None) -> np.ndarray:
    """The inverse of ``encode_image``: RGB uint8 [H, W, 3] (``width``/``height`` for raw)."""
    if format == "raw":
        return np.frombuffer(data, np.uint8).reshape(height, width, 3)
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))
