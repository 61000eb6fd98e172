"""Tracking: images or video in; framed, matted crops with head-model parameters and cameras out.

    landmarks        MediaPipe face detection + 478-point face mesh (``LandmarkDetector``)
    matting          MediaPipe selfie segmentation (``Segmenter``)
    framing          the reference's 1.65x head-box crop, from landmarks (``Framer``)
    rig, fitting     the head model at its landmarks; Gauss-Newton fit over a video (``fit_landmarks``)
    smoothing        the reference's smoothed.pkl EMA over pose and eyes (``smooth_track``)
    reference_format optim.pkl / smoothed.pkl / img_lmdb as GAGAvatar_track writes them
    overlay          pictures of the fit for a person to check
    tracker          ``track(input, out_dir, ...)``: all of it, into the dataset format

See docs/tracking.md. Import the modules you need (``from gagavatar.tracking.tracker
import track``); this package does not import mediapipe by itself.
"""
