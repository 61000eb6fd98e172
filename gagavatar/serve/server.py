"""The service on uvicorn: ``create_app`` (the ASGI app), ``serve`` (until Ctrl-C) and
``RunningServer`` (on a background thread: tests, benchmarks, embedding).

    POST   /avatars                  a photo (multipart field ``photo``, or the raw body) or a .zip
                                     of a tracked folder -> {"id": ...}
    DELETE /avatars/{id}             forget an avatar
    WS     /avatars/{id}/drive       head parameters (JSON) or webcam frames (JPEG) in, frames out
    WS     /avatars/{id}/speak       speech (PCM16, or a sound file) in, frames out as they are made
    GET    /                         the browser client (one self-contained page)
    GET    /health, /metrics         JSON

The modules, one idea each: ``config`` (``ServeConfig``, no torch), ``guard`` (token, Host,
Origin, CORS), ``service`` (the routes), ``avatars`` and ``uploads`` (POST /avatars),
``cache`` (avatar ids, memory and disk), ``drive`` and ``session`` (a drive session, its flow
control), ``speak`` (a speak session), ``engine`` (the render threads), ``protocol`` (the wire format).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute

from gagavatar.reenact import Animator
from gagavatar.serve.config import ServeConfig
from gagavatar.serve.drive import ARRIVED
from gagavatar.serve.guard import Guard
from gagavatar.serve.service import Service

log = logging.getLogger("gagavatar.serve")

SEND_BUFFER_BYTES = 64 * 1024  # the kernel's send buffer per WebSocket (Linux doubles it)
WRITE_BUFFER_BYTES = 16 * 1024  # what asyncio queues above that before the sender waits


def create_app(config: ServeConfig | None = None, animator: Animator | None = None, speaker=None) -> Guard:
    """The ASGI app (Starlette, behind ``Guard``); ``animator``: a loaded model to serve (else loaded
    from the config's checkpoint and head model); ``speaker``: the voice of the speak socket (else
    ``load_speaker``)."""
    config = config or ServeConfig()
    config.check()
    animator = animator or Animator.load(config.checkpoint, config.head_model, config.device)
    if speaker is not None:
        speaker.check_head(animator.head)
        note = None
    else:
        speaker, note = load_speaker(config, animator)
    service = Service(config, animator, speaker, note)
    app = Starlette(routes=[
        Route("/", service.page),
        Route("/favicon.ico", service.favicon),
        Route("/health", service.health),
        Route("/metrics", service.metrics),
        Route("/avatars", service.create_avatar, methods=["POST"]),
        Route("/avatars/{avatar_id}", service.delete_avatar, methods=["DELETE"]),
        WebSocketRoute("/avatars/{avatar_id}/drive", service.drive),
        WebSocketRoute("/avatars/{avatar_id}/speak", service.speak),
    ], lifespan=service.lifespan, exception_handlers={HTTPException: http_error})
    app.state.service = service
    guard = Guard(app, config)
    guard.service = service
    return guard


async def http_error(request, exc: HTTPException) -> JSONResponse:
    """Starlette's own answers (no such route, a method a route does not take) in the service's
    JSON error form."""
    if exc.status_code == 404:
        message = f"no such endpoint: {request.method} {request.url.path} (the API: docs/serve.md)"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}; it takes {exc.headers.get('Allow', '')}"
    else:
        message = exc.detail
    return JSONResponse({"error": message}, exc.status_code, headers=exc.headers)


def load_speaker(config: ServeConfig, animator: Animator):
    """(the speak socket's ``Speaker``, None), or (None, the line that says why there is none).
    ``--speech-model``, else the bundled voice of the head model; a speech model that was asked
    for and cannot be used (or speaks another head) stops the server with its one line."""
    from gagavatar.errors import InputError
    from gagavatar.reenact import Speaker

    try:
        speaker = Speaker.load(config.speech_model, device=str(animator.device), head=animator.head)
        speaker.check_head(animator.head)
        return speaker, None
    except (FileNotFoundError, InputError) as e:
        if config.speech_model is not None:
            raise
        return None, f"this server speaks with no speech model: {e}"


class _ArrivalStamps(asyncio.Queue):
    """uvicorn's queue of receive events, each message stamped with the time it arrived."""

    def put_nowait(self, item):
        if item.get("type") == "websocket.receive":
            item[ARRIVED] = time.perf_counter()
        super().put_nowait(item)


def _ws_protocol():
    """uvicorn's WebSocket protocol with bounded send buffers (a client that stops reading blocks
    its sender after a few hundred kilobytes, its own receive buffer included; then its frames
    are dropped, rather than after the megabytes an autotuned buffer holds) and every message
    stamped with its arrival (``server_ms``)."""
    try:
        from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
    except ImportError:  # another uvicorn: its default protocol, unbounded buffer, no stamps
        return "auto"

    class BoundedSendBuffer(WebSocketsSansIOProtocol):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.queue = _ArrivalStamps()

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
                          ws_max_size=max(config.max_message_bytes, config.max_text_bytes) + 1024,
                          ws_per_message_deflate=False,  # JPEG does not compress; deflate costs CPU
                          ws_ping_interval=20.0, ws_ping_timeout=20.0, timeout_graceful_shutdown=3,
                          h11_max_incomplete_event_size=64 * 1024)


def load_animator(config: ServeConfig) -> Animator:
    """The model to serve, with torch's CPU threads set for serving (``gagavatar.system.set_torch_threads``):
    on the CPU one per render thread's operator (the render threads run side by side, one core
    each), on a GPU ``--threads`` (0: half the cores)."""
    from gagavatar.system import default_device, set_torch_threads

    device = default_device(config.device)
    set_torch_threads(config.threads if device.startswith("cuda") else 1)
    return Animator.load(config.checkpoint, config.head_model, device)


def serve(config: ServeConfig, animator: Animator | None = None, say=print) -> None:
    """Serve until stopped (Ctrl-C). Without ``animator``, loads one (``load_animator``)."""
    import uvicorn

    config.check()
    app = create_app(config, animator or load_animator(config))
    server = uvicorn.Server(uvicorn_config(app, config))
    host = f"[{config.host}]" if ":" in config.host else config.host
    engine = app.service.engine
    say(f"serving on http://{host}:{config.port}/ with {engine.workers} render "
        f"{'process(es)' if engine.processes else 'thread(s)'} (the browser client; API: docs/serve.md)"
        + ("; clients must send the token" if config.token else ""))
    if app.service.speaker is None:  # the speak socket answers 501 with this line
        say(f"WS /avatars/{{id}}/speak is off: {app.service.speech_note}")
    server.run()


class RunningServer:
    """The service on a background thread (tests, benchmarks, embedding): ``.url``, ``.stop()``.
    ``port=0`` picks a free port. torch's threads are the caller's (``load_animator`` sets them
    as ``serve`` does)."""

    def __init__(self, config: ServeConfig, animator: Animator | None = None, timeout: float = 60.0, speaker=None):
        import uvicorn

        self.app = create_app(config, animator, speaker)
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
