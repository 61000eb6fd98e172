"""The head model reduced to its landmarks: what the fitter evaluates thousands of times.

With the global and neck rotations at zero (the reference tracker's
convention, SPEC §7.10), FLAME's linear blend skinning of a vertex v with
skinning weights w_j reduces to

    X(v) = v + sum_j w_j (R_j - I) (v - J_j),      j in {jaw, left eye, right eye},

where v = template + shape and expression blend shapes + pose correctives
and the joints J_j are the joint regressor applied to the blend-shaped mesh.
Everything but the three rotations is linear in the blend-shape
coefficients, and a landmark is a fixed barycentric mix of three vertices,
so each landmark l is

    X_l = a_l + sum_j (R_j - I) g_lj,

with a_l and g_lj affine in (shape, expression, pose-corrective features).
``LandmarkRig`` precomputes those affine maps at the landmarks only, so a
frame costs a few hundred multiply-adds per landmark, and the Jacobian with
respect to the blend-shape coefficients is exact and cheap. Tests check it
against ``HeadModel.landmarks(HeadModel(...))``.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from gagavatar.geometry import axis_angle_to_matrix
from gagavatar.head import HeadModel
from gagavatar.tracking.landmarks import LEFT_IRIS, N_LANDMARKS, RIGHT_IRIS, salient_landmarks

ROTATING_JOINTS = (2, 3, 4)  # FLAME: jaw, left eye, right eye (root and neck stay at zero)


def _skew(v: Tensor) -> Tensor:
    """[...,3] -> [...,3,3] cross-product matrices."""
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], -1).reshape(*v.shape[:-1], 3, 3)


def rotation_jacobian(rotvec: Tensor) -> tuple[Tensor, Tensor]:
    """Rotation matrices R [B,3,3] of axis-angle vectors [B,3] and dR/d(rotvec_k) [B,3,3,3] (k first).

    Gallego & Yezzi (2015): dR/dw_k = (w_k [w]x + [w x (I - R) e_k]x) R / |w|^2, in float64;
    near zero the series [e_k]x + ([e_k]x [w]x + [w]x [e_k]x) / 2.
    """
    w = rotvec.double()
    R = axis_angle_to_matrix(w)
    eye = torch.eye(3, dtype=w.dtype, device=w.device)
    E = _skew(eye)  # [3,3,3]: [e_k]x
    theta2 = (w * w).sum(-1)[:, None, None, None]  # [B,1,1,1]
    W = _skew(w)[:, None]  # [B,1,3,3]
    cross = torch.linalg.cross(w[:, None, :].expand(-1, 3, 3), ((eye - R) @ eye).transpose(1, 2), dim=-1)  # [B,k,3]
    exact = (w[:, :, None, None] * W + _skew(cross)) @ R[:, None] / theta2.clamp_min(1e-30)
    series = E[None] + 0.5 * (E[None] @ W + W @ E[None])
    dR = torch.where(theta2 < 1e-10, series, exact)
    return R.to(rotvec.dtype), dR.to(rotvec.dtype)


def eye_pupils(head: HeadModel) -> dict[int, int] | None:
    """MediaPipe iris id -> head-model vertex at the front of that eyeball, or None.

    Eyeball vertices are those skinned mostly to an eye joint (FLAME joints 3, 4);
    the pupil is the most forward (+z) of them. FLAME's x points to the subject's
    left, so the eye with the larger x is the left eye (MediaPipe 473).
    """
    if head.n_joints < 5:
        return None
    owner = head.lbs_weights.argmax(1)
    v = head.v_template
    pupils = []
    for j in (3, 4):
        idx = torch.nonzero(owner == j).flatten()
        if idx.numel() == 0:
            return None
        pupils.append(int(idx[v[idx, 2].argmax()]))
    left, right = sorted(pupils, key=lambda i: -float(v[i, 0]))
    return {LEFT_IRIS: left, RIGHT_IRIS: right}


class LandmarkRig(torch.nn.Module):
    """A head model's landmarks as a function of (shape, expression, jaw, eyes).

    ``indices`` [L]: the MediaPipe id of each landmark. With ``subset`` only the
    embedding's salient landmarks are kept (``landmarks.salient_landmarks``);
    an embedding without iris points gets the eyeball pupils (``eye_pupils``).
    ``n_shape`` keeps only the first shape components (the rest stay zero).
    Units: the head model's own (metres for FLAME).
    """

    def __init__(self, head: HeadModel, subset: bool = True, n_shape: int | None = None):
        super().__init__()
        if head.n_landmarks == 0:
            raise ValueError(f"{head.name} has no landmark embedding; the tracker needs one for MediaPipe's "
                             "landmarks (FLAME's mediapipe_landmark_embedding.npz, or HeadModel.default())")
        fmt = str(head.landmark_format or "mediapipe")
        if not (fmt.startswith("mediapipe") or fmt == "custom"):
            raise ValueError(f"{head.name}: its landmark embedding is {fmt!r}; the tracker needs a MediaPipe "
                             "embedding (FLAME's mediapipe_landmark_embedding.npz)")
        if head.n_joints != 5:
            raise ValueError(f"{head.name} has {head.n_joints} joints; the tracker needs FLAME's 5 "
                             "(root, neck, jaw, left eye, right eye)")
        indices = head.landmark_indices.cpu().numpy().astype(np.int64)
        if indices.min() < 0 or indices.max() >= N_LANDMARKS:
            raise ValueError(f"{head.name}: landmark indices must be MediaPipe ids 0..{N_LANDMARKS - 1}")
        keep = np.isin(indices, salient_landmarks()) if subset else np.ones(len(indices), bool)
        if keep.sum() < 20:  # a small embedding (e.g. FLAME's 105 points): use all of it
            keep[:] = True
        indices = indices[keep]
        corners = head.faces[head.lmk_face_idx].cpu()[keep]  # [L,3] vertex ids
        bary = head.lmk_b_coords.detach().cpu().double()[keep]
        pupils = eye_pupils(head)
        if pupils is not None and not np.isin([LEFT_IRIS, RIGHT_IRIS], indices).any():
            corners = torch.cat([corners, torch.tensor([[pupils[k]] * 3 for k in (RIGHT_IRIS, LEFT_IRIS)])])
            bary = torch.cat([bary, torch.tensor([[1.0, 0.0, 0.0]] * 2, dtype=bary.dtype)])
            indices = np.concatenate([indices, [RIGHT_IRIS, LEFT_IRIS]])
        L = len(indices)
        S, E = head.shape_columns, head.expression_columns
        S = S if n_shape is None else min(S, n_shape)
        d = lambda t: t.detach().cpu().double()  # noqa: E731
        V = head.n_vertices
        # Every vertex quantity as [V, 3, K] columns: template (K=1), shape, expression, pose correctives.
        posedirs = d(head.posedirs)
        if posedirs.dim() == 2:  # [P, V*3] (vertex-major) -> FLAME's [V,3,P]
            posedirs = posedirs.reshape(-1, V, 3).permute(1, 2, 0)
        columns = torch.cat([d(head.v_template)[..., None], d(head.shapedirs[..., :S]), d(head.exprdirs[..., :E]),
                             posedirs], -1)  # [V,3,1+S+E+P]
        blend = columns.clone()
        blend[..., 1 + S + E:] = 0  # joints come from the blend-shaped mesh, before pose correctives
        joints = torch.einsum("jv,vck->jck", d(head.J_regressor), blend)  # [J,3,K]
        weights = d(head.lbs_weights)  # [V,J]
        at = columns[corners]  # [L,3,3,K] (corner, xyz, column)
        a = (bary[..., None, None] * at).sum(1)  # [L,3,K]
        g = []
        for j in ROTATING_JOINTS:
            wb = bary * weights[corners, j]  # [L,3]
            g.append((wb[..., None, None] * (at - joints[j])).sum(1))  # [L,3,K]
        g = torch.stack(g)  # [3,L,3,K]
        f32 = lambda t: t.float().contiguous()  # noqa: E731
        self.register_buffer("a", f32(a))
        self.register_buffer("g", f32(g))
        self.n_shape, self.n_expression, self.n_pose = S, E, columns.shape[-1] - 1 - S - E
        self.indices = indices
        self.n_landmarks = L

    # column blocks of the affine maps
    def _cols(self, block: str) -> slice:
        S, E = self.n_shape, self.n_expression
        return {"template": slice(0, 1), "shape": slice(1, 1 + S), "expression": slice(1 + S, 1 + S + E),
                "pose": slice(1 + S + E, None)}[block]

    def neutral(self, shape: Tensor) -> tuple[Tensor, Tensor]:
        """The video's identity: (a [L,3], g [3,L,3]) of template + shape blend shapes; shape [S]."""
        t, s = self._cols("template"), self._cols("shape")
        a = self.a[..., t][..., 0] + self.a[..., s] @ shape
        g = self.g[..., t][..., 0] + self.g[..., s] @ shape
        return a, g

    @staticmethod
    def rotations(jaw_pose: Tensor, eye_pose: Tensor) -> Tensor:
        """[F,3,3,3]: rotation matrices of the jaw, left eye and right eye."""
        return torch.stack([axis_angle_to_matrix(jaw_pose), axis_angle_to_matrix(eye_pose[:, :3]),
                            axis_angle_to_matrix(eye_pose[:, 3:])], 1)

    def expressed(self, neutral: tuple[Tensor, Tensor], expression: Tensor) -> tuple[Tensor, Tensor]:
        """(a [F,L,3], g [F,3,L,3]) with the expression [F,E] added to ``neutral(shape)``."""
        e = self._cols("expression")
        return (neutral[0] + torch.einsum("lck,fk->flc", self.a[..., e], expression),
                neutral[1] + torch.einsum("jlck,fk->fjlc", self.g[..., e], expression))

    def _pose_columns(self) -> tuple[Tensor, Tensor]:
        """Pose-corrective columns of (a, g) for the 27 features of the jaw and eyes (neck = 0)."""
        p = self._cols("pose")
        return self.a[..., p][..., 9:], self.g[..., p][..., 9:]

    def posed(self, expressed: tuple[Tensor, Tensor], jaw_pose: Tensor, eye_pose: Tensor) -> Tensor:
        """Landmarks [F,L,3] from ``expressed(...)``, jaw [F,3] and eyes [F,6]."""
        F = jaw_pose.shape[0]
        R = self.rotations(jaw_pose, eye_pose)  # [F,3,3,3]
        eye3 = torch.eye(3, dtype=R.dtype, device=R.device)
        feature = (R - eye3).reshape(F, 27)  # pose-corrective features, FLAME's order
        ap, gp = self._pose_columns()
        a = expressed[0] + torch.einsum("lck,fk->flc", ap, feature)
        g = expressed[1] + torch.einsum("jlck,fk->fjlc", gp, feature)
        return a + torch.einsum("fjab,fjlb->fla", R - eye3, g)

    def pose_jacobian(self, expressed: tuple[Tensor, Tensor], jaw_pose: Tensor, eye_pose: Tensor
                      ) -> tuple[Tensor, Tensor]:
        """Landmarks X [F,L,3] and dX / d(jaw, eyes) [F,L,3,9], exact."""
        F = jaw_pose.shape[0]
        R, dR = rotation_jacobian(torch.cat([jaw_pose, eye_pose[:, :3], eye_pose[:, 3:]], 0))
        R = R.reshape(3, F, 3, 3).transpose(0, 1)  # [F,3 joints,3,3]
        dR = dR.reshape(3, F, 3, 3, 3).transpose(0, 1)  # [F,3 joints,3 k,3,3]
        eye3 = torch.eye(3, dtype=R.dtype, device=R.device)
        feature = (R - eye3).reshape(F, 27)
        ap, gp = self._pose_columns()
        a = expressed[0] + torch.einsum("lck,fk->flc", ap, feature)
        g = expressed[1] + torch.einsum("jlck,fk->fjlc", gp, feature)
        X = a + torch.einsum("fjab,fjlb->fla", R - eye3, g)
        # d/dq_(j,k): (dR_j/dq_k) g_j  +  [a_p + sum_j' (R_j' - I) g_p,j'] . d feature / dq_(j,k)
        direct = torch.einsum("fjkab,fjlb->fljk a".replace(" ", ""), dR, g).reshape(F, -1, 9, 3)
        M = ap[None] + torch.einsum("fjab,jlbk->flak", R - eye3, gp)  # [F,L,3,27]
        M = M.reshape(F, -1, 3, 3, 9)  # feature slots of each joint
        indirect = torch.einsum("flajm,fjkm->flajk", M, dR.reshape(F, 3, 3, 9)).reshape(F, -1, 3, 9)
        return X, direct.transpose(-1, -2) + indirect

    def points(self, neutral: tuple[Tensor, Tensor], expression: Tensor, jaw_pose: Tensor,
               eye_pose: Tensor) -> Tensor:
        """Landmarks [F,L,3] from ``neutral(shape)``, expression [F,E], jaw [F,3], eyes [F,6]."""
        return self.posed(self.expressed(neutral, expression), jaw_pose, eye_pose)

    def jacobian(self, block: str, jaw_pose: Tensor, eye_pose: Tensor) -> Tensor:
        """[F,L,3,K]: d landmarks / d coefficients of ``block`` ("shape" or "expression"), exact
        (landmarks are linear in them; pose correctives do not depend on them)."""
        R = self.rotations(jaw_pose, eye_pose)
        eye3 = torch.eye(3, dtype=R.dtype, device=R.device)
        c = self._cols(block)
        return self.a[..., c][None] + torch.einsum("fjab,jlbk->flak", R - eye3, self.g[..., c])

    def forward(self, shape: Tensor, expression: Tensor, jaw_pose: Tensor, eye_pose: Tensor) -> Tensor:
        """shape [S], expression [F,E], jaw_pose [F,3], eye_pose [F,6] -> landmarks [F,L,3]."""
        return self.points(self.neutral(shape), expression, jaw_pose, eye_pose)
