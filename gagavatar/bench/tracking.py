"""``gagavatar bench track``, ``synth`` and ``data``: the tracker, synthetic video generation,
and the training data loader."""
from __future__ import annotations

import time
from pathlib import Path

import typer

from gagavatar.bench.tables import Table, show
from gagavatar.settings import checked, whole_numbers

# real face clips (a developer's checkout: ../shared/realdata beside the repository)
REALDATA = Path(__file__).resolve().parents[3] / "shared" / "realdata"


def data(data: str = typer.Option(None, help="a dataset folder (default: 64 synthetic frames at --size, JPEG)"),
         size: int = typer.Option(512, help="training image size", min=16, max=4096),
         workers: str = typer.Option("0,2", help="comma-separated DataLoader worker counts",
                                     callback=checked(lambda text: whole_numbers(text, low=0))),
         batch_size: int = typer.Option(8, help="samples per step (the paper's 8)", min=1),
         batches: int = typer.Option(12, help="timed batches per setting", min=1)):
    """Training samples/s read from the dataset format (two images decoded, composited and resized,
    the frames' parameters, per sample), against what a training step consumes."""
    import tempfile

    from torch.utils.data import DataLoader

    from gagavatar.data.pairs import PairDataset, collate

    with tempfile.TemporaryDirectory() as tmp:
        if data is None:
            from gagavatar.synthetic.video import SynthConfig, generate

            data = str(generate(Path(tmp) / "data", SynthConfig(identities=4, videos_per_identity=1, frames=16,
                                                                size=size, splits=(1.0, 0.0, 0.0), frame_format="jpg",
                                                                workers=1), progress=False).root)
        rows = []
        for w in (int(x) for x in workers.split(",")):
            pairs = PairDataset(data, split="train", size=size, length=(batches + 1) * batch_size)
            loader = iter(DataLoader(pairs, batch_size=batch_size, num_workers=w, collate_fn=collate))
            next(loader)  # workers started, first batch out: not timed
            t0 = time.perf_counter()
            for _ in range(batches):
                next(loader)
            per_s = batches * batch_size / (time.perf_counter() - t0)
            rows.append([w, size, per_s, per_s / batch_size])
    return show(Table(f"training data from {data}",
                      ["workers", "px", "samples/s", f"steps/s it feeds (batch {batch_size})"], rows))


def synth(frames: int = typer.Option(512, help="frames to render (identities x 2 videos x 32 frames)"),
          size: int = typer.Option(128, help="frame size in pixels"),
          workers: int = typer.Option(0, help="processes (0: one per CPU core)")):
    """Synthetic talking-head video generation speed (render + PNG writing), target:
    10,000 frames at 128x128 in under 10 minutes on 2 CPU cores."""
    import resource
    import tempfile

    from gagavatar.synthetic.video import SynthConfig, generate
    from gagavatar.system import usable_cores

    workers = workers or usable_cores()
    per_identity = 2 * 32
    config = SynthConfig(identities=max(1, -(-frames // per_identity)), videos_per_identity=2, frames=32,
                         size=size, seed=0, workers=workers)
    n = config.identities * per_identity

    def cpu_seconds() -> float:
        return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                      resource.getrusage(resource.RUSAGE_CHILDREN)))

    with tempfile.TemporaryDirectory() as out:
        c0, t0 = cpu_seconds(), time.perf_counter()
        generate(out, config, progress=False)
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    return show(Table("Synthetic video generation (gagavatar synth)",
                      ["frames", "px", "workers", "s", "frames/s", "core-ms/frame", "10k frames (min)"],
                      [[n, size, workers, wall, n / wall, 1000 * cpu / n, 10000 / (n / wall) / 60]]))


