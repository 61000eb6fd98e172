"""``WS /avatars/{id}/drive``: one session's three tasks; and what every session shares
(``admit``: the avatar or a refusal; ``run_session``: accept, run the tasks, close with the
reason), which ``speak`` uses too.

- ``receive``: messages in. Each is checked for size, then against the session's rate
  (``RateGuard``) before it is parsed: one over ``--max-fps`` costs a length check. Configs
  are applied at once; frames go to the input slot (newest wins).
- ``pump``: the input slot -> (tracking, on a worker thread ->) a render thread -> the output slot.
- ``send``: the output slot -> the socket, with the frame's ``seq``.

``server_ms`` in a frame's header runs from the moment the input message arrived at the socket
(stamped by the server's WebSocket protocol as it read the message's last byte, before it
waits for the session to take it) to the moment the frame is handed to the socket.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import asdict

from starlette.websockets import WebSocket, WebSocketDisconnect

from gagavatar.serve.guard import close_reason, deny
from gagavatar.serve.protocol import ProtocolError, frame_id, pack, parse_options, parse_params, parse_text, unpack
from gagavatar.serve.session import ClientGone, Finished, Input, Output, Session, SessionEnd

log = logging.getLogger("gagavatar.serve")

ARRIVED = "gagavatar.arrived"  # key of a receive event: time.perf_counter() when the message arrived


async def next_message(websocket: WebSocket, idle_s: float | None, max_binary: int, max_text: int,
                  hint: str = "") -> tuple[bytes | None, str | None, float]:
    """The next message as (bytes, text, arrival time): a client silent for ``idle_s`` (None:
    wait) ends the session, a disconnect is ``ClientGone``, a message over its size limit is
    close 1009 (``hint``: how to send less)."""
    try:
        message = await (websocket.receive() if idle_s is None else within(websocket.receive(), idle_s))
    except asyncio.TimeoutError:
        raise SessionEnd(f"idle: no message for {idle_s:g} s", 1000) from None
    if message["type"] == "websocket.disconnect":
        raise ClientGone()
    data, text = message.get("bytes"), message.get("text")
    if data is not None and len(data) > max_binary:
        raise ProtocolError(f"a binary message of {len(data):,} bytes; the limit is {max_binary:,} "
                            f"(--max-message-kb){hint}", 1009)
    if data is None and len(text or "") > max_text:
        raise ProtocolError(f"a text message of {len(text):,} characters; the limit is {max_text:,} "
                            f"(--max-text-kb)", 1009)
    return data, text, message.get(ARRIVED, time.perf_counter())


async def send_frame(websocket: WebSocket, out, s, timeout: float) -> None:
    """One frame to the client, its ``server_ms`` (from ``out.received``) and ``seq`` set; a
    client that takes nothing for ``timeout`` s is closed (1008), a gone one is ``ClientGone``."""
    out.header["timings"]["server_ms"] = round((time.perf_counter() - out.received) * 1000, 2)
    out.header["seq"] = s.sent + 1
    try:
        await within(websocket.send_bytes(pack(out.header, out.data)), timeout)
    except asyncio.TimeoutError:
        raise SessionEnd(f"not reading: the client took no frame for {timeout:g} s", 1008) from None
    except (WebSocketDisconnect, OSError, RuntimeError) as e:
        raise ClientGone() from e
    s.sent += 1


async def within(awaitable, seconds: float):
    """``await awaitable``, or ``asyncio.TimeoutError`` after ``seconds``. ``asyncio.timeout`` where
    there is one (3.11): ``asyncio.wait_for`` can swallow a cancellation that arrives as its
    awaitable completes, and a task that is cancelled must stay cancelled (the server stopping,
    a session's tasks ended, a test client closing)."""
    if hasattr(asyncio, "timeout"):
        async with asyncio.timeout(seconds):
            return await awaitable
    return await asyncio.wait_for(awaitable, seconds)


async def admit(service, websocket: WebSocket):
    """The avatar a new session asks for (``AvatarEntry``), or None after refusing it with an
    HTTP answer: 404 (no such avatar), 503 (``--max-sessions``)."""
    entry = await service.avatars.find(websocket.path_params["avatar_id"])
    if entry is None:
        await deny(websocket, 404, "no such avatar: create one with POST /avatars (the server forgets "
                                   "the least recently used ones when its cache is full)")
        return None
    if len(service.sessions) >= service.config.max_sessions:
        await deny(websocket, 503, f"the server has {len(service.sessions)} sessions, its limit "
                                   f"(--max-sessions): try again later")
        return None
    return entry


async def drive(service, websocket: WebSocket) -> None:
    """The endpoint: refuse (HTTP 404 / 503 / 400) or run a session until it ends, then close it
    with its reason."""
    entry = await admit(service, websocket)
    if entry is None:
        return
    try:
        session = Session(entry, parse_options(dict(websocket.query_params), strings=True), service.config,
                          service.totals)
    except ProtocolError as e:
        return await deny(websocket, 400, str(e))
    ready = {"type": "ready", "session": session.id, "avatar": entry.id, "width": service.animator.size,
             "height": service.animator.size, "format": session.format, "quality": session.quality,
             "controls": asdict(session.controls), "limits": service.config.limits()}
    await run_session(service, websocket, session, ready, (receive, pump, send))


async def run_session(service, websocket: WebSocket, session, ready: dict, tasks) -> None:
    """Accept, say ``ready``, run the session's ``tasks`` (coroutine functions of (service,
    websocket, session)) until one ends, then close with the reason; the session's own
    resources go with it (``session.release``)."""
    await websocket.accept()
    service.sessions[session.id] = session
    running = []
    try:
        await websocket.send_text(json.dumps(ready))
        running = [asyncio.create_task(task(service, websocket, session)) for task in tasks]
        pending = set(running)
        while pending:  # until one ends the session (a task whose part is done may return)
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            error = next((t.exception() for t in done if not t.cancelled() and t.exception()), None)
            if error is not None:
                raise error
        raise SessionEnd("the session ended")
    except Finished as e:  # all said: a normal close, no error message
        service.ended("finished")
        with contextlib.suppress(Exception):
            await within(websocket.close(1000, close_reason(str(e))), 2.0)
    except (ClientGone, WebSocketDisconnect):
        service.ended("client closed")
    except ProtocolError as e:  # a broken client: its session ends, with the reason
        service.ended(f"protocol error {e.code}")
        await close(websocket, e.code, str(e))
    except SessionEnd as e:
        service.ended(str(e).split(":")[0])
        await close(websocket, e.code, str(e))
    except Exception as e:  # a bug or a failed render: this session ends, the server stays up
        log.exception("session %s failed", session.id)
        service.server_errors += 1
        service.ended("server error")
        await close(websocket, 1011, f"internal error ({type(e).__name__}): see the server's log")
    except asyncio.CancelledError:  # the server is stopping
        service.ended("cancelled")
        raise
    finally:  # the bookkeeping first: an await here may be cancelled again
        service.sessions.pop(session.id, None)
        for task in running:
            task.cancel()
        session.release(service)
        if running:  # (not gather: it would raise a task's own cancellation in place of this task's)
            await asyncio.wait(running)


async def close(websocket: WebSocket, code: int, message: str) -> None:
    """Say why, then close; a client that reads nothing is left behind after 2 s."""
    with contextlib.suppress(Exception):
        await within(websocket.send_text(json.dumps({"type": "error", "message": message,
                                                               "code": code})), 2.0)
        await within(websocket.close(code, close_reason(message)), 2.0)


async def receive(service, websocket: WebSocket, s: Session) -> None:
    """Messages in: sizes and the rate first (nothing parsed yet), then configs applied at once
    and frames put in the input slot (newest wins)."""
    config = service.config
    max_binary, max_text = config.max_message_bytes, config.max_text_bytes
    while True:
        delay = s.rate.delay(time.perf_counter())
        if delay > 0:  # throttled: this session is read no faster than its rate (TCP slows the sender)
            await asyncio.sleep(delay)
        asked = time.perf_counter()
        data, text, arrived = await next_message(websocket, config.idle_timeout_s, max_binary, max_text)
        now = time.perf_counter()
        verdict = s.rate.step(now)
        if verdict == "close":
            raise SessionEnd(f"over the rate: more than --max-fps {config.max_fps:g} messages a second in "
                             f"{s.rate.over} windows in a row, after a warning", 1008)
        if verdict == "warn":
            await warn(websocket, f"more than {config.max_fps:g} messages a second (--max-fps): the extra ones are "
                                  f"dropped unread; keep it up and this session is read slower, then closed")
        s.count("received")
        if not s.rate.admit(now, now - asked):
            s.count("rate_limited")
            continue
        if data is not None:
            header, payload = unpack(data)
            s.acknowledge(header)
            item = Input("webcam", payload, frame_id(header, s.next_id), arrived)
        else:
            msg = parse_text(text or "")
            s.acknowledge(msg)
            if msg["type"] == "config":
                s.configure(parse_options(msg))
                continue
            item = Input("params", s.driver_frame(parse_params(msg)), frame_id(msg, s.next_id), arrived)
        if s.kind is not None and s.kind != item.kind:
            raise ProtocolError(f"a session is driven by params or by webcam frames, not both (it began "
                                f"with {s.kind})")
        s.kind = item.kind
        s.next_id += 1
        if s.inbox.put(item):
            s.count("dropped_input")
        await asyncio.sleep(0)  # messages read together (one TCP read) still reach the pump one by one


async def warn(websocket: WebSocket, message: str) -> None:
    with contextlib.suppress(asyncio.TimeoutError):
        await within(websocket.send_text(json.dumps({"type": "warning", "code": "rate",
                                                               "message": message})), 2.0)


async def pump(service, websocket: WebSocket, s: Session) -> None:
    """Inputs -> (tracking ->) a render thread -> the output slot, one frame at a time."""
    loop = asyncio.get_running_loop()
    engine, config = service.engine, service.config
    while True:
        item = await s.inbox.get()
        now = time.perf_counter()
        if s.sending or s.behind(now):  # the client is not taking its frames: render none for it
            s.count("dropped_output")
            if s.behind_since is not None and now - s.behind_since > config.send_timeout_s:
                raise SessionEnd(f"not reading: the client acknowledged no frame for "
                                 f"{config.send_timeout_s:g} s", 1008)
            continue
        track_ms, face = 0.0, True
        driver = item.data
        if item.kind == "webcam":
            t = time.perf_counter()
            driver = await loop.run_in_executor(service.pool, s.track, item.data, service.animator.head)
            track_ms = (time.perf_counter() - t) * 1000
            face = driver is not None
            if not face:
                s.count("no_face")
        if face:
            try:
                rendered = await engine.render(s.entry.avatar, s.motion, driver, s.format, s.quality,
                                               priority=s.priority())
            except ValueError as e:  # the motion controls refused this input
                raise ProtocolError(f"this frame cannot drive the avatar: {e}") from e
            s.last = rendered
        else:  # the last frame again (the source's own face before any)
            rendered = s.last or await engine.render(s.entry.avatar, None, s.entry.source, s.format, s.quality)
        header = {"type": "frame", "frame_id": item.frame_id, "format": s.format, "width": rendered.width,
                  "height": rendered.height, "face": face, "batch": rendered.batch,
                  "timings": {"wait_ms": round((now - item.received) * 1000, 2), "track_ms": round(track_ms, 2),
                              "queue_ms": round(rendered.queue_ms, 2), "render_ms": round(rendered.render_ms, 2),
                              "encode_ms": round(rendered.encode_ms, 2)},
                  "dropped": {"input": s.counts["dropped_input"] + s.counts["rate_limited"],
                              "output": s.counts["dropped_output"]}}
        if s.outbox.put(Output(header, rendered.data, item.received)):
            s.count("dropped_output")


async def send(service, websocket: WebSocket, s: Session) -> None:
    """The output slot -> the client; a client that takes nothing for ``send_timeout_s`` is closed."""
    timeout = service.config.send_timeout_s
    while True:
        out = await s.outbox.get()
        s.sending = True
        try:
            await send_frame(websocket, out, s, timeout)
        finally:
            s.sending = False
        service.latencies.append((time.perf_counter() - out.received) * 1000)
        s.count("served")
