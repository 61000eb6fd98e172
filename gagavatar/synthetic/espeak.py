"""espeak-ng as a library: speech AND when each phoneme starts, for synthetic talking data.

The command line (``gagavatar.io.audio.speak_text``) gives only the waveform; the
library (Debian's libespeak-ng1, installed with espeak-ng) also reports a phoneme event
at each phoneme's first sample, which is what lip motion has to follow.

    speech = speak_phonemes("Hello there.", voice="en-us+f3", words_per_minute=160, pitch=60)
    speech.samples   # float32 [N] at speech.rate (22,050 Hz)
    speech.phonemes  # [(mnemonic, start seconds), ...] in espeak's ASCII names: "h", "@", "oU", "_:" ...

The library keeps one global synthesiser: calls are serialised by a lock.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import threading
from dataclasses import dataclass

import numpy as np

from gagavatar.errors import InputError

# speak_lib.h (espeak-ng 1.50+): enums and flags used here
_SYNCHRONOUS = 2                 # espeak_AUDIO_OUTPUT: callback gets the audio, espeak_Synth blocks
_PHONEME_EVENTS, _DONT_EXIT = 0x0001, 0x8000
_EVENT_LIST_END, _EVENT_PHONEME = 0, 7
_RATE, _PITCH = 1, 3             # espeak_PARAMETER
_POS_CHARACTER, _CHARS_UTF8 = 1, 1


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _EventId)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))
_LOCK = threading.Lock()
_STATE: dict = {}


@dataclass
class Speech:
    """Spoken text: samples [N] float32 in [-1, 1] at ``rate`` Hz and each phoneme's
    (espeak mnemonic, start in seconds), in order."""

    samples: np.ndarray
    rate: int
    phonemes: list[tuple[str, float]]


def _library():
    """(libespeak-ng, its output rate), initialised once."""
    if "lib" not in _STATE:
        name = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            raise InputError("synthetic speech needs the espeak-ng library (libespeak-ng1), which is not installed: "
                             "apt-get install espeak-ng (make install does it)") from None
        rate = lib.espeak_Initialize(_SYNCHRONOUS, 0, None, _PHONEME_EVENTS | _DONT_EXIT)
        if rate <= 0:
            raise InputError("espeak-ng could not start (its data folder is missing?): reinstall espeak-ng")
        _STATE.update(lib=lib, rate=rate, audio=[], events=[])

        def collect(wav, n, events):  # called by espeak_Synth, in this thread
            if n > 0:
                _STATE["audio"].append(np.ctypeslib.as_array(wav, (n,)).copy())
            i = 0
            while events[i].type != _EVENT_LIST_END:
                if events[i].type == _EVENT_PHONEME:
                    _STATE["events"].append((events[i].id.string.decode("ascii", "replace"), events[i].sample))
                i += 1
            return 0

        _STATE["callback"] = _CALLBACK(collect)  # kept alive: the library holds only the pointer
        lib.espeak_SetSynthCallback(_STATE["callback"])
    return _STATE["lib"], _STATE["rate"]


def speak_phonemes(text: str, voice: str = "en-us", words_per_minute: int = 160, pitch: int = 50) -> Speech:
    """``text`` spoken by espeak-ng with ``voice`` (a language, optionally "+variant": "en-gb+m3"),
    at ``words_per_minute`` (80..450) and base ``pitch`` (0..99), with its phoneme timings."""
    with _LOCK:
        lib, rate = _library()
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise InputError(f"espeak-ng has no voice {voice!r}: espeak-ng --voices lists them")
        lib.espeak_SetParameter(_RATE, int(words_per_minute), 0)
        lib.espeak_SetParameter(_PITCH, int(pitch), 0)
        _STATE["audio"], _STATE["events"] = [], []
        data = text.encode("utf-8")
        lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        lib.espeak_Synchronize()
        audio, events = _STATE["audio"], _STATE["events"]
    samples = np.concatenate(audio).astype(np.float32) / 32768.0 if audio else np.zeros(0, np.float32)
    return Speech(samples, rate, [(name, sample / rate) for name, sample in events])
