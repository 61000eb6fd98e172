"""The ``gagavatar`` command line. Commands import their implementation lazily, so
``gagavatar --help`` answers without importing torch.

Errors a user can fix (a missing or unreadable file, a bad option, a wrong checkpoint,
no face, a full disk) are printed as one line naming the problem and the fix, with exit
status 1; ``--debug`` shows the traceback instead. ``--verbose`` lets the libraries
(MediaPipe, TensorFlow Lite) print their own logs.
"""
from __future__ import annotations

import inspect
import os
import signal
import time
from pathlib import Path

import typer
from typer.core import TyperGroup

from gagavatar.bench import app as bench_app
from gagavatar.serve.config import ServeConfig
from gagavatar.settings import checked, command_options
from gagavatar.train.config import TrainConfig
from gagavatar.train.personalize_config import PersonalizeConfig
from gagavatar.train.speech_config import SpeechTrainConfig
from gagavatar.system import MissingExtra, check_device, usable_cores
from gagavatar.tracking.framing import check_crop_size

# Errors a user can fix: shown as one line, never as a traceback (FileNotFoundError,
# PermissionError and disk-full errors are OSErrors; bad inputs are ValueErrors; an optional
# part that is not installed is a MissingExtra naming the pip command).
USER_ERRORS = (ValueError, OSError, KeyError, MissingExtra)
# An option refused where it is parsed (its type, its min / max, a settings check): click's
# UsageError, whichever click typer uses
_USAGE_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


