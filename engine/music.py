"""Music mixing on the client: a backing track under the published voice.

``MusicMixer`` plays one ``MediaSource`` (decoded ahead on its own thread)
and does, per block, on the thread that calls it: the playback speed, the
pitch, the publish and playout volumes, the ducking of the music under the
voice (side-chain) and the limiter on the published sum.  ``MusicMixing``
gives ``Client`` the SDK-named methods (``start_audio_mixing``, ...).

Speed and pitch use what ``dsp`` has: the music is resampled by the speed
(soxr: shorter and higher at 200 %), then ``dsp.PitchShift`` (PSOLA)
moves the pitch back, plus the pitch asked for, in at most three stages of
12 semitones or less.  PSOLA is made for one voice or a harmonic tone;
dense mixes pass with less care (see ``dsp.pitch``).  Both are off (the
music passes untouched) at speed 100 % and pitch 0.

Threads: in the usual case the publishing thread (``push_audio``) clocks the
music and keeps what it plays for the local playout (``pull_audio``), so
the host hears the same music it sends.  With ``loopback`` the music is
only played locally and the playback thread clocks it.
"""

import math
import os
import threading

import numpy as np

from stagevox import dsp
from stagevox.dsp.errors import ParameterError
from stagevox.dsp.lazykernels import kernels

from .media_source import BUFFER_MS, CHANNELS, RATE, MediaSource
from .sound_effects import SoundEffects

#: Limiter on the published voice + music.
CEILING_DB = -1.0
#: Ducking: voice level (dBFS, RMS of a block) where the music starts to
#: duck, the span over which it reaches the full depth, and the envelope's
#: attack and release time constants.
DUCK_THRESHOLD_DB = -45.0
DUCK_KNEE_DB = 10.0
DUCK_ATTACK_S = 0.01
DUCK_RELEASE_S = 0.3
#: Local playout kept when nobody pulls it, s.
PLAYOUT_KEPT_S = 0.2
#: Music rendered ahead at once, samples: one source read (and one pass of
#: the speed and pitch stages) per 100 ms instead of per 10 ms frame, since
#: on a busy machine every call after a wake-up pays for cold caches.
RENDER_AHEAD = RATE // 10
#: Largest pitch step of one PitchShift stage, semitones.
STAGE_SEMITONES = 12.0

kern = kernels("music")


def _check(name, value, lo, hi, unit=""):
    if isinstance(value, bool) or not (isinstance(value, (int, float)) and lo <= value <= hi):
        raise ParameterError(f"{name} must be a number in [{lo}, {hi}]{unit}, got {value!r}")
    return value


def _to_channels(x, channels):
    if x.shape[0] == channels:
        return x
    if channels == 1:
        return x.mean(axis=0, keepdims=True, dtype=np.float32)
    return np.repeat(x, channels, axis=0)


class _Playout:
    """The last ``size`` samples of what was published, kept for the local
    playout in a ring (no copy of the whole kept audio per block); reads
    take the oldest first.  Thread-safe: hold ``lock`` to use ``ring`` and
    ``state`` (``dsp.kernels.music``) directly."""

    def __init__(self, size):
        self.ring = np.zeros((CHANNELS, size), np.float32)
        self.state = np.zeros(2, np.int64)       # oldest sample's index, samples kept
        self.lock = threading.Lock()

    def clear(self):
        with self.lock:
            self.state[1] = 0

    def write(self, x):
        """Keep ``x`` ((2, n) float32); the oldest samples go past ``size``."""
        x = np.ascontiguousarray(x, np.float32)
        with self.lock:
            kern.ring_write(self.ring, self.state, x)

    def read(self, n):
        """The oldest ``n`` samples kept, (2, n), zeros beyond what is kept."""
        out = np.empty((CHANNELS, n), np.float32)
        with self.lock:
            kern.ring_read(self.ring, self.state, out)
        return out


