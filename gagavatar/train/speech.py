"""Training a speech -> motion model (``gagavatar train-speech``): ARTalk's two stages in one run.

1. The motion codec (steps 1 .. codec_steps): windows of two chunks [previous | this]; each
   chunk encoded on its own and quantised (multi-scale BSQ, straight-through), the pair
   decoded, "this" compared with the truth. Losses as the reference's codec trainer:
   L1 on the motion, head rotation L1 (x8), its velocity (x5) and smoothness (x0.5); the
   head model's vertices (MSE in mm, x2), lips (x0.1), their velocity and smoothness;
   BSQ's commitment (x0.2) and entropy (x0.1) terms.
2. The generator (the next generator_steps; codec frozen): teacher forcing over scales
   in one pass. The true bits of the coarser scales (up to 30 % flipped, the finer targets
   re-quantised after the flips) are the tokens, the previous chunk is the context (10 %
   of the time the zero motion the first chunk sees), a style from 2 s of the same clip
   (10 %: none); per-bit cross-entropy.

    config = SpeechTrainConfig(data="clips.npz", out="runs/voice", preset="tiny")
    train_speech(config)            # -> runs/voice/speech_model.safetensors

The machinery is ``train``'s: atomic checkpoints (``state``), ``--resume`` from the newest
intact one (across stages), another run's folder refused, ``--init`` from a released or
trained model, torchrun for several GPUs (``Distributed``), metrics.jsonl and loss.png, an
evaluation hook at every checkpoint.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from gagavatar.io import atomic_path, remove_stale_temps
from gagavatar.speech.codec import quantize_for_training, teacher_bits
from gagavatar.speech.generator import SpeechModel
from gagavatar.speech.postprocess import EXPRESSION, HEAD_ROTATION, JAW
from gagavatar.train.speech_config import ARCHITECTURE, SpeechTrainConfig
from gagavatar.train.state import (clear_run, mark_run, resume_checkpoint, restore_training_state, save_training_state,
                                   set_aside, truncate_metrics)
from gagavatar.train.trainer import Distributed, _say, check_run_folder, diverged, plot_losses

STYLE_FRAMES = 50  # 2 s of motion, as ARTalk's style_motion files


# ---------------------------------------------------------------------- the two objectives
def split_motion(motion: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Motion [..., D] -> (expression [..., D-6], head rotation [..., 3], jaw [..., 3])."""
    return motion[..., EXPRESSION], motion[..., HEAD_ROTATION], motion[..., JAW]


class MeshError(torch.nn.Module):
    """Mean squared vertex distance (mm^2) that a motion difference makes, through the head
    model's linearisation at the neutral face: exact for the expressions (blend shapes are
    linear), first order in the jaw (a 0.2 rad opening: about 2 % off). It stands in for
    running the head model on every frame (what the reference does), which costs seconds a
    step on a CPU; the head rotation is left out (it is the camera's).

    __call__(difference [..., D], lips=False) -> [...] mean over the (lip) vertices' coordinates."""

    def __init__(self, head, motion_dim: int, lips: Tensor):
        super().__init__()
        E = motion_dim - 6
        at = torch.zeros(E + 3, dtype=head.v_template.dtype, device=head.v_template.device)

        def vertices_mm(x: Tensor) -> Tensor:  # expression and jaw [E + 3] -> vertices [V, 3] in mm
            return head(at.new_zeros(1, 1), expression=x[None, :E], jaw_pose=x[None, E:])[0] * 1000

        A = torch.func.jacfwd(vertices_mm)(at)  # [V, 3, E + 3]
        for name, rows in (("gram", A.flatten(0, 1)), ("lip_gram", A[lips].flatten(0, 1))):
            self.register_buffer(name, rows.T @ rows / rows.shape[0], persistent=False)

    def forward(self, difference: Tensor, lips: bool = False) -> Tensor:
        d = torch.cat([difference[..., EXPRESSION], difference[..., JAW]], -1)
        return torch.einsum("...i,ij,...j->...", d, self.lip_gram if lips else self.gram, d)


def velocity(x: Tensor) -> Tensor:
    return x[:, 1:] - x[:, :-1]


