"""Hostile clients and hostile scripts against the real binary.

Every scenario runs an innocent bystander (``Bystander``: numbered echoes,
each checked in order) next to the attack and asserts that it lost nothing.
Each test prints one ``[wsgate-report]`` line (``pytest -s``) with the number
of bad inputs it tried; the same numbers are in its assertion messages.
"""

from __future__ import annotations

import asyncio
import json
import selectors
import socket
import time

import pytest

from wsgate_support import (
    ECHO_SCRIPT,
    HOST,
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Bystander,
    RawClient,
    RssWatchdog,
    accept_for,
    ask,
    build_request,
    close_code_of,
    new_key,
    open_fds,
    parse_server_frame,
    raise_nofile,
    report,
    socket_loop,
    ws_close_frame,
    ws_frame,
)

NO_RATE_LIMIT = {"messagesPerSecond": 0}

COUNT_SCRIPT = """
if websocketInfo.type == "data" then websocketInfo.send(tostring(#Websocket.list())) end
"""


# --- slowloris ---------------------------------------------------------------


def test_slowloris_crowd_is_cut_off_at_the_handshake_timeout(wsgate):
    dribblers, silent = 500, 100
    raise_nofile(4 * (dribblers + silent) + 200)
    server = wsgate({"echo.lua": ECHO_SCRIPT},
                    {"limits": {"handshakeTimeoutMs": 1000}, "rateLimit": NO_RATE_LIMIT})
    fds_before = open_fds(server.proc.pid)
    bystander = Bystander(server.port, interval=0.01, label="slowloris-bystander").start()

    # Every dribbler sends one more byte of a request head that never ends.
    head = build_request(server.port, "/echo")[:-4]
    sel = selectors.DefaultSelector()
    opened = {}
    progress = {}
    closed_after = {}
    bytes_sent = 0
    try:
        for i in range(dribblers + silent):
            s = socket.create_connection((HOST, server.port), timeout=5)
            s.setblocking(False)
            opened[s] = time.monotonic()
            progress[s] = 0 if i < dribblers else None
            sel.register(s, selectors.EVENT_READ)
        last_open = time.monotonic()
        next_tick = time.monotonic()
        while len(closed_after) < len(opened) and time.monotonic() - last_open < 4.0:
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + 0.1
                for s, sent in progress.items():
                    if sent is None or s in closed_after or sent >= len(head):
                        continue
                    try:
                        if s.send(head[sent:sent + 1]) == 1:
                            progress[s] = sent + 1
                            bytes_sent += 1
                    except (BlockingIOError, InterruptedError):
                        pass
                    except OSError:
                        closed_after[s] = time.monotonic() - opened[s]
                        sel.unregister(s)
            for key, _ in sel.select(timeout=0.02):
                s = key.fileobj
                try:
                    data = s.recv(4096)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:
                    closed_after[s] = time.monotonic() - opened[s]
                    sel.unregister(s)
    finally:
        for s in opened:
            s.close()
        sel.close()
        bystander.stop()

    lifetimes = sorted(closed_after.values())
    line = report(
        f"slowloris: {dribblers} dribbling + {silent} silent connections, {bytes_sent} single bytes dribbled; "
        f"{len(closed_after)} closed by the server, lifetime min {lifetimes[0] if lifetimes else 0:.2f}s "
        f"max {lifetimes[-1] if lifetimes else 0:.2f}s; {bystander.summary()}")
    assert len(closed_after) == dribblers + silent, line
    assert lifetimes[-1] <= 3.0, line
    assert lifetimes[0] >= 0.8, f"closed before handshakeTimeoutMs: {line}"
    bystander.assert_intact("slowloris", max_latency=0.5)
    # The gateway is still serving and has released the descriptors.
    assert ask(server.port, "/echo", "still here") == "still here"
    deadline = time.monotonic() + 3
    while open_fds(server.proc.pid) > fds_before + 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert open_fds(server.proc.pid) <= fds_before + 5, f"fds before {fds_before}, after {open_fds(server.proc.pid)}"


