"""The web app end to end (a real headless Chromium, and gradio_client), and the motion controls.

The browser is Debian's /usr/bin/chromium driven by Playwright for Python (never a
browser download); the test skips, saying why, where it is not installed.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path
from urllib.parse import urlparse

import pytest
import torch
import numpy as np
from PIL import Image

from gagavatar import io as gio
from gagavatar.reenact import DEMO_DATA, bundled

from test_serve_speak import with_voice

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:the ViT backbone has RANDOM weights")
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOT = ROOT / "docs" / "images" / "app.png"
VOICE_SECONDS = 1.3


# --------------------------------------------------------------------------- data
@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """A tracked source and driver: the bundled demo clips, or (where they are not installed)
    two synthetic people. The driver is another person whose head turns."""
    from gagavatar.data import Dataset

    if (bundled(DEMO_DATA) / "index.json").is_file():
        videos = {v.id: v for v in Dataset(bundled(DEMO_DATA)).videos}
        return {"source": videos["source"], "driver": videos["driver"]}
    from gagavatar.synthetic.video import SynthConfig, generate

    root = tmp_path_factory.mktemp("synth")
    generate(root, SynthConfig(identities=2, videos_per_identity=1, frames=6, size=128, seed=0,
                               splits=(1.0, 0.0, 0.0), accessories=False, workers=1))
    videos = {v.id: v for v in Dataset(root).videos}
    return {"source": videos["id00000_v00"], "driver": videos["id00001_v00"]}


@pytest.fixture(scope="module")
def media(clips, tmp_path_factory):
    """Files a person would upload: the source photo, a 6-frame driving clip, a photo without a
    face, a broken file."""
    folder = tmp_path_factory.mktemp("media")
    source, driver = clips["source"], clips["driver"]
    n = min(6, driver.n_frames)
    Image.fromarray(source.frame(0)).save(folder / "photo.png")
    gio.write_video(folder / "clip.mp4", [driver.frame(i) for i in range(n)], fps=driver.info.fps)
    Image.new("RGB", (128, 128), (128, 128, 128)).save(folder / "blank.png")
    (folder / "broken.png").write_bytes(b"this is not a PNG" * 8)
    from test_speak import speech

    gio.write_wav(folder / "voice.wav", speech(VOICE_SECONDS))
    return {"photo": folder / "photo.png", "clip": folder / "clip.mp4", "blank": folder / "blank.png",
            "broken": folder / "broken.png", "voice": folder / "voice.wav", "n_frames": n}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """The bundled tiny model when installed, else a fresh (untrained) tiny network."""
    from gagavatar.model import create_model, save
    from gagavatar.reenact import DEFAULT_CHECKPOINT

    if bundled(DEFAULT_CHECKPOINT).is_file():
        return bundled(DEFAULT_CHECKPOINT)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save(create_model("tiny"), path)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    """`gagavatar app` on a free loopback port, as a user starts it (with the tests' small voice)."""
    tmp = tmp_path_factory.mktemp("app")
    port = _free_port()
    env = dict(os.environ, GRADIO_TEMP_DIR=str(tmp / "gradio"), TMPDIR=str(tmp))
    log = open(tmp / "server.log", "w")
    proc = subprocess.Popen([*with_voice(), "app", "--port", str(port), "--checkpoint", str(checkpoint),
                             "--orbit-frames", "8", "--speech-model", "test-voice"],
                            cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 180
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"the app did not start:\n{(tmp / 'server.log').read_text()[-3000:]}")
        time.sleep(0.5)
    yield {"url": url, "port": port, "log": tmp / "server.log"}
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def _count_frames(path) -> int:
    import imageio.v2 as iio

    reader = iio.get_reader(path, "ffmpeg")
    try:
        assert reader.get_meta_data()["codec"] == "h264"
        return sum(1 for _ in reader)
    finally:
        reader.close()


# --------------------------------------------------------------------------- the app
def test_the_app_turns_telemetry_off_itself():
    import gagavatar.app  # noqa: F401
    from gradio import analytics

    assert not analytics.analytics_enabled()
    assert os.environ["HF_HUB_DISABLE_TELEMETRY"] == "1" and os.environ["HF_HUB_OFFLINE"] == "1"


def test_parse_color():
    from gagavatar.reenact import parse_color

    assert parse_color("#ff8000") == (1.0, 128 / 255, 0.0)
    assert parse_color("#fff") == (1.0, 1.0, 1.0)
    assert parse_color("0,255,51") == (0.0, 1.0, 0.2)
    assert parse_color("rgba(255, 0, 0, 1)") == (1.0, 0.0, 0.0)
    assert parse_color("0.5,0.5,0.5") == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="#rrggbb"):
        parse_color("blue-ish")


