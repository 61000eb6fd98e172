"""``gagavatar serve``: a live avatar service for apps (docs/serve.md).

    from gagavatar.serve import Client
    client = Client("http://127.0.0.1:8765")
    avatar = client.create_avatar("photo.jpg")
    with client.drive(avatar) as session:
        session.send_params(message)            # or session.send_image(jpeg_bytes)
        frame = session.receive()               # frame.image(): RGB uint8 [H, W, 3]

Modules, one idea each: ``config`` (``ServeConfig``: the options; no torch), ``protocol`` (the
wire format; no torch), ``client`` (the Python client; no torch), ``server`` (the app on
uvicorn: ``create_app``, ``serve``, ``RunningServer``), ``guard`` (token, Host, Origin, CORS),
``service`` (the routes), ``avatars`` and ``uploads`` (what POST /avatars accepts and makes),
``cache`` (avatar ids, in memory and on disk), ``drive`` and ``session`` (a drive session and
its flow control), ``speak`` (a speak session), ``engine`` (the render threads), ``loadtest``
(``gagavatar bench serve``), ``page.html`` (the browser client). Nothing is imported before it
is asked for: the CLI reads ``config`` without the client's numpy or the server's torch.
"""
from __future__ import annotations

import importlib

_WHERE = {"Client": "client", "DriveSession": "client", "Frame": "client", "ServeError": "client",
          "SpeakSession": "client", "ServeConfig": "config", "RunningServer": "server", "create_app": "server",
          "serve": "server"}

__all__ = sorted(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(f"gagavatar.serve.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'gagavatar.serve' has no attribute {name!r}")
