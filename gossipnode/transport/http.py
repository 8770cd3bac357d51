"""HTTP transport: frames are POSTed to /v1/messages; the same aiohttp app serves REST.

Resources (protocol/SPEC.md §13): a request body is read into one buffer allocated from its
Content-Length (chunked bodies without one are refused with 411); the bytes of all bodies being
read or processed at once are bounded by an inbound budget (over it: 503 with Retry-After);
a body must arrive within `timeout + length / min_rate` seconds, and idle or half-sent
connections are closed after `timeout` (aiohttp's keep-alive timer, which also runs before
the first request). Malformed HTTP is answered 400 by aiohttp and logged as one debug line.

May import: aiohttp, the standard library, wire/ and transport/ (never config or the node).
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import aiohttp
import aiohttp.payload
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from ..wire.codec import Frame
from ..wire.stream import FrameHasher, ReceiveBuffer
from .base import INBOUND_SOURCE, InboundHandler, OutFrame, Refused, TransportError, TransportOptions

log = logging.getLogger(__name__)
CONTENT_TYPE = "application/x-gossipnode"
# Sent for peers of older versions, which used it as a hint for whom to answer. Ignored on
# receipt: a node never sends to an address taken from a header (SPEC §13).
REPLY_TO = "X-Gossipnode-Reply-To"
MESSAGES_PATH = "/v1/messages"
MIB = 1 << 20
SMALL_FRAME = 1 * MIB      # frames up to this size may use the reserve below
SMALL_RESERVE = 32 * MIB   # so PINGs and adverts are not refused while big models are in flight
EXPECT_ABOVE = 1 * MIB     # bodies above this are sent with Expect: 100-continue
RETRY_AFTER_S = 1          # what a 503 asks the sender to wait
BUSY = "busy"


class InboundBudget:
    """Bytes of request bodies being read or processed at once, across all connections."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.peak = 0

    def fits(self, n: int) -> bool:
        cap = self.limit + (SMALL_RESERVE if n <= SMALL_FRAME else 0)
        return self.used + n <= cap

    def take(self, n: int) -> bool:
        if not self.fits(n):
            return False
        self.used += n
        self.peak = max(self.peak, self.used)
        return True

    def give(self, n: int) -> None:
        self.used -= n


