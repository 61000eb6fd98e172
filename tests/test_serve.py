"""``gagavatar serve``: the service in-process (starlette's TestClient), on a loopback port
(uvicorn, the Python client), and its page in a real headless Chromium with a fake webcam.

Frames are compared with ``Animator`` driven by ``Motion`` on the same inputs: PNG frames
pixel for pixel, JPEG frames byte for byte against the same encoder at the same quality.
Nothing here binds anything but 127.0.0.1; "non-loopback" servers are apps configured as if
they were bound elsewhere.
"""
from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import time
import urllib.request
import wave
import zipfile
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
import torch
from PIL import Image
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

from gagavatar.data import Dataset
from gagavatar.reenact import DEMO_DATA, Motion, MotionControls, bundled, source_frame
from gagavatar.serve.client import zip_folder
from gagavatar.serve.protocol import decode_image, encode_image, pack, params_message, unpack

from gagavatar.serve.server import RunningServer, ServeConfig, create_app

ROOT = Path(__file__).resolve().parents[1]
REALDATA = Path(os.environ.get("GAGAVATAR_REALDATA", ROOT.parent / "shared" / "realdata"))  # as conftest.py
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOT = ROOT / "docs" / "images" / "serve.png"
LOOPBACK = "http://127.0.0.1"  # TestClient's base URL: the server answers to loopback names only
WS = "ws://127.0.0.1"


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread for the module


@pytest.fixture(scope="module")
def clips():
    videos = {v.id: v for v in Dataset(bundled(DEMO_DATA)).videos}
    return videos["source"], videos["driver"]


@pytest.fixture(scope="module")
def source_zip(clips) -> bytes:
    return zip_folder(clips[0].folder)


@pytest.fixture(scope="module")
def service(animator, source_zip):
    """The app in-process, with one avatar made from the bundled tracked source (a .zip)."""
    with TestClient(create_app(ServeConfig(), animator), base_url=LOOPBACK) as client:
        response = client.post("/avatars", files={"photo": ("source.zip", source_zip)})
        assert response.status_code == 201, response.text
        yield client, response.json()["id"]


def expected_frames(animator, source, driver, controls: MotionControls, n: int) -> list[np.ndarray]:
    """What ``Animator`` renders for the first n driver frames, one at a time (the motion is stateful)."""
    avatar = animator.reconstruct(source)
    motion = Motion(source.frames(source_frame(source)), controls)
    return [next(animator.render(avatar, motion(driver.frames(i)))) for i in range(n)]


def frame_of(message: bytes) -> tuple[dict, bytes]:
    header, data = unpack(message)
    assert header["type"] == "frame"
    return header, data


# --------------------------------------------------------------------------- frames
def test_drive_by_params_gives_the_animators_frames(service, animator, clips):
    client, avatar = service
    source, driver = clips
    controls = MotionControls(relative=True, expression_scale=1.3, stabilize=0.5)
    want = expected_frames(animator, source, driver, controls, 20)
    with client.websocket_connect(f"{WS}/avatars/{avatar}/drive?format=png&relative=true") as ws:
        ready = json.loads(ws.receive_text())
        assert ready["type"] == "ready" and ready["width"] == animator.size and ready["controls"]["relative"]
        ws.send_text(json.dumps({"type": "config", "expression_scale": 1.3, "stabilize": 0.5}))
        for i in range(20):
            ws.send_text(json.dumps(params_message(driver.params, i, driver.width, driver.height, frame_id=f"f{i}")))
            header, data = frame_of(ws.receive_bytes())
            assert header["frame_id"] == f"f{i}" and header["seq"] == i + 1 and header["format"] == "png"
            assert np.array_equal(decode_image(data, "png"), want[i]), f"frame {i} differs from the Animator's"

    # JPEG: the bytes of the Animator's frame through the same encoder at the same quality
    want = expected_frames(animator, source, driver, MotionControls(), 3)
    with client.websocket_connect(f"{WS}/avatars/{avatar}/drive?quality=90") as ws:
        ws.receive_text()
        for i in range(3):
            ws.send_text(json.dumps(params_message(driver.params, i, driver.width, driver.height)))
            header, data = frame_of(ws.receive_bytes())
            assert header["format"] == "jpeg" and data == encode_image(want[i], "jpeg", 90)