class _Commands(TyperGroup):
    """Every command's user errors, handled in one place: one line each, exit status 1 (2 for an
    option refused where it is parsed)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except _USAGE_ERROR as e:
            if os.environ.get("GAGAVATAR_DEBUG"):
                raise
            where = e.ctx.command_path if e.ctx is not None else "gagavatar"
            message = " ".join(e.format_message().split())
            typer.secho(f"error: {message} ({where} --help lists the options)", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from None
        except USER_ERRORS as e:
            if os.environ.get("GAGAVATAR_DEBUG"):
                raise
            message = " ".join(str(e.args[0] if isinstance(e, KeyError) and e.args else e).split())
            typer.secho(f"error: {message or type(e).__name__}", fg=typer.colors.RED, err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            if os.environ.get("GAGAVATAR_DEBUG"):
                raise
            typer.secho("interrupted", err=True)
            raise typer.Exit(130) from None


app = typer.Typer(cls=_Commands, help="GAGAvatar: one photo in, an animatable 3D Gaussian head avatar out.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False)
app.add_typer(bench_app, name="bench")


@app.callback()
def _options(debug: bool = typer.Option(False, "--debug", help="show tracebacks instead of one-line errors"),
             verbose: bool = typer.Option(False, "--verbose", help="let MediaPipe / TensorFlow Lite print their logs")):
    from gagavatar.system import default_threads_for_commands

    default_threads_for_commands()  # torch is not loaded yet (commands import it when they run)
    if debug:
        os.environ["GAGAVATAR_DEBUG"] = "1"
    if verbose:
        os.environ["GAGAVATAR_VERBOSE"] = "1"


def _inputs_exist(*paths) -> None:
    """The files a command reads, checked before any model loads (None: not given)."""
    for path in paths:
        if path is not None and not Path(path).exists():
            raise FileNotFoundError(f"{path}: no such file or folder")


def _done(what: str, t0: float) -> None:
    """The last line of a command: what it wrote, and how long it took."""
    typer.echo(f"{what} ({time.perf_counter() - t0:.1f} s)")


def _notice_bundled(animator) -> None:
    """Say once, first, what the bundled model is when it is the one in use."""
    from gagavatar.reenact import BUNDLED_MODEL_NOTE

    if animator.uses_bundled_model:
        typer.secho(BUNDLED_MODEL_NOTE, fg=typer.colors.YELLOW, err=True)


@app.command()
@command_options(TrainConfig)
def train(config,
          frames: str = typer.Option(None, help="START:STOP: train on these frames of each video only (holds out "
                                                "the rest)"),
          model: list[str] = typer.Option([], help="preset override KEY=VALUE, e.g. plane_size=32 (repeatable)"),
          resume: bool = typer.Option(False, help="continue from the newest checkpoint in --out"),
          overwrite: bool = typer.Option(False, help="start again in an --out that holds another run: deletes that "
                                                     "run's checkpoints, model, metrics, samples and config first")):
    """Train a GAGAvatar network (under torchrun for several GPUs or nodes)."""
    from dataclasses import replace

    from gagavatar import io as gio
    from gagavatar.train.trainer import train as run_training

    c = replace(config, frames=_range(frames), model=_overrides(model))
    gio.check_output_folder(c.out, inputs=(c.data, c.init, c.head_model, c.perceptual_weights, c.backbone_weights))
    run_training(c, resume=resume, overwrite=overwrite)


def _range(text: str | None) -> tuple[int, int] | None:
    """"START:STOP" -> (START, STOP)."""
    if text is None:
        return None
    start, sep, stop = text.partition(":")
    try:
        return int(start), int(stop)
    except ValueError:
        raise typer.BadParameter(f"give frames as START:STOP (e.g. 0:200), got {text!r}") from None


def _overrides(items: list[str]) -> dict:
    """``["plane_size=32", "fid_token=cls"]`` -> ``{"plane_size": 32, "fid_token": "cls"}`` (JSON values, else text)."""
    import json

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--model takes KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


@app.command()
@command_options(PersonalizeConfig)
def personalize(config):
    """Fine-tune the one-shot network on a video of one person; reports held-out PSNR before and after.
    Interrupted, it continues where it stopped when run again."""
    from gagavatar.train.personalize import personalize as run

    t0 = time.perf_counter()
    report = run(config, say=lambda line: typer.echo(line, err=True))
    out = Path(config.out)
    _done(f"wrote {out}, {out.with_suffix('.json')}, {report['contact_sheet']}", t0)


@app.command("convert-official")
def convert_official(checkpoint: str = typer.Argument(..., help="the released GAGAvatar.pt"),
                     out: str = typer.Option("gagavatar_paper.safetensors", "-o", "--out",
                                             help="where to write the converted checkpoint")):
    """Convert the released GAGAvatar.pt into a gagavatar safetensors checkpoint.

    All 597 tensors are checked against the reference listing; the 36 perceptual-loss
    tensors (VGG-Face + AlexNet) are kept. Load the result with ``gagavatar.load``.
    """
    from gagavatar.model.official import convert_official as _convert

    from gagavatar import io as gio

    t0 = time.perf_counter()
    gio.check_output(out, inputs=(checkpoint,), suffixes=(".safetensors",))
    _done(f"wrote {_convert(checkpoint, out)}", t0)


@app.command()
def synth(
    out: str = typer.Option(..., help="dataset folder to write (docs/data-format.md)"),
    identities: int = typer.Option(8, help="number of synthetic people"),
    videos_per_identity: int = typer.Option(2, help="videos (motion, light, background) per person"),
    frames: int = typer.Option(32, help="frames per video"),
    fps: float = typer.Option(25.0, help="frame rate: lower spreads the frames over a longer clip (more motion apart)"),
    size: int = typer.Option(128, help="frame size in pixels (square)"),
    seed: int = typer.Option(0, help="everything is a function of this seed", min=0),
    splits: str = typer.Option("0.8,0.1,0.1", help="train,val,test fractions of the identities"),
    frame_format: str = typer.Option("png", help="png, jpg or mp4"),
    gaussians: int = typer.Option(None, help="Gaussians per person (default: from --size)"),
    workers: int = typer.Option(0, help="processes (0: one per CPU core)", min=0),
):
    """Render synthetic talking-head videos (and a contact sheet per split)."""
    from gagavatar.synthetic.video import SynthConfig, generate

    try:
        fractions = tuple(float(x) for x in splits.split(","))
        if len(fractions) != 3:
            raise ValueError
    except ValueError:
        raise typer.BadParameter(f"--splits must be three comma-separated fractions, got {splits!r}")
    t0 = time.perf_counter()
    dataset = generate(out, SynthConfig(identities=identities, videos_per_identity=videos_per_identity, frames=frames,
                                        fps=fps, size=size, seed=seed, splits=fractions, frame_format=frame_format,
                                        n_gaussians=gaussians, workers=workers or usable_cores()))
    _done(f"wrote {dataset.root}: {len(dataset)} videos", t0)


@app.command()
def track(
    input: str = typer.Argument(..., help="an image, a folder of images (one video's frames), or a video file"),
    out: str = typer.Option(..., "--out", help="dataset folder to write (docs/data-format.md)"),
    head_model: str = typer.Option(None, help="FLAME-format head model file (default: the bundled synthetic head)"),
    landmark_embedding: str = typer.Option(None, help="MediaPipe landmark embedding for --head-model "
                                                      "(FLAME's mediapipe_landmark_embedding.npz)"),
    size: int = typer.Option(512, help="side of the stored square crops (the released model uses 512)",
                             callback=checked(check_crop_size)),
    smooth: float = typer.Option(0.0, help="smooth head pose and eyes over time (0 off, 1 = reference smoothed.pkl)"),
    reference_format: bool = typer.Option(False, help="also write optim.pkl, smoothed.pkl and img_lmdb "
                                                      "as the reference tracker (GAGAvatar_track) lays them out"),
    overlay: bool = typer.Option(True, help="write overlay.mp4 / overlay.jpg of the fitted mesh and landmarks"),
    fps: float = typer.Option(None, help="decode a video at this frame rate (default: its own average rate; a "
                                         "variable-rate phone clip is resampled on its timestamps)", min=1, max=240),
):
    """Track faces: landmarks, the reference's framing and matte, head model and camera per frame."""
    from gagavatar.tracking.tracker import track as run_track

    from gagavatar.head import load_head_model

    t0 = time.perf_counter()
    summary = run_track(input, out, head_model=load_head_model(head_model, landmark_embedding), size=size,
                        smooth=smooth, reference_format=reference_format, overlay=overlay, decode_fps=fps)
    typer.echo("\n".join(summary.lines()))
    _done(f"wrote {summary.video_dir}", t0)