class HttpTransport:
    scheme = "http"
    # a request that got no answer says the peer is out of reach (an MQTT failure says nothing:
    # it is the broker link); a refusal (Refused) is an answer
    direct = True
    schemes = ("http", "https")   # https:// peers: nodes with --tls-cert (system CAs, or SSL_CERT_FILE)

    def __init__(self, app: web.Application, address: str, max_size: int, timeout: float = 15.0,
                 path_prefix: str = "", budget: int | None = None, min_rate: float = 1.0 * MIB,
                 local_host: str | None = None, answer_timeout: float | None = None) -> None:
        """`timeout`: idle keep-alive and header time-out, the base of a body's read deadline, and
        the client's wait for an answer to a big frame; `answer_timeout` (default `timeout`): the
        whole request for a small frame (a PING is worth nothing after the ping time-out);
        `min_rate` (bytes/s): the slowest body accepted (and the rate client deadlines assume);
        `budget`: inbound bytes in flight (default: max_size); `local_host`: outbound connections
        leave from this address when it is a specific IP (the node's --host)."""
        self.address = address
        self.local_addr = _local_addr(local_host)
        self.answer_timeout = timeout if answer_timeout is None else answer_timeout
        self.max_size = max_size
        self.timeout = timeout
        self.min_rate = min_rate
        self.budget = InboundBudget(max_size if budget is None else budget)
        self.stats: Counter[str] = Counter()
        self._handler: InboundHandler | None = None
        self._session: aiohttp.ClientSession | None = None
        self.on_reject: Callable[[str], None] = lambda reason: None
        app.router.add_post(path_prefix + MESSAGES_PATH, self._receive, expect_handler=self._expect)

    @classmethod
    def from_options(cls, o: TransportOptions) -> HttpTransport:
        """The registry's factory: on `o.app` (the node's REST app) or on an app of its own."""
        return cls(o.app if o.app is not None else web.Application(), o.http_address, o.max_size,
                   timeout=o.http_timeout, path_prefix=o.path_prefix, budget=o.inbound_budget,
                   min_rate=o.min_rate, local_host=o.local_host, answer_timeout=o.answer_timeout)

    @property
    def addresses(self) -> tuple[str, ...]:
        return (self.address,)

    async def start(self, handler: InboundHandler) -> None:
        self._handler = handler
        # Idle connections are dropped here well before the peer's server closes them (its keep-alive
        # timer is its --http-timeout, by default the same as ours): a request written into a
        # connection the server is closing at that instant fails (ServerDisconnected, reset), and
        # the node takes a healthy peer for out of reach (peer_failed) and skips it in walks.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=64, limit_per_host=8, local_addr=self.local_addr,
                                           keepalive_timeout=self.client_keepalive),
        )

    @property
    def client_keepalive(self) -> float:
        """Seconds an idle outbound connection is reused: half the server-side idle time-out."""
        return self.timeout / 2

    def body_deadline(self, n: int) -> float:
        """Seconds a body of n bytes may take to arrive (server side)."""
        return self.timeout + n / self.min_rate

    def status(self) -> dict[str, Any]:
        return {"inbound_bytes": self.budget.used, "inbound_peak_bytes": self.budget.peak,
                "inbound_budget": self.budget.limit} | dict(self.stats)

    # ---- receiving -------------------------------------------------------------------------
    def _refuse(self, reason: str, status: int, retry: bool = False, close: bool = False) -> web.Response:
        self.stats[reason] += 1
        self.on_reject(reason)
        resp = web.json_response({"rejected": reason}, status=status,
                                 headers={"Retry-After": str(RETRY_AFTER_S)} if retry else None)
        if close:
            resp.force_close()
        return resp

    def _check_headers(self, request: web.Request) -> web.Response | None:
        """The checks that need only the headers (also answered to Expect: 100-continue)."""
        if self._handler is None:
            return web.json_response({"rejected": "not_ready"}, status=503,
                                     headers={"Retry-After": str(RETRY_AFTER_S)})
        n = request.content_length
        if n is None and request.body_exists:  # chunked: no length to size the buffer by
            return self._refuse("length_required", 411, close=True)
        n = n or 0
        if n > self.max_size:
            return self._refuse("too_large", 413, close=True)
        if not self.budget.fits(n):
            return self._refuse(BUSY, 503, retry=True, close=True)
        return None

    async def _expect(self, request: web.Request) -> web.StreamResponse | None:
        if (resp := self._check_headers(request)) is not None:
            return resp
        if request.headers.get("Expect", "").lower() != "100-continue":
            raise web.HTTPExpectationFailed(text="unknown Expect")
        if request.version == aiohttp.HttpVersion11:
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0
        return None

    async def _receive(self, request: web.Request) -> web.StreamResponse:
        if (resp := self._check_headers(request)) is not None:
            return resp
        n = request.content_length or 0
        if not self.budget.take(n):  # the check above and this take see the same state (no await)
            return self._refuse(BUSY, 503, retry=True, close=True)
        try:
            frame = ReceiveBuffer(n)  # the one buffer this body ever occupies
            try:
                async with asyncio.timeout(self.body_deadline(n)):
                    # hashed as it arrives, chunk by chunk while in cache: decode reuses the digests
                    got = await _read_into(request.content, frame, frame.hasher())
            except TimeoutError:
                self.stats["slow_closed"] += 1
                self.on_reject("slow_body")
                if request.transport is not None:
                    request.transport.close()
                return web.json_response({"rejected": "slow_body"}, status=408)
            finally:
                frame.done()
            if got != n:
                return web.json_response({"rejected": "malformed"}, status=400)
            assert self._handler is not None
            token = INBOUND_SOURCE.set(request.remote)   # the node rate-limits joins per source
            try:
                reason = await self._handler(frame, None)
            finally:
                INBOUND_SOURCE.reset(token)
            del frame  # the handler keeps what it needs (zero-copy tensor views)
        finally:
            self.budget.give(n)
        if reason == BUSY:
            self.stats[BUSY] += 1
            return web.json_response({"rejected": reason}, status=503,
                                     headers={"Retry-After": str(RETRY_AFTER_S)})
        if reason == "rate_limited":
            return web.json_response({"rejected": reason}, status=429,
                                     headers={"Retry-After": str(RETRY_AFTER_S)})
        if reason is not None:
            return web.json_response({"rejected": reason}, status=400)
        return web.Response(status=202)

    # ---- sending ---------------------------------------------------------------------------
    def client_timeout(self, size: int) -> aiohttp.ClientTimeout:
        """Sized for the frame (SPEC 15.5): a small one (PING, advert, small model) within
        `answer_timeout` plus its size at the minimum rate, so that a peer behind a cut costs a
        ping time-out, not 30 s on a hung connection; a big one connects in a few seconds, is
        answered within `timeout` of the body's end, and done within 2 x timeout plus its size
        at the minimum rate."""
        if size <= SMALL_FRAME:
            t = self.answer_timeout + size / self.min_rate
            return aiohttp.ClientTimeout(total=t, sock_connect=min(5.0, t), sock_read=t)
        return aiohttp.ClientTimeout(total=2 * self.timeout + size / self.min_rate,
                                     sock_connect=min(5.0, self.timeout), sock_read=self.timeout)

    async def send(self, address: str, frame: OutFrame) -> None:
        if self._session is None:
            raise TransportError("transport not started")
        url = address.rstrip("/") + MESSAGES_PATH
        loop = asyncio.get_running_loop()
        timeout = self.client_timeout(len(frame))
        deadline = loop.time() + timeout.total
        while True:
            try:
                # a Frame's parts are written one after the other (never joined); bytes as they are
                data: Any = FramePayload(frame) if isinstance(frame, Frame) else frame
                async with self._session.post(url, data=data, timeout=timeout,
                                              expect100=len(frame) > EXPECT_ABOVE, headers={
                                                  "Content-Type": CONTENT_TYPE, REPLY_TO: self.address,
                                              }) as resp:
                    if resp.status < 300:
                        return
                    body = (await resp.text())[:200]
                    wait = _retry_after(resp.headers.get("Retry-After")) if resp.status == 503 else None
            except (TimeoutError, aiohttp.ClientError, OSError) as e:
                raise TransportError(f"{url}: {type(e).__name__}: {e}") from e
            # 503 (the receiver is busy): wait as asked, then try again until the deadline.
            if wait is None or loop.time() + wait >= deadline:
                raise Refused(f"{url}: HTTP {resp.status} {body}")
            await asyncio.sleep(wait * random.uniform(1.0, 1.5))

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _local_addr(host: str | None) -> tuple[str, int] | None:
    """(host, 0) for a specific IP address; None for a wildcard or a name (let the OS pick)."""
    try:
        ip = ipaddress.ip_address((host or "").strip("[]"))
    except ValueError:
        return None
    return None if ip.is_unspecified else (str(ip), 0)


