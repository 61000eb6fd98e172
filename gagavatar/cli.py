"""The ``gagavatar`` command line. Commands import their implementation lazily,
so ``gagavatar --help`` stays fast."""
from __future__ import annotations

import typer

from gagavatar.bench import app as bench_app

app = typer.Typer(help="GAGAvatar: one photo in, an animatable 3D Gaussian head avatar out.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False)
app.add_typer(bench_app, name="bench")


@app.command()
def train(
    data: str = typer.Option(..., help="dataset folder (docs/data-format.md)"),
    out: str = typer.Option(..., help="run folder: checkpoints, samples, metrics, model.safetensors"),
    preset: str = typer.Option("tiny", help="model preset: tiny, small or paper"),
    resume: bool = typer.Option(False, help="continue from the newest checkpoint in --out"),
    max_steps: int = typer.Option(200_000, help="total optimisation steps"),
    batch_size: int = typer.Option(8, help="samples per step and process"),
    lr: float = typer.Option(1e-4, help="Adam learning rate (refiner style MLP / final linear at 0.1x)"),
    lr_decay_steps: int = typer.Option(200_000, help="steps of the linear decay to 0.1x"),
    ablation: list[str] = typer.Option([], help="one_plane, no_fid, no_refiner, no_lifting_loss (repeatable)"),
    perceptual_weights: str = typer.Option(None, help="GAGAvatar.pt (or converted .safetensors) for the perceptual loss"),
    backbone_weights: str = typer.Option(None, help="DINOv2 .pth or GAGAvatar.pt for the frozen ViT"),
    head_model: str = typer.Option(None, help="FLAME-format head model (default: bundled synthetic head)"),
    checkpoint_every: int = typer.Option(500, help="steps between checkpoints"),
    keep_last: int = typer.Option(3, help="checkpoints kept"),
    sample_every: int = typer.Option(250, help="steps between sample grids"),
    num_workers: int = typer.Option(0, help="DataLoader worker processes"),
    seed: int = typer.Option(0, help="seed of the model init and the sample order"),
):
    """Train a GAGAvatar network (under torchrun for several GPUs or nodes)."""
    from gagavatar.train.trainer import TrainConfig
    from gagavatar.train.trainer import train as run_training

    cfg = TrainConfig(data=data, out=out, preset=preset, ablations=tuple(ablation), max_steps=max_steps,
                      batch_size=batch_size, lr=lr, lr_decay_steps=lr_decay_steps,
                      perceptual_weights=perceptual_weights, backbone_weights=backbone_weights,
                      head_model=head_model, checkpoint_every=checkpoint_every, keep_last=keep_last,
                      sample_every=sample_every, num_workers=num_workers, seed=seed)
    run_training(cfg, resume=resume)


@app.command("convert-official")
def convert_official(checkpoint: str = typer.Argument(..., help="the released GAGAvatar.pt"),
                     out: str = typer.Option("gagavatar_paper.safetensors", "-o", "--out",
                                             help="where to write the converted checkpoint")):
    """Convert the released GAGAvatar.pt into a gagavatar safetensors checkpoint.

    All 597 tensors are checked against the reference listing; the 36 perceptual-loss
    tensors (VGG-Face + AlexNet) are kept. Load the result with ``gagavatar.load``.
    """
    from gagavatar.model.official import convert_official as _convert

    path = _convert(checkpoint, out)
    typer.echo(f"wrote {path}")


@app.command()
def synth(
    out: str = typer.Option(..., help="dataset folder to write (docs/data-format.md)"),
    identities: int = typer.Option(8, help="number of synthetic people"),
    videos_per_identity: int = typer.Option(2, help="videos (motion, light, background) per person"),
    frames: int = typer.Option(32, help="frames per video"),
    size: int = typer.Option(128, help="frame size in pixels (square)"),
    seed: int = typer.Option(0, help="everything is a function of this seed"),
    splits: str = typer.Option("0.8,0.1,0.1", help="train,val,test fractions of the identities"),
    frame_format: str = typer.Option("png", help="png, jpg or mp4"),
    gaussians: int = typer.Option(None, help="Gaussians per person (default: from --size)"),
    workers: int = typer.Option(0, help="processes (0: one per CPU core)"),
):
    """Render synthetic talking-head videos (and a contact sheet per split)."""
    import os

    from gagavatar.synthetic.video import SynthConfig, generate

    try:
        fractions = tuple(float(x) for x in splits.split(","))
        if len(fractions) != 3:
            raise ValueError
    except ValueError:
        raise typer.BadParameter(f"--splits must be three comma-separated fractions, got {splits!r}")
    generate(out, SynthConfig(identities=identities, videos_per_identity=videos_per_identity, frames=frames,
                              size=size, seed=seed, splits=fractions, frame_format=frame_format,
                              n_gaussians=gaussians, workers=workers or os.cpu_count() or 1))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
