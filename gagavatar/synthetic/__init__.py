"""Synthetic data at runtime: random people drawn as Gaussians on the head model
(``appearance``) and talking-head videos of them (``video``); ``basis_names`` names
the bundled synthetic head's first basis columns. The head itself is built by the
build-time tool ``gagavatar.tools.build_head``."""
