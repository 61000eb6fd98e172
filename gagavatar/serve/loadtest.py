"""``gagavatar bench serve``: the service under load, as clients see it.

Starts ``gagavatar serve`` on a free loopback port (a process of its own, so its memory is
measured alone), makes an avatar from a photo, and runs, each phase with fresh sessions:

1. ``alone``: one client driving by head parameters (a real clip tracked once), sending M
   frames at a webcam's rate and reading every frame back;
2. ``good``: N such clients at once;
3. ``many``: 2N such clients;
4. ``good + misbehaving``: the N clients with K misbehaving ones, each cycling through
   garbage bytes, an oversized message, an abrupt disconnect and a client that never reads;
5. ``good + unpaced``: the N clients with one that sends as fast as it can (a process of its
   own); the server should warn it, read it at its rate, then close it, and the N keep their FPS;
6. ``webcam``: W clients sending JPEG webcam frames of the clip (tracking on the server);
7. ``speak``: S clients speaking at once over ``WS /avatars/{id}/speak`` (PCM16 in 0.1 s pieces
   at the pace of speech, then ``end``), when the server has a speech model (``--speech-model``,
   or the bundled voice of its head model): every frame in order with its time, the latency from
   the end of each 4 s chunk of audio to its first frame, and from the end of the audio to the
   last frame.

Per client: frames sent and received, received FPS, latency percentiles (send -> frame
back), the dropped ratio (frames the server skipped: latest frame wins) and errors. Per
phase, the server's CPU time per frame served, split (from /metrics: the model, JPEG
encoding, the motion, and everything else - the event loop's messages, WebSocket framing,
hand-offs). The server's resident memory is sampled throughout. Output: markdown tables,
and the targets met or not. Traffic goes to 127.0.0.1 only; every loop is bounded in frames
and time.
"""
from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from gagavatar.serve.client import Client, zip_folder
from gagavatar.serve.loadclients import ClientResult, UnpacedProcess, good_client, misbehaving_client, speak_client
from gagavatar.serve.protocol import params_message
from gagavatar.system import rss_mb, usable_cores

# real face clips for the default inputs (a developer's checkout: ../shared/realdata beside the repository)
REALDATA = Path(os.environ.get("GAGAVATAR_REALDATA", Path(__file__).resolve().parents[3] / "shared" / "realdata"))


@dataclass
class LoadConfig:
    clients: int = 4            # good clients driving by parameters
    many_clients: int = 8       # the "many" phase (0: none)
    unpaced: bool = True        # the "good + unpaced" phase
    frames: int = 750           # frames each good client sends per phase (50 s at 15 FPS)
    send_fps: float = 15.0      # each client's sending rate (a webcam's)
    misbehaving: int = 2        # added in the second phase
    webcam_clients: int = 1
    webcam_frames: int = 150
    speak_clients: int = 4      # the "speak" phase (0: none; skipped when the server has no speech model)
    speak_seconds: float = 10.0  # speech each of them says (the start of realdata speech/eng1.wav, else a tone)
    speech_model: str | None = None  # the server's --speech-model
    driver: str | None = None   # a video or tracked folder; default: realdata obama.mp4, else the bundled clip
    photo: str | None = None    # or a tracked folder; default: realdata monroe.jpg, else the bundled source clip
    checkpoint: str | None = None
    head_model: str | None = None
    device: str = "cpu"
    max_batch: int = 4
    threads: int = 0            # the server's --threads
    server_source: str | None = None  # run the server from this checkout (a before/after comparison)
    workdir: str | None = None  # keeps the tracked clip between runs


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
    if not photo.exists():  # the bundled source clip, tracked: tests/test_serve_load.py's avatar
        photo = Dataset(_bundled(DEMO_DATA)).video("source").folder
    photo_bytes = zip_folder(photo) if photo.is_dir() else photo.read_bytes()

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
            if hasattr(frames, "close"):
                frames.close()  # the decoder (ffmpeg) stops here
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
        if cfg.threads:
            command += ["--threads", str(cfg.threads)]
        for flag, value in (("--checkpoint", cfg.checkpoint), ("--head-model", cfg.head_model),
                            ("--speech-model", cfg.speech_model)):
            if value:
                command += [flag, str(Path(value).resolve()) if Path(value).exists() else value]
        env = {k: v for k, v in os.environ.items() if k != "GAGAVATAR_TOKEN"}
        if cfg.server_source:  # run from there: ``python -m`` puts the working folder first on the path
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(cfg.server_source), env.get("PYTHONPATH")]))
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     cwd=cfg.server_source or None)
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
        """The server's resident memory, its render processes included, MB."""
        pid = self.proc.pid
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = f.read().split()
        return rss_mb((pid, *children)) or float("nan")

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


