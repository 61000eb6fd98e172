"""The request guard: every HTTP and WebSocket request passes here first.

- the Host header: on a loopback bind, loopback names only (no DNS rebinding);
- the token, when the server has one: ``Authorization: Bearer ...`` or ``?token=``;
- the Origin: a browser page of the server's own origin, or one of ``--allowed-origin``.

CORS, for the allowed origins: a preflight (``OPTIONS`` with ``Access-Control-Request-Method``)
is answered 204 without a token (browsers send none with it) with the methods and headers the
API takes; every answer to an allowed origin (errors too, so its page can read them) names
that origin in ``Access-Control-Allow-Origin``. No cookies are used: credentials are not
allowed (``Access-Control-Allow-Credentials`` is never sent); pages send the token in the
``Authorization`` header, or as ``?token=`` on the WebSocket.
"""
from __future__ import annotations

import hmac
from urllib.parse import parse_qs, urlsplit

from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket

from gagavatar.serve.config import ServeConfig, is_loopback

CORS_METHODS = "GET, POST, DELETE"
CORS_HEADERS = "Authorization, Content-Type"
CORS_MAX_AGE = "600"  # seconds a browser may keep a preflight's answer


def close_reason(message: str) -> str:
    """A close frame's reason: at most 123 bytes of UTF-8."""
    return message.encode()[:120].decode(errors="ignore")


async def deny(websocket: WebSocket, status: int, message: str) -> None:
    """Refuse a WebSocket before accepting it: an HTTP answer with the reason where the server
    supports it, else a close."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(JSONResponse({"error": message}, status))
    else:
        await websocket.close(1008, close_reason(message))


class Guard:
    """The ASGI app in front of the service's routes (``app``)."""

    def __init__(self, app, config: ServeConfig):
        self.app, self.config = app, config
        self.token = config.token.encode() if config.token else None
        self.loopback = is_loopback(config.host)
        self.origins = frozenset(config.allowed_origins)

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        origin = headers.get("origin")
        cross = origin is not None and origin in self.origins and not self._same_origin(origin, headers)
        cors = self.cors_headers(origin) if cross else {}
        if scope["type"] == "http" and scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            problem = self.check_host(headers) or self.check_origin(origin, headers)
            if problem is not None:
                return await JSONResponse({"error": problem[1]}, problem[0])(scope, receive, send)
            return await Response(status_code=204, headers=cors | self.preflight_headers())(scope, receive, send)
        problem = self.check_host(headers) or self.check_token(scope, headers) or self.check_origin(origin, headers)
        if problem is not None:
            status, message = problem
            if scope["type"] == "http":
                return await JSONResponse({"error": message}, status, headers=cors)(scope, receive, send)
            return await deny(WebSocket(scope, receive, send), status, message)
        if cors and scope["type"] == "http":
            send = self._with_headers(send, cors)
        await self.app(scope, receive, send)

    # ------------------------------------------------------------------ the checks
    def check_host(self, headers: dict) -> tuple[int, str] | None:
        host = headers.get("host", "")
        if self.loopback and not is_loopback(urlsplit(f"//{host}").hostname or ""):
            return 421, f"this server answers to its loopback address only, not {host!r}"
        return None

    def check_token(self, scope, headers: dict) -> tuple[int, str] | None:
        if self.token is None:
            return None
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        else:
            given = (parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token") or [""])[0]
        if not given:
            return 401, "a token is required: send the header 'Authorization: Bearer TOKEN' (or ?token=TOKEN)"
        if not hmac.compare_digest(given.encode(), self.token):
            return 401, "the token is wrong: send the one the server was started with (--token)"
        return None

    def check_origin(self, origin: str | None, headers: dict) -> tuple[int, str] | None:
        if origin is None or self._same_origin(origin, headers) or origin in self.origins:
            return None
        return 403, f"requests from the page at {origin} are not allowed (--allowed-origin)"

    @staticmethod
    def _same_origin(origin: str, headers: dict) -> bool:
        return urlsplit(origin).netloc == headers.get("host", "")

    # ------------------------------------------------------------------ CORS
    @staticmethod
    def cors_headers(origin: str) -> dict[str, str]:
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}

    @staticmethod
    def preflight_headers() -> dict[str, str]:
        return {"Access-Control-Allow-Methods": CORS_METHODS, "Access-Control-Allow-Headers": CORS_HEADERS,
                "Access-Control-Max-Age": CORS_MAX_AGE}

    @staticmethod
    def _with_headers(send, extra: dict[str, str]):
        encoded = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]

        async def sender(event):
            if event["type"] == "http.response.start":
                names = {k for k, _ in encoded}
                kept = [(k, v) for k, v in event.get("headers", []) if k.lower() not in names]
                event = {**event, "headers": kept + encoded}
            await send(event)

        return sender
