"""Upstream WebSocket servers for the outbound-connection and ``wsgate probe`` tests: a Python
``websockets`` server on its own thread (plain, or TLS with a ``TestPKI`` leaf) that records what
every peer sent and how it closed, and a listener that never answers."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

from .constants import HOST, STEP_TIMEOUT
from .waiting import wait_until


class UpstreamPeer:
    """One connection an ``Upstream`` accepted."""

    def __init__(self, ws):
        self.ws = ws
        self.path = ws.request.path
        self.headers = ws.request.headers  # case-insensitive lookups
        self.messages: list = []  # str for text, bytes for binary, in arrival order
        self.close_code: int | None = None  # the code the peer sent; 1006 for none
        self.ended = threading.Event()

    def wait_messages(self, count: int, timeout: float = STEP_TIMEOUT) -> list:
        wait_until(lambda: len(self.messages) >= count, timeout,
                   f"{count} messages at the upstream (got {self.messages!r})")
        return list(self.messages)

    def wait_closed(self, timeout: float = STEP_TIMEOUT) -> int | None:
        if not self.ended.wait(timeout):
            raise AssertionError(f"upstream connection still open after {timeout}s")
        return self.close_code


class Upstream:
    """A ``websockets`` server on a background thread.

    ``greeting`` (str or bytes) is sent to every peer on connect; ``echo`` sends every message
    back; ``close_with=(code, reason)`` closes right after the greeting; ``require_header=(name,
    value)`` answers 403 to an upgrade without that header value. ``port`` reuses a port (a
    restart). ``peers`` lists every accepted connection in order.
    """

    __test__ = False

    def __init__(self, *, greeting=None, echo: bool = False, close_with=None, require_header=None,
                 ssl_context: ssl.SSLContext | None = None, host: str = HOST, port: int = 0):
        self.greeting = greeting
        self.echo = echo
        self.close_with = close_with
        self.require_header = require_header
        self.ssl_context = ssl_context
        self.host = host
        self.port = port
        self.peers: list[UpstreamPeer] = []
        self.refused: list[str] = []  # paths of upgrades answered 403
        self.server_names: list = []  # the SNI of every TLS handshake (None when none was sent)
        if ssl_context is not None:
            ssl_context.sni_callback = lambda _sock, name, _ctx: self.server_names.append(name)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server = None
        self._stopped: asyncio.Event | None = None
        self._error: BaseException | None = None

    # lifecycle

    def start(self) -> "Upstream":
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="upstream", daemon=True)
        self._thread.start()
        if not ready.wait(STEP_TIMEOUT):
            raise AssertionError("upstream server did not start")
        if self._error is not None:
            raise AssertionError(f"upstream server did not start: {self._error!r}")
        return self

    def _run(self, ready: threading.Event) -> None:
        quiet = logging.getLogger("wsgate-tests.upstream")

        async def main():
            try:
                self._server = await serve(self._handle, self.host, self.port, ssl=self.ssl_context,
                                           process_request=self._check_request, ping_interval=None,
                                           close_timeout=2, logger=quiet)
            except BaseException as exc:  # reported by start()
                self._error = exc
                ready.set()
                return
            self.port = self._server.sockets[0].getsockname()[1]
            self._stopped = asyncio.Event()
            ready.set()
            await self._stopped.wait()

        try:
            self._loop.run_until_complete(main())
        finally:
            self._loop.close()

    def _check_request(self, connection, request):
        if self.require_header is not None:
            name, value = self.require_header
            if request.headers.get(name) != value:
                self.refused.append(request.path)
                return connection.respond(403, f"header {name} missing or wrong\n")
        return None

    async def _handle(self, ws) -> None:
        peer = UpstreamPeer(ws)
        self.peers.append(peer)
        try:
            if self.greeting is not None:
                await ws.send(self.greeting)
            if self.close_with is not None:
                await ws.close(*self.close_with)
                return
            async for message in ws:
                peer.messages.append(message)
                if self.echo:
                    await ws.send(message)
        except ConnectionClosed:
            pass
        finally:
            await ws.wait_closed()
            peer.close_code = ws.close_code
            peer.ended.set()

    def _call(self, coro, timeout: float = STEP_TIMEOUT):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def stop(self) -> None:
        """Close every connection with 1001 and stop listening."""
        self._shutdown(abrupt=False)

    def kill(self) -> None:
        """Vanish like a killed process: stop listening and reset every connection (no close frame)."""
        self._shutdown(abrupt=True)

    def _shutdown(self, abrupt: bool) -> None:
        if self._thread is None or not self._thread.is_alive() or self._stopped is None:
            return

        async def shutdown():
            if abrupt:
                self._server.close(close_connections=False)
                for peer in self.peers:
                    peer.ws.transport.abort()
            else:
                self._server.close()
            try:
                await asyncio.wait_for(self._server.wait_closed(), STEP_TIMEOUT)
            finally:
                self._stopped.set()

        try:
            self._call(shutdown(), STEP_TIMEOUT + 2)
        finally:
            self._thread.join(STEP_TIMEOUT)

    # use

    def url(self, path: str = "/", host: str | None = None) -> str:
        scheme = "wss" if self.ssl_context is not None else "ws"
        return f"{scheme}://{host or self.host}:{self.port}{path}"

    def send(self, message, peer: UpstreamPeer | None = None) -> None:
        """Send a message (str: text, bytes: binary, a list of either: one fragmented message) to
        ``peer`` (default: the latest one)."""
        peer = peer or self.peers[-1]
        self._call(peer.ws.send(message))

    def ping(self, peer: UpstreamPeer | None = None, timeout: float = STEP_TIMEOUT) -> None:
        """Ping ``peer`` (default: the latest one) and wait for its pong."""
        peer = peer or self.peers[-1]

        async def ping():
            waiter = await peer.ws.ping(b"are you there")
            await asyncio.wait_for(waiter, timeout)

        self._call(ping(), timeout + 1)

    def wait_peer(self, count: int = 1, timeout: float = STEP_TIMEOUT) -> UpstreamPeer:
        """Wait until ``count`` connections were accepted; return the ``count``-th."""
        wait_until(lambda: len(self.peers) >= count, timeout, f"connection #{count} at the upstream on port {self.port}")
        return self.peers[count - 1]


class SilentListener:
    """A TCP listener that accepts (the kernel does) but never answers: a handshake that hangs."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((HOST, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]

    def url(self, path: str = "/") -> str:
        return f"ws://{HOST}:{self.port}{path}"

    def __enter__(self) -> "SilentListener":
        return self

    def __exit__(self, *exc) -> None:
        self.sock.close()
