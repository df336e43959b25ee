"""The CDN-push options of the command line: ``stagevox server --publish
CHANNEL=URL`` and ``stagevox host --publish-url URL`` (both repeatable).

``engine.cli`` calls these; errors are ``ValueError`` naming the option and
the valid form, which the command turns into its usage error.
"""

import sys
import time

from .publish import check_url

#: Seconds between looks for the channels a server has yet to push.
POLL_S = 0.2


def add_server_option(parser):
    parser.add_argument("--publish", action="append", default=[], metavar="CHANNEL=URL",
                        help="push CHANNEL's mix to URL (rtmp:// or rtmps://, AAC in FLV) "
                             "from when it has members; repeatable")
    parser.add_argument("--allow-publish", action="append", default=[], metavar="PREFIX",
                        help="let hosts have their channel pushed to URLs that start with "
                             "PREFIX (e.g. rtmp://cdn.example/live/); repeatable; none by "
                             "default")


def add_host_option(parser):
    parser.add_argument("--publish-url", action="append", default=[], metavar="URL",
                        help="have the server push this channel's mix to URL (rtmp:// or "
                             "rtmps://) while this host streams; repeatable")


def parse_publish(values):
    """``[(channel, url), ...]`` from ``--publish`` values; ``ValueError``
    naming a value that is not ``CHANNEL=rtmp://...``."""
    pairs = []
    for value in values:
        channel, sep, url = value.partition("=")
        if not sep or not channel:
            raise ValueError(f"--publish takes CHANNEL=URL (e.g. room=rtmp://cdn/live/room), "
                             f"got {value!r}")
        try:
            check_url(url)
        except ValueError as exc:
            raise ValueError(f"--publish {value!r}: {exc}") from None
        pairs.append((channel, url))
    return pairs


def check_urls(urls):
    """``--publish-url`` values checked before joining; ``ValueError`` for a bad one."""
    for url in urls:
        try:
            check_url(url)
        except ValueError as exc:
            raise ValueError(f"--publish-url: {exc}") from None
    return urls


class StateLog:
    """Prints every CDN push state change to stderr, one line each."""

    def on_rtmp_streaming_state_changed(self, url, state, reason):
        print(f"publish {url}: {state} ({reason})", file=sys.stderr, flush=True)


class ServerPublishes:
    """The ``--publish`` pairs of a running server: each starts once its
    channel has members (a server mixes only a channel it serves)."""

    def __init__(self, server, pairs):
        self.server = server
        self.pending = list(pairs)
        if self.pending:
            server.register_event_handler(StateLog())

    def wait(self, seconds):
        """Sleep up to ``seconds``, starting the pushes whose channel appeared."""
        if not self.pending:
            time.sleep(seconds)
            return
        deadline = time.monotonic() + seconds
        while self.pending and time.monotonic() < deadline:
            for channel, url in list(self.pending):
                if self.server.members(channel):
                    self.pending.remove((channel, url))
                    try:
                        self.server.add_publish_stream_url(channel, url)
                    except ValueError as exc:     # e.g. encrypted end to end
                        print(f"publish {url}: not started: {exc}", file=sys.stderr,
                              flush=True)
            time.sleep(POLL_S)


def host_publish(client, urls):
    """Ask the server to push the host's channel to each URL; the client's
    ``RefusedError`` or ``TimeoutError`` passes on."""
    for url in urls:
        client.add_publish_stream_url(url)
        print(f"host: the server pushes the channel to {url}", file=sys.stderr, flush=True)


def host_unpublish(client, urls):
    """Ask the server to stop the pushes this host asked for (best effort:
    the host is leaving)."""
    for url in urls:
        try:
            client.remove_publish_stream_url(url, timeout=2.0)
        except (RuntimeError, TimeoutError, ValueError) as exc:
            print(f"host: could not stop the push to {url}: {exc}", file=sys.stderr,
                  flush=True)
