"""Worker processes of a build-dataset run: spawned, one clip each at a time, their thread
counts set before they start, ending with their parent; a worker that dies fails only its
clip and a fresh one takes its place."""
from __future__ import annotations

import os
import signal
import threading
import time
from collections import deque
from contextlib import contextmanager
from pathlib import Path

from gagavatar.system import set_torch_threads
from gagavatar.tracking.build_config import BuildConfig
from gagavatar.tracking.clip_tracker import ClipResult, ClipTracker, count_frames
from gagavatar.tracking.clips import Clip

# Environment variables that size the thread pools of OpenMP, BLAS and numexpr; read when
# those libraries load, so they are set before a worker process starts.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
                    "NUMEXPR_NUM_THREADS")


@contextmanager
def _thread_environment(threads: int):
    """Thread-count variables set while worker processes start (they inherit them), then restored."""
    saved = {k: os.environ.get(k) for k in THREAD_VARIABLES + ("GLOG_minloglevel",)}
    os.environ.update({k: str(threads) for k in THREAD_VARIABLES})
    os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's per-graph warnings, once per clip and worker
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _worker_main(conn, out: str, config: BuildConfig, threads: int, parent: int) -> None:
    """A worker: receives clips, tracks each, sends back a ``ClipResult``; None ends it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent stops us
    _exit_with_parent(parent)
    set_torch_threads(threads)
    try:
        import cv2

        cv2.setNumThreads(threads)
    except ImportError:
        pass
    tracker = ClipTracker(out, config)
    while True:
        try:
            clip = conn.recv()
        except EOFError:
            return
        if clip is None:
            return
        conn.send(tracker(clip))


def _exit_with_parent(parent: int) -> None:
    """A thread that ends this process when its parent is gone (a killed run leaves no worker
    writing into the dataset that the rerun then cleans)."""
    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


class _Worker:
    def __init__(self, ctx, out: Path, config: BuildConfig, threads: int):
        self.conn, child = ctx.Pipe()
        with _thread_environment(threads):
            self.process = ctx.Process(target=_worker_main, args=(child, str(out), config, threads, os.getpid()),
                                       daemon=True, name="gagavatar-build-worker")
            self.process.start()
        child.close()
        self.clip: Clip | None = None


class WorkerPool:
    """``workers`` spawned processes, one clip each at a time. A worker that dies (segfault,
    out of memory) fails only its clip: it is recorded and a fresh worker takes its place."""

    def __init__(self, out: Path, config: BuildConfig, workers: int, threads: int):
        import multiprocessing as mp

        self.ctx = mp.get_context("spawn")  # fork would copy torch's and MediaPipe's threads
        self.args = (out, config, threads)
        self.workers = [_Worker(self.ctx, *self.args) for _ in range(workers)]

    def map(self, clips: list[Clip]):
        """Yields a ``ClipResult`` per clip, in the order they finish."""
        from multiprocessing.connection import wait

        queue = deque(clips)
        while True:
            for i, w in enumerate(self.workers):
                if w.clip is None and queue:
                    self.workers[i] = w = self._send(w, queue.popleft())
            busy = [w for w in self.workers if w.clip is not None]
            if not busy:
                return
            ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy]))
            for w in busy:
                if w.conn in ready or w.process.sentinel in ready:
                    yield self._receive(w)

    def _send(self, w: _Worker, clip: Clip) -> _Worker:
        try:
            w.conn.send(clip)
        except OSError:  # it died while idle: a fresh one
            w = _Worker(self.ctx, *self.args)
            w.conn.send(clip)
        w.clip = clip
        return w

    def _receive(self, w: _Worker) -> ClipResult:
        clip, w.clip = w.clip, None
        try:
            if w.conn.poll():
                return w.conn.recv()
        except (EOFError, OSError):
            pass
        w.process.join(5)
        code = w.process.exitcode
        why = " (SIGKILL: out of memory?)" if code == -signal.SIGKILL else ""
        self.workers[self.workers.index(w)] = _Worker(self.ctx, *self.args)
        return ClipResult(clip, "failed", count_frames(clip),
                          reason=f"the tracking process died on this clip (exit code {code}{why})")

    def close(self) -> None:
        for w in self.workers:
            if w.clip is None and w.process.is_alive():
                try:
                    w.conn.send(None)
                except OSError:
                    pass
        for w in self.workers:
            w.process.join(10 if w.clip is None else 0)
            if w.process.is_alive():
                w.process.terminate()
                w.process.join()
