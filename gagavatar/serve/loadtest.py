"""``gagavatar bench serve``: the service under load, as clients see it.

Starts ``gagavatar serve`` on a free loopback port (a process of its own, so its memory is
measured alone), makes an avatar from a photo, and runs, each phase with fresh sessions:

1. ``good``: N clients driving by head parameters (a real clip tracked once), each sending
   M frames at a webcam's rate and reading every frame back;
2. ``good + misbehaving``: the same N clients with K misbehaving ones, each cycling through
   garbage bytes, an oversized message, an abrupt disconnect and a client that never reads;
3. ``webcam``: W clients sending JPEG webcam frames of the clip (tracking on the server).

Per client: frames sent and received, received FPS, latency percentiles (send -> frame
back), the dropped ratio (frames the server skipped: latest frame wins) and errors. The
server's resident memory is sampled throughout. Output: markdown tables, and the targets
met or not. Traffic goes to 127.0.0.1 only; every loop is bounded in frames and time.
"""
from __future__ import annotations

import io
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from gagavatar.serve.client import Client, ServeError
from gagavatar.serve.protocol import params_message

# real face clips for the default inputs (a developer's checkout: ../shared/realdata beside the repository)
REALDATA = Path(os.environ.get("GAGAVATAR_REALDATA", Path(__file__).resolve().parents[3] / "shared" / "realdata"))


@dataclass
class LoadConfig:
    clients: int = 4            # good clients driving by parameters
    frames: int = 750           # frames each good client sends per phase (50 s at 15 FPS)
    send_fps: float = 15.0      # each client's sending rate (a webcam's)
    misbehaving: int = 2        # added in the second phase
    webcam_clients: int = 1
    webcam_frames: int = 150
    driver: str | None = None   # a video or tracked folder; default: realdata obama.mp4, else the bundled clip
    photo: str | None = None    # default: realdata monroe.jpg, else the bundled source frame
    checkpoint: str | None = None
    head_model: str | None = None
    device: str = "cpu"
    max_batch: int = 4
    workdir: str | None = None  # keeps the tracked clip between runs


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

    @property
    def fps(self) -> float:
        return self.received / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


# --------------------------------------------------------------------------- inputs
def _bundled(name: str) -> Path:
    from gagavatar.reenact import bundled

    return bundled(name)


def prepare_inputs(cfg: LoadConfig, workdir: Path, say) -> tuple[bytes, list[dict], list[bytes], str]:
    """(photo bytes, params messages, webcam JPEGs, what the driver is)."""
    from PIL import Image

    from gagavatar import io as gio
    from gagavatar.data.format import INDEX_FILE, Dataset
    from gagavatar.reenact import DEMO_DATA, load_tracked

    photo = Path(cfg.photo) if cfg.photo else (REALDATA / "monroe.jpg")
    if photo.is_file():
        photo_bytes = photo.read_bytes()
    else:
        buffer = io.BytesIO()
        Image.fromarray(Dataset(_bundled(DEMO_DATA)).video("source").frame(0)).save(buffer, "PNG")
        photo, photo_bytes = Path("bundled source frame"), buffer.getvalue()

    driver = Path(cfg.driver) if cfg.driver else (REALDATA / "obama.mp4")
    if not driver.exists():
        driver = _bundled(DEMO_DATA) / "driver"
    tracked = workdir / driver.stem
    if driver.is_file() and (tracked / INDEX_FILE).is_file():
        video = Dataset(tracked).videos[0]
        say(f"driver: {driver.name}, tracked before ({tracked})")
    else:
        t0 = time.perf_counter()
        video = load_tracked(driver, workdir, progress=False)
        say(f"driver: {driver.name} tracked in {time.perf_counter() - t0:.0f} s")
    valid = np.flatnonzero(video.params["valid"])
    messages = [params_message(video.params, int(i), video.width, video.height) for i in valid]

    frames = gio.iter_video(driver) if driver.is_file() and gio.is_video(driver) else \
        (video.frame(i) for i in range(video.n_frames))
    jpegs = []
    for image in frames:
        if len(jpegs) >= max(cfg.webcam_frames, 1):
            break
        im = Image.fromarray(image)
        if im.width > 480:  # what the browser page sends
            im = im.resize((480, round(im.height * 480 / im.width)))
        buffer = io.BytesIO()
        im.save(buffer, "JPEG", quality=80)
        jpegs.append(buffer.getvalue())
    return photo_bytes, messages, jpegs, f"{driver.name} ({len(messages)} tracked frames); photo {photo.name}"