def _retry_after(value: str | None) -> float:
    try:
        return min(max(float(value or RETRY_AFTER_S), 0.1), 10.0)
    except ValueError:
        return float(RETRY_AFTER_S)


class FramePayload(aiohttp.payload.Payload):
    """A request body written as the frame's parts, one transport write each: the tensor
    buffers go to the socket from where they are (zero-copy on our side), never joined."""

    def __init__(self, frame: Frame) -> None:
        super().__init__(frame, content_type=CONTENT_TYPE)
        self._size = len(frame)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return bytes(self._value).decode(encoding, errors)

    async def write(self, writer: Any) -> None:
        for part in self._value.parts:
            await writer.write(part)

    async def write_with_length(self, writer: Any, content_length: int | None) -> None:
        left = len(self._value) if content_length is None else content_length
        for part in self._value.parts:
            if left <= 0:
                break
            await writer.write(part if len(part) <= left else memoryview(part)[:left])
            left -= len(part)


async def _read_into(content: aiohttp.StreamReader, buf: bytearray | ReceiveBuffer,
                     hasher: FrameHasher | None = None) -> int:
    """Copy the body into the preallocated buffer chunk by chunk, feeding the hasher each chunk
    while it is in cache; returns the bytes read."""
    rb = buf if isinstance(buf, ReceiveBuffer) else None
    view = rb.view() if rb is not None else memoryview(buf)
    n = len(view)
    pos = 0
    try:
        while pos < n:
            chunk = await content.readany()
            if not chunk:
                break
            k = min(len(chunk), n - pos)
            if rb is not None:
                rb.reserve(pos + k)   # pages for what arrived (and a window ahead), not for the claim
            view[pos:pos + k] = chunk[:k] if k < len(chunk) else chunk
            pos += k
            if hasher is not None:
                hasher.feed(pos)
    finally:
        view.release()
    return pos


