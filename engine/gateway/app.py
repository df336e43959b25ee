"""The browser gateway: a web page and WebRTC, bridged to a stagevox channel.

    gw = Gateway(("127.0.0.1", 5000), server_key, http_port=8080).start()
    print(gw.url)           # http://127.0.0.1:8080/  ->  /room/NAME?token=...
    ...
    gw.stop()

aiohttp serves the page (``web/``) and a small JSON API; aiortc does the
WebRTC side (ICE, DTLS-SRTP, Opus).  A person who talks (Talk, WHIP) becomes
a ``Person``: a channel ``Client`` joined with the person's own token.  A
listener (Listen, WHEP) does too, unless the gateway was given the server's
token ``secret``: then the listeners of one channel share one member of it
(a ``ChannelFeed``, whose mix is encoded to Opus once for all of them), and
the gateway itself verifies each listener's token with the secret.

HTTP API (JSON bodies; an error is ``{"error": text, "code": code}`` with a
4xx/5xx status):

- ``GET /api/info?token=T``: what the token states (channel, uid, whether
  it may talk) and the voice presets.
- ``POST /api/session`` ``{"channel", "token", "mode": "listen"|"talk",
  "sdp"}``: join and answer the browser's offer; returns ``{"id", "sdp"}``.
- ``GET /api/session/ID/ws``: a WebSocket; the gateway sends the person's
  status (``Person.status``) every 0.25 s and takes requests
  (``Person.command``), answering ``{"error": ...}`` to a bad one.
- ``DELETE /api/session/ID``: leave.

Standard tools (RFC 9725 WHIP, and WHEP): ``POST /whip/CHANNEL`` publishes
(host token), ``POST /whep/CHANNEL`` listens (any token); the body is the
SDP offer (``application/sdp``), the token a ``Bearer`` ``Authorization``
header.  The answer comes back with 201 Created and a ``Location`` that a
``DELETE`` ends.  ICE candidates go in the offer and the answer (no trickle:
a ``PATCH`` gets 405).
"""

import asyncio
import contextlib
import gc
import importlib.resources
import json
import logging
import threading
import time

from aiohttp import WSMsgType, web

from stagevox import dsp
from stagevox.dsp.errors import RefusedError, StagevoxError

from ..token import TokenError, read_claims, verify_token
from ..transport import format_address
from .person import MODES, Person
from .shared import ChannelFeed, Listener

log = logging.getLogger("stagevox.engine.gateway")

#: Seconds between two status messages on a person's WebSocket.
STATUS_INTERVAL_S = 0.25
#: Largest request body, bytes (an SDP offer is a few kB).
MAX_BODY = 64 * 1024
#: HTTP status of each refusal code (the rest are 403).
_REFUSAL_STATUS = {"too_many_hosts": 409, "channel_full": 409, "too_many_channels": 503,
                   "server_busy": 503, "rate_limited": 429, "server_error": 502,
                   "bad_request": 400}
_WEB_FILES = {"room.js": "text/javascript", "room.css": "text/css"}


class ApiError(StagevoxError):
    """A request the gateway refuses: ``status`` (HTTP), ``code`` and the message."""

    def __init__(self, status, code, message):
        super().__init__(message)
        self.status = status
        self.code = code

    def response(self):
        """The error as a JSON response ``{"error", "code"}`` with its status."""
        return web.json_response({"error": str(self), "code": self.code}, status=self.status)


