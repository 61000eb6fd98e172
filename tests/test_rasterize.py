"""The Gaussian rasterizer against a brute-force float64 reference, finite differences and gsplat.

The reference below composites *every* Gaussian at every pixel, with no tiles
and no bounding boxes. The torch backend only lists a Gaussian for the tiles
its opacity-aware box (and then its alpha >= 1/255 ellipse) reaches; outside
it alpha < 1/255 for opacity <= 1, so those contributions would be skipped
anyway and the two must agree to float64 rounding. A culling rule that dropped
anything visible (a plain 3-sigma cut, say) makes these tests fail.
"""
from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from conftest import requires_cuda
from scipy.spatial.transform import Rotation

from gagavatar.geometry import intrinsics, look_at
from gagavatar.render import RasterOutput, rasterize

R = importlib.import_module("gagavatar.render.rasterize")  # the module (the package exports the function)


def reference_render(means, quats, scales, opacities, features, viewmat, K, width, height,
                     background=None, near=0.01, eps2d=0.3, t_min=1e-4):
    """One scene, float64, straight from the 3DGS rules: every Gaussian, sorted by depth, per pixel.

    Returns image [C, H, W], alpha [1, H, W], depth [1, H, W] and the mask of
    pixels where compositing stopped at the transmittance floor.
    """
    means, quats, scales, opacities, features, viewmat, K = (
        np.asarray(t.detach().cpu() if torch.is_tensor(t) else t, dtype=np.float64)
        for t in (means, quats, scales, opacities, features, viewmat, K))
    C = features.shape[1]
    rot_view, t_view = viewmat[:3, :3], viewmat[:3, 3]
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    px, py = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    splats = []
    for i in range(len(means)):
        x, y, z = rot_view @ means[i] + t_view
        if z < near:
            continue
        rot = Rotation.from_quat(quats[i][[1, 2, 3, 0]]).as_matrix()  # scipy wants (x, y, z, w)
        cov = rot_view @ rot @ np.diag(scales[i] ** 2) @ rot.T @ rot_view.T
        # the Jacobian is taken at the position clamped to 1.3x the field of view
        u = np.clip(x / z, -cx / fx - 0.15 * width / fx, (width - cx) / fx + 0.15 * width / fx)
        v = np.clip(y / z, -cy / fy - 0.15 * height / fy, (height - cy) / fy + 0.15 * height / fy)
        J = np.array([[fx / z, 0.0, -fx * u / z], [0.0, fy / z, -fy * v / z]])
        cov2d = J @ cov @ J.T + eps2d * np.eye(2)
        splats.append((z, fx * x / z + cx, fy * y / z + cy, np.linalg.inv(cov2d), opacities[i], features[i]))
    splats.sort(key=lambda s: s[0])
    image = np.zeros((C, height, width))
    depth = np.zeros((height, width))
    T = np.ones((height, width))
    done = np.zeros((height, width), dtype=bool)
    for z, mx, my, inv, opacity, f in splats:
        dx, dy = px - mx, py - my
        q = inv[0, 0] * dx * dx + 2 * inv[0, 1] * dx * dy + inv[1, 1] * dy * dy
        alpha = np.minimum(0.99, opacity * np.exp(-0.5 * q))
        use = (alpha >= 1 / 255) & ~done
        t_next = T * (1 - alpha)
        stop = use & (t_next < t_min)
        done |= stop
        use &= ~stop
        w = np.where(use, alpha * T, 0.0)
        image += w * f[:, None, None]
        depth += w * z
        T = np.where(use, t_next, T)
    alpha = 1 - T
    if background is not None:
        image += T * np.asarray(background.detach().cpu() if torch.is_tensor(background) else background,
                                dtype=np.float64)[:, None, None]
    depth = np.where(alpha > 0, depth / np.maximum(alpha, 1e-10), 0.0)
    return image, alpha[None], depth[None], done


