"""Geometry: rotation conversions (``rotation``) and the camera convention (``camera``).

Every other module takes its rotations and cameras from here, so each convention
is written once (see ``camera``'s docstring for the world/camera contract).
"""
from gagavatar.geometry.camera import (REFERENCE_FOCAL, WORLD_SCALE, Camera, intrinsics, look_at, orbit,
                                       reference_to_viewmat, viewmat_to_reference)
from gagavatar.geometry.rotation import (axis_angle_to_matrix, axis_rotation, matrix_to_axis_angle,
                                         matrix_to_quaternion, matrix_to_rotation_6d, quaternion_to_matrix,
                                         rotation_6d_to_matrix)

__all__ = ["REFERENCE_FOCAL", "WORLD_SCALE", "Camera", "intrinsics", "look_at", "orbit", "reference_to_viewmat",
           "viewmat_to_reference", "axis_angle_to_matrix", "axis_rotation", "matrix_to_axis_angle",
           "matrix_to_quaternion", "matrix_to_rotation_6d", "quaternion_to_matrix", "rotation_6d_to_matrix"]
