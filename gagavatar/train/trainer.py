"""The training loop (SPEC §4, §7.11): one process, or one per GPU under torchrun.

    gagavatar train --preset tiny --data DATA --out RUN [--max-steps N] [--resume]
    torchrun --nproc-per-node G -m gagavatar train ...       # data-parallel (DDP)

What a run folder holds: ``config.json`` (this run's settings), ``step_XXXXXX.pt``
(full training state, atomic, last K kept), ``model.safetensors`` (the final
network, loadable with ``gagavatar.load``), ``metrics.jsonl`` + ``loss.png``
(loss curves), ``samples/step_XXXXXX.png`` (source | target | coarse | fine),
and TensorBoard scalars under ``tb/`` when tensorboard is installed.
Only rank 0 writes.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
from rich.console import Console
from torch.utils.data import DataLoader

from gagavatar.data.frame import FrameParams
from gagavatar.eval.metrics import psnr
from gagavatar.head import load_head_model
from gagavatar.io import atomic_path, output_errors, remove_stale_temps
from gagavatar.train.config import ABLATIONS, ARCHITECTURE, TrainConfig
from gagavatar.train.losses import GAGAvatarLoss
from gagavatar.train.sampler import StepBatchSampler
from gagavatar.errors import NonFiniteError
from gagavatar.train.state import (RUN_MARKER, clear_run, is_run, latest_checkpoint, mark_run, read_training_state,
                                   restore_training_state, resume_checkpoint, run_files, save_training_state,
                                   set_aside, truncate_metrics)

console = Console()

def check_run_folder(cfg, resume: bool, overwrite: bool, architecture: tuple[str, ...] = ARCHITECTURE) -> None:
    """Refuse an ``--out`` that holds another run unless ``--resume`` (same network: the
    ``architecture`` settings) or ``--overwrite``. ``cfg``: a run's config (``out``, ``to_json``)."""
    run = Path(cfg.out)
    if resume and overwrite:
        raise ValueError("--resume continues the run in --out, --overwrite deletes it: give one of them")
    if run.exists() and not run.is_dir():
        raise ValueError(f"--out {run} is a file; give a folder for the run")
    found = run_files(run)
    names = ", ".join(str(p.relative_to(run)) for p in found[:3]) + (" ..." if len(found) > 3 else "")
    if found and not resume and not overwrite:
        raise ValueError(f"{run} holds another training run ({names}): continue it with --resume, delete it and "
                         f"start again with --overwrite, or choose another --out")
    if found and overwrite and not is_run(run):  # e.g. another tool's config.json: not ours to delete
        raise ValueError(f"{run} holds files that no gagavatar training run wrote ({names}; no {RUN_MARKER} "
                         f"there): --overwrite deletes only a run of this project; choose another --out")
    if resume and (run / "config.json").is_file():
        try:
            stored = json.loads((run / "config.json").read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            stored = {}  # unreadable: the checkpoint itself decides (a mismatch fails when loading)
        ours = json.loads(cfg.to_json())
        for name in architecture:
            if name == "preset" and ours[name] is None:
                continue  # not given: the run's own
            if name in stored and stored[name] != ours[name]:
                raise ValueError(f"{run} was trained with {name}={stored[name]!r}, not {ours[name]!r}: resume it with "
                                 f"the same setting, or start again with --overwrite")


class Distributed:
    """rank / world size from torchrun's environment; a single process otherwise."""

    def __init__(self):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world_size > 1
        if self.enabled and not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        self.device = torch.device(f"cuda:{self.local_rank}" if torch.cuda.is_available() else "cpu")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_true(self, flag: torch.Tensor) -> bool:
        """True when ``flag`` holds on every rank (so all ranks take the same branch)."""
        flag = flag.detach().float().reshape(1)
        if self.enabled:
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item() > 0)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig):
    """Adam with the reference's groups (refiner style MLP / final linear at low lr) and LinearLR."""
    refiner = getattr(model, "refiner", None)
    low_lr_ids = {id(p) for p in refiner.low_lr_parameters()} if refiner is not None else set()
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if id(p) not in low_lr_ids], "lr": cfg.lr},
              {"params": [p for p in params if id(p) in low_lr_ids], "lr": cfg.lr * cfg.low_lr_factor}]
    optimizer = torch.optim.Adam([g for g in groups if g["params"]], betas=cfg.betas)
    scheduler = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0, end_factor=cfg.lr_end_factor,
                                                  total_iters=cfg.lr_decay_steps)
    return optimizer, scheduler


