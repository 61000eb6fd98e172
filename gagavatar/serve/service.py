"""``Service``: the model and its render threads, the avatars, the sessions and the counts;
the HTTP routes (the page, /health, /metrics, POST and DELETE /avatars) and the WebSockets
(``drive``; ``speak``, with the speech model when the server has one).

One model serves every session: ``RenderEngine``'s threads run it, the event loop never
does (it only turns a params message into its few small tensors). Tracking webcam frames
and uploads runs on a small thread pool.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path

import numpy as np
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.websockets import WebSocket

from gagavatar.reenact import BUNDLED_MODEL_NOTE, Animator
from gagavatar.serve import drive, speak
from gagavatar.serve.avatars import AvatarMaker, read_upload
from gagavatar.serve.cache import AvatarCache, DiskCache, model_identity
from gagavatar.serve.config import MAX_RENDER_THREADS, ServeConfig
from gagavatar.serve.engine import RenderEngine
from gagavatar.serve.session import COUNTERS, Session
from gagavatar.serve.uploads import UploadError
from gagavatar.system import rss_mb

log = logging.getLogger("gagavatar.serve")

PAGE_CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' blob: data:; "
            "media-src 'self' blob: mediastream:; connect-src 'self'; base-uri 'none'; form-action 'none'")
FAVICON = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><circle cx="8" cy="8" r="7" '
           'fill="#2d6cdf"/><circle cx="5.5" cy="6.5" r="1.2" fill="#fff"/><circle cx="10.5" cy="6.5" r="1.2" '
           'fill="#fff"/><path d="M4.5 10.5q3.5 3 7 0" stroke="#fff" fill="none"/></svg>')


def render_threads(config: ServeConfig, device) -> int:
    """How many threads render: on the CPU ``--threads`` (0: one per usable core, at most
    ``MAX_RENDER_THREADS``), each running torch on one core; on a GPU one (it feeds the device)."""
    from gagavatar.system import usable_cores

    if str(device).startswith("cuda"):
        return 1
    return config.threads or max(1, min(MAX_RENDER_THREADS, usable_cores()))


class Service:
    """The model, its render threads, the avatars, the sessions and the counts."""

    def __init__(self, config: ServeConfig, animator: Animator, speaker=None, speech_note: str | None = None):
        self.config, self.animator = config, animator
        self.speaker = speaker  # a Speaker for the speak socket, or None: ``speech_note`` says why
        self.speech_note = speech_note
        self.speech_pool: ThreadPoolExecutor | None = None  # the speech model's one thread: chunks in turn
        self.engine = RenderEngine(animator, config.max_batch, render_threads(config, animator.device),
                                   processes=config.processes and animator.device.type == "cpu")
        self.cache = AvatarCache(config.max_avatars, int(config.max_avatar_mb * 2**20))
        self.model_key = model_identity(animator)
        self.disk = DiskCache(config.cache_dir, int(config.cache_mb * 2**20), self.model_key) \
            if config.cache_dir else None
        self.avatars = AvatarMaker(self)
        self.sessions: dict[str, Session] = {}
        self.totals = dict.fromkeys(COUNTERS, 0)
        self.latencies: deque[float] = deque(maxlen=5000)  # ms, input arrived -> frame handed to the socket
        self.endings: dict[str, int] = {}  # why sessions ended -> how many
        self.uploads = {"created": 0, "found": 0, "refused": 0}
        self.server_errors = 0
        self.started = time.time()
        self.pool: ThreadPoolExecutor | None = None
        self.workdir: Path | None = None

    # ------------------------------------------------------------------ lifecycle
    @contextlib.asynccontextmanager
    async def lifespan(self, app):
        self.workdir = Path(tempfile.mkdtemp(prefix="gagavatar-serve-"))
        self.pool = ThreadPoolExecutor(self.config.track_workers, thread_name_prefix="gagavatar-track")
        self.speech_pool = ThreadPoolExecutor(1, thread_name_prefix="gagavatar-speech")
        self.avatars.lock = asyncio.Lock()
        self.engine.start()
        try:
            yield
        finally:
            self.engine.stop()
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.speech_pool.shutdown(wait=False, cancel_futures=True)
            shutil.rmtree(self.workdir, ignore_errors=True)

    def ended(self, why: str) -> None:
        self.endings[why] = self.endings.get(why, 0) + 1

    # ------------------------------------------------------------------ HTTP
    async def page(self, request: Request) -> Response:
        html = resources.files("gagavatar.serve").joinpath("page.html").read_text()
        return HTMLResponse(html, headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-store"})

    async def favicon(self, request: Request) -> Response:
        return Response(FAVICON, media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "sessions": len(self.sessions), "avatars": len(self.cache),
                             "device": str(self.animator.device), "render_size": self.animator.size,
                             "render_threads": self.engine.workers, "bundled_model": self.animator.uses_bundled_model,
                             "note": BUNDLED_MODEL_NOTE if self.animator.uses_bundled_model else None,
                             "speech": self.speech_info(),
                             "uptime_s": round(time.time() - self.started, 1), "limits": self.config.limits()})

    def speech_info(self) -> dict:
        """What the speak socket speaks with, or why it is off."""
        if self.speaker is None:
            return {"available": False, "note": self.speech_note}
        config = self.speaker.model.config
        return {"available": True, "head": config.head, "sample_rate": self.speaker.sample_rate,
                "fps": self.speaker.fps, "chunk_s": config.chunk_samples / self.speaker.sample_rate}

    async def metrics(self, request: Request) -> Response:
        lat = np.asarray(self.latencies, np.float64)
        pct = (lambda q: round(float(np.percentile(lat, q)), 1) if lat.size else None)  # noqa: E731
        avatars = {"count": len(self.cache), "bytes": self.cache.nbytes, "created": self.cache.created,
                   "evicted": self.cache.evicted}
        if self.disk is not None:
            avatars["disk"] = await asyncio.get_running_loop().run_in_executor(self.pool, self.disk.report)
        return JSONResponse({
            "uptime_s": round(time.time() - self.started, 1),
            "sessions": {"active": len(self.sessions), "ended": dict(self.endings),
                         "list": [s.info() for s in self.sessions.values()]},
            "queues": {"render": self.engine.depth,
                       "pending_input": sum(s.info()["pending_input"] for s in self.sessions.values()),
                       "pending_output": sum(s.info()["pending_output"] for s in self.sessions.values())},
            "frames": dict(self.totals),
            "latency_ms": {"p50": pct(50), "p95": pct(95), "p99": pct(99), "n": int(lat.size),
                           "window": self.latencies.maxlen},
            "render": {"threads": self.engine.workers, **self.engine.stats.report()},
            "avatars": avatars,
            "uploads": dict(self.uploads),
            "errors": {"server": self.server_errors},
            "rss_mb": rss_mb(("self", *self.engine.process_ids)),  # render processes too
            "process_cpu_s": round(time.process_time() + self.engine.stats.process_cpu_s, 2),  # render processes too
        })

    async def create_avatar(self, request: Request) -> Response:
        t0 = time.perf_counter()
        try:
            entry, made = await self.avatars.get_or_make(await read_upload(request, self.config))
        except UploadError as e:
            self.uploads["refused"] += 1
            return JSONResponse({"error": str(e)}, e.status)
        except Exception as e:  # a bug or a failed reconstruction: this request fails, the server stays up
            log.exception("making an avatar failed")
            self.server_errors += 1
            return JSONResponse({"error": f"internal error ({type(e).__name__}): see the server's log"}, 500)
        self.uploads["created" if made else "found"] += 1
        return JSONResponse({"id": entry.id, "width": self.animator.size, "height": self.animator.size,
                             "existing": not made, "seconds": round(time.perf_counter() - t0, 2)},
                            201 if made else 200)

    async def delete_avatar(self, request: Request) -> Response:
        avatar_id = request.path_params["avatar_id"]
        found = self.cache.remove(avatar_id)
        if self.disk is not None:
            found = await asyncio.get_running_loop().run_in_executor(self.pool, self.disk.remove, avatar_id) or found
        if not found:
            return JSONResponse({"error": "no such avatar"}, 404)
        return JSONResponse({"deleted": avatar_id})

    # ------------------------------------------------------------------ WebSocket
    async def drive(self, websocket: WebSocket) -> None:
        await drive.drive(self, websocket)

    async def speak(self, websocket: WebSocket) -> None:
        await speak.speak(self, websocket)