def test_driver_uploads(tmp_path, media):
    from gagavatar.app import AppError, driver_input

    assert driver_input([str(media["clip"])], tmp_path) == media["clip"]
    folder = driver_input([str(media["photo"]), str(media["blank"])], tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ["blank.png", "photo.png"]
    with zipfile.ZipFile(tmp_path / "tracked.zip", "w") as z:
        z.writestr("tracked/index.json", "{}")
    assert driver_input([str(tmp_path / "tracked.zip")], tmp_path / "a") == tmp_path / "a" / "driver_zip" / "tracked"
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as z:
        z.writestr("../../outside.txt", "x")
    with pytest.raises(gio.InputError, match="outside"):
        driver_input([str(tmp_path / "evil.zip")], tmp_path / "b")
    with pytest.raises(AppError, match="not images"):
        driver_input([str(media["clip"]), str(media["photo"])], tmp_path)
    with pytest.raises(AppError, match="no driver"):
        driver_input([], tmp_path)


def test_wrong_checkpoint_is_named(tmp_path, media):
    from gagavatar.app import Studio, _clear_message
    from gagavatar.model import CheckpointError, create_model, save

    save(create_model("tiny", n_vertices=1000), tmp_path / "other_head.safetensors")
    with pytest.raises(CheckpointError) as e:
        Studio(tmp_path / "other_head.safetensors", root=tmp_path / "runs").run(media["photo"], media["clip"])
    message = _clear_message(e.value)
    assert message.startswith("Wrong checkpoint:") and "1000 vertices" in message


def test_app_in_headless_chromium(server, media):
    """Upload a photo and a clip, press Animate, get the video; the page talks to nobody but the app."""
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (/usr/bin/chromium; `make install` adds it with apt-get)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (the dev extra) is not installed")
    requests: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda r: requests.append(r.url))
            page.goto(server["url"], wait_until="networkidle")
            page.get_by_text("trained only on synthetic heads").wait_for(timeout=10_000)  # says what the model is
            if bundled("demo/clips").is_dir():  # the one-click example runs once, however often Animate is pressed
                runs = Path(server["log"]).parent / "gagavatar-app"
                before = len(list(runs.glob("run-*")))
                page.get_by_text("example_photo.png").click()
                deadline = time.time() + 120
                while len(list(runs.glob("run-*"))) == before and time.time() < deadline:
                    time.sleep(0.2)  # the example's run has started
                page.locator("#run").click()  # the user presses Animate as well, while it runs: ignored
                page.get_by_text("Done:").wait_for(timeout=240_000)
                time.sleep(3.0)
                assert len(list(runs.glob("run-*"))) - before == 1  # the example ran once, nothing queued behind
                for field in ("#source", "#driver"):  # clear the example's files
                    page.locator(f"{field} button[aria-label='Clear']").first.click()
            page.locator("#source input[type=file]").set_input_files(str(media["photo"]))
            page.locator("#driver input[type=file]").set_input_files(str(media["clip"]))
            page.locator("#source-preview img").wait_for(timeout=30_000)
            page.locator("#driver td.filename[aria-label='clip.mp4']").wait_for(timeout=30_000)
            video = page.locator("#result video")
            old = video.get_attribute("src") if video.count() else None
            page.locator("#run").click()
            deadline = time.time() + 240
            while (not video.count() or video.get_attribute("src") == old) and time.time() < deadline:
                time.sleep(0.5)  # this run's video, not the example's
            page.locator("#downloads td.filename[aria-label='avatar.ply']").wait_for(timeout=60_000)
            page.locator("#orbit video").wait_for(timeout=30_000)
            page.get_by_text("Done:").wait_for(timeout=10_000)
            src = video.get_attribute("src")

            # Speak: type what to say (without espeak-ng: upload a recording), press Speak, get the video
            if shutil.which("espeak-ng"):
                page.locator("#speech-text textarea").fill("Hello there, I am speaking.")
            else:
                page.locator("#speech-audio input[type=file]").set_input_files(str(media["voice"]))
            spoken = page.locator("#speech-result video")
            page.locator("#speak").click()
            page.get_by_text("Spoken:").wait_for(timeout=240_000)
            spoken.wait_for(timeout=30_000)
            speech_src = spoken.get_attribute("src")
            time.sleep(1.0)  # let the players show their first frame
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)

            # a photo without a face: the page says so
            page.locator("#source button[aria-label='Clear']").first.click()
            page.locator("#source input[type=file]").set_input_files(str(media["blank"]))
            page.locator("#source-preview img").wait_for(timeout=30_000)
            page.locator("#run").click()
            page.get_by_text("No face found", exact=False).first.wait_for(timeout=120_000)
        finally:
            browser.close()

    log = Path(server["log"]).read_text()
    assert "Traceback" not in log and "share=True" not in log, log[-2000:]  # expected errors are one line
    assert "no face" in log.lower()
    own = f"127.0.0.1:{server['port']}"
    elsewhere = [u for u in requests if urlparse(u).scheme not in ("data", "blob") and urlparse(u).netloc != own]
    assert not elsewhere, f"the page fetched from outside the app: {elsewhere}"
    assert any("/static/fonts/" in u for u in requests)  # fonts come from the app itself

    out = Path(server["log"]).parent / "result.mp4"
    url = src if src.startswith("http") else server["url"].rstrip("/") + "/" + src.lstrip("/")
    with urllib.request.urlopen(url, timeout=30) as r:
        out.write_bytes(r.read())
    assert _count_frames(out) == media["n_frames"]

    from test_speak import streams

    talk = Path(server["log"]).parent / "spoken.mp4"
    url = speech_src if speech_src.startswith("http") else server["url"].rstrip("/") + "/" + speech_src.lstrip("/")
    with urllib.request.urlopen(url, timeout=30) as r:
        talk.write_bytes(r.read())
    video_s, audio_s = streams(talk)  # the speech is its sound track, as long as the video
    assert video_s > 0.5 and abs(video_s - audio_s) <= 1 / 25 + 1e-3, (video_s, audio_s)
    assert _count_frames(talk) == round(video_s * 25)


