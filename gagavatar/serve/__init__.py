"""``gagavatar serve``: a live avatar service for apps (docs/serve.md).

    from gagavatar.serve import Client
    client = Client("http://127.0.0.1:8765")
    avatar = client.create_avatar("photo.jpg")
    with client.drive(avatar) as session:
        session.send_params(message)            # or session.send_image(jpeg_bytes)
        frame = session.receive()               # frame.image(): RGB uint8 [H, W, 3]

Modules: ``protocol`` (the wire format; no torch), ``client`` (the Python client; no torch),
``server`` (the ASGI app and ``serve``), ``engine`` (the render thread), ``uploads`` (what
POST /avatars accepts), ``loadtest`` (``gagavatar bench serve``), ``page.html`` (the
browser client). The client imports nothing heavy; the server is imported on first use.
"""
from gagavatar.serve.client import Client, DriveSession, Frame, ServeError

__all__ = ["Client", "DriveSession", "Frame", "RunningServer", "ServeConfig", "ServeError", "create_app", "serve"]


def __getattr__(name):
    if name in ("RunningServer", "ServeConfig", "create_app", "serve"):  # torch, the model: only when serving
        from gagavatar.serve import server

        return getattr(server, name)
    raise AttributeError(f"module 'gagavatar.serve' has no attribute {name!r}")