@app.command("build-dataset")
def build_dataset(
    inputs: list[str] = typer.Argument(..., help="a folder tree of videos and image folders (one folder of images "
                                                 "= one clip), or a list file (one path per line, optionally a tab "
                                                 "or comma and the identity); with --merge: the shard datasets"),
    out: str = typer.Option(..., "--out", help="dataset folder to write (docs/data-format.md)"),
    identity_level: int = typer.Option(None, help="the N-th folder of a clip's path below INPUT (1 = the top one) "
                                                  "names the person", min=1),
    identity_map: str = typer.Option(None, help="file of 'CLIP<TAB>IDENTITY' lines (CLIP: path relative to INPUT)"),
    splits: str = typer.Option("0.9,0.05,0.05", help="train,val,test fractions of the identities"),
    seed: int = typer.Option(0, help="seed of the identity -> split hash", min=0),
    workers: int = typer.Option(1, help="tracking processes (0: in this process)", min=0),
    threads: int = typer.Option(None, help="threads per worker (default: usable cores / workers)", min=1),
    shard: str = typer.Option(None, help="K/N: track only part K (0..N-1) of N of the clips, into its own --out"),
    retry_failed: bool = typer.Option(False, help="track clips that failed in an earlier run again"),
    size: int = typer.Option(512, help="side of the stored square crops (the released model uses 512)",
                             callback=checked(check_crop_size)),
    frame_format: str = typer.Option("jpg", help="jpg, png or mp4"),
    smooth: float = typer.Option(0.0, help="smooth head pose and eyes over time (0 off, 1 = reference smoothed.pkl)"),
    overlay: bool = typer.Option(False, help="also write each clip's overlay.mp4 of the fit"),
    head_model: str = typer.Option(None, help="FLAME-format head model file (default: the bundled synthetic head)"),
    landmark_embedding: str = typer.Option(None, help="MediaPipe landmark embedding for --head-model"),
    merge: bool = typer.Option(False, "--merge", help="merge the shard datasets given as INPUTS into --out"),
    move: bool = typer.Option(False, help="with --merge: move the shards' video folders instead of copying them"),
):
    """Track every clip of a folder tree (or list) into one dataset: parallel, resumable, shardable."""
    from gagavatar import io as gio
    from gagavatar.tracking import build
    from gagavatar.tracking.merge import merge_datasets

    gio.check_output_folder(out)  # not a file (it may lie in the input tree: find_clips leaves it out)
    if merge:
        summary = merge_datasets(inputs, out, move=move)
    else:
        if len(inputs) != 1:
            raise ValueError(f"give one INPUT (a folder or a list file), got {len(inputs)}; "
                             f"to combine shard datasets add --merge")
        config = build.BuildConfig(size=size, frame_format=frame_format, smooth=smooth, overlay=overlay,
                                   head_model=head_model, landmark_embedding=landmark_embedding,
                                   splits=build.parse_fractions(splits), seed=seed, workers=workers,
                                   threads=threads, retry_failed=retry_failed)
        clips = build.find_clips(inputs[0], identity_map, identity_level, exclude=(out,))
        summary = build.build_dataset(clips, out, config, shard=build.parse_shard(shard) if shard else None,
                                      input=inputs[0])
    typer.echo("\n".join(summary.lines()))
    if not merge and summary.clips and summary.tracked + summary.skipped == 0:  # a script must not take it for a dataset
        raise ValueError(f"none of the {summary.clips} clip(s) could be tracked (the reasons above, all in "
                         f"{Path(out) / 'build_report.json'}): no dataset was made")


