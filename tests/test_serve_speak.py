"""``WS /avatars/{id}/speak``: speech in (PCM16 pieces, or one sound file), every frame out in
order with its time, then ``done``; bad audio closes with one line.

The voice is a small speech model with random weights made for the bundled head (the speech
model's exactness is tests/test_speech_parity.py's and tests/test_speech_stream.py's job): what
is checked is what a client relies on. Frames are compared with ``Speaker.drive`` of the whole
audio rendered by ``Animator`` one frame at a time.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

from gagavatar import io as gio
from gagavatar.data import Dataset
from gagavatar.head import BUNDLED_HEAD_ID
from gagavatar.reenact import DEMO_DATA, MotionControls, Speaker, bundled
from gagavatar.serve.client import Client, ServeError, zip_folder
from gagavatar.serve.protocol import decode_image, pcm16_bytes, unpack
from gagavatar.serve.server import RunningServer, ServeConfig, create_app
from gagavatar.speech.generator import SpeechModel

from test_speak import SMALL, speech

LOOPBACK, WS = "http://127.0.0.1", "ws://127.0.0.1"


def small_voice(seed: int = 0) -> Speaker:
    """A small speech model with random weights that speaks the bundled head's expressions."""
    torch.manual_seed(seed)
    return Speaker(SpeechModel(SMALL.replace(head=BUNDLED_HEAD_ID)))


# `gagavatar ...` as a user starts it, with ``small_voice`` whatever --speech-model names
_WITH_VOICE = r"""
import runpy, sys
sys.path.insert(0, sys.argv.pop(1))
from test_serve_speak import small_voice
from gagavatar.reenact import Speaker
voice = small_voice()
Speaker.load = classmethod(lambda cls, *args, **kwargs: voice)
sys.argv[0] = "gagavatar"
runpy.run_module("gagavatar", run_name="__main__")
"""


def with_voice() -> list[str]:
    """The command line that starts ``gagavatar`` (its arguments follow) with ``small_voice``."""
    return [sys.executable, "-c", _WITH_VOICE, str(Path(__file__).resolve().parent)]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread for the module


@pytest.fixture(scope="module")
def voice():
    return small_voice()


@pytest.fixture(scope="module")
def source():
    return Dataset(bundled(DEMO_DATA)).video("source")


@pytest.fixture(scope="module")
def service(animator, voice, source):
    with TestClient(create_app(ServeConfig(max_message_kb=256), animator, voice), base_url=LOOPBACK) as client:
        response = client.post("/avatars", files={"photo": ("source.zip", zip_folder(source.folder))})
        assert response.status_code == 201, response.text
        yield client, response.json()["id"]


def pcm(samples: np.ndarray) -> np.ndarray:
    """The samples as PCM16 carries them (what the server hears)."""
    return np.frombuffer(pcm16_bytes(samples), "<i2").astype(np.float32) / 32768


def receive_all(ws) -> tuple[list[tuple[dict, bytes]], dict]:
    frames = []
    while True:
        message = ws.receive()
        if message.get("text") is not None:
            done = json.loads(message["text"])
            assert done["type"] == "done", done
            return frames, done
        frames.append(unpack(message["bytes"]))


def closed_with(ws) -> tuple[int, str]:
    """(close code, the error message) of a session the server ends."""
    error = None
    with pytest.raises(WebSocketDisconnect) as e:
        while True:
            message = ws.receive()
            if message["type"] == "websocket.close":
                raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
            if message.get("text") and json.loads(message["text"])["type"] == "error":
                error = json.loads(message["text"])["message"]
    return e.value.code, error


def test_speech_in_pieces_gives_every_frame_in_order_with_its_time(service, animator, voice, source):
    client, avatar = service
    audio = pcm(speech(4.3))
    controls = MotionControls(expression_scale=1.2, stabilize=0.5)
    frames, vertices = voice.drive(source, audio, animator.head, controls)
    rendered = animator.reconstruct(source)
    with client.websocket_connect(f"{WS}/avatars/{avatar}/speak?format=png&expression_scale=1.2") as ws:
        ready = json.loads(ws.receive_text())
        assert ready["type"] == "ready" and ready["sample_rate"] == 16000 and ready["fps"] == 25
        assert ready["audio"] == "pcm16" and ready["chunk_s"] == 4.0
        ws.send_text(json.dumps({"type": "config", "stabilize": 0.5}))
        for start in range(0, len(audio), 3_200):  # 0.2 s a message
            ws.send_bytes(pcm16_bytes(audio[start:start + 3_200]))
        ws.send_text(json.dumps({"type": "end"}))
        got, done = receive_all(ws)
    n = math.ceil(4.3 * 25)
    assert len(got) == n == len(frames) and done == {"type": "done", "frames": n, "seconds": 4.3, "fps": 25.0}
    for i, (header, data) in enumerate(got):
        assert header["index"] == i and header["seq"] == i + 1 and header["t"] == pytest.approx(i / 25)
        assert header["timings"]["server_ms"] >= 0 and header["timings"]["speech_ms"] >= 0
        if i % 20 == 0 or i == n - 1:  # the Animator's frame (the vertices streamed to float32's rounding)
            want = next(animator.render(rendered, frames[i], vertices=vertices[i:i + 1]))
            assert np.abs(decode_image(data, "png").astype(int) - want).max() <= 2, f"frame {i}"