def run_phase(url: str, avatar: str, messages: list, cfg: LoadConfig, misbehaving: int = 0, webcam: bool = False,
              jpegs: list | None = None, max_message_bytes: int = 1 << 20, clients: int | None = None,
              unpaced: bool = False) -> list[ClientResult]:
    n = cfg.webcam_clients if webcam else (clients or cfg.clients)
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
    fast = UnpacedProcess(url, avatar, messages, frames / cfg.send_fps) if unpaced else None
    for t in bad_threads + threads:
        t.start()
    for t in threads:
        t.join(frames / cfg.send_fps + 120)
    stop.set()
    for t in bad_threads:
        t.join(30)
    if fast is not None:
        bad_results.append(fast.result())
    return [r for r in results + bad_results if r is not None]


def speech_samples(seconds: float, rate: int) -> np.ndarray:
    """``seconds`` of speech at ``rate``: realdata speech/eng1.wav (repeated), else a voiced tone."""
    from gagavatar.io import read_audio

    wav = REALDATA / "speech" / "eng1.wav"
    n = round(seconds * rate)
    if wav.is_file():
        audio = read_audio(wav, rate)
        return np.resize(audio, n)
    t = np.arange(n) / rate
    return (0.3 * np.sin(2 * np.pi * (120 + 40 * t) * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))).astype(np.float32)