def load_perceptual(path: str | None, model=None):
    """The perceptual loss: from ``path``, else from the network's own checkpoint when it carries
    the released perceptual network (GAGAvatar.pt does), else off (said once)."""
    from gagavatar.perceptual import FacePerceptualLoss, load_perceptual_state

    if path is not None:
        return FacePerceptualLoss.from_state_dict(load_perceptual_state(path))
    if model is not None and model.perceptual_state:
        return FacePerceptualLoss.from_state_dict(model.perceptual_state)
    _say("Perceptual loss off: no perceptual weights given (--perceptual-weights GAGAvatar.pt enables it; see "
         "README 'Using the released GAGAvatar checkpoint').", "yellow")
    return None


def build_model(cfg: TrainConfig, head):
    """The network to train for ``head`` (a ``HeadModel``, recorded as ``model.head_id``): new from
    the preset (and ablations), or the ``--init`` checkpoint's (the same preset and head model, or
    one clear line)."""
    from gagavatar.model import check_head, create_model, load

    if cfg.init is not None:
        model = load(cfg.init)
        if cfg.preset is not None and cfg.preset != model.config.name:
            raise ValueError(f"--init {cfg.init} holds a '{model.config.name}' model, not --preset {cfg.preset}: "
                             f"leave --preset out (the checkpoint decides) or start from another checkpoint")
        check_head(model, head, f"--init {cfg.init}")
    else:
        overrides = {**cfg.model, "n_vertices": head.n_vertices}
        for name in cfg.ablations:
            if name not in ABLATIONS:
                raise ValueError(f"unknown ablation {name!r}; choose from {sorted(ABLATIONS)}")
            overrides.update(ABLATIONS[name])
        model = create_model(cfg.preset or "tiny", backbone_weights=cfg.backbone_weights, **overrides)
    for name in cfg.freeze:
        parts = ("lifting_front", "lifting_back") if name == "lifting" else (name,)
        for part in parts:
            if getattr(model, part, None) is not None:
                getattr(model, part).requires_grad_(False)
    model.head_id = head.id
    return model


def to_device(batch: dict, device) -> dict:
    """Tensors and FrameParams of a collated batch on ``device``."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, (torch.Tensor, FrameParams)) else v
            for k, v in batch.items()}


def sample_grid(batch: dict, out, path: Path, rows: int = 4) -> None:
    """PNG of rows of source | target | coarse | fine."""
    from gagavatar.io import resize_image, tensor_to_image, write_image_grid

    n = min(rows, out.fine.shape[0])
    resize = lambda x: resize_image(x[:n].float(), out.fine.shape[-1])  # noqa: E731
    cols = [resize(batch["source_image"]), resize(batch["target_image"]), out.coarse[:n].float(), out.fine[:n].float()]
    write_image_grid([[tensor_to_image(col[i]) for col in cols] for i in range(n)], path,
                     column_labels=["source", "target", "coarse", "fine"])


def plot_losses(metrics_path: Path, out_path: Path, score: str = "psnr", title: str = "PSNR (dB)") -> None:
    """loss.png: every logged loss term against the step (log scale), and a score (default
    PSNR): the training batches' and any evaluation's (e.g. held-out frames)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()] \
        if metrics_path.is_file() else []
    train = [r for r in rows if "loss" in r]
    evaluated = [r for r in rows if "loss" not in r]
    if not train:
        return
    scored = any(score in k for r in rows for k in r)  # a run without one (no --eval) gets no empty panel
    fig, axes = plt.subplots(1, 1 + scored, figsize=(10 if scored else 5.5, 3.5), squeeze=False)
    axes = axes[0]
    for k in sorted({k for r in train for k in r if k.startswith("loss")}):
        axes[0].plot([r["step"] for r in train if k in r], [r[k] for r in train if k in r], label=k)
    axes[0].set_yscale("log"), axes[0].set_xlabel("step"), axes[0].legend(fontsize=7)
    if scored:
        if any(score in r for r in train):
            axes[1].plot([r["step"] for r in train if score in r], [r[score] for r in train if score in r],
                         label="train batches")
        for k in sorted({k for r in evaluated for k in r if score in k}):
            axes[1].plot([r["step"] for r in evaluated if k in r], [r[k] for r in evaluated if k in r], "o-",
                         label=k)
        axes[1].set_title(title), axes[1].set_xlabel("step"), axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_path, dpi=80)
    plt.close(fig)


