"""The GAGAvatar network: exactness against the reference's own numbers, training
forward/backward, the inference API, presets, and checkpoint loading."""
from __future__ import annotations

import logging
import math
import pathlib
import warnings

import pytest
import torch

from gagavatar.model import CheckpointError, create_model, load, load_official, paper, save
from gagavatar.model.config import ModelConfig, preset_config
from gagavatar.model.lifting import (ExpressionGaussians, covariance_to_quat_scale, point_plane,
                                     reference_covariances, squash_rgb)
from gagavatar.model.network import GAGAvatar
from gagavatar.model.official import convert_official, our_name, split_official
from gagavatar.model.reference_weights import official_listing
from gagavatar.model.vit import VisionTransformer, load_backbone_weights
from gagavatar.geometry import Camera, reference_to_viewmat

TESTDATA = pathlib.Path(__file__).resolve().parent / "data"


def tiny_model(**overrides) -> GAGAvatar:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random-backbone warning
        torch.manual_seed(0)
        return create_model("tiny", **overrides)


def tiny_batch(model: GAGAvatar, B: int = 2) -> dict:
    g = torch.Generator().manual_seed(1)
    size = 128
    eyes = torch.tensor([[0.6, 0.3, 4.9], [-0.9, -0.2, 4.8], [0.0, 0.5, 5.1]])[:B]
    return {
        "source_image": torch.rand(B, 3, size, size, generator=g),
        "source_camera": Camera.look_at(eyes, size=size),
        "target_vertices": torch.nn.functional.normalize(torch.randn(B, model.config.n_vertices, 3, generator=g), dim=-1),
        "target_camera": Camera.look_at(eyes.flip(0), size=size),
    }


# ---------------------------------------------------------------------------- exactness

def test_parity_with_reference_fixture():
    """Every output group of SPEC §8's fixture within 1e-5 (float64)."""
    from gagavatar.model import parity

    rows = parity.run(TESTDATA / "parity_fixture.npz", torch.float64)
    groups = {name for name, _, _ in rows}
    assert {"f_id", "decoder_samples", "gaussian_rotations_mean", "refiner_output_s8"} <= groups
    bad = [(name, diff) for name, diff, _ in rows if not diff <= 1e-5]
    assert not bad, f"parity broken: {bad}"


def test_lifted_rgb_sigmoid_quirk():
    x = torch.randn(1, 5, 4, 6)
    cols = squash_rgb(x, "columns")
    chans = squash_rgb(x, "channels")
    # "columns": every channel squashed on pixel columns 0-2, untouched elsewhere
    assert torch.equal(cols[..., :3], torch.sigmoid(x[..., :3]))
    assert torch.equal(cols[..., 3:], x[..., 3:])
    assert torch.equal(chans[:, :3], torch.sigmoid(x[:, :3]))
    assert torch.equal(chans[:, 3:], x[:, 3:])


def test_expression_rotation_normalisation_quirk():
    torch.manual_seed(0)
    ref = ExpressionGaussians(n_vertices=50, embed_dim=8, id_dim=4, hidden=16, head_hidden=8, channels=4,
                              rotation_norm="vertices")
    q = ref(torch.randn(2, 4), torch.randn(2, 27))["rotations"]
    # each quaternion component has unit norm across the vertices, not each quaternion
    assert torch.allclose(q.norm(dim=1), torch.ones(2, 4), atol=1e-6)
    assert not torch.allclose(q.norm(dim=-1), torch.ones(2, 50), atol=1e-2)
    ref.rotation_norm = "per_gaussian"
    q = ref(torch.randn(2, 4), torch.randn(2, 27))["rotations"]
    assert torch.allclose(q.norm(dim=-1), torch.ones(2, 50), atol=1e-6)