# ---- the HTTP server: keep-alive time-out, quiet malformed requests, counted closes ----------
class _ServerLog(logging.LoggerAdapter):
    """aiohttp.server's logger, except that a malformed HTTP request (one the parser rejects;
    aiohttp answers it 400) is counted and logged as one debug line, not a traceback."""

    def __init__(self, stats: Counter[str]) -> None:
        super().__init__(logging.getLogger("aiohttp.server"), {})
        self.stats = stats

    def _quiet(self, exc_info: Any) -> bool:
        if isinstance(exc_info, HttpProcessingError):
            self.stats["bad_requests"] += 1
            self.logger.debug("malformed HTTP request: %s", str(exc_info).replace("\n", " ")[:200])
            return True
        return False

    def exception(self, msg: Any, *args: Any, exc_info: Any = True, **kw: Any) -> None:
        if not self._quiet(exc_info):
            super().exception(msg, *args, exc_info=exc_info, **kw)

    def debug(self, msg: Any, *args: Any, **kw: Any) -> None:
        if not self._quiet(kw.get("exc_info")):
            super().debug(msg, *args, **kw)


def _counting_server(server: web.Server, stats: Counter[str]) -> None:
    """Count connections aiohttp closes on its keep-alive timer (idle, or a request's headers
    never completed). Relies on aiohttp internals; where they differ nothing is counted."""
    from aiohttp.web_protocol import RequestHandler

    if not hasattr(RequestHandler, "_process_keepalive"):
        return

    class Handler(RequestHandler):
        def _process_keepalive(self) -> None:
            before = self._force_close
            super()._process_keepalive()
            if self._force_close and not before:
                stats["idle_closed"] += 1

    class Server(type(server)):  # type: ignore[misc]
        def __call__(self):  # type: ignore[no-untyped-def]
            try:
                return Handler(self, loop=self._loop, **self._kwargs)
            except Exception:
                return super().__call__()

    try:
        server.__class__ = Server
    except TypeError:
        pass


class Runner(web.AppRunner):
    def __init__(self, app: web.Application, transport: HttpTransport | None, **kw: Any) -> None:
        self._stats = transport.stats if transport is not None else Counter()
        timeout = transport.timeout if transport is not None else 15.0
        super().__init__(app, keepalive_timeout=timeout, logger=_ServerLog(self._stats),
                         lingering_time=min(10.0, timeout), **kw)

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        _counting_server(server, self._stats)
        return server
