"""Training objective: box geometry, nearest-neighbour lifting distance against
brute force, and the total against terms computed by hand."""
import torch
import torch.nn.functional as F

from gagavatar.train.losses import (GAGAvatarLoss, LossConfig, crop_boxes, expand_face_box,
                                    nearest_indices, nearest_squared_distance)


def test_expand_face_box_is_a_square_inside_the_image():
    box = expand_face_box(torch.tensor([[0.4, 0.3, 0.6, 0.7], [0.0, 0.0, 0.5, 0.5]]))
    w, h = box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]
    torch.testing.assert_close(w, h)
    torch.testing.assert_close(w[0], torch.tensor((0.2 * 0.4) ** 0.5 * 1.1))
    torch.testing.assert_close(box[0, :2] + box[0, 2:], torch.tensor([1.0, 1.0]))  # centre kept
    assert box.min() >= -1e-6 and box.max() <= 1 + 1e-6  # second box shrinks to fit


def test_crop_boxes_takes_the_named_pixels():
    img = torch.arange(64.0).view(1, 1, 8, 8)
    crop = crop_boxes(img, torch.tensor([[0.25, 0.5, 0.75, 1.0]]), 4)
    torch.testing.assert_close(crop, img[:, :, 4:8, 2:6])


def test_nearest_distance_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    q, p = torch.randn(2, 50, 3, generator=g), torch.randn(2, 777, 3, generator=g)
    expected = ((q[:, :, None] - p[:, None]) ** 2).sum(-1).min(-1).values
    torch.testing.assert_close(nearest_squared_distance(q, p), expected)  # k-d tree on CPU
    brute = ((q[:, :, None] - p[:, None]) ** 2).sum(-1).argmin(-1)
    torch.testing.assert_close(nearest_indices(q, p), brute)
    p.requires_grad_(True)
    nearest_squared_distance(q, p).sum().backward()
    assert (p.grad.abs().sum(-1) > 0).sum() <= 2 * 50  # only nearest points get gradient


def test_total_is_the_weighted_sum_of_terms():
    g = torch.Generator().manual_seed(1)
    coarse, fine, target = (torch.rand(2, 3, 32, 32, generator=g) for _ in range(3))
    bbox = torch.tensor([[0.2, 0.2, 0.8, 0.8], [0.1, 0.3, 0.5, 0.9]])
    verts, pts = torch.randn(2, 20, 3, generator=g), torch.randn(2, 300, 3, generator=g)
    loss = GAGAvatarLoss(LossConfig(box_size=16))
    total, terms = loss(coarse, fine, target, bbox, verts, pts)
    box = expand_face_box(bbox)
    crop = lambda x: crop_boxes(x, box, 16)  # noqa: E731
    expected = (0.5 * (F.l1_loss(coarse, target) + F.l1_loss(fine, target))
                + 0.5 * (F.l1_loss(crop(coarse), crop(target)) + F.l1_loss(crop(fine), crop(target)))
                + 10 * nearest_squared_distance(verts, pts).mean())
    torch.testing.assert_close(total, expected)
    assert set(terms) == {"image", "box", "lifting"}
    _, no_lift = loss(coarse, fine, target, bbox)
    assert "lifting" not in no_lift
