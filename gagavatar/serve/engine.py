"""``RenderEngine``: the threads that own the ``Animator``.

Every session's frames, and every new avatar's reconstruction, are jobs for these threads;
the event loop only awaits their results (it never runs the model). A drive session has at
most one frame in flight, so the queue holds at most one of its frames. The queue is ordered:
reconstructions first, then the frame of the session with the fewest frames a second so far
(``Session.priority``), so a session that fell behind catches up.

Batching: a render thread that is free takes the frames waiting (up to ``max_batch``, and its
share when other threads are idle) and renders them in one call. Frames of one avatar drive its
batch-1 avatar (no copy); frames of different avatars are rendered with their avatars stacked.

Threads: on the CPU, ``workers`` threads render side by side, each running torch on one core
(the server sets torch to one thread: ``gagavatar.system.set_torch_threads``). With
``processes`` (the server's default on the CPU) each thread hands its batches to a process of
its own (``gagavatar.serve.workers``), so no thread waits for Python's lock between the
model's operators; without, the threads run the model here, torch releasing the lock inside
each operator. On a GPU one thread feeds the device.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass

import torch

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
    queue_ms: float    # waiting for a render thread
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
    vertices: torch.Tensor | None = None  # [1, V, 3] when the session has them (a speaker's)


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


class RenderStats:
    """What the render threads did: frames, batches by size, and where the time went (seconds,
    wall and the threads' own CPU time), for /metrics and ``gagavatar bench serve``."""

    def __init__(self):
        self.lock = threading.Lock()
        self.frames = 0
        self.batches: dict[int, int] = {}  # batch size -> how many renders had it
        self.busy_s = self.cpu_s = 0.0     # rendering, all of it (motion, model, encoding)
        self.split_s = {"motion": 0.0, "model": 0.0, "to_image": 0.0, "encode": 0.0}  # CPU time per stage
        self.process_cpu_s = 0.0           # of that, in render processes

    def add(self, n: int, busy: float, cpu: float, split: dict[str, float], in_process: float = 0.0) -> None:
        with self.lock:
            self.frames += n
            self.batches[n] = self.batches.get(n, 0) + 1
            self.busy_s += busy
            self.cpu_s += cpu
            self.process_cpu_s += in_process
            for k, v in split.items():
                self.split_s[k] += v

    def report(self) -> dict:
        with self.lock:
            per_frame = {k: round(v / self.frames * 1000, 2) if self.frames else None for k, v in self.split_s.items()}
            return {"frames": self.frames, "busy_s": round(self.busy_s, 2), "cpu_s": round(self.cpu_s, 2),
                    "process_cpu_s": round(self.process_cpu_s, 2),
                    "batches": {str(k): v for k, v in sorted(self.batches.items())},
                    "cpu_ms_per_frame": per_frame}


class RenderEngine:
    """The render threads: ``await engine.render(...)`` a frame, ``await engine.call(fn)``
    anything else that needs the model (reconstruction)."""

    def __init__(self, animator, max_batch: int = 4, workers: int = 1, processes: bool = False):
        if max_batch < 1 or workers < 1:
            raise ValueError(f"max_batch={max_batch}, workers={workers}: use 1 or more")
        self.animator, self.max_batch, self.workers = animator, max_batch, workers
        self.processes = processes  # each render thread runs the model in a process of its own
        self._processes: list = []
        self._queue: queue.PriorityQueue = queue.PriorityQueue()  # (priority, order, job)
        self._order = itertools.count()  # equal priorities: first come, first served
        self._threads: list[threading.Thread] = []
        self._idle = 0  # render threads waiting for a job
        self._idle_lock = threading.Lock()
        self.stats = RenderStats()

    # ------------------------------------------------------------------ the event loop's side
    def start(self) -> None:
        if not self._threads:
            if self.processes:
                from gagavatar.serve.workers import RenderProcess

                self._processes = [RenderProcess(self.animator) for _ in range(self.workers)]
            self._threads = [threading.Thread(target=self._run, args=(i,), name=f"gagavatar-render-{i}", daemon=True)
                             for i in range(self.workers)]
            for thread in self._threads:
                thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        for _ in self._threads:
            self._queue.put((-math.inf, next(self._order), _STOP))
        for thread in self._threads:
            thread.join(timeout)
        for process in self._processes:
            process.close()
        self._threads, self._processes = [], []

    @property
    def process_ids(self) -> list[int]:
        """The render processes' pids (none: the model runs in this process)."""
        return [p.process.pid for p in self._processes]

    @property
    def depth(self) -> int:
        """Jobs waiting for a render thread."""
        return self._queue.qsize()

    # the counts, as before the stats had their own object
    @property
    def frames(self) -> int:
        return self.stats.frames

    @property
    def batches(self) -> dict[int, int]:
        return dict(self.stats.batches)

    async def render(self, avatar, motion, driver: FrameParams, format: str, quality: int,
                     vertices: torch.Tensor | None = None, priority: float = 0.0) -> Rendered:
        """The frame ``motion(driver)`` (or ``driver`` itself when ``motion`` is None) of ``avatar``,
        encoded. ``motion`` is called on a render thread (it keeps the session's state; a session
        has one frame in flight at a time, so it is never called twice at once). ``vertices``
        [1, V, 3]: the frame's world vertices when the caller has them (``Animator.images``).
        ``priority``: the waiting frame with the lowest is rendered first; sessions give their
        frame rate so far, so one that got fewer frames than the others catches up."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        job = _Frame(avatar, motion, driver, format, quality, future, loop, time.perf_counter(), vertices)
        self._queue.put((priority, next(self._order), job))
        return await future

    async def call(self, fn):
        """``fn()`` on a render thread, before any frame waiting."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put((-1.0, next(self._order), _Call(fn, future, loop)))
        return await future

    # ------------------------------------------------------------------ the render threads
    def _next(self):
        with self._idle_lock:
            self._idle += 1
        try:
            return self._queue.get()[-1]
        finally:
            with self._idle_lock:
                self._idle -= 1

    def _share(self) -> int:
        """How many frames this thread takes: up to ``max_batch``, and no more than its share of
        the frames waiting when other render threads are idle (two threads rendering two frames
        each finish sooner than one rendering four while the other waits)."""
        with self._idle_lock:
            idle = self._idle
        waiting = 1 + self._queue.qsize()
        return max(1, min(self.max_batch, -(-waiting // (1 + idle))))

    def _run(self, index: int) -> None:
        if self._processes:
            try:
                self._processes[index].connect()
            except Exception:  # its frames fail one by one, with this reason; the server goes on
                log.exception("render process %d did not start", index)
        later = None
        while True:
            job, later = (later, None) if later is not None else (self._next(), None)
            if job is _STOP:
                return
            if isinstance(job, _Call):
                self._call(job)
                continue
            batch, share = [job], self._share()
            while len(batch) < share:
                try:
                    nxt = self._queue.get_nowait()[-1]
                except queue.Empty:
                    break
                if not isinstance(nxt, _Frame):
                    later = nxt  # keeps its turn after this batch
                    break
                batch.append(nxt)
            self._render([j for j in batch if not j.future.cancelled()], index)

    def _call(self, job: _Call) -> None:
        try:
            result = job.fn()
        except Exception as e:  # the caller gets it; the thread goes on
            _deliver(job, error=e)
        else:
            _deliver(job, result)

    def _render(self, batch: list[_Frame], index: int) -> None:
        if not batch:
            return
        t0, c0 = time.perf_counter(), time.thread_time()
        ready = []
        for job in batch:
            try:
                ready.append((job, job.driver if job.motion is None else job.motion(job.driver)))
            except Exception as e:  # this session's input; the others go on
                _deliver(job, error=e)
        if not ready:
            return
        c1 = time.thread_time()
        try:
            images, spent = self._images(ready, index)
        except Exception as e:
            log.exception("render failed")
            for job, _ in ready:
                _deliver(job, error=e)
            return
        t1, c3 = time.perf_counter(), time.thread_time()
        for (job, _), image in zip(ready, images):
            t = time.perf_counter()
            try:
                data = encode_image(image, job.format, job.quality)
            except Exception as e:
                _deliver(job, error=e)
                continue
            _deliver(job, Rendered(data, image.shape[1], image.shape[0], len(ready), (t0 - job.submitted) * 1000,
                                   (t1 - t0) * 1000, (time.perf_counter() - t) * 1000))
        c4 = time.thread_time()
        in_process = 0.0
        if self._processes:  # the process's CPU time; this thread's part (the pipe) counts as the model's
            in_process = sum(spent.values())
            spent["model"] += c3 - c1
        self.stats.add(len(ready), time.perf_counter() - t0, c4 - c0 + in_process,
                       {"motion": c1 - c0, **spent, "encode": c4 - c3}, in_process)

    def _images(self, ready: list, index: int) -> tuple[list, dict[str, float]]:
        """The batch's frames as uint8 [R, R, 3], and the CPU seconds of the model (its inputs
        included) and of the conversion to uint8, on this thread or in its render process."""
        c0 = time.thread_time()
        avatars = [job.avatar for job, _ in ready]
        frames = FrameParams.cat([f for _, f in ready])
        with torch.inference_mode():
            vertices = self._vertices(ready)
            if self._processes:
                return self._processes[index].images(avatars, frames, vertices)
            rgb = self.animator.images(Avatar.cat(avatars), frames, vertices=vertices)
            c1 = time.thread_time()
            images = [self._to_image(x) for x in rgb]
        return images, {"model": c1 - c0, "to_image": time.thread_time() - c1}

    def _vertices(self, ready: list) -> torch.Tensor | None:
        """The batch's vertices [F, V, 3] when a frame brought its own (the others' from their
        parameters), else None (``Animator.images`` computes them all)."""
        if all(job.vertices is None for job, _ in ready):
            return None
        device = self.animator.device
        return torch.cat([f.to(device).vertices(self.animator.head) if job.vertices is None
                          else job.vertices.to(device) for job, f in ready])

    @staticmethod
    def _to_image(rgb: torch.Tensor):
        """[3, R, R] in [0, 1] -> RGB uint8 [R, R, 3] (``gagavatar.io.tensor_to_image``)."""
        from gagavatar.io import tensor_to_image

        return tensor_to_image(rgb)