def test_photo_upload_is_tracked_and_driven(service, clips):
    """A photo (the bundled source frame as a PNG) is tracked by the server, then driven; the
    same photo again (through the raw body) is the same avatar, found, not tracked again."""
    client, _ = service
    source, driver = clips
    buffer = io.BytesIO()
    Image.fromarray(source.frame(0)).save(buffer, "PNG")
    response = client.post("/avatars", files={"photo": ("my face.png", buffer.getvalue())})
    assert response.status_code == 201, response.text
    avatar = response.json()["id"]
    with client.websocket_connect(f"{WS}/avatars/{avatar}/drive?format=raw") as ws:
        ws.receive_text()
        ws.send_text(json.dumps(params_message(driver.params, 5, driver.width, driver.height)))
        header, data = frame_of(ws.receive_bytes())
        image = decode_image(data, "raw", header["width"], header["height"])
        assert image.shape == (header["height"], header["width"], 3) and image.std() > 5  # a face, not a blank
    created = client.get("/metrics").json()["uploads"]["created"]
    raw = client.post("/avatars", content=buffer.getvalue(), headers={"content-type": "image/png"})
    assert raw.status_code == 200 and raw.json()["id"] == avatar and raw.json()["existing"]
    assert client.get("/metrics").json()["uploads"]["created"] == created  # found, not made again
    assert client.delete(f"/avatars/{avatar}").status_code == 200
    assert client.delete(f"/avatars/{avatar}").status_code == 404


# --------------------------------------------------------------------------- bad inputs
def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return buffer.getvalue()


def test_bad_uploads_get_a_4xx_and_the_server_stays_up(service, animator, clips, tmp_path):
    client, _ = service
    blank = io.BytesIO()
    Image.new("RGB", (256, 256), (128, 128, 128)).save(blank, "JPEG")
    noise = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (128, 128, 3), np.uint8)).save(noise, "JPEG")
    index = json.loads((clips[0].root / "index.json").read_text())
    index["videos"] = [dict(v, path="../../etc") for v in index["videos"] if v["id"] == "source"]
    other_head = shutil.copytree(clips[0].folder, tmp_path / "other_head")  # params of a wider head model
    with np.load(other_head / "params.npz") as z:
        params = dict(z) | {"expression": np.zeros((len(z["expression"]), 150), np.float32)}
    np.savez(other_head / "params.npz", **params)
    cases = [
        ({"photo": ("face.jpg", b"this is a text file, not a photo\n" * 10)}, 415, "not an image (a text file)"),
        ({"photo": ("face.jpg", noise.getvalue()[:3000])}, 415, "cannot be decoded"),  # truncated
        ({"photo": ("blank.jpg", blank.getvalue())}, 422, "no face found"),
        ({"photo": ("evil.zip", _zip({"../../outside.txt": b"x"}))}, 400, "outside itself"),
        ({"photo": ("evil.zip", _zip({"index.json": json.dumps(index).encode()}))}, 400, "points outside"),
        ({"photo": ("empty.zip", _zip({"readme.txt": b"hello"}))}, 422, "no tracked folder"),
        ({"photo": ("broken.zip", b"PK\x03\x04 not really a zip")}, 400, "not a readable zip"),
        ({"photo": ("other.zip", zip_folder(other_head))}, 422, "150 expression coefficients a frame"),
        ({"other": ("face.jpg", b"x")}, 400, "multipart field 'photo'"),
    ]
    for files, status, message in cases:
        response = client.post("/avatars", files=files)
        assert response.status_code == status and message in response.json()["error"], (files, response.text)
        assert "/tmp" not in response.json()["error"]  # no server paths in messages

    small = ServeConfig(max_upload_mb=0.05, max_unpacked_mb=0.05)
    with TestClient(create_app(small, animator), base_url=LOOPBACK) as limited:
        response = limited.post("/avatars", files={"photo": ("big.png", b"\x89PNG" + bytes(200_000))})
        assert response.status_code == 413 and "--max-upload-mb" in response.json()["error"]
        bomb = io.BytesIO()
        with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("frames/zeros.bin", bytes(5_000_000))  # 5 MB of zeros, a few KB packed
        response = limited.post("/avatars", files={"photo": ("bomb.zip", bomb.getvalue())})
        assert response.status_code == 413 and "unpacks to" in response.json()["error"]
        params = io.BytesIO()  # a small params.npz whose arrays claim 8 MB
        np.savez_compressed(params, expression=np.zeros((20_000, 100), np.float32))
        source = {p.relative_to(clips[0].folder).as_posix(): p.read_bytes()
                  for p in clips[0].folder.rglob("*") if p.is_file()}
        archive = _zip(source | {"params.npz": params.getvalue()})
        response = limited.post("/avatars", files={"photo": ("s.zip", archive)})
        assert response.status_code == 413 and "params.npz unpacks to" in response.json()["error"]
    health = client.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert client.get("/metrics").json()["errors"]["server"] == 0


