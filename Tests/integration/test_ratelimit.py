"""Per-connection message rate limiting: throttle, drop, close, off; pings are free."""

from __future__ import annotations

import asyncio
import time

from websockets.exceptions import ConnectionClosed

from wsgate_support import close_code, connect, drain, recv, run

ECHO = """
if websocketInfo.type == "data" then websocketInfo.send(websocketInfo.message) end
"""


def echo_server(wsgate, rate_limit=None):
    return wsgate({"echo.lua": ECHO}, {} if rate_limit is None else {"rateLimit": rate_limit})


def test_default_throttle_delays_but_delivers_everything(wsgate):
    server = echo_server(wsgate)  # defaults: 5 messages/s, burst 5, throttle
    messages = [f"t{i}" for i in range(15)]

    async def main():
        async with connect(server.url("/echo")) as ws:
            start = time.monotonic()
            for m in messages:
                await ws.send(m)
            got = [await recv(ws) for _ in messages]
            return got, time.monotonic() - start

    got, elapsed = run(main())
    assert got == messages
    # 5 pass on the burst, the other 10 wait for tokens at 5/s: about 2 s.
    assert elapsed >= 1.5, f"15 messages took only {elapsed:.2f}s"


def test_drop_discards_messages_over_the_limit(wsgate):
    server = echo_server(wsgate, {"messagesPerSecond": 5, "burst": 5, "onExceed": "drop"})
    messages = [f"d{i}" for i in range(15)]

    async def main():
        async with connect(server.url("/echo")) as ws:
            for m in messages:
                await ws.send(m)
            got = await drain(ws, 1.5)
            return got, ws.close_code

    got, closed_with = run(main())
    assert 5 <= len(got) <= 7, got
    assert got[:5] == messages[:5]
    assert closed_with is None, "drop must keep the connection open"


def test_close_policy_closes_with_1008(wsgate):
    server = echo_server(wsgate, {"messagesPerSecond": 5, "burst": 5, "onExceed": "close"})

    async def main():
        async with connect(server.url("/echo")) as ws:
            try:
                for i in range(15):
                    await ws.send(f"c{i}")
            except ConnectionClosed:
                pass
            return await close_code(ws)

    code, echoed = run(main())
    assert code == 1008
    assert len(echoed) <= 7, echoed


def test_zero_messages_per_second_disables_the_limit(wsgate):
    server = echo_server(wsgate, {"messagesPerSecond": 0})
    messages = [f"z{i}" for i in range(200)]

    async def main():
        async with connect(server.url("/echo")) as ws:
            start = time.monotonic()
            for m in messages:
                await ws.send(m)
            got = [await recv(ws) for _ in messages]
            return got, time.monotonic() - start

    got, elapsed = run(main())
    assert got == messages
    assert elapsed < 1.0, f"200 unlimited messages took {elapsed:.2f}s"


def test_pings_do_not_count(wsgate):
    server = echo_server(wsgate)  # 5/s, burst 5, throttle

    async def main():
        async with connect(server.url("/echo")) as ws:
            start = time.monotonic()
            waiters = [await ws.ping(f"p{i}") for i in range(10)]
            await asyncio.wait_for(asyncio.gather(*waiters), 5)
            for i in range(5):
                await ws.send(f"after-ping-{i}")
            got = [await recv(ws) for _ in range(5)]
            return got, time.monotonic() - start

    got, elapsed = run(main())
    assert got == [f"after-ping-{i}" for i in range(5)]
    # Had the 10 pings taken tokens, these 5 messages would wait about 2 s.
    assert elapsed < 1.0, f"pings seem to be rate limited: {elapsed:.2f}s"