_CHECKPOINT = typer.Option(None, help="checkpoint: ours (.safetensors) or the released GAGAvatar.pt "
                                      "(default: the bundled tiny model)")
_HEAD = typer.Option(None, help="FLAME-format head model file (default: the bundled synthetic head)")


def _color(text: str) -> tuple[float, float, float]:
    from gagavatar.reenact import parse_color

    try:
        return parse_color(text)
    except ValueError as e:
        raise typer.BadParameter(str(e))


def _controls(transfer, relative, expression_scale, jaw_scale, eye_scale, stabilize):
    """The motion controls of the options, a refused one as a usage error (as one refused where parsed)."""
    from gagavatar.reenact import MotionControls

    try:
        return MotionControls(transfer=transfer, relative=relative, expression_scale=expression_scale,
                              jaw_scale=jaw_scale, eye_scale=eye_scale, stabilize=stabilize)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None


def _animator(checkpoint, head_model, background=(0.0, 0.0, 0.0)):
    from gagavatar.reenact import Animator

    animator = Animator.load(checkpoint, head_model, background=background)
    _notice_bundled(animator)
    return animator


@app.command()
def reenact(
    source: str = typer.Option(..., help="source photo, or a tracked folder"),
    driver: str = typer.Option(..., help="driving video, folder of images, or a tracked folder"),
    out: str = typer.Option("reenact.mp4", help="output mp4 (H.264)"),
    checkpoint: str = _CHECKPOINT,
    head_model: str = _HEAD,
    side_by_side: bool = typer.Option(False, help="put the driver beside the result"),
    transfer: str = typer.Option("all", help="all | expression (keep source pose) | pose (keep source expression)"),
    relative: bool = typer.Option(False, help="motion relative to the driver's first frame"),
    expression_scale: float = typer.Option(1.0, help="multiplier on the driver's expression"),
    jaw_scale: float = typer.Option(1.0, help="multiplier on the driver's jaw rotation"),
    eye_scale: float = typer.Option(1.0, help="multiplier on the driver's eye rotation"),
    stabilize: float = typer.Option(0.0, help="smooth head pose and eyes (0 off, 1 = reference smoothing)"),
    background: str = typer.Option("0,0,0", help="background colour behind the avatar: R,G,B (0-255) or #rrggbb"),
):
    """Animate the source's avatar with the driver's expressions and head motion."""
    from gagavatar import commands

    controls = _controls(transfer, relative, expression_scale, jaw_scale, eye_scale, stabilize)
    _inputs_exist(source, driver)
    commands.check_video_output(out, source, driver, checkpoint, head_model)  # before the model loads
    summary = commands.reenact(source, driver, out, _animator(checkpoint, head_model, _color(background)),
                               side_by_side_view=side_by_side, controls=controls)
    typer.echo(str(summary))


@app.command()
def speak(
    source: str = typer.Option(..., help="source photo, or a tracked folder"),
    audio: str = typer.Option(None, help="the speech: a sound file (wav, mp3, m4a, flac) or a video with sound"),
    text: str = typer.Option(None, help="or words to say, spoken offline by espeak-ng"),
    out: str = typer.Option("talk.mp4", help="output mp4 (H.264 + the speech as AAC), 25 frames per second"),
    speech_model: str = typer.Option(None, help="ARTalk_wav2vec.pt (FLAME) or a train-speech model (default: the "
                                                "bundled demonstration voice, for the bundled head)"),
    style: str = typer.Option(None, help="a speaking style: ARTalk's style_motion/*.pt ([50, 106] motion)"),
    checkpoint: str = _CHECKPOINT,
    head_model: str = typer.Option(None, help="FLAME-format head model: the speech model speaks FLAME "
                                              "(generic_model.pkl, FLAME 2020)"),
    motion_out: str = typer.Option(None, help="also write the motion (.npz) for `reenact --driver`"),
    expression_scale: float = typer.Option(1.0, help="multiplier on the spoken expression"),
    jaw_scale: float = typer.Option(1.0, help="multiplier on the jaw's opening"),
    fix_pose: bool = typer.Option(False, help="keep the head still (no head motion from the speech)"),
    stabilize: float = typer.Option(0.0, help="smooth the head's motion (0 off, 1 = reference smoothing)"),
    background: str = typer.Option("0,0,0", help="background colour behind the avatar: R,G,B (0-255) or #rrggbb"),
):
    """Make a photo talk: speech (a recording or text) -> lips, jaw, expression and head motion (ARTalk)."""
    from gagavatar import commands
    from gagavatar import io as gio
    from gagavatar.reenact import Speaker
    from gagavatar.reenact.speaker import BUNDLED_VOICE_NOTE

    controls = _controls("all", False, expression_scale, jaw_scale, 1.0, stabilize)
    # what can be refused at once is, before any model loads: the outputs, the speech, the speech model
    _inputs_exist(source)
    commands.check_video_output(out, source, audio, speech_model, style, checkpoint, head_model)
    if motion_out is not None:
        gio.check_output(motion_out, inputs=(source, audio, out), suffixes=(".npz",))
    samples = gio.read_speech(audio, text, gio.SPEECH_RATE)  # every speech model here takes 16 kHz
    animator = _animator(checkpoint, head_model, _color(background))
    speaker = Speaker.load(speech_model, style, fix_pose, head=animator.head)
    if speaker.is_bundled:
        typer.secho(BUNDLED_VOICE_NOTE, fg=typer.colors.YELLOW, err=True)
    summary = commands.speak(source, out, animator, speaker, samples, controls=controls, motion_out=motion_out,
                             recording=audio)
    typer.echo(str(summary) + (f"; motion in {motion_out}" if motion_out else ""))


