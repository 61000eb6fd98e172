"""``RenderProcess``: a render thread's own process, with its own copy of the model.

On a CPU, threads that run the model side by side share Python's lock: torch releases it
inside each operator and takes it back after, so every operator of one thread can wait for
the other threads (the event loop included), and each hand-over costs a system call. A frame
of the tiny model is about 1,500 operators: on two cores, two processes render 1.19x the
frames two threads do (docs/serve.md). A render thread with a process of its own only waits:
it sends the frame's inputs down a pipe and blocks (without the lock) until the images come
back; the process runs ``Animator.images`` and converts to uint8 there.

What crosses the pipe is plain numbers, pickled (numpy arrays, no shared memory): a frame's
parameters (a few hundred floats), its vertices when the caller has them, and each avatar
once per process (kept there by key, least recently used dropped); the images come back as
uint8 arrays.
"""
from __future__ import annotations

import io
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections import OrderedDict
from multiprocessing.connection import Connection

import numpy as np
import torch

from gagavatar.data.frame import FrameParams
from gagavatar.model.network import Avatar

KEPT_AVATARS = 64  # avatars a process keeps (a session's avatar stays while it drives)


class _Pickler(pickle.Pickler):
    """Tensors by value, as numpy arrays (no shared memory, no ``torch.save`` per tensor)."""

    def reducer_override(self, obj):
        if isinstance(obj, torch.Tensor):
            return torch.from_numpy, (obj.detach().cpu().numpy(),)
        return NotImplemented


def _send(conn, obj) -> None:
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    conn.send_bytes(buffer.getbuffer())


def _receive(conn):
    return pickle.loads(conn.recv_bytes())


def _serve(conn) -> None:
    """The process: receive the animator, then render what the pipe brings until it closes."""
    from gagavatar.io import tensor_to_image
    from gagavatar.system import set_torch_threads

    set_torch_threads(1)
    animator = torch.load(io.BytesIO(conn.recv_bytes()), weights_only=False)  # the server's own object
    avatars: dict[int, Avatar] = {}
    _send(conn, ("ready", None))
    while True:
        try:
            new, dropped, keys, frames, vertices = _receive(conn)
        except (EOFError, OSError):
            return
        c0 = time.process_time()
        try:
            avatars.update(new)
            for key in dropped:
                avatars.pop(key, None)
            with torch.inference_mode():
                rgb = animator.images(Avatar.cat([avatars[k] for k in keys]), frames, vertices=vertices)
                c1 = time.process_time()
                images = [tensor_to_image(x) for x in rgb]
            reply = ("ok", (images, {"model": c1 - c0, "to_image": time.process_time() - c1}))
        except Exception as e:  # the caller raises it; the process goes on
            reply = ("error", e)
        try:
            _send(conn, reply)
        except Exception:  # an exception that does not pickle
            _send(conn, ("error", RuntimeError(f"{type(reply[1]).__name__}: {reply[1]}")))


class RenderProcess:
    """A process rendering for one render thread (one call at a time): ``images(avatars, frames,
    vertices)`` equals ``Animator.images`` of the same inputs, as uint8 [R, R, 3] arrays."""

    def __init__(self, animator):
        # a fresh interpreter (``python -m gagavatar.serve.workers FD``), not a fork of a process
        # with threads, nor multiprocessing's spawn (which re-runs the caller's main script)
        ours, theirs = socket.socketpair()
        self.process = subprocess.Popen([sys.executable, "-m", __name__, str(theirs.fileno())],
                                        pass_fds=[theirs.fileno()])
        theirs.close()
        self._conn = Connection(ours.detach())
        self._animator = animator  # sent by ``connect``, while the process imports torch
        self._lock = threading.RLock()
        self._keys: dict[int, tuple[weakref.ref, int]] = {}  # id(avatar) -> (the avatar, its key there)
        self._sent: OrderedDict[int, None] = OrderedDict()  # keys the process has, oldest first
        self._next_key = 0

    def images(self, avatars: list[Avatar], frames: FrameParams,
               vertices: torch.Tensor | None) -> tuple[list[np.ndarray], dict[str, float]]:
        """One frame per avatar (each batch 1): ([F] uint8 images [R, R, 3], the process's CPU
        seconds by stage: "model", "to_image")."""
        with self._lock:
            self.connect()
            keys = [self._key(a) for a in avatars]
            new = {k: a for k, a in zip(keys, avatars) if k not in self._sent}
            for k in keys:
                self._sent[k] = None
                self._sent.move_to_end(k)
            dropped = [self._sent.popitem(last=False)[0] for _ in range(len(self._sent) - KEPT_AVATARS)]
            return self._call(lambda: _send(self._conn, (new, dropped, keys, frames, vertices)))

    def connect(self) -> None:
        """Send the process its model and wait until it is ready (once; the first frame otherwise)."""
        with self._lock:
            if self._animator is None:
                return
            buffer = io.BytesIO()
            torch.save(self._animator, buffer)
            self._animator = None
            self._call(lambda: self._conn.send_bytes(buffer.getbuffer()))

    def _key(self, avatar: Avatar) -> int:
        known = self._keys.get(id(avatar))
        if known is not None and known[0]() is avatar:
            return known[1]
        self._keys = {i: v for i, v in self._keys.items() if v[0]() is not None}
        self._next_key += 1
        self._keys[id(avatar)] = (weakref.ref(avatar), self._next_key)
        return self._next_key

    def _call(self, send):
        """``send()``, then the process's answer (its exception raised here)."""
        try:
            send()
            status, value = _receive(self._conn)
        except (EOFError, OSError):  # the pipe closed: the process ended
            raise RuntimeError(f"the render process stopped (exit code {self.process.poll()}); see the "
                               f"server's log") from None
        if status == "error":
            raise value
        return value

    def close(self, timeout: float = 5.0) -> None:
        self._conn.close()  # the process sees the end of its pipe and exits
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle: it closes the pipe
    _serve(Connection(int(sys.argv[1])))