# --- clients that do not read --------------------------------------------------

SINK = """
if websocketInfo.type == "open" then websocketInfo.send(websocketInfo.socket_id) end
"""

# "flood <id> <n>": n sends of 64 KiB to socket <id>; reports how many succeeded
# and the error statuses. "list": the open socket ids. "whoami": this socket's id.
FLOODER = """
if websocketInfo.type ~= "data" then return end
local m = websocketInfo.message
if m == "list" then
  websocketInfo.send(to_json{ids = Websocket.list()})
  return
elseif m == "whoami" then
  websocketInfo.send(websocketInfo.socket_id)
  return
end
local target, n = m:match("^flood (%S+) (%d+)$")
local chunk = string.rep("x", 65536)
local ok, first, statuses = 0, 0, {}
for i = 1, tonumber(n) do
  local err = Websocket.send{socket_id = target, message = chunk}
  if err == nil then
    ok = ok + 1
  else
    if first == 0 then first = err.status end
    local k = "s" .. tostring(err.status)
    statuses[k] = (statuses[k] or 0) + 1
  end
end
websocketInfo.send(to_json{ok = ok, first = first, statuses = statuses})
"""

# The socket floods itself: every message it sends makes its own script send
# 16 x 64 KiB back with websocketInfo.send; the outcome goes to report_to.
SELF_FLOOD = """
if websocketInfo.type ~= "data" then return end
local chunk = string.rep("y", 65536)
local ok, first, statuses = 0, 0, {}
for i = 1, 16 do
  local err = websocketInfo.send(chunk)
  if err == nil then
    ok = ok + 1
  else
    if first == 0 then first = err.status end
    local k = "s" .. tostring(err.status)
    statuses[k] = (statuses[k] or 0) + 1
  end
end
Websocket.send{socket_id = websocketInfo.parameters.report_to,
               message = to_json{ok = ok, first = first, statuses = statuses}}
"""

SLOW_READER_SCRIPTS = {"echo.lua": ECHO_SCRIPT, "sink.lua": SINK, "flood.lua": FLOODER,
                       "selfflood.lua": SELF_FLOOD}
SLOW_READER_CONFIG = {"rateLimit": NO_RATE_LIMIT, "limits": {"sendQueueBytes": 4 << 20}}


def ids_open(client: RawClient) -> list:
    client.send_text("list")
    ids = json.loads(client.recv_text())["ids"]
    return ids if isinstance(ids, list) else []


def drain_to_end(client: RawClient, timeout: float = 10.0, limit: int = 64 << 20):
    """Read a socket that was never read to its end.

    Returns (bytes read, whether the server ended the TCP connection, the close code of the
    first close frame found by walking the frames, frames walked, why the walk stopped early).
    """
    data = bytearray(client.buf)
    ended = False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(data) < limit:
        client.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = client.sock.recv(1 << 20)
        except socket.timeout:
            break
        except (ConnectionResetError, BrokenPipeError):
            ended = True
            break
        if not chunk:
            ended = True
            break
        data += chunk
    # Walk the frames; a close frame with a code proves a clean 1008.
    offset, code, frames, parse_error = 0, None, 0, None
    while True:
        parsed = parse_server_frame(data, offset)
        if parsed is None:
            break
        fin, opcode, payload, offset = parsed
        frames += 1
        if opcode == OP_CLOSE:
            code = close_code_of(payload)
            break
        if opcode not in (OP_TEXT, OP_BINARY, OP_PING, OP_PONG):
            parse_error = f"frame {frames} has opcode {opcode:#x}: the stream is not frame-aligned"
            break
    return len(data), ended, code, frames, parse_error