def test_non_unit_quaternions_keep_the_reference_covariance():
    """The reference rasterizer uses quaternions as given; our conversion to unit
    quaternions + scales gives the same covariance."""
    g = torch.Generator().manual_seed(0)
    q = torch.randn(200, 4, generator=g, dtype=torch.float64) * 0.02
    s = torch.rand(200, 3, generator=g, dtype=torch.float64) * 0.05
    cov = reference_covariances(q, s)
    # independent: the 3DGS formula written out for one Gaussian
    w, x, y, z = q[7].tolist()
    R = torch.tensor([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                      [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                      [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]], dtype=torch.float64)
    M = R @ torch.diag(s[7])
    assert torch.allclose(cov[7], M @ M.T, atol=1e-15)
    q2, s2 = covariance_to_quat_scale(cov)
    assert torch.allclose(q2.norm(dim=-1), torch.ones(200, dtype=torch.float64))
    assert torch.allclose(reference_covariances(q2, s2), cov, atol=1e-14)


def test_point_plane_lies_on_pixel_rays():
    """Point (i, j) projects to pixel (W j / (P-1), H i / (P-1)) and sits at depth |C . d|."""
    camera = Camera.look_at(torch.tensor([[1.0, 0.5, 4.8]]), size=512)
    P = 9
    points, dirs = point_plane(camera, P)
    uv = camera.project(points.view(1, -1, 3)).view(P, P, 2)
    j, i = torch.meshgrid(torch.arange(P), torch.arange(P), indexing="xy")
    assert torch.allclose(uv[..., 0], 512.0 * j / (P - 1), atol=1e-3)
    assert torch.allclose(uv[..., 1], 512.0 * i / (P - 1), atol=1e-3)
    C = camera.center[0]
    depth = ((points[0] - C) @ dirs[0])
    assert torch.allclose(depth, (C @ dirs[0]).abs().expand(P * P), atol=1e-5)
    assert torch.allclose(dirs[0], camera.forward[0])


# ---------------------------------------------------------------------------- training and inference

def test_tiny_forward_backward():
    model = tiny_model().train()
    batch = tiny_batch(model)
    out = model(**batch)
    R, C = model.config.render_size, model.config.plane_size
    assert out.coarse.shape == out.fine.shape == (2, 3, R, R)
    assert out.alpha.shape == (2, 1, R, R)
    assert out.lifted_points.shape == (2, 2 * C * C, 3)
    for t in (out.coarse, out.fine, out.alpha, out.lifted_points):
        assert torch.isfinite(t).all()
    loss = (out.fine - 0.5).abs().mean() + (out.coarse - 0.5).abs().mean() + out.lifted_points.square().mean()
    loss.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(not n.startswith("backbone.") for n, _ in trainable)
    no_grad = [n for n, p in trainable if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
    assert not no_grad, f"no gradient reaches {no_grad}"
    assert all(p.grad is None for p in model.backbone.parameters())


def test_render_after_reconstruct_equals_training_forward():
    model = tiny_model().eval()
    batch = tiny_batch(model)
    with torch.no_grad():
        train_out = model(**batch)
        avatar = model.reconstruct(batch["source_image"], batch["source_camera"])
        out = model.render(avatar, batch["target_vertices"], batch["target_camera"])
        # one avatar driving several frames: a batch-1 avatar broadcasts
        single = model.reconstruct(batch["source_image"][:1], batch["source_camera"][0])
        many = model.render(single, batch["target_vertices"], batch["target_camera"])
        # the cameras as stored (reference 3x4 transforms + pixel intrinsics) give the same frames
        stored = {role: Camera(reference_to_viewmat(cam.to_reference()), cam.K, cam.width, cam.height)
                  for role, cam in (("source_camera", batch["source_camera"]), ("target_camera", batch["target_camera"]))}
        loader_out = model(**(batch | stored))
    assert torch.allclose(out.fine, train_out.fine, atol=1e-6)
    assert torch.allclose(out.coarse, train_out.coarse, atol=1e-6)
    assert torch.allclose(out.alpha, train_out.alpha, atol=1e-6)
    assert torch.allclose(avatar.lifted_xyz, train_out.lifted_points)
    assert torch.allclose(many.fine[:1], out.fine[:1], atol=1e-6)
    assert torch.allclose(loader_out.fine, train_out.fine, atol=1e-5)


@pytest.mark.parametrize("overrides", [{"one_plane": True}, {"use_fid": False}, {"use_refiner": False}])
def test_ablation_switches(overrides):
    model = tiny_model(**overrides).eval()
    with torch.no_grad():
        out = model(**tiny_batch(model, B=1))
    P = model.config.plane_size
    assert out.lifted_points.shape[1] == (1 if model.config.one_plane else 2) * P * P
    if not model.config.use_refiner:
        assert model.refiner is None and torch.equal(out.fine, out.coarse)
    if not model.config.use_fid:
        assert model.expression.feature_layers[0].in_features == model.config.expression_embed_dim
    assert torch.isfinite(out.fine).all()


def test_paper_trainable_parameter_count():
    with torch.device("meta"):
        model = GAGAvatar(paper())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # independent count from the released checkpoint's listing: network tensors that
    # are neither the frozen DINOv2 nor the refiner's stored noise buffers
    listed = sum(math.prod(shape) for name, shape in official_listing()
                 if not name.startswith(("percep_loss.", "base_model.dino_model.")) and ".noises." not in name)
    assert trainable == listed == 82_336_694


def test_presets_and_config_round_trip():
    for name in ("paper", "small", "tiny"):
        cfg = preset_config(name)
        assert ModelConfig.from_json(cfg.to_json()) == cfg
    assert preset_config("paper").fid_token == "first_patch"
    assert preset_config("tiny").lifted_rgb_sigmoid == "channels"
    cfg = preset_config("tiny", channels=8)
    assert cfg.refiner.in_dim == 8  # the refiner follows the splat channels
    with pytest.raises(ValueError, match="fid_token"):
        preset_config("tiny", fid_token="middle")
    with pytest.raises(ValueError, match="unknown model config fields"):
        preset_config("tiny", plane=3)


def test_own_checkpoint_round_trip(tmp_path):
    model = tiny_model().eval()
    path = save(model, tmp_path / "tiny.safetensors")
    loaded = load(path).eval()
    assert loaded.config == model.config
    batch = tiny_batch(model, B=1)
    with torch.no_grad():
        a, b = model(**batch), loaded(**batch)
    assert torch.equal(a.coarse, b.coarse)
    assert torch.allclose(a.fine, b.fine, atol=1e-6)  # oneDNN may pick another conv kernel for mmap'd weights
    assert not any(p.requires_grad for p in loaded.backbone.parameters())


def test_backbone_weights_from_dinov2_and_gagavatar_files(tmp_path):
    torch.manual_seed(0)
    source = VisionTransformer(patch_size=14, embed_dim=24, depth=2, num_heads=2, pos_grid=4)
    plain = tmp_path / "dinov2.pth"
    torch.save(source.state_dict(), plain)
    wrapped = tmp_path / "GAGAvatar.pt"
    torch.save({"model": {f"base_model.dino_model.{k}": v for k, v in source.state_dict().items()},
                "meta_cfg": {}}, wrapped)
    x = torch.randn(1, 3, 56, 56)
    for path in (plain, wrapped):
        vit = VisionTransformer(patch_size=14, embed_dim=24, depth=2, num_heads=2, pos_grid=4)
        load_backbone_weights(vit, path)
        assert torch.equal(vit.get_intermediate_layers(x, 2)[1], source.get_intermediate_layers(x, 2)[1])
    wrong = VisionTransformer(patch_size=14, embed_dim=32, depth=2, num_heads=2, pos_grid=4)
    with pytest.raises(ValueError, match="shape"):
        load_backbone_weights(wrong, plain)


def test_position_embedding_interpolation_matches_dinov2_rule():
    vit = VisionTransformer(patch_size=14, embed_dim=8, depth=1, num_heads=2, pos_grid=4)
    assert vit.interpolate_pos_encoding(16, 56, 56) is vit.pos_embed  # stored grid: unchanged
    pos = vit.interpolate_pos_encoding(36, 84, 84)
    grid = vit.pos_embed[:, 1:].reshape(1, 4, 4, 8).permute(0, 3, 1, 2)
    expect = torch.nn.functional.interpolate(grid, scale_factor=(6.1 / 4, 6.1 / 4), mode="bicubic")
    assert torch.allclose(pos[:, 1:], expect.permute(0, 2, 3, 1).reshape(1, 36, 8))
    assert torch.equal(pos[:, :1], vit.pos_embed[:, :1])


# ---------------------------------------------------------------------------- the released checkpoint

def fake_release(dtype=torch.float16, drop=(), reshape=(), only_network=False) -> dict:
    """The released checkpoint's 597 tensors with the right shapes, each a single value
    broadcast (stride 0), so the whole thing costs no memory until copied."""
    state = {}
    for i, (name, shape) in enumerate(official_listing()):
        if name in drop or (only_network and name.startswith("percep_loss.")):
            continue
        if name in reshape:
            shape = shape[:-1] + (shape[-1] + 1,)
        state[name] = torch.full((1,) * len(shape), float(i % 7) / 7, dtype=dtype).expand(shape)
    return state


def test_release_converts_and_loads_with_nothing_missing(tmp_path):
    pt = tmp_path / "GAGAvatar.pt"
    torch.save({"model": fake_release(), "meta_cfg": {"MODEL": {"NAME": "GAGAvatar"}}}, pt)
    model = load_official(pt, dtype=None)
    state = model.state_dict()
    listing = official_listing()
    assert len(state) == 561 and len(model.perceptual_state) == 36
    assert set(state) == {our_name(n) for n, _ in listing if not n.startswith("percep_loss.")}
    out = convert_official(pt, tmp_path / "paper.safetensors")
    del model, state
    converted = load(out)
    assert converted.config == paper() and len(converted.perceptual_state) == 36
    # a value survives the round trip: tensor i holds (i % 7) / 7
    i = next(k for k, (n, _) in enumerate(listing) if n == "gs_generator_l1.gaussian_conv.6.bias")
    assert converted.lifting_back.gaussian_conv[6].bias[0].item() == pytest.approx((i % 7) / 7, abs=1e-3)
    again = load_official(out, dtype=None)  # the converted file also loads as "official"
    assert again.perceptual_state is not None


def test_release_with_only_the_network_loads(tmp_path, caplog):
    pt = tmp_path / "net_only.pt"
    torch.save({"model": fake_release(only_network=True)}, pt)
    with caplog.at_level(logging.WARNING):
        model = load_official(pt, dtype=None)
    assert model.perceptual_state is None
    assert sum("no perceptual network" in r.message for r in caplog.records) == 1


def test_release_with_a_missing_or_reshaped_tensor_is_refused():
    with pytest.raises(CheckpointError, match=r"base_model\.refinenet\.2\.out_conv\.bias"):
        split_official(fake_release(drop={"base_model.refinenet.2.out_conv.bias"}))
    with pytest.raises(CheckpointError, match=r"upsampler\.final_linear\.weight"):
        split_official(fake_release(reshape={"upsampler.final_linear.weight"}))
    with pytest.raises(CheckpointError, match=r"percep_loss\.net\.slice3\.6\.weight"):
        split_official(fake_release(drop={"percep_loss.net.slice3.6.weight"}))
    extra = fake_release()
    extra["gs_generator_g.extra_layer.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"gs_generator_g\.extra_layer\.weight"):
        split_official(extra)


class _RunsCode:
    """A pickle payload that would create a file when unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_code_executing_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    pt = tmp_path / "evil.pt"
    torch.save({"model": {"head_base": torch.zeros(2)}, "payload": _RunsCode(marker)}, pt)
    with pytest.raises(ValueError, match="holds code .* was not run"):
        load_official(pt)
    assert not marker.exists()
