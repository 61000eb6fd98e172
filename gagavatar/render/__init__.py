"""Rendering: the camera convention and the differentiable Gaussian rasterizer."""
from gagavatar.render.cameras import (REFERENCE_FOCAL, Camera, intrinsics, look_at, orbit,
                                      reference_to_viewmat, viewmat_to_reference)
from gagavatar.render.rasterize import RasterOutput, rasterize

__all__ = ["Camera", "REFERENCE_FOCAL", "RasterOutput", "intrinsics", "look_at", "orbit", "rasterize",
           "reference_to_viewmat", "viewmat_to_reference"]