@pytest.mark.parametrize("placement", ["same-loop", "cross-loop"])
def test_client_that_never_reads_is_cut_off(wsgate, placement):
    server = wsgate(SLOW_READER_SCRIPTS, SLOW_READER_CONFIG, workers=2)
    bystander = Bystander(server.port, interval=0.01, label="slow-reader-bystander").start()
    sink = RawClient(server.port, "/sink", rcvbuf=4096)
    sink_id = sink.recv_text()
    # Pick a flooding client on the wanted loop (ids are prefix-loop-counter).
    flooder = None
    candidates = []
    for _ in range(40):
        c = RawClient(server.port, "/flood")
        c.send_text("whoami")
        fid = c.recv_text()
        same = socket_loop(fid) == socket_loop(sink_id)
        if socket_loop(fid) is None or same == (placement == "same-loop"):
            flooder = c
            break
        candidates.append(c)
    for c in candidates:
        c.close()
    assert flooder is not None, f"no /flood socket landed {placement} with {sink_id}"

    sends = ok = 0
    firsts, statuses = [], {}
    gone_after = None
    started = time.monotonic()
    with RssWatchdog(server.proc) as watchdog:
        while time.monotonic() - started < 5:
            flooder.send_text(f"flood {sink_id} 32")
            result = json.loads(flooder.recv_text(10))
            sends += 32
            ok += result["ok"]
            if result["first"]:
                firsts.append(result["first"])
            for k, v in (result["statuses"] or {}).items():
                statuses[k] = statuses.get(k, 0) + v
            if sink_id not in ids_open(flooder):
                gone_after = time.monotonic() - started
                break
        # Stop sending; the bystander kept echoing meanwhile.
        size, ended, code, frames, parse_error = drain_to_end(sink, timeout=5)
    bystander.stop()
    flooder.close()
    sink.close()
    line = report(
        f"never-reading client ({placement}): {sends} sends of 64 KiB tried ({sends * 64 // 1024} MiB), "
        f"{ok} accepted, error statuses {statuses}, first error status {firsts[:1]}; "
        f"socket gone from Websocket.list after {gone_after}s; the reader then drained {size} bytes, "
        f"TCP ended {ended}, close code {code}, frames {frames}, parse error {parse_error}; "
        f"gateway peak RSS {watchdog.peak_mib:.0f} MiB; {bystander.summary()}")
    assert not watchdog.killed, line
    assert firsts and firsts[0] == 429, f"no 429 before any other error: {line}"
    assert gone_after is not None, f"the non-reading socket was never closed: {line}"
    assert ended, f"the server did not end the TCP connection: {line}"
    assert watchdog.peak_mib < 200, line
    bystander.assert_intact(f"never-reading client ({placement})")


def test_client_flooding_itself_without_reading_gets_429_then_is_cut_off(wsgate):
    server = wsgate(SLOW_READER_SCRIPTS, SLOW_READER_CONFIG, workers=2)
    bystander = Bystander(server.port, interval=0.01, label="self-flood-bystander").start()
    observer = RawClient(server.port, "/flood")
    observer.send_text("whoami")
    observer_id = observer.recv_text()
    reader = RawClient(server.port, f"/selfflood?report_to={observer_id}", rcvbuf=4096)
    reader.sock.settimeout(0.2)
    triggers = ok = 0
    firsts, statuses = [], {}
    started = time.monotonic()
    cut_off = False
    with RssWatchdog(server.proc) as watchdog:
        while time.monotonic() - started < 5:
            try:
                reader.send_text(f"go {triggers}")
            except OSError:
                cut_off = True
                break
            triggers += 1
            try:
                result = json.loads(observer.recv_text(3))
            except AssertionError:
                # A socket the gateway is closing no longer runs its script: no report comes.
                if not _still_listed(observer):
                    cut_off = True
                    break
                raise
            ok += result["ok"]
            if result["first"]:
                firsts.append(result["first"])
            for k, v in (result["statuses"] or {}).items():
                statuses[k] = statuses.get(k, 0) + v
            if "s429" in statuses and triggers % 4 == 0:
                if not _still_listed(observer):
                    cut_off = True
                    break
        size, ended, code, frames, parse_error = drain_to_end(reader, timeout=5)
    bystander.stop()
    observer.close()
    reader.close()
    line = report(
        f"self-flooding non-reader: {triggers} trigger messages, {triggers * 16} websocketInfo.send of 64 KiB tried, "
        f"{ok} accepted, statuses {statuses}, first error {firsts[:1]}; cut off {cut_off}; drained {size} bytes, "
        f"TCP ended {ended}, close code {code}, parse error {parse_error}; peak RSS {watchdog.peak_mib:.0f} MiB; "
        f"{bystander.summary()}")
    assert not watchdog.killed, line
    assert firsts and firsts[0] == 429, line
    assert cut_off and ended, f"the non-reading socket was not closed: {line}"
    assert watchdog.peak_mib < 200, line
    bystander.assert_intact("self-flooding non-reader")