def speak_phase(url: str, avatar: str, cfg: LoadConfig, rate: int) -> list[ClientResult]:
    """``cfg.speak_clients`` speaking at once, each ``cfg.speak_seconds`` of speech."""
    samples = speech_samples(cfg.speak_seconds, rate)
    results: list[ClientResult | None] = [None] * cfg.speak_clients
    start = threading.Barrier(cfg.speak_clients)

    def run_one(i):
        results[i] = speak_client(url, avatar, f"speaker {i + 1}", samples, start=start)

    threads = [threading.Thread(target=run_one, args=(i,)) for i in range(cfg.speak_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(cfg.speak_seconds * 20 + 300)
    return [r for r in results if r is not None]


def speak_table(title: str, results: list[ClientResult]) -> str:
    lines = [f"**{title}**", "",
             "| client | frames | FPS | end of a chunk's audio -> its first frame, ms | end of audio -> last frame, "
             "ms | errors |", "|---|---:|---:|---|---:|---:|"]
    for r in results:
        chunks = ", ".join(f"{ms:.0f}" for ms in r.latencies_ms) or "-"
        end = f"{r.end_ms:.0f}" if r.end_ms is not None else "-"
        lines.append(f"| {r.name} | {r.received} | {r.fps:.1f} | {chunks} | {end} | {len(r.errors)} |")
    return "\n".join(lines)


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
        if r.kind in ("misbehaving", "unpaced"):
            did = ", ".join(f"{k} x{v}" for k, v in sorted(r.actions.items()))
            lines.append(f"| {r.name} | {did} | {r.sent} | - | - | - | - | - | - | {len(r.errors)} |")
            continue
        dropped = 1 - r.received / r.sent if r.sent else float("nan")
        lines.append(f"| {r.name} | {r.kind} | {r.sent} | {r.received} | {r.fps:.1f} | {r.pct(50):.0f} | "
                     f"{r.pct(95):.0f} | {r.pct(99):.0f} | {dropped:.0%} | {len(r.errors)} |")
    return "\n".join(lines)


def cpu_split(before: dict, after: dict) -> dict:
    """The server's CPU time per frame served between two /metrics answers (ms): its render
    threads' stages, and everything else the process did (the event loop: messages, WebSocket
    framing, hand-offs; tracking; the garbage collector)."""
    frames = after["render"]["frames"] - before["render"]["frames"]
    if frames <= 0 or "cpu_s" not in after["render"] or "process_cpu_s" not in after:
        return {}
    per = lambda a, b: round((a - b) * 1000 / frames, 2)  # noqa: E731
    render = per(after["render"]["cpu_s"], before["render"]["cpu_s"])
    split = {"frames": frames, "process": per(after["process_cpu_s"], before["process_cpu_s"]), "render": render}
    stages_before = before["render"].get("cpu_ms_per_frame") or {}
    for stage, ms in (after["render"].get("cpu_ms_per_frame") or {}).items():  # cumulative means -> this phase's
        if ms is not None:
            total = ms * after["render"]["frames"] - (stages_before.get(stage) or 0) * before["render"]["frames"]
            split[stage] = round(total / frames, 2)
    split["outside_render"] = round(split["process"] - render, 2)
    return split


def run(cfg: LoadConfig, say=print) -> dict:
    """The whole benchmark; prints markdown as it goes and returns the numbers."""
    import platform

    workdir = Path(cfg.workdir or tempfile.mkdtemp(prefix="gagavatar-bench-serve-"))
    workdir.mkdir(parents=True, exist_ok=True)
    say(f"# gagavatar serve under load\n\nmachine: {usable_cores()} usable CPUs, {platform.machine()}, "
        f"load average at start {load_average()} (1, 5, 15 min); model: "
        f"{cfg.checkpoint or 'bundled tiny'}, device {cfg.device}, max batch {cfg.max_batch}, "
        f"threads {cfg.threads or 'default'}" + (f"; the server from {cfg.server_source}" if cfg.server_source else "")
        + "\n")
    photo, messages, jpegs, what = prepare_inputs(cfg, workdir, say)
    say(f"inputs: {what}\n")
    server = ServerProcess(cfg, workdir / "server.log")
    report: dict = {"config": vars(cfg), "load_start": load_average(), "split": {}}
    phases: dict[str, list[ClientResult]] = {}
    try:
        client = Client(server.url)
        t0 = time.perf_counter()
        avatar = client.create_avatar(photo)
        report["avatar_s"] = time.perf_counter() - t0
        health = client.health()
        limits = health["limits"]
        # warm-up: every batch size once (their buffers are allocated then, not counted as growth)
        warm = run_phase(server.url, avatar, messages, replace(cfg, frames=int(4 * cfg.send_fps)))
        say(f"avatar made in {report['avatar_s']:.1f} s (tracking + reconstruction); warm-up: "
            f"{sum(r.received for r in warm)} frames by {cfg.clients} clients; the server renders on "
            f"{health.get('render_threads', '?')} thread(s)\n")

        def phase(name, title, **kw):
            before = server.metrics()
            phases[name] = run_phase(server.url, avatar, messages, cfg, **kw)
            report["split"][name] = cpu_split(before, server.metrics())
            say(table(title, phases[name]) + "\n")
            frames = sum(r.received for r in phases[name] if r.timings_ms)
            if frames:
                totals = {}
                for r in phases[name]:
                    for k, ms in r.timings_ms.items():
                        totals[k] = totals.get(k, 0.0) + ms
                report.setdefault("timings_ms", {})[name] = {k: round(v / frames, 1) for k, v in totals.items()}
                said = report["timings_ms"][name]
                rest = said.get("server_ms", 0) - sum(said.get(k, 0) for k in ("wait_ms", "track_ms", "queue_ms",
                                                                                 "render_ms", "encode_ms"))
                say("frame timings (mean ms, server side): " + ", ".join(f"{k[:-3]} {v:.1f}" for k, v in said.items())
                    + f"; output slot and send {rest:.1f}\n")
            split = report["split"][name]
            if split:
                stages = ", ".join(f"{k} {split[k]:.1f}" for k in ("model", "to_image", "encode", "motion")
                                   if k in split)
                say(f"server CPU per frame served: {split['process']:.1f} ms = render threads {split['render']:.1f} "
                    f"({stages}) + the rest {split['outside_render']:.1f} (event loop: messages, WebSocket framing, "
                    f"hand-offs)\n")

        pace = f"{cfg.frames} frames each at {cfg.send_fps:g} FPS"
        phase("alone", f"1. one client driving by parameters, {pace}", clients=1)
        rss_start = server.rss_mb()
        served_start = server.metrics()["frames"]["served"]
        phase("good", f"2. {cfg.clients} clients driving by parameters, {pace}")
        rss_good, served_good = server.rss_mb(), server.metrics()["frames"]["served"]
        if cfg.many_clients:
            phase("many", f"3. {cfg.many_clients} clients driving by parameters, {pace}", clients=cfg.many_clients)
        if cfg.misbehaving:
            phase("mixed", f"4. {cfg.clients} clients with {cfg.misbehaving} misbehaving ones (garbage, oversized, "
                           f"abrupt disconnect, never reads)", misbehaving=cfg.misbehaving,
                  max_message_bytes=limits["max_message_bytes"])
        if cfg.unpaced:
            phase("unpaced", f"5. {cfg.clients} clients with one sending as fast as it can", unpaced=True)
        if cfg.webcam_clients:
            phase("webcam", f"6. {cfg.webcam_clients} client(s) driving by webcam frames (JPEG, tracked on the "
                            f"server), {cfg.webcam_frames} frames at {cfg.send_fps:g} FPS", webcam=True, jpegs=jpegs)
        speech = health.get("speech", {})
        if cfg.speak_clients and speech.get("available"):
            phases["speak"] = speak_phase(server.url, avatar, cfg, speech["sample_rate"])
            say(speak_table(f"7. {cfg.speak_clients} clients speaking {cfg.speak_seconds:g} s each at once",
                            phases["speak"]) + "\n")
        elif cfg.speak_clients:
            say(f"7. speaking: skipped ({speech.get('note') or 'the server has no speak socket'})\n")
        metrics = server.metrics()
        rss_end = server.rss_mb()
        tracebacks = server.tracebacks()
    finally:
        server.stop()

    def good_of(name):
        return [r for r in phases.get(name, []) if r.kind in ("params", "webcam")]

    def slowest(name):
        return min((r.fps for r in good_of(name)), default=0.0)

    def worst_p95(name):
        return max((r.pct(95) for r in good_of(name)), default=float("nan"))

    fps_good = slowest("good")
    errors_good = sum(len(r.errors) for name in phases for r in good_of(name))
    rss_values = [mb for _, mb in server.rss]
    checks = [
        (f"{cfg.clients} parameter clients >= 8 FPS each", f"slowest {fps_good:.1f} FPS", fps_good >= 8),
        (f"{cfg.clients} clients: p95 latency <= 300 ms", f"worst client p95 {worst_p95('good'):.0f} ms",
         worst_p95("good") <= 300),
    ]
    if "many" in phases:
        checks += [(f"{cfg.many_clients} parameter clients >= 4 FPS each", f"slowest {slowest('many'):.1f} FPS",
                    slowest("many") >= 4),
                   (f"{cfg.many_clients} clients: p95 latency <= 400 ms",
                    f"worst client p95 {worst_p95('many'):.0f} ms", worst_p95("many") <= 400)]
    checks += [
        ("0 errors (good clients, server tracebacks)", f"{errors_good} client errors, {tracebacks} tracebacks, "
                                                       f"{metrics['errors']['server']} server errors",
         errors_good == 0 and tracebacks == 0 and metrics["errors"]["server"] == 0),
        ("RSS growth < 50 MB over phase 2 (after a warm-up)",
         f"{rss_good - rss_start:+.1f} MB over {served_good - served_start} frames ({rss_start:.0f} -> "
         f"{rss_good:.0f} MB)", rss_good - rss_start < 50),
    ]
    if "mixed" in phases:
        bad = sum(len(r.errors) for r in phases["mixed"] if r.kind == "misbehaving")
        checks += [
            (f"with {cfg.misbehaving} misbehaving clients: >= 80% of the FPS",
             f"slowest {slowest('mixed'):.1f} FPS = {slowest('mixed') / max(fps_good, 1e-9):.0%}",
             slowest("mixed") >= 0.8 * fps_good),
            ("misbehaving clients answered as documented", f"{bad} unexpected outcomes", bad == 0)]
    if "unpaced" in phases:
        fast = next((r for r in phases["unpaced"] if r.kind == "unpaced"), None)
        told = bool(fast and fast.actions.get("warnings")) and bool(fast and fast.actions.get("closed 1008"))
        checks += [
            ("with an unpaced client: >= 90% of the FPS", f"slowest {slowest('unpaced'):.1f} FPS = "
                                                         f"{slowest('unpaced') / max(fps_good, 1e-9):.0%}",
             slowest("unpaced") >= 0.9 * fps_good),
            ("the unpaced client warned, then closed (1008)",
             ", ".join(f"{k} x{v}" for k, v in sorted((fast.actions if fast else {}).items())) or "no report", told)]
    if "speak" in phases:
        wrong = sum(len(r.errors) for r in phases["speak"])
        checks.append((f"{cfg.speak_clients} speaking clients: every frame, in order, with its time",
                       f"{wrong} errors", wrong == 0))
    lines = ["**Targets**", "", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {name} | {value} | {'yes' if ok else 'NO'} |" for name, value, ok in checks]
    say("\n".join(lines) + "\n")
    say(f"one client alone: {slowest('alone'):.1f} FPS, p95 {worst_p95('alone'):.0f} ms")
    say(f"server: {metrics['frames']['served']} frames served, render batches {metrics['render']['batches']}, "
        f"{metrics['frames']['dropped_input']} inputs replaced by newer ones, {metrics['frames']['rate_limited']} "
        f"over the rate limit, {metrics['frames']['dropped_output']} not rendered for clients not reading; "
        f"sessions ended: {metrics['sessions']['ended']}; RSS {rss_start:.0f} MB after warm-up, "
        f"max {max(rss_values, default=float('nan')):.0f} MB, {rss_end:.0f} MB at the end; "
        f"load average at the end {load_average()}")
    for name in phases:
        for r in phases[name]:
            for e in r.errors[:3]:
                say(f"  {name}, {r.name}: {e}")
    for name, results in phases.items():
        report[name] = [vars(r) | {"fps": r.fps} for r in results]
        for r in report[name]:
            r["latencies_ms"] = [round(x, 1) for x in r["latencies_ms"]]
    report.update(metrics=metrics, rss=server.rss, checks=[(n, v, bool(ok)) for n, v, ok in checks],
                  load_end=load_average())
    for part in ("good", "mixed", "webcam"):  # the phases `gagavatar bench serve` tabulates
        report.setdefault(part, [])
    return report
