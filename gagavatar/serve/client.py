"""A Python client of ``gagavatar serve`` (no torch: httpx, websockets, numpy, Pillow).

    client = Client("http://127.0.0.1:8765", token=None)     # token: else env GAGAVATAR_TOKEN
    avatar = client.create_avatar("photo.jpg")               # or a tracked folder, or its .zip
    with client.drive(avatar, relative=True) as session:
        for i in range(n):
            session.send_params(params_message(params, i, width, height))   # or send_image(jpeg)
            frame = session.receive(timeout=5)
            rgb = frame.image()                              # uint8 [H, W, 3]

The server keeps only the newest input of a session: a client that sends faster than
frames come back gets the latest ones, and the frames it skipped never arrive (match
them by ``frame.frame_id``).

A voice, in pieces as it is recorded or as one file (every frame comes, in order):

    with client.speak(avatar) as session:            # or client.speak(avatar, audio="file")
        session.send_audio(samples)                  # float [n] at 16 kHz, as often as it comes
        session.end()                                # or session.send_file("voice.mp3")
        for frame in session.frames(timeout=60):     # frame.header["index"], ["t"] (seconds)
            ...
        session.done                                 # {"type": "done", "frames", "seconds", "fps"}
"""
from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gagavatar.serve.config import TOKEN_ENV
from gagavatar.serve.protocol import decode_image, pack, pcm16_bytes, unpack


class ServeError(RuntimeError):
    """The server refused a request or ended a session: ``status`` (HTTP) or ``code`` (WebSocket
    close code), and its message."""

    def __init__(self, message: str, status: int | None = None, code: int | None = None):
        super().__init__(message)
        self.status, self.code = status, code


@dataclass
class Frame:
    """A rendered frame: the server's header (frame_id, format, width, height, face, timings,
    dropped) and the encoded image."""

    header: dict
    data: bytes

    @property
    def frame_id(self):
        return self.header.get("frame_id")

    def image(self) -> np.ndarray:
        """RGB uint8 [H, W, 3]."""
        h = self.header
        return decode_image(self.data, h.get("format", "jpeg"), h.get("width"), h.get("height"))