def _still_listed(observer: RawClient) -> bool:
    """Whether the gateway still lists a /selfflood socket."""
    observer.send_text("list")
    ids = json.loads(observer.recv_text())["ids"]
    # Two sockets besides the reader: the bystander and the observer.
    return isinstance(ids, list) and len(ids) > 2


def test_ping_flood_from_a_client_that_never_reads(wsgate):
    server = wsgate({"echo.lua": ECHO_SCRIPT}, SLOW_READER_CONFIG)
    bystander = Bystander(server.port, interval=0.01, label="ping-flood-bystander").start()
    attacker = RawClient(server.port, "/echo", rcvbuf=4096)
    batch = b"".join(ws_frame(OP_PING, b"p" * 125) for _ in range(500))
    pings = 0
    refused = None
    attacker.sock.setblocking(False)
    started = time.monotonic()
    with RssWatchdog(server.proc) as watchdog:
        pending = memoryview(b"")
        while time.monotonic() - started < 6 and pings < 400_000:
            if not pending:
                pending = memoryview(batch)
                pings += 500
            try:
                n = attacker.sock.send(pending)
                pending = pending[n:]
            except BlockingIOError:
                time.sleep(0.005)
            except OSError as exc:
                refused = f"{type(exc).__name__} after {time.monotonic() - started:.2f}s"
                break
        attacker.sock.setblocking(True)
        size, ended, code, frames, parse_error = drain_to_end(attacker, timeout=10)
    bystander.stop()
    attacker.close()
    line = report(
        f"ping flood without reading: ~{pings} pings of 125 bytes sent ({pings * 131 // (1 << 20)} MiB), "
        f"send stopped by {refused}; drained {size} bytes of pongs, TCP ended {ended}, close code {code}; "
        f"peak RSS {watchdog.peak_mib:.0f} MiB; {bystander.summary()}")
    assert not watchdog.killed, line
    assert ended, f"the server kept a non-reading ping flooder open: {line}"
    assert watchdog.peak_mib < 200, line
    bystander.assert_intact("ping flood")


# --- floods past the rate limit -------------------------------------------------


