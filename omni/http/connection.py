"""One client connection: aiohttp's, plus the envelope on its early errors and a send timeout.

aiohttp answers a request it cannot parse (a request line over 8,190 bytes, control bytes in
the path, a bad Content-Length) before any route or middleware runs, in plain text, and logs
it at ERROR with a traceback. Here that answer is the JSON envelope and the log is one line.

A client that stops reading a large answer fills the socket's buffers; aiohttp then waits for
it to drain, forever. Here a write that stays blocked for `send_timeout` seconds drops the
connection, which ends the handler waiting on it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from omni.http.errors import ApiError
from omni.http.request_ids import HEADER as REQUEST_ID_HEADER

logger = logging.getLogger("omni.http")

STATUS_MESSAGES = {500: "internal server error", 504: "the request handler timed out"}


class Connection(RequestHandler):
    def __init__(self, manager: web.Server, *, send_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.send_timeout = send_timeout
        self.stalled_send: asyncio.TimerHandle | None = None

    def pause_writing(self) -> None:
        super().pause_writing()
        loop = asyncio.get_running_loop()
        self.stalled_send = loop.call_later(self.send_timeout, self.drop_stalled_reader)

    def resume_writing(self) -> None:
        self.cancel_stalled_send()
        super().resume_writing()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.cancel_stalled_send()
        super().connection_lost(exc)

    def cancel_stalled_send(self) -> None:
        if self.stalled_send is not None:
            self.stalled_send.cancel()
            self.stalled_send = None

    def drop_stalled_reader(self) -> None:
        self.stalled_send = None
        transport = self.transport
        if transport is None:
            return
        peer = transport.get_extra_info("peername")
        logger.info("dropped %s: it read nothing of its answer for %g s", peer, self.send_timeout)
        transport.abort()  # close() would wait for the buffer to drain, which never happens

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """The answer to a request aiohttp refused, or to a handler that raised past the app."""
        if status >= 500:
            logger.error("error handling a request from %s", request.remote, exc_info=exc)
            message = STATUS_MESSAGES.get(status, "server error")
        else:
            message = " ".join((message or "").split()) or "the request could not be read"
            logger.info("refused a request from %s: %s", request.remote, message)
        if request.writer.output_size > 0:
            raise ConnectionError("an answer was already started; the connection is closed")
        response = ApiError(status, message, code="bad_request" if status < 500 else None)
        answer = response.response()
        answer.headers[REQUEST_ID_HEADER] = uuid.uuid4().hex
        answer.force_close()
        return answer


class Server(web.Server):
    """aiohttp's server, whose connections are Connections."""

    send_timeout: float

    def __call__(self) -> RequestHandler:
        return Connection(self, send_timeout=self.send_timeout, loop=self._loop, **self._kwargs)


class AppRunner(web.AppRunner):
    """aiohttp's AppRunner serving through a Server of Connections."""

    def __init__(self, app: web.Application, *, send_timeout: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.send_timeout = send_timeout

    def set_shutdown_timeout(self, seconds: float) -> None:
        """How long `cleanup` lets handlers still running finish before it cancels them."""
        self._shutdown_timeout = seconds

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # The app builds its own web.Server (with its request factory and handler); only the
        # connections it makes change, so its class is swapped rather than rebuilt by hand.
        server.__class__ = Server
        server.send_timeout = self.send_timeout  # type: ignore[attr-defined]
        return server
