"""Metrics: perfect values on identical images, the right direction under known
perturbations, SSIM against scikit-image's implementation of the same formula."""
import numpy as np
import pytest
import torch
from skimage import data
from skimage.metrics import structural_similarity

from gagavatar.eval.metrics import identity_encoder, keypoint_distance, psnr, ssim
from gagavatar.io import tensor_to_image as to_uint8


@pytest.fixture(scope="module")
def astronaut():
    return torch.from_numpy(data.astronaut()[:256, 128:384]).permute(2, 0, 1)[None].float() / 255


def test_psnr_and_ssim_perfect_on_identical_images(astronaut):
    assert torch.isinf(psnr(astronaut, astronaut)).all()
    torch.testing.assert_close(ssim(astronaut, astronaut), torch.ones(1))


def test_psnr_known_value():
    a = torch.zeros(1, 3, 4, 4)
    torch.testing.assert_close(psnr(a + 0.1, a), torch.tensor([20.0]))


def test_ssim_matches_scikit_image(astronaut):
    g = torch.Generator().manual_seed(0)
    noisy = (astronaut + 0.08 * torch.randn(astronaut.shape, generator=g)).clamp(0, 1)
    ours = ssim(noisy, astronaut).item()
    ref = structural_similarity(noisy[0].permute(1, 2, 0).numpy().astype(np.float64),
                                astronaut[0].permute(1, 2, 0).numpy().astype(np.float64),
                                channel_axis=2, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False)
    assert abs(ours - ref) < 1e-6, (ours, ref)


def test_metrics_move_the_right_way(astronaut):
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(astronaut.shape, generator=g)
    mild, strong = (astronaut + 0.03 * noise).clamp(0, 1), (astronaut + 0.2 * noise).clamp(0, 1)
    assert psnr(mild, astronaut) > psnr(strong, astronaut)
    assert ssim(mild, astronaut) > ssim(strong, astronaut)
    lm = np.random.default_rng(0).uniform(0, 256, (68, 2))
    assert keypoint_distance(lm, lm, 256) == 0
    assert keypoint_distance(lm, lm + [3, 4], 256) == pytest.approx(10.0)  # 5 px at 256 = 10 px at 512


def test_csim_same_face_beats_other_face():
    encoder = identity_encoder()
    face = data.astronaut()[:300, 100:400]
    assert encoder.similarity(face, face) == pytest.approx(1.0, abs=1e-6)
    shifted = np.roll(face, 6, axis=1)
    other = np.ascontiguousarray(face[:, ::-1].transpose(1, 0, 2))  # same pixels, not a face
    assert encoder.similarity(face, shifted) > encoder.similarity(face, other)
    assert to_uint8(torch.ones(3, 2, 2)).max() == 255
