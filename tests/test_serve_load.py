"""``gagavatar serve`` under load, measured by clients written here (not ``gagavatar bench serve``'s):
the server is its own process (``python -m gagavatar serve`` on a free loopback port), the
clients are threads of this process speaking the wire protocol with the ``websockets``
library, and the unpaced client is a process of its own.

- throughput: one client alone, 4 and 8 clients sending 15 FPS each: FPS and latency per
  client, printed (``-s``) and written to ``$GAGAVATAR_SERVE_LOAD_REPORT`` when set; the
  issue's goal (4 clients >= 8 FPS each, p95 <= 300 ms; 8 clients >= 4 FPS, p95 <= 400 ms) is
  asserted only with ``GAGAVATAR_SERVE_LOAD_GOAL=1`` (a machine of its own: on a shared
  2-core machine other jobs take the cores it needs);
- fairness: 4 paced clients keep >= 90 % of their rate alone (together; the slowest >= 75 %)
  while a fifth sends as fast as it can; that one is warned, then closed with 1008;
- speech: 3 clients speak at once (PCM16 at the pace of speech, then ``end``), each gets every
  frame in order with its time, then ``done``; the latencies are printed (the server runs with
  a small random voice for the bundled head: tests/test_serve_speak.py's).

Loopback only; every phase is bounded in time (about 50 s in all).
"""
from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from gagavatar.data import Dataset
from gagavatar.reenact import DEMO_DATA, bundled
from gagavatar.serve.client import zip_folder
from gagavatar.serve.protocol import params_message

websockets_sync = pytest.importorskip("websockets.sync.client")

UNPACED = r"""
import json, sys, threading, time
from websockets.sync.client import connect
url, message, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
ws = connect(url, max_size=None, compression=None, proxy=None, open_timeout=30)
ws.recv()
out = {"sent": 0, "received": 0, "warnings": 0, "close": None}
def read():
    try:
        while True:
            m = ws.recv()
            if isinstance(m, str):
                kind = json.loads(m)["type"]
                out["warnings"] += kind == "warning"
            else:
                out["received"] += 1
    except Exception:
        out["close"] = ws.close_code
threading.Thread(target=read, daemon=True).start()
t0 = time.perf_counter()
try:
    while time.perf_counter() - t0 < seconds and out["close"] is None:
        ws.send(message)
        out["sent"] += 1
except Exception:
    pass
time.sleep(0.5)
out["close"] = out["close"] or ws.close_code
print(json.dumps(out))
"""


