"""Scripts that wait: sleep(ms) suspends the run's coroutine while the loop serves every other
socket; a socket's events stay in order behind a waiting run; scripts.waitTimeoutMs abandons a
run that takes too long; scripts.timeoutMs counts only the time a run executes."""

from __future__ import annotations

import asyncio
import time

import pytest

from wsgate_support import OP_TEXT, RawClient, close_code, connect, recv, recv_json, rss_kib, run, ws_frame

# "slow:N" sleeps N ms, then answers; anything else is echoed at once. Every data run reports the
# globals it set before its wait, so interleaved runs show whether they share them.
SLEEPER = """
local w = websocketInfo
if w.type ~= "data" then return end
local ms = tonumber(w.message:match("^slow:(%d+)$"))
if ms then
  mine = w.message
  local before = w.socket_id
  sleep(ms)
  w.send(to_json{done = w.message, mine = mine, same_socket = (before == w.socket_id), t = w.type})
else
  w.send(w.message)
end
"""

# Reports its events to the socket named by ?report_to=: the data run waits, then the close event
# must come after it.
ORDERED = """
local w = websocketInfo
local target = w.parameters.report_to
if w.type == "data" then
  sleep(300)
  Websocket.send{socket_id = target, message = "data:" .. w.message}
elseif w.type == "close" then
  Websocket.send{socket_id = target, message = "close"}
end
"""

REPORTER = """
if websocketInfo.type == "open" then websocketInfo.send(websocketInfo.socket_id) end
"""

# Waits inside a coroutine of its own, or with a bad argument: both are script errors.
MISUSED = """
local w = websocketInfo
if w.type ~= "data" then return end
if w.message == "coroutine" then
  local ok, err = coroutine.resume(coroutine.create(function() sleep(1) end))
  w.send(tostring(err))
elseif w.message == "bad" then
  local ok, err = pcall(sleep, "soon")
  w.send(tostring(err))
elseif w.message == "pcall" then
  local ok = pcall(function() sleep(10) end)
  w.send("pcall:" .. tostring(ok))
end
"""

HANDLER = """
function handle_websocket_websocket_info(info)
  if info.type == "data" then
    sleep(50)
    info.send("handled:" .. info.message)
  end
end
"""

# Spins for 200 ms of CPU around a 1,200 ms sleep (scripts.timeoutMs is 1,000 there): the sleep
# alone is past the timeout, and the spins stay within it even on a machine so busy that 200 ms of
# CPU take four times as long.
BUSY = """
local w = websocketInfo
if w.type ~= "data" then return end
local function spin(s) local t = os.clock() while os.clock() - t < s do end end
spin(0.1) sleep(1200) spin(0.1)
w.send("busy done")
"""

# "hold" waits 1.5 s; every other message is answered with its length.
HOLDER = """
local w = websocketInfo
if w.type ~= "data" then return end
if w.message == "hold" then sleep(1500) w.send("held") else w.send(tostring(#w.message)) end
"""

SCRIPTS = {
    "holder.lua": HOLDER,
    "sleeper.lua": SLEEPER,
    "ordered.lua": ORDERED,
    "reporter.lua": REPORTER,
    "misused.lua": MISUSED,
    "busy.lua": BUSY,
}


@pytest.fixture(scope="module")
def server(wsgate_module):
    # One loop: the waiting run and the other sockets share it.
    return wsgate_module(SCRIPTS, {"rateLimit": {"messagesPerSecond": 0},
                                   "scripts": {"timeoutMs": 1000, "waitTimeoutMs": 2000}}, workers=1)


def test_a_sleeping_run_does_not_stop_the_loop(server):
    async def main():
        async with connect(server.url("/sleeper")) as slow, connect(server.url("/sleeper")) as fast:
            started = time.monotonic()
            await slow.send("slow:600")
            latencies = []
            for i in range(20):
                t = time.monotonic()
                await fast.send(f"m{i}")
                assert await recv(fast) == f"m{i}"
                latencies.append(time.monotonic() - t)
            answer = await recv_json(slow, timeout=5)
            return answer, latencies, time.monotonic() - started

    answer, latencies, elapsed = run(main())
    assert answer == {"done": "slow:600", "mine": "slow:600", "same_socket": True, "t": "data"}
    assert elapsed >= 0.55
    # Echoes went on while the other run slept: none waited for the sleep to end.
    assert max(latencies) < 0.4, latencies


def test_interleaved_runs_of_one_script_keep_their_own_globals(server):
    async def main():
        async with connect(server.url("/sleeper")) as a, connect(server.url("/sleeper")) as b:
            await a.send("slow:300")
            await asyncio.sleep(0.05)
            await b.send("slow:100")
            return await recv_json(a, timeout=5), await recv_json(b, timeout=5)

    got_a, got_b = run(main())
    assert got_a["mine"] == "slow:300" and got_a["done"] == "slow:300"
    assert got_b["mine"] == "slow:100" and got_b["done"] == "slow:100"