def export_model(checkpoint: str | Path, out: str | Path) -> Path:
    """Write the network of a training checkpoint (``RUN/step_XXXXXX.pt``, or the newest in a
    run folder) as a model file that ``gagavatar.load`` reads."""
    from gagavatar.model import save

    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():
        found = latest_checkpoint(checkpoint)
        if found is None:
            raise FileNotFoundError(f"no step_*.pt checkpoint in {checkpoint}")
        checkpoint = found
    cfg = TrainConfig.from_json((checkpoint.parent / "config.json").read_text())
    model = build_model(cfg, load_head_model(cfg.head_model))
    model.load_state_dict(read_training_state(checkpoint)["model"])
    return save(model, out)


# Non-finite losses in a row that mean the run has diverged (an odd one is skipped and training goes on)
MAX_BAD_STEPS = 10


def diverged(run: Path, step: int, why: str) -> NonFiniteError:
    """The one line that stops a diverged run: what went wrong and the checkpoint that is kept."""
    last = latest_checkpoint(run)
    keep = (f"the last good checkpoint, {last}, is kept: continue from it with --resume and a lower --lr" if last
            else "no checkpoint was written; start again with a lower --lr")
    return NonFiniteError(f"training diverged at step {step}: {why}; {keep}")


def check_parameters(model, run: Path, step: int) -> None:
    """Before a checkpoint is written: weights with NaN or Inf are never saved over good ones."""
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            raise diverged(run, step, f"the weights {name} hold NaN or Inf")


def _say(line: str, style: str | None = None) -> None:
    """One line as it is: never wrapped (rich wraps at 80 columns off a terminal), no markup in paths."""
    console.print(line, style=style, soft_wrap=True, markup=False, highlight=False)