class Client:
    """HTTP calls and drive sessions of one server."""

    def __init__(self, url: str = "http://127.0.0.1:8765", token: str | None = None, timeout: float = 120.0):
        import httpx

        self.url = url.rstrip("/")
        self.token = token or os.environ.get(TOKEN_ENV) or None
        self.timeout = timeout
        self._http = httpx.Client(base_url=self.url, timeout=timeout, headers=self._auth(), trust_env=False)

    def _auth(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def _check(self, response):
        if response.status_code >= 400:
            try:
                message = response.json().get("error", response.text)
            except ValueError:
                message = response.text
            raise ServeError(f"{response.status_code}: {message}", status=response.status_code)
        return response.json()

    def health(self) -> dict:
        return self._check(self._http.get("/health"))

    def metrics(self) -> dict:
        return self._check(self._http.get("/metrics"))

    def create_avatar(self, photo) -> str:
        """An avatar from ``photo``: an image file, a tracked folder (zipped here), a .zip of one,
        or the bytes of any of these. Returns its id."""
        if isinstance(photo, (bytes, bytearray)):
            data, name = bytes(photo), "upload"
        else:
            path = Path(photo)
            data, name = (zip_folder(path), f"{path.name}.zip") if path.is_dir() else (path.read_bytes(), path.name)
        return self._check(self._http.post("/avatars", files={"photo": (name, data)}))["id"]

    def delete_avatar(self, avatar_id: str) -> None:
        self._check(self._http.delete(f"/avatars/{avatar_id}"))

    def drive(self, avatar_id: str, **options) -> "DriveSession":
        """Open a drive session; ``options``: motion controls (transfer, relative, expression_scale,
        jaw_scale, eye_scale, stabilize) and output (format: jpeg | png | raw, quality)."""
        return DriveSession(self._connect(f"/avatars/{avatar_id}/drive", options))

    def speak(self, avatar_id: str, **options) -> "SpeakSession":
        """Open a speak session; ``options``: as ``drive``'s, and ``audio``: "pcm16" (pieces of
        audio, then ``end``) or "file" (one sound file)."""
        return SpeakSession(self._connect(f"/avatars/{avatar_id}/speak", options))

    def _connect(self, path: str, options: dict):
        from urllib.parse import urlencode

        from websockets.exceptions import InvalidStatus
        from websockets.sync.client import connect

        ws_url = "ws" + self.url[len("http"):] + path
        query = {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in options.items()}
        if query:
            ws_url += "?" + urlencode(query)
        try:
            ws = connect(ws_url, additional_headers=self._auth(), max_size=None, compression=None,
                         open_timeout=self.timeout, proxy=None)
        except InvalidStatus as e:
            body = e.response.body or b""
            try:
                message = json.loads(body).get("error", body.decode(errors="replace"))
            except ValueError:
                message = body.decode(errors="replace")
            raise ServeError(f"{e.response.status_code}: {message}", status=e.response.status_code) from None
        return ws

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class DriveSession:
    """One WebSocket drive session. ``ready``: the server's first message (session id, frame size,
    format, controls, limits). Sending and receiving may run on two threads."""

    def __init__(self, ws):
        self.ws = ws
        self.last_seq = 0  # acknowledged on every message: the server sends at most its window ahead
        self.warnings: list[dict] = []  # the server's warnings (e.g. sending over --max-fps), newest last
        self.ready = self._next_text()
        if self.ready.get("type") != "ready":
            raise ServeError(f"the server did not start the session: {self.ready}")

    @property
    def width(self) -> int:
        return self.ready["width"]

    @property
    def height(self) -> int:
        return self.ready["height"]

    def configure(self, **options) -> None:
        """New motion controls (they start the motion afresh) or output options, from the next frame."""
        self.ws.send(json.dumps({"type": "config", "ack": self.last_seq, **options}))

    def send_params(self, message: dict | None = None, **fields) -> None:
        """One frame of head parameters: a dict as ``protocol.params_message`` makes, and/or fields
        (expression, jaw_pose, eye_pose, transform; optionally global_pose, neck_pose, translation,
        K with size, frame_id), lists or numpy arrays."""
        params = {"type": "params", "ack": self.last_seq, **(message or {}), **fields}
        self.ws.send(json.dumps({k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in params.items()}))

    def send_image(self, data: bytes, frame_id=None) -> None:
        """One webcam frame, JPEG or PNG bytes; the server tracks it."""
        header = {"ack": self.last_seq} if frame_id is None else {"frame_id": frame_id, "ack": self.last_seq}
        self.ws.send(pack(header, data))

    def receive(self, timeout: float | None = None) -> Frame:
        """The next rendered frame (TimeoutError after ``timeout`` seconds); a ``ServeError`` when
        the server ends the session, with its reason."""
        while True:
            message = self._recv(timeout)
            if isinstance(message, str):
                text = json.loads(message)
                self._raise_if_error(text)
                if text.get("type") == "warning":
                    self.warnings = self.warnings[-9:] + [text]
                continue
            header, data = unpack(message)
            self.last_seq = max(self.last_seq, int(header.get("seq", 0)))
            return Frame(header, data)

    def _next_text(self) -> dict:
        message = self._recv(30.0)
        if not isinstance(message, str):
            raise ServeError("the server sent a frame before its ready message")
        message = json.loads(message)
        self._raise_if_error(message)
        return message

    def _raise_if_error(self, message: dict) -> None:
        if message.get("type") == "error":
            raise ServeError(message.get("message", "error"), code=message.get("code"))

    def _recv(self, timeout):
        from websockets.exceptions import ConnectionClosed

        try:
            return self.ws.recv(timeout=timeout)
        except ConnectionClosed as e:
            close = e.rcvd
            raise ServeError(f"the session ended ({close.code if close else 'no close frame'}: "
                             f"{close.reason if close else ''})", code=close.code if close else None) from None

    def close(self) -> None:
        self.ws.close()

    def __enter__(self) -> "DriveSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SpeakSession(DriveSession):
    """One WebSocket speak session: audio in, every frame back in order, then ``done``."""

    def __init__(self, ws):
        super().__init__(ws)
        self.done: dict | None = None  # the server's done message, once every frame has come

    @property
    def sample_rate(self) -> int:
        return self.ready["sample_rate"]

    def send_audio(self, samples) -> None:
        """Mono float samples [n] in [-1, 1] at ``sample_rate`` (sent as PCM16), or PCM16 bytes."""
        self.ws.send(samples if isinstance(samples, (bytes, bytearray)) else pcm16_bytes(samples))

    def end(self) -> None:
        """The audio has ended: the last frames follow, then ``done``."""
        self.ws.send(json.dumps({"type": "end"}))

    def send_file(self, audio) -> None:
        """A whole sound file (a path or its bytes; a session opened with ``audio="file"``)."""
        self.ws.send(audio if isinstance(audio, (bytes, bytearray)) else Path(audio).read_bytes())

    def receive(self, timeout: float | None = None) -> Frame | None:
        """The next frame, or None once the server said ``done`` (kept in ``done``)."""
        if self.done is not None:
            return None
        while True:
            message = self._recv(timeout)
            if isinstance(message, str):
                text = json.loads(message)
                self._raise_if_error(text)
                if text.get("type") == "done":
                    self.done = text
                    return None
                continue
            header, data = unpack(message)
            return Frame(header, data)

    def frames(self, timeout: float | None = None):
        """Every frame until ``done`` (``timeout``: for each)."""
        while (frame := self.receive(timeout)) is not None:
            yield frame


def zip_folder(folder: Path) -> bytes:
    """A tracked folder as a .zip in memory (its files, relative to it)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                z.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()