class MusicMixer:
    """One music track mixed into the published voice and the local playout.

    ``on_state(state, reason)``: ``"playing"``, ``"paused"``, ``"stopped"``
    or ``"failed"`` with a reason (see ``media_source``; and
    ``"paused_by_user"``, ``"resumed_by_user"``, ``"stopped_by_user"``).
    """

    def __init__(self, on_state=None):
        self.on_state = on_state or (lambda state, reason: None)
        self._lock = threading.RLock()
        self.source = None
        self.loopback = False
        self.paused = False
        self.publish_gain = 1.0
        self.playout_gain = 1.0
        self.pitch = 0.0                  # semitones
        self.speed = 100                  # percent
        self.ducking = False
        self.duck_depth_db = -12.0
        self._env = 0.0                   # the voice's smoothed level (linear RMS)
        self._duck_gain = 1.0
        self._limiter = dsp.Limiter(ceiling_db=CEILING_DB)
        self._stretch = None              # soxr stream of the speed, and its output
        self._sped = np.zeros((CHANNELS, 0), np.float32)
        self._ahead = np.zeros((CHANNELS, 0), np.float32)   # rendered; played up to _pos
        self._pos = 0
        self._frame_buffers = None        # (out, local) of the last frame's shape
        self._shifters = []
        self._playout = _Playout(int(PLAYOUT_KEPT_S * RATE))
        self._playout_reader = None       # resampler to the client's rate
        self.render_samples = 0
        self.effects = SoundEffects(lambda sound_id: self.on_effect_finished(sound_id))
        self.on_effect_finished = lambda sound_id: None

    # ------------------------------------------------------------ control

    def start(self, url, loopback=False, cycle=1, start_pos_ms=0, buffer_ms=BUFFER_MS):
        """Play ``url`` (path or URL) ``cycle`` times (-1: forever) from
        ``start_pos_ms``, decoding up to ``buffer_ms`` ahead; replaces the music
        playing.  ``ParameterError`` for a bad argument; a file that cannot be
        played gives a "failed" state."""
        if not isinstance(url, (str, os.PathLike)) or not str(url):
            raise ParameterError(f"the music must be a path or URL, got {url!r}")
        source = MediaSource(url, self._source_state, cycle=cycle, start_pos_ms=start_pos_ms,
                             buffer_ms=buffer_ms)
        with self._lock:
            old, self.source = self.source, source
            self.loopback = bool(loopback)
            self.paused = False
            self._reset_chain()
        self._playout.clear()
        if old is not None:
            old.on_state = lambda state, reason: None
            old.close()

    def _source_state(self, state, reason):
        if state == "stopped" or state == "failed":
            with self._lock:
                self.paused = False
        self.on_state(state, reason)

    def stop(self):
        """Stop the music (nothing happens without one)."""
        with self._lock:
            source, self.source = self.source, None
        if source is not None:
            source.on_state = lambda state, reason: None
            source.close()
            self.on_state("stopped", "stopped_by_user")

    def pause(self):
        """Pause the music where it is."""
        with self._lock:
            if self.source is None or self.paused:
                return
            self.paused = True
        self.on_state("paused", "paused_by_user")

    def resume(self):
        """Go on after ``pause``."""
        with self._lock:
            if self.source is None or not self.paused:
                return
            self.paused = False
        self.on_state("playing", "resumed_by_user")

    def set_publish_volume(self, volume):
        """Volume of the music in the published stream, 0-100."""
        self.publish_gain = _check("volume", volume, 0, 100) / 100.0

    def set_playout_volume(self, volume):
        """Volume of the music played locally, 0-100."""
        self.playout_gain = _check("volume", volume, 0, 100) / 100.0

    def set_pitch(self, semitones):
        """Pitch of the music, -12 to 12 semitones (0: unchanged)."""
        _check("pitch", semitones, -12, 12, " semitones")
        with self._lock:
            self.pitch = float(semitones)
            self._set_shifters()

    def set_speed(self, percent):
        """Playback speed, 50 to 400 % (100: unchanged); the pitch stays."""
        _check("speed", percent, 50, 400, " %")
        with self._lock:
            self.speed = percent
            self._stretch = None
            self._sped = self._sped[:, :0]
            self._set_shifters()

    def set_position(self, position_ms):
        """Continue from ``position_ms`` in the file; ``ParameterError`` past
        its end or without music."""
        with self._lock:
            if self.source is None:
                raise ParameterError("no music is playing; start_audio_mixing() first")
            self.source.seek(position_ms)
            self._reset_chain()

    def set_ducking(self, enabled, depth_db=-12.0):
        """Duck the music under the voice (``enabled``) by up to ``depth_db`` (-40..0)."""
        _check("depth_db", depth_db, -40, 0, " dB")
        self.ducking = bool(enabled)
        self.duck_depth_db = float(depth_db)

    @property
    def duration_ms(self):
        """The music's length in ms (None before it is open, or without music)."""
        source = self.source
        return None if source is None else source.duration_ms

    @property
    def position_ms(self):
        """Where the music is, ms in the file (None without music)."""
        source = self.source
        if source is None:
            return None
        held = (self._ahead.shape[1] - self._pos) * self.speed / 100.0   # read, not played
        return source.position_ms - held * 1000.0 / RATE

    # ------------------------------------------------------------ processing

    def _reset_chain(self):
        self._stretch = None
        self._sped = self._sped[:, :0]
        self._ahead = self._ahead[:, :0]
        self._pos = 0
        self._shifters = []
        self._set_shifters()

    def _set_shifters(self):
        """PitchShift stages for the pitch plus the speed's correction."""
        total = self.pitch - 12.0 * math.log2(self.speed / 100.0)
        stages = math.ceil(abs(total) / STAGE_SEMITONES - 1e-9)
        if stages == 0:
            self._shifters = []
            return
        if len(self._shifters) != stages:
            self._shifters = [dsp.PitchShift(preserve_formants=False) for _ in range(stages)]
        for fx in self._shifters:
            fx.semitones = total / stages

    def _read_sped(self, n, pad):
        """Up to ``n`` samples of the music at the playback speed, at least
        ``pad`` (zeros where it ends or the worker is behind)."""
        source = self.source
        if self.speed == 100:
            x = source.read(n)
        else:
            if self._stretch is None:
                import soxr
                self._flushed = False
                self._stretch = soxr.ResampleStream(RATE * self.speed / 100.0, RATE, CHANNELS,
                                                    dtype="float32", quality="HQ")
            while self._sped.shape[1] < n:
                want = math.ceil((n - self._sped.shape[1]) * self.speed / 100.0) + 16
                block = source.read(want)
                last = source.finished and not self._flushed
                if block.shape[1] == 0 and not last:
                    break
                # At the end, the resampler gives out what it still holds.
                self._flushed = last
                y = self._stretch.resample_chunk(np.ascontiguousarray(block.T), last=last).T
                self._sped = np.concatenate([self._sped, y.astype(np.float32)], axis=1)
            x, self._sped = self._sped[:, :n], self._sped[:, n:]
        if x.shape[1] < pad:
            x = np.concatenate([x, np.zeros((CHANNELS, pad - x.shape[1]), np.float32)], axis=1)
        return x

    def render(self, n):
        """The next ``n`` samples of music, float32 ``(2, n)`` at 48 kHz, before
        the volumes (silence when paused, stopped or without music)."""
        buffer, start = self._rendered(n)
        return buffer[:, start:start + n]

    def _rendered(self, n):
        """``(buffer, start)``: the next ``n`` samples of music are
        ``buffer[:, start:start + n]`` (a C-contiguous float32 buffer); see
        ``render``."""
        with self._lock:
            if self.source is None or self.paused:
                return np.zeros((CHANNELS, n), np.float32), 0
            have = self._ahead.shape[1] - self._pos
            if have < n:
                x = self._read_sped(max(RENDER_AHEAD, n) - have, pad=n - have)
                for fx in self._shifters:
                    x = fx.process(x, RATE)
                if have:
                    x = np.concatenate([self._ahead[:, self._pos:], x], axis=1)
                self._ahead, self._pos = np.ascontiguousarray(x, np.float32), 0
            start = self._pos
            self._pos += n
            self.render_samples += n
            return self._ahead, start

    def mix_publish(self, voice):
        """The published block: ``voice`` (float32 ``(channels, n)`` at 48 kHz)
        plus the music at the publish volume (unless loopback), ducked under
        the voice if asked, plus the published sound effects, through the
        limiter.  Keeps the music and every effect for the local playout."""
        n = voice.shape[1]
        music_only = not self.loopback and self.source is not None and not self.effects.active
        if music_only and voice.shape[0] in (1, 2) and n:
            out = self._mix_music(np.ascontiguousarray(voice, np.float32))
        else:
            out = self._mix_all(voice)
        return self._limiter.process(out, RATE)      # 2-D in, 2-D out

    def _mix_music(self, voice):
        """``voice`` plus the music, the music kept for the playout: the usual
        frame (no effects), in one kernel call."""
        n = voice.shape[1]
        buffers = self._frame_buffers
        if buffers is None or buffers[0].shape != voice.shape:
            buffers = self._frame_buffers = (np.empty_like(voice),
                                             np.empty((CHANNELS, n), np.float32))
        out, local = buffers
        music, start = self._rendered(n)
        duck_from, duck_to = self._duck_gains(voice)
        publish = self.publish_gain
        playout = self._playout
        with playout.lock:
            kern.mix_music(voice, music, start, duck_from * publish, duck_to * publish,
                           self.playout_gain, out, local, playout.ring, playout.state)
        return out

    def _mix_all(self, voice):
        """``voice`` plus the music (unless loopback) and the effects, all kept
        for the playout: the general case, with NumPy."""
        n = voice.shape[1]
        added, local = None, None
        if not self.loopback and self.source is not None:
            music = self.render(n)
            local = music * np.float32(self.playout_gain)
            added = music * (self._ducked(voice) * np.float32(self.publish_gain))
        if self.effects.active:
            fx_published, fx_local = self.effects.render(n)
            local = fx_local if local is None else local + fx_local
            added = fx_published if added is None else added + fx_published
        if local is not None:
            self._playout.write(local)
        out = voice if added is None else voice + _to_channels(added, voice.shape[0])
        return np.ascontiguousarray(out, np.float32)

    def _duck_gains(self, voice):
        """``(from, to)``: the music's gain under the voice moves from the last
        block's value to this block's over the block (equal while it holds)."""
        n = voice.shape[1]
        if not self.ducking or n == 0:
            target = 1.0
        else:
            level = float(np.sqrt(np.mean(np.square(voice, dtype=np.float64))))
            tau = DUCK_ATTACK_S if level > self._env else DUCK_RELEASE_S
            a = math.exp(-n / (RATE * tau))
            self._env = a * self._env + (1.0 - a) * level
            env_db = 20.0 * math.log10(max(self._env, 1e-9))
            amount = min(1.0, max(0.0, (env_db - DUCK_THRESHOLD_DB) / DUCK_KNEE_DB))
            target = 10.0 ** (self.duck_depth_db * amount / 20.0)
        start, self._duck_gain = self._duck_gain, target
        if abs(target - start) < 1e-6:
            return target, target
        return start, target

    def _ducked(self, voice):
        """The music's gain under the voice (``_duck_gains``): a scalar while
        it holds still, else a per-sample ramp to the new value over the block."""
        start, target = self._duck_gains(voice)
        if start == target:
            return target
        n = voice.shape[1]
        ramp = np.arange(1, n + 1, dtype=np.float32) / np.float32(n)
        return np.float32(start) + np.float32(target - start) * ramp

    def playout(self, n, rate, channels):
        """What to play locally: ``(channels, n)`` at ``rate``: the music at the
        playout volume and the sound effects."""
        if rate == RATE:
            x = self._local(n)
        else:
            if self._playout_reader is None or self._playout_reader.rate != rate:
                from .receiver import _Resampled
                self._playout_reader = _Resampled(CHANNELS, rate)
            x = self._playout_reader.read(n, self._local)
        return _to_channels(x, channels)

    def _local(self, n):
        x = self._playout.read(n)
        if self.loopback and self.source is not None:
            x = x + self.render(n) * np.float32(self.playout_gain)
        return x


