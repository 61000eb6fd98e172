"""``RenderEngine``: the one thread that owns the ``Animator``.

Every session's frames, and every new avatar's reconstruction, are jobs for this thread;
the event loop only awaits their results (it never runs the model). Each session has at
most one frame in flight, so the job queue holds at most one frame per session and the
sessions are served in turn.

Batching: the frames waiting when the thread is free are rendered in one call (up to
``max_batch``). Frames of one avatar drive its batch-1 avatar (no copy); frames of
different avatars are rendered with their avatars stacked into one batch.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass


from gagavatar.data.frame import FrameParams
from gagavatar.model.network import Avatar
from gagavatar.serve.protocol import encode_image

log = logging.getLogger(__name__)


@dataclass
class Rendered:
    """One encoded frame and what it took (milliseconds)."""

    data: bytes
    width: int
    height: int
    batch: int         # frames rendered in the same call
    queue_ms: float    # waiting for the render thread
    render_ms: float   # motion + render of the whole batch
    encode_ms: float


@dataclass
class _Frame:
    avatar: object
    motion: object | None  # a session's ``Motion``; None: ``driver`` drives the avatar as it is
    driver: FrameParams    # [1]
    format: str
    quality: int
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    submitted: float


@dataclass
class _Call:
    fn: object
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


_STOP = object()


def _deliver(job, result=None, error: BaseException | None = None) -> None:
    def settle():
        if job.future.done():  # the session ended meanwhile
            return
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)

    try:
        job.loop.call_soon_threadsafe(settle)
    except RuntimeError:  # the event loop is closed (shutting down)
        pass


class RenderEngine:
    """The render thread: ``await engine.render(...)`` a frame, ``await engine.call(fn)`` anything
    else that needs the model (reconstruction)."""

    def __init__(self, animator, max_batch: int = 4):
        if max_batch < 1:
            raise ValueError(f"max_batch={max_batch}: use 1 or more")
        self.animator, self.max_batch = animator, max_batch
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.frames = 0
        self.batches: dict[int, int] = {}  # batch size -> how many renders had it
        self.busy_s = 0.0

    # ------------------------------------------------------------------ the event loop's side
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="gagavatar-render", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout)
            self._thread = None

    @property
    def depth(self) -> int:
        """Jobs waiting for the render thread."""
        return self._queue.qsize()

    async def render(self, avatar, motion, driver: FrameParams, format: str, quality: int) -> Rendered:
        """The frame ``motion(driver)`` (or ``driver`` itself when ``motion`` is None) of ``avatar``,
        encoded. ``motion`` is called on the render thread only (it keeps the session's state)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put(_Frame(avatar, motion, driver, format, quality, future, loop, time.perf_counter()))
        return await future

    async def call(self, fn):
        """``fn()`` on the render thread."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put(_Call(fn, future, loop))
        return await future

    # ------------------------------------------------------------------ the render thread
    def _run(self) -> None:
        later = []
        while True:
            job = later.pop(0) if later else self._queue.get()
            if job is _STOP:
                return
            if isinstance(job, _Call):
                self._call(job)
                continue
            batch = [job]
            while len(batch) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if not isinstance(nxt, _Frame):
                    later.append(nxt)  # keeps its turn after this batch
                    break
                batch.append(nxt)
            self._render([j for j in batch if not j.future.cancelled()])

    def _call(self, job: _Call) -> None:
        try:
            result = job.fn()
        except Exception as e:  # the caller gets it; the thread goes on
            _deliver(job, error=e)
        else:
            _deliver(job, result)

    def _render(self, batch: list[_Frame]) -> None:
        if not batch:
            return
        t0 = time.perf_counter()
        ready = []
        for job in batch:
            try:
                ready.append((job, job.driver if job.motion is None else job.motion(job.driver)))
            except Exception as e:  # this session's input; the others go on
                _deliver(job, error=e)
        if not ready:
            return
        try:
            avatar = Avatar.cat([job.avatar for job, _ in ready])
            frames = FrameParams.cat([f for _, f in ready])
            images = list(self.animator.render(avatar, frames, batch_size=len(ready)))
        except Exception as e:
            log.exception("render failed")
            for job, _ in ready:
                _deliver(job, error=e)
            return
        t1 = time.perf_counter()
        for (job, _), image in zip(ready, images):
            t = time.perf_counter()
            try:
                data = encode_image(image, job.format, job.quality)
            except Exception as e:
                _deliver(job, error=e)
                continue
            _deliver(job, Rendered(data, image.shape[1], image.shape[0], len(ready), (t0 - job.submitted) * 1000,
                                   (t1 - t0) * 1000, (time.perf_counter() - t) * 1000))
        self.frames += len(ready)
        self.batches[len(ready)] = self.batches.get(len(ready), 0) + 1
        self.busy_s += time.perf_counter() - t0
