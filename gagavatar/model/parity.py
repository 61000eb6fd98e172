"""Exactness check against numbers the reference network itself produced (SPEC §8).

    python -m gagavatar.model.parity FIXTURE.npz [--dtype float64|float32] [--device cpu|cuda] [--tol T]

Builds the ``paper`` network with SPEC §8's deterministic weights (seed read
from the file), runs it on the file's inputs and prints, for every output group
in the file, the largest absolute difference; exits 1 if any exceeds ``--tol``.
The file covers the network only (no rasterisation): plane, direction code,
F_id, decoder, every Gaussian attribute, and the refiner on a given input.
``--device cuda`` runs the network on the GPU (TF32 off unless ``--tf32``: the
check is of float32 itself).
"""
from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from gagavatar.model.config import paper
from gagavatar.model.checkpoint import build_from_state
from gagavatar.model.official import our_name
from gagavatar.model.reference_weights import deterministic_tensor, official_listing
from gagavatar.geometry import Camera

ATTRIBUTES = ("xyz", "colors", "opacities", "scales", "rotations")


def deterministic_paper_model(seed: int, dtype: torch.dtype = torch.float64, config=None):
    """The paper network (or ``config``, same sizes) with SPEC §8's weights for ``seed``
    (perceptual tensors skipped)."""
    state = {}
    for i, (name, shape) in enumerate(official_listing()):
        if not name.startswith("percep_loss."):
            state[our_name(name)] = deterministic_tensor(i, name, shape, seed).to(dtype)
    return build_from_state(state, paper() if config is None else config, dtype=dtype)


def _sample_indices(total: int, count: int) -> np.ndarray:
    """The fixture's evenly strided selection 0, s, 2s, ... of ``count`` items out of ``total``."""
    step = math.ceil(total / count)
    idx = np.arange(0, total, step)
    if len(idx) != count:
        raise ValueError(f"cannot infer the stride of {count} samples out of {total}")
    return idx


def compute_outputs(fixture, dtype: torch.dtype = torch.float64, model=None,
                    device: str | torch.device = "cpu") -> dict[str, np.ndarray]:
    """Run the network on the fixture's inputs (on ``device``); returns arrays named like the
    fixture's outputs."""
    f = fixture
    model = deterministic_paper_model(int(f["weight_seed"]), dtype) if model is None else model
    model.eval().to(device)
    out = {}
    with torch.no_grad():
        image = torch.from_numpy(f["source_image_u8"]).to(device=device, dtype=dtype)[None] / 255.0
        source = Camera.from_reference(torch.from_numpy(f["source_transform"])[None], 512).to(device)
        enc = model.encode(image, source)
        P2 = enc.plane_points.shape[1]
        out["plane_dirs"] = enc.plane_dirs[0]
        out["plane_points_sel"] = enc.plane_points[0, _sample_indices(P2, len(f["plane_points_sel"]))]
        out["direnc"] = enc.direction_code[0]
        out["f_id"] = enc.identity[0]
        fmap = enc.feature_map[0]
        out["decoder_channel_mean"] = fmap.mean(dim=(1, 2))
        c, y, x = torch.from_numpy(f["decoder_samples_idx"]).unbind(-1)
        out["decoder_samples"] = fmap[c, y, x]

        avatar = model.gaussians_from(enc)
        del enc, fmap
        points = torch.from_numpy(f["target_points"]).to(device=device, dtype=dtype)[None]
        gauss = {"xyz": avatar.means(points)[0], "colors": avatar.features[0], "opacities": avatar.opacities[0],
                 "scales": avatar.scales[0], "rotations": avatar.rotations[0]}
        idx = torch.from_numpy(f["gaussian_idx"])
        n = gauss["xyz"].shape[0]
        for a in ATTRIBUTES:
            out[f"gaussian_{a}"] = gauss[a][idx]
            out[f"gaussian_{a}_mean"] = gauss[a].sum(0) / n
            out[f"gaussian_{a}_sqmean"] = gauss[a].square().sum(0) / n
        del avatar, gauss

        if "refiner_input_64" in f and model.refiner is not None:
            x = torch.from_numpy(f["refiner_input_64"]).to(device=device, dtype=dtype)
            x = F.interpolate(x, size=(512, 512), mode="bilinear", align_corners=False)
            logits = model.refiner(x, noise="stored", return_logits=True)[0]
            output = torch.sigmoid(logits)
            stride = 512 // f["refiner_logits_s8"].shape[-1]
            out["refiner_logits_s8"] = logits[:, ::stride, ::stride]
            out["refiner_output_s8"] = output[:, ::stride, ::stride]
            out["refiner_logits_mean"] = logits.mean(dim=(1, 2))
            out["refiner_output_mean"] = output.mean(dim=(1, 2))
    out["n_gaussians"] = torch.tensor(n)
    return {k: v.double().cpu().numpy() for k, v in out.items()}


