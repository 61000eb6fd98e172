"""Fitting the head model to 2D landmarks over a whole video, batched in PyTorch.

Unknowns: one ``shape`` per video; per frame ``expression``, ``jaw_pose``,
``eye_pose`` and the camera (head rotation ``rotation`` and ``translation``).
As in the reference tracker (SPEC §7.10) the head model's global rotation and
neck stay zero: head pose lives in the camera. World units are the head
model's x ``WORLD_SCALE`` (5.0); the camera has focal 12 (half-image units).

The OpenCV world-to-camera transform of frame t is

    viewmat_t = [R0 Rodrigues(rotation_t) | translation_t],   R0 = diag(1, -1, -1),

so ``rotation`` is the rotation the head would have as FLAME's global pose
seen by a camera on the +z axis (yaw = rotation about y), and
``translation`` is where the head's origin sits in camera coordinates.

The fit is a MAP estimate; with landmark errors in pixels of a 512 image
(so the weights do not depend on the crop size) it minimises

    sum_t,l |project(landmark_l) - target_tl|^2 / sigma_l^2
      + Gaussian priors on shape, expression, jaw, eyes and the camera distance
      + sum over consecutive frames of |change of jaw, eyes, rotation, translation|^2 / step^2

by Gauss-Newton with Levenberg-Marquardt damping: per-frame unknowns are
solved jointly over the video (the temporal terms make the normal equations
block-tridiagonal, solved exactly). The shared shape is fitted first, jointly
with the unknowns of a few frames spread over the video (the shape-pose
problem is ill-conditioned and needs more steps), then kept fixed. The
eyes come from MediaPipe's iris centres (landmarks 468, 473) matched to the
iris points (or eyeball pupils) of the head model. The head model is
evaluated at its landmarks only (``rig.LandmarkRig``).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from gagavatar.geometry import axis_angle_to_matrix
from gagavatar.head import HeadModel
from gagavatar.data.frame import FrameParams
from gagavatar.geometry import REFERENCE_FOCAL, WORLD_SCALE, Camera, intrinsics, viewmat_to_reference
from gagavatar.tracking.landmarks import LEFT_IRIS, N_LANDMARKS, RIGHT_IRIS, face_oval
from gagavatar.tracking.rig import LandmarkRig, rotation_jacobian

R0 = (1.0, -1.0, -1.0)  # camera on the head's +z axis looking at it: x right, y down, z into the face
PIXELS = 256.0  # normalised image units -> pixels of a 512 image


@dataclass
class FitConfig:
    """Noise levels and schedule of the fit; every term is (value / sigma)^2.

    Landmark sigmas are pixels of a 512 image; rotations radians; translation
    world units; coefficients in their own units (~N(0, 1) for FLAME).
    """

    iterations: int = 6  # Levenberg-Marquardt steps at most, all frames, the shape known
    shape_iterations: int = 20  # steps of the joint fit of the shape on a few frames
    shape_frames: int = 32  # frames (evenly spread) that the shape is fitted on
    tolerance: float = 1e-4  # stop when a step lowers the cost by less than this fraction
    landmark_sigma: float = 2.0
    oval_sigma: float = 4.0  # the face contour is less reliable than the inner points
    iris_sigma: float = 1.0  # the only evidence for gaze
    shape_sigma: float = 1.0
    depth_sigma: float = 0.05  # camera distance, relative to where an average head would be
    shape_components: int = 100  # the first ones; landmarks say little about the rest
    expression_sigma: float = 2.0
    jaw_sigma: tuple[float, float, float] = (0.3, 0.05, 0.05)  # opening vs sideways / twisting
    eye_sigma: float = 0.5
    # expected change between consecutive frames (the expression has no such term,
    # as in the reference; it would couple ~100 unknowns per frame across the video)
    jaw_step: float = 0.05
    eye_step: float = 0.1
    rotation_step: float = 0.05  # ~3 degrees
    translation_step: float = 0.05
    fit_shape: bool = True
    max_frames: int = 600  # frames solved together (longer videos are fitted in windows)


@dataclass
class FitResult:
    """Per-frame results [F, ...] of the fitted frames, and the video's shape [S]."""

    shape: np.ndarray
    expression: np.ndarray
    jaw_pose: np.ndarray
    eye_pose: np.ndarray
    rotation: np.ndarray  # [F,3] head rotation, axis-angle (see module docstring)
    translation: np.ndarray  # [F,3] camera coordinates of the head origin, world units
    viewmat: np.ndarray  # [F,4,4] OpenCV world-to-camera
    transform: np.ndarray  # [F,3,4] the reference's camera (SPEC §7.1)
    error_px: np.ndarray  # [F] mean landmark reprojection error, pixels of a 512 image
    landmarks: np.ndarray  # [F,L,2] fitted landmarks, normalised image coordinates [-1, 1]
    landmark_indices: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # [L] MediaPipe ids

    def frames(self, image_size: int) -> FrameParams:
        """The fitted frames [F] as the one frame type, seen at ``image_size`` (square). Head pose
        lives in the camera, as the reference tracker's (SPEC §9): global rotation, neck and
        translation are zero."""
        F = len(self.expression)
        t = lambda a: torch.as_tensor(np.asarray(a, np.float32))  # noqa: E731
        zeros = torch.zeros(F, 3)
        camera = Camera(t(self.viewmat), intrinsics(REFERENCE_FOCAL, image_size, image_size, F), image_size, image_size)
        return FrameParams(t(self.shape).expand(F, -1), t(self.expression), zeros, zeros, t(self.jaw_pose),
                           t(self.eye_pose), zeros, camera)