class MusicMixing:
    """The music methods of ``Client`` (SDK names); the client calls
    ``_music.mix_publish`` and ``_music.playout`` on its audio paths.

    States reach the event handlers as ``on_audio_mixing_state_changed(state,
    reason)`` (from the music's worker thread or the caller's).  Bad
    arguments raise ``ParameterError``; nothing raises in the audio path.
    """

    _music = None

    def _music_mixer(self):
        if self._music is None:
            music = MusicMixer(
                lambda state, reason: self._emit("on_audio_mixing_state_changed", state, reason))
            music.on_effect_finished = lambda sound_id: self._emit(
                "on_audio_effect_finished", sound_id)
            self._music = music
        return self._music

    def start_audio_mixing(self, path_or_url, loopback=False, cycle=1, start_pos_ms=0):
        """Mix ``path_or_url`` (any file or URL PyAV opens) into the published
        stream and the local playout; ``loopback`` True plays it only locally.
        ``cycle``: times to play it (-1: forever); ``start_pos_ms``: where to
        start.  Returns at once; "playing" or "failed" follows as an event."""
        self._music_mixer().start(path_or_url, loopback, cycle, start_pos_ms)

    def stop_audio_mixing(self):
        """Stop the music."""
        if self._music is not None:
            self._music.stop()

    def pause_audio_mixing(self):
        """Pause the music."""
        if self._music is not None:
            self._music.pause()

    def resume_audio_mixing(self):
        """Resume the paused music."""
        if self._music is not None:
            self._music.resume()

    def adjust_audio_mixing_volume(self, volume):
        """Set the music's ``volume``, 0-100, both published and played locally.

        Raises ``ParameterError`` outside that range.
        """
        _check("volume", volume, 0, 100)
        self._music_mixer().set_publish_volume(volume)
        self._music.set_playout_volume(volume)

    def adjust_audio_mixing_publish_volume(self, volume):
        """Set the music's ``volume`` in the published stream, 0-100.

        Raises ``ParameterError`` outside that range.
        """
        self._music_mixer().set_publish_volume(volume)

    def adjust_audio_mixing_playout_volume(self, volume):
        """Set the music's ``volume`` played locally, 0-100.

        Raises ``ParameterError`` outside that range.
        """
        self._music_mixer().set_playout_volume(volume)

    def set_audio_mixing_pitch(self, pitch):
        """Set the music's ``pitch``: -12 to 12 semitones (0: unchanged).

        Raises ``ParameterError`` outside that range.
        """
        self._music_mixer().set_pitch(pitch)

    def set_audio_mixing_playback_speed(self, speed):
        """Set the music's ``speed``: 50-400 % (100: unchanged); the pitch is kept.

        Raises ``ParameterError`` outside that range.
        """
        self._music_mixer().set_speed(speed)

    def set_audio_mixing_position(self, position_ms):
        """Move the music to ``position_ms`` (ms from the file's start).

        Raises ``ParameterError`` past the end or without music.
        """
        self._music_mixer().set_position(position_ms)

    def enable_audio_mixing_ducking(self, enabled=True, depth_db=-12.0):
        """Duck the music under the voice (``enabled``) by up to ``depth_db``.

        ``depth_db``: -40..0 dB, reached while the voice is well above
        ``DUCK_THRESHOLD_DB``.  Raises ``ParameterError`` outside that range.
        """
        self._music_mixer().set_ducking(enabled, depth_db)

    def get_audio_mixing_duration(self):
        """The music's length in ms (None before it is open or without music)."""
        return None if self._music is None else self._music.duration_ms

    def get_audio_mixing_current_position(self):
        """The music's position in ms (None without music)."""
        return None if self._music is None else self._music.position_ms

    # sound effects (see sound_effects)

    def preload_effect(self, sound_id, path):
        """Decode the file at ``path`` into memory as effect ``sound_id`` (an int).

        Raises ``ParameterError`` for a bad id or a file that cannot be read.
        """
        self._music_mixer().effects.preload(sound_id, path)

    def unload_effect(self, sound_id):
        """Forget effect ``sound_id``, freeing its memory.

        It stops if it plays; an unknown id is ignored.
        """
        self._music_mixer().effects.unload(sound_id)

    def play_effect(self, sound_id, path=None, loop_count=0, pitch=1.0, pan=0.0, gain=100,
                    publish=True):
        """Play effect ``sound_id`` (preloaded, else read from ``path`` now).

        ``loop_count``: extra plays (-1: forever); ``pitch`` 0.5-2.0; ``pan``
        -1..1; ``gain`` 0-100; ``publish``: sent to the channel too, else heard
        only here.  Several play at once; ``on_audio_effect_finished(sound_id)``
        follows the last loop.  Raises ``ParameterError`` for a bad argument.
        """
        self._music_mixer().effects.play(sound_id, path, loop_count, pitch, pan, gain, publish)

    def stop_effect(self, sound_id):
        """Stop effect ``sound_id``.

        Nothing happens if it does not play.
        """
        self._music_mixer().effects.stop(sound_id)

    def stop_all_effects(self):
        """Stop every effect."""
        self._music_mixer().effects.stop_all()

    def pause_effect(self, sound_id):
        """Pause effect ``sound_id`` where it is.

        ``resume_effect`` goes on from there.
        """
        self._music_mixer().effects.pause(sound_id)

    def resume_effect(self, sound_id):
        """Resume effect ``sound_id`` after ``pause_effect``.

        Nothing happens if it is not paused.
        """
        self._music_mixer().effects.resume(sound_id)
