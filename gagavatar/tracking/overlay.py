"""Pictures for a person to check a track: the fitted mesh and the landmarks over the crop."""
from __future__ import annotations

import numpy as np


def draw_mesh(image: np.ndarray, verts_cam: np.ndarray, K: np.ndarray, faces: np.ndarray,
              alpha: float = 0.6) -> np.ndarray:
    """Blend a shaded mesh over ``image`` [H,W,3] uint8.

    verts_cam [V,3] OpenCV camera coordinates, K [3,3] pixel intrinsics, faces [F,3].
    Triangles are painted far to near, Lambert-shaded by a light at the camera;
    triangles facing away from the camera are skipped.
    """
    import cv2

    uv = verts_cam @ K.T
    points = uv[:, :2] / np.clip(uv[:, 2:3], 1e-6, None)
    tri3 = verts_cam[faces]  # [F,3,3]
    normal = np.cross(tri3[:, 1] - tri3[:, 0], tri3[:, 2] - tri3[:, 0])
    centre = tri3.mean(1)
    facing = -(normal * centre).sum(1) / (np.linalg.norm(normal, axis=1) * np.linalg.norm(centre, axis=1) + 1e-12)
    if (facing < 0).sum() > (facing > 0).sum():  # the mesh winds the other way round
        facing = -facing
    order = np.argsort(-centre[:, 2])
    order = order[facing[order] > 0]
    mesh = np.zeros_like(image)
    mask = np.zeros(image.shape[:2], np.uint8)
    pts = np.round(points[faces] * 16).astype(np.int32)  # 4 bits of sub-pixel precision
    level = np.clip((facing * 12).astype(int), 0, 11)  # 12 grey levels
    # painter's algorithm in depth slices; within a slice, one fillPoly call per grey level
    for chunk in np.array_split(order, max(1, len(order) // 400)):
        for lv in np.unique(level[chunk]):
            polys = list(pts[chunk[level[chunk] == lv]])
            g = int(40 + 200 * (lv + 0.5) / 12)
            cv2.fillPoly(mesh, polys, (g, g, int(g * 0.9)), shift=4)
            cv2.fillPoly(mask, polys, 1, shift=4)
    out = image.copy()
    m = mask.astype(bool)
    out[m] = (alpha * mesh[m] + (1 - alpha) * image[m]).astype(np.uint8)
    return out


def draw_points(image: np.ndarray, points: np.ndarray, color, radius: int = 1) -> np.ndarray:
    """Dots at pixel positions [N,2] (drawn in place, returned)."""
    import cv2

    for x, y in np.round(points * 16).astype(np.int64):
        cv2.circle(image, (int(x), int(y)), radius * 16, color, -1, lineType=cv2.LINE_AA, shift=4)
    return image


def overlay_frame(crop: np.ndarray, verts_cam: np.ndarray | None, K: np.ndarray | None, faces: np.ndarray | None,
                  detected: np.ndarray | None, fitted: np.ndarray | None) -> np.ndarray:
    """[H, 2W, 3]: the crop, and the crop with the mesh, detected (green) and fitted (red) landmarks."""
    right = crop.copy()
    if verts_cam is not None:
        right = draw_mesh(right, verts_cam, K, faces)
    r = max(1, crop.shape[0] // 256)
    if detected is not None:
        draw_points(right, detected, (40, 220, 40), r)
    if fitted is not None:
        draw_points(right, fitted, (230, 40, 40), r)
    return np.concatenate([crop, right], axis=1)