def test_a_broken_client_ends_its_own_session_only(service, clips):
    client, avatar = service
    _, driver = clips
    good_message = params_message(driver.params, 0, driver.width, driver.height)
    with client.websocket_connect(f"{WS}/avatars/{avatar}/drive") as good:
        good.receive_text()
        broken = [
            (lambda ws: ws.send_bytes(b"\x00\x00\x00\x05garbage bytes"), 1003, "not JSON"),
            (lambda ws: ws.send_bytes(b"\x12\x34\x56\x78 garbage bytes"), 1003, "header length"),
            (lambda ws: ws.send_bytes(pack({"frame_id": 1}, b"not an image at all")), 1003, "not a readable JPEG"),
            (lambda ws: ws.send_text("{not json"), 1007, "not JSON"),
            (lambda ws: ws.send_text(json.dumps({"expression": [0.0]})), 1007, "lacks"),
            (lambda ws: ws.send_text(json.dumps({**good_message, "jaw_pose": [1, 2]})), 1007, "jaw_pose has shape"),
            (lambda ws: ws.send_text(json.dumps({**good_message, "eye_pose": [float("nan")] * 6})), 1007,
             "not finite"),
            (lambda ws: ws.send_text(json.dumps({"type": "config", "transfer": "everything"})), 1007, "transfer"),
            (lambda ws: ws.send_text("x" * 70_000), 1009, "--max-text-kb"),
            (lambda ws: ws.send_bytes(bytes(2 << 20)), 1009, "--max-message-kb"),
        ]
        for send, code, message in broken:
            with client.websocket_connect(f"{WS}/avatars/{avatar}/drive") as ws:
                ws.receive_text()
                send(ws)
                error = json.loads(ws.receive_text())
                assert error["type"] == "error" and error["code"] == code and message in error["message"], error
                with pytest.raises(WebSocketDisconnect) as closed:
                    ws.receive_text()
                assert closed.value.code == code
                deadline = time.time() + 10  # the server has ended that session (and only that one)
                while client.get("/metrics").json()["sessions"]["active"] != 1 and time.time() < deadline:
                    time.sleep(0.01)
                assert client.get("/metrics").json()["sessions"]["active"] == 1
            good.send_text(json.dumps(good_message))  # the other session goes on
            assert frame_of(good.receive_bytes())[0]["frame_id"] == 0

    with pytest.raises(WebSocketDenialResponse) as denied:
        with client.websocket_connect(f"{WS}/avatars/no-such-avatar/drive"):
            pass
    assert denied.value.status_code == 404
    with pytest.raises(WebSocketDenialResponse) as denied:
        with client.websocket_connect(f"{WS}/avatars/{avatar}/drive?transfer=sideways"):
            pass
    assert denied.value.status_code == 400 and b"transfer" in denied.value.content
    metrics = client.get("/metrics").json()
    assert metrics["errors"]["server"] == 0 and metrics["sessions"]["ended"]["protocol error 1007"] >= 5


