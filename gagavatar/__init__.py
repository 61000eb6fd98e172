"""GAGAvatar: one photo in, an animatable 3D Gaussian head avatar out.

    import gagavatar
    animator = gagavatar.Animator.load()          # any checkpoint; default: the bundled tiny model
    model = gagavatar.load("GAGAvatar.pt")        # the network alone

The package follows the pipeline (docs/architecture.md): input (``io``, ``geometry``) ->
head model (``head``) -> data (``data``) -> tracking (``tracking``) -> reconstruction
(``model``, ``render``) -> driving (``reenact``) -> evaluation / training (``eval``,
``train``) -> what the commands do. Nothing heavy is imported until it is used.
"""
__version__ = "0.1.0"


def load(path, **kwargs):
    """The network of any checkpoint (ours, the released GAGAvatar.pt or its conversion, a run folder)."""
    from gagavatar.model import load as _load

    return _load(path, **kwargs)


def __getattr__(name):
    if name == "Animator":  # lazily, so `import gagavatar` (and the CLI) stay fast
        from gagavatar.reenact import Animator

        return Animator
    raise AttributeError(f"module 'gagavatar' has no attribute {name!r}")