class Server:
    def __init__(self, *args: str, command: list[str] | None = None):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if k != "GAGAVATAR_TOKEN"}
        command = command or [sys.executable, "-m", "gagavatar"]
        self.proc = subprocess.Popen([*command, "serve", "--port", str(self.port), *args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    self.health = json.loads(r.read())
                    break
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    self.stop()
                    raise RuntimeError(f"the server did not start: {self.proc.stderr.read().decode()[-2000:]}")
                time.sleep(0.2)

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=10) as r:
            return json.loads(r.read())

    def post(self, path: str, data: bytes) -> dict:
        request = urllib.request.Request(self.url + path, data=data, method="POST",
                                         headers={"content-type": "application/zip"})
        with urllib.request.urlopen(request, timeout=120) as r:
            return json.loads(r.read())

    def stop(self) -> str:
        self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err.decode(errors="replace")


@pytest.fixture(scope="module")
def served():
    videos = {v.id: v for v in Dataset(bundled(DEMO_DATA)).videos}
    source, driver = videos["source"], videos["driver"]
    server = Server()
    try:
        avatar = server.post("/avatars", zip_folder(source.folder))["id"]
        messages = [params_message(driver.params, i, driver.width, driver.height) for i in range(driver.n_frames)]
        yield server, avatar, messages
    finally:
        log = server.stop()
    assert "Traceback" not in log, log[-3000:]


def paced_client(url: str, messages: list, fps: float, seconds: float, start: threading.Barrier, out: dict) -> None:
    """Sends params messages at ``fps`` for ``seconds`` (acknowledging what it received) and reads
    every frame: FPS received, latencies (send -> frame back), errors."""
    ws = websockets_sync.connect(url, max_size=None, compression=None, proxy=None, open_timeout=30)
    ready = json.loads(ws.recv())
    assert ready["type"] == "ready"
    sent_at, latencies, errors, last = {}, [], [], {"seq": 0, "id": -1}
    done = threading.Event()

    def read():
        while True:
            try:
                message = ws.recv(timeout=0.5)
            except TimeoutError:
                if done.is_set():
                    return
                continue
            except Exception as e:
                if not done.is_set():
                    errors.append(f"closed: {e}")
                return
            if isinstance(message, str):
                text = json.loads(message)
                if text["type"] == "error":
                    errors.append(text["message"])
                continue
            (n,) = struct.unpack(">I", message[:4])
            header = json.loads(message[4:4 + n])
            now = time.perf_counter()
            latencies.append((now - sent_at[header["frame_id"]]) * 1000)
            if header["frame_id"] <= last["id"] or header["seq"] != last["seq"] + 1:
                errors.append(f"frame {header['frame_id']} (seq {header['seq']}) after {last}")
            last.update(seq=header["seq"], id=header["frame_id"])

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    start.wait()
    t0 = time.perf_counter()
    i = 0
    while (t := time.perf_counter() - t0) < seconds:
        if t < i / fps:
            time.sleep(i / fps - t)
        sent_at[i] = time.perf_counter()
        ws.send(json.dumps({**messages[i % len(messages)], "frame_id": i, "ack": last["seq"]}))
        i += 1
    elapsed = time.perf_counter() - t0
    time.sleep(0.5)  # the frames in flight
    done.set()
    reader.join(5)
    ws.close()
    out.update(sent=i, received=len(latencies), fps=len(latencies) / elapsed, errors=errors,
               p50=float(np.percentile(latencies, 50)) if latencies else float("inf"),
               p95=float(np.percentile(latencies, 95)) if latencies else float("inf"))


def run_clients(server, avatar, messages, n: int, fps: float, seconds: float, unpaced: float = 0.0):
    url = f"ws://127.0.0.1:{server.port}/avatars/{avatar}/drive"
    results = [{} for _ in range(n)]
    start = threading.Barrier(n)
    threads = [threading.Thread(target=paced_client, args=(url, messages, fps, seconds, start, r)) for r in results]
    fast = None
    if unpaced:
        fast = subprocess.Popen([sys.executable, "-c", UNPACED, url, json.dumps({**messages[0], "frame_id": 0}),
                                 str(unpaced)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
    if fast is not None:
        out, err = fast.communicate(timeout=unpaced + 60)
        assert fast.returncode == 0, err.decode()[-2000:]
        return results, json.loads(out.decode().strip().splitlines()[-1])
    return results


def test_throughput_one_four_and_eight_clients(served):
    server, avatar, messages = served
    report = {"load_average": os.getloadavg(), "cpus": os.cpu_count(), "render_threads":
              server.health.get("render_threads")}
    run_clients(server, avatar, messages, 4, 15.0, 2.0)  # warm-up: every batch size's buffers
    for n, seconds in ((1, 5.0), (4, 8.0), (8, 8.0)):
        results = run_clients(server, avatar, messages, n, 15.0, seconds)
        report[f"{n} clients"] = {"slowest_fps": round(min(r["fps"] for r in results), 2),
                                  "worst_p95_ms": round(max(r["p95"] for r in results), 1),
                                  "median_p50_ms": round(float(np.median([r["p50"] for r in results])), 1),
                                  "total_fps": round(sum(r["fps"] for r in results), 2)}
        for r in results:
            assert not r["errors"], r["errors"]
            assert r["received"] > 0
    metrics = server.get("/metrics")
    report["render"] = metrics["render"]
    report["load_average_end"] = os.getloadavg()
    print(json.dumps(report, indent=1))
    if os.environ.get("GAGAVATAR_SERVE_LOAD_REPORT"):
        Path(os.environ["GAGAVATAR_SERVE_LOAD_REPORT"]).write_text(json.dumps(report, indent=1))
    assert metrics["errors"]["server"] == 0
    if os.environ.get("GAGAVATAR_SERVE_LOAD_GOAL") == "1":
        assert report["4 clients"]["slowest_fps"] >= 8 and report["4 clients"]["worst_p95_ms"] <= 300, report
        assert report["8 clients"]["slowest_fps"] >= 4 and report["8 clients"]["worst_p95_ms"] <= 400, report


def test_an_unpaced_client_does_not_starve_the_others(served):
    server, avatar, messages = served
    alone = run_clients(server, avatar, messages, 4, 4.0, 8.0)
    with_fast, fast = run_clients(server, avatar, messages, 4, 4.0, 10.0, unpaced=10.0)
    rate_alone = min(r["fps"] for r in alone)
    rate_with = min(r["fps"] for r in with_fast)
    mean_alone, mean_with = (float(np.mean([r["fps"] for r in rs])) for rs in (alone, with_fast))
    print(f"4 paced clients: {rate_alone:.2f} FPS alone, {rate_with:.2f} FPS beside an unpaced one "
          f"(means {mean_alone:.2f}, {mean_with:.2f}; {fast})")
    # the good ones keep 90 % of their rate (its sessions' frames wait while it is over its rate);
    # none of them starves (the issue: 14 % of the rate)
    assert mean_with >= 0.9 * mean_alone, (mean_alone, mean_with, fast)
    assert rate_with >= 0.75 * rate_alone, (rate_alone, rate_with, fast)
    assert fast["warnings"] >= 1 and fast["close"] == 1008, fast
    for r in with_fast:
        assert not r["errors"], r["errors"]
    ended = server.get("/metrics")["sessions"]["ended"]
    assert ended.get("over the rate", 0) >= 1, ended


# --------------------------------------------------------------------------- speech
@pytest.fixture(scope="module")
def speaking():
    """The server with the tests' small voice (``--speech-model`` given, as a user would)."""
    from test_serve_speak import with_voice

    server = Server("--speech-model", "test-voice", command=with_voice())
    try:
        assert server.health["speech"]["available"], server.health
        source = Dataset(bundled(DEMO_DATA)).video("source")
        yield server, server.post("/avatars", zip_folder(source.folder))["id"]
    finally:
        log = server.stop()
    assert "Traceback" not in log, log[-3000:]


def speaking_client(url: str, audio: np.ndarray, piece_s: float, start: threading.Barrier, out: dict) -> None:
    """Sends ``audio`` as PCM16 in pieces of ``piece_s`` seconds at the pace of speech, then
    ``end``; reads every frame and checks its index, seq and time. Latencies: from the last
    sample of each whole 4 s chunk sent to that chunk's first frame; from ``end`` to the last frame."""
    ws = websockets_sync.connect(url, max_size=None, compression=None, proxy=None, open_timeout=30)
    ready = json.loads(ws.recv())
    rate, fps = ready["sample_rate"], ready["fps"]
    chunk, chunk_frames = round(ready["chunk_s"] * rate), round(ready["chunk_s"] * fps)
    chunk_sent, first_frame, errors, frames, done = {}, {}, [], [], {}

    def read():
        try:
            while True:
                message = ws.recv(timeout=120)
                if isinstance(message, str):
                    done.update(json.loads(message))
                    return
                (n,) = struct.unpack(">I", message[:4])
                header = json.loads(message[4:4 + n])
                i = len(frames)
                frames.append(time.perf_counter())
                if header["index"] != i or header["seq"] != i + 1 or abs(header["t"] - i / fps) > 1e-6:
                    errors.append(f"frame {i}: {header}")
                if i % chunk_frames == 0:
                    first_frame[i // chunk_frames] = frames[-1]
        except Exception as e:
            errors.append(f"closed: {e}")

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    pcm = (np.clip(audio, -1, 1) * 32767).round().astype("<i2")
    piece = round(piece_s * rate)
    start.wait()
    t0 = time.perf_counter()
    for i, begin in enumerate(range(0, len(pcm), piece)):
        if (delay := t0 + i * piece_s - time.perf_counter()) > 0:
            time.sleep(delay)
        ws.send(pcm[begin:begin + piece].tobytes())
        for k in range(begin // chunk, min(begin + piece, len(pcm)) // chunk):
            chunk_sent[k] = time.perf_counter()
    ws.send(json.dumps({"type": "end"}))
    t_end = time.perf_counter()
    reader.join(300)
    ws.close()
    out.update(frames=len(frames), done=done, errors=errors,
               chunk_ms=[round((first_frame[k] - t) * 1000) for k, t in sorted(chunk_sent.items())],
               end_ms=round((frames[-1] - t_end) * 1000) if frames else None,
               first_ms=round((frames[0] - t0) * 1000) if frames else None)


def test_several_clients_speak_at_once(speaking):
    server, avatar = speaking
    from test_speak import speech

    seconds, n = 6.0, 3
    url = f"ws://127.0.0.1:{server.port}/avatars/{avatar}/speak"
    results = [{} for _ in range(n)]
    start = threading.Barrier(n)
    threads = [threading.Thread(target=speaking_client, args=(url, speech(seconds), 0.1, start, r)) for r in results]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(400)
    report = {"clients": n, "speech_s": seconds, "wall_s": round(time.perf_counter() - t0, 1),
              "load_average": os.getloadavg(), "results": [{k: v for k, v in r.items() if k != "errors"}
                                                            for r in results]}
    print(json.dumps(report, indent=1))
    want = int(np.ceil(seconds * 25))
    for r in results:
        assert not r["errors"], r["errors"]
        assert r["frames"] == want and r["done"] == {"type": "done", "frames": want, "seconds": seconds, "fps": 25.0}
        assert len(r["chunk_ms"]) == 1  # one whole chunk, then the rest after the end
    metrics = server.get("/metrics")
    assert metrics["errors"]["server"] == 0 and metrics["sessions"]["ended"].get("finished", 0) >= n