def test_a_client_that_stops_reading_gets_a_window_of_frames(animator, source_zip, clips):
    """It acknowledges frame 0 and keeps sending: the server renders `window` frames for it,
    no more, and closes it after send_timeout_s (the TestClient has no TCP buffers)."""
    _, driver = clips
    config = ServeConfig(window=3, send_timeout_s=1.0, max_fps=1000)
    with TestClient(create_app(config, animator), base_url=LOOPBACK) as client:
        avatar = client.post("/avatars", files={"photo": ("s.zip", source_zip)}).json()["id"]
        with client.websocket_connect(f"{WS}/avatars/{avatar}/drive") as ws:
            assert json.loads(ws.receive_text())["limits"]["window"] == 3
            sent = 0
            deadline = time.time() + 20
            while time.time() < deadline:
                ws.send_text(json.dumps({**params_message(driver.params, sent % 48, 128, 128), "ack": 0}))
                sent += 1
                time.sleep(0.05)
                session = client.get("/metrics").json()["sessions"]["list"]
                if not session:  # closed by the server
                    break
                assert session[0]["served"] <= 3
            assert not session, "the session of a client that reads nothing was not closed"
            seqs = [frame_of(ws.receive_bytes())[0]["seq"] for _ in range(3)]
            assert seqs == [1, 2, 3]
            error = json.loads(ws.receive_text())
            assert error["code"] == 1008 and "not reading" in error["message"]
        assert client.get("/metrics").json()["frames"]["dropped_output"] > 0


