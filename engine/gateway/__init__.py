"""The browser gateway: a web page and WebRTC (aiortc, aiohttp) bridged to a channel.

``Gateway`` serves the room page at ``/room/NAME?token=...``; each browser
person becomes a channel member on the server's side.  Modules: ``app``
(the HTTP server, the JSON API and the status WebSocket), ``person`` (one
browser person: a ``Client``, its WebRTC connection, level meters),
``media`` (the audio tracks between aiortc and the ``Client``), and ``web/``
(the page: plain HTML, CSS and JavaScript).  Needs the ``gateway`` extra:
``pip install stagevox[gateway]``.
"""

from .app import ApiError, Gateway

__all__ = ["ApiError", "Gateway"]