def _bench_clip(video: str | None, frames: int, size: int = 512):
    """RGB uint8 frames [size,size,3] of a talking-head clip, and where they came from."""
    import numpy as np
    from PIL import Image

    from gagavatar import io as gio

    candidates = [video] if video else [str(REALDATA / "obama.mp4")]
    for path in candidates:
        if path and Path(path).is_file():
            clip = []
            for f in gio.iter_frames(path):
                s = min(f.shape[:2])  # centre square, then 512
                y, x = (f.shape[0] - s) // 2, (f.shape[1] - s) // 2
                clip.append(np.asarray(Image.fromarray(f[y:y + s, x:x + s]).resize((size, size), Image.BILINEAR)))
                if len(clip) == frames:
                    break
            return clip, path
    if video:
        raise typer.BadParameter(f"--video {video}: file not found")
    try:  # no real clip here: a slow pan and zoom over scikit-image's astronaut portrait
        from skimage.data import astronaut
    except ImportError:
        raise typer.BadParameter("no clip to benchmark: pass --video FILE (a talking-head video)")
    img = astronaut()
    clip = []
    for i in range(frames):
        t = i / max(frames - 1, 1)
        s = int(300 + 60 * np.sin(2 * np.pi * t))
        x, y = int(60 + 40 * np.sin(2 * np.pi * t)), int(10 + 20 * np.cos(2 * np.pi * t))
        clip.append(np.asarray(Image.fromarray(img[y:y + s, x:x + s]).resize((size, size), Image.BILINEAR)))
    return clip, "skimage astronaut, panned"


def track(video: str = typer.Option(None, help="a talking-head video (default: ../shared/realdata/obama.mp4, "
                                               "else a pan over scikit-image's astronaut)"),
          frames: int = typer.Option(240, help="frames to track"),
          cores: int = typer.Option(2, help="CPU cores to run on (Linux: the process is pinned to them)")):
    """Tracker speed on a 512x512 video: landmarks, framing (matte) and fitting, frames/s.
    Target: 30 frames/s or more on 2 CPU cores, landmarks and fitting included."""
    import os
    import tempfile

    import numpy as np

    from gagavatar.head import HeadModel
    from gagavatar.system import set_torch_threads, usable_cores
    from gagavatar.tracking.fitting import fit_landmarks
    from gagavatar.tracking.stream import FrameTracker
    from gagavatar.tracking.tracker import track as run_track

    if cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:cores])
        set_torch_threads(usable_cores())
    clip, where = _bench_clip(video, frames)
    head = HeadModel.default()
    stream = FrameTracker(head, 512)  # its stages, timed one by one
    detector, framer = stream.detector, stream.framer
    detector(clip[0])  # warm up the graphs
    clock = lambda: (time.perf_counter(), time.process_time())  # noqa: E731
    c0 = clock()
    faces = [detector(f) for f in clip]
    c1 = clock()
    framed = [framer(f, lm) for f, lm in zip(clip, faces) if lm is not None]
    c2 = clock()
    targets = np.stack([f.landmarks.xy for f in framed])
    fit_landmarks(head, targets[:4], 512)  # warm up
    c3 = clock()
    fit = fit_landmarks(head, targets, 512)
    c4 = clock()
    stream.close()
    n, tracked = len(clip), len(framed)
    with tempfile.TemporaryDirectory() as out:
        clip_path = os.path.join(out, "clip.mp4")
        from gagavatar import io as gio

        gio.write_video(clip_path, clip, 25.0, quality=9)
        c5 = clock()
        run_track(clip_path, os.path.join(out, "tracked"), overlay=False, progress=False)
        c6 = clock()

    def row(name, start, stop, frames):
        wall, cpu = stop[0] - start[0], stop[1] - start[1]
        return [name, 1000 * wall / frames, frames / wall, 1000 * cpu / frames]

    stages = (c2[0] - c0[0] + c4[0] - c3[0], c2[1] - c0[1] + c4[1] - c3[1])
    rows = [row("landmarks (face detection + mesh)", c0, c1, n),
            row("framing (selfie matte, crop, resize)", c1, c2, tracked),
            row("fitting (head model + camera)", c3, c4, tracked),
            row("landmarks + framing + fitting", (0.0, 0.0), stages, n),
            row("gagavatar track (decode, all stages, write JPEG + PNG mattes)", c5, c6, n)]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return show(Table(f"Tracker, {n} frames of 512x512 ({where}; {tracked} with a face; mean landmark error "
                      f"{fit.error_px.mean():.2f} px), {usable_cores()} cores, load average {load:.1f}",
                      ["stage", "ms/frame", "frames/s", "CPU ms/frame"], rows))