@app.command("synth-speech")
def synth_speech(
    out: str = typer.Option(..., help="folder to write: train.npz, heldout.npz (speech clips), a sample and a plot"),
    clips: int = typer.Option(240, help="training clips", min=1, max=100_000),
    held_out: int = typer.Option(40, help="held-out clips: voices and sentences training never has", min=1,
                                 max=100_000),
    seconds: float = typer.Option(10.0, help="seconds of speech per clip", min=1.0, max=600.0),
    seed: int = typer.Option(0, help="everything is a function of this seed"),
):
    """Synthetic talking clips for the bundled head: espeak-ng speaks generated sentences in many
    voices, its phoneme timings move the mouth (visemes, coarticulation), with blinks and nods."""
    from gagavatar.speech.synthetic import write_speech_clips

    t0 = time.perf_counter()
    written = write_speech_clips(out, clips, held_out, seconds, seed)
    _done(f"wrote {', '.join(str(p) for p in written)}", t0)


@app.command("train-speech")
@command_options(SpeechTrainConfig)
def train_speech(config, resume: bool = typer.Option(False, help="continue the run in --out from its newest "
                                                                 "checkpoint"),
                 overwrite: bool = typer.Option(False, help="delete the run in --out and start again"),
                 eval_data: str = typer.Option(None, "--eval", help="held-out clips (.npz or dataset) scored at "
                                                                   "every checkpoint: lip vertex error")):
    """Train a speech -> motion model (ARTalk's codec, then its generator) on talking clips."""
    from gagavatar.train.speech import held_out_evaluation, train_speech as run

    t0 = time.perf_counter()
    run_dir = run(config, resume=resume, overwrite=overwrite,
                  evaluate=None if eval_data is None else held_out_evaluation(eval_data, config.head_model))
    _done(f"trained {run_dir / 'speech_model.safetensors'}", t0)


@app.command("eval-speech")
def eval_speech(
    data: str = typer.Option(..., help="talking clips with sound: a dataset folder (build-dataset) or a clips .npz "
                                       "(synth-speech)"),
    out: str = typer.Option(..., help="report folder: metrics.json, report.md, mouth_opening.png"),
    speech_model: str = typer.Option(None, help="the model to score (ARTalk_wav2vec.pt or a train-speech model); "
                                                "none: the baselines alone"),
    split: str = typer.Option("test", help="the dataset split to score (a clips file is scored whole)"),
    fit_data: str = typer.Option(None, help="clips the baselines are fitted on (mean motion, loudness gain): a "
                                            "clips .npz or a dataset's train split; default the scored clips"),
    head_model: str = _HEAD,
    landmark_embedding: str = typer.Option(None, help="landmark embedding for --head-model, which finds the lips "
                                                      "(FLAME's mediapipe_landmark_embedding.npz)"),
    raw: bool = typer.Option(False, help="score the model's raw motion (default: smoothed, as speak drives it)"),
):
    """Lip vertex error, mouth opening against loudness and upper-face dynamics of a speech
    model, beside no motion, mean motion and a jaw driven by loudness."""
    from gagavatar import io as gio
    from gagavatar.head import load_head_model
    from gagavatar.speech.data import read_clips
    from gagavatar.speech.evaluate import evaluate_speech, model_predictor, table, write_report

    t0 = time.perf_counter()
    gio.check_writable(Path(out) / "metrics.json")
    head = load_head_model(head_model, landmark_embedding)
    model = None
    if speech_model is not None:
        from gagavatar.speech import load_speech_model

        model = load_speech_model(speech_model)
    dims = 100 if model is None else model.config.motion_dim - 6
    clips = read_clips(data, split, dims)
    fit = None if fit_data is None else read_clips(fit_data, "train", dims)
    result = evaluate_speech(None if model is None else model_predictor(model, smooth=not raw), clips, head, fit,
                             name=Path(speech_model).name if speech_model else "model")
    typer.echo(table(result))
    paths = write_report(result, out)
    _done(f"wrote {', '.join(str(p) for p in paths.values())}", t0)


