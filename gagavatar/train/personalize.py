"""Personalise: fine-tune the one-shot network on a short video of one person.

    gagavatar personalize --video clip.mp4 --out person.safetensors [--checkpoint BASE] [--minutes M | --steps N]

The clip is tracked (or a tracked folder is used), its last ``holdout`` fraction of frames
is held out (never sampled for training), and the network is trained from BASE on the
rest with the paper's objective, through the trainer (``train --init``: the same losses,
atomic checkpoints, resume). The held-out frames are driven from the clip's source frame
before and after, and the difference is reported: ``person.json`` (numbers),
``person.png`` (ground truth | one-shot | personalised), written after the weights they
describe (the old ones are removed first). Everything in between lives in a work folder
beside the output, keyed on what the run is made from (the video's content, the base
checkpoint's, the settings): an interrupted run continues where it stopped, and another
video (or base, or setting) starts a run of its own.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from gagavatar.assets import bundled
from gagavatar.data.format import VIDEO_FILE, Dataset, VideoRecord, read_json, update_index, write_json
from gagavatar.eval.evaluate import jsonable, resolve_lpips
from gagavatar.eval.metrics import psnr, ssim
from gagavatar.io import check_output, fingerprint, tensor_to_image, write_image_grid
from gagavatar.model import load, save
from gagavatar.reenact import Animator, load_tracked, source_frame
from gagavatar.reenact.inputs import DEFAULT_CHECKPOINT, is_bundled_model
from gagavatar.system import default_device
from gagavatar.train.personalize_config import PersonalizeConfig
from gagavatar.train.config import TrainConfig
from gagavatar.train.trainer import train


@dataclass
class HeldOut:
    """The clip's frames for the report: the source frame, and the held-out frames [T] that are
    never trained on (every valid frame from ``start`` on)."""

    video: VideoRecord
    source: int
    frames: np.ndarray
    start: int

    @classmethod
    def split(cls, video: VideoRecord, fraction: float) -> "HeldOut":
        n = video.n_frames
        start = min(n - 1, max(1, int(round(n * (1 - fraction)))))
        valid = np.flatnonzero(video.params["valid"])
        held = valid[valid >= start]
        source = source_frame(video)
        if source >= start or len(held) == 0 or len(valid[valid < start]) < 2:
            raise ValueError(f"{video.id}: {len(valid)} of {n} frames have a face, too few to train on the first "
                             f"{start} and hold out the rest: use a longer clip of the person")
        return cls(video, source, held, start)

    def spread(self, k: int) -> np.ndarray:
        """``k`` held-out frames, evenly spread."""
        return self.frames[np.unique(np.linspace(0, len(self.frames) - 1, k).round().astype(int))]


@torch.no_grad()
def render_held_out(animator: Animator, held: HeldOut, frames: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(rendered, ground truth) [T, 3, R, R]: the held-out ``frames`` driven from the source frame, as
    ``reenact`` drives them (self-reenactment: each frame's own parameters with the source's identity)."""
    avatar = animator.reconstruct(held.video, held.source)
    driven = held.video.frames(frames).replace(shape=held.video.frames(held.source).shape.expand(len(frames), -1))
    rendered = torch.cat([animator.images(avatar, driven[i:i + 8]) for i in range(0, len(frames), 8)]).cpu()
    truth = torch.stack([held.video.image(int(i), animator.size) for i in frames])
    return rendered, truth


def scores(animator: Animator, held: HeldOut, frames: np.ndarray, identity=None, lpips=None
           ) -> tuple[dict, torch.Tensor]:
    """Held-out PSNR and SSIM (and CSIM with a dlib ``identity`` encoder, LPIPS with its network),
    means over ``frames``; the renders."""
    rendered, truth = render_held_out(animator, held, frames)
    out = {"psnr": float(psnr(rendered, truth).mean()), "ssim": float(ssim(rendered, truth).mean())}
    if lpips is not None:
        with torch.no_grad():
            out["lpips"] = float(lpips(rendered, truth).mean())
    if identity is not None:
        cos = [float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12)) for a, b in
               ((identity.descriptor(tensor_to_image(r)), identity.descriptor(tensor_to_image(t)))
                for r, t in zip(rendered, truth))]
        out["csim"] = float(np.mean(cos))
    return out, rendered


def _identity_encoder():
    """dlib's face descriptor for CSIM, or None (with the reason) where the [eval] extra is missing."""
    from gagavatar.eval.metrics import identity_encoder
    from gagavatar.system import MissingExtra

    try:
        return identity_encoder(), None
    except MissingExtra as e:
        return None, str(e)


def _training_data(video: VideoRecord, folder: Path) -> Path:
    """A one-video training dataset in ``folder`` (split "train") of the tracked clip: the clip's own
    folder when it is that already, else a copy."""
    if video.split == "train" and (video.root / "index.json").is_file() and len(Dataset(video.root)) == 1:
        return video.root
    if not (folder / video.info.path / VIDEO_FILE).is_file():
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(video.folder, folder / video.info.path)
        info = read_json(folder / video.info.path / VIDEO_FILE) | {"split": "train"}
        write_json(folder / video.info.path / VIDEO_FILE, info)
        update_index(folder)
    return folder