@pytest.mark.parametrize("mode", ["throttle", "drop", "close"])
def test_flood_past_the_rate_limit(wsgate, mode):
    flood = 2000
    server = wsgate({"echo.lua": ECHO_SCRIPT, "count.lua": COUNT_SCRIPT},
                    {"rateLimit": {"messagesPerSecond": 5, "burst": 5, "onExceed": mode}})
    # 4 messages a second at most: under the limit the flooder breaks.
    bystander = Bystander(server.port, interval=0.25, label=f"{mode}-bystander").start()
    attacker = RawClient(server.port, "/echo")
    messages = [f"flood-{i}" for i in range(flood)]
    started = time.monotonic()
    attacker.send(b"".join(ws_frame(OP_TEXT, m.encode()) for m in messages))
    blasted_in = time.monotonic() - started
    echoed, code = [], None
    watch = {"throttle": 3.0, "drop": 2.0, "close": 5.0}[mode]
    deadline = started + watch
    while time.monotonic() < deadline:
        try:
            fin, opcode, payload = attacker.read_frame(max(0.01, deadline - time.monotonic()))
        except AssertionError:
            break
        except EOFError:
            break
        if opcode == OP_CLOSE:
            code = close_code_of(payload)
            break
        echoed.append(payload.decode())
    elapsed = time.monotonic() - started
    attacker.close()
    time.sleep(max(0.0, started + 2.0 - time.monotonic()))  # the bystander keeps going a while
    dropped = None
    if mode == "drop":
        text = server.wait_for_log("messages over the rate limit", timeout=5)
        for log_line in text.splitlines():
            if "dropped" in log_line and "messages over the rate limit" in log_line:
                dropped = int(log_line.split(" dropped ")[1].split()[0])
    # The flooder's socket is released once its TCP connection is gone.
    count = None
    release_deadline = time.monotonic() + 4
    while time.monotonic() < release_deadline:
        count = ask(server.port, "/count", "n")
        if count == "2":  # the bystander and this counter
            break
        time.sleep(0.2)
    bystander.stop()
    line = report(
        f"rate-limit flood ({mode}): {flood} messages blasted in {blasted_in:.2f}s; the flooder got {len(echoed)} "
        f"echoes in {elapsed:.1f}s, close code {code}, dropped per log {dropped}; open sockets after {count}; "
        f"{bystander.summary()}")
    bystander.assert_intact(f"rate-limit flood ({mode})")
    indexes = [int(m.split("-")[1]) for m in echoed]
    assert indexes == sorted(set(indexes)), f"echoes out of order or repeated: {line}"
    if mode == "throttle":
        assert code is None, line
        assert indexes == list(range(len(indexes))), f"throttle lost a message: {line}"
        assert 5 <= len(echoed) <= 5 + 5 * elapsed + 2, line
    elif mode == "drop":
        assert code is None, line
        assert indexes[:5] == [0, 1, 2, 3, 4] and len(echoed) <= 5 + 5 * elapsed + 2, line
        assert dropped is not None and dropped + len(echoed) == flood, line
    else:
        assert code == 1008, line
        assert indexes == list(range(len(indexes))) and len(echoed) <= 7, line
    assert count == "2", f"the flooder's socket was not released: {line}"


# --- endless fragments ----------------------------------------------------------


@pytest.mark.parametrize("kind", ["empty-text", "one-byte-binary"])
def test_endless_fragments_are_closed_with_1009(wsgate, kind):
    server = wsgate({"echo.lua": ECHO_SCRIPT}, {"rateLimit": NO_RATE_LIMIT})  # maxMessageBytes 1 MiB
    bystander = Bystander(server.port, interval=0.01, label="fragments-bystander").start()
    attacker = RawClient(server.port, "/echo")
    if kind == "empty-text":
        first, piece = ws_frame(OP_TEXT, b"", fin=False), ws_frame(OP_CONT, b"", fin=False)
    else:
        first, piece = ws_frame(OP_BINARY, b"b", fin=False), ws_frame(OP_CONT, b"b", fin=False)
    batch_size = 4096
    batch = piece * batch_size
    attacker.send(first)
    fragments = 1
    code = None
    started = time.monotonic()
    with RssWatchdog(server.proc) as watchdog:
        while fragments < 1_000_000 and time.monotonic() - started < 15:
            try:
                attacker.send(batch)
            except OSError:
                break
            fragments += batch_size
            attacker.sock.setblocking(False)
            try:
                chunk = attacker.sock.recv(65536)
                attacker.buf += chunk
                if not chunk:
                    break
            except BlockingIOError:
                pass
            except OSError:
                break
            finally:
                attacker.sock.setblocking(True)
            if attacker.buf:
                break
            # Give the gateway a moment to catch up, so the count stays near the limit.
            time.sleep(0.002)
        try:
            code, _ = attacker.read_close(5)
        except AssertionError as exc:
            code = f"none ({exc})"
        elapsed = time.monotonic() - started
        time.sleep(max(0.0, started + 1.5 - time.monotonic()))  # the bystander keeps going a while
    bystander.stop()
    attacker.close()
    line = report(
        f"endless fragments ({kind}): {fragments} fragments sent in {elapsed:.2f}s, "
        f"close code {code}; peak RSS {watchdog.peak_mib:.0f} MiB; {bystander.summary()}")
    assert code == 1009, line
    # 1 MiB at 8 bytes a fragment is 131072 fragments; allow for what was still in flight.
    assert fragments <= 2 * 131072, f"far more fragments than the limit allows were taken: {line}"
    bystander.assert_intact(f"endless fragments ({kind})")