# --------------------------------------------------------------------------- the server
class ServerProcess:
    """``python -m gagavatar serve`` on a free loopback port; its RSS sampled every 0.25 s."""

    def __init__(self, cfg: LoadConfig, log_path: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "gagavatar", "serve", "--port", str(self.port), "--device", cfg.device,
                   "--max-batch", str(cfg.max_batch), "--max-sessions", "64"]
        for flag, value in (("--checkpoint", cfg.checkpoint), ("--head-model", cfg.head_model)):
            if value:
                command += [flag, value]
        env = {k: v for k, v in os.environ.items() if k != "GAGAVATAR_TOKEN"}
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + 180
        while True:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                self.stop()
                raise RuntimeError(f"the server did not start:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.3)
        self.rss: list[tuple[float, float]] = []  # (time, MB)
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def _sample(self) -> None:
        while not self._stop.wait(0.25):
            try:
                self.rss.append((time.perf_counter(), self.rss_mb()))
            except OSError:
                return

    def metrics(self) -> dict:
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as r:
            return json.loads(r.read())

    def tracebacks(self) -> int:
        self.log.flush()
        return self.log_path.read_text(errors="replace").count("Traceback")

    def stop(self) -> None:
        if hasattr(self, "_stop"):
            self._stop.set()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


# --------------------------------------------------------------------------- clients
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


def run_phase(url: str, avatar: str, messages: list, cfg: LoadConfig, misbehaving: int = 0, webcam: bool = False,
              jpegs: list | None = None, max_message_bytes: int = 1 << 20) -> list[ClientResult]:
    n = cfg.webcam_clients if webcam else cfg.clients
    frames = cfg.webcam_frames if webcam else cfg.frames
    results: list[ClientResult | None] = [None] * n
    start = threading.Barrier(n)
    stop = threading.Event()

    def run_good(i):
        results[i] = good_client(url, avatar, f"{'webcam' if webcam else 'client'} {i + 1}",
                                 jpegs if webcam else messages, frames, cfg.send_fps, webcam, start)

    threads = [threading.Thread(target=run_good, args=(i,)) for i in range(n)]
    bad_results: list[ClientResult | None] = [None] * misbehaving

    def run_bad(i):
        bad_results[i] = misbehaving_client(url, avatar, f"misbehaving {i + 1}", messages, stop, cfg.send_fps,
                                            max_message_bytes, seed=i)

    bad_threads = [threading.Thread(target=run_bad, args=(i,)) for i in range(misbehaving)]
    for t in bad_threads + threads:
        t.start()
    for t in threads:
        t.join(frames / cfg.send_fps + 120)
    stop.set()
    for t in bad_threads:
        t.join(30)
    return [r for r in results + bad_results if r is not None]


# --------------------------------------------------------------------------- report
def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def table(title: str, results: list[ClientResult]) -> str:
    lines = [f"**{title}**", "",
             "| client | kind | sent | received | FPS | p50 ms | p95 ms | p99 ms | dropped | errors |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        if r.kind == "misbehaving":
            did = ", ".join(f"{k} x{v}" for k, v in sorted(r.actions.items()))
            lines.append(f"| {r.name} | {did} | {r.sent} | - | - | - | - | - | - | {len(r.errors)} |")
            continue
        dropped = 1 - r.received / r.sent if r.sent else float("nan")
        lines.append(f"| {r.name} | {r.kind} | {r.sent} | {r.received} | {r.fps:.1f} | {r.pct(50):.0f} | "
                     f"{r.pct(95):.0f} | {r.pct(99):.0f} | {dropped:.0%} | {len(r.errors)} |")
    return "\n".join(lines)


def run(cfg: LoadConfig, say=print) -> dict:
    """The whole benchmark; prints markdown as it goes and returns the numbers."""
    import platform

    workdir = Path(cfg.workdir or tempfile.mkdtemp(prefix="gagavatar-bench-serve-"))
    workdir.mkdir(parents=True, exist_ok=True)
    say(f"# gagavatar serve under load\n\nmachine: {os.cpu_count()} CPUs, {platform.machine()}, "
        f"load average at start {load_average()} (1, 5, 15 min); model: "
        f"{cfg.checkpoint or 'bundled tiny'}, device {cfg.device}, max batch {cfg.max_batch}\n")
    photo, messages, jpegs, what = prepare_inputs(cfg, workdir, say)
    say(f"inputs: {what}\n")
    server = ServerProcess(cfg, workdir / "server.log")
    report: dict = {"config": vars(cfg), "load_start": load_average()}
    try:
        client = Client(server.url)
        t0 = time.perf_counter()
        avatar = client.create_avatar(photo)
        report["avatar_s"] = time.perf_counter() - t0
        limits = client.health()["limits"]
        # warm-up: every batch size once (their buffers are allocated then, not counted as growth)
        warm = run_phase(server.url, avatar, messages, replace(cfg, frames=int(4 * cfg.send_fps)))
        say(f"avatar made in {report['avatar_s']:.1f} s (tracking + reconstruction); warm-up: "
            f"{sum(r.received for r in warm)} frames by {cfg.clients} clients\n")

        rss_start = server.rss_mb()
        served_start = server.metrics()["frames"]["served"]
        good = run_phase(server.url, avatar, messages, cfg)
        rss_good, served_good = server.rss_mb(), server.metrics()["frames"]["served"]
        say(table(f"1. {cfg.clients} clients driving by parameters, {cfg.frames} frames each at "
                  f"{cfg.send_fps:g} FPS", good) + "\n")

        mixed = run_phase(server.url, avatar, messages, cfg, misbehaving=cfg.misbehaving,
                          max_message_bytes=limits["max_message_bytes"]) if cfg.misbehaving else []
        if mixed:
            say(table(f"2. the same with {cfg.misbehaving} misbehaving clients (garbage, oversized, abrupt "
                      f"disconnect, never reads)", mixed) + "\n")

        webcam = run_phase(server.url, avatar, messages, cfg, webcam=True, jpegs=jpegs) if cfg.webcam_clients else []
        if webcam:
            say(table(f"3. {cfg.webcam_clients} client(s) driving by webcam frames (JPEG, tracked on the "
                      f"server), {cfg.webcam_frames} frames at {cfg.send_fps:g} FPS", webcam) + "\n")
        metrics = server.metrics()
        rss_end = server.rss_mb()
        tracebacks = server.tracebacks()
    finally:
        server.stop()

    def good_of(results):
        return [r for r in results if r.kind != "misbehaving"]

    fps_good = min((r.fps for r in good), default=0.0)
    fps_mixed = min((r.fps for r in good_of(mixed)), default=0.0)
    p95 = max((r.pct(95) for r in good), default=float("nan"))
    errors_good = sum(len(r.errors) for r in good + good_of(mixed) + webcam)
    errors_bad = sum(len(r.errors) for r in mixed if r.kind == "misbehaving")
    rss_values = [mb for _, mb in server.rss]
    frames_good = served_good - served_start
    checks = [
        (f"{cfg.clients} parameter clients >= 8 FPS each", f"slowest {fps_good:.1f} FPS", fps_good >= 8),
        ("p95 latency <= 300 ms", f"worst client p95 {p95:.0f} ms", p95 <= 300),
        ("0 errors (good clients, server tracebacks)", f"{errors_good} client errors, {tracebacks} tracebacks, "
                                                       f"{metrics['errors']['server']} server errors",
         errors_good == 0 and tracebacks == 0 and metrics["errors"]["server"] == 0),
        ("RSS growth < 50 MB over phase 1 (after a warm-up)",
         f"{rss_good - rss_start:+.1f} MB over {frames_good} frames ({rss_start:.0f} -> {rss_good:.0f} MB)",
         rss_good - rss_start < 50),
    ]
    if mixed:
        checks += [
            (f"with {cfg.misbehaving} misbehaving clients: >= 80% of the FPS",
             f"slowest {fps_mixed:.1f} FPS = {fps_mixed / max(fps_good, 1e-9):.0%}", fps_mixed >= 0.8 * fps_good),
            ("misbehaving clients answered as documented", f"{errors_bad} unexpected outcomes", errors_bad == 0)]
    lines = ["**Targets**", "", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {name} | {value} | {'yes' if ok else 'NO'} |" for name, value, ok in checks]
    say("\n".join(lines) + "\n")
    batches = metrics["render"]["batches"]
    say(f"server: {metrics['frames']['served']} frames served, render batches {batches}, "
        f"{metrics['frames']['dropped_input']} inputs replaced by newer ones, {metrics['frames']['rate_limited']} "
        f"over the rate limit, {metrics['frames']['dropped_output']} not rendered for clients not reading; "
        f"sessions ended: {metrics['sessions']['ended']}; RSS {rss_start:.0f} MB after warm-up, "
        f"max {max(rss_values, default=float('nan')):.0f} MB, {rss_end:.0f} MB at the end; "
        f"load average at the end {load_average()}")
    for r in good + mixed + webcam:
        for e in r.errors[:3]:
            say(f"  {r.name}: {e}")
    report.update(good=[vars(r) | {"fps": r.fps} for r in good], mixed=[vars(r) | {"fps": r.fps} for r in mixed],
                  webcam=[vars(r) | {"fps": r.fps} for r in webcam], metrics=metrics, rss=server.rss,
                  checks=[(n, v, bool(ok)) for n, v, ok in checks], load_end=load_average())
    for part in ("good", "mixed", "webcam"):
        for r in report[part]:
            r["latencies_ms"] = [round(x, 1) for x in r["latencies_ms"]]
    return report
