"""HTTP transport: frames are POSTed to /v1/messages; the same aiohttp app serves REST."""
from __future__ import annotations

import logging
from collections.abc import Callable

import aiohttp
from aiohttp import web

from .base import InboundHandler, TransportError

log = logging.getLogger(__name__)
CONTENT_TYPE = "application/x-gossipnode"
REPLY_TO = "X-Gossipnode-Reply-To"
MESSAGES_PATH = "/v1/messages"


class HttpTransport:
    scheme = "http"

    def __init__(self, app: web.Application, address: str, max_size: int, timeout: float = 30.0,
                 path_prefix: str = "") -> None:
        self.address = address
        self.max_size = max_size
        self.timeout = timeout
        self._handler: InboundHandler | None = None
        self._session: aiohttp.ClientSession | None = None
        self.on_reject: Callable[[str], None] = lambda reason: None
        app.router.add_post(path_prefix + MESSAGES_PATH, self._receive)

    @property
    def addresses(self) -> tuple[str, ...]:
        return (self.address,)

    async def start(self, handler: InboundHandler) -> None:
        self._handler = handler
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout, connect=5.0),
            connector=aiohttp.TCPConnector(limit=64, limit_per_host=8),
        )

    async def _receive(self, request: web.Request) -> web.Response:
        if self._handler is None:
            return web.json_response({"rejected": "not_ready"}, status=503)
        too_large = request.content_length is not None and request.content_length > self.max_size
        if not too_large:
            try:
                frame = await _read_limited(request, self.max_size)
            except ValueError:
                too_large = True
        if too_large:
            self.on_reject("too_large")
            return web.json_response({"rejected": "too_large"}, status=413)
        reason = await self._handler(frame, request.headers.get(REPLY_TO))
        if reason is not None:
            return web.json_response({"rejected": reason}, status=400)
        return web.Response(status=202)

    async def send(self, address: str, frame: bytes) -> None:
        if self._session is None:
            raise TransportError("transport not started")
        url = address.rstrip("/") + MESSAGES_PATH
        try:
            async with self._session.post(url, data=frame, headers={
                "Content-Type": CONTENT_TYPE, REPLY_TO: self.address,
            }) as resp:
                if resp.status >= 300:
                    body = (await resp.text())[:200]
                    raise TransportError(f"{url}: HTTP {resp.status} {body}")
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            raise TransportError(f"{url}: {type(e).__name__}: {e}") from e

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def _read_limited(request: web.Request, limit: int) -> bytes:
    buf = bytearray()
    async for chunk in request.content.iter_chunked(1 << 20):
        buf += chunk
        if len(buf) > limit:
            raise ValueError("too large")
    return bytes(buf)