def codec_loss(model: SpeechModel, window: Tensor, mesh: MeshError) -> tuple[Tensor, dict[str, Tensor]]:
    """Stage 1 on motion windows [B, 2F, D] (F = chunk frames): -> (loss, terms)."""
    codec, Fc = model.basic_vae, model.config.chunk_frames
    scales = model.config.scales
    x = (window - codec.motion_mean) / codec.motion_std
    own = codec.attn_mask[:, :, :Fc, :Fc]
    codes, vq = [], 0.0
    for chunk in (x[:, :Fc], x[:, Fc:]):  # each chunk on its own, as ``MotionCodec.encode``
        total, _, commit, entropy = quantize_for_training(codec.encoder(chunk + codec.enc_pos_embed[:, :Fc], own),
                                                          scales)
        codes.append(total)
        vq = vq + 0.2 * commit + 0.1 * entropy
    decoded = codec.decoder(torch.cat(codes, 1) + codec.dec_pos_embed, codec.attn_mask)[:, Fc:]
    pred, true = decoded * codec.motion_std + codec.motion_mean, window[:, Fc:]
    pred_rot, true_rot = split_motion(pred)[1], split_motion(true)[1]
    error, error_vel = pred - true, velocity(pred) - velocity(true)
    terms = {
        "vq": vq / 2,
        "motion": F.l1_loss(pred, true),
        "rotation": 8.0 * F.l1_loss(pred_rot, true_rot),
        "rotation_vel": 5.0 * F.mse_loss(velocity(pred_rot), velocity(true_rot)),
        "rotation_smooth": 0.5 * F.mse_loss(velocity(pred_rot)[:, 1:], velocity(pred_rot)[:, :-1]),
        "mesh": 2.0 * mesh(error).mean() / 1000,
        "lips": 0.1 * mesh(error, lips=True).mean() / 1000,
        "mesh_vel": 10.0 * mesh(error_vel).mean(),
        "mesh_smooth": 0.1 * mesh(velocity(velocity(pred))).mean(),
    }
    return sum(terms.values()), terms