def compare(fixture, computed: dict[str, np.ndarray]) -> list[tuple[str, float, float]]:
    """[(group, max abs difference, max abs fixture value)] for every group in the fixture.

    Sums over all Gaussians / pixels are compared as means (sum / count): the
    reference builds the plane in float32, and that rounding adds up in raw sums.
    """
    f = fixture
    n = float(computed["n_gaussians"])
    rows = []

    def add(name, ours, ref):
        ref = np.asarray(ref, dtype=np.float64)
        if ours.shape != ref.shape:
            raise ValueError(f"{name}: computed shape {ours.shape} != fixture shape {ref.shape}")
        rows.append((name, float(np.abs(ours - ref).max()), float(np.abs(ref).max())))

    for k in ("plane_dirs", "plane_points_sel", "direnc", "f_id", "decoder_channel_mean", "decoder_samples"):
        add(k, computed[k], f[k])
    for a in ATTRIBUTES:
        add(f"gaussian_{a}", computed[f"gaussian_{a}"], f[f"gaussian_{a}"])
        add(f"gaussian_{a}_mean", computed[f"gaussian_{a}_mean"], f[f"gaussian_{a}_sum"] / n)
        add(f"gaussian_{a}_sqmean", computed[f"gaussian_{a}_sqmean"], f[f"gaussian_{a}_sqsum"] / n)
    if "refiner_logits_s8" in computed:
        hw = 512 * 512
        add("refiner_logits_s8", computed["refiner_logits_s8"], f["refiner_logits_s8"])
        add("refiner_output_s8", computed["refiner_output_s8"], f["refiner_output_s8"])
        add("refiner_logits_mean", computed["refiner_logits_mean"], f["refiner_logits_sum"] / hw)
        add("refiner_output_mean", computed["refiner_output_mean"], f["refiner_output_sum"] / hw)
    return rows


def run(path, dtype: torch.dtype = torch.float64, include_refiner: bool = True,
        device: str | torch.device = "cpu") -> list[tuple[str, float, float]]:
    """Load the fixture at ``path``, compute (on ``device``), compare."""
    with np.load(path) as data:
        fixture = {k: data[k] for k in data.files}
    if not include_refiner:
        fixture = {k: v for k, v in fixture.items() if not k.startswith("refiner_")}
    return compare(fixture, compute_outputs(fixture, dtype, device=device))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gagavatar.model.parity", description=__doc__.split("\n\n")[0])
    parser.add_argument("fixture", help="parity_fixture.npz (SPEC §8)")
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    parser.add_argument("--tol", type=float, default=None,
                        help="largest allowed absolute difference (default 1e-5 in float64, 1e-3 in float32, "
                             "whose rounding alone reaches ~1e-4 on the refiner's logits)")
    parser.add_argument("--no-refiner", action="store_true", help="skip the refiner groups")
    parser.add_argument("--device", default="cpu", help="where the network runs: cpu, cuda, cuda:1, ...")
    parser.add_argument("--tf32", action="store_true", help="on CUDA, let matrix products and convolutions use "
                                                            "TF32 (off by default: float32 is what is checked)")
    args = parser.parse_args(argv)
    if args.tol is None:
        args.tol = 1e-5 if args.dtype == "float64" else 1e-3
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            parser.error(f"--device {args.device}: no CUDA device here")
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.tf32
    t0 = time.perf_counter()
    rows = run(args.fixture, getattr(torch, args.dtype), include_refiner=not args.no_refiner, device=device)
    width = max(len(r[0]) for r in rows)
    print(f"{'group':<{width}}  {'max |diff|':>11}  {'max |ref|':>11}")
    for name, diff, ref in rows:
        flag = "" if diff <= args.tol else "  FAIL"
        print(f"{name:<{width}}  {diff:11.3e}  {ref:11.3e}{flag}")
    worst = max(rows, key=lambda r: r[1])
    ok = worst[1] <= args.tol
    print(f"{args.dtype} on {device}: worst {worst[0]} {worst[1]:.3e} ({'<=' if ok else '>'} tol {args.tol:g}); "
          f"{time.perf_counter() - t0:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