# --- hostile scripts ---------------------------------------------------------------

SPIN = """
if websocketInfo.type == "open" then websocketInfo.send(websocketInfo.socket_id) return end
if websocketInfo.type ~= "data" then return end
local m = websocketInfo.message
if m == "spin" then
  while true do end
elseif m == "spin-pcall" then
  -- tries to swallow the timeout and keep going
  while true do pcall(function() while true do end end) end
elseif m == "spin-coroutine" then
  coroutine.wrap(function() while true do end end)()
elseif m == "spin-repeat" then
  local x = 0
  repeat x = x + 1 until false
elseif m == "spin-pattern" then
  -- a C-level backtracking match: no Lua instruction runs while it spins
  string.find(string.rep("a", 100000), ".-.-.-.-b")
else
  websocketInfo.send("after:" .. m)
end
"""

SPIN_CONFIG = {"rateLimit": NO_RATE_LIMIT, "scripts": {"timeoutMs": 1000}, "shutdownTimeoutMs": 1000}


def _stuck_script_round(server, variants, context, pause=0.3):
    bystander = Bystander(server.port, interval=0.01, label="spin-bystander").start()
    attacker = RawClient(server.port, "/spin")
    socket_id = attacker.recv_text()
    timings = {}
    problems = []
    try:
        for variant in variants:
            time.sleep(pause)  # 0: the next runaway run starts as soon as the previous one is stopped
            started = time.monotonic()
            attacker.send_text(variant)
            attacker.send_text(f"next-{variant}")
            try:
                got = attacker.recv_text(5)
            except (AssertionError, EOFError) as exc:
                problems.append(f"{variant}: {exc}")
                break
            timings[variant] = round(time.monotonic() - started, 2)
            if got != f"after:next-{variant}":
                problems.append(f"{variant}: got {got!r}")
    finally:
        bystander.stop()
        attacker.close()
    timed_out = [ln for ln in server.log_lines_with("timed out") if "ERROR" in ln]
    line = report(
        f"stuck scripts ({context}, --workers 1, pause {pause}s): {len(variants)} runaway runs {variants}; the attacker's next "
        f"event answered after {timings} s; {len(timed_out)} ERROR 'timed out' lines; problems {problems}; "
        f"{bystander.summary()}")
    return line, problems, timed_out, bystander, socket_id


def test_script_stuck_in_a_loop_is_stopped(wsgate):
    server = wsgate({"echo.lua": ECHO_SCRIPT, "spin.lua": SPIN}, SPIN_CONFIG, workers=1)
    variants = ["spin", "spin-pcall", "spin-coroutine", "spin-repeat"]
    line, problems, timed_out, bystander, socket_id = _stuck_script_round(server, variants, "Lua loops")
    assert not problems, line
    assert len(timed_out) >= len(variants), line
    assert any("/spin" in ln and socket_id in ln for ln in timed_out), f"no ERROR line naming route and socket: {line}"
    # The bystander shares the only loop: at most about one timeout of delay.
    bystander.assert_intact("stuck scripts", max_latency=1.6)


