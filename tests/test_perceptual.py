"""Perceptual loss and LPIPS: architecture against a plain functional AlexNet,
loading from the released checkpoint's tensor names, and basic metric behaviour."""
import pytest
import torch
import torch.nn.functional as F

from gagavatar.model.reference_weights import deterministic_tensor, official_listing
from gagavatar.perceptual import FacePerceptualLoss, load_lpips, load_perceptual_state, unit_normalize


@pytest.fixture(scope="module")
def perceptual_state():
    """The 36 percep_loss.* tensors of the official listing, with deterministic values."""
    return {name: deterministic_tensor(i, name, shape, 7).float()
            for i, (name, shape) in enumerate(official_listing()) if name.startswith("percep_loss.")}


def test_all_36_official_tensors_load(perceptual_state):
    assert len(perceptual_state) == 36
    FacePerceptualLoss.from_state_dict(perceptual_state)  # strict: raises on any mismatch
    broken = dict(perceptual_state)
    broken.pop("percep_loss.net.slice3.6.weight")
    with pytest.raises(ValueError, match="slice3.6.weight"):
        FacePerceptualLoss.from_state_dict(broken)


def plain_alexnet(x, state):
    """torchvision AlexNet's conv trunk written as functional calls (the independent reference)."""
    w = lambda k: state[f"percep_loss.net.{k}"]  # noqa: E731
    h1 = F.relu(F.conv2d(x, w("slice1.0.weight"), w("slice1.0.bias"), stride=4, padding=2))
    h2 = F.relu(F.conv2d(F.max_pool2d(h1, 3, 2), w("slice2.3.weight"), w("slice2.3.bias"), padding=2))
    h3 = F.relu(F.conv2d(F.max_pool2d(h2, 3, 2), w("slice3.6.weight"), w("slice3.6.bias"), padding=1))
    h4 = F.relu(F.conv2d(h3, w("slice4.8.weight"), w("slice4.8.bias"), padding=1))
    h5 = F.relu(F.conv2d(h4, w("slice5.10.weight"), w("slice5.10.bias"), padding=1))
    return [h1, h2, h3, h4, h5]


def test_lpips_matches_functional_reference(perceptual_state, tmp_path):
    heads = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate((64, 192, 384, 256, 256))}
    torch.save(heads, tmp_path / "alex.pth")
    lpips = load_lpips(perceptual_state, tmp_path / "alex.pth")
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(2, 3, 64, 64, generator=g), torch.rand(2, 3, 64, 64, generator=g)
    scale = lambda im: ((2 * im - 1) - torch.tensor([-.030, -.088, -.188]).view(1, 3, 1, 1)) / torch.tensor([.458, .448, .450]).view(1, 3, 1, 1)  # noqa: E731
    fx, fy = plain_alexnet(scale(x), perceptual_state), plain_alexnet(scale(y), perceptual_state)
    expected = sum((heads[f"lin{k}.model.1.weight"] * (unit_normalize(a) - unit_normalize(b)) ** 2).sum(1).mean((1, 2))
                   for k, (a, b) in enumerate(zip(fx, fy)))
    torch.testing.assert_close(lpips(x, y), expected, rtol=1e-4, atol=1e-6)
    assert torch.all(lpips(x, x) == 0)


def test_perceptual_loss_behaviour(perceptual_state):
    loss = FacePerceptualLoss.from_state_dict(perceptual_state)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 3, 64, 64, generator=g)
    noise = torch.randn(1, 3, 64, 64, generator=g)
    assert loss(x, x).item() == 0
    small, large = loss(x, (x + 0.05 * noise).clamp(0, 1)), loss(x, (x + 0.3 * noise).clamp(0, 1))
    assert 0 < small < large
    y = x.clone().requires_grad_(True)
    loss(x, (y + 0.1 * noise)).backward()
    assert torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.parameters())


def test_missing_weights_say_where_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="GAGAvatar.pt"):
        load_perceptual_state(tmp_path / "nope.pt")
    torch.save({"model": {"other": torch.zeros(1)}}, tmp_path / "wrong.pt")
    with pytest.raises(ValueError, match="percep_loss"):
        load_perceptual_state(tmp_path / "wrong.pt")
