"""``gagavatar bench``: speed and memory benchmarks, printed as tables.

Each sub-command measures one stage; ``bench all`` runs every one of them.
Targets live here, not in unit tests.
"""
from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from gagavatar.system import machine_description

app = typer.Typer(help="Speed and memory benchmarks.", no_args_is_help=True)
console = Console()


def timeit(fn, repeat: int = 5, warmup: int = 1, device: str = "cpu") -> float:
    """Median wall time of ``fn()`` in milliseconds."""
    import torch

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1000)
    return sorted(times)[len(times) // 2]


# While ``bench all`` runs: every table printed, as (title, columns, rows), for its summary.
_collected: list[tuple[str, list[str], list[list]]] | None = None


def print_table(title: str, columns: list[str], rows: list[list]) -> None:
    table = Table(title=title, caption=machine_description())
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*[f"{v:.2f}" if isinstance(v, float) else str(v) for v in r])
    console.print(table)
    if _collected is not None:
        _collected.append((title, list(columns), [list(r) for r in rows]))


def _devices(device: str) -> list[str]:
    """--device cpu | cuda | all -> the devices to time (all: cpu, and cuda when present)."""
    import torch

    devices = [d for d in (["cpu", "cuda"] if device == "all" else [device]) if d == "cpu" or torch.cuda.is_available()]
    if not devices:
        raise typer.BadParameter("no CUDA device here; use --device cpu")
    return devices


@app.command("reenact")
def reenact(preset: str = typer.Option("tiny", help="model preset: tiny, small or paper"),
            batches: str = typer.Option("1,8", help="comma-separated batch sizes"),
            device: str = typer.Option("all", help="cpu, cuda, or all (cpu + cuda when present)"),
            repeat: int = typer.Option(5, help="timed repetitions (median reported)"),
            fast: bool = typer.Option(True, help="also time the refiner in bf16 autocast (+ torch.compile on CUDA)"),
            weights: str = typer.Option(None, help="GAGAvatar.pt or a gagavatar .safetensors to time instead of "
                                                   "random weights (--preset is then ignored)")):
    """Reconstruction time and driving FPS (vertices -> final image) of the network.

    Random weights by default: the network's cost does not depend on them, but the
    splat's does (random lifting heads give every Gaussian a scale of 0.025, larger
    than trained ones, so driving is slower than with real weights). The mean head
    of the bundled head model (x5) drives; cameras are 5 units away.
    """
    import torch

    import contextlib
    import warnings

    from gagavatar.model import create_model
    from gagavatar.geometry import Camera

    devices = _devices(device)
    sizes = [int(b) for b in batches.split(",")]
    if weights is not None:
        from gagavatar.model import load

        model = load(weights).eval()
        preset = model.config.name
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = create_model(preset).eval()
    try:
        from gagavatar.geometry import WORLD_SCALE
        from gagavatar.head import HeadModel

        head = HeadModel.default()
        head_vertices = head(torch.zeros(1, head.n_shape)).detach() * WORLD_SCALE
        if head_vertices.shape[1] != model.config.n_vertices:
            raise ValueError
    except Exception:  # no bundled head: a ball of points with the right count
        head_vertices = torch.nn.functional.normalize(torch.randn(1, model.config.n_vertices, 3), dim=-1)
    rows = []
    for dev in devices:
        model.to(dev)
        variants = [("float32", contextlib.nullcontext, model.refine)]
        if fast and dev == "cuda":
            compiled = torch.compile(model.refine)
            variants.append(("bf16+compile", lambda: torch.autocast("cuda", dtype=torch.bfloat16), compiled))
        elif fast:  # CPUs with AVX512-BF16 / AMX run the refiner's convolutions faster in bf16
            variants.append(("bf16", lambda: torch.autocast("cpu", dtype=torch.bfloat16), model.refine))
        reference = {}
        for name, autocast, refine in variants:
            for B in sizes:
                image = torch.rand(B, 3, 512, 512, device=dev)
                eye = torch.tensor([0.0, 0.0, 5.0]).expand(B, 3)
                source = Camera.look_at(eye, size=model.config.render_size).to(dev)
                target = Camera.look_at(torch.tensor([0.5, 0.3, 4.9]).expand(B, 3),
                                        size=model.config.render_size).to(dev)
                vertices = head_vertices.to(dev).expand(B, -1, -1)

                def recon():
                    with torch.no_grad(), autocast():
                        return model.reconstruct(image, source)

                avatar = recon().to(torch.float32)

                def drive():
                    with torch.no_grad():
                        features, _, _ = model.splat(avatar, vertices, target)
                        with autocast():
                            return refine(features).float()

                recon_ms = timeit(recon, repeat=repeat, device=dev)
                drive_ms = timeit(drive, repeat=repeat, warmup=2, device=dev)
                out = drive()
                if name == "float32":
                    reference[B] = out
                    dev_text = "-"
                else:
                    dev_text = f"{(out - reference[B]).abs().max().item():.2e}"
                rows.append([preset, dev, name, B, recon_ms, recon_ms / B, drive_ms / B, 1000.0 * B / drive_ms,
                             dev_text])
                console.print(f"{preset} {dev} {name} batch {B}: reconstruct {recon_ms:.1f} ms, "
                              f"driving {1000.0 * B / drive_ms:.2f} FPS")
        model.to("cpu")
    print_table(f"reenactment ({preset}: {model.config.n_gaussians:,} Gaussians, "
                f"{model.config.render_size}px, {model.config.channels} channels)",
                ["preset", "device", "mode", "batch", "reconstruct ms", "ms / avatar", "drive ms / frame",
                 "driving FPS", "max |diff| vs fp32"], rows)


