"""``WS /avatars/{id}/speak``: a voice drives an avatar; its frames come back as they are made.

Audio comes in as PCM16 pieces (then ``{"type": "end"}``) or as one sound file (``audio=file``,
decoded by the project's ffmpeg reader on a worker thread). The speech model runs chunk by
chunk as the audio arrives (``SpeakerStream``: 4 s chunks, the previous chunk as context,
exactly ``Speaker.drive`` of the whole audio), on the service's one speech thread; each frame
is rendered by the render threads, in order, and sent with its index and time (frame i shows
the speech at i / fps seconds); then ``done`` and a normal close.

Four tasks a session:

- ``receive``: messages in, sizes checked as the drive socket checks them. Audio is never
  dropped: over ``--max-fps`` messages a second the session is read no faster (TCP slows the
  sender), and not at all while ``BUFFERED_CHUNKS`` chunks of audio wait for the model.
- ``think``: audio -> the speech model -> pieces of frames (FrameParams and vertices).
- ``render``: each frame -> the render threads (one frame in flight per thread) -> the outbox.
- ``send``: the outbox -> the socket; a client that takes no frame for ``--send-timeout`` is
  closed (1008).
"""
from __future__ import annotations

import asyncio
import json
from collections import deque
import secrets
import tempfile
import time
from dataclasses import asdict

from starlette.websockets import WebSocket

from gagavatar.errors import InputError
from gagavatar.reenact import MotionControls
from gagavatar.serve.drive import admit, next_message, run_session, send_frame, within
from gagavatar.serve.guard import deny
from gagavatar.serve.protocol import (CONTROL_FIELDS, DEFAULT_FORMAT, DEFAULT_QUALITY, ProtocolError, parse_options,
                                      parse_speak_text, pcm16_samples)
from gagavatar.serve.session import Finished, Output, RateLimit, rate_so_far

BUFFERED_CHUNKS = 2   # chunks of audio a session may have waiting for the model before it is read no further
PIECES_AHEAD = 2      # pieces of frames made by the model and waiting to be rendered
FRAMES_AHEAD = 4      # rendered frames waiting to be sent
END = None            # the end of the audio, in the session's queues
BAD_AUDIO = 1003      # the close code of audio that cannot be used (as of an image that cannot be read)


class SpeakSession:
    """One speak WebSocket: its options, its speech stream (made at the first audio), its queues
    and counts."""

    def __init__(self, service, entry, options: dict):
        self.id = secrets.token_hex(4)
        self.service, self.entry = service, entry
        self.controls, self.format, self.quality = MotionControls(), DEFAULT_FORMAT, DEFAULT_QUALITY
        self.input = "pcm16"  # or "file"
        self.configure(options)
        self.stream = None  # SpeakerStream
        self.audio: asyncio.Queue = asyncio.Queue()  # (samples [n] | END, arrival time)
        self.buffered = 0  # samples waiting for the model
        self.drained = asyncio.Event()
        self.pieces: asyncio.Queue = asyncio.Queue(PIECES_AHEAD)
        self.outbox: asyncio.Queue = asyncio.Queue(FRAMES_AHEAD)
        self.samples = 0  # received
        self.ended = False  # the audio has ended (``end``, or the file)
        self.made = 0  # frames rendered
        self.sent = 0
        self.counts = {"received": 0, "served": 0}
        self.started = time.perf_counter()

    @property
    def rate(self) -> int:
        return self.service.speaker.sample_rate

    @property
    def chunk_samples(self) -> int:
        return self.service.speaker.model.config.chunk_samples

    def configure(self, options: dict) -> None:
        """Controls, output format and the audio input; only before the audio."""
        controls = {name: options[name] for name in CONTROL_FIELDS if name in options}
        try:
            self.controls = MotionControls(**{**asdict(self.controls), **controls})
        except ValueError as e:
            raise ProtocolError(str(e)) from e
        self.format = options.get("format", self.format)
        self.quality = options.get("quality", self.quality)
        self.input = options.get("audio", self.input)

    def count(self, name: str) -> None:
        self.counts[name] += 1
        if name in self.service.totals:
            self.service.totals[name] += 1

    def add_audio(self, samples, arrived: float) -> None:
        """Samples [n] for the model, a chunk at most at a time (frames come back chunk by chunk
        however the audio came), within ``--max-speech-seconds``; or END. The stream is made at the first."""
        if self.stream is None:
            from gagavatar.reenact.speaker_stream import SpeakerStream

            service = self.service
            self.stream = SpeakerStream(service.speaker, self.entry.source, service.animator.head, self.controls)
        if samples is END:
            self.ended = True
            self.audio.put_nowait((END, arrived))
            return
        limit = self.service.config.max_speech_s
        if (self.samples + len(samples)) / self.rate > limit:
            raise ProtocolError(f"more than {limit:g} s of audio in one session (--max-speech-seconds): send "
                                f"shorter speech, or one session each", 1009)
        self.samples += len(samples)
        self.buffered += len(samples)
        for start in range(0, len(samples), self.chunk_samples):
            self.audio.put_nowait((samples[start:start + self.chunk_samples], arrived))

    def info(self) -> dict:
        seconds = time.perf_counter() - self.started
        return {"id": self.id, "avatar": self.entry.id, "input": "speech", "seconds": round(seconds, 1),
                "pending_input": self.audio.qsize(), "pending_output": self.outbox.qsize(),
                "buffered_audio_s": round(self.buffered / self.rate, 2),
                "audio_s": round(self.samples / self.rate, 2), "ended": self.ended, "frames_made": self.made,
                "sent_seq": self.sent, "fps": round(self.counts["served"] / max(seconds, 1e-9), 2), **self.counts}

    def release(self, service) -> None:
        """Nothing to close: the stream's state goes with the session."""