def test_back_to_back_stuck_scripts_delay_others_by_one_timeout_at_most(wsgate):
    # A probe message arrives 0.3 s into a runaway run; the attacker starts the next runaway
    # run the moment the first one is stopped. The probe should be answered when the first
    # run is stopped (about 0.7 s later), not after the second one as well.
    server = wsgate({"echo.lua": ECHO_SCRIPT, "spin.lua": SPIN}, SPIN_CONFIG, workers=1)
    bystander = Bystander(server.port, interval=0.01, label="back-to-back-bystander").start()
    attacker = RawClient(server.port, "/spin")
    attacker.recv_text()
    probe = RawClient(server.port, "/echo")
    rounds, latencies = 3, []
    attacker.send_text("spin")
    attacker.send_text("n0")
    for r in range(rounds):
        time.sleep(0.3)
        sent = time.monotonic()
        probe.send_text(f"probe-{r}")
        assert attacker.recv_text(5) == f"after:n{r}"
        attacker.send_text("spin")  # the next runaway run, at once
        attacker.send_text(f"n{r + 1}")
        assert probe.recv_text(5) == f"probe-{r}"
        latencies.append(round(time.monotonic() - sent, 2))
    assert attacker.recv_text(5) == f"after:n{rounds}"
    attacker.close()
    probe.close()
    bystander.stop()
    timed_out = [ln for ln in server.log_lines_with("timed out") if "ERROR" in ln]
    line = report(f"back-to-back stuck scripts (--workers 1, timeoutMs 1000): {rounds + 1} runaway runs; a probe sent "
                  f"0.3 s into a run was echoed after {latencies} s (one timeout at most would be about 0.7 s); "
                  f"{len(timed_out)} 'timed out' lines; {bystander.summary()}")
    assert len(timed_out) >= rounds + 1, line
    assert max(latencies) <= 1.2, f"a message waited for two runaway runs: {line}"
    bystander.assert_intact("back-to-back stuck scripts")


def test_script_stuck_in_a_c_level_pattern_match_is_stopped(wsgate):
    server = wsgate({"echo.lua": ECHO_SCRIPT, "spin.lua": SPIN}, SPIN_CONFIG, workers=1)
    line, problems, timed_out, bystander, socket_id = _stuck_script_round(server, ["spin-pattern"], "C pattern")
    assert not problems, line
    assert timed_out, line
    bystander.assert_intact("C-level pattern spin", max_latency=1.6)


ALLOC = """
if websocketInfo.type ~= "data" then return end
local m = websocketInfo.message
if m == "table" then
  local t, i = {}, 0
  while true do i = i + 1; t[i] = string.rep("x", 1000) .. i end
elseif m == "concat" then
  local s = "x"
  while true do s = s .. s end
elseif m == "rep" then
  local s = string.rep("x", 1 << 40)
  websocketInfo.send(#s)
elseif m == "coroutines" then
  local cs = {}
  while true do cs[#cs + 1] = coroutine.create(function() end) end
elseif m == "hoard" then
  -- keeps catching the memory error and allocating again
  local keep = {}
  while true do
    pcall(function() while true do keep[#keep + 1] = string.rep("y", 4096) .. #keep end end)
  end
else
  websocketInfo.send("after:" .. m)
end
"""


