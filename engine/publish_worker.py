"""The process of one CDN push: AAC-LC packets in on stdin (the channel's
mix, encoded once in the server for all its URLs), muxed as FLV and sent
to an RTMP URL with PyAV.

It is a process of its own because FFmpeg's RTMP handshake and socket
writes run inside PyAV calls that hold Python's GIL: in the server's
process, a CDN that accepts a connection and then stalls would freeze the
whole server.  Here it freezes only this process, which the server's
``publish.RtmpPublisher`` watches and replaces.

Run as ``python -P publish_worker.py URL RATE CHANNELS BITRATE``.
stdin: packets one after another, each a ``RECORD`` header (pts in samples
at RATE, little-endian int64; length, uint32) and that many bytes of raw
AAC; end of file ends the stream cleanly.  The stream's header (its
AudioSpecificConfig) is that of FFmpeg's AAC encoder opened here with the
same RATE, CHANNELS and BITRATE, as the server's is.  stdout: the line
``running`` once the RTMP connection is up.  Exit status 0 after a clean
end, 1 (and one line on stderr) when the connection fails or breaks.
"""

import fractions
import struct
import sys

#: A packet's header on stdin: pts, length.
RECORD = "<qI"
#: The server's encoder options (``publish.AAC_OPTIONS``), so the headers match.
AAC_OPTIONS = {"aac_coder": "fast"}
#: Seconds FFmpeg may wait for the RTMP server when opening.
OPEN_TIMEOUT_S = 5.0


def push(url, rate, channels, bitrate, source, ready):
    """Mux the AAC packets read from the binary stream ``source`` as FLV and
    push them to ``url``; ``ready()`` is called once connected.  Raises
    ``av.error.FFmpegError`` or ``OSError`` when the connection fails."""
    import av
    header = struct.calcsize(RECORD)
    time_base = fractions.Fraction(1, rate)
    container = av.open(url, "w", format="flv", timeout=OPEN_TIMEOUT_S)
    try:
        stream = container.add_stream("aac", rate=rate)
        stream.layout = "mono" if channels == 1 else "stereo"
        stream.bit_rate = bitrate
        stream.codec_context.options = AAC_OPTIONS
        container.start_encoding()              # the RTMP handshake
        ready()
        first = None
        while True:
            head = source.read(header)
            if len(head) < header:
                break
            pts, size = struct.unpack(RECORD, head)
            data = source.read(size)
            if len(data) < size:
                break
            if first is None:
                first = pts
            packet = av.Packet(data)
            packet.stream = stream
            packet.pts = packet.dts = pts - first
            packet.time_base = time_base
            container.mux(packet)
    finally:
        container.close()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 4:
        print("usage: python -P publish_worker.py URL RATE CHANNELS BITRATE", file=sys.stderr)
        return 2
    url = argv[0]
    rate, channels, bitrate = (int(a) for a in argv[1:])

    def ready():
        print("running", flush=True)
    try:
        push(url, rate, channels, bitrate, sys.stdin.buffer, ready)
    except Exception as exc:         # reported to the server, which tries again
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
