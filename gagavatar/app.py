"""The web app (``gagavatar app``): drop a photo and a driving video, get the animated avatar;
or make the photo talk.

    gagavatar app [--host 127.0.0.1] [--port 7860] [--checkpoint CKPT] [--head-model FILE] [--speech-model F]

The page tracks the photo and the driver, shows the tracked crop with its fitted
mesh, the reenacted video beside the driver, an orbit around the avatar, and
offers the mp4s and a PLY of the Gaussians to download. Its Speak input takes a
recording (uploaded or recorded in the page) or typed text, and gives the mp4 of
the avatar saying it, with the speech as its sound track (``gagavatar speak``).
``Studio.run`` and ``Studio.speak`` are the same pipelines without the page (tests
and scripts call them).

Offline by construction: this module turns Gradio's analytics, version check and
Hugging Face telemetry off before Gradio is imported, the page's fonts are
Gradio's bundled ones served by the app itself, and every video is an H.264 /
yuv420p mp4 written by ``gagavatar.io.write_video`` (Gradio never re-encodes it).
"""
from __future__ import annotations

import os

# Before gradio (or huggingface_hub) is imported anywhere: nothing may call home.
OFFLINE_ENV = {
    "GRADIO_ANALYTICS_ENABLED": "False",  # also skips Gradio's version check at start
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_OFFLINE": "1",
    "GRADIO_SHARE": "False",
    "DO_NOT_TRACK": "1",
}
os.environ.update(OFFLINE_ENV)

import logging  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from gagavatar import commands  # noqa: E402
from gagavatar import io as gio  # noqa: E402
from gagavatar.errors import NoFaceError  # noqa: E402
from gagavatar.system import default_device, require  # noqa: E402
from gagavatar.reenact import (  # noqa: E402
    BUNDLED_MODEL_NOTE, DEMO_DATA, TRANSFER_MODES, Animator, MotionControls, Speaker, bundled, load_tracked,
    parse_color, source_frame,
)
from gagavatar.reenact.inputs import is_bundled_model  # noqa: E402

log = logging.getLogger(__name__)

RUN_MAX_AGE_S = 3600.0     # run folders older than this are removed when a new run starts


@dataclass
class Limits:
    """What one upload may be (``gagavatar app --max-upload-mb / --max-unpacked-mb``)."""

    upload_bytes: int = 500 << 20     # one uploaded file
    unpacked_bytes: int = 1 << 30     # what a .zip of a tracked folder unpacks to



class AppError(ValueError):
    """Something the person using the page can fix; the message says what."""


# --------------------------------------------------------------------------- inputs
def driver_input(files, workdir: Path, limits: Limits = Limits()) -> Path:
    """What the driver upload is: one video, one image, several images (in name order,
    as a folder), or a .zip of a tracked folder (ours or GAGAvatar_track's)."""
    paths = [Path(getattr(f, "name", f)) for f in (files if isinstance(files, (list, tuple)) else [files]) if f]
    if not paths:
        raise AppError("no driver: upload a driving video (or images, or a .zip of a tracked folder)")
    if len(paths) == 1:
        path = paths[0]
        if path.suffix.lower() == ".zip":
            return gio.extract_zip(path, workdir / "driver_zip", limits.unpacked_bytes)
        if gio.is_video(path) or gio.is_image(path):
            return path
        raise AppError(f"{path.name}: not a video ({', '.join(gio.VIDEO_EXTENSIONS)}), an image, or a .zip "
                       f"of a tracked folder")
    not_images = [p.name for p in paths if not gio.is_image(p)]
    if not_images:
        raise AppError(f"several files were uploaded as the driver, but {not_images} are not images: upload one "
                       f"video, or images only")
    folder = workdir / "driver_images"
    folder.mkdir(parents=True, exist_ok=True)
    for i, p in enumerate(paths):  # keep the names (natural order) but never let two collide
        shutil.copy(p, folder / (p.name if not (folder / p.name).exists() else f"{i:06d}_{p.name}"))
    return folder