@app.command("novel-views")
def novel_views(source: str = typer.Option(..., help="source photo, or a tracked folder"),
                out: str = typer.Option("orbit.mp4", help="output mp4"),
                checkpoint: str = _CHECKPOINT, head_model: str = _HEAD,
                frames: int = typer.Option(60, help="frames of the orbit", min=1),
                yaw: float = typer.Option(30.0, help="orbit half-angle in degrees")):
    """The reconstructed avatar seen from an orbiting camera."""
    from gagavatar import commands

    t0 = time.perf_counter()
    _inputs_exist(source)
    commands.check_video_output(out, source, checkpoint, head_model)  # before the model loads
    path = commands.novel_views(source, out, _animator(checkpoint, head_model), n_frames=frames, yaw=yaw)
    _done(f"wrote {path}: {frames} frames", t0)


@app.command("export-ply")
def export_ply(source: str = typer.Option(..., help="source photo, or a tracked folder"),
               out: str = typer.Option("avatar.ply", help="output .ply (3D Gaussian splatting layout)"),
               checkpoint: str = _CHECKPOINT, head_model: str = _HEAD):
    """Write the avatar's Gaussians as a PLY that splat viewers open."""
    from gagavatar import commands

    from gagavatar import io as gio

    t0 = time.perf_counter()
    _inputs_exist(source)
    gio.check_output(out, inputs=(source, checkpoint, head_model), suffixes=(".ply",))  # before the model loads
    _done(f"wrote {commands.export_ply(source, out, _animator(checkpoint, head_model))}", t0)


@app.command()
def live(
    source: str = typer.Option(..., help="source photo, or a tracked folder"),
    camera: int = typer.Option(0, help="webcam index (used when --driver is not given)", min=0),
    driver: str = typer.Option(None, help="drive from this video file (or a tracked folder) instead of a webcam"),
    out: str = typer.Option(None, help="also write the result to this mp4"),
    show: bool = typer.Option(True, help="show a window (skipped where there is no display)"),
    max_frames: int = typer.Option(None, help="stop after this many frames", min=1),
    checkpoint: str = _CHECKPOINT,
    head_model: str = _HEAD,
    transfer: str = typer.Option("all", help="all | expression | pose"),
    relative: bool = typer.Option(False, help="motion relative to the first driving frame"),
    expression_scale: float = typer.Option(1.0), jaw_scale: float = typer.Option(1.0),
    eye_scale: float = typer.Option(1.0), stabilize: float = typer.Option(0.0),
    background: str = typer.Option("0,0,0", help="background colour behind the avatar: R,G,B (0-255) or #rrggbb"),
    report_every: float = typer.Option(3.0, help="seconds between the FPS / latency lines", min=0.001),
):
    """Drive the avatar live from a webcam or a stream; prints FPS and latency as it runs. Without a
    display and without --out the result is written to live.mp4."""
    from gagavatar.live import live as run_live

    controls = _controls(transfer, relative, expression_scale, jaw_scale, eye_scale, stabilize)
    if out is not None:  # before the model loads
        from gagavatar.commands import check_video_output

        check_video_output(out, source, driver, checkpoint, head_model)
    stats = run_live(source, _animator(checkpoint, head_model, _color(background)), camera, driver, out, show,
                     controls=controls, max_frames=max_frames, report_every=report_every,
                     say=lambda line: typer.echo(line, err=True))
    typer.echo(str(stats))