def test_app_through_gradio_client(server, media, checkpoint, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(server["url"], verbose=False, download_files=str(tmp_path))
    controls = ["expression", False, 1.0, 1.0, 1.0, 0.5, "#3366ff"]
    overlay, side_by_side, orbit, downloads, message = client.predict(
        handle_file(str(media["photo"])), [handle_file(str(media["clip"]))], *controls, api_name="/animate")
    side_by_side = side_by_side["video"] if isinstance(side_by_side, dict) else side_by_side
    orbit = orbit["video"] if isinstance(orbit, dict) else orbit
    assert _count_frames(side_by_side) == media["n_frames"] and _count_frames(orbit) == 8
    assert sorted(Path(d).name for d in downloads) == ["avatar.ply", "novel_views.mp4", "reenact.mp4"]
    assert Image.open(overlay).size[0] == 2 * Image.open(overlay).size[1]  # crop | crop with mesh
    assert f"{media['n_frames']} frames" in message
    from gagavatar.export import read_ply
    from gagavatar.model import load

    ply = read_ply(next(d for d in downloads if d.endswith(".ply")))
    assert ply["means"].shape == (load(checkpoint).config.n_gaussians, 3)

    # personalise on the clip (a few seconds of training), then animate with the personalised model
    message, sheet, model = client.predict(handle_file(str(media["clip"])), 0.1, api_name="/personalise")
    assert "held-out PSNR" in message and Path(sheet).is_file() and Path(model[0]).suffix == ".safetensors"
    overlay, side_by_side, orbit, downloads, message = client.predict(
        handle_file(str(media["photo"])), [handle_file(str(media["clip"]))], *controls, api_name="/animate")
    assert f"{media['n_frames']} frames" in message

    with pytest.raises(AppError, match="Unreadable file: broken.png"):
        client.predict(handle_file(str(media["broken"])), [handle_file(str(media["clip"]))], *controls,
                       api_name="/animate")
    with pytest.raises(AppError, match="No face found"):
        client.predict(handle_file(str(media["photo"])), [handle_file(str(media["blank"]))], *controls,
                       api_name="/animate")

    # Speak with an uploaded recording: the video says it, as long as it is
    speech_controls = [1.0, 1.2, 0.0, "#000000"]
    video, message = client.predict(handle_file(str(media["photo"])), handle_file(str(media["voice"])),
                                    "typed words too", *speech_controls, api_name="/speak")
    video = video["video"] if isinstance(video, dict) else video
    assert _count_frames(video) == math.ceil(VOICE_SECONDS * 25) and "Spoken: 1.3 s" in message
    assert "the typed text was not" in message  # the recording wins, and the page says so
    with pytest.raises(AppError, match="no speech"):
        client.predict(handle_file(str(media["photo"])), None, "  ", *speech_controls, api_name="/speak")
    with pytest.raises(AppError, match="Unreadable file"):
        client.predict(handle_file(str(media["photo"])), handle_file(str(media["broken"])), "", *speech_controls,
                       api_name="/speak")


def test_cli_and_app_write_identical_videos(media, checkpoint, tmp_path):
    """The same inputs and settings through `gagavatar reenact` and through the app: the same
    frames, bit for bit (both drive the one Animator through commands.reenact)."""
    from typer.testing import CliRunner

    from gagavatar.app import Studio
    from gagavatar.cli import app
    from gagavatar.reenact import MotionControls, parse_color

    settings = ["--transfer", "expression", "--expression-scale", "1.5", "--stabilize", "0.5", "--background", "#3366ff"]
    result = CliRunner().invoke(app, ["reenact", "--source", str(media["photo"]), "--driver", str(media["clip"]),
                                      "--out", str(tmp_path / "cli.mp4"), "--side-by-side", "--checkpoint",
                                      str(checkpoint)] + settings)
    assert result.exit_code == 0, result.output
    controls = MotionControls(transfer="expression", expression_scale=1.5, stabilize=0.5)
    out = Studio(checkpoint, root=tmp_path / "runs").run(media["photo"], media["clip"], controls, parse_color("#3366ff"))
    cli, web = (np.stack(list(gio.iter_video(p))) for p in (tmp_path / "cli.mp4", out.side_by_side))
    assert cli.shape == (media["n_frames"], 128, 256, 3)
    np.testing.assert_array_equal(cli, web)


def test_cli_and_app_speak_identical_videos(media, checkpoint, monkeypatch, tmp_path):
    """`gagavatar speak` and the app's Speak input: the same frames, bit for bit (commands.speak)."""
    from typer.testing import CliRunner

    from gagavatar.app import Studio
    from gagavatar.cli import app
    from gagavatar.reenact import MotionControls, Speaker
    from test_serve_speak import small_voice

    voice = small_voice()
    monkeypatch.setattr(Speaker, "load", classmethod(lambda cls, *args, **kwargs: voice))
    result = CliRunner().invoke(app, ["speak", "--source", str(media["photo"]), "--audio", str(media["voice"]),
                                      "--out", str(tmp_path / "cli.mp4"), "--checkpoint", str(checkpoint),
                                      "--speech-model", "test-voice", "--jaw-scale", "1.5"])
    assert result.exit_code == 0, result.output
    out = Studio(checkpoint, root=tmp_path / "runs", speech_model="test-voice").speak(
        media["photo"], media["voice"], controls=MotionControls(jaw_scale=1.5))
    cli, web = (np.stack(list(gio.iter_video(p))) for p in (tmp_path / "cli.mp4", out.video))
    assert cli.shape[0] == out.n_frames == math.ceil(VOICE_SECONDS * 25)
    np.testing.assert_array_equal(cli, web)


def test_without_a_voice_the_app_says_so(checkpoint, media, monkeypatch, tmp_path):
    """No speech model and no bundled voice: one visible line beside the Speak input, and on Speak."""
    from gagavatar.app import Studio
    from gagavatar.reenact import Speaker

    def nothing(cls, *args, **kwargs):
        raise FileNotFoundError("speaking needs a speech model: give --speech-model ARTalk_wav2vec.pt")

    monkeypatch.setattr(Speaker, "load", classmethod(nothing))
    studio = Studio(checkpoint, root=tmp_path / "runs")
    with pytest.raises(FileNotFoundError, match="--speech-model"):
        studio.speak(media["photo"], media["voice"])
    # the page, in a process of its own (building it patches tqdm for Gradio's progress bars)
    page = subprocess.run([sys.executable, "-c", (
        "import json; from gagavatar.app import Studio, build_app; "
        "page = build_app(Studio(), speech_note='speaking needs a speech model: give --speech-model F'); "
        "print(json.dumps([c['props']['value'] for c in page.config['components'] "
        "if c.get('props', {}).get('elem_id') == 'speech-note']))")], capture_output=True, text=True, timeout=300)
    assert page.returncode == 0, page.stderr[-2000:]
    assert json.loads(page.stdout.strip().splitlines()[-1]) == [
        "**Speak is off.** speaking needs a speech model: give --speech-model F"]


def test_a_2gb_upload_is_refused_and_the_app_stays_up(server, tmp_path):
    """Gradio's own upload route with the app's size limit (500 MB by default): refused, nothing kept."""
    import httpx

    big = tmp_path / "big.mp4"
    with open(big, "wb") as f:
        f.truncate(2 << 30)  # 2 GB, sparse: nothing to write here
    t0 = time.time()
    try:
        with open(big, "rb") as f:
            response = httpx.post(server["url"] + "gradio_api/upload", files={"files": ("big.mp4", f, "video/mp4")},
                                  timeout=120)
        status, text = response.status_code, response.text
    except httpx.HTTPError as e:  # the server may close the connection before the client has sent it all
        status, text = None, str(e)
    assert status in (413, None), (status, text[:300])
    if status == 413:
        assert "maximum allowed size" in text
    with urllib.request.urlopen(server["url"], timeout=10) as r:  # still answering
        assert r.status == 200
    kept = [p for p in Path(server["log"]).parent.rglob("*") if p.is_file() and p.stat().st_size > 400 << 20]
    assert not kept, kept
    assert time.time() - t0 < 90


def test_a_tracked_zip_cannot_point_outside_itself(server, media, tmp_path):
    """An index.json whose video path leaves the upload (absolute, or with ..) is refused, not read."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    elsewhere = bundled(DEMO_DATA) / "driver"  # a real tracked video elsewhere on the server's disk
    client = Client(server["url"], verbose=False, download_files=str(tmp_path))
    controls = ["all", False, 1.0, 1.0, 1.0, 0.0, "#000000"]
    for path in (str(elsewhere), "../../../" + str(elsewhere).lstrip("/")):
        index = {"format": "gagavatar-dataset", "version": 1, "videos": [
            {"id": "driver", "identity": "x", "split": "test", "n_frames": 48, "path": path, "width": 128,
             "height": 128, "head_model": "synthetic-flame-v1"}]}
        archive = tmp_path / "evil_tracked.zip"
        with zipfile.ZipFile(archive, "w") as z:
            z.writestr("tracked/index.json", json.dumps(index))
        with pytest.raises(AppError, match="outside the dataset folder"):
            client.predict(handle_file(str(media["photo"])), [handle_file(str(archive))], *controls,
                           api_name="/animate")


def test_a_zip_bomb_stops_at_the_limit(tmp_path):
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("tracked/frames.bin", b"\0" * (64 << 20))  # 64 MB of zeros in a ~64 KB archive
    assert archive.stat().st_size < 1 << 20
    with pytest.raises(gio.InputError, match="more than the 16 MB allowed"):
        gio.extract_zip(archive, tmp_path / "out", max_bytes=16 << 20)
    assert not (tmp_path / "out").exists()  # what was unpacked is gone
    assert gio.extract_zip(archive, tmp_path / "ok", max_bytes=128 << 20) == tmp_path / "ok" / "tracked"