def generator_loss(model: SpeechModel, audio: Tensor, window: Tensor, cfg: SpeechTrainConfig,
                   rng: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
    """Stage 2: audio of "this" chunk [B, chunk_samples], motion windows [B, 2F, D] ->
    (per-bit cross-entropy, terms)."""
    c, codec = model.config, model.basic_vae
    Fc, B = c.chunk_frames, window.shape[0]
    prev, this = window[:, :Fc], window[:, Fc:]
    with torch.no_grad():
        no_prev = (torch.rand(B, generator=rng) < cfg.prev_free).to(window.device)[:, None, None]
        prev = torch.where(no_prev, torch.zeros_like(prev), prev)
        features = codec.encoder((this - codec.motion_mean) / codec.motion_std + codec.enc_pos_embed[:, :Fc],
                                 codec.attn_mask[:, :, :Fc, :Fc])
        targets, inputs = teacher_bits(features, tuple(c.scales), cfg.flip_ratio, rng)
        prev_bits = codec.encode(prev)
    start = (Fc - STYLE_FRAMES) // 2  # the style: 2 s from the previous chunk of the same clip
    style = model.style_condition(window[:, start:start + STYLE_FRAMES])
    no_style = (torch.rand(B, generator=rng) < cfg.style_free).to(window.device)[:, None, None]
    style = torch.where(no_style, model.style_condition(None, B), style)
    level = model.lvl_embed(model.lvl_idx)
    prev_tokens = model.known_chunk_tokens(prev_bits, style) + level + model.prev_pos_embed
    x = torch.cat([style, model.vqfeat_embed(codec.next_scale_inputs(inputs))], 1) + level + model.pos_embed
    cond = model.audio_condition(model.audio_encoder(audio))
    mask = model.attn_bias_for_masking
    for block in model.attn_blocks:
        x = block(x, prev_tokens, cond, mask)
    logits = model.logits_head(model.cond_logits_head(x, cond)).view(B, c.tokens, c.code_dim, 2)
    loss = F.cross_entropy(logits.reshape(-1, 2), targets.reshape(-1))
    accuracy = (logits.argmax(-1) == targets).float().mean()
    return loss, {"bits": loss, "bit_accuracy": accuracy.detach()}


class SpeechObjective(torch.nn.Module):
    """Both stages' losses as one module's forward (what DDP wraps):
    (stage, audio [B, 2 chunk_samples], motion [B, 2F, D]) -> (loss, terms)."""

    def __init__(self, model: SpeechModel, mesh: MeshError, cfg: SpeechTrainConfig, rng: torch.Generator):
        super().__init__()
        self.model, self.mesh, self.cfg, self.rng = model, mesh, cfg, rng

    def forward(self, stage: str, audio: Tensor, motion: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if stage == "codec":
            return codec_loss(self.model, motion, self.mesh)
        this_chunk = audio[:, audio.shape[1] // 2:]
        return generator_loss(self.model, this_chunk, motion, self.cfg, self.rng)


# ---------------------------------------------------------------------- the run
def set_motion_stats(model: SpeechModel, clips) -> None:
    """The codec's and the style encoder's motion mean / std from the training clips (std at
    least 1e-3: a dimension that never moves must not blow up)."""
    import numpy as np

    motion = torch.from_numpy(np.concatenate([clip.motion for clip in clips]).astype("float32"))
    mean, std = motion.mean(0), motion.std(0).clamp_min(1e-3)
    for module in (model.basic_vae, model.style_encoder):
        module.motion_mean.copy_(mean)
        module.motion_std.copy_(std)


def stage_lr(step: int, cfg: SpeechTrainConfig) -> float:
    """Learning-rate factor at ``step`` (0-based): per stage, linear warm-up then cosine to 10 %."""
    begin, length = (0, cfg.codec_steps) if step < cfg.codec_steps else (cfg.codec_steps, cfg.generator_steps)
    t = step - begin
    if t < cfg.warmup:
        return (t + 1) / cfg.warmup
    progress = (t - cfg.warmup) / max(1, length - cfg.warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def build_speech_model(cfg: SpeechTrainConfig, head) -> tuple[SpeechModel, list]:
    """(the model, its training clips): ``--init``'s weights, or the preset's model for ``head``
    with the clips' motion statistics. The clips' motion is read at the model's size."""
    from gagavatar.speech.data import read_clips
    from gagavatar.speech.weights import load_speech_model

    model = load_speech_model(cfg.init).train() if cfg.init is not None else None
    config = model.config if model is not None else cfg.model_config().replace(head=head.id)
    clips = read_clips(cfg.data, "train", expression_dims=config.motion_dim - 6)
    if clips[0].motion.shape[1] != config.motion_dim:
        raise ValueError(f"the clips' motion has {clips[0].motion.shape[1]} values a frame, the model's "
                         f"{config.motion_dim}: train on clips of the model's head model")
    if model is None:
        model = SpeechModel(config)
        set_motion_stats(model, clips)
    return model, clips


def held_out_evaluation(data: str, head_model: str | None = None, max_clips: int = 8):
    """The evaluation hook for ``--eval``: ``evaluate(model) -> {"lve": mm}``, the lip vertex
    error on (up to ``max_clips``) held-out clips (a clips file, or a dataset's test split),
    as ``speak`` would drive them (smoothed). ``evaluate.load(motion_dim)`` reads the clips
    (at the model's motion size; ``train_speech`` calls it before the run starts, so clips it
    cannot use are refused before a run folder is made); else the first call does."""
    import numpy as np

    from gagavatar.head import load_head_model
    from gagavatar.speech.data import read_clips
    from gagavatar.speech.evaluate import FaceMeasure, lip_errors, model_predictor

    measure = FaceMeasure(load_head_model(head_model))
    held: list = []

    def load(motion_dim: int) -> None:
        if not held:
            clips = read_clips(data, "test", expression_dims=motion_dim - 6)[:max_clips]
            held.extend((clip.audio, measure(clip.motion).lips) for clip in clips)

    def evaluate(model) -> dict[str, float]:
        load(model.config.motion_dim)
        model.eval()
        predict = model_predictor(model)
        errors = []
        for audio, truth in held:
            motion = predict(audio)
            n = min(len(motion), len(truth))
            errors.append(lip_errors(measure(motion[:n]).lips, truth[:n]))
        return {"lve": float(np.concatenate(errors).mean())}

    evaluate.load = load
    return evaluate


def train_speech(cfg: SpeechTrainConfig, resume: bool = False, overwrite: bool = False, evaluate=None) -> Path:
    """Run (or resume) both stages; returns the run folder, whose ``speech_model.safetensors``
    is the trained model. ``evaluate(model) -> {name: value}`` runs at every checkpoint."""
    from torch.utils.data import DataLoader, Subset
    from tqdm import tqdm

    from gagavatar.head import load_head_model
    from gagavatar.io import check_writable
    from gagavatar.speech.data import SpeechWindows
    from gagavatar.speech.face_regions import lip_vertices
    from gagavatar.speech.weights import save_speech_model

    if cfg.steps == 0:
        raise ValueError("--codec-steps and --generator-steps are both 0: there is nothing to train")
    if cfg.codec_steps == 0 and cfg.init is None:
        raise ValueError("--codec-steps 0 keeps the codec of --init: give --init MODEL, or train the codec too")
    check_run_folder(cfg, resume, overwrite, ARCHITECTURE)
    ctx = Distributed()
    run = Path(cfg.out)
    if ctx.is_main:
        check_writable(run / "config.json")
    torch.manual_seed(cfg.seed)
    head = load_head_model(cfg.head_model).to(ctx.device)
    model, clips = build_speech_model(cfg, head)
    if evaluate is not None and hasattr(evaluate, "load"):
        evaluate.load(model.config.motion_dim)
    if ctx.is_main:  # the inputs are read: only now is there a run folder (a refused command leaves none)
        run.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(run)
        if overwrite and clear_run(run):
            _say(f"--overwrite: deleted the previous run in {run}")
    ctx.barrier()
    model = model.to(ctx.device)
    c = model.config
    window = 2 * c.chunk_frames
    data = SpeechWindows(clips, window, c.sample_rate, c.fps, seed=cfg.seed + ctx.rank,
                         windows_per_epoch=cfg.steps * cfg.batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: stage_lr(step, cfg))
    mesh = MeshError(head, c.motion_dim, torch.as_tensor(lip_vertices(head), device=ctx.device))

    start, spent = 0, 0.0  # spent: seconds trained before this process (a resumed run's budget is the rest)
    last, state, damaged = resume_checkpoint(run, _say) if resume else (None, None, [])
    if last is not None:
        restore_training_state(state, model, optimizer, scheduler)
        start, spent = state["step"], float(state["extra"].get("seconds", 0.0))
        _say(f"Resumed from {last} at step {start} ({spent / 60:.1f} min trained)")
    ctx.barrier()
    if ctx.is_main:
        set_aside(damaged)
        if resume:
            truncate_metrics(run / "metrics.jsonl", start)
        if last is None:
            mark_run(run)  # this project's run: --overwrite may replace it
            with atomic_path(run / "config.json") as tmp:
                tmp.write_text(cfg.to_json())
    rng = torch.Generator()  # seeded at each step (below)
    objective = SpeechObjective(model, mesh, cfg, rng)
    net = torch.nn.parallel.DistributedDataParallel(objective, find_unused_parameters=True, broadcast_buffers=False) \
        if ctx.enabled else objective
    # window i is a function of (seed, i): a resumed run continues with the windows it had not seen
    loader = DataLoader(Subset(data, range(start * cfg.batch_size, len(data))), batch_size=cfg.batch_size)
    metrics_path = run / "metrics.jsonl"
    bar = tqdm(total=cfg.steps, initial=start, disable=not ctx.is_main, desc="train-speech", dynamic_ncols=True)
    step, t0, scores = start, time.perf_counter(), {}

    def trained() -> float:  # seconds of training, a resumed run's earlier ones too
        return spent + time.perf_counter() - t0

    out_of_time = cfg.max_minutes is not None and spent >= cfg.max_minutes * 60  # a finished run is not trained on
    model.train()
    try:
        for audio, motion in loader:
            if step >= cfg.steps or out_of_time:
                break
            stage = "codec" if step < cfg.codec_steps else "generator"
            model.basic_vae.requires_grad_(stage == "codec")
            # a step's draws depend on (seed, step, rank) alone: a resumed run draws what an unbroken one did
            rng.manual_seed((cfg.seed * 1_000_003 + step) * 1024 + ctx.rank)
            loss, terms = net(stage, audio.to(ctx.device), motion.to(ctx.device))
            if not torch.isfinite(loss):  # stop at once: the last checkpoint is the last good state
                raise diverged(run, step, f"the {stage} loss is {loss.item()}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            out_of_time = cfg.max_minutes is not None and trained() > cfg.max_minutes * 60
            last_step = step == cfg.steps or out_of_time
            if ctx.is_main:
                bar.update(1)
                bar.set_postfix(stage=stage, loss=f"{loss.item():.4f}", **{k: f"{v:.3g}" for k, v in scores.items()})
                rows = []
                if step % cfg.log_every == 0 or last_step:
                    rows.append({"step": step, "stage": stage, "loss": loss.item(), "lr": scheduler.get_last_lr()[0],
                                 "it_per_s": (step - start) / (time.perf_counter() - t0),
                                 **{f"loss_{k}": v.item() for k, v in terms.items() if k != "bit_accuracy"},
                                 **({"bit_accuracy": terms["bit_accuracy"].item()} if "bit_accuracy" in terms else {})})
                if step % cfg.checkpoint_every == 0 or last_step:
                    if evaluate is not None and step > cfg.codec_steps:
                        scores = evaluate(model)
                        model.train()
                        rows.append({"step": step, **scores})
                    save_training_state(run, step, model, optimizer, scheduler, extra={"seconds": trained()},
                                        keep_last=cfg.keep_last)
                with open(metrics_path, "a") as f:
                    f.writelines(json.dumps(row) + "\n" for row in rows)
                if step % cfg.checkpoint_every == 0 or last_step:
                    plot_losses(metrics_path, run / "loss.png", score="lve", title="held-out lip vertex error (mm)")
            if out_of_time:
                break
    finally:
        bar.close()
    if ctx.is_main:
        path = save_speech_model(model, run / "speech_model.safetensors")
        _say(f"Done: {step} steps; speech model at {path}")
    if ctx.enabled:
        torch.distributed.destroy_process_group()
    return run