def _clear_message(error: Exception, hide=()) -> str:
    """The error as one line a person understands (no face / unreadable file / wrong checkpoint);
    the folders in ``hide`` (where uploads were put) are cut from the paths it names."""
    from gagavatar.model import CheckpointError

    text = str(error).strip() or type(error).__name__
    for folder in sorted({str(h) for h in hide}, key=len, reverse=True):
        text = text.replace(folder.rstrip("/") + "/", "")
    if isinstance(error, CheckpointError):
        return f"Wrong checkpoint: {text}"
    if isinstance(error, NoFaceError):
        return f"No face found: {text}"
    if isinstance(error, gio.InputError):
        return f"Unreadable file: {text}"
    return text


# --------------------------------------------------------------------------- pipeline
@dataclass
class RunOutputs:
    overlay: Path        # PNG: the tracked source crop | the crop with the fitted mesh
    side_by_side: Path   # mp4: driver crop | avatar
    reenacted: Path      # mp4: the avatar alone
    orbit: Path          # mp4: novel views around the avatar
    ply: Path            # the avatar's Gaussians (3DGS PLY)
    n_frames: int
    n_repeated: int
    seconds: float
    notes: list[str] = field(default_factory=list)

    def message(self) -> str:
        lines = [f"Done: {self.n_frames} frames in {self.seconds:.1f} s."] + self.notes
        if self.n_repeated:
            lines.append(f"{self.n_repeated} driver frame(s) had no face and repeat the last good one.")
        return "\n\n".join(lines)


def mesh_overlay(animator: Animator, video, frame: int) -> np.ndarray:
    """[H, 2W, 3] uint8: the tracked crop, and the crop with the fitted head mesh drawn over it."""
    from gagavatar.tracking.overlay import overlay_frame

    tracked = video.frames(frame)
    with torch.no_grad():
        verts = tracked.to(animator.device).vertices(animator.head).cpu()
    verts_cam = tracked.camera.to(torch.float64).to_camera(verts.double())[0].numpy()
    faces = animator.head.faces.cpu().numpy()
    return overlay_frame(video.frame(frame), verts_cam, tracked.camera.K[0].numpy(), faces, None, None)


