"""Sound effects on the client: short sounds (applause, a bell, laughter)
played over the voice, several at once, each published or heard only
locally.

An effect is decoded whole into memory (``preload_effect``, or the first
``play_effect`` of it), at 48 kHz stereo, in the thread that asks; the
audio thread only copies from memory.  ``SoundEffects.render`` is called by
``music.MusicMixer`` for every published block.
"""

import math
import threading

import numpy as np

from stagevox import dsp
from stagevox.dsp.errors import ParameterError

from .media_source import CHANNELS, RATE


def _check(name, value, lo, hi):
    if isinstance(value, bool) or not (isinstance(value, (int, float)) and lo <= value <= hi):
        raise ParameterError(f"{name} must be a number in [{lo}, {hi}], got {value!r}")
    return value


def load_effect(path):
    """The file at ``path`` as float32 ``(2, n)`` at 48 kHz (mono is copied to
    both channels, more than two channels are mixed down).  Raises
    ``ParameterError`` saying why a file cannot be read."""
    import soxr
    from stagevox.dsp import fileio
    try:
        with fileio.open_input(path) as f:
            x = f.read(f.frames, dtype="float32", always_2d=True)
            rate = f.samplerate
    except fileio.AudioFileError as exc:
        raise ParameterError(f"sound effect: {exc}") from None
    if x.shape[1] > 2:
        x = x.mean(axis=1, keepdims=True)
    if rate != RATE:
        x = soxr.resample(x, rate, RATE, quality="HQ").reshape(-1, x.shape[1])
    x = np.ascontiguousarray(x.T, dtype=np.float32)
    return np.repeat(x, CHANNELS, axis=0) if x.shape[0] == 1 else x


class _Playing:
    """One effect being played."""

    def __init__(self, data, plays, pitch, pan, gain, publish):
        self.data = data
        self.plays = plays                # -1: forever
        self.at = 0
        self.paused = False
        self.publish = publish
        theta = (pan + 1.0) * math.pi / 4.0              # constant-power pan
        self.gains = (np.array([[math.cos(theta)], [math.sin(theta)]], np.float32)
                      * np.float32(math.sqrt(2.0) * gain / 100.0))
        self.shifter = (None if pitch == 1.0
                        else dsp.PitchShift(semitones=12.0 * math.log2(pitch),
                                            preserve_formants=False))

    def take(self, n):
        """The next ``n`` samples (zeros after the last play); False once done."""
        out = np.zeros((CHANNELS, n), np.float32)
        k = 0
        while k < n and self.plays != 0:
            step = min(n - k, self.data.shape[1] - self.at)
            out[:, k:k + step] = self.data[:, self.at:self.at + step]
            k += step
            self.at += step
            if self.at >= self.data.shape[1]:
                self.at = 0
                if self.plays > 0:
                    self.plays -= 1
        if self.shifter is not None:
            out = self.shifter.process(out, RATE)
        return out * self.gains, self.plays != 0 or k == n


class SoundEffects:
    """The sound effects of one client.

    ``on_finished(sound_id)`` is called (from the publishing thread) when an
    effect has played all its loops.
    """

    def __init__(self, on_finished=None):
        self.on_finished = on_finished or (lambda sound_id: None)
        self._lock = threading.Lock()
        self._loaded = {}                 # sound id -> (2, n) float32
        self._playing = {}                # sound id -> _Playing

    def preload(self, sound_id, path):
        """Decode ``path`` into memory as effect ``sound_id`` (an int)."""
        if isinstance(sound_id, bool) or not isinstance(sound_id, int):
            raise ParameterError(f"sound_id must be an integer, got {sound_id!r}")
        data = load_effect(path)
        with self._lock:
            self._loaded[sound_id] = data

    def unload(self, sound_id):
        """Forget effect ``sound_id`` (it stops if it plays)."""
        with self._lock:
            self._loaded.pop(sound_id, None)
            self._playing.pop(sound_id, None)

    def play(self, sound_id, path=None, loop_count=0, pitch=1.0, pan=0.0, gain=100,
             publish=True):
        """Play effect ``sound_id`` (preloaded, else read from ``path`` now).

        ``loop_count``: extra plays after the first (-1: forever); ``pitch``
        0.5-2.0 (1: unchanged); ``pan`` -1 (left) to 1 (right); ``gain`` 0-100;
        ``publish``: mixed into the published stream too (else local only).
        Playing an effect that plays starts it again.  Raises
        ``ParameterError`` for a bad argument or a file that cannot be read.
        """
        if isinstance(loop_count, bool) or not isinstance(loop_count, int) or loop_count < -1:
            raise ParameterError(f"loop_count must be -1 (forever) or a whole number >= 0, "
                                 f"got {loop_count!r}")
        _check("pitch", pitch, 0.5, 2.0)
        _check("pan", pan, -1.0, 1.0)
        _check("gain", gain, 0, 100)
        if sound_id not in self._loaded:
            if path is None:
                raise ParameterError(f"sound effect {sound_id!r} is not preloaded and no path "
                                     "was given")
            self.preload(sound_id, path)
        plays = -1 if loop_count == -1 else loop_count + 1
        playing = _Playing(self._loaded[sound_id], plays, float(pitch), float(pan),
                           float(gain), bool(publish))
        with self._lock:
            self._playing[sound_id] = playing

    def stop(self, sound_id):
        """Stop effect ``sound_id`` (nothing happens if it does not play)."""
        with self._lock:
            self._playing.pop(sound_id, None)

    def stop_all(self):
        """Stop every effect."""
        with self._lock:
            self._playing.clear()

    def pause(self, sound_id):
        """Pause effect ``sound_id`` where it is."""
        self._set_paused(sound_id, True)

    def resume(self, sound_id):
        """Go on with effect ``sound_id`` after ``pause``."""
        self._set_paused(sound_id, False)

    def _set_paused(self, sound_id, paused):
        with self._lock:
            playing = self._playing.get(sound_id)
            if playing is not None:
                playing.paused = paused

    @property
    def active(self):
        """True while an effect plays (or is paused)."""
        return bool(self._playing)

    def render(self, n):
        """The next ``n`` samples of the effects: ``(published, local)``, both
        float32 ``(2, n)`` at 48 kHz (local holds every effect)."""
        published = np.zeros((CHANNELS, n), np.float32)
        local = np.zeros((CHANNELS, n), np.float32)
        finished = []
        with self._lock:
            for sound_id, playing in list(self._playing.items()):
                if playing.paused:
                    continue
                x, going = playing.take(n)
                local += x
                if playing.publish:
                    published += x
                if not going or playing.plays == 0:
                    del self._playing[sound_id]
                    finished.append(sound_id)
        for sound_id in finished:
            self.on_finished(sound_id)
        return published, local