async def speak(service, websocket: WebSocket) -> None:
    """The endpoint: refuse (HTTP 501 without a speech model; 404, 503, 400 as a drive session)
    or run the session until its last frame is sent, or it breaks."""
    if service.speaker is None:
        return await deny(websocket, 501, service.speech_note)
    entry = await admit(service, websocket)
    if entry is None:
        return
    try:
        options = parse_options(dict(websocket.query_params), strings=True, speak=True)
        session = SpeakSession(service, entry, options)
    except ProtocolError as e:
        return await deny(websocket, 400, str(e))
    speaker = service.speaker
    ready = {"type": "ready", "session": session.id, "avatar": entry.id, "width": service.animator.size,
             "height": service.animator.size, "format": session.format, "quality": session.quality,
             "controls": asdict(session.controls), "audio": session.input, "sample_rate": speaker.sample_rate,
             "fps": speaker.fps, "chunk_s": speaker.model.config.chunk_samples / speaker.sample_rate,
             "limits": service.config.limits()}
    await run_session(service, websocket, session, ready, (receive, think, render, send))


async def receive(service, websocket: WebSocket, s: SpeakSession) -> None:
    """Audio and ``end`` in; after the end only the close is awaited (another message is a 1007)."""
    config = service.config
    max_binary, max_text = config.max_message_bytes, config.max_text_bytes
    bucket = RateLimit(config.max_fps)
    most = BUFFERED_CHUNKS * s.chunk_samples
    while True:
        if not s.ended:
            await asyncio.sleep(bucket.wait(time.perf_counter()))  # over --max-fps: read slower, drop nothing
            while s.buffered >= most:  # the model is behind: leave the audio in the socket
                s.drained.clear()
                await s.drained.wait()
        # once the audio has ended, the client need not send anything while its frames come
        data, text, arrived = await next_message(websocket, None if s.ended else config.idle_timeout_s, max_binary,
                                            max_text, ": send the audio as PCM16 in smaller pieces")
        bucket.allow(time.perf_counter())
        s.count("received")
        if s.ended:
            raise ProtocolError("a message after the end of the audio: open a new session for more speech")
        if data is not None:
            if s.input == "file":
                s.add_audio(await decode_file(service, data), arrived)
                s.add_audio(END, arrived)
            else:
                s.add_audio(pcm16_samples(data), arrived)
            continue
        message = parse_speak_text(text or "")
        if message["type"] == "end":
            s.add_audio(END, arrived)
        elif s.stream is not None:
            raise ProtocolError("a config message after the audio began: send the options before the audio "
                                "(or in the URL)")
        else:
            s.configure(parse_options(message, speak=True))