def test_a_sound_file_speaks_as_its_samples_do(service, tmp_path):
    client, avatar = service
    audio = speech(1.3)
    wav = gio.write_wav(tmp_path / "voice.wav", audio).read_bytes()
    with client.websocket_connect(f"{WS}/avatars/{avatar}/speak?audio=file&format=png") as ws:
        assert json.loads(ws.receive_text())["audio"] == "file"
        ws.send_bytes(wav)  # the whole speech: no end message needed
        from_file, done = receive_all(ws)
    with client.websocket_connect(f"{WS}/avatars/{avatar}/speak?format=png") as ws:
        ws.receive_text()
        ws.send_bytes(pcm16_bytes(audio))
        ws.send_text(json.dumps({"type": "end"}))
        from_pcm, _ = receive_all(ws)
    assert len(from_file) == len(from_pcm) == done["frames"] == math.ceil(1.3 * 25)
    for (a, image_a), (b, image_b) in zip(from_file, from_pcm):
        assert a["index"] == b["index"] and a["t"] == b["t"]
        assert np.abs(decode_image(image_a, "png").astype(int) - decode_image(image_b, "png")).max() <= 2


@pytest.mark.parametrize("query, send, code, words", [
    ("?audio=file", [b"this is not a sound file at all" * 10], 1003, "cannot be read as audio"),
    ("?audio=file", [b""], 1003, "empty"),
    ("", [b"\x01\x02\x03"], 1003, "odd count"),
    ("", [{"type": "end"}], 1003, "audio is empty"),
    ("", [b"\0\0" * 100, {"type": "config", "jaw_scale": 2}], 1007, "before"),
    ("", [b"\0\0" * 100, {"type": "end"}, b"\0\0"], 1007, "after the end"),
    ("", [{"type": "params"}], 1007, "end"),
    ("", [b"\0" * 300_000], 1009, "--max-message-kb"),
])
def test_bad_audio_closes_with_one_line(service, query, send, code, words):
    client, avatar = service
    with client.websocket_connect(f"{WS}/avatars/{avatar}/speak{query}") as ws:
        ws.receive_text()
        for message in send:
            ws.send_bytes(message) if isinstance(message, bytes) else ws.send_text(json.dumps(message))
        got, error = closed_with(ws)
    assert got == code and words in error and "\n" not in error, (got, error)
    assert "/tmp" not in error and "speech-" not in error  # the server's temporary file is not named


def test_speech_over_the_limit_is_refused(animator, voice, source):
    with TestClient(create_app(ServeConfig(max_speech_s=1.0), animator, voice), base_url=LOOPBACK) as client:
        avatar = client.post("/avatars", files={"photo": ("s.zip", zip_folder(source.folder))}).json()["id"]
        with client.websocket_connect(f"{WS}/avatars/{avatar}/speak") as ws:
            ws.receive_text()
            ws.send_bytes(pcm16_bytes(np.zeros(12_000, np.float32)))
            ws.send_bytes(pcm16_bytes(np.zeros(12_000, np.float32)))
            code, error = closed_with(ws)
        assert code == 1009 and "--max-speech-seconds" in error


def test_without_a_speech_model_the_socket_says_so(animator, monkeypatch):
    """No --speech-model and no bundled voice for the head: 501 and the line that says where to get one."""
    def nothing(cls, *args, **kwargs):
        raise FileNotFoundError("speaking needs a speech model: give --speech-model F")

    monkeypatch.setattr(Speaker, "load", classmethod(nothing))
    with TestClient(create_app(ServeConfig(), animator), base_url=LOOPBACK) as client:
        assert client.get("/health").json()["speech"] == {
            "available": False, "note": "this server speaks with no speech model: speaking needs a speech model: "
                                        "give --speech-model F"}
        with pytest.raises(WebSocketDenialResponse) as e:
            with client.websocket_connect(f"{WS}/avatars/{'x' * 22}/speak"):
                pass
        assert e.value.status_code == 501 and "--speech-model" in e.value.json()["error"]


def test_a_speech_model_for_another_head_stops_the_server(animator):
    flame_voice = Speaker(SpeechModel(SMALL))  # ARTalk's kind: FLAME
    with pytest.raises(ValueError, match="drives FLAME"):
        create_app(ServeConfig(), animator, flame_voice)


def test_the_python_client_speaks_over_a_socket(animator, voice, source):
    with RunningServer(ServeConfig(port=0), animator, speaker=voice) as server:
        client = Client(server.url)
        avatar = client.create_avatar(source.folder)
        assert client.health()["speech"]["available"]
        with client.speak(avatar, jaw_scale=1.5) as session:
            audio = speech(0.9)
            for start in range(0, len(audio), 4_000):
                session.send_audio(audio[start:start + 4_000])
            session.end()
            frames = list(session.frames(timeout=60))
        assert [f.header["index"] for f in frames] == list(range(23)) and session.done["frames"] == 23
        assert frames[0].image().shape == (animator.size, animator.size, 3)
        with pytest.raises(ServeError) as e:
            client.speak("A" * 22)
        assert e.value.status == 404
        metrics = client.metrics()
        assert metrics["sessions"]["ended"].get("finished") == 1 and metrics["errors"]["server"] == 0
