"""Build-time tools: they make the bundled assets; nothing at runtime imports them.

- ``build_head``: the synthetic FLAME-layout head (``python -m gagavatar.tools.build_head``
  regenerates ``gagavatar/assets/head/synthetic_head.npz`` and its picture);
- ``head_preview``: renders of a head as flat Gaussians (``docs/images/synthetic_head.png``);
- ``demo_clips``: the bundled demo clips (``python -m gagavatar.tools.demo_clips OUT``).
"""
