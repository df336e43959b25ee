"""Pitch and formant effects: PitchShift, FormantShift, PitchCorrection.

All three are pitch-synchronous overlap-add (PSOLA, ``kernels.psola``)
driven by a YIN tracker (``kernels.yin``).  Why PSOLA: with at most 30 ms
of delay at 48 kHz a phase vocoder's frame (<= 1440 samples) cannot resolve
the harmonics of a low voice (100 Hz apart), and moving spectral peaks then
moves pieces of several harmonics together; grains of one or two periods
taken from the waveform keep each period intact, keep the formants for free
(or move them, read faster or slower) and keep the timing of the speech.
``bench/bench_pitch.py`` compares the result with Rubber Band.

Known limitation: PSOLA models a voice as a train of pulses.  A pure
sinusoid has no pulses, and its grains laid out at the new period overlap
out of phase: raised by an octave it comes out nearly silent.  Voices,
instruments and any tone with harmonics are shifted correctly.
"""

import math

import numpy as np

from .lazykernels import kernels
from .pitch_tracker import yin_layout
from .processor import Bool, Choice, Float, Processor, make_ramp, ramp_to

kern = kernels("psola")

#: Delay of PitchShift and PitchCorrection (1344 samples at 48 kHz).
PSOLA_LATENCY_MS = 28.0
#: Range of f0 the shifter's tracker searches.
PSOLA_FMIN_HZ = 65.0
PSOLA_FMAX_HZ = 1000.0
#: YIN thresholds: first dip under THRESHOLD, else deepest dip under FALLBACK.
PSOLA_THRESHOLD = 0.25
PSOLA_FALLBACK = 0.5
#: YIN in the shifters runs on the salience decimated to about this rate.
YIN_RATE_HZ = 16000
#: Grain spacing where the input is unvoiced.
UNVOICED_MS = 5.0
#: Corner of the low-pass of the input's magnitude (the salience) whose cycles
#: the pitch marks follow.
SALIENCE_HZ = 1000.0

#: FormantShift ``amount`` +-1 moves the envelope by this factor up or down.
FORMANT_RANGE = 2.0 ** 0.5

#: Note names (sharps and flats) -> semitones above C.
NOTES = {"C": 0, "C#": 1, "Db": 1, "D": 2, "D#": 3, "Eb": 3, "E": 4, "F": 5, "F#": 6,
         "Gb": 6, "G": 7, "G#": 8, "Ab": 8, "A": 9, "A#": 10, "Bb": 10, "B": 11}
#: Scales as semitones above the tonic.  "japanese" is the Japanese (in)
#: pentatonic scale, 1 b2 4 5 b6.
SCALES = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "japanese": (0, 1, 5, 7, 8),
    "chromatic": tuple(range(12)),
}
#: Frequency of C4 in Hz (A4 = 440 Hz, equal temperament).
C4_HZ = 440.0 * 2.0 ** (-9.0 / 12.0)


def psola_latency(sample_rate):
    """Delay of the PSOLA processors in samples at ``sample_rate``."""
    return int(round(PSOLA_LATENCY_MS * 1e-3 * sample_rate))