def random_scene(seed, B=1, N=80, C=3, width=40, height=32, dtype=torch.float64, extremes=True,
                 opacity=(0.0, 1.0), spread=1.0, scale=(0.02, 0.4)):
    """Random Gaussians around the origin seen by cameras ~3.5 away, plus awkward ones."""
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(B, N, 3, generator=g, dtype=dtype) * 2 - 1) * spread
    quats = torch.randn(B, N, 4, generator=g, dtype=dtype)
    scales = torch.exp(torch.empty(B, N, 3, dtype=dtype).uniform_(np.log(scale[0]), np.log(scale[1]), generator=g))
    opacities = torch.empty(B, N, dtype=dtype).uniform_(*opacity, generator=g)
    features = torch.randn(B, N, C, generator=g, dtype=dtype)
    eyes = torch.randn(B, 3, generator=g, dtype=dtype)
    eyes = eyes / eyes.norm(dim=-1, keepdim=True) * 3.5
    viewmats = look_at(eyes)
    Ks = intrinsics(1.6, width, height, B, dtype)
    if extremes and N >= 10:
        direction = eyes / eyes.norm(dim=-1, keepdim=True)
        means[:, 0] = eyes * 1.2                              # behind the camera
        means[:, 1] = eyes - direction * 0.005                # in front of it, but inside the near plane
        means[:, 2] = viewmats[:, 0, :3] * 4.0                # far off screen to the side
        scales[:, 3] = torch.tensor([0.3, 1e-4, 1e-4])        # a needle
        scales[:, 4] = torch.tensor([1.5, 1.2, 1.8])          # bigger than the view
        scales[:, 5] = torch.tensor([1e-4, 1e-4, 1e-4])       # a point (only the 0.3 px^2 dilation)
        opacities[:, 6] = 0.0                                 # invisible
        opacities[:, 7] = 0.5 / 255                           # under the alpha threshold everywhere
        opacities[:, 8] = 1.0                                 # alpha hits the 0.99 clamp
        means[:, 9] = viewmats[:, 0, :3] * 1.1                # centre just off the edge, splat on screen
    return means, quats, scales, opacities, features, viewmats, Ks


def compare(out: RasterOutput, scene, width, height, background=None, atol=1e-9):
    means, quats, scales, opacities, features, viewmats, Ks = scene
    stopped = 0
    for b in range(means.shape[0]):
        bg = None if background is None else background[b] if background.dim() == 2 else background
        image, alpha, depth, done = reference_render(means[b], quats[b], scales[b], opacities[b], features[b],
                                                     viewmats[b], Ks[b], width, height, bg)
        np.testing.assert_allclose(out.image[b].detach().cpu().double().numpy(), image, atol=atol, rtol=0)
        np.testing.assert_allclose(out.alpha[b].detach().cpu().double().numpy(), alpha, atol=atol, rtol=0)
        np.testing.assert_allclose(out.depth[b].detach().cpu().double().numpy(), depth, atol=atol * 10, rtol=0)
        stopped += int(done.sum())
    return stopped


@pytest.fixture
def small_blocks(monkeypatch):
    """Tiny work sizes, so a small scene spans many blocks and tile groups."""
    monkeypatch.setattr(R, "_BLOCK", 4)
    monkeypatch.setattr(R, "_CHUNK_PIXELS", 256)


@pytest.mark.parametrize("seed,B,C,with_background", [(0, 2, 3, True), (1, 1, 1, False), (2, 1, 32, True),
                                                      (3, 3, 3, False)])
def test_matches_brute_force(seed, B, C, with_background):
    width, height = 40, 32
    scene = random_scene(seed, B=B, C=C, width=width, height=height)
    background = torch.rand(B, C, dtype=torch.float64) if with_background else None
    out = rasterize(*scene, width, height, background=background, backend="torch")
    assert out.image.shape == (B, C, height, width) and out.alpha.shape == out.depth.shape == (B, 1, height, width)
    compare(out, scene, width, height, background)
    assert (out.alpha > 0.5).any() and (out.alpha < 0.1).any()  # dense splats and nearly empty space


@pytest.mark.parametrize("tile", [8, 16])
def test_tile_sizes_and_blocks_agree_with_brute_force(tile, small_blocks, monkeypatch):
    monkeypatch.setattr(R, "_choose_tile", lambda radius: tile)
    width, height = 37, 29  # not a multiple of the tile size
    scene = random_scene(4, B=2, N=120, C=3, width=width, height=height)
    compare(rasterize(*scene, width, height, backend="torch"), scene, width, height)


def saturated_scene():
    """Many large, nearly opaque Gaussians: most pixels reach the transmittance floor."""
    return random_scene(5, B=1, N=60, C=3, width=24, height=20, extremes=False, opacity=(0.9, 0.995),
                        spread=1.0, scale=(0.3, 0.8))


def test_compositing_stops_at_the_transmittance_floor(small_blocks):
    scene = saturated_scene()
    out = rasterize(*scene, 24, 20, background=torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64),
                    backend="torch")
    stopped = compare(out, scene, 24, 20, background=torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64))
    assert stopped > 100  # the stop rule really decided most pixels