class Studio:
    """The model (loaded once, on first use) and the whole pipeline of one run."""

    def __init__(self, checkpoint=None, head_model=None, device: str | None = None, orbit_frames: int = 48,
                 root: str | Path | None = None, limits: Limits | None = None, speech_model=None):
        self.checkpoint, self.head_model, self.speech_model = checkpoint, head_model, speech_model
        self.limits = limits or Limits()
        self.device = default_device(device)
        self.orbit_frames = orbit_frames
        self.root = Path(root) if root else Path(tempfile.gettempdir()) / "gagavatar-app"
        self._animator: Animator | None = None
        self._speaker: Speaker | None = None

    @property
    def uses_bundled_model(self) -> bool:
        return is_bundled_model(self.checkpoint)

    def animator(self) -> Animator:
        if self._animator is None:
            self._animator = Animator.load(self.checkpoint, self.head_model, device=self.device)
        return self._animator

    def speaker(self) -> Speaker:
        """The voice (loaded once): ``--speech-model``, else the bundled voice of the head model;
        one line when there is none or it speaks another head (never random motion)."""
        if self._speaker is None:
            head = self.animator().head
            speaker = Speaker.load(self.speech_model, device=self.device, head=head)
            speaker.check_head(head)
            self._speaker = speaker
        return self._speaker

    def personalise(self, video: Path, minutes: float) -> dict:
        """Fine-tune the current model on ``video`` (``gagavatar personalize``); from then on the
        studio drives the personalised model. Returns the report, with ``checkpoint``."""
        from gagavatar.train.personalize import PersonalizeConfig, personalize

        folder = self.root / "personal"  # kept while the app runs (run folders are cleaned after an hour)
        folder.mkdir(parents=True, exist_ok=True)
        out = Path(tempfile.mkdtemp(prefix="personal-", dir=folder)) / f"{Path(video).stem}.safetensors"
        report = personalize(PersonalizeConfig(video=str(video), out=str(out), checkpoint=self.checkpoint,
                                               head_model=self.head_model, minutes=minutes), say=log.info)
        self.checkpoint, self._animator = str(out), None
        return report | {"checkpoint": str(out)}

    def _new_run_dir(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        for old in self.root.glob("run-*"):
            if time.time() - old.stat().st_mtime > RUN_MAX_AGE_S:
                shutil.rmtree(old, ignore_errors=True)
        return Path(tempfile.mkdtemp(prefix="run-", dir=self.root))

    def run(self, source, driver, controls: MotionControls | None = None, background=(0.0, 0.0, 0.0),
            progress=None) -> RunOutputs:
        """source: a photo (or tracked folder); driver: a video, image, image folder or tracked
        folder (``driver_input`` maps uploads to one). progress(fraction, text) is called on the way.
        The videos are what ``gagavatar reenact`` / ``novel-views`` / ``export-ply`` write."""
        t0 = time.perf_counter()
        say = progress or (lambda fraction, text: None)
        run_dir = self._new_run_dir()
        work = run_dir / "work"
        try:
            say(0.02, "loading the model")
            animator = self.animator()
            animator.background = tuple(float(c) for c in background)
            say(0.08, "tracking the source photo")
            src = load_tracked(source, work / "source", animator.head)
            frame = source_frame(src)
            say(0.2, "tracking the driver")
            drv = load_tracked(driver, work / "driver", animator.head)

            say(0.35, "reconstructing the avatar")
            overlay = run_dir / "tracked_source.png"
            Image.fromarray(mesh_overlay(animator, src, frame)).save(overlay)
            avatar = animator.reconstruct(src)
            def rendered(done: int, n: int) -> None:
                say(0.4 + 0.4 * done / n, f"rendering frame {done}/{n}")

            summary = commands.reenact(src.folder, drv.folder, run_dir / "reenact_side_by_side.mp4", animator=animator,
                                       side_by_side_view=True, controls=controls, keep_frames=True, avatar=avatar,
                                       progress=rendered, sound_from=driver)
            sound, rate = commands.driver_sound(driver, len(summary.frames), drv.info.fps, drv)
            reenacted = gio.write_video(run_dir / "reenact.mp4", summary.frames, fps=drv.info.fps, audio=sound,
                                        audio_rate=rate)

            say(0.82, "rendering the novel views")
            novel_views = gio.write_video(run_dir / "novel_views.mp4", animator.orbit(avatar, src, self.orbit_frames),
                                          fps=25)
            say(0.95, "writing the PLY")
            ply = animator.to_ply(avatar, src, run_dir / "avatar.ply")
        finally:  # the tracked copies of the uploads go when the run ends, whatever happened
            shutil.rmtree(work, ignore_errors=True)
        say(1.0, "done")
        notes = [] if src.params["valid"].all() else [f"The source has frames without a face; frame {frame} is used."]
        return RunOutputs(overlay, summary.out, reenacted, novel_views, Path(ply), summary.n_frames,
                          summary.n_repeated, time.perf_counter() - t0, notes)


    def speak(self, source, audio=None, text: str | None = None, controls: MotionControls | None = None,
              background=(0.0, 0.0, 0.0), progress=None) -> SpeakOutputs:
        """The avatar of ``source`` saying ``audio`` (a sound file) or ``text`` (spoken by
        espeak-ng): the mp4 ``gagavatar speak`` writes, the speech as its sound track."""
        t0 = time.perf_counter()
        say = progress or (lambda fraction, text: None)
        run_dir = self._new_run_dir()
        say(0.02, "loading the models")
        animator, speaker = self.animator(), self.speaker()
        animator.background = tuple(float(c) for c in background)
        say(0.05, "reading the speech")
        samples = gio.read_speech(audio, text, speaker.sample_rate)

        def rendered(done: int, n: int) -> None:
            say(0.1 + 0.85 * done / n, f"rendering frame {done}/{n}")

        try:
            summary = commands.speak(source, run_dir / "speak.mp4", animator, speaker, samples, controls=controls,
                                     workdir=run_dir / "work", progress=rendered, recording=audio)
        finally:  # the tracked copy of the upload goes when the run ends, whatever happened
            shutil.rmtree(run_dir / "work", ignore_errors=True)
        say(1.0, "done")
        return SpeakOutputs(summary.out, summary.n_frames, len(samples) / speaker.sample_rate,
                            time.perf_counter() - t0)


@dataclass
class SpeakOutputs:
    video: Path          # mp4: the avatar saying it, the speech as its sound track
    n_frames: int
    speech_seconds: float
    seconds: float

    def message(self) -> str:
        return f"Spoken: {self.speech_seconds:.1f} s of speech, {self.n_frames} frames in {self.seconds:.1f} s."


def example_inputs(folder: Path) -> tuple[Path, Path] | None:
    """The bundled example as files a person could upload: the source photo (PNG) and the
    driving clip (mp4), written once into ``folder``; None when the clips are not installed."""
    from gagavatar.data.format import Dataset, DatasetError

    clips = bundled(DEMO_DATA)
    try:
        videos = {v.id: v for v in Dataset(clips).videos}
        source, driver = videos["source"], videos["driver"]
    except (DatasetError, KeyError, OSError) as e:
        log.info("no bundled example (%s)", e)
        return None
    folder.mkdir(parents=True, exist_ok=True)
    photo, clip = folder / "example_photo.png", folder / "example_driver.mp4"
    if not photo.is_file():
        Image.fromarray(source.frame(0)).save(photo)
    if not clip.is_file():
        gio.write_video(clip, (driver.frame(i) for i in range(driver.n_frames)), fps=driver.info.fps)
    return photo, clip


# --------------------------------------------------------------------------- page
INTRO = """# GAGAvatar
One photo in, an animatable 3D Gaussian head out. Drop a **photo** and a **driving video**
(or a few images), choose what to transfer, press **Animate**. Everything runs on this machine."""


USER_ERRORS = (ValueError, OSError, KeyError, RuntimeError)  # what a person can fix: a message in the page


def build_app(studio: Studio, startup_error: str | None = None, speech_note: str | None = None):
    """The Gradio page around ``studio`` (a ``gr.Blocks``; ``serve`` launches it). ``speech_note``:
    why the Speak input cannot speak (no speech model), shown beside it."""
    gr = require("gradio", "app", "the web app")

    def page_error(error: Exception, hide, title: str):
        """A user error as the page's one-line message (and one line in the server's log)."""
        log.warning("%s: %s", title.lower(), error)
        return gr.Error(_clear_message(error, hide), duration=None, title=title, print_exception=False)

    def uploads(files) -> list[Path]:
        return [Path(getattr(f, "name", f)) for f in (files if isinstance(files, (list, tuple)) else [files]) if f]

    def source_path(files) -> Path | None:
        paths = uploads(files)
        return paths[0] if paths else None

    def preview(files):
        """Show the uploaded photo, or say why it cannot be used."""
        path = source_path(files)
        if path is None or path.suffix.lower() == ".zip":
            return None, ""
        try:
            gio.read_image(path)
        except gio.InputError as e:
            return None, f"**{_clear_message(e, [path.parent])}**"
        return str(path), ""

    def source_input(files, tmp: Path) -> Path:
        """The uploaded source: a photo, or a .zip of a tracked folder (unpacked into ``tmp``)."""
        source = source_path(files)
        if source is None:
            raise AppError("no source: upload a photo of a face")
        if source.suffix.lower() == ".zip":
            return gio.extract_zip(source, tmp / "source_zip", studio.limits.unpacked_bytes)
        if not gio.is_image(source):
            raise gio.InputError(f"{source.name}: the source must be a photo ({', '.join(gio.IMAGE_EXTENSIONS)}) "
                                 f"or a .zip of a tracked folder")
        return source

    def animate(source_files, driver_files, transfer, relative, expression_scale, jaw_scale, eye_scale, stabilize,
                background, progress=gr.Progress()):
        hide = [p.parent for p in uploads(source_files) + uploads(driver_files)]
        try:
            controls = MotionControls(transfer=transfer, relative=bool(relative),
                                      expression_scale=float(expression_scale), jaw_scale=float(jaw_scale),
                                      eye_scale=float(eye_scale), stabilize=float(stabilize))
            color = parse_color(background)
            with tempfile.TemporaryDirectory(prefix="gagavatar-upload-") as tmp:
                hide.append(Path(tmp))
                source = source_input(source_files, Path(tmp))
                driver = driver_input(driver_files, Path(tmp), studio.limits)
                out = studio.run(source, driver, controls, color,
                                 progress=lambda fraction, text: progress(fraction, desc=text))
        except USER_ERRORS as e:  # every failure a person can fix becomes a message in the page
            raise page_error(e, hide + [studio.root], "Could not animate") from None
        return (str(out.overlay), str(out.side_by_side), str(out.orbit),
                [str(out.reenacted), str(out.orbit), str(out.ply)], out.message())

    def personalise(video_files, minutes, progress=gr.Progress(track_tqdm=True)):
        """Fine-tune the model on a video of the person; later runs use the personalised model."""
        video = source_path(video_files)
        try:
            if video is None:
                raise AppError("no video: upload a short video of the person (a selfie clip, an interview)")
            report = studio.personalise(video, float(minutes))
        except USER_ERRORS as e:  # the same user errors as animate
            raise page_error(e, [video.parent] if video else [], "Could not personalise") from None
        message = (f"Personalised in {report['total_seconds'] / 60:.1f} min ({report['steps']} steps): held-out "
                   f"PSNR {report['heldout_psnr_before']:.2f} -> {report['heldout_psnr_after']:.2f} dB. "
                   f"Animate now uses this model.")
        return message, report["contact_sheet"], [report["checkpoint"]]

    def talk(source_files, audio, text, expression_scale, jaw_scale, stabilize, background,
             progress=gr.Progress()):
        """The source saying the recording (uploaded or recorded) or, without one, the typed text."""
        hide = [p.parent for p in uploads(source_files)] + ([Path(audio).parent] if audio else [])
        try:
            if not audio and not (text or "").strip():
                raise AppError("no speech: upload or record a voice, or type what the photo should say")
            controls = MotionControls(expression_scale=float(expression_scale), jaw_scale=float(jaw_scale),
                                      stabilize=float(stabilize))
            color = parse_color(background)
            with tempfile.TemporaryDirectory(prefix="gagavatar-upload-") as tmp:
                hide.append(Path(tmp))
                out = studio.speak(source_input(source_files, Path(tmp)), audio or None, None if audio else text,
                                   controls, color, progress=lambda fraction, text: progress(fraction, desc=text))
        except USER_ERRORS as e:
            raise page_error(e, hide + [studio.root], "Could not speak") from None
        note = " The recording was spoken; the typed text was not (clear the recording to speak it)." \
            if audio and (text or "").strip() else ""
        return str(out.video), out.message() + note

    with gr.Blocks(title="GAGAvatar", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown(INTRO)
        if studio.uses_bundled_model:
            gr.Markdown(f"> {BUNDLED_MODEL_NOTE}", elem_id="bundled-model-note")
        if startup_error:
            gr.Markdown(f"**The model could not be loaded.** {startup_error}", elem_id="startup-error")
        with gr.Row():
            with gr.Column(scale=2):
                with gr.Row():
                    source = gr.File(label="Source photo (or tracked .zip)", file_count="single",
                                     elem_id="source", height=140)
                    source_preview = gr.Image(label="Source", type="filepath", interactive=False, height=140,
                                              elem_id="source-preview")
                driver = gr.File(label="Driving video (or images, or a .zip of a tracked folder)",
                                 file_count="multiple", elem_id="driver", height=140)
                with gr.Accordion("Motion controls", open=True):
                    transfer = gr.Radio(list(TRANSFER_MODES), value="all", label="Transfer",
                                        info="expression: keep the source's head pose; pose: keep its expression")
                    relative = gr.Checkbox(False, label="Relative motion (to the driver's first frame)")
                    with gr.Row():
                        expression_scale = gr.Slider(0, 2, value=1.0, step=0.05, label="Expression scale")
                        jaw_scale = gr.Slider(0, 2, value=1.0, step=0.05, label="Jaw scale")
                        eye_scale = gr.Slider(0, 2, value=1.0, step=0.05, label="Eye scale")
                    stabilize = gr.Slider(0, 3, value=0.0, step=0.1, label="Stabilize head pose and eyes",
                                          info="0 off, 1 = the reference tracker's smoothing")
                    background = gr.ColorPicker("#000000", label="Background (render and matte)")
                run = gr.Button("Animate", variant="primary", elem_id="run")
                examples_slot = gr.Column()
                with gr.Accordion("Speak: the photo says a recording, or what you type", open=True):
                    if speech_note:
                        gr.Markdown(f"**Speak is off.** {speech_note}", elem_id="speech-note")
                    speech_audio = gr.Audio(sources=["upload", "microphone"], type="filepath",
                                            label="Speech: upload or record", elem_id="speech-audio")
                    speech_text = gr.Textbox(label="or type what to say (spoken offline by espeak-ng)", lines=2,
                                             placeholder="Hello! I am a Gaussian avatar.", elem_id="speech-text")
                    speak_run = gr.Button("Speak", elem_id="speak")
                with gr.Accordion("Personalise (optional): train on a video of the person", open=False):
                    personal_video = gr.File(label="A short video of the person in the photo", elem_id="personal-video")
                    minutes = gr.Slider(0.1, 15, value=5, step=0.1, label="Minutes of training")
                    personal_run = gr.Button("Personalise", elem_id="personalise")
                    personal_status = gr.Markdown("", elem_id="personal-status")
                    personal_sheet = gr.Image(label="Held-out frames: truth | one-shot | personalised", type="filepath",
                                              interactive=False, elem_id="personal-sheet")
                    personal_model = gr.File(label="The personalised model", interactive=False, elem_id="personal-model")
            with gr.Column(scale=3):
                status = gr.Markdown("", elem_id="status")
                overlay = gr.Image(label="Tracked source (crop | fitted mesh)", type="filepath", interactive=False,
                                   height=260, elem_id="overlay")
                with gr.Row():
                    result = gr.Video(label="Driver | avatar", interactive=False, autoplay=True, loop=True,
                                      height=260, elem_id="result")
                    novel_views = gr.Video(label="Novel views", interactive=False, autoplay=True, loop=True, height=260,
                                           elem_id="orbit")
                downloads = gr.File(label="Downloads (mp4, PLY)", file_count="multiple", interactive=False,
                                    elem_id="downloads")
                spoken = gr.Video(label="Speaking (with its sound)", interactive=False, height=260,
                                  elem_id="speech-result")
        source.change(preview, source, [source_preview, status], queue=False, show_progress="hidden",
                      api_visibility="private")
        inputs = [source, driver, transfer, relative, expression_scale, jaw_scale, eye_scale, stabilize, background]
        outputs = [overlay, result, novel_views, downloads, status]
        # one event runs the pipeline: while it is pending, further presses are ignored ("once"),
        # so the example (which presses Animate itself) and a user's press never queue a duplicate
        run.click(animate, inputs, outputs, api_name="animate", concurrency_limit=1, concurrency_id="animate",
                  trigger_mode="once")

        speak_run.click(talk, [source, speech_audio, speech_text, expression_scale, jaw_scale, stabilize, background],
                        [spoken, status], api_name="speak", concurrency_limit=1, concurrency_id="animate",
                        trigger_mode="once")
        personal_run.click(personalise, [personal_video, minutes], [personal_status, personal_sheet, personal_model],
                           api_name="personalise", concurrency_limit=1, concurrency_id="animate", trigger_mode="once")

        example = example_inputs(studio.root / "examples")
        if example is not None:
            with examples_slot:
                ex = gr.Examples([[str(example[0]), [str(example[1])]]], inputs=[source, driver],
                                 label="Bundled example: one click fills the inputs and runs it", cache_examples=False)
                ex.load_input_event.then(None, js="() => { document.querySelector('#run').click(); }")
    return demo


def serve(host: str = "127.0.0.1", port: int = 7860, checkpoint=None, head_model=None, device=None,
          orbit_frames: int = 48, block: bool = True, limits: Limits | None = None, speech_model=None):
    """Load the models and serve the page on http://host:port/ (blocks until stopped unless ``block=False``)."""
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
    studio = Studio(checkpoint, head_model, device, orbit_frames, limits=limits, speech_model=speech_model)
    startup_error = speech_note = None
    try:
        studio.animator()
    except USER_ERRORS as e:  # shown in the page, and on every run
        startup_error = _clear_message(e)
        log.error("%s", startup_error)
    if startup_error is None:
        try:
            studio.speaker()
        except USER_ERRORS as e:  # shown beside the Speak input, and when it is pressed
            speech_note = _clear_message(e)
            log.warning("speak is off: %s", speech_note)
    demo = build_app(studio, startup_error, speech_note)
    demo.queue(default_concurrency_limit=1)
    # quiet: Gradio's own start-up lines suggest share=True, which this command never does
    demo.launch(server_name=host, server_port=port, share=False, inbrowser=False, show_error=True, quiet=True,
                max_file_size=studio.limits.upload_bytes,
                prevent_thread_lock=True, allowed_paths=[str(studio.root)], ssr_mode=False, pwa=False,
                run_history=False, mcp_server=False)  # run history could sync to a remote bucket: off
    print(f"gagavatar app: open http://{host}:{port}/ (Ctrl-C to stop)", flush=True)
    if block:
        demo.block_thread()
    return demo