def landmark_weights(indices: np.ndarray, config: FitConfig) -> Tensor:
    """[L] 1 / sigma of each landmark (pixels of a 512 image)."""
    sigma = np.full(len(indices), config.landmark_sigma)
    sigma[np.isin(indices, face_oval())] = config.oval_sigma
    sigma[np.isin(indices, [LEFT_IRIS, RIGHT_IRIS])] = config.iris_sigma
    return torch.as_tensor(1.0 / sigma, dtype=torch.float32)


# ---------------------------------------------------------------------------
# Cameras
# ---------------------------------------------------------------------------

def camera_rotation(rotation: Tensor) -> Tensor:
    """OpenCV world-to-camera rotation [B,3,3] of head rotations [B,3]: R0 Rodrigues(rotation)."""
    return rotation.new_tensor(R0)[:, None] * axis_angle_to_matrix(rotation)


def viewmats(rotation: Tensor, translation: Tensor) -> Tensor:
    """[B,4,4] OpenCV world-to-camera from head rotations [B,3] and translations [B,3]."""
    view = torch.zeros(rotation.shape[0], 4, 4, dtype=rotation.dtype, device=rotation.device)
    view[:, :3, :3] = camera_rotation(rotation)
    view[:, :3, 3] = translation
    view[:, 3, 3] = 1.0
    return view


def project(points: Tensor, rotation: Tensor, translation: Tensor, focal: float = REFERENCE_FOCAL) -> Tensor:
    """World points [B,N,3] -> normalised image coordinates [B,N,2] ([-1, 1] across the image)."""
    cam = points @ camera_rotation(rotation).transpose(-1, -2) + translation[:, None]
    return focal * cam[..., :2] / cam[..., 2:3].clamp_min(1e-3)