async def decode_file(service, data: bytes):
    """A whole sound file -> mono float32 samples [N] at the speech model's rate, by the project's
    ffmpeg reader on a worker thread; one that cannot be read is a ``BAD_AUDIO`` close."""
    from gagavatar.io import read_audio

    def decode():
        with tempfile.NamedTemporaryFile(dir=service.workdir, prefix="speech-", suffix=".audio") as f:
            f.write(data)
            f.flush()
            try:
                return read_audio(f.name, service.speaker.sample_rate)
            except InputError as e:  # its message names our temporary file: say "the audio file"
                raise ProtocolError(str(e).replace(f.name, "the audio file"), BAD_AUDIO) from None

    return await asyncio.get_running_loop().run_in_executor(service.pool, decode)


async def think(service, websocket: WebSocket, s: SpeakSession) -> None:
    """The audio -> the speech model (its thread) -> pieces of frames for ``render``."""
    loop = asyncio.get_running_loop()
    while True:
        samples, arrived = await s.audio.get()
        t0 = time.perf_counter()
        if samples is END:
            try:
                piece = await loop.run_in_executor(service.speech_pool, s.stream.finish)
            except ValueError as e:  # no audio at all
                raise ProtocolError(f"{e}: send PCM16 samples before the end", BAD_AUDIO) from None
        else:
            piece = await loop.run_in_executor(service.speech_pool, s.stream.push, samples)
            s.buffered -= len(samples)
            s.drained.set()
        if piece is not None:
            await s.pieces.put((piece, arrived, (time.perf_counter() - t0) * 1000))
        if samples is END:
            await s.pieces.put(END)
            return


async def render(service, websocket: WebSocket, s: SpeakSession) -> None:
    """Each frame of each piece -> the render threads, one frame in flight per thread (a piece's
    frames are all known: rendering them side by side keeps up with speech where one thread
    would not) -> the outbox, in order."""
    fps, engine = service.speaker.fps, service.engine

    def output(rendered, arrived: float, speech_ms: float) -> Output:
        header = {"type": "frame", "index": s.made, "t": round(s.made / fps, 6), "format": s.format,
                  "width": rendered.width, "height": rendered.height, "batch": rendered.batch,
                  "timings": {"speech_ms": round(speech_ms, 2), "queue_ms": round(rendered.queue_ms, 2),
                              "render_ms": round(rendered.render_ms, 2), "encode_ms": round(rendered.encode_ms, 2)}}
        s.made += 1
        return Output(header, rendered.data, arrived)

    flight: deque = deque()  # this piece's frames at the render threads, oldest first
    try:
        while True:
            item = await s.pieces.get()
            if item is END:
                await s.outbox.put(END)
                return
            (frames, vertices), arrived, speech_ms = item
            for i in range(len(frames)):
                flight.append(asyncio.ensure_future(engine.render(s.entry.avatar, None, frames[i], s.format,
                                                                  s.quality, vertices[i:i + 1],
                                                                  priority=rate_so_far(s.sent, s.started))))
                if len(flight) == engine.workers:
                    await s.outbox.put(output(await flight.popleft(), arrived, speech_ms))
            while flight:
                await s.outbox.put(output(await flight.popleft(), arrived, speech_ms))
    finally:  # the session ended: frames not yet rendered are not rendered
        for job in flight:
            job.cancel()


async def send(service, websocket: WebSocket, s: SpeakSession) -> None:
    """The outbox -> the client, every frame in order; then ``done`` and the close."""
    timeout = service.config.send_timeout_s
    while True:
        out = await s.outbox.get()
        if out is END:
            await within(websocket.send_text(json.dumps({
                "type": "done", "frames": s.made, "seconds": round(s.samples / s.rate, 6), "fps": service.speaker.fps,
            })), timeout)
            raise Finished(f"done: {s.made} frames")
        # server_ms: from the arrival of the audio that completed the frame's chunk (or of the end)
        await send_frame(websocket, out, s, timeout)
        s.count("served")