def personalize(cfg: PersonalizeConfig, say=print) -> dict:
    """Personalise BASE on ``cfg.video``; returns the report (also written as OUT.json)."""
    cfg.validate()
    t_start = time.perf_counter()
    out = Path(cfg.out)
    base = str(bundled(DEFAULT_CHECKPOINT)) if cfg.checkpoint is None else cfg.checkpoint
    check_output(out, inputs=(cfg.video, base, cfg.head_model), suffixes=(".safetensors",))
    made_from = _made_from(cfg, base)
    root = Path(cfg.workdir) if cfg.workdir else out.with_name(out.stem + ".work")
    work = root / f"video-{made_from['video_sha256'][:16]}"  # tracked once per video
    run = root / f"run-{_key(made_from)}"  # one run per video, base and settings
    device = default_device()

    say(f"personalize: tracking {cfg.video}")
    one_shot = Animator.load(base, cfg.head_model, device=device)
    video = load_tracked(cfg.video, work / "tracked", one_shot.head)
    held = HeldOut.split(video, cfg.holdout)
    data = _training_data(video, work / "data")
    progress_frames = held.spread(cfg.eval_frames)
    identity, no_csim = _identity_encoder()
    lpips, lpips_status = resolve_lpips(None, [base])  # the AlexNet comes with the released checkpoint
    if lpips is None:
        lpips_status = "unavailable: LPIPS needs the AlexNet that GAGAvatar.pt carries (--checkpoint GAGAvatar.pt)"
    before, one_shot_images = scores(one_shot, held, held.frames, identity, lpips)
    say(f"personalize: {video.n_frames} frames; training on frames 0..{held.start - 1}, holding out "
        f"{len(held.frames)} frames from {held.start}; one-shot held-out PSNR {before['psnr']:.2f} dB")

    def evaluate(model) -> dict:
        return {"heldout_psnr": scores(Animator(model, one_shot.head, device), held, progress_frames)[0]["psnr"]}

    minutes = cfg.minutes if cfg.minutes is not None or cfg.steps is not None else 10.0
    train_cfg = TrainConfig(data=str(data), out=str(run), init=base, head_model=cfg.head_model,
                            frames=(0, held.start), freeze=cfg.freeze, lr=cfg.lr, batch_size=cfg.batch_size,
                            max_steps=cfg.steps or 1_000_000, max_minutes=minutes,
                            lr_decay_steps=cfg.steps or 1_000_000, checkpoint_every=cfg.checkpoint_every,
                            sample_every=cfg.checkpoint_every, log_every=10, keep_last=2)
    t_train = time.perf_counter()
    resume = (run / "config.json").is_file()
    if resume:
        say(f"personalize: continuing the run in {run}")
    train(train_cfg, resume=resume, evaluate=evaluate)
    train_seconds = time.perf_counter() - t_train

    personal = Animator(load(run / "model.safetensors", device=device), one_shot.head, device)
    after, personal_images = scores(personal, held, held.frames, identity, lpips)
    steps = _steps(run)
    report = {
        "video": str(cfg.video), "tracked": str(video.folder), "base_checkpoint": base,
        "base_is_bundled_model": is_bundled_model(base), "preset": personal.model.config.name,
        "frames": video.n_frames, "train_frames": [0, held.start], "heldout_frames": [int(held.frames[0]),
                                                                                      int(held.frames[-1])],
        "n_heldout": len(held.frames), "source_frame": held.source, "steps": steps,
        "train_seconds": train_seconds, "steps_per_s": steps / max(train_seconds, 1e-9) if not resume else None,
        "total_seconds": time.perf_counter() - t_start, "settings": asdict(cfg), "made_from": made_from,
        "run": str(run),
        **{f"heldout_{k}_before": v for k, v in before.items()}, **{f"heldout_{k}_after": v for k, v in after.items()},
        "csim": "measured" if identity is not None else f"unavailable: {no_csim}", "lpips": lpips_status,
    }
    info = {k: report[k] for k in ("video", "base_checkpoint", "train_frames", "heldout_frames", "steps")}
    for old in (out.with_suffix(".json"), out.with_suffix(".png")):  # never a report of other weights beside them
        old.unlink(missing_ok=True)
    save(personal.model, out, info={"personalized": info | made_from})
    report["contact_sheet"] = str(_contact_sheet(held, one_shot_images, personal_images, out.with_suffix(".png")))
    write_json(out.with_suffix(".json"), jsonable(report))
    say(f"personalize: held-out PSNR {before['psnr']:.2f} -> {after['psnr']:.2f} dB, SSIM {before['ssim']:.3f} -> "
        f"{after['ssim']:.3f}" + (f", CSIM {before['csim']:.3f} -> {after['csim']:.3f}" if identity else "")
        + f" ({steps} steps)")
    return report


def _made_from(cfg: PersonalizeConfig, base: str) -> dict:
    """What a personalisation is made from: the video's and the base checkpoint's content, and the
    settings that change the weights."""
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("video", "out", "checkpoint", "head_model", "workdir")}
    return {"video_sha256": fingerprint(cfg.video), "base_sha256": fingerprint(base),
            "head_model_sha256": fingerprint(cfg.head_model) if cfg.head_model else None, "settings": settings}


def _key(made_from: dict) -> str:
    return hashlib.sha256(json.dumps(made_from, sort_keys=True).encode()).hexdigest()[:16]


def _steps(run: Path) -> int:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return max((r["step"] for r in rows), default=0)


def _contact_sheet(held: HeldOut, one_shot: torch.Tensor, personal: torch.Tensor, path: Path, n: int = 6) -> Path:
    """Columns of held-out frames; rows ground truth | one-shot | personalised."""
    pick = np.unique(np.linspace(0, len(held.frames) - 1, n).round().astype(int))
    size = personal.shape[-1]
    truth = [tensor_to_image(held.video.image(int(held.frames[i]), size)) for i in pick]
    return write_image_grid([truth, [tensor_to_image(one_shot[i]) for i in pick],
                             [tensor_to_image(personal[i]) for i in pick]], path,
                            row_labels=["ground truth", "one-shot", "personalised"],
                            column_labels=[f"frame {int(held.frames[i])}" for i in pick])