def initial_pose(points3d: np.ndarray, targets: np.ndarray, focal: float = REFERENCE_FOCAL
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Head rotation [3] and translation [3] by PnP: model points [N,3] (world) onto targets [N,2] (normalised)."""
    import cv2

    K = np.array([[focal, 0, 0], [0, focal, 0], [0, 0, 1]], dtype=np.float64)
    ok, rvec, tvec = cv2.solvePnP(points3d.astype(np.float64), targets.astype(np.float64), K, None,
                                  flags=cv2.SOLVEPNP_SQPNP)
    if not ok or tvec[2, 0] <= 0:
        return np.zeros(3), np.array([0.0, 0.0, 10.0])
    R_head = np.diag(R0) @ cv2.Rodrigues(rvec)[0]  # R0 is its own inverse
    return cv2.Rodrigues(R_head)[0][:, 0], tvec[:, 0]


# ---------------------------------------------------------------------------
# Gauss-Newton
# ---------------------------------------------------------------------------

class _Problem:
    """One window of frames: residuals, Jacobians and the MAP cost.

    Per-frame unknowns theta [F,P] = (expression E, then q = jaw 3, eyes 6,
    rotation 3, translation 3); the shape [S] is shared by the window.
    """

    def __init__(self, rig: LandmarkRig, targets: Tensor, inv_sigma: Tensor, link: Tensor, config: FitConfig,
                 fit_shape: bool, depth: Tensor):
        self.rig, self.targets, self.inv_sigma, self.link, self.c = rig, targets, inv_sigma, link, config
        # Landmarks alone cannot tell a small head near the camera from a large one far
        # away (focal 12 is nearly orthographic): the distance is held near that of an
        # average head (depth [F], from PnP of the neutral head), which fixes the scale.
        self.depth = depth.double()
        self.depth_precision = 1.0 / (config.depth_sigma * self.depth) ** 2
        self.fit_shape = fit_shape
        E = rig.n_expression
        self.E, self.P = E, E + 15
        c = config
        prior = [1 / c.expression_sigma**2] * E + [1 / s**2 for s in c.jaw_sigma] + [1 / c.eye_sigma**2] * 6 + [0.0] * 6
        step = [c.jaw_step] * 3 + [c.eye_step] * 6 + [c.rotation_step] * 3 + [c.translation_step] * 3
        self.prior = torch.tensor(prior, dtype=torch.float64)  # [P] precisions
        self.smooth = 1.0 / torch.tensor(step, dtype=torch.float64) ** 2  # [15] precisions of q's changes
        self.anchor: Tensor | None = None  # q [15] of the frame before the window, when linked

    def split(self, theta: Tensor):
        E = self.E
        return theta[:, :E], theta[:, E:E + 3], theta[:, E + 3:E + 9], theta[:, E + 9:E + 12], theta[:, E + 12:]

    def landmarks(self, neutral, theta: Tensor) -> Tensor:
        """Projected landmarks [F,L,2], normalised image coordinates."""
        psi, jaw, eyes, rot, trans = self.split(theta)
        return project(self.rig.points(neutral, psi, jaw, eyes) * WORLD_SCALE, rot, trans)

    def cost(self, theta: Tensor, shape: Tensor) -> Tensor:
        """The MAP cost of the window (a scalar, float64)."""
        th = theta.double()
        err = (self.landmarks(self.rig.neutral(shape), theta) - self.targets) * (PIXELS * self.inv_sigma[:, None])
        total = err.double().pow(2).sum() + (self.prior * th.pow(2)).sum()
        q = th[:, self.E:]
        total = total + ((q[1:] - q[:-1]).pow(2) * self.smooth * self.link[:, None]).sum()
        if self.anchor is not None:
            total = total + ((q[0] - self.anchor).pow(2) * self.smooth).sum()
        total = total + ((th[:, -1] - self.depth).pow(2) * self.depth_precision).sum()
        if self.fit_shape:
            total = total + shape.double().pow(2).sum() / self.c.shape_sigma**2
        return total

    def linearise(self, theta: Tensor, shape: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Whitened residuals r [F,2L] and exact Jacobians: J [F,2L,P] for theta, J_shape [F,2L,S]."""
        F, E = theta.shape[0], self.E
        psi, jaw, eyes, rot, trans = self.split(theta)
        expressed = self.rig.expressed(self.rig.neutral(shape), psi)
        X, dX_q = self.rig.pose_jacobian(expressed, jaw, eyes)
        blocks = [self.rig.jacobian("expression", jaw, eyes), dX_q]
        if self.fit_shape:
            blocks.append(self.rig.jacobian("shape", jaw, eyes))
        X, dX = X * WORLD_SCALE, torch.cat(blocks, -1) * WORLD_SCALE  # [F,L,3,K]
        Rh, dRh = rotation_jacobian(rot)  # head rotation and its derivatives [F,3,3,3]
        r0 = rot.new_tensor(R0)[:, None]
        Rc, dRc = r0 * Rh, r0 * dRh
        Y = X @ Rc.transpose(-1, -2) + trans[:, None]  # camera coordinates
        dY = torch.cat([torch.einsum("fab,flbk->flak", Rc, dX),  # blend shapes, jaw, eyes
                        torch.einsum("fkab,flb->flak", dRc, X),  # camera rotation
                        torch.eye(3, dtype=X.dtype).expand(F, X.shape[1], 3, 3)], -1)  # camera translation
        z = Y[..., 2:3].clamp_min(1e-3)
        w = (PIXELS * self.inv_sigma)[:, None]
        r = ((REFERENCE_FOCAL * Y[..., :2] / z - self.targets) * w).reshape(F, -1)
        J = REFERENCE_FOCAL * (dY[:, :, :2] - (Y[..., :2] / z)[..., None] * dY[:, :, 2:3]) / z[..., None]
        J = (J * w[..., None]).reshape(F, r.shape[1], -1)
        n_blend = E + 9  # expression, jaw, eyes
        J_theta = torch.cat([J[..., :n_blend], J[..., -6:]], -1)
        J_shape = J[..., n_blend:-6] if self.fit_shape else None
        return r, J_theta, J_shape

    def step(self, theta: Tensor, shape: Tensor, damping: float) -> tuple[Tensor, Tensor]:
        """The Levenberg-Marquardt step (d theta [F,P], d shape [S]) of the joint problem.

        Normal equations, eliminated in order: each frame's expression (batched),
        the pose unknowns q with their exact temporal coupling (block-tridiagonal,
        ``solve_block_tridiagonal``), and what remains is a small system in the shape.
        """
        r, J, J_s = self.linearise(theta, shape)
        E, F = self.E, theta.shape[0]
        J, r, th = J.double(), r.double(), theta.double()
        H = J.transpose(1, 2) @ J + torch.diag_embed(self.prior.expand(F, -1))  # [F,P,P]
        g = (J.transpose(1, 2) @ r[..., None])[..., 0] + self.prior * th
        # temporal smoothness of q: gradient, and the diagonal part of its Hessian
        link = self.link.double()[:, None] * self.smooth  # [F-1,15]
        q = th[:, E:]
        d = q[1:] - q[:-1]
        g[:-1, E:] -= link * d
        g[1:, E:] += link * d
        diag = torch.zeros_like(q)
        diag[:-1] += link
        diag[1:] += link
        if self.anchor is not None:
            g[0, E:] += self.smooth * (q[0] - self.anchor)
            diag[0] += self.smooth
        H[:, E:, E:] += torch.diag_embed(diag)
        H[:, -1, -1] += self.depth_precision
        g[:, -1] += self.depth_precision * (th[:, -1] - self.depth)
        H = H + damping * torch.diag_embed(torch.diagonal(H, dim1=1, dim2=2) + 1e-9)
        cols = [g[..., None]]
        if J_s is not None:
            J_s = J_s.double()
            H_ts = J.transpose(1, 2) @ J_s  # [F,P,S]
            cols.append(H_ts)
        rhs = torch.cat(cols, -1)  # [F,P,1(+S)]
        # 1. eliminate the expression of every frame
        chol = torch.linalg.cholesky(H[:, :E, :E])
        Ainv = torch.cholesky_solve(torch.cat([H[:, :E, E:], rhs[:, :E]], -1), chol)  # [F,E,15+R]
        Ainv_B, Ainv_rhs = Ainv[..., :15], Ainv[..., 15:]
        B_t = H[:, E:, :E]
        schur = H[:, E:, E:] - B_t @ Ainv_B
        rhs_q = rhs[:, E:] - B_t @ Ainv_rhs  # [F,15,R]
        # 2. eliminate q: exact block-tridiagonal solve, one column per right-hand side
        Z = solve_block_tridiagonal(schur, -link, rhs_q)  # [F,15,R]
        # 3. the shape
        if J_s is not None:
            S = J_s.shape[-1]
            H_ss = (J_s.transpose(1, 2) @ J_s).sum(0) + torch.eye(S, dtype=H.dtype) / self.c.shape_sigma**2
            g_s = (J_s.transpose(1, 2) @ r[..., None])[..., 0].sum(0) + shape.double() / self.c.shape_sigma**2
            H_ss = H_ss * (1 + damping) + 1e-9 * torch.eye(S, dtype=H.dtype)
            # what the per-frame unknowns take away: H_st H_tt^-1 [g, H_ts]
            sol_t = torch.cat([Ainv_rhs - Ainv_B @ Z, Z], 1)  # H_tt^-1 [g | H_ts], [F,P,1+S]
            reduced = (H_ts.transpose(1, 2) @ sol_t).sum(0)  # [S,1+S]
            d_shape = torch.linalg.solve(H_ss - reduced[:, 1:], g_s - reduced[:, 0])
            d_theta = sol_t[..., 0] - (sol_t[..., 1:] @ d_shape)
        else:
            d_shape = torch.zeros_like(shape, dtype=torch.float64)
            d_theta = torch.cat([Ainv_rhs[..., 0] - (Ainv_B @ Z[..., :1])[..., 0], Z[..., 0]], 1)
        return -d_theta.to(theta.dtype), -d_shape.to(shape.dtype)


def solve_block_tridiagonal(diag: Tensor, off: Tensor, rhs: Tensor) -> Tensor:
    """Solve a symmetric positive definite block-tridiagonal system exactly.

    diag [F,P,P]: the diagonal blocks; off [F-1,P]: the diagonal of the block
    coupling frames t and t+1; rhs [F,P] or [F,P,R] -> x of the same shape.
    Block cyclic reduction: eliminating every other frame halves the system, so
    log2(F) rounds of batched solves replace F sequential ones.
    """
    upper = torch.zeros_like(diag)
    upper[:-1] = torch.diag_embed(off)  # couples t to t+1
    lower = torch.zeros_like(diag)
    lower[1:] = torch.diag_embed(off)  # couples t to t-1 (symmetric)
    vector = rhs.dim() == 2
    x = _cyclic_reduction(diag, lower, upper, rhs[..., None] if vector else rhs)
    return x[..., 0] if vector else x


def _cyclic_reduction(D: Tensor, L: Tensor, U: Tensor, b: Tensor) -> Tensor:
    """D, L, U [n,P,P], b [n,P,R] -> x [n,P,R] with L_t x_{t-1} + D_t x_t + U_t x_{t+1} = b_t."""
    n, P = D.shape[0], D.shape[-1]
    if n == 1:
        return torch.cholesky_solve(b, torch.linalg.cholesky(D))
    odd = slice(1, None, 2)
    chol = torch.linalg.cholesky(D[odd])
    XL, XU, Xb = torch.cholesky_solve(torch.cat([L[odd], U[odd], b[odd]], -1), chol).split(
        [P, P, b.shape[-1]], -1)
    De, Le, Ue, be = D[0::2].clone(), torch.zeros_like(D[0::2]), torch.zeros_like(D[0::2]), b[0::2].clone()
    ne, no = De.shape[0], XL.shape[0]
    # even frame t = 2i: its odd neighbours are 2i-1 (odd index i-1) and 2i+1 (odd index i)
    left = L[0::2][1:]  # frames 2, 4, ...: coupling to the odd frame before
    De[1:] -= left @ XU[:ne - 1]
    Le[1:] = -left @ XL[:ne - 1]
    be[1:] -= left @ Xb[:ne - 1]
    right = U[0::2][:no]  # frames 0, 2, ... that have an odd frame after
    De[:no] -= right @ XL
    Ue[:no] = -right @ XU
    be[:no] -= right @ Xb
    xe = _cyclic_reduction(De, Le, Ue, be)
    # back-substitute the odd frames: x = D^-1 (b - L x_{t-1} - U x_{t+1})
    xo = Xb - XL @ xe[:no]
    after = min(no, ne - 1)
    xo[:after] -= XU[:after] @ xe[1:after + 1]
    x = torch.empty_like(b)
    x[0::2], x[1::2] = xe, xo
    return x


def _solve_window(prob: _Problem, theta: Tensor, shape: Tensor, iterations: int, config: FitConfig
                  ) -> tuple[Tensor, Tensor]:
    """Levenberg-Marquardt on the window; returns (theta, shape)."""
    cost = prob.cost(theta, shape)
    damping = 1e-3
    for _ in range(iterations):
        d_theta, d_shape = prob.step(theta, shape, damping)
        new_cost = prob.cost(theta + d_theta, shape + d_shape)
        if bool(torch.isfinite(new_cost)) and new_cost < cost:
            converged = cost - new_cost < config.tolerance * cost
            theta, shape, cost, damping = theta + d_theta, shape + d_shape, new_cost, max(damping / 3, 1e-7)
            if converged:
                break
        else:
            damping *= 8
    return theta, shape


def _rigid_start(rig: LandmarkRig, shape: Tensor, targets: Tensor) -> Tensor:
    """theta [F,E+15]: neutral expression, jaw and eyes; the camera by PnP of the neutral head."""
    E = rig.n_expression
    neutral = rig(shape, torch.zeros(1, E), torch.zeros(1, 3), torch.zeros(1, 6))[0] * WORLD_SCALE
    theta = torch.zeros(targets.shape[0], E + 15)
    for i, t in enumerate(targets):
        r0, t0 = initial_pose(neutral.double().numpy(), t.double().numpy())
        theta[i, E + 9:E + 12] = torch.as_tensor(r0)
        theta[i, E + 12:] = torch.as_tensor(t0)
    return theta


@contextmanager
def _single_thread():
    """The fit is thousands of small batched solves: one thread runs them several times
    faster than two (thread start-up and synchronisation dominate such small work)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def fit_landmarks(head: HeadModel, targets: np.ndarray, image_size: int, config: FitConfig = FitConfig(),
                  shape: np.ndarray | None = None, frame_index: np.ndarray | None = None,
                  progress=None, rig: LandmarkRig | None = None) -> FitResult:
    """Fit one video's frames.

    head: the head model (the fit works in world units = model x WORLD_SCALE,
    as the reference). targets: [F,478,2] MediaPipe landmarks
    in pixels of square frames of side ``image_size`` (only frames with a face).
    frame_index: [F] each row's frame number; temporal smoothness links rows
    whose frames are adjacent (default: all consecutive rows). shape: a known
    shape [S] (then it is kept fixed). progress: optional callable(n_frames_done).
    rig: ``LandmarkRig(head, n_shape=config.shape_components)`` built once by a caller
    that fits frame after frame (the live loop), else built here.
    """
    targets = np.asarray(targets, dtype=np.float64)
    if targets.ndim != 3 or targets.shape[1:] != (N_LANDMARKS, 2):
        raise ValueError(f"targets must be [F,{N_LANDMARKS},2] pixels, got {list(targets.shape)}")
    F = targets.shape[0]
    frame_index = np.arange(F) if frame_index is None else np.asarray(frame_index)
    adjacent = torch.as_tensor(np.diff(frame_index) == 1, dtype=torch.float32)  # [F-1]
    if rig is None:
        with torch.no_grad():
            # not head.cpu(): that would move the caller's head; the rig copies what it needs to the CPU
            rig = LandmarkRig(head, n_shape=config.shape_components)
    indices = rig.indices
    tgt_all = torch.as_tensor(targets[:, indices] / (image_size / 2.0) - 1.0, dtype=torch.float32)
    inv_sigma = landmark_weights(indices, config)
    S, E = rig.n_shape, rig.n_expression
    shape_t = torch.zeros(S) if shape is None else torch.as_tensor(np.asarray(shape)[:S], dtype=torch.float32)
    fit_shape = shape is None and config.fit_shape
    thetas, errors, fitted = [], [], []
    anchor = None
    with torch.no_grad(), _single_thread():
        theta_all = _rigid_start(rig, torch.zeros_like(shape_t), tgt_all)
        depth = theta_all[:, -1].clone()  # where an average head would be
        if shape is not None:
            theta_all = _rigid_start(rig, shape_t, tgt_all)
        if fit_shape and F:
            # 1. the identity, jointly with the unknowns of a few frames spread over the video
            keys = torch.linspace(0, F - 1, min(F, config.shape_frames)).round().long().unique()
            link = torch.as_tensor(np.diff(frame_index[keys.numpy()]) == 1, dtype=torch.float32)
            prob = _Problem(rig, tgt_all[keys], inv_sigma, link, config, fit_shape=True, depth=depth[keys])
            theta_keys, shape_t = _solve_window(prob, theta_all[keys], shape_t, config.shape_iterations, config)
            theta_all = _rigid_start(rig, shape_t, tgt_all)  # again, with this identity
            theta_all[keys] = theta_keys
        # 2. every frame with the identity fixed, window by window
        for start in range(0, F, config.max_frames):
            stop = min(F, start + config.max_frames)
            prob = _Problem(rig, tgt_all[start:stop], inv_sigma, adjacent[start:stop - 1], config, fit_shape=False,
                            depth=depth[start:stop])
            prob.anchor = anchor
            theta, _ = _solve_window(prob, theta_all[start:stop], shape_t, config.iterations, config)
            uv = prob.landmarks(rig.neutral(shape_t), theta)
            errors.append(((uv - prob.targets) * PIXELS).norm(dim=-1).mean(-1))
            thetas.append(theta)
            fitted.append(uv)
            linked = stop < F and bool(adjacent[stop - 1])
            anchor = theta[-1, E:].double() if linked else None
            if progress is not None:
                progress(stop - start)

    theta = torch.cat(thetas) if thetas else torch.zeros(0, E + 15)
    psi, jaw, eyes, rot, trans = theta[:, :E], theta[:, E:E + 3], theta[:, E + 3:E + 9], theta[:, E + 9:E + 12], theta[:, E + 12:]
    view = viewmats(rot, trans)
    pad = lambda x, n: torch.nn.functional.pad(x, (0, n - x.shape[-1])).numpy().astype(np.float32)  # noqa: E731
    f32 = lambda x: x.numpy().astype(np.float32)  # noqa: E731
    return FitResult(
        shape=pad(shape_t, head.n_shape), expression=pad(psi, head.n_expression),
        jaw_pose=f32(jaw), eye_pose=f32(eyes), rotation=f32(rot), translation=f32(trans),
        viewmat=f32(view), transform=f32(viewmat_to_reference(view)),
        error_px=f32(torch.cat(errors)) if errors else np.zeros(0, np.float32),
        landmarks=f32(torch.cat(fitted)) if fitted else np.zeros((0, len(indices), 2), np.float32),
        landmark_indices=indices,
    )