@app.command()
def demo(out: str = typer.Option("demo", help="output folder"),
         checkpoint: str = _CHECKPOINT, head_model: str = _HEAD):
    """The built-in demo: bundled tiny model and clips -> reenactment, orbit, contact sheet."""
    from gagavatar import commands

    t0 = time.perf_counter()
    written = commands.demo(out, checkpoint, head_model)
    _done("wrote " + ", ".join(str(p) for p in written.values()), t0)


@app.command("import-reference")
def import_reference(
    folder: str = typer.Argument(..., help="a GAGAvatar_track output folder (optim.pkl / smoothed.pkl + img_lmdb)"),
    out: str = typer.Option(..., "--out", help="dataset folder to write (docs/data-format.md)"),
    use: str = typer.Option("auto", help="which parameters: auto (smoothed.pkl if present), smoothed or optim"),
    split: str = typer.Option("test", help="split of the videos (train, val, test) unless dataset.json says"),
    frame_format: str = typer.Option("png", help="png (lossless copy of the crops) or jpg"),
    head_model_name: str = typer.Option("flame2020", help="the head model the parameters belong to"),
):
    """Convert the reference tracker's output into this project's dataset format."""
    from gagavatar import io as gio
    from gagavatar.data.reference import import_reference as run_import

    gio.check_output_folder(out, inputs=(folder,))
    infos = run_import(folder, out, use=use, split=split, frame_format=frame_format, head_model=head_model_name)
    for info in infos:
        typer.echo(f"{info.id}: {info.n_frames} frames ({info.width}x{info.height}, split {info.split})")
    typer.echo(f"wrote {out}")


@app.command("app")
def web_app(
    host: str = typer.Option("127.0.0.1", help="address to serve on (0.0.0.0 for every interface)"),
    port: int = typer.Option(7860, help="port to serve on", min=1, max=65535),
    checkpoint: str = _CHECKPOINT,
    head_model: str = _HEAD,
    orbit_frames: int = typer.Option(48, help="frames of the novel-view orbit video", min=1),
    max_upload_mb: float = typer.Option(500, help="largest file a person may upload (MB)"),
    max_unpacked_mb: float = typer.Option(1024, help="largest a .zip of a tracked folder may unpack to (MB)"),
    speech_model: str = typer.Option(None, help="speech model for the Speak input, e.g. ARTalk_wav2vec.pt (FLAME "
                                                "heads; default: the bundled voice of the head model, if any)"),
):
    """The web app: drop a photo and a driving video, get the animated avatar; or make the photo talk (offline)."""
    from gagavatar.app import Limits, serve

    limits = Limits(upload_bytes=int(max_upload_mb * 2**20), unpacked_bytes=int(max_unpacked_mb * 2**20))
    serve(host=host, port=port, checkpoint=checkpoint, head_model=head_model, orbit_frames=orbit_frames, limits=limits,
          speech_model=speech_model)


@app.command("serve")
@command_options(ServeConfig)
def serve(config):  # a ServeConfig (no annotation: typer reads the options command_options made)
    """A live avatar service for apps: photos in, avatars driven over WebSockets, a browser page (docs/serve.md)."""
    from gagavatar.system import require

    for module in ("starlette", "uvicorn", "websockets"):  # the [serve] extra, or one line naming it
        require(module, "serve", "gagavatar serve")
    config.check()  # before loading the model: a refused setup says so at once
    from gagavatar.serve.server import load_animator
    from gagavatar.serve.server import serve as run_server

    animator = load_animator(config)  # torch's threads set for serving (gagavatar.system.set_torch_threads)
    _notice_bundled(animator)
    run_server(config, animator, say=lambda line: typer.echo(line, err=True))


