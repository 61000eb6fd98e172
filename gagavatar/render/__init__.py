"""Rendering: the differentiable Gaussian rasterizer (cameras live in ``gagavatar.geometry``)."""
from gagavatar.render.rasterize import RasterOutput, rasterize

__all__ = ["RasterOutput", "rasterize"]