@app.command("head")
def head(batches: str = typer.Option("1,64", help="comma-separated batch sizes"),
         device: str = typer.Option("all", help="cpu, cuda, or all (cpu + cuda when present)"),
         repeat: int = typer.Option(20, help="timed repetitions (median reported)")):
    """Head-model forward (blend shapes + pose correctives + skinning) time.

    Two models: the bundled synthetic head (the columns its file has) and a
    FLAME-sized random model (5,023 vertices, 300 shape + 100 expression columns;
    speed does not depend on the values). Every row drives shape, expression, jaw,
    neck and eyes; 'shared shape' gives one shape row for the whole batch.
    """
    import torch

    import numpy as np

    from gagavatar.head import HeadModel

    devices = _devices(device)
    rng = np.random.default_rng(0)
    V = 5023
    flame_sized = HeadModel({
        "v_template": rng.normal(size=(V, 3)) * 0.1, "shapedirs": rng.normal(size=(V, 3, 400)) * 1e-3,
        "posedirs": rng.normal(size=(V, 3, 36)) * 1e-3, "J_regressor": rng.dirichlet(np.ones(V), size=5),
        "kintree_table": np.array([[2**32 - 1, 0, 1, 1, 1], [0, 1, 2, 3, 4]]),
        "weights": rng.dirichlet(np.ones(5), size=V), "f": rng.integers(0, V, (9976, 3))})
    models = [("synthetic (default)", HeadModel.default()), ("FLAME-sized 300+100", flame_sized)]
    rows = []
    for dev in devices:
        for name, model in models:
            model.to(dev)
            for B in [int(b) for b in batches.split(",")]:
                for shared in (False, True):
                    g = torch.Generator().manual_seed(0)
                    shape = torch.randn(1 if shared else B, model.n_shape, generator=g).to(dev)
                    expr = torch.randn(B, model.n_expression, generator=g).to(dev)
                    pose = (0.1 * torch.randn(B, 3, generator=g)).to(dev)
                    eyes = (0.1 * torch.randn(B, 6, generator=g)).to(dev)

                    def forward():
                        with torch.no_grad():
                            return model(shape, expr, pose, pose, pose, eyes)

                    ms = timeit(forward, repeat=repeat, warmup=3, device=dev)
                    rows.append([name, dev, B, "yes" if shared else "no", ms, 1000.0 * B / ms])
            model.to("cpu")
    print_table("head model forward (5,023 vertices)", ["model", "device", "batch", "shared shape", "ms",
                                                        "meshes / s"], rows)