@app.command("eval")
def evaluate(
    runs: list[str] = typer.Argument(None, help="with --compare: the checkpoints or run folders to put in one table"),
    checkpoint: str = typer.Option(None, help="checkpoint (.safetensors, GAGAvatar.pt) or run folder to evaluate"),
    compare: bool = typer.Option(False, "--compare", help="evaluate every RUN given as an argument, one row each"),
    data: str = typer.Option(..., help="tracked dataset folder (docs/data-format.md)"),
    out: str = typer.Option(..., help="report folder: report.md, metrics.json, grid.png"),
    split: str = typer.Option("test", help="split with the held-out identities"),
    cross_pairs: int = typer.Option(100, help="cross-reenactment pairs (0: none)", min=0),
    max_pairs: int = typer.Option(None, help="self-reenactment pairs at most (evenly spread; default all)", min=1),
    baselines: bool = typer.Option(False, help="add the rows 'copy source' and 'mean training image'"),
    coarse: bool = typer.Option(False, help="add a row per checkpoint for its coarse image (before the neural renderer)"),
    names: list[str] = typer.Option(None, help="row names for --compare (repeat, or comma-separated)"),
    head_model: str = typer.Option(None, help="FLAME-format head model (default: the run's, else the bundled one)"),
    lpips_weights: str = typer.Option(None, help="GAGAvatar.pt (or converted .safetensors) for LPIPS's AlexNet"),
    size: int = typer.Option(None, help="evaluation image size (default: the first model's render size)", min=16,
                             max=4096),
    seed: int = typer.Option(0, help="seed of the cross-reenactment pairs", min=0),
    batch_size: int = typer.Option(8, help="frames rendered per call", min=1),
    device: str = typer.Option(None, help="cpu or cuda (default: cuda when present)", callback=checked(check_device)),
):
    """Self- and cross-reenactment metrics (PSNR, SSIM, LPIPS, CSIM, AED, APD, AKD) in the
    paper's Table 1 layout, for one checkpoint or (--compare RUN_A RUN_B ...) several."""
    from gagavatar import io as gio
    from gagavatar.eval.evaluate import compare as run_compare
    from gagavatar.eval.evaluate import evaluate as run_evaluate

    gio.check_output_folder(out)  # not a file (its report files are written into it, nothing replaced whole)
    options = dict(split=split, cross_pairs=cross_pairs, max_pairs=max_pairs, head_model=head_model,
                   lpips_weights=lpips_weights, size=size, seed=seed, batch_size=batch_size, device=device)
    names = [n for item in names or [] for n in item.split(",") if n]
    if compare or runs:
        if checkpoint:
            runs = [checkpoint] + list(runs or [])
        if not runs:
            raise ValueError("--compare needs the checkpoints or run folders as arguments: "
                             "gagavatar eval --compare RUN_A RUN_B ... --data DIR --out REPORT_DIR")
        result = run_compare(runs, data, out, names=names or None, baselines=baselines, coarse=coarse, **options)
    else:
        if checkpoint is None and not baselines:
            raise ValueError("give --checkpoint CKPT (or --compare RUN_A RUN_B ..., or --baselines alone)")
        result = run_evaluate(checkpoint, data, out, baselines=baselines, coarse=coarse,
                              name=names[0] if names else None, **options)
    from gagavatar.eval.report import table

    typer.echo(table(result["rows"]))
    typer.echo(f"wrote {out}/report.md, {out}/metrics.json, {out}/grid.png")


@app.command()
def doctor(
    checkpoint: str = typer.Option(None, help="a checkpoint file to identify (e.g. your GAGAvatar.pt download)"),
    head_model: str = typer.Option(None, help="a head model file to identify (generic_model.pkl, "
                                              "FLAME_with_eye.pt, .npz)"),
    landmark_embedding: str = typer.Option(None, help="a landmark embedding to check against --head-model"),
    speech_model: str = typer.Option(None, help="a speech model file to identify (ARTalk_wav2vec.pt)"),
):
    """What this install can do, and why not where it cannot: one line per check.

    Checks torch and the device, gsplat (a tiny render on CUDA), mediapipe
    0.10.14 and the model files the tracker uses, and the default checkpoint
    and head model. Files you name are identified: the released GAGAvatar.pt
    (size and SHA-256), a truncated download, another checkpoint (which one),
    a FLAME version, a landmark embedding that fits the mesh or not.

    Exit status 0: the install works (optional parts such as gsplat or a
    CUDA device may be missing). 1: a check says error: a required part is
    broken, or a file you named is missing, unreadable, truncated or not
    what its option needs.
    """
    from gagavatar import doctor as checks_module

    checks = checks_module.run(checkpoint, head_model, landmark_embedding, speech_model)
    for check in checks:
        typer.echo(checks_module.format_line(check, color=True))
    raise typer.Exit(checks_module.exit_code(checks))


# A command list shows each command's first paragraph, which rich would break where the
# docstring's lines break: give it as one line.
for _command in app.registered_commands + bench_app.registered_commands:
    if _command.short_help is None and _command.callback.__doc__:
        _command.short_help = " ".join(inspect.cleandoc(_command.callback.__doc__).split("\n\n")[0].split())


def _terminated(signum, frame) -> None:
    raise KeyboardInterrupt


def main() -> None:
    # a kill (SIGTERM: `timeout`, a job scheduler, a closed terminal's session) unwinds as Ctrl-C
    # does: temporary files go, the previous outputs stay whole
    signal.signal(signal.SIGTERM, _terminated)
    app()


if __name__ == "__main__":
    main()
