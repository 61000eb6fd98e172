"""``gagavatar bench render``: the Gaussian rasterizer on a head-like synthetic scene."""
from __future__ import annotations

import typer

from gagavatar.bench.tables import PeakMemory, Table, devices, show, timeit


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


def render(backend: str = typer.Option("all", help="torch, gsplat, or all (every backend usable here)"),
           device: str = typer.Option("all", help="cpu, cuda, or all (cpu + cuda when present)"),
           scales: str = typer.Option("paper,tiny", help="comma-separated: paper (180,255 Gaussians, 512px), "
                                                         "tiny (20,000 Gaussians, 128px)"),
           sigma_px: str = typer.Option("1,3", help="range of the splats' screen-space sigma in pixels"),
           channels: int = typer.Option(32, help="feature channels", min=3, max=256),
           repeat: int = typer.Option(3, help="timed repetitions (median reported)", min=1),
           threads: int = typer.Option(0, help="torch CPU threads (0: the command line's, half the cores or "
                                                  "OMP_NUM_THREADS)", min=0)):
    """Rasterizer time per frame and peak memory, forward and forward+backward.

    A head-like synthetic scene (see head_like_splats). Targets on 2 CPU cores:
    paper-scale forward < 2 s, tiny-scale forward < 30 ms; paper-scale forward
    < 2 ms on an H100 with gsplat. Memory: see PeakMemory (CPU: resident set
    growth; CUDA: tensor memory).
    """
    import torch

    from gagavatar.render.rasterize import gsplat_available, rasterize
    from gagavatar.system import set_torch_threads

    if threads > 0:
        set_torch_threads(threads)
    devs = devices(device)
    sigma = tuple(float(s) for s in sigma_px.split(","))
    rows = []
    for name in scales.split(","):
        n, size = RENDER_SCALES[name]
        scene = head_like_splats(n, size, channels, sigma)
        for dev in devs:
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
    return show(Table(f"Gaussian rasterizer ({channels} channels, sigma {sigma[0]:g}-{sigma[1]:g} px)",
                      ["scale", "Gaussians", "px", "device", "backend", "pass", "ms/frame", "peak MiB"], rows))
