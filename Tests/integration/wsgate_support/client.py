"""asyncio helpers around the ``websockets`` client: bounded connect, receive and close."""

from __future__ import annotations

import asyncio
import json

from websockets.asyncio.client import connect as _ws_connect
from websockets.exceptions import ConnectionClosed

from .constants import STEP_TIMEOUT, TEST_TIMEOUT


def run(coro, timeout: float = TEST_TIMEOUT):
    """Run one test coroutine with an overall bound."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def connect(url: str, **kwargs):
    """``websockets`` client connect with bounded timeouts and no proxy/keepalive."""
    kwargs.setdefault("open_timeout", STEP_TIMEOUT)
    kwargs.setdefault("close_timeout", 2)
    kwargs.setdefault("ping_interval", None)
    kwargs.setdefault("proxy", None)
    return _ws_connect(url, **kwargs)


def socket_loop(socket_id: str):
    """The event loop index inside a socket id (``prefix-loop-counter``), or None."""
    parts = socket_id.split("-")
    return parts[1] if len(parts) == 3 else None


async def connect_on_every_loop(url: str, per_loop: int, loops: int = 2, attempts: int = 200, **kwargs):
    """``per_loop`` sockets on each of ``loops`` event loops, for a route whose first message is the
    socket id: returns (sockets, ids), sockets grouped loop by loop. ``kwargs`` go to ``connect``.

    The kernel spreads connections over the loops' SO_REUSEPORT sockets by a hash of the client's
    port, so a fixed number of connections can all land on one loop; connect until every loop has
    its share and close the surplus.
    """
    by_loop: dict[str, list] = {}
    surplus = []
    try:
        for _ in range(attempts):
            ws = await connect(url, **kwargs)
            socket_id = await recv(ws)
            placed = by_loop.setdefault(socket_loop(socket_id), [])
            (placed if len(placed) < per_loop else surplus).append((ws, socket_id))
            if len(by_loop) == loops and all(len(p) == per_loop for p in by_loop.values()):
                chosen = [pair for key in sorted(by_loop) for pair in by_loop[key]]
                return [ws for ws, _ in chosen], [i for _, i in chosen]
    finally:
        for ws, _ in surplus:
            await ws.close()
    raise AssertionError(f"{attempts} connections did not give {per_loop} on each of {loops} loops: "
                         f"{ {k: len(v) for k, v in by_loop.items()} }")


async def recv(ws, timeout: float = STEP_TIMEOUT):
    try:
        return await asyncio.wait_for(ws.recv(), timeout)
    except asyncio.TimeoutError:
        raise AssertionError(f"no message arrived within {timeout}s") from None


async def recv_json(ws, timeout: float = STEP_TIMEOUT):
    msg = await recv(ws, timeout)
    assert isinstance(msg, str), f"expected a text message carrying JSON, got {msg!r}"
    return json.loads(msg)


async def evaluate(ws, expression: str):
    """Sends a Lua expression to a socket whose script evaluates it and answers its results as
    JSON ``{n=, r=}`` (the EVAL scripts of the tests); returns "<nil>" for no result, the result,
    or the list of results."""
    await ws.send(expression)
    reply = await recv_json(ws)
    if reply["n"] == 0:
        return "<nil>"
    return reply["r"][0] if reply["n"] == 1 else reply["r"]


def evaluate_each(url: str, *expressions: str) -> list:
    """Opens one socket on a route running EVAL_SCRIPT and evaluates the expressions in turn on
    it; returns their results as ``evaluate`` gives them."""
    async def main():
        async with connect(url) as ws:
            await recv(ws)  # its socket id
            return [await evaluate(ws, expression) for expression in expressions]
    return run(main())


async def _recv_by(ws, deadline: float):
    """The next message; ``asyncio.TimeoutError`` once the loop's clock passes ``deadline``."""
    remaining = deadline - asyncio.get_running_loop().time()
    if remaining <= 0:
        raise asyncio.TimeoutError
    return await asyncio.wait_for(ws.recv(), remaining)


async def recv_until(ws, predicate, timeout: float = STEP_TIMEOUT):
    """Receive messages until ``predicate(msg)`` is true; return (msg, skipped)."""
    skipped = []
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            msg = await _recv_by(ws, deadline)
        except asyncio.TimeoutError:
            raise AssertionError(f"no matching message within {timeout}s; got {skipped!r}") from None
        if predicate(msg):
            return msg, skipped
        skipped.append(msg)


async def drain(ws, duration: float):
    """Collect every message arriving within ``duration`` seconds."""
    got = []
    deadline = asyncio.get_running_loop().time() + duration
    while True:
        try:
            got.append(await _recv_by(ws, deadline))
        except asyncio.TimeoutError:
            return got


async def close_code(ws, timeout: float = STEP_TIMEOUT):
    """Read until the server closes the connection; return (close code, messages read).

    The code is ``None`` when the TCP connection ended without a close frame.
    Fails the test if the connection is still open after ``timeout`` seconds.
    """
    messages = []

    async def read_all():
        while True:
            messages.append(await ws.recv())

    try:
        await asyncio.wait_for(read_all(), timeout)
    except ConnectionClosed as exc:
        return (exc.rcvd.code if exc.rcvd is not None else None), messages
    except asyncio.TimeoutError:
        raise AssertionError(
            f"connection still open after {timeout}s; messages: {messages!r}"
        ) from None
    raise AssertionError("unreachable")


def as_object(value):
    """Lua's empty table may serialise as [] or {}: treat an empty list as {}."""
    if value == []:
        return {}
    return value
