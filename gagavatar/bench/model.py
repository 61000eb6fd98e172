"""``gagavatar bench reenact`` and ``head``: the network (reconstruction and driving) and the
head model's forward pass."""
from __future__ import annotations

import typer

from gagavatar.bench.tables import Table, console, devices, show, timeit
from gagavatar.settings import checked, whole_numbers


def reenact(preset: str = typer.Option("tiny", help="model preset: tiny, small or paper"),
            batches: str = typer.Option("1,8", help="comma-separated batch sizes", callback=checked(whole_numbers)),
            device: str = typer.Option("all", help="cpu, cuda, or all (cpu + cuda when present)"),
            repeat: int = typer.Option(5, help="timed repetitions (median reported)", min=1),
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

    devs = devices(device)
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
    for dev in devs:
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
    return show(Table(f"reenactment ({preset}: {model.config.n_gaussians:,} Gaussians, "
                      f"{model.config.render_size}px, {model.config.channels} channels)",
                      ["preset", "device", "mode", "batch", "reconstruct ms", "ms / avatar", "drive ms / frame",
                       "driving FPS", "max |diff| vs fp32"], rows))


def head(batches: str = typer.Option("1,64", help="comma-separated batch sizes", callback=checked(whole_numbers)),
         device: str = typer.Option("all", help="cpu, cuda, or all (cpu + cuda when present)"),
         repeat: int = typer.Option(20, help="timed repetitions (median reported)", min=1)):
    """Head-model forward (blend shapes + pose correctives + skinning) time.

    Two models: the bundled synthetic head (the columns its file has) and a
    FLAME-sized random model (5,023 vertices, 300 shape + 100 expression columns;
    speed does not depend on the values). Every row drives shape, expression, jaw,
    neck and eyes; 'shared shape' gives one shape row for the whole batch.
    """
    import torch

    import numpy as np

    from gagavatar.head import HeadModel

    devs = devices(device)
    rng = np.random.default_rng(0)
    V = 5023
    flame_sized = HeadModel({
        "v_template": rng.normal(size=(V, 3)) * 0.1, "shapedirs": rng.normal(size=(V, 3, 400)) * 1e-3,
        "posedirs": rng.normal(size=(V, 3, 36)) * 1e-3, "J_regressor": rng.dirichlet(np.ones(V), size=5),
        "kintree_table": np.array([[2**32 - 1, 0, 1, 1, 1], [0, 1, 2, 3, 4]]),
        "weights": rng.dirichlet(np.ones(5), size=V), "f": rng.integers(0, V, (9976, 3))})
    models = [("synthetic (default)", HeadModel.default()), ("FLAME-sized 300+100", flame_sized)]
    rows = []
    for dev in devs:
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
    return show(Table("head model forward (5,023 vertices)",
                      ["model", "device", "batch", "shared shape", "ms", "meshes / s"], rows))
