"""The 3DGS rules both backends draw by (the reference's rasterizer, SPEC §7.1). The torch
backend reads them from ``rasterize``'s namespace, where tests change them one at a time."""

EPS2D = 0.3             # px^2 added to the diagonal of every 2D covariance
ALPHA_MAX = 0.99        # alpha clamp
ALPHA_MIN = 1.0 / 255   # contributions under this are skipped
T_MIN = 1e-4            # compositing stops before transmittance drops under this
EXTENT_MAX = 3.33       # cap of the bounding box half-size in standard deviations