def test_the_comparison_detects_wrong_rules(monkeypatch):
    """Each rule matters: changing one makes the renderer disagree with the reference."""
    scene = saturated_scene()
    scene[3].fill_(1.0)  # opacity 1: alpha reaches the clamp near the centres
    compare(rasterize(*scene, 24, 20, backend="torch"), scene, 24, 20)
    for name, value in [("T_MIN", 0.0), ("EPS2D", 0.0), ("ALPHA_MAX", 0.999)]:
        with monkeypatch.context() as patch:
            patch.setattr(R, name, value)
            if name == "ALPHA_MAX":
                patch.setattr(R, "_LOG_ALPHA_MAX", np.log(value))
            with pytest.raises(AssertionError):
                compare(rasterize(*scene, 24, 20, backend="torch"), scene, 24, 20)


def test_float32_is_close_to_the_float64_reference():
    width, height = 48, 40
    scene = random_scene(6, B=2, N=150, C=3, width=width, height=height)
    out = rasterize(*(t.float() for t in scene), width, height, backend="torch")
    assert out.image.dtype == torch.float32
    compare(out, scene, width, height, atol=2e-4)


def test_nothing_to_draw_gives_the_background():
    width, height = 20, 16
    background = torch.tensor([0.2, 0.4, 0.6])
    means, quats, scales, opacities, features, viewmats, Ks = random_scene(7, B=2, N=30, dtype=torch.float32)
    cases = {
        "no Gaussians": (means[:, :0], quats[:, :0], scales[:, :0], opacities[:, :0], features[:, :0]),
        "all behind the camera": (-means * 0.1 + 2 * torch.linalg.inv(viewmats)[:, None, :3, 3], quats, scales,
                                  opacities, features),
        "zero opacity": (means, quats, scales, torch.zeros_like(opacities), features),
    }
    for name, gaussians in cases.items():
        out = rasterize(*gaussians, viewmats, Ks, width, height, background=background, backend="torch")
        assert torch.equal(out.image, background[None, :, None, None].expand(2, 3, height, width)), name
        assert not out.alpha.any() and not out.depth.any(), name


def test_broadcast_camera_and_auto_backend_on_cpu():
    width, height = 30, 20
    means, quats, scales, opacities, features, viewmats, Ks = random_scene(8, B=2, N=40, width=width,
                                                                           height=height)
    out = rasterize(means, quats, scales, opacities, features, viewmats[:1], Ks[0], width, height,
                    background=torch.ones(3, dtype=torch.float64), backend="auto")
    same = rasterize(means, quats, scales, opacities, features, viewmats[:1].expand(2, 4, 4),
                     Ks[:1].expand(2, 3, 3), width, height, background=torch.ones(2, 3, dtype=torch.float64),
                     backend="torch")
    for a, b in zip(out, same):
        assert torch.equal(a, b)


