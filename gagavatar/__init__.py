"""GAGAvatar: one photo in, an animatable 3D Gaussian head avatar out.

The package follows the pipeline:
input (``io``) -> tracking (``tracking``) -> head model (``head``) ->
reconstruction (``model``) -> rendering (``render``) -> training / evaluation
(``train``, ``eval``); ``synthetic`` and ``data`` make and read datasets.
"""
__version__ = "0.1.0"


def load(path, **kwargs):
    """Load a gagavatar checkpoint (safetensors + config) into a model."""
    from gagavatar.model import load as _load

    return _load(path, **kwargs)