def train(cfg: TrainConfig, resume: bool = False, overwrite: bool = False, evaluate=None) -> Path:
    """Run (or resume) training; returns the run folder.

    A folder that holds another run is refused unless ``resume`` (continue it from its
    newest intact checkpoint; its metrics after that step are dropped) or ``overwrite``
    (its files are deleted first: ``state.clear_run``). ``cfg.init`` starts from a
    checkpoint's weights with a fresh optimizer (``resume`` continues this run instead).
    ``evaluate(model) -> {name: value}`` (e.g. held-out PSNR) runs at every checkpoint on
    rank 0; its values go into metrics.jsonl and the progress bar."""
    from gagavatar.data.pairs import PairDataset, collate
    from gagavatar.io import check_writable
    from gagavatar.model import save

    cfg.validate()
    check_run_folder(cfg, resume, overwrite)
    ctx = Distributed()
    run = Path(cfg.out)
    if ctx.is_main:
        check_writable(run / "config.json")  # an unwritable or full --out fails now, not at the first checkpoint
    torch.manual_seed(cfg.seed)
    head = load_head_model(cfg.head_model).to(ctx.device)
    model = build_model(cfg, head).to(ctx.device)
    size = model.config.render_size
    dataset = PairDataset(cfg.data, split="train", mode="self", size=size, seed=cfg.seed,
                          length=cfg.max_steps * cfg.batch_size * ctx.world_size, frames=cfg.frames)
    optimizer, scheduler = make_optimizer(model, cfg)
    loss_fn = GAGAvatarLoss(cfg.loss, load_perceptual(cfg.perceptual_weights, model)).to(ctx.device)
    use_lifting = "no_lifting_loss" not in cfg.ablations
    if ctx.is_main:  # the inputs are read: only now is there a run folder (a refused command leaves none)
        run.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(run)  # temporary files of a run killed mid-write
        if overwrite:
            removed = clear_run(run)
            if removed:
                _say(f"--overwrite: deleted {len(removed)} file(s) of the previous run in {run}")
    ctx.barrier()

    start, spent = 0, 0.0  # spent: seconds trained before this process (a resumed run's budget is the rest)
    say = (lambda line: _say(line, "yellow")) if ctx.is_main else (lambda line: None)
    last, state, damaged = resume_checkpoint(run, say) if resume else (None, None, [])
    if resume and last is None:
        console.print(f"[yellow]--resume: no checkpoint in {run}, starting from step 0[/yellow]")
    if last is not None:
        restore_training_state(state, model, optimizer, scheduler)
        start, spent = state["step"], float(state["extra"].get("seconds", 0.0))
        console.print(f"Resumed from {last} at step {start} ({spent / 60:.1f} min trained)")
    ctx.barrier()  # every rank has read the checkpoints before rank 0 renames the damaged ones
    if ctx.is_main:
        set_aside(damaged)
        if resume:
            truncate_metrics(run / "metrics.jsonl", start)  # the rows after it are being redone
        if last is None:
            mark_run(run)
            with atomic_path(run / "config.json") as tmp:  # what this run is, and what it started from
                tmp.write_text(dataclasses.replace(cfg, preset=model.config.name).to_json())

    net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[ctx.local_rank] if ctx.device.type == "cuda" else None) \
        if ctx.enabled else model
    sampler = StepBatchSampler(len(dataset), cfg.batch_size, start, cfg.max_steps, cfg.seed, ctx.rank, ctx.world_size)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.num_workers, collate_fn=collate,
                        persistent_workers=cfg.num_workers > 0)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.bf16 and ctx.device.type == "cuda")
    metrics_path, writer = run / "metrics.jsonl", None
    if ctx.is_main:
        try:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step: on resume, TensorBoard drops the events after the resumed step
            writer = SummaryWriter(str(run / "tb"), purge_step=start + 1 if resume else None)
        except ImportError:
            pass

    from tqdm import tqdm

    model.train()
    step, skipped, t0, scores, bad_in_a_row = start, 0, time.perf_counter(), {}, 0

    def trained() -> float:  # seconds of training, a resumed run's earlier ones too
        return spent + time.perf_counter() - t0

    out_of_time = cfg.max_minutes is not None and spent >= cfg.max_minutes * 60  # a finished run is not trained on
    bar = tqdm(total=cfg.max_steps, initial=start, disable=not ctx.is_main, desc="train", dynamic_ncols=True)
    try:
        for batch in loader:
            if out_of_time:
                break
            batch = to_device(batch, ctx.device)
            with torch.no_grad():
                vertices = batch["target"].vertices(head)
            with autocast:
                out = net(batch["source_image"], batch["source"].camera, vertices, batch["target"].camera)
            vertices = out.vertices if use_lifting else None
            loss, terms = loss_fn(out.coarse.float(), out.fine.float(), batch["target_image"], batch["target_bbox"],
                                  vertices, out.lifted_points.float())
            optimizer.zero_grad(set_to_none=True)
            # a rank that skipped backward alone would leave the others waiting in the gradient all-reduce
            if not ctx.all_true(torch.isfinite(loss)):
                skipped, bad_in_a_row = skipped + 1, bad_in_a_row + 1
                console.print(f"[red]step {step}: loss is {loss.item()} (on this or another rank), step skipped "
                              f"({skipped} so far)[/red]")
            else:
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(),
                                                           cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
                if torch.isfinite(grad_norm):
                    optimizer.step()
                    bad_in_a_row = 0
                else:
                    skipped, bad_in_a_row = skipped + 1, bad_in_a_row + 1
                    console.print(f"[red]step {step}: gradient norm is {grad_norm.item()}, step skipped[/red]")
            if bad_in_a_row >= MAX_BAD_STEPS:
                raise diverged(run, step + 1, f"the loss or its gradient was NaN or Inf for {bad_in_a_row} steps in a "
                                              f"row")
            scheduler.step()
            step += 1
            # a time budget ends the run where a step count would (every rank stops at the same step)
            out_of_time = cfg.max_minutes is not None and ctx.all_true(torch.tensor(trained() > cfg.max_minutes * 60))
            last_step = step == cfg.max_steps or out_of_time
            if cfg.max_minutes is not None:  # the bar's end: the steps the time left allows at this pace
                pace = (step - start) / (time.perf_counter() - t0)
                bar.total = min(cfg.max_steps, step + int((cfg.max_minutes * 60 - trained()) * pace))

            # no checkpoint of a step that was skipped: keep-last would delete good ones for copies of them
            checkpoint_now = (step % cfg.checkpoint_every == 0 or last_step) and not bad_in_a_row
            if checkpoint_now:
                check_parameters(model, run, step)  # every rank: they hold the same weights
            if ctx.is_main:
                with output_errors(metrics_path):  # a full disk: one line naming the device
                    train_psnr = psnr(out.fine.detach().float(), batch["target_image"]).mean().item()
                    if evaluate is not None and (step % cfg.checkpoint_every == 0 or last_step):
                        scores = evaluate(model)
                        model.train()
                        with open(metrics_path, "a") as f:
                            f.write(json.dumps({"step": step, **scores}) + "\n")
                    bar.set_postfix(loss=f"{loss.item():.4f}", psnr=f"{train_psnr:.2f}",
                                    **{k: f"{v:.2f}" for k, v in scores.items()})
                    bar.update(1)
                    if step % cfg.log_every == 0 or last_step:
                        row = {"step": step, "loss": loss.item(), "psnr": train_psnr, "lr": scheduler.get_last_lr()[0],
                               "it_per_s": (step - start) / (time.perf_counter() - t0), "skipped": skipped,
                               **{f"loss_{k}": v.item() for k, v in terms.items()}}
                        with open(metrics_path, "a") as f:
                            f.write(json.dumps(row) + "\n")
                        if writer is not None:
                            for k, v in row.items():
                                if k != "step":
                                    writer.add_scalar(k, v, step)
                    if step % cfg.sample_every == 0 or last_step:
                        sample_grid(batch, out, run / "samples" / f"step_{step:06d}.png")
                    if checkpoint_now:
                        save_training_state(run, step, model, optimizer, scheduler, extra={"seconds": trained()},
                                            keep_last=cfg.keep_last)
                        plot_losses(metrics_path, run / "loss.png")
            if checkpoint_now:
                ctx.barrier()  # other ranks wait while rank 0 writes
            if out_of_time:
                break
    finally:
        bar.close()  # before any error message, so it starts on a line of its own
    if ctx.is_main and (step >= cfg.max_steps or out_of_time):
        save(model, run / "model.safetensors")
        console.print(f"Done: {step} steps, {skipped} skipped; model at {run / 'model.safetensors'}")
    if ctx.enabled:
        dist.destroy_process_group()
    return run
