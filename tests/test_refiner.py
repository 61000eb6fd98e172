"""The StyleUNet refiner against the reference's own numbers (SPEC §8) and basic sanity."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gagavatar.model.reference_weights import deterministic_tensor, official_listing
from gagavatar.model.refiner import LOW_LR_PREFIXES, ModulatedConv2d, RefinerConfig, StyleUNet

from conftest import TESTDATA

PREFIX = "upsampler."


def _upsampler_listing():
    """[(index in the 597-line listing, name without prefix, shape)] of the released refiner."""
    return [(i, n[len(PREFIX):], s) for i, (n, s) in enumerate(official_listing()) if n.startswith(PREFIX)]


def test_paper_refiner_matches_checkpoint_layout():
    with torch.device("meta"):
        model = StyleUNet(RefinerConfig.paper())
    expected = {name: shape for _, name, shape in _upsampler_listing()}
    got = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    assert got == expected
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == sum(math.prod(s) for n, s in expected.items() if not n.startswith("stylegan_decoder.noises."))
    low = {id(p) for p in model.low_lr_parameters()}
    names = [n for n, p in model.named_parameters() if id(p) in low]
    assert names and all(n.startswith(LOW_LR_PREFIXES) for n in names)
    assert any(n.startswith("final_linear.") for n in names) and any(".style_mlp." in n for n in names)


def test_paper_refiner_reproduces_reference_numbers():
    """float64, SPEC §8 weights, the fixture's 64x64 input resized to 512: logits and
    output at every 8th pixel and their means over 512x512 agree to 1e-5."""
    fixture = np.load(TESTDATA / "parity_fixture.npz")
    seed = int(fixture["weight_seed"])
    state = {name: deterministic_tensor(i, PREFIX + name, shape, seed) for i, name, shape in _upsampler_listing()}
    model = StyleUNet(RefinerConfig.paper()).double()
    model.load_state_dict(state, strict=True)

    x = F.interpolate(torch.from_numpy(fixture["refiner_input_64"]), size=(512, 512),
                      mode="bilinear", align_corners=False)
    with torch.no_grad():
        logits = model(x, noise="stored", return_logits=True)[0]
    output = torch.sigmoid(logits)

    pixels = 512 * 512
    diffs = {
        "logits_s8": np.abs(logits[:, ::8, ::8].numpy() - fixture["refiner_logits_s8"]).max(),
        "output_s8": np.abs(output[:, ::8, ::8].numpy() - fixture["refiner_output_s8"]).max(),
        "logits_mean": np.abs(logits.sum((1, 2)).numpy() / pixels - fixture["refiner_logits_sum"] / pixels).max(),
        "output_mean": np.abs(output.sum((1, 2)).numpy() / pixels - fixture["refiner_output_sum"] / pixels).max(),
    }
    assert max(diffs.values()) <= 1e-5, diffs


def test_modulated_conv_equals_per_sample_weights():
    """The batched conv(x*s)*demod equals modulating and demodulating each sample's weight."""
    torch.manual_seed(0)
    conv = ModulatedConv2d(6, 5, 3, num_style_feat=7, demodulate=True, upsample=True).double()
    x, style = torch.randn(3, 6, 4, 4, dtype=torch.float64), torch.randn(3, 7, dtype=torch.float64)
    got = conv(x, style)
    for b in range(3):
        w = conv.weight[0] * conv.modulation(style[b])[None, :, None, None]
        w = w / torch.sqrt(w.square().sum(dim=(1, 2, 3), keepdim=True) + conv.eps)
        xb = F.interpolate(x[b:b + 1], scale_factor=2, mode="bilinear", align_corners=False)
        torch.testing.assert_close(got[b:b + 1], F.conv2d(xb, w, padding=1), rtol=0, atol=1e-12)


def test_tiny_refiner_forward_backward_and_noise():
    torch.manual_seed(0)
    cfg = RefinerConfig.tiny()
    model = StyleUNet(cfg)
    x = torch.rand(2, cfg.in_dim, 64, 64)  # smaller than out_size: resized like the reference
    out = model(x)
    assert out.shape == (2, cfg.out_dim, cfg.out_size, cfg.out_size)
    assert torch.isfinite(out).all() and (out > 0).all() and (out < 1).all()
    out.square().mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad, no_grad
    assert all(p.grad.abs().sum() > 0 for p in model.parameters())

    with torch.no_grad():
        # Make the noise matter (the injection strengths start at zero).
        for name, p in model.named_parameters():
            if name.endswith(".weight") and p.shape == (1,):
                p.fill_(0.5)
        stored = [model(x, noise="stored", return_logits=True) for _ in range(2)]
        rand = [model(x, noise="random", return_logits=True) for _ in range(2)]
        torch.testing.assert_close(stored[0], stored[1], rtol=0, atol=0)
        assert (rand[0] - rand[1]).abs().max() > 1e-3
        assert (rand[0] - stored[0]).abs().max() > 1e-3
        torch.testing.assert_close(torch.sigmoid(stored[0]), model(x), rtol=0, atol=1e-7)
        # Samples are independent of their batch-mates (stored noise is shared, as in the reference).
        torch.testing.assert_close(model(x[1:], return_logits=True), stored[0][1:], rtol=1e-5, atol=1e-5)


def test_input_twice_output_size_and_errors():
    model = StyleUNet(RefinerConfig(in_size=32, out_size=16, in_dim=4, num_style_feat=16, num_mlp=2, narrow=0.125))
    assert isinstance(model.conv_body_first, torch.nn.ModuleList)
    assert model(torch.rand(1, 4, 32, 32)).shape == (1, 3, 16, 16)
    with pytest.raises(ValueError, match="in_dim|\\[B, 4"):
        model(torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="noise"):
        model(torch.rand(1, 4, 32, 32), noise="fresh")
    with pytest.raises(ValueError, match="in_size"):
        RefinerConfig(in_size=512, out_size=128).validate()
    with pytest.raises(ValueError, match="out_size"):
        RefinerConfig(in_size=100, out_size=100).validate()