def test_script_allocating_without_end_is_stopped(wsgate):
    server = wsgate({"echo.lua": ECHO_SCRIPT, "alloc.lua": ALLOC},
                    {"rateLimit": NO_RATE_LIMIT, "scripts": {"memoryBytes": 64 << 20, "timeoutMs": 1000},
                     "shutdownTimeoutMs": 1000},
                    workers=1)
    variants = ["table", "concat", "rep", "coroutines", "hoard", "table"]
    bystander = Bystander(server.port, interval=0.01, label="alloc-bystander").start()
    attacker = RawClient(server.port, "/alloc")
    timings, problems = {}, []
    with RssWatchdog(server.proc, kill_above_mib=1024) as watchdog:
        for i, variant in enumerate(variants):
            started = time.monotonic()
            try:
                attacker.send_text(variant)
                attacker.send_text(f"next-{i}")
                got = attacker.recv_text(8)
            except (AssertionError, EOFError, OSError) as exc:
                problems.append(f"{variant}: {exc}")
                break
            timings[f"{variant}#{i}"] = round(time.monotonic() - started, 2)
            if got != f"after:next-{i}":
                problems.append(f"{variant}: got {got!r}")
    bystander.stop()
    attacker.close()
    time.sleep(0.1)
    errors = [ln for ln in server.log_lines_with("route=/alloc") if " ERROR " in ln]
    oom = [ln for ln in errors if "not enough memory" in ln]
    # Near the limit the collector runs on every allocation, so a bomb may hit the run
    # timeout (or string.rep's size check) before the allocator refuses: each run must be
    # stopped and logged either way.
    line = report(
        f"memory bombs (--workers 1, memoryBytes 64 MiB): {len(variants)} runs {variants}; next event answered "
        f"after {timings} s; {len(errors)} ERROR lines for /alloc, {len(oom)} of them 'not enough memory', "
        f"{sum('timed out' in ln for ln in errors)} 'timed out'; gateway peak RSS "
        f"{watchdog.peak_mib:.0f} MiB (killed by the test's 1 GiB guard: {watchdog.killed}); "
        f"problems {problems}; {bystander.summary()}")
    assert not watchdog.killed, line
    assert not problems, line
    assert len(errors) >= len(variants), line
    assert len(oom) >= 2, line
    assert max(timings.values()) <= 2.0, f"a bomb ran far past scripts.timeoutMs: {line}"
    assert watchdog.peak_mib < 200, line
    bystander.assert_intact("memory bombs")


# --- connection churn ------------------------------------------------------------------


async def _churn(port: int, total: int, concurrency: int):
    done = failures = 0
    errors: list[str] = []
    counter = iter(range(total))

    async def one():
        key = new_key()
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            writer.write(build_request(port, "/churn", key=key))
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            assert lines[0].split(" ")[1] == "101", lines[0]
            assert f"sec-websocket-accept: {accept_for(key)}".lower() in head.decode("latin-1").lower()
            writer.write(ws_close_frame(1000))
            rest = await reader.read()  # the server's close frame, then EOF
            parsed = parse_server_frame(rest)
            assert parsed is not None and parsed[1] == OP_CLOSE and close_code_of(parsed[2]) == 1000, rest
        finally:
            writer.close()

    async def worker():
        nonlocal done, failures
        for _ in counter:
            try:
                await asyncio.wait_for(one(), 10)
                done += 1
            except Exception as exc:  # noqa: BLE001 - every failure is counted and reported
                failures += 1
                if len(errors) < 5:
                    errors.append(f"{type(exc).__name__}: {exc}")

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done, failures, errors


def test_ten_thousand_connections_opened_and_closed(wsgate):
    total, concurrency = 10_000, 200
    raise_nofile(4 * concurrency + 500)
    server = wsgate({"echo.lua": ECHO_SCRIPT, "churn.lua": "-- nothing to do\n", "count.lua": COUNT_SCRIPT},
                    {"rateLimit": NO_RATE_LIMIT})
    fds_before = open_fds(server.proc.pid)
    bystander = Bystander(server.port, interval=0.002, label="churn-bystander").start()
    started = time.monotonic()
    with RssWatchdog(server.proc) as watchdog:
        done, failures, errors = asyncio.run(asyncio.wait_for(_churn(server.port, total, concurrency), 90))
    elapsed = time.monotonic() - started
    bystander.stop()
    count = ask(server.port, "/count", "n")
    deadline = time.monotonic() + 3
    while open_fds(server.proc.pid) > fds_before + 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    fds_after = open_fds(server.proc.pid)
    line = report(
        f"connection churn: {total} WebSocket handshakes + close handshakes ({concurrency} at a time) in "
        f"{elapsed:.1f}s ({total / elapsed:.0f}/s): {done} clean, {failures} failed {errors}; open sockets after "
        f"{count}; gateway fds {fds_before} -> {fds_after}; peak RSS {watchdog.peak_mib:.0f} MiB; {bystander.summary()}")
    assert done == total and failures == 0, line
    bystander.assert_intact("connection churn")
    assert count == "1", f"sockets left in the registry: {line}"
    assert fds_after <= fds_before + 5, line