class PeakMemory:
    """Peak memory above the level at entry, in MiB, of the code inside ``with``.

    CUDA: ``torch.cuda.max_memory_allocated`` (tensors only, not the caching
    allocator's reserve). CPU: growth of the process's resident set size,
    sampled every millisecond from /proc/self/statm after handing freed heap
    memory back to the system (Linux; it sees torch's allocations, which
    tracemalloc does not).
    """

    def __init__(self, device: str):
        self.device, self.mib = device, float("nan")

    def _rss(self) -> int:
        import os

        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self):
        import threading

        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
            return self
        try:
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)  # so memory freed earlier does not hide growth
        except (OSError, AttributeError):
            pass
        try:
            self.start = self.peak = self._rss()
        except OSError:  # not Linux: no sampling
            return self
        self.running = True

        def sample():
            while self.running:
                self.peak = max(self.peak, self._rss())
                time.sleep(0.001)

        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        import torch

        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self.mib = (torch.cuda.max_memory_allocated() - self.start) / 2**20
        elif hasattr(self, "thread"):
            self.running = False
            self.thread.join()
            self.mib = (max(self.peak, self._rss()) - self.start) / 2**20


def head_like_splats(n: int, size: int, channels: int = 32, sigma_px: tuple[float, float] = (1.0, 3.0),
                     seed: int = 0, distance: float = 9.3):
    """A splat scene shaped like GAGAvatar's, for timing: (means, quats, scales, opacities,
    features, viewmat, K) with a batch of 1.

    Like the lifted Gaussians, a square grid of points across the view is pushed
    forward onto the front of an ellipsoidal head (front layer) or back by the
    same amount (back layer); the rest (the "expression" Gaussians) lie on the
    head's front. Screen-space standard deviations are log-uniform in
    ``sigma_px`` (random orientations), opacities uniform in [0.5, 0.8] (the
    released model's are 0.65 +- 0.08), the camera at ``distance`` with focal 12.
    """
    import torch

    import math

    from gagavatar.geometry import REFERENCE_FOCAL, intrinsics

    g = torch.Generator().manual_seed(seed)
    side = int(math.sqrt((n - min(5023, n // 30)) / 2))
    n_surface = n - 2 * side * side
    fx = REFERENCE_FOCAL * size / 2
    half = (size / 2) / fx * distance  # half the view's width at the head
    grid = torch.linspace(-half, half, side)
    y, x = (t.reshape(-1) for t in torch.meshgrid(grid, grid, indexing="ij"))
    radii = torch.tensor([0.8, 1.0, 0.9]) * half
    height = radii[2] * torch.sqrt((1 - (x / radii[0]) ** 2 - (y / radii[1]) ** 2).clamp_min(0))
    jitter = torch.rand(2, side * side, generator=g) * 0.05 * half
    front = torch.stack([x, y, distance - height - jitter[0]], -1)
    back = torch.stack([x, y, distance + height + jitter[1]], -1)
    u = torch.nn.functional.normalize(torch.randn(n_surface, 3, generator=g), dim=-1)
    u[:, 2] = -u[:, 2].abs()
    surface = u * radii + torch.tensor([0.0, 0.0, distance])
    means = torch.cat([front, back, surface])
    lo, hi = math.log(sigma_px[0]), math.log(sigma_px[1])
    scales = torch.exp(torch.rand(n, 3, generator=g) * (hi - lo) + lo) * distance / fx
    quats = torch.randn(n, 4, generator=g)
    opacities = torch.rand(n, generator=g) * 0.3 + 0.5
    features = torch.rand(n, channels, generator=g)
    return (means[None], quats[None], scales[None], opacities[None], features[None],
            torch.eye(4)[None], intrinsics(REFERENCE_FOCAL, size, size))


RENDER_SCALES = {"paper": (180_255, 512), "tiny": (20_000, 128)}


@app.command("render")
def render(backend: str = typer.Option("all", help="torch, gsplat, or all (every backend usable here)"),
           device: str = typer.Option("all", help="cpu, cuda, or all (cpu + cuda when present)"),
           scales: str = typer.Option("paper,tiny", help="comma-separated: paper (180,255 Gaussians, 512px), "
                                                         "tiny (20,000 Gaussians, 128px)"),
           sigma_px: str = typer.Option("1,3", help="range of the splats' screen-space sigma in pixels"),
           channels: int = typer.Option(32, help="feature channels"),
           repeat: int = typer.Option(3, help="timed repetitions (median reported)"),
           threads: int = typer.Option(0, help="torch CPU threads (0: leave torch's default)")):
    """Rasterizer time per frame and peak memory, forward and forward+backward.

    A head-like synthetic scene (see head_like_splats). Targets on 2 CPU cores:
    paper-scale forward < 2 s, tiny-scale forward < 30 ms; paper-scale forward
    < 2 ms on an H100 with gsplat. Memory: see PeakMemory (CPU: resident set
    growth; CUDA: tensor memory).
    """
    import torch

    from gagavatar.render.rasterize import gsplat_available, rasterize

    if threads > 0:
        torch.set_num_threads(threads)
    devices = _devices(device)
    sigma = tuple(float(s) for s in sigma_px.split(","))
    rows = []
    for name in scales.split(","):
        n, size = RENDER_SCALES[name]
        scene = head_like_splats(n, size, channels, sigma)
        for dev in devices:
            backends = ["torch", "gsplat"] if backend == "all" else [backend]
            backends = [b for b in backends if b == "torch" or (dev == "cuda" and gsplat_available())]
            inputs = [t.to(dev) for t in scene]
            leaves = [t.clone().requires_grad_() for t in inputs[:5]]
            for b in backends:
                def forward():
                    with torch.no_grad():
                        return rasterize(*inputs, size, size, backend=b)

                def forward_backward():
                    out = rasterize(*leaves, *inputs[5:], size, size, backend=b)
                    (out.image.square().mean() + out.depth.mean()).backward()

                for mode, fn in (("fwd", forward), ("fwd+bwd", forward_backward)):
                    fn()  # warm up outside the memory measurement
                    with PeakMemory(dev) as memory:
                        fn()
                    ms = timeit(fn, repeat=repeat, warmup=0, device=dev)
                    rows.append([name, f"{n:,}", size, dev, b, mode, ms, memory.mib])
                    for leaf in leaves:
                        leaf.grad = None
    print_table(f"Gaussian rasterizer ({channels} channels, sigma {sigma[0]:g}-{sigma[1]:g} px)",
                ["scale", "Gaussians", "px", "device", "backend", "pass", "ms/frame", "peak MiB"], rows)


@app.command("cli")
def cli(repeat: int = typer.Option(5, help="timed runs (median reported)")):
    """Start-up of the command line: `gagavatar --help` in a new process (target: under 1 s)."""
    import subprocess
    import sys

    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "gagavatar", "--help"], check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    print_table("command line start-up", ["command", "median s", "max s"],
                [["gagavatar --help", sorted(times)[len(times) // 2], max(times)]])


@app.command("data")
def data(data: str = typer.Option(None, help="a dataset folder (default: 64 synthetic frames at --size, JPEG)"),
         size: int = typer.Option(512, help="training image size"),
         workers: str = typer.Option("0,2", help="comma-separated DataLoader worker counts"),
         batch_size: int = typer.Option(8, help="samples per step (the paper's 8)"),
         batches: int = typer.Option(12, help="timed batches per setting")):
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
    print_table(f"training data from {data}", ["workers", "px", "samples/s", f"steps/s it feeds (batch {batch_size})"],
                rows)


@app.command("synth")
def synth(frames: int = typer.Option(512, help="frames to render (identities x 2 videos x 32 frames)"),
          size: int = typer.Option(128, help="frame size in pixels"),
          workers: int = typer.Option(0, help="processes (0: one per CPU core)")):
    """Synthetic talking-head video generation speed (render + PNG writing), target:
    10,000 frames at 128x128 in under 10 minutes on 2 CPU cores."""
    import os
    import resource
    import tempfile

    from gagavatar.synthetic.video import SynthConfig, generate

    workers = workers or os.cpu_count() or 1
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
    print_table("Synthetic video generation (gagavatar synth)",
                ["frames", "px", "workers", "s", "frames/s", "core-ms/frame", "10k frames (min)"],
                [[n, size, workers, wall, n / wall, 1000 * cpu / n, 10000 / (n / wall) / 60]])


def _bench_clip(video: str | None, frames: int, size: int = 512):
    """RGB uint8 frames [size,size,3] of a talking-head clip, and where they came from."""
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from gagavatar import io as gio

    candidates = [video] if video else [str(Path(__file__).resolve().parents[2] / "shared" / "realdata" / "obama.mp4")]
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


@app.command("track")
def track(video: str = typer.Option(None, help="a talking-head video (default: ../shared/realdata/obama.mp4, "
                                               "else a pan over scikit-image's astronaut)"),
          frames: int = typer.Option(240, help="frames to track"),
          cores: int = typer.Option(2, help="CPU cores to run on (Linux: the process is pinned to them)")):
    """Tracker speed on a 512x512 video: landmarks, framing (matte) and fitting, frames/s.
    Target: 30 frames/s or more on 2 CPU cores, landmarks and fitting included."""
    import torch

    import os
    import tempfile

    import numpy as np

    from gagavatar.head import HeadModel
    from gagavatar.tracking.fitting import fit_landmarks
    from gagavatar.tracking.framing import Framer
    from gagavatar.tracking.landmarks import LandmarkDetector
    from gagavatar.tracking.matting import Segmenter
    from gagavatar.tracking.tracker import track as run_track

    if cores and hasattr(os, "sched_setaffinity"):
        available = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, available[:cores])
        torch.set_num_threads(min(cores, len(available)))
    clip, where = _bench_clip(video, frames)
    head = HeadModel.default()
    detector, segmenter = LandmarkDetector(video=True), Segmenter()
    framer = Framer(segmenter, 512)
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
    detector.close()
    segmenter.close()
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
    cores_used = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    print_table(f"Tracker, {n} frames of 512x512 ({where}; {tracked} with a face; mean landmark error "
                f"{fit.error_px.mean():.2f} px), {cores_used} cores, load average {load:.1f}",
                ["stage", "ms/frame", "frames/s", "CPU ms/frame"], rows)


# ``bench all``'s small settings (per benchmark; only options the benchmark has are used;
# "render" adds the paper scale where there is a GPU).
@app.command("serve")
def serve(clients: int = typer.Option(4, help="clients driving by head parameters"),
          frames: int = typer.Option(750, help="frames each of them sends per phase"),
          send_fps: float = typer.Option(15.0, help="each client's sending rate"),
          misbehaving: int = typer.Option(2, help="misbehaving clients added in the second phase"),
          webcam_clients: int = typer.Option(1, help="clients driving by webcam JPEGs (tracked on the server)"),
          webcam_frames: int = typer.Option(150, help="frames each webcam client sends"),
          driver: str = typer.Option(None, help="clip to track once for the parameters and webcam frames "
                                                "(default: realdata obama.mp4, else the bundled driver clip)"),
          photo: str = typer.Option(None, help="the avatar's photo (default: realdata monroe.jpg, else the "
                                               "bundled source frame)"),
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
                            webcam_clients=webcam_clients, webcam_frames=webcam_frames, driver=driver, photo=photo,
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
    print_table("serve under load", ["phase", "clients", "slowest FPS", "worst p95 ms", "errors"], rows)
    if json_out:
        import json
        from pathlib import Path

        Path(json_out).write_text(json.dumps(report, indent=1, default=str))


SMALL_SETTINGS = {
    "render": {"scales": "tiny", "repeat": 2},
    "reenact": {"batches": "1", "repeat": 2},
    "head": {"batches": "1,64", "repeat": 5},
    "synth": {"frames": 64},
    "track": {"frames": 48},
    "serve": {"frames": 150, "webcam_frames": 60},
}


def summary_rows(collected: list[tuple[str, str, list[str], list[list]]]) -> list[list[str]]:
    """One row per measured case: [benchmark, table, case (the text columns), results (the numbers)]."""
    out = []
    for name, title, columns, rows in collected:
        for r in rows:
            case = ", ".join(f"{c}={v}" for c, v in zip(columns, r) if not isinstance(v, float))
            results = ", ".join(f"{c} {v:.2f}" for c, v in zip(columns, r) if isinstance(v, float))
            out.append([name, title.split(" (")[0].split(",")[0], case, results])
    return out


@app.command("all")
def run_all(full: bool = typer.Option(False, help="each benchmark's own defaults instead of the small settings"),
            out: str = typer.Option(None, help="also write the summary table to this markdown file")):
    """Run every other benchmark (small settings unless --full), then one summary table of
    all of them with the machine description. A benchmark that fails is listed with its error."""
    import inspect
    import os

    import torch

    global _collected
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    threads = torch.get_num_threads()
    collected: list[tuple[str, str, list[str], list[list]]] = []
    for command in app.registered_commands:
        if command.callback is run_all:
            continue
        name = command.name or command.callback.__name__
        kwargs = {}
        for p in inspect.signature(command.callback).parameters.values():
            kwargs[p.name] = p.default.default if isinstance(p.default, typer.models.ParameterInfo) else p.default
        if not full:
            small = SMALL_SETTINGS.get(name, {}) | ({"scales": "paper,tiny"} if name == "render" and
                                                   torch.cuda.is_available() else {})
            kwargs.update({k: v for k, v in small.items() if k in kwargs})
        console.rule(f"gagavatar bench {name}")
        _collected = []
        try:
            command.callback(**kwargs)
        except Exception as e:  # noqa: BLE001 - one failing benchmark must not hide the others
            console.print(f"[red]bench {name} failed: {type(e).__name__}: {e}[/red]")
            _collected.append(("failed", ["error"], [[f"{type(e).__name__}: {e}"]]))
        finally:
            collected += [(name, *table) for table in _collected]
            _collected = None
            if affinity is not None:  # a benchmark may pin the process to a few cores
                os.sched_setaffinity(0, affinity)
            torch.set_num_threads(threads)
    columns = ["benchmark", "table", "case", "results (ms, frames/s, MiB, ...)"]
    rows = summary_rows(collected)
    console.rule("summary")
    print_table("gagavatar bench all" + (" (full settings)" if full else " (small settings)"), columns, rows)
    if out:
        lines = [f"# gagavatar bench all{' --full' if full else ''}", "", f"Machine: {machine_description()}", "",
                 "| " + " | ".join(columns) + " |", "|---|---|---|---|"]
        lines += ["| " + " | ".join(str(c).replace("|", "/") for c in r) + " |" for r in rows]
        from pathlib import Path

        Path(out).write_text("\n".join(lines) + "\n")
        console.print(f"wrote {out}")