def test_a_sockets_events_wait_for_its_waiting_run(server):
    async def main():
        async with connect(server.url("/sleeper")) as ws:
            await ws.send("slow:300")
            await ws.send("after-1")
            await ws.send("after-2")
            first = await recv_json(ws, timeout=5)
            return first["done"], await recv(ws), await recv(ws)

    assert run(main()) == ("slow:300", "after-1", "after-2")


def test_the_close_event_runs_after_the_waiting_run(server):
    async def main():
        async with connect(server.url("/reporter")) as reporter:
            target = await recv(reporter)
            ws = await connect(server.url(f"/ordered?report_to={target}"))
            await ws.send("last words")
            await ws.close()
            return await recv(reporter, timeout=5), await recv(reporter, timeout=5)

    assert run(main()) == ("data:last words", "close")


def test_waiting_where_it_cannot_is_a_script_error(server):
    async def main():
        async with connect(server.url("/misused")) as ws:
            await ws.send("coroutine")
            in_coroutine = await recv(ws)
            await ws.send("bad")
            bad = await recv(ws)
            await ws.send("pcall")
            return in_coroutine, bad, await recv(ws)

    in_coroutine, bad, in_pcall = run(main())
    assert "sleep cannot wait inside a coroutine the script created" in in_coroutine
    assert "bad argument #1 to 'sleep'" in bad
    assert in_pcall == "pcall:true"


def test_the_cpu_timeout_does_not_count_waiting(server):
    async def main():
        async with connect(server.url("/busy")) as ws:
            await ws.send("go")
            return await recv(ws, timeout=5)

    assert run(main()) == "busy done"


def test_a_run_past_wait_timeout_is_abandoned_and_logged(wsgate):
    server = wsgate({"sleeper.lua": SLEEPER}, {"rateLimit": {"messagesPerSecond": 0},
                                              "scripts": {"waitTimeoutMs": 300}}, workers=1)

    async def main():
        async with connect(server.url("/sleeper")) as ws:
            started = time.monotonic()
            await ws.send("slow:5000")
            await ws.send("next")
            # The abandoned run answers nothing; the socket's next message goes on.
            reply = await recv(ws, timeout=5)
            return reply, time.monotonic() - started

    reply, elapsed = run(main())
    assert reply == "next"
    assert 0.25 <= elapsed < 3
    server.wait_for_log("script run abandoned")
    [line] = server.log_lines_with("script run abandoned")
    assert "route=/sleeper" in line and "socket=" in line and "event=data" in line
    assert "scripts.waitTimeoutMs (300 ms)" in line


def test_an_event_handler_may_wait(wsgate):
    server = wsgate({"_websocket_info.lua": HANDLER},
                    {"rateLimit": {"messagesPerSecond": 0}}, workers=1)

    async def main():
        async with connect(server.url("/any")) as ws:
            await ws.send("one")
            await ws.send("two")
            return await recv(ws), await recv(ws)

    assert run(main()) == ("handled:one", "handled:two")


def test_a_socket_closing_while_its_run_waits_loses_nothing(server):
    # Many sockets each leave a run waiting, then go: the gateway stays up and serves.
    async def main():
        sockets = [await connect(server.url("/sleeper")) for _ in range(50)]
        for ws in sockets:
            await ws.send("slow:200")
        for ws in sockets:
            await ws.close()
        await asyncio.sleep(0.4)
        async with connect(server.url("/sleeper")) as ws:
            await ws.send("still here")
            return await recv(ws)

    assert run(main()) == "still here"


def test_a_waiting_runs_socket_is_not_read_so_its_backlog_stays_in_the_kernel(server):
    client = RawClient(server.port, "/holder")
    try:
        client.send_text("hold")
        time.sleep(0.2)
        before = rss_kib(server.proc.pid)
        message = ws_frame(OP_TEXT, b"x" * 60000)
        backlog = message * 800  # 48 MB
        client.sock.setblocking(False)
        accepted = 0
        deadline = time.monotonic() + 0.8
        while time.monotonic() < deadline:
            try:
                accepted += client.sock.send(backlog[accepted:accepted + (1 << 20)])
            except BlockingIOError:
                time.sleep(0.02)
        grown = rss_kib(server.proc.pid) - before
        client.sock.setblocking(True)
        client.sock.settimeout(10)
        client.sock.sendall(backlog[accepted:])
        answers = [client.read_frame(timeout=10)[2] for _ in range(801)]
    finally:
        client.sock.close()
    # While the run waited the gateway read none of it: what got in sits in the kernel's buffers.
    assert accepted < 16 << 20, accepted
    assert grown < 16 * 1024, f"RSS grew by {grown} KiB"
    # Nothing was lost: the messages ran after the waiting run, in order.
    assert answers == [b"held"] + [b"60000"] * 800
