"""Speech -> head motion: ARTalk's model (xg-chu/ARTalk, SPEC §11), written here, and the glue
that drives a GAGAvatar avatar with it.

    model = load_speech_model("ARTalk_wav2vec.pt")                  # SpeechModel, float32, eval
    style = load_style_motion("style_motion/natural_0.pt")          # [50, 106] (or None)
    motion = smooth_motion(model.generate(audio, style))            # [F, 106] at 25 fps
    frames = motion_frames(motion, source)                          # FrameParams [F]
    points = motion_vertices(frames, head)                          # [F, 5023, 3], forehead smoothed

``gagavatar.reenact.Speaker`` is this path as a driver (with the motion controls), the way
``speak``, and any script, uses it.

One concept a module: ``wav2vec`` (the audio front end), ``style`` (style encoder),
``codec`` (the motion codec, bits <-> motion), ``generator`` (the AdaLN generator, chunked
inference, ``SpeechModel``), ``postprocess`` (smoothing, motion <-> FrameParams, forehead),
``frontend`` (the light log-mel audio front end of the ``tiny`` preset), ``stream`` (the same
chunked inference as audio arrives), ``weights`` (the released files and ours), ``config``;
``data`` (talking clips: sound + motion, aligned windows), ``synthetic`` (espeak-ng speech with
viseme motion for the bundled head), ``face_regions`` (lips, upper face, mouth opening) and ``evaluate`` (``eval-speech``:
lip vertex error and the rest, beside trivial baselines); ``parity`` checks it
all against the reference's numbers (``python -m gagavatar.speech.parity DIR``).
"""
from gagavatar.speech.config import PRESETS, SpeechConfig, paper, preset_config
from gagavatar.speech.generator import SpeechModel
from gagavatar.speech.postprocess import (FOREHEAD_VERTICES, frames_motion, head_rotation_to_reference,
                                          motion_frames, motion_vertices, smooth_forehead, smooth_motion)
from gagavatar.speech.weights import SpeechWeightsError, load_speech_model, load_style_motion

__all__ = ["FOREHEAD_VERTICES", "PRESETS", "SpeechConfig", "SpeechModel", "SpeechWeightsError",
           "frames_motion", "head_rotation_to_reference", "load_speech_model", "load_style_motion", "motion_frames",
           "motion_vertices", "paper", "preset_config", "smooth_forehead", "smooth_motion"]
