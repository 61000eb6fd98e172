"""The clients of ``gagavatar bench serve`` (``loadtest``): a good one (paced, reads every
frame), a misbehaving one (five ways of breaking the protocol), an unpaced one (sends as
fast as the connection takes) and a speaking one (speech at the pace it is spoken; every
frame back, in order, with its time). Each returns a ``ClientResult``; none raises.
Loopback only, every loop bounded in frames and time.
"""
from __future__ import annotations

import json
import math
import random
import socket
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from gagavatar.serve.client import Client, ServeError


@dataclass
class ClientResult:
    name: str
    kind: str
    sent: int = 0
    received: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    actions: dict[str, int] = field(default_factory=dict)  # misbehaving: what it did, and how it ended
    timings_ms: dict[str, float] = field(default_factory=dict)  # the frames' server timings, summed
    end_ms: float | None = None  # speak: the end of the audio -> its last frame

    @property
    def fps(self) -> float:
        return self.received / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


def good_client(url: str, avatar: str, name: str, messages: list, n_frames: int, send_fps: float,
                webcam: bool = False, start: threading.Barrier | None = None) -> ClientResult:
    """Sends ``n_frames`` at ``send_fps`` (params messages or JPEGs) and reads every frame back."""
    result = ClientResult(name, "webcam" if webcam else "params")
    sent_at: dict[int, float] = {}
    done = threading.Event()
    try:
        session = Client(url).drive(avatar)
    except Exception as e:  # counted, not raised: the table says what failed
        result.errors.append(f"connect: {e}")
        return result

    def receive():
        last_id = -1
        while True:
            try:
                frame = session.receive(timeout=0.5)
            except TimeoutError:
                if done.is_set():
                    return
                continue
            except ServeError as e:
                if not done.is_set():
                    result.errors.append(f"session: {e}")
                return
            now = time.perf_counter()
            if frame.frame_id in sent_at:
                result.latencies_ms.append((now - sent_at[frame.frame_id]) * 1000)
            for name, ms in frame.header.get("timings", {}).items():
                result.timings_ms[name] = result.timings_ms.get(name, 0.0) + ms
            if frame.frame_id <= last_id:
                result.errors.append(f"frame {frame.frame_id} after {last_id}")
            last_id = frame.frame_id
            result.received += 1
            if done.is_set() and frame.frame_id == n_frames - 1:
                return

    reader = threading.Thread(target=receive, daemon=True)
    reader.start()
    if start is not None:
        start.wait()
    t0 = time.perf_counter()
    try:
        for i in range(n_frames):
            delay = t0 + i / send_fps - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            sent_at[i] = time.perf_counter()
            if webcam:
                session.send_image(messages[i % len(messages)], frame_id=i)
            else:
                session.send_params({**messages[i % len(messages)], "frame_id": i})
            result.sent += 1
    except Exception as e:
        result.errors.append(f"send: {e}")
    result.seconds = time.perf_counter() - t0
    done.set()
    reader.join(5.0)  # the last frames in flight
    try:
        session.close()
    except Exception:
        pass
    return result