class _Psola(Processor, register=False):
    """Shared machinery of the PSOLA processors (see ``kernels.psola``)."""

    _correct = False
    _preserve = True

    def latency_at(self, sample_rate):
        return psola_latency(sample_rate)

    def _prepare(self):
        sr = self.sample_rate
        self._latency = psola_latency(sr)
        # YIN runs on the input decimated to about 16 kHz
        self._decim = max(1, sr // YIN_RATE_HZ)
        self._hop = yin_layout(sr, PSOLA_FMIN_HZ, PSOLA_FMAX_HZ)[0]
        _, self._width, self._tau_min, self._tau_max = yin_layout(
            sr / self._decim, PSOLA_FMIN_HZ, PSOLA_FMAX_HZ)
        self._unvoiced = max(2, int(round(UNVOICED_MS * 1e-3 * sr)))
        from scipy.signal import butter  # here: scipy.signal takes seconds to import
        b, a = butter(2, SALIENCE_HZ / (0.5 * sr))
        self._lowpass = np.array([b[0], b[1], b[2], a[1], a[2]])
        full_max = int(math.ceil(sr / PSOLA_FMIN_HZ))
        need = (self._latency + 3 * full_max + self._decim * (self._width + self._tau_max + 1)
                + 4 * self._unvoiced + 64)
        size = 1
        while size < need:
            size *= 2
        ch = self.num_channels
        self._bufs = np.zeros((ch, 3, size))
        self._est = np.zeros((ch, kern.EST_SLOTS))
        self._marks = np.zeros((ch, 2, kern.MARK_SLOTS))
        self._fstate = np.zeros((ch, kern.FSTATE_SIZE))
        self._counter = np.zeros(1, dtype=np.int64)
        self._ramp = make_ramp(self._semitones())
        self._formant_ramp = make_ramp(self._formant())
        self._scale = np.zeros(1)
        self._tonic = 1.0
        self._strength = 0.0
        self._speed = 0.0
        self._correction_settings()

    def _semitones(self):
        return 0.0

    def _formant(self):
        return 1.0

    def _correction_settings(self):
        pass

    def _process(self, block):
        out = np.empty_like(block)
        kern.psola(block, out, self._ramp, self._formant_ramp, self._preserve, self._correct,
                   self._latency, self._hop, self._decim, self._width, self._tau_min,
                   self._tau_max, self._unvoiced, PSOLA_THRESHOLD, PSOLA_FALLBACK,
                   self._lowpass, self._scale, self._tonic, self._strength, self._speed,
                   self._bufs, self._est, self._marks, self._fstate, self._counter)
        return out


class PitchShift(_Psola):
    """Shift the pitch by ``semitones`` (-12 to +12, fractional), streaming.

    ``preserve_formants=True`` keeps the spectral envelope (the vowel colour
    and the speaker's size) where it is; ``False`` moves it with the pitch
    (the "chipmunk" effect).  Changes of ``semitones`` glide over 20 ms.
    ``semitones=0`` returns the input exactly, delayed by ``latency`` (1344
    samples, 28 ms, at 48 kHz; scaled with the rate).  Made for one voice
    (speech, singing); chords and noise are passed with less care.
    """

    semitones = Float(0.0, -12.0, 12.0, unit="semitones", doc="pitch shift")
    preserve_formants = Bool(True, doc="keep the spectral envelope in place")

    def _semitones(self):
        return self.semitones

    @property
    def _preserve(self):
        return self.preserve_formants

    def _param_changed(self, name):
        if name == "semitones":
            ramp_to(self._ramp, self.semitones, self.ramp_samples())


class PitchCorrection(_Psola):
    """Pull a voice towards the notes of a scale ("auto-tune").

    The f0 of each grain's source (YIN) is compared with the nearest note of
    ``scale`` on ``tonic``; the shift towards it, times ``strength`` (0 to
    1), is reached with a time constant of ``speed_ms`` (0: at once, the hard
    "robotic" tuning; 50-200 ms: natural).  Unvoiced sounds pass unshifted.
    Scales: ``major``, ``minor`` (natural), ``japanese`` (in pentatonic,
    1 b2 4 5 b6) and ``chromatic``.  Formants are kept.  Delay as
    PitchShift (28 ms).
    """

    scale = Choice("major", tuple(SCALES), doc="scale the voice is tuned to")
    tonic = Choice("C", tuple(NOTES), doc="tonic (key) of the scale")
    strength = Float(1.0, 0.0, 1.0, doc="fraction of the correction applied")
    speed_ms = Float(20.0, 0.0, 1000.0, unit="ms", doc="time constant of the correction")

    _correct = True

    def _correction_settings(self):
        self._scale = np.array([100.0 * s for s in SCALES[self.scale]])
        self._tonic = C4_HZ * 2.0 ** (NOTES[self.tonic] / 12.0) / self.sample_rate
        self._strength = self.strength
        self._speed = self.speed_ms * 1e-3 * self.sample_rate

    def _param_changed(self, name):
        # New settings apply from the next grain on, through the smoothing.
        self._correction_settings()


class FormantShift(_Psola):
    """Move the spectral envelope (formants) without moving the pitch.

    ``amount`` -1 to 1 scales the frequencies of the envelope by
    ``sqrt(2) ** amount`` (0.71 to 1.41): positive sounds smaller / younger,
    negative larger / deeper.  Grains of one period are read faster or
    slower (which moves their envelope) and laid out at the original period
    (which keeps the pitch); see ``kernels.psola``.  Changes glide over 20
    ms.  ``amount=0`` returns the input exactly, delayed by ``latency`` (28 ms,
    as PitchShift).
    """

    amount = Float(0.0, -1.0, 1.0, doc="envelope shift, -1 (down) to 1 (up)")

    def _formant(self):
        return FORMANT_RANGE ** self.amount

    def _param_changed(self, name):
        ramp_to(self._formant_ramp, self._formant(), self.ramp_samples())
