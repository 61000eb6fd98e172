"""The bundled demo clips (build-time tool): ``python -m gagavatar.tools.demo_clips OUT``.

Two synthetic people never seen in training (their seed differs from the
training data's): the first frame of one is the demo's source, the other's
video its driver. ``gagavatar/assets/demo/clips`` was made with the defaults.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np


def make_demo_clips(out, seed: int = 7, frames: int = 48, size: int = 128) -> Path:
    """Write the demo clips to ``out`` (a dataset folder): video "source" (1 frame) and
    video "driver" (``frames`` frames), ``size`` x ``size``, drawn with ``seed``."""
    from gagavatar.data.format import FRAME_ARRAYS, Dataset, update_index, write_video
    from gagavatar.synthetic.video import SynthConfig, generate

    out = Path(out)
    with tempfile.TemporaryDirectory() as tmp:
        made = Dataset(generate(tmp, SynthConfig(identities=2, videos_per_identity=1, frames=frames, size=size,
                                                 seed=seed, splits=(0.0, 0.0, 1.0)), progress=False).root)
        a, b = made.videos
        for name, video, n in (("source", a, 1), ("driver", b, b.n_frames)):
            arrays = video.params.arrays  # only the per-frame arrays are cut to n frames
            params = {k: v[:n] if k in FRAME_ARRAYS and np.ndim(v) > (k == "shape") else v for k, v in arrays.items()}
            write_video(out, name, np.stack([video.frame(i) for i in range(n)]),
                        np.stack([video.matte(i) for i in range(n)]), params, video.identity, "test",
                        head_model=video.info.head_model, fps=video.info.fps, source=f"synthetic seed {seed}")
    update_index(out)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gagavatar.tools.demo_clips", description=__doc__.split("\n")[0])
    parser.add_argument("out", help="dataset folder to write (the bundled one: gagavatar/assets/demo/clips)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--frames", type=int, default=48, help="frames of the driver video")
    parser.add_argument("--size", type=int, default=128, help="frame side in pixels")
    args = parser.parse_args(argv)
    print(f"wrote {make_demo_clips(args.out, args.seed, args.frames, args.size)}")


if __name__ == "__main__":
    main()
