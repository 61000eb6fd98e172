"""The avatar's Gaussians as a 3D Gaussian splatting PLY (the layout splat viewers read).

One binary little-endian ``vertex`` element with float32 properties:
x y z, nx ny nz (zeros), f_dc_0..2 (colour as degree-0 spherical harmonics:
(rgb - 0.5) / C0), opacity (logit), scale_0..2 (log), rot_0..3 (unit
quaternion, w first), then feat_0..feat_{C-1}: the network's raw feature channels.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from gagavatar.io import atomic_path, check_finite

SH_C0 = 0.28209479177387814  # degree-0 spherical-harmonic basis constant
_BASE = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
         "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]


def write_ply(path: str | Path, means: np.ndarray, rgb: np.ndarray, opacities: np.ndarray, scales: np.ndarray,
              quats: np.ndarray, features: np.ndarray | None = None) -> Path:
    """Write Gaussians: means [N,3], rgb [N,3] in [0,1], opacities [N] in (0,1), scales [N,3]
    (linear), quats [N,4] (wxyz), features [N,C] (optional extra channels)."""
    n = len(means)
    eps = 1e-6
    opacity = np.clip(np.asarray(opacities, np.float64).reshape(n), eps, 1 - eps)
    quats = np.asarray(quats, np.float64)
    columns = [np.asarray(means, np.float64), np.zeros((n, 3)), (np.clip(rgb, 0, 1) - 0.5) / SH_C0,
               np.log(opacity / (1 - opacity))[:, None], np.log(np.maximum(scales, 1e-12)),
               quats / np.linalg.norm(quats, axis=1, keepdims=True).clip(min=1e-12)]
    names = list(_BASE)
    if features is not None:
        columns.append(np.asarray(features, np.float64))
        names += [f"feat_{i}" for i in range(features.shape[1])]
    data = np.concatenate(columns, axis=1).astype("<f4")
    header = "ply\nformat binary_little_endian 1.0\n" + f"element vertex {n}\n" + \
        "".join(f"property float {name}\n" for name in names) + "end_header\n"
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(data.tobytes())
    return path


def read_ply(path: str | Path) -> dict[str, np.ndarray]:
    """Read a PLY written by ``write_ply`` (float properties of one vertex element) back into
    linear quantities: means, rgb, opacities, scales, quats, features (if any), names."""
    raw = Path(path).read_bytes()
    end = raw.find(b"end_header\n")
    if not raw.startswith(b"ply") or end < 0:
        raise ValueError(f"{path}: not a PLY file")
    header = raw[:end].decode("ascii").splitlines()
    if "format binary_little_endian 1.0" not in header:
        raise ValueError(f"{path}: only binary little-endian PLY is read")
    n = int(next(line.split()[2] for line in header if line.startswith("element vertex")))
    names = [line.split()[2] for line in header if line.startswith("property float")]
    data = np.frombuffer(raw[end + len(b"end_header\n"):], dtype="<f4", count=n * len(names)).reshape(n, len(names))
    col = {name: data[:, i] for i, name in enumerate(names)}
    stack = lambda keys: np.stack([col[k] for k in keys], axis=1)  # noqa: E731
    feats = sorted((k for k in names if k.startswith("feat_")), key=lambda k: int(k[5:]))
    return {
        "names": names,
        "means": stack(["x", "y", "z"]),
        "rgb": stack(["f_dc_0", "f_dc_1", "f_dc_2"]) * SH_C0 + 0.5,
        "opacities": 1 / (1 + np.exp(-col["opacity"])),
        "scales": np.exp(stack(["scale_0", "scale_1", "scale_2"])),
        "quats": stack(["rot_0", "rot_1", "rot_2", "rot_3"]),
        "features": stack(feats) if feats else None,
    }


def avatar_to_ply(path: str | Path, avatar, vertices) -> Path:
    """Write a batch-1 avatar (``GAGAvatar.reconstruct``'s output) with its expression
    Gaussians at ``vertices`` [1,V,3] (e.g. the source frame's own)."""
    gaussians = {"means": avatar.means(vertices)[0], "features": avatar.features[0],
                 "opacities": avatar.opacities[0, :, 0], "scales": avatar.splat_scales[0],
                 "rotations": avatar.splat_rotations[0]}
    g = {k: v.detach().cpu().double().numpy() for k, v in gaussians.items()}
    check_finite(g, "the avatar's Gaussians")  # a PLY of NaN opens as nothing in a viewer
    return write_ply(path, g["means"], g["features"][:, :3], g["opacities"], g["scales"], g["rotations"],
                     g["features"])
