"""The process that encodes one CDN push: raw mixes in on stdin, AAC-LC
muxed as FLV and sent to an RTMP URL with PyAV.

It is a process of its own because FFmpeg's RTMP handshake and socket
writes run inside PyAV calls that hold Python's GIL: in the server's
process, a CDN that accepts a connection and then stalls would freeze the
whole server.  Here it freezes only this process, which the server's
``publish.RtmpPublisher`` watches and replaces.

Run as ``python -P publish_worker.py URL RATE CHANNELS BITRATE FRAME``.
stdin: float32 planar frames of ``(CHANNELS, FRAME)`` samples at 48 kHz, one
after another; end of file ends the stream cleanly.  stdout: the line
``running`` once the RTMP connection is up.  Exit status 0 after a clean
end, 1 (and one line on stderr) when the connection fails or breaks.
"""

import fractions
import sys

import numpy as np

#: The input's sample rate, Hz.
INPUT_RATE = 48000
#: FFmpeg's AAC encoder: the fast coder (about a third of the CPU of the
#: default "twoloop" one, measured 2.7 % against 7.6 % of a core for 48 kHz
#: stereo at 128 kb/s).
AAC_OPTIONS = {"aac_coder": "fast"}
#: Seconds FFmpeg may wait for the RTMP server when opening.
OPEN_TIMEOUT_S = 5.0


def push(url, rate, channels, bitrate, frame_samples, source, ready):
    """Encode the frames of ``frame_samples`` read from the binary stream
    ``source`` and push them to ``url``; ``ready()`` is called once
    connected.  Raises ``av.error.FFmpegError`` or ``OSError`` when the
    connection fails."""
    import av
    frame_bytes = 4 * channels * frame_samples
    layout = "mono" if channels == 1 else "stereo"
    container = av.open(url, "w", format="flv", timeout=OPEN_TIMEOUT_S)
    try:
        stream = container.add_stream("aac", rate=rate)
        stream.layout = layout
        stream.bit_rate = bitrate
        stream.codec_context.options = AAC_OPTIONS
        container.start_encoding()              # the RTMP handshake
        ready()
        pts = 0
        while True:
            data = source.read(frame_bytes)
            if len(data) < frame_bytes:
                break
            pcm = np.frombuffer(data, np.float32).reshape(channels, frame_samples)
            frame = av.AudioFrame.from_ndarray(pcm, format="fltp", layout=layout)
            frame.sample_rate = INPUT_RATE
            frame.pts = pts
            frame.time_base = fractions.Fraction(1, INPUT_RATE)
            pts += frame_samples
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    finally:
        container.close()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 5:
        print("usage: python -P publish_worker.py URL RATE CHANNELS BITRATE FRAME",
              file=sys.stderr)
        return 2
    url = argv[0]
    rate, channels, bitrate, frame_samples = (int(a) for a in argv[1:])

    def ready():
        print("running", flush=True)
    try:
        push(url, rate, channels, bitrate, frame_samples, sys.stdin.buffer, ready)
    except Exception as exc:         # reported to the server, which tries again
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
