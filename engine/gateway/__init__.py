"""The browser gateway: a web page and WebRTC (aiortc, aiohttp) bridged to a channel.

``Gateway`` serves the room page at ``/room/NAME?token=...``; each browser
person who talks becomes a channel member on the server's side, and so does
each listener unless the gateway holds the server's token secret, when the
listeners of a channel share one member.  Modules: ``app`` (the HTTP server,
the JSON API and the status WebSocket), ``person`` (one browser person: a
``Client``, its WebRTC connection, level meters), ``shared`` (the member
that listeners of a channel share, its mix encoded once, and the listeners),
``media`` (the audio tracks between aiortc and the channel), and ``web/``
(the page: plain HTML, CSS and JavaScript).  Needs the ``gateway`` extra:
``pip install stagevox[gateway]``.
"""

from .app import ApiError, Gateway

__all__ = ["ApiError", "Gateway"]
