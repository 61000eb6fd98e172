# ruff: noqa: F811 - the fixtures of test_serve, imported by name
"""``gagavatar serve`` against hostile and unusual inputs: no input makes a 500 or a traceback.

Decompression bombs are 413 (uploads) and 1009 (webcam frames), JSON nested 30,000 deep is a
1007 found without recursion, oversized frames are 1009 as docs/serve.md says; CORS for
``--allowed-origin``; the rate guard's warning, throttle and close; errors dispatched by type.
All in-process (starlette's TestClient) or pure functions: nothing binds a port.
"""
from __future__ import annotations

import dataclasses
import io
import json
import struct
import subprocess
import time
import zlib
from pathlib import Path

import pytest
from PIL import Image
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from test_serve import LOOPBACK, WS, clips, params_message, source_zip  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread for the module

from gagavatar.reenact import MotionControls
from gagavatar.serve.protocol import CONTROL_FIELDS, MAX_JSON_DEPTH, nests_deeper, pack, parse_text, ProtocolError
from gagavatar.serve.server import ServeConfig, create_app
from gagavatar.serve.session import CLOSE_AFTER, THROTTLE_AFTER, WARN_AFTER, RateGuard

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def service(animator, source_zip):
    with TestClient(create_app(ServeConfig(), animator), base_url=LOOPBACK) as client:
        response = client.post("/avatars", files={"photo": ("source.zip", source_zip)})
        assert response.status_code in (200, 201), response.text
        yield client, response.json()["id"]


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` pixels and holds one scanline: what a
    decompression bomb's header looks like, a few dozen bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(1 + 3 * 16))) + \
        chunk(b"IEND", b"")


def jpeg_header(width: int, height: int) -> bytes:
    """A real small JPEG whose frame header is rewritten to claim ``width`` x ``height``, its scan cut short."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 120, 150)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data[:data.index(b"\xff\xda") + 40])


def expect_close(client, avatar, send, code: int, words: str) -> dict:
    with client.websocket_connect(f"{WS}/avatars/{avatar}/drive") as ws:
        ws.receive_text()
        send(ws)
        error = json.loads(ws.receive_text())
        assert error["type"] == "error" and error["code"] == code and words in error["message"], error
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_text()
        assert closed.value.code == code
    return error


# --------------------------------------------------------------------------- bombs and depth
def test_decompression_bombs_are_413_not_500(service):
    client, _ = service
    limit = f"{ServeConfig().max_image_pixels:,} pixels (--max-image-pixels)"
    for width, height in ((20000, 20000), (5000, 5000)):  # Pillow refuses the first itself, the limit the second
        response = client.post("/avatars", files={"photo": ("bomb.png", png_header(width, height))})
        assert response.status_code == 413, (width, response.text)
        assert limit in response.json()["error"] and "Traceback" not in response.text
    assert "5000x5000" in response.json()["error"]
    response = client.post("/avatars", content=png_header(20000, 20000), headers={"content-type": "image/png"})
    assert response.status_code == 413
    assert client.get("/metrics").json()["errors"]["server"] == 0


def test_unknown_routes_and_methods_answer_in_json(service):
    client, avatar = service
    for method, path, status, words in (("GET", "/nope", 404, ["no such endpoint"]),
                                        ("GET", f"/avatars/{avatar}/drive", 404, ["no such endpoint"]),
                                        ("GET", "/avatars", 405, ["it takes", "POST"]),
                                        ("POST", "/health", 405, ["it takes", "GET"])):
        response = client.request(method, path)
        error = response.json()["error"]
        assert response.status_code == status and all(w in error for w in words), (path, response.text)


def test_deep_json_is_1007_without_recursion(service):
    client, avatar = service
    deep = "[" * 30000 + "]" * 30000
    assert nests_deeper(deep) and not nests_deeper("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH)
    assert not nests_deeper(json.dumps({"s": "[" * 100}))  # brackets inside strings do not nest
    with pytest.raises(ProtocolError) as e:
        parse_text(deep)
    assert e.value.code == 1007
    expect_close(client, avatar, lambda ws: ws.send_text(deep), 1007, "nests")
    expect_close(client, avatar, lambda ws: ws.send_text('{"type": "params", "expression": ' + deep + "}"), 1007,
                 "nests")
    header = ("[" * 20000 + "]" * 20000).encode()  # within the 64 KB header limit
    expect_close(client, avatar, lambda ws: ws.send_bytes(struct.pack(">I", len(header)) + header + b"\xff\xd8"),
                 1003, "nests")
    metrics = client.get("/metrics").json()
    assert metrics["errors"]["server"] == 0 and "server error" not in metrics["sessions"]["ended"]


def test_oversized_webcam_frames_are_1009(service):
    client, avatar = service
    for width, height in ((60000, 60000), (8000, 8000)):  # Pillow refuses the first itself, the limit the second
        expect_close(client, avatar, lambda ws: ws.send_bytes(pack({"frame_id": 1}, jpeg_header(width, height))),
                     1009, "--max-image-pixels")
    expect_close(client, avatar, lambda ws: ws.send_bytes(pack({"frame_id": 1}, png_header(5000, 5000))), 1009,
                 "--max-image-pixels")
    expect_close(client, avatar, lambda ws: ws.send_bytes(b"\xff\xd8" + bytes(2 << 20)), 1009, "--max-message-kb")
    assert client.get("/metrics").json()["errors"]["server"] == 0


def test_deep_json_in_an_uploaded_index_is_400(service, clips):
    import zipfile

    client, _ = service
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("index.json", "[" * 30000 + "]" * 30000)
    response = client.post("/avatars", files={"photo": ("deep.zip", buffer.getvalue())})
    assert response.status_code == 400 and "nests" in response.json()["error"]


# --------------------------------------------------------------------------- CORS
def test_cors_for_allowed_origins(animator):
    app_origin = "https://app.example"
    config = ServeConfig(token="s3cret", allowed_origins=(app_origin + "/",))  # a trailing slash is forgiven
    with TestClient(create_app(config, animator), base_url=LOOPBACK) as client:
        preflight = {"origin": app_origin, "access-control-request-method": "POST",
                     "access-control-request-headers": "authorization, content-type"}
        response = client.options("/avatars", headers=preflight)  # no token: browsers send none with a preflight
        assert response.status_code == 204
        assert response.headers["access-control-allow-origin"] == app_origin
        assert "POST" in response.headers["access-control-allow-methods"]
        assert "DELETE" in response.headers["access-control-allow-methods"]
        assert "authorization" in response.headers["access-control-allow-headers"].lower()
        assert "access-control-allow-credentials" not in response.headers  # bearer tokens, no cookies
        assert response.headers["vary"] == "Origin"
        refused = client.options("/avatars", headers={**preflight, "origin": "https://evil.example"})
        assert refused.status_code == 403 and "access-control-allow-origin" not in refused.headers
        answer = client.get("/health", headers={"origin": app_origin, "authorization": "Bearer s3cret"})
        assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == app_origin
        error = client.get("/health", headers={"origin": app_origin})  # its page can read why
        assert error.status_code == 401 and error.headers["access-control-allow-origin"] == app_origin
        same = client.get("/health", headers={"origin": LOOPBACK, "authorization": "Bearer s3cret"})
        assert same.status_code == 200 and "access-control-allow-origin" not in same.headers
        assert client.get("/health", headers={"origin": "https://evil.example",
                                              "authorization": "Bearer s3cret"}).status_code == 403
    with pytest.raises(ValueError, match="allowed-origin"):
        ServeConfig(allowed_origins=("https://app.example/page",)).check()


# --------------------------------------------------------------------------- the rate guard
def test_rate_guard_warns_then_throttles_then_closes():
    guard = RateGuard(10.0)
    t, verdicts = guard.window_start, []
    for _ in range(100 * (CLOSE_AFTER + 1)):  # 100 messages a second, 10 allowed
        t += 0.01
        verdicts.append((round(t - guard.window_start, 2), guard.step(t)))
        guard.admit(t, waited=0.0)
        guard.delay(t)
        if verdicts[-1][1] == "close":
            break
    said = [v for _, v in verdicts if v]
    assert said == ["warn", "close"], said
    assert guard.over == CLOSE_AFTER and guard.throttled and WARN_AFTER < THROTTLE_AFTER < CLOSE_AFTER
    within = RateGuard(10.0)  # 8 a second: never a word
    t = within.window_start
    for _ in range(80):
        t += 0.125
        assert within.step(t) is None and within.admit(t, waited=0.1)
    assert not within.throttled and within.delay(t) == 0


def test_a_client_over_its_rate_is_told_then_closed(animator, source_zip, clips):
    """max_fps 5: a client sending as fast as it can is warned, read at its rate, then closed with
    1008; what it sent over the rate was dropped unparsed."""
    _, driver = clips
    message = json.dumps(params_message(driver.params, 0, driver.width, driver.height))
    with TestClient(create_app(ServeConfig(max_fps=5), animator), base_url=LOOPBACK) as client:
        avatar = client.post("/avatars", files={"photo": ("s.zip", source_zip)}).json()["id"]
        with client.websocket_connect(f"{WS}/avatars/{avatar}/drive") as ws:
            ws.receive_text()
            t0, texts = time.perf_counter(), []
            while time.perf_counter() - t0 < 20 and not any(t.get("type") == "error" for t in texts):
                for _ in range(20):
                    ws.send_text(message)
                time.sleep(0.02)
                session = client.get("/metrics").json()["sessions"]["list"]
                if not session:
                    break
            while True:
                try:
                    reply = ws.receive()
                except WebSocketDisconnect as e:
                    code = e.code
                    break
                if reply.get("text"):
                    texts.append(json.loads(reply["text"]))
                if reply["type"] == "websocket.close":
                    code = reply["code"]
                    break
        kinds = [t["type"] for t in texts]
        assert "warning" in kinds and kinds[-1] == "error" and texts[-1]["code"] == 1008 and code == 1008, texts
        assert "--max-fps" in texts[kinds.index("warning")]["message"] and "rate" in texts[-1]["message"]
        metrics = client.get("/metrics").json()
        assert metrics["frames"]["rate_limited"] > 0 and metrics["errors"]["server"] == 0


# --------------------------------------------------------------------------- by type, not by words
def test_the_control_fields_are_the_motion_controls():
    assert set(CONTROL_FIELDS) == {f.name for f in dataclasses.fields(MotionControls)}
    for f in dataclasses.fields(MotionControls):
        assert CONTROL_FIELDS[f.name] is type(f.default), f.name


def test_errors_are_dispatched_by_type_not_by_message():
    found = subprocess.run(["grep", "-rn", r"in str(e\|in message", str(ROOT / "gagavatar" / "serve")],
                           capture_output=True, text=True).stdout
    assert found == "", f"error dispatch by the words of a message:\n{found}"