# --------------------------------------------------------------------------- safety
def test_token_and_origin_checks(animator):
    with pytest.raises(ValueError, match="GAGAVATAR_TOKEN"):
        create_app(ServeConfig(host="0.0.0.0", token=None), animator)
    app = create_app(ServeConfig(host="0.0.0.0", token="s3cret"), animator)  # configured as if bound to all
    with TestClient(app, base_url="http://192.0.2.7:8765") as client:
        missing, wrong = client.get("/health"), client.get("/health", headers={"Authorization": "Bearer wrong"})
        assert missing.status_code == wrong.status_code == 401
        assert "required" in missing.json()["error"] and "wrong" in wrong.json()["error"]
        assert client.get("/health", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert client.get("/?token=s3cret").status_code == 200
        assert client.post("/avatars", files={"photo": ("a.jpg", b"x")}).status_code == 401
        with pytest.raises(WebSocketDenialResponse) as denied:
            with client.websocket_connect("ws://192.0.2.7:8765/avatars/x/drive"):
                pass
        assert denied.value.status_code == 401
        with pytest.raises(WebSocketDenialResponse) as denied:  # past the token: the avatar is unknown
            with client.websocket_connect("ws://192.0.2.7:8765/avatars/x/drive?token=s3cret"):
                pass
        assert denied.value.status_code == 404
    with TestClient(create_app(ServeConfig(), animator), base_url=LOOPBACK) as client:
        assert client.get("/health", headers={"host": "attacker.example"}).status_code == 421  # DNS rebinding
        with pytest.raises(WebSocketDenialResponse) as denied:  # another site's page in the user's browser
            with client.websocket_connect(f"{WS}/avatars/x/drive", headers={"origin": "http://attacker.example"}):
                pass
        assert denied.value.status_code == 403


def test_cli_refuses_a_public_bind_without_token(monkeypatch):
    from typer.testing import CliRunner

    from gagavatar.cli import app

    monkeypatch.delenv("GAGAVATAR_TOKEN", raising=False)
    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 1 and "GAGAVATAR_TOKEN" in result.output


# --------------------------------------------------------------------------- on a real port
def test_python_client_latest_frame_wins(animator, clips):
    """uvicorn on a free loopback port: a client that sends 40 frames at once gets the first and
    the newest; the others are dropped and counted, and no queue holds more than one input."""
    from gagavatar.serve import Client, ServeError

    source, driver = clips
    with RunningServer(ServeConfig(port=0, max_fps=1000), animator) as server:
        client = Client(server.url)
        avatar = client.create_avatar(source.folder)  # a tracked folder, zipped by the client
        with client.drive(avatar, format="png") as session:
            for i in range(40):
                session.send_params(params_message(driver.params, i, driver.width, driver.height))
            metrics = client.metrics()
            assert metrics["sessions"]["list"][0]["pending_input"] <= 1 and metrics["queues"]["render"] <= 1
            got = []
            while not got or got[-1].frame_id != 39:
                got.append(session.receive(timeout=30))
            assert len(got) < 40 and got[0].frame_id == 0
            assert [f.header["seq"] for f in got] == list(range(1, len(got) + 1))
        metrics = client.metrics()
        assert metrics["frames"]["dropped_input"] == 40 - len(got)
        with pytest.raises(ServeError) as e:
            client.drive("unknown")
        assert e.value.status == 404
        with pytest.raises(ServeError) as e:
            client.create_avatar(b"hello, I am text")
        assert e.value.status == 415 and "not an image" in str(e.value)


def test_server_ms_counts_from_the_arrival_at_the_socket(animator, clips, monkeypatch):
    """A session slow to take its messages (each held 0.25 s after the server read it): the frame's
    server_ms includes that wait (it starts when the message arrived at the socket, not when the
    session took it), and is within what the client measured from send to frame."""
    from starlette.websockets import WebSocket

    from gagavatar.serve import Client

    taken = WebSocket.receive

    async def slow(self):
        message = await taken(self)
        if message["type"] == "websocket.receive":
            await asyncio.sleep(0.25)
        return message

    source, driver = clips
    with RunningServer(ServeConfig(port=0), animator) as server:
        client = Client(server.url)
        avatar = client.create_avatar(source.folder)
        monkeypatch.setattr(WebSocket, "receive", slow)
        with client.drive(avatar) as session:
            for i in range(3):
                t0 = time.perf_counter()
                session.send_params(params_message(driver.params, i, driver.width, driver.height))
                frame = session.receive(timeout=30)
                round_trip = (time.perf_counter() - t0) * 1000
                timings = frame.header["timings"]
                assert 250 <= timings["server_ms"] <= round_trip, (timings, round_trip)
                assert timings["wait_ms"] >= 250  # arrived -> taken by the session's renderer


def test_engine_batches_frames_of_one_and_several_avatars(animator, clips):
    from gagavatar.serve.engine import RenderEngine

    source, driver = clips
    avatars = [animator.reconstruct(source)]
    flipped = source.frames(0)
    avatars.append(animator.model.reconstruct(torch.flip(animator.source_image(source, 0), [3]),
                                              flipped.camera))  # a second, different avatar
    frames = [driver.frames(i) for i in (3, 9, 17, 30)]
    jobs = [(avatars[0], frames[0]), (avatars[0], frames[1]), (avatars[1], frames[2]), (avatars[0], frames[3])]
    engine = RenderEngine(animator, max_batch=4)

    async def render_all():
        tasks = [asyncio.create_task(engine.render(a, None, f, "raw", 0)) for a, f in jobs]
        await asyncio.sleep(0)  # all four are waiting when the render thread starts
        engine.start()
        return await asyncio.gather(*tasks)

    try:
        rendered = asyncio.run(render_all())
    finally:
        engine.stop()
    assert engine.batches == {4: 1}  # waiting together, rendered together
    for (avatar, frame), r in zip(jobs, rendered):
        want = next(animator.render(avatar, frame))
        got = decode_image(r.data, "raw", r.width, r.height)
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 2  # batched convolutions round differently
    assert not np.array_equal(decode_image(rendered[1].data, "raw", 128, 128),
                              decode_image(rendered[2].data, "raw", 128, 128))


# --------------------------------------------------------------------------- the page
def write_y4m(path: Path, frames: list[np.ndarray], size: int = 320, fps: int = 24) -> Path:
    """A YUV4MPEG2 (4:2:0) clip of the frames' centre squares, for Chromium's fake webcam."""
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{size} H{size} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            h, w = frame.shape[:2]
            side = min(h, w)
            square = frame[(h - side) // 2:(h + side) // 2, (w - side) // 2:(w + side) // 2]
            y, cb, cr = Image.fromarray(square).resize((size, size)).convert("YCbCr").split()
            f.write(b"FRAME\n" + y.tobytes() + cb.resize((size // 2, size // 2)).tobytes()
                    + cr.resize((size // 2, size // 2)).tobytes())
    return path


def test_page_in_headless_chromium_with_a_fake_webcam(animator, clips, tmp_path):
    """Pick a photo, start the (fake) webcam, see avatar frames arrive with an FPS figure, stop; the
    page talks to nobody but the server, shows a placeholder (not a broken image) before the
    first frame, has its icon, says it stopped, and logs no error."""
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (/usr/bin/chromium; `make install` adds it with apt-get)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (the dev extra) is not installed")
    source, driver = clips
    if (REALDATA / "obama.mp4").is_file():  # real faces where the developers' data is (the screenshot)
        from gagavatar import io as gio

        photo = REALDATA / "monroe.jpg"
        frames = [f for f, _ in zip(gio.iter_video(REALDATA / "obama.mp4"), range(72))]
    else:  # the bundled clips: synthetic heads the tracker finds too
        photo = tmp_path / "photo.png"
        Image.fromarray(source.frame(0)).save(photo)
        frames = [driver.frame(i) for i in range(driver.n_frames)]
    webcam = write_y4m(tmp_path / "webcam.y4m", frames)
    requests: list[str] = []
    errors: list[str] = []
    with RunningServer(ServeConfig(port=0), animator) as server, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS + [
            "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-video-capture={webcam}"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 820})
            page.on("request", lambda r: requests.append(r.url))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
            page.goto(server.url + "/")
            assert page.locator("#placeholder").is_visible() and page.locator("#avatar").get_attribute("src") is None
            assert not page.locator("#avatar").is_visible()  # no broken-image icon before the first frame
            assert page.locator("link[rel=icon]").get_attribute("href").startswith("data:image/svg+xml")
            page.locator("#photo").set_input_files(str(photo))
            page.get_by_text("Avatar ready").wait_for(timeout=60_000)
            page.locator("#start").click()
            deadline = time.time() + 60  # (polled here: the page's CSP forbids wait_for_function's eval)
            while not page.locator("#fps").text_content()[0].isdigit() or page.locator("#fps").text_content() \
                    .startswith("0.0"):
                assert time.time() < deadline, f"no frames: {page.locator('#status').text_content()}"
                time.sleep(0.2)
            page.get_by_text("face found").wait_for(timeout=30_000)  # the server tracked the webcam's face
            time.sleep(2.0)  # a steady FPS figure for the screenshot
            fps = float(page.locator("#fps").text_content().split()[0])
            assert page.locator("#avatar").get_attribute("src").startswith("blob:")
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            assert not page.locator("#placeholder").is_visible()
            page.screenshot(path=str(SCREENSHOT), full_page=True)
            page.locator("#stop").click()
            page.get_by_text("Stopped.").wait_for(timeout=10_000)  # not "Driving the avatar" any more
            assert page.locator("#start").is_enabled() and page.locator("#stop").is_disabled()
        finally:
            browser.close()
        with urllib.request.urlopen(server.url + "/favicon.ico") as r:
            assert r.status == 200 and r.headers["content-type"].startswith("image/svg+xml")
        with urllib.request.urlopen(server.url + "/metrics") as r:
            metrics = json.loads(r.read())
    assert fps > 0 and metrics["frames"]["served"] > 5 and metrics["errors"]["server"] == 0
    own = urlparse(server.url).netloc
    elsewhere = [u for u in requests if urlparse(u).scheme not in ("data", "blob") and urlparse(u).netloc != own]
    assert not elsewhere, f"the page fetched from outside the server: {elsewhere}"
    assert not errors, f"the page logged errors: {errors}"


def test_page_makes_the_avatar_speak(animator, clips, tmp_path):
    """Pick a photo and a recording, press Speak: every frame comes back, then the recording plays
    with the frames in step (the avatar's picture changes as the sound goes on); no error logged.
    The recording is a 48 kHz stereo WAV over the service's 1 MB message limit (the page sends the
    sound it decodes as PCM16 pieces); a file that is not sound gets the server's one line."""
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (/usr/bin/chromium; `make install` adds it with apt-get)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (the dev extra) is not installed")
    from gagavatar.io import read_audio
    from gagavatar.reenact import DEMO_SENTENCE, Speaker

    photo = tmp_path / "photo.png"
    Image.fromarray(clips[0].frame(0)).save(photo)
    words = read_audio(bundled(DEMO_SENTENCE))
    n_frames = int(np.ceil(len(words) / 16000 * 25))
    sentence = tmp_path / "sentence.wav"  # as a microphone records it
    loud = np.interp(np.arange(3 * len(words)) / 3, np.arange(len(words)), words)
    with wave.open(str(sentence), "wb") as f:
        f.setnchannels(2)
        f.setsampwidth(2)
        f.setframerate(48000)
        f.writeframes((np.repeat(loud[:, None], 2, 1) * 32767).round().astype("<i2").tobytes())
    assert sentence.stat().st_size > ServeConfig().max_message_bytes
    errors: list[str] = []
    with RunningServer(ServeConfig(port=0), animator, speaker=Speaker.load()) as server, \
            sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS + [
            "--autoplay-policy=no-user-gesture-required"])
        try:
            page = browser.new_page(bypass_csp=True)  # for the test's one evaluate (the page's CSP has no eval)
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server.url + "/")
            page.locator("#photo").set_input_files(str(photo))
            page.get_by_text("Avatar ready").wait_for(timeout=60_000)
            assert page.locator("#speak").is_disabled()  # no recording yet
            page.locator("#speech").set_input_files(str(sentence))
            page.locator("#speak").click()
            page.get_by_text("Speaking: frame").wait_for(timeout=60_000)  # playing, the frames still coming
            assert f" of {n_frames}" in page.locator("#status").text_content()
            seen, deadline = set(), time.monotonic() + 30  # the sentence lasts 5.7 s
            while not (status := page.locator("#status").text_content()).startswith("Spoken:"):
                seen.add(page.locator("#avatar").get_attribute("src"))
                assert time.monotonic() < deadline and not errors, (len(seen), errors)
                time.sleep(0.1)
            assert status.startswith(f"Spoken: {n_frames} frames at 25 FPS"), status
            assert len(seen) >= 10, f"the picture changed {len(seen)} times while the sound played"
            assert page.locator("#voice").is_visible() and page.locator("#stop").is_disabled()
            page.locator("#speak").click()  # again, the sound played 8x fast: it runs ahead of the frames
            page.get_by_text("Speaking: frame").wait_for(timeout=60_000)
            page.evaluate("document.getElementById('voice').playbackRate = 8")
            page.get_by_text("Waiting for frame").wait_for(timeout=30_000)  # paused for a late frame
            page.get_by_text(f"Spoken: {n_frames} frames").wait_for(timeout=60_000)  # then on, to the end
            (tmp_path / "notes.wav").write_text("not a sound at all\n")
            page.locator("#speech").set_input_files(str(tmp_path / "notes.wav"))
            page.locator("#speak").click()
            page.get_by_text("cannot be read as audio").wait_for(timeout=30_000)
            time.sleep(0.5)  # the close that follows the server's line does not replace it with a cut copy
            status = page.locator("#status").text_content()
            assert "convert it" in status and "session ended" not in status, status
            assert not errors, f"the page logged errors: {errors}"
            page.locator("#photo").set_input_files(str(tmp_path / "notes.wav"))  # a photo refused: no avatar now
            page.get_by_text("Could not make the avatar").wait_for(timeout=30_000)
            assert page.locator("#speak").is_disabled() and page.locator("#start").is_disabled()
            assert page.locator("#avatar").get_attribute("src") is None and page.locator("#placeholder").is_visible()
            assert all("415" in e for e in errors), errors  # the browser's own line for the refused upload
            errors.clear()
        finally:
            browser.close()
        with urllib.request.urlopen(server.url + "/metrics") as r:
            metrics = json.loads(r.read())
    assert metrics["sessions"]["ended"].get("finished", 0) >= 1 and metrics["errors"]["server"] == 0, metrics
    assert not errors, f"the page logged errors: {errors}"
