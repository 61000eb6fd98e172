"""``gagavatar bench serve`` and ``cli``: the service under load, and the command line's start-up."""
from __future__ import annotations

import time

import typer

from gagavatar.bench.tables import Table, show


def serve(clients: int = typer.Option(4, help="clients driving by head parameters"),
          frames: int = typer.Option(750, help="frames each of them sends per phase"),
          send_fps: float = typer.Option(15.0, help="each client's sending rate"),
          misbehaving: int = typer.Option(2, help="misbehaving clients added in the second phase"),
          webcam_clients: int = typer.Option(1, help="clients driving by webcam JPEGs (tracked on the server)"),
          webcam_frames: int = typer.Option(150, help="frames each webcam client sends"),
          speak_clients: int = typer.Option(4, help="clients speaking at once (skipped without a speech model)"),
          speak_seconds: float = typer.Option(10.0, help="seconds of speech each of them says"),
          speech_model: str = typer.Option(None, help="the server's --speech-model (default: the bundled voice of "
                                                      "the head model, if any)"),
          driver: str = typer.Option(None, help="clip to track once for the parameters and webcam frames "
                                                "(default: realdata obama.mp4, else the bundled driver clip)"),
          photo: str = typer.Option(None, help="the avatar's photo or tracked folder (default: realdata "
                                               "monroe.jpg, else the bundled source clip, tracked)"),
          checkpoint: str = typer.Option(None, help="checkpoint to serve (default: the bundled tiny model)"),
          head_model: str = typer.Option(None, help="its head model"),
          device: str = typer.Option("cpu", help="the server's device"),
          max_batch: int = typer.Option(4, help="the server's --max-batch"),
          workdir: str = typer.Option(None, help="folder for the tracked clip (kept: a second run skips tracking)"),
          json_out: str = typer.Option(None, "--json", help="also write every number to this JSON file")):
    """The service under load: N clients x M frames (latency, FPS, drops, memory), with
    misbehaving clients mixed in, and webcam-frame driving. Loopback only."""
    import numpy as np

    from gagavatar.serve.loadtest import LoadConfig, run

    report = run(LoadConfig(clients=clients, frames=frames, send_fps=send_fps, misbehaving=misbehaving,
                            webcam_clients=webcam_clients, webcam_frames=webcam_frames, speak_clients=speak_clients,
                            speak_seconds=speak_seconds, speech_model=speech_model, driver=driver, photo=photo,
                            checkpoint=checkpoint, head_model=head_model, device=device, max_batch=max_batch,
                            workdir=workdir), say=typer.echo)
    rows = []
    for phase in ("good", "mixed", "webcam"):
        good = [r for r in report[phase] if r["kind"] != "misbehaving"]
        if good:
            rows.append([phase, len(good), min(r["fps"] for r in good),
                         max(float(np.percentile(r["latencies_ms"], 95)) if r["latencies_ms"] else float("nan")
                             for r in good),
                         sum(len(r["errors"]) for r in report[phase])])
    speakers = report.get("speak", [])
    if speakers:
        chunk_ms = [ms for r in speakers for ms in r["latencies_ms"]]
        rows.append(["speak", len(speakers), min(r["fps"] for r in speakers),
                     max(chunk_ms, default=float("nan")), sum(len(r["errors"]) for r in speakers)])
    if json_out:
        import json
        from pathlib import Path

        Path(json_out).write_text(json.dumps(report, indent=1, default=str))
    return show(Table("serve under load (speak: worst latency from the end of a chunk's audio to its first frame)",
                      ["phase", "clients", "slowest FPS", "worst p95 ms", "errors"], rows))


def cli(repeat: int = typer.Option(5, help="timed runs (median reported)", min=1)):
    """Start-up of the command line: `gagavatar --help` in a new process (target: under 1 s)."""
    import subprocess
    import sys

    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "gagavatar", "--help"], check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return show(Table("command line start-up", ["command", "median s", "max s"],
                      [["gagavatar --help", sorted(times)[len(times) // 2], max(times)]]))