def speak_client(url: str, avatar: str, name: str, samples: np.ndarray, piece_s: float = 0.1,
                 start: threading.Barrier | None = None) -> ClientResult:
    """Speaks ``samples`` (float [N] at the server's rate) in pieces of ``piece_s`` seconds at the
    pace of speech, then ``end``; reads every frame. ``latencies_ms``: for each whole chunk of
    audio, from sending its last sample to its first frame's arrival; ``end_ms``: from ``end`` to
    the last frame. ``errors``: a frame missing, out of order or with the wrong time."""
    result = ClientResult(name, "speak")
    try:
        session = Client(url).speak(avatar)
    except Exception as e:
        result.errors.append(f"connect: {e}")
        return result
    rate, fps = session.sample_rate, session.ready["fps"]
    chunk = round(session.ready["chunk_s"] * rate)
    chunk_frames = round(session.ready["chunk_s"] * fps)
    chunk_sent: dict[int, float] = {}  # chunk -> when its last sample was sent
    first_frame: dict[int, float] = {}  # chunk -> when its first frame arrived
    last = {"at": None}
    t_end = {"at": None}

    def receive():
        try:
            for i, frame in enumerate(session.frames(timeout=120)):
                now = time.perf_counter()
                h = frame.header
                if h["index"] != i or h["seq"] != i + 1 or abs(h["t"] - i / fps) > 1e-6:
                    result.errors.append(f"frame {i}: index {h['index']}, seq {h['seq']}, t {h['t']}")
                if i % chunk_frames == 0:
                    first_frame[i // chunk_frames] = now
                for key, ms in h.get("timings", {}).items():
                    result.timings_ms[key] = result.timings_ms.get(key, 0.0) + ms
                result.received += 1
                last["at"] = now
        except (ServeError, TimeoutError) as e:
            result.errors.append(f"session: {e}")

    reader = threading.Thread(target=receive, daemon=True)
    reader.start()
    if start is not None:
        start.wait()
    piece = max(1, round(piece_s * rate))
    t0 = time.perf_counter()
    try:
        for i, begin in enumerate(range(0, len(samples), piece)):
            delay = t0 + i * piece_s - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            session.send_audio(samples[begin:begin + piece])
            result.sent += 1
            end = min(begin + piece, len(samples))
            for k in range(begin // chunk, end // chunk):
                chunk_sent[k] = time.perf_counter()
        session.end()
        t_end["at"] = time.perf_counter()
    except Exception as e:
        result.errors.append(f"send: {e}")
    reader.join(len(samples) / rate * 20 + 120)
    want = math.ceil(len(samples) / rate * fps)
    if result.received != want or (session.done or {}).get("frames") != want:
        result.errors.append(f"{result.received} frames and done {session.done}; {want} expected")
    result.latencies_ms = [(first_frame[k] - t) * 1000 for k, t in sorted(chunk_sent.items()) if k in first_frame]
    if last["at"] is not None and t_end["at"] is not None:
        result.end_ms = (last["at"] - t_end["at"]) * 1000
        result.seconds = last["at"] - t0
    try:
        session.close()
    except Exception:
        pass
    return result


def misbehaving_client(url: str, avatar: str, name: str, messages: list, stop: threading.Event, send_fps: float,
                       max_message_bytes: int, seed: int) -> ClientResult:
    """Cycles through five ways of breaking the protocol until ``stop``; records how each ended.
    ``errors``: a misbehaviour the server did not answer as documented."""
    from websockets.sync.client import connect

    result = ClientResult(name, "misbehaving")
    rng = random.Random(seed)
    ws_url = "ws" + url[len("http"):] + f"/avatars/{avatar}/drive"
    # never_reads: an app that stops reading but keeps sending (acknowledging the frames it read:
    # none); never_reads_no_ack: the same without acknowledgements (TCP flow control only)
    behaviours = ["garbage", "oversized", "abrupt", "never_reads", "never_reads_no_ack"]
    rng.shuffle(behaviours)
    step = 0
    t0 = time.perf_counter()
    while not stop.is_set():
        behaviour = behaviours[step % len(behaviours)]
        step += 1
        try:
            # max_queue=1: this client's library stops reading after one message, like a stuck app
            ws = connect(ws_url, max_size=None, compression=None, max_queue=1, proxy=None, open_timeout=30,
                         ping_interval=None)  # no keepalive thread on a socket this client will break
            ws.recv(timeout=30)  # ready
            expected = None
            if behaviour == "garbage":  # random bytes, or text that is not JSON
                junk = bytes(rng.getrandbits(8) for _ in range(rng.randint(5, 5000)))
                if rng.random() < 0.5:
                    ws.send(junk if junk[:2] != b"\xff\xd8" else b"\x00" + junk)
                else:
                    ws.send(junk.hex()[:rng.randint(1, 2000)] + " not json")
                expected = (1003, 1007)
            elif behaviour == "oversized":
                ws.send(b"\x00" * (max_message_bytes + 4096))
                expected = (1009,)
            elif behaviour == "abrupt":
                for i in range(10):
                    ws.send(json.dumps({**messages[i % len(messages)], "frame_id": i}))
                    time.sleep(0.02)
                sock = ws.socket  # no close frame: the TCP connection is reset
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                sock.close()
                result.actions["abrupt"] = result.actions.get("abrupt", 0) + 1
                continue
            else:  # never reads, keeps sending for 20 s (or until the connection is cut)
                ws.socket.settimeout(2.0)  # a send blocked by a full connection ends the behaviour
                ack = {} if behaviour == "never_reads_no_ack" else {"ack": 0}
                t_start, i, ended = time.perf_counter(), 0, "sent for 20 s"
                while time.perf_counter() - t_start < 20 and not stop.is_set():
                    try:
                        ws.send(json.dumps({**messages[i % len(messages)], "frame_id": i, **ack}))
                    except Exception:
                        ended = "connection cut"
                        break
                    i += 1
                    time.sleep(1 / send_fps)
                result.sent += i
                key = f"{behaviour}: {ended}"
                result.actions[key] = result.actions.get(key, 0) + 1
                ws.socket.close()
                continue
            try:
                while True:  # read until the server closes the session
                    ws.recv(timeout=10)
            except TimeoutError:
                result.errors.append(f"{behaviour}: the server did not close the session")
            except Exception:
                pass
            code = ws.close_code
            key = f"{behaviour}: close {code}"
            result.actions[key] = result.actions.get(key, 0) + 1
            if expected and code not in expected:
                result.errors.append(f"{behaviour}: closed with {code}, expected {expected}")
            ws.socket.close()
        except Exception as e:
            result.errors.append(f"{behaviour}: {type(e).__name__}: {e}")
            time.sleep(0.2)
    result.seconds = time.perf_counter() - t0
    return result


def unpaced_client(url: str, avatar: str, messages: list, seconds: float) -> ClientResult:
    """Sends params messages as fast as the connection takes them for ``seconds`` (or until the
    server closes it), reading frames on a second thread."""
    result = ClientResult("unpaced", "unpaced")
    stop = threading.Event()
    try:
        session = Client(url).drive(avatar)
    except Exception as e:
        result.errors.append(f"connect: {e}")
        return result

    def receive():
        while not stop.is_set():
            try:
                session.receive(timeout=0.5)
                result.received += 1
            except TimeoutError:
                continue
            except ServeError as e:
                result.actions[f"closed {e.code}"] = 1
                stop.set()

    reader = threading.Thread(target=receive, daemon=True)
    reader.start()
    t0 = time.perf_counter()
    i = 0
    try:
        while not stop.is_set() and time.perf_counter() - t0 < seconds:
            session.send_params({**messages[i % len(messages)], "frame_id": i})
            i += 1
    except Exception:  # the server closed the connection
        pass
    result.sent, result.seconds = i, time.perf_counter() - t0
    stop.set()
    reader.join(5.0)
    result.actions["warnings"] = len(session.warnings)
    try:
        session.close()
    except Exception:
        pass
    return result


class UnpacedProcess:
    """``unpaced_client`` in a process of its own, as another program on the machine would be (in
    the benchmark's process it would take the other clients' Python lock, not the server's time).
    ``result()`` waits for it."""

    def __init__(self, url: str, avatar: str, messages: list, seconds: float):
        import subprocess
        import sys
        import tempfile

        self.seconds = seconds
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump({"url": url, "avatar": avatar, "messages": messages, "seconds": seconds}, f)
            self.args = f.name
        code = "import sys; from gagavatar.serve.loadclients import _unpaced_main; _unpaced_main(sys.argv[1])"
        self.proc = subprocess.Popen([sys.executable, "-c", code, self.args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)

    def result(self) -> ClientResult:
        import os
        import subprocess

        out = err = b""
        try:
            out, err = self.proc.communicate(timeout=self.seconds + 60)
            return ClientResult(**json.loads(out.decode().strip().splitlines()[-1]))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            return ClientResult("unpaced", "unpaced", errors=["the unpaced client did not finish"])
        except (ValueError, IndexError, TypeError):
            return ClientResult("unpaced", "unpaced", errors=[f"the unpaced client failed: {err.decode()[-300:]}"])
        finally:
            os.unlink(self.args)


def _unpaced_main(args_path: str) -> None:
    from dataclasses import asdict
    from pathlib import Path

    args = json.loads(Path(args_path).read_text())
    print(json.dumps(asdict(unpaced_client(args["url"], args["avatar"], args["messages"], args["seconds"]))))