def test_bad_inputs_say_what_is_wrong():
    means, quats, scales, opacities, features, viewmats, Ks = random_scene(9, B=2, N=12, dtype=torch.float32)
    with pytest.raises(ValueError, match="means must be"):
        rasterize(means[0], quats, scales, opacities, features, viewmats, Ks, 8, 8)
    with pytest.raises(ValueError, match="opacities must be"):
        rasterize(means, quats, scales, opacities[..., None], features, viewmats, Ks, 8, 8)
    with pytest.raises(ValueError, match="viewmats must be"):
        rasterize(means, quats, scales, opacities, features, viewmats[:, :3], Ks, 8, 8)
    with pytest.raises(ValueError, match="background must be"):
        rasterize(means, quats, scales, opacities, features, viewmats, Ks, 8, 8, background=torch.zeros(4))
    with pytest.raises(TypeError, match="features is torch.float64"):
        rasterize(means, quats, scales, opacities, features.double(), viewmats, Ks, 8, 8)
    with pytest.raises(ValueError, match="backend must be"):
        rasterize(means, quats, scales, opacities, features, viewmats, Ks, 8, 8, backend="cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="needs CUDA tensors"):
            rasterize(means, quats, scales, opacities, features, viewmats, Ks, 8, 8, backend="gsplat")


def _gradcheck_scene(seed, saturate):
    g = torch.Generator().manual_seed(seed)
    dt = torch.float64
    N, C = 7, 2
    means = torch.randn(1, N, 3, generator=g, dtype=dt) * (0.1 if saturate else 0.25)
    quats = torch.randn(1, N, 4, generator=g, dtype=dt)
    scales = torch.rand(1, N, 3, generator=g, dtype=dt) * 0.3 + (0.3 if saturate else 0.1)
    low, high = (0.9, 0.98) if saturate else (0.2, 0.7)
    opacities = torch.rand(1, N, generator=g, dtype=dt) * (high - low) + low
    features = torch.randn(1, N, C, generator=g, dtype=dt)
    return means, quats, scales, opacities, features


@pytest.mark.parametrize("seed,saturate", [(0, False), (1, True)])
def test_gradients_match_finite_differences(seed, saturate, small_blocks):
    """d(random projection of image, alpha, depth) / d(means, quats, scales, opacities, features)."""
    width, height = 12, 10
    inputs = [t.requires_grad_() for t in _gradcheck_scene(seed, saturate)]
    viewmats = look_at(torch.tensor([[0.2, 0.1, 3.0]], dtype=torch.float64))
    Ks = intrinsics(1.0, width, height, 1, torch.float64)
    background = torch.tensor([0.3, 0.7], dtype=torch.float64)
    g = torch.Generator().manual_seed(seed + 100)
    weights = [torch.randn(1, c, height, width, generator=g, dtype=torch.float64) for c in (2, 1, 1)]

    def loss(*gaussians):
        out = rasterize(*gaussians, viewmats, Ks, width, height, background=background, backend="torch")
        return sum((o * w).sum() for o, w in zip(out, weights))

    if saturate:  # the transmittance floor is reached somewhere, so its gradient path is checked too
        with torch.no_grad():
            out = rasterize(*inputs, viewmats, Ks, width, height, backend="torch")
        _, _, _, done = reference_render(*(t[0] for t in inputs), viewmats[0], Ks[0], width, height)
        assert done.any() and (out.alpha > 0.999).any()
    assert torch.autograd.gradcheck(loss, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_gradient_of_features_only():
    width, height = 12, 10
    means, quats, scales, opacities, features = _gradcheck_scene(2, False)
    viewmats = look_at(torch.tensor([[0.2, 0.1, 3.0]], dtype=torch.float64))
    Ks = intrinsics(1.0, width, height, 1, torch.float64)
    features.requires_grad_()
    out = rasterize(means, quats, scales, opacities, features, viewmats, Ks, width, height, backend="torch")
    (grad,) = torch.autograd.grad(out.image.sum(), features)
    # image = sum_i w_i f_i, so d(sum of the image) / d f_i = sum over pixels of w_i, the same for every channel
    assert torch.allclose(grad[..., 0], grad[..., 1]) and (grad > 0).any()


@pytest.mark.gpu
@requires_cuda
def test_torch_backend_on_cuda_matches_cpu():
    width, height = 40, 32
    scene = random_scene(10, B=2, N=100, C=3, width=width, height=height, dtype=torch.float32)
    cpu = rasterize(*scene, width, height, backend="torch")
    gpu = rasterize(*(t.cuda() for t in scene), width, height, backend="torch")
    for a, b in zip(cpu, gpu):
        torch.testing.assert_close(b.cpu(), a, atol=1e-4, rtol=1e-4)


@pytest.mark.gpu
@requires_cuda
def test_gsplat_matches_torch():
    pytest.importorskip("gsplat")
    width, height = 64, 48
    # opacities <= 0.99: gsplat clamps alpha at 0.999, the 3DGS rule at 0.99 (see rasterize's docstring)
    scene = random_scene(11, B=2, N=300, C=32, width=width, height=height, dtype=torch.float32,
                         extremes=False, opacity=(0.05, 0.99))
    scene = [t.cuda() for t in scene]
    background = torch.rand(2, 32, device="cuda")
    leaves = [[t.clone().requires_grad_() for t in scene[:5]] for _ in range(2)]
    outs, grads = [], []
    for backend, gaussians in zip(("torch", "gsplat"), leaves):
        out = rasterize(*gaussians, *scene[5:], width, height, background=background, backend=backend)
        (out.image.square().mean() + out.alpha.mean() + out.depth.mean()).backward()
        outs.append(out)
        grads.append([t.grad for t in gaussians])
    for a, b in zip(*outs):
        diff = (a - b).abs()
        # float32 and rounding at the 1/255 and 1e-4 cut-offs: rare pixels may differ by a cut contribution
        assert diff.mean() < 1e-4 and (diff > 1e-3).float().mean() < 1e-3, diff.max()
    for a, b in zip(*grads):
        assert torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.99