class Gateway:
    """Serve the web page on ``http_host:http_port`` and bridge browsers to the
    stagevox server at ``server_address`` ``(host, port)`` whose public key is
    ``server_key`` (bytes or the text ``stagevox server`` prints).

    ``http_port`` 0 picks a free port (``port`` tells which once started).
    ``join_timeout``: seconds to wait for the server when a person joins.
    ``secret``: the server's token secret (bytes or str), or None.  Given,
    listeners of a channel share one subscription (``feeds``: channel ->
    ``ChannelFeed``); whoever holds the secret can make any token, so give
    it only to a gateway run by the server's operator.  Raises ``ValueError``
    for a bad address, key or an empty secret, ``OSError`` from ``start``
    when the HTTP port cannot be opened.
    """

    def __init__(self, server_address, server_key, http_host="127.0.0.1", http_port=8080, *,
                 join_timeout=5.0, secret=None):
        host, port = server_address
        if not (isinstance(port, int) and 1 <= port <= 65535):
            raise ValueError(f"server_address must be (host, port) with a port in 1..65535, "
                             f"got {server_address!r}")
        if not (isinstance(http_port, int) and 0 <= http_port <= 65535):
            raise ValueError(f"http_port must be in 0..65535 (0: a free one), got {http_port!r}")
        if server_key is None:
            raise ValueError("server_key is needed: the key 'stagevox server' prints at start")
        if secret is not None and len(secret) == 0:
            raise ValueError("secret must be the server's token secret, not empty "
                             "(or None: each listener joins with its own token)")
        self.server_address = (host, port)
        self.server_key = server_key
        self.http_host = http_host
        self.port = http_port
        self.join_timeout = join_timeout
        self.secret = secret
        self.people = {}                 # id -> Person or Listener
        self.feeds = {}                  # channel -> ChannelFeed, once it has joined
        self._feed_starts = {}           # channel -> the task that starts its feed
        self._feed_closes = set()        # tasks closing feeds whose last listener left
        self._loop = None
        self._thread = None
        self._stopping = None
        self._error = None

    # ----------------------------------------------------------- life

    @property
    def url(self):
        """The page's address, ``http://HOST:PORT/``."""
        return f"http://{format_address((self.http_host, self.port))}/"

    def room_url(self, channel, token):
        """The link that opens ``channel`` on the page with ``token``."""
        from urllib.parse import quote
        return f"{self.url}room/{quote(channel, safe='')}?token={quote(token, safe='')}"

    def start(self):
        """Start serving in a background thread; returns ``self``.

        First it loads the kernels every member's ``Client`` uses and calls
        ``gc.freeze()``: the objects alive then (modules, compiled kernels)
        are left out of the garbage collector's full passes, which over them
        stalled every thread of the process for 0.25 to 0.3 s (measured),
        longer than a listener's frames may wait.
        """
        dsp.load_kernels()
        gc.freeze()
        ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main(ready)),
                                        name="stagevox-gateway", daemon=True)
        self._thread.start()
        ready.wait(10.0)
        if self._error is not None:
            self._thread.join(5.0)
            raise self._error
        return self

    def stop(self):
        """Close every person's connection, leave the channels, stop serving."""
        if self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(self._stopping.set)
            except RuntimeError:
                pass
        if self._thread is not None:
            self._thread.join(15.0)
        self._thread = self._loop = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    async def _main(self, ready):
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        app = web.Application(client_max_size=MAX_BODY)
        app.add_routes([
            web.get("/", self._page), web.get("/room/{channel}", self._page),
            web.get("/static/{name}", self._static),
            web.get("/api/info", self._info),
            web.post("/api/session", self._open_session),
            web.delete("/api/session/{id}", self._close_session),
            web.get("/api/session/{id}/ws", self._status_socket),
            web.post("/whip/{channel}", self._whip), web.post("/whep/{channel}", self._whep),
            web.delete("/whip/{channel}/{id}", self._close_session),
            web.delete("/whep/{channel}/{id}", self._close_session),
        ])
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.http_host, self.port)
            await site.start()
        except OSError as exc:
            self._error = OSError(exc.errno, f"cannot serve HTTP on "
                                  f"{format_address((self.http_host, self.port))}: {exc.strerror}")
            await runner.cleanup()
            ready.set()
            return
        self.port = site._server.sockets[0].getsockname()[1]
        ready.set()
        try:
            await self._stopping.wait()
        finally:
            await asyncio.gather(*(p.close() for p in list(self.people.values())),
                                 return_exceptions=True)
            self.people.clear()
            await asyncio.gather(*self._feed_closes, *(f.close() for f in self.feeds.values()),
                                 return_exceptions=True)
            self.feeds.clear()
            await runner.cleanup()

    # ----------------------------------------------------------- page

    async def _page(self, request):
        return web.Response(text=_web_file("room.html"), content_type="text/html")

    async def _static(self, request):
        name = request.match_info["name"]
        if name not in _WEB_FILES:
            raise web.HTTPNotFound(text=f"no file {name!r}")
        return web.Response(text=_web_file(name), content_type=_WEB_FILES[name])

    # ----------------------------------------------------------- API

    async def _info(self, request):
        try:
            claims = _claims(request.query.get("token", ""))
        except ApiError as exc:
            return exc.response()
        from stagevox import presets
        return web.json_response({"channel": claims.channel, "uid": claims.uid,
                                  "can_publish": claims.can_publish,
                                  "expires_at": claims.expires_at,
                                  "presets": ["off", *presets.names()]})

    async def _open_session(self, request):
        try:
            body = await _json_body(request)
            person = await self._join(body)
        except ApiError as exc:
            return exc.response()
        return web.json_response({"id": person.id, "sdp": person.answer, "type": "answer"})

    async def _whip(self, request):
        return await self._ingest_or_egress(request, "whip", "talk")

    async def _whep(self, request):
        return await self._ingest_or_egress(request, "whep", "listen")

    async def _ingest_or_egress(self, request, kind, mode):
        """WHIP (``mode`` "talk", nothing sent back) or WHEP ("listen")."""
        try:
            if request.content_type != "application/sdp":
                raise ApiError(415, "bad_request", f"the body must be an SDP offer "
                               f"(Content-Type: application/sdp), got {request.content_type!r}")
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise ApiError(401, "no_token", "give the token as 'Authorization: Bearer "
                               "TOKEN' (a token from 'stagevox token')")
            channel = request.match_info["channel"]
            sdp = await request.text()
            person = await self._join({"token": token.strip(), "channel": channel, "mode": mode,
                                       "sdp": sdp}, send_channel=(kind == "whep"))
        except ApiError as exc:
            response = exc.response()
            if exc.status == 401:
                response.headers["WWW-Authenticate"] = "Bearer"
            return response
        return web.Response(status=201, text=person.answer, content_type="application/sdp",
                            headers={"Location": f"/{kind}/{channel}/{person.id}"})

    async def _join(self, body, send_channel=True):
        """Check the request, join the person and answer the offer (an ``ApiError`` if not)."""
        token, channel, mode, sdp = (body.get(k) for k in ("token", "channel", "mode", "sdp"))
        claims = _claims(token)
        if channel != claims.channel:
            raise ApiError(403, "wrong_channel", f"this token is for room {claims.channel!r}, "
                                                 f"not {channel!r}")
        if mode not in MODES:
            raise ApiError(400, "bad_request", f"mode must be one of {MODES}, got {mode!r}")
        if mode == "talk" and not claims.can_publish:
            raise ApiError(403, "no_publish_privilege",
                           "this token is for the audience: it can listen but not talk")
        if not isinstance(sdp, str) or not sdp.strip():
            raise ApiError(400, "bad_sdp", "the request has no SDP offer (field 'sdp')")
        if mode == "listen" and send_channel and self.secret is not None:
            person = await self._join_listener(token, claims, sdp)
        else:
            # A Client compiles or loads the kernels when it is made: off the loop.
            person = await asyncio.to_thread(Person, claims, token, mode, send_channel)
            async with self._refusals(person):
                person.answer = await person.start(self.server_address, self.server_key, sdp,
                                                   self.join_timeout)
            # A browser that goes away without a word (its connection fails) is forgotten too.
            person.on_closed = lambda p: self.people.pop(p.id, None)
        self.people[person.id] = person
        log.info("gateway: uid %d %ss in %r", claims.uid, mode, claims.channel)
        return person

    @contextlib.asynccontextmanager
    async def _refusals(self, person):
        """Close ``person`` on an error and turn the server's refusal, its
        silence or a bad offer (``ValueError``) into an ``ApiError``."""
        try:
            yield
        except RefusedError as exc:
            await person.close()
            raise ApiError(_REFUSAL_STATUS.get(exc.code, 403), exc.code, exc.reason) from None
        except TimeoutError:
            await person.close()
            raise ApiError(504, "server_unreachable",
                           f"the channel server at {format_address(self.server_address)} does "
                           f"not answer") from None
        except ValueError as exc:
            await person.close()
            raise ApiError(400, "bad_sdp", str(exc)) from None
        except BaseException:
            await person.close()
            raise

    async def _join_listener(self, token, claims, sdp):
        """A ``Listener`` on the channel's feed, once the token is verified with the secret."""
        try:
            verify_token(self.secret, token, claims.channel, claims.uid)
        except TokenError as exc:
            raise ApiError(401, exc.code, str(exc)) from None
        feed = await self._feed(claims.channel)
        listener = Listener(claims, feed)
        listener.on_closed = self._listener_closed
        async with self._refusals(listener):
            listener.answer = await listener.start(sdp)
        # The token's expiry ends the listening, as the server would end a member's.
        listener.expiry = asyncio.get_running_loop().call_later(
            max(0.0, claims.expires_at - time.time()),
            lambda: asyncio.ensure_future(listener.close()))
        return listener

    async def _feed(self, channel):
        """The started feed of ``channel`` (started now if there is none), counted
        as used by one more listener; raises ``ApiError`` if it cannot join."""
        feed = self.feeds.get(channel)
        if feed is None:
            start = self._feed_starts.get(channel)
            if start is None:
                start = asyncio.ensure_future(self._start_feed(channel))
                self._feed_starts[channel] = start
                start.add_done_callback(lambda _: self._feed_starts.pop(channel, None))
            feed = await asyncio.shield(start)
        feed.users += 1
        return feed

    async def _start_feed(self, channel):
        # A Client compiles or loads the kernels when it is made: off the loop.
        feed = await asyncio.to_thread(ChannelFeed, channel, self.secret)
        try:
            await feed.start(self.server_address, self.server_key, self.join_timeout)
        except RefusedError as exc:
            await feed.close()
            raise ApiError(_REFUSAL_STATUS.get(exc.code, 403), exc.code,
                           f"the gateway's listening member was refused: {exc.reason}") from None
        except TimeoutError:
            await feed.close()
            raise ApiError(504, "server_unreachable",
                           f"the channel server at {format_address(self.server_address)} does "
                           f"not answer") from None
        self.feeds[channel] = feed
        log.info("gateway: listens to %r as uid %d for its listeners", channel, feed.uid)
        return feed

    def _listener_closed(self, listener):
        """Forget ``listener``; the feed leaves the channel with its last listener."""
        self.people.pop(listener.id, None)
        if listener.expiry is not None:
            listener.expiry.cancel()
        feed = listener.feed
        feed.users -= 1
        if feed.users == 0 and self.feeds.get(feed.channel) is feed:
            del self.feeds[feed.channel]
            task = asyncio.ensure_future(feed.close())
            self._feed_closes.add(task)
            task.add_done_callback(self._feed_closes.discard)

    async def _close_session(self, request):
        person = self.people.pop(request.match_info["id"], None)
        if person is None:
            return ApiError(404, "no_session", "no such session (it has ended)").response()
        await person.close()
        return web.json_response({"closed": person.id})

    async def _status_socket(self, request):
        person = self.people.get(request.match_info["id"])
        if person is None:
            return ApiError(404, "no_session", "no such session (it has ended)").response()
        ws = web.WebSocketResponse(heartbeat=10.0)
        await ws.prepare(request)

        async def feed():
            while not ws.closed:
                await ws.send_json(person.status())
                if person.closed:
                    await ws.close()
                    return
                await asyncio.sleep(STATUS_INTERVAL_S)

        sender = asyncio.ensure_future(feed())
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    await person.command(json.loads(msg.data))
                except (ValueError, RefusedError, TimeoutError) as exc:
                    await ws.send_json({"error": str(exc)})
        finally:
            sender.cancel()
        return ws


def _claims(token):
    if not isinstance(token, str) or not token:
        raise ApiError(401, "no_token", "the link has no token (…/room/NAME?token=...)")
    try:
        return read_claims(token)
    except TokenError as exc:
        raise ApiError(401, exc.code, str(exc)) from None


async def _json_body(request):
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "bad_request", "the request body is not JSON") from None
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, "bad_request", f"the request is larger than {MAX_BODY} bytes") from None
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", "the request body must be a JSON object")
    return body


def _web_file(name):
    return importlib.resources.files("stagevox.engine.gateway").joinpath(
        "web", name).read_text("utf-8")
