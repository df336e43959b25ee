"""Reading audio files that libsndfile cannot read (AAC, M4A, WMA, ...) with
PyAV (FFmpeg), behind the part of ``soundfile.SoundFile`` that
``fileio`` uses: ``samplerate``, ``channels``, ``frames``, ``subtype``,
``read(n, dtype="float32", always_2d=True)`` and ``close``.
"""

import numpy as np


class AvReader:
    """The first audio stream of ``path``, decoded block by block.

    ``frames`` is the length the container declares (an estimate for some
    formats; the reader stops where the audio really ends).  ``subtype`` is
    the codec's name in capitals (``"AAC"``).  Raises ``ValueError`` when
    FFmpeg cannot open the file or it has no audio stream.
    """

    def __init__(self, path):
        import av
        try:
            self._container = av.open(str(path))
        except av.FFmpegError as exc:
            raise ValueError(str(exc)) from None
        try:
            if not self._container.streams.audio:
                raise ValueError("no audio stream")
            stream = self._container.streams.audio[0]
            self.samplerate = int(stream.rate)
            self.channels = int(stream.channels)
            self.subtype = stream.codec_context.name.upper()
            if stream.duration is not None:
                seconds = float(stream.duration * stream.time_base)
            else:
                seconds = (self._container.duration or 0) / av.time_base
            self.frames = int(round(seconds * self.samplerate))
        except BaseException:
            self._container.close()
            raise
        self._resampler = av.AudioResampler(format="fltp", layout=stream.layout,
                                            rate=self.samplerate)
        self._frames = self._decode(stream)
        self._pending = []
        self._pending_frames = 0

    def _decode(self, stream):
        for frame in self._container.decode(stream):
            yield from self._resampler.resample(frame)
        yield from self._resampler.resample(None)

    def read(self, frames, dtype="float32", always_2d=True):
        """Up to ``frames`` frames as a float32 ``(frames, channels)`` array
        (fewer at the end, none after it)."""
        while self._pending_frames < frames:
            frame = next(self._frames, None)
            if frame is None:
                break
            block = frame.to_ndarray().reshape(self.channels, -1)
            self._pending.append(block)
            self._pending_frames += block.shape[1]
        if not self._pending:
            return np.zeros((0, self.channels), np.float32)
        joined = np.concatenate(self._pending, axis=1)
        out, rest = joined[:, :frames], joined[:, frames:]
        self._pending = [rest] if rest.shape[1] else []
        self._pending_frames = rest.shape[1]
        return np.ascontiguousarray(out.T, dtype=np.float32)

    def close(self):
        """Close the file."""
        self._container.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
