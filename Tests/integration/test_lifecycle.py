"""Connection and process lifecycle: handshake and idle timeouts, pings,
graceful shutdown on SIGTERM/SIGINT, hot reload of scripts through inotify,
and SIGHUP reloads of scripts and config.

Each scenario keeps a bystander echo client (numbered messages, checked in
order) running next to it, and prints a ``[wsgate-report]`` line (``pytest -s``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time

import pytest
from websockets.exceptions import ConnectionClosed

from wsgate_support import (
    ECHO_SCRIPT,
    HOST,
    OP_CLOSE,
    OP_PING,
    Bystander,
    RawClient,
    ask,
    close_code_of,
    connect,
    http_get,
    recv,
    report,
    upgrade_status,
    wait_exit,
    write_config,
    ws_close_frame,
)

NO_RATE_LIMIT = {"messagesPerSecond": 0}


def _tcp_closed_within(sock: socket.socket, timeout: float):
    """Seconds until the server ends the connection (EOF or reset), or None; returns bytes seen too."""
    started = time.monotonic()
    got = b""
    while True:
        remaining = timeout - (time.monotonic() - started)
        if remaining <= 0:
            return None, got
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(4096)
        except socket.timeout:
            return None, got
        except ConnectionResetError:
            return time.monotonic() - started, got
        if not chunk:
            return time.monotonic() - started, got
        got += chunk


# --- handshake timeout -----------------------------------------------------------


def test_handshake_timeout_closes_only_unfinished_handshakes(wsgate):
    server = wsgate({"echo.lua": ECHO_SCRIPT},
                    {"limits": {"handshakeTimeoutMs": 500}, "rateLimit": NO_RATE_LIMIT})
    bystander = Bystander(server.port, label="handshake-bystander").start()
    opened = time.monotonic()
    silent = socket.create_connection((HOST, server.port), timeout=5)
    partial = socket.create_connection((HOST, server.port), timeout=5)
    partial.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n")  # never finished
    silent_after, _ = _tcp_closed_within(silent, 3)
    partial_closed, _ = _tcp_closed_within(partial, 3)
    partial_after = None if partial_closed is None else time.monotonic() - opened
    silent.close()
    partial.close()
    # A slow but complete upgrade inside the timeout, then a life longer than the timeout.
    late = socket.create_connection((HOST, server.port), timeout=5)
    time.sleep(0.3)
    late.close()
    slow = RawClient(server.port, "/echo")
    time.sleep(0.8)
    slow.send_text("still open")
    echoed = slow.recv_text()
    slow.close()
    bystander.stop()
    line = report(f"handshake timeout 500 ms: silent connection closed after {silent_after}s, "
                  f"partial head closed after {partial_after}s; upgraded socket echoed {echoed!r} "
                  f"after outliving the timeout; {bystander.summary()}")
    assert silent_after is not None and 0.4 <= silent_after <= 1.5, line
    assert partial_after is not None and 0.4 <= partial_after <= 1.5, line
    assert echoed == "still open", line
    bystander.assert_intact("handshake timeout")


# --- pings and idle timeout ------------------------------------------------------


def test_silent_client_is_pinged_then_closed_with_1001(wsgate):
    server = wsgate({"echo.lua": ECHO_SCRIPT},
                    {"limits": {"pingIntervalMs": 300, "idleTimeoutMs": 1200}, "rateLimit": NO_RATE_LIMIT})
    bystander = Bystander(server.port, label="idle-bystander").start()
    mute = RawClient(server.port, "/echo")  # completes the handshake, then never answers anything
    started = time.monotonic()
    pings, first_ping, code, closed_at = 0, None, None, None
    while time.monotonic() - started < 4:
        try:
            fin, opcode, payload = mute.read_frame(4, answer_pings=False)
        except (AssertionError, EOFError):
            break
        if opcode == OP_PING:
            pings += 1
            first_ping = first_ping or time.monotonic() - started
        elif opcode == OP_CLOSE:
            code = close_code_of(payload)
            closed_at = time.monotonic() - started
            break
    mute.close()

    # A client that answers pings (the websockets library does) is not idle.
    async def polite():
        async with connect(server.url("/echo")) as ws:
            await asyncio.sleep(2.0)
            await ws.send("awake")
            return await recv(ws)

    polite_echo = asyncio.run(asyncio.wait_for(polite(), 10))
    bystander.stop()
    line = report(f"idle timeout (ping 300 ms, idle 1200 ms): mute client got {pings} pings, first after "
                  f"{first_ping}s, close {code} after {closed_at}s; a ping-answering client idle for 2 s "
                  f"then echoed {polite_echo!r}; {bystander.summary()}")
    assert pings >= 1 and 0.2 <= first_ping <= 1.0, line
    assert code == 1001, line
    assert 1.1 <= closed_at <= 2.2, line
    assert polite_echo == "awake", line
    bystander.assert_intact("idle timeout")


def test_zero_turns_pings_and_idle_timeout_off(wsgate):
    server = wsgate({"echo.lua": ECHO_SCRIPT},
                    {"limits": {"pingIntervalMs": 0, "idleTimeoutMs": 0}, "rateLimit": NO_RATE_LIMIT})
    mute = RawClient(server.port, "/echo")
    try:
        frame = mute.read_frame(1.5, answer_pings=False)
    except AssertionError:
        frame = None
    mute.send_text("still here")
    echoed = mute.recv_text()
    mute.close()
    assert frame is None, f"a frame arrived with pings and idle timeout off: {frame!r}"
    assert echoed == "still here"


# --- graceful shutdown ---------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_during_traffic_closes_everyone_with_1001_and_exits_0(wsgate, signum):
    clients = 6
    server = wsgate({"echo.lua": ECHO_SCRIPT}, {"rateLimit": NO_RATE_LIMIT, "shutdownTimeoutMs": 3000})

    async def client(i, ready):
        sent, got = [], []
        async with connect(server.url("/echo")) as ws:
            ready.release()
            try:
                n = 0
                while True:
                    message = f"c{i}-{n}"
                    await ws.send(message)
                    sent.append(message)
                    got.append(await asyncio.wait_for(ws.recv(), 5))
                    n += 1
            except ConnectionClosed as exc:
                return sent, got, exc.rcvd.code if exc.rcvd else None

    async def main():
        ready = asyncio.Semaphore(0)
        tasks = [asyncio.create_task(client(i, ready)) for i in range(clients)]
        for _ in range(clients):
            await asyncio.wait_for(ready.acquire(), 5)
        await asyncio.sleep(0.5)
        signalled = time.monotonic()
        server.proc.send_signal(signum)
        results = await asyncio.wait_for(asyncio.gather(*tasks), 10)
        return results, signalled

    results, signalled = asyncio.run(asyncio.wait_for(main(), 20))
    code, waited = wait_exit(server.proc, 6)
    exited_after = time.monotonic() - signalled
    codes = [r[2] for r in results]
    echoed = sum(len(r[1]) for r in results)
    line = report(f"{signal.Signals(signum).name} during traffic: {clients} clients had {echoed} echoes, close codes "
                  f"{codes}; exit code {code} after {exited_after:.2f}s (shutdownTimeoutMs 3000)")
    assert codes == [1001] * clients, line
    for sent, got, _ in results:
        # Every echo arrived in order; only a message in flight at the close may be unanswered.
        assert got == sent[:len(got)] and len(sent) - len(got) <= 1, line
        assert len(got) > 10, line
    assert code == 0, line
    assert exited_after < 3.0, line


def test_shutdown_refuses_new_work_and_waits_for_close_handshakes(wsgate):
    server = wsgate({"echo.lua": ECHO_SCRIPT}, {"rateLimit": NO_RATE_LIMIT, "shutdownTimeoutMs": 2000})
    polite = RawClient(server.port, "/echo")
    stubborn = RawClient(server.port, "/echo")  # never answers the close frame
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    polite_code, _ = polite.read_close(3)
    polite.send(ws_close_frame(polite_code))
    time.sleep(0.2)
    health = http_get(server.port, "/api/v1/solution/health")
    upgrade = upgrade_status(server.port, "/echo")
    stubborn_code, _ = stubborn.read_close(3)
    code, _ = wait_exit(server.proc, 6)
    exited_after = time.monotonic() - started
    polite.close()
    stubborn.close()
    line = report(f"shutdown (shutdownTimeoutMs 2000, one client not answering the close): health {health[0]}, "
                  f"upgrade {upgrade.status} Retry-After {upgrade.headers.get('retry-after')}; close codes "
                  f"{polite_code}/{stubborn_code}; exit {code} after {exited_after:.2f}s")
    assert polite_code == 1001 and stubborn_code == 1001, line
    assert health[0] == 503, line
    assert upgrade.status == 503 and upgrade.headers.get("retry-after"), line
    assert code == 0, line
    assert 1.7 <= exited_after <= 3.5, f"did not wait for the close handshake about shutdownTimeoutMs: {line}"


# --- hot reload --------------------------------------------------------------------

VERSIONED = """
if websocketInfo.type == "data" then websocketInfo.send("{tag}:" .. websocketInfo.message) end
"""


def _wait_until(predicate, timeout: float, step: float = 0.02):
    started = time.monotonic()
    while True:
        value = predicate()
        if value:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            return None
        time.sleep(step)


def _upgrade_code(server, path):
    return upgrade_status(server.port, path).status


def test_added_script_becomes_a_route_within_a_second(wsgate):
    server = wsgate({"echo.lua": ECHO_SCRIPT}, {"rateLimit": NO_RATE_LIMIT})
    bystander = Bystander(server.port, label="add-bystander").start()
    before = _upgrade_code(server, "/added")
    (server.endpoints_dir / "added.lua").write_text(VERSIONED.format(tag="added"))
    took = _wait_until(lambda: _upgrade_code(server, "/added") == 101, 3)
    answer = ask(server.port, "/added", "hi")
    bystander.stop()
    line = report(f"hot reload, added script: /added {before} before, upgradable after {took}s, answered "
                  f"{answer!r}; {bystander.summary()}")
    assert before == 404, line
    assert took is not None and took <= 1.0, line
    assert answer == "added:hi", line
    bystander.assert_intact("added script")


def test_script_edited_then_deleted_while_its_sockets_are_open(wsgate):
    server = wsgate({"echo.lua": ECHO_SCRIPT, "v.lua": VERSIONED.format(tag="v1")}, {"rateLimit": NO_RATE_LIMIT})
    bystander = Bystander(server.port, label="edit-bystander").start()
    sockets = [RawClient(server.port, "/v") for _ in range(4)]
    for i, s in enumerate(sockets):
        s.send_text(f"before-{i}")
        assert s.recv_text() == f"v1:before-{i}"

    # Edit: every open socket runs the new version from its next event.
    edited = time.monotonic()
    (server.endpoints_dir / "v.lua").write_text(VERSIONED.format(tag="v2"))
    switched = {}
    probes = 0
    while len(switched) < len(sockets) and time.monotonic() - edited < 3:
        for i, s in enumerate(sockets):
            if i in switched:
                continue
            s.send_text(f"probe-{probes}")
            got = s.recv_text()
            assert got in (f"v1:probe-{probes}", f"v2:probe-{probes}"), got
            probes += 1
            if got.startswith("v2:"):
                switched[i] = time.monotonic() - edited
        time.sleep(0.02)
    new_socket = RawClient(server.port, "/v")
    new_socket.send_text("fresh")
    fresh = new_socket.recv_text()

    # Delete: the route's sockets are closed with 1001, the route is gone.
    deleted = time.monotonic()
    (server.endpoints_dir / "v.lua").unlink()
    codes, close_times = [], []
    for s in sockets + [new_socket]:
        try:
            code, _ = s.read_close(3)
        except AssertionError as exc:
            code = f"none: {exc}"
        codes.append(code)
        close_times.append(round(time.monotonic() - deleted, 2))
        s.close()
    gone = _upgrade_code(server, "/v")
    bystander.stop()
    line = report(f"hot reload, script edited then deleted with {len(sockets) + 1} sockets open: switched to v2 after "
                  f"{sorted(switched.values())} s ({probes} probes), new socket got {fresh!r}; after delete close "
                  f"codes {codes} by {max(close_times)}s, /v then {gone}; {bystander.summary()}")
    assert len(switched) == len(sockets) and max(switched.values()) <= 1.0, line
    assert fresh == "v2:fresh", line
    assert codes == [1001] * (len(sockets) + 1), line
    assert max(close_times) <= 1.2, line
    assert gone == 404, line
    bystander.assert_intact("script edited and deleted")


def test_script_that_fails_to_compile_keeps_the_previous_version(wsgate):
    server = wsgate({"echo.lua": ECHO_SCRIPT, "v.lua": VERSIONED.format(tag="good")}, {"rateLimit": NO_RATE_LIMIT})
    bystander = Bystander(server.port, label="broken-bystander").start()
    open_socket = RawClient(server.port, "/v")
    open_socket.send_text("a")
    assert open_socket.recv_text() == "good:a"
    (server.endpoints_dir / "v.lua").write_text("-- line 1\nlocal x = 1\nif then end\n")
    log = server.wait_for_log("v.lua:3:", timeout=3)
    error_lines = [ln for ln in log.splitlines() if "ERROR" in ln and "v.lua:3:" in ln]
    time.sleep(0.3)
    open_socket.send_text("b")
    kept = open_socket.recv_text()
    fresh = ask(server.port, "/v", "c")
    # A fixed version takes over again.
    (server.endpoints_dir / "v.lua").write_text(VERSIONED.format(tag="fixed"))
    took = _wait_until(lambda: ask(server.port, "/v", "d") == "fixed:d", 3)
    open_socket.send_text("e")
    after_fix = open_socket.recv_text()
    open_socket.close()
    bystander.stop()
    line = report(f"hot reload, script that does not compile: ERROR lines {error_lines[:1]}; open socket got "
                  f"{kept!r}, new socket {fresh!r}; fixed version served after {took}s ({after_fix!r}); "
                  f"{bystander.summary()}")
    assert error_lines, line
    assert kept == "good:b" and fresh == "good:c", line
    assert took is not None and took <= 1.0 and after_fix == "fixed:e", line
    bystander.assert_intact("script that does not compile")


def test_nested_route_in_a_folder_created_after_start(wsgate):
    server = wsgate({"echo.lua": ECHO_SCRIPT}, {"rateLimit": NO_RATE_LIMIT})
    bystander = Bystander(server.port, label="nested-bystander").start()
    room_script = """
if websocketInfo.type == "data" then
  websocketInfo.send("{tag}:" .. websocketInfo.parameters.room .. ":" .. websocketInfo.message)
end
"""
    folder = server.endpoints_dir / "chat"
    folder.mkdir()
    time.sleep(0.05)  # the folder exists before the file, as when someone creates it by hand
    (folder / "{room}.lua").write_text(room_script.format(tag="r1"))
    took = _wait_until(lambda: _upgrade_code(server, "/chat/lobby") == 101, 3)
    first = ask(server.port, "/chat/lobby", "hi")
    # An edit inside the new folder is picked up too (the folder is watched).
    (folder / "{room}.lua").write_text(room_script.format(tag="r2"))
    took_edit = _wait_until(lambda: ask(server.port, "/chat/lobby", "hi") == "r2:lobby:hi", 3)
    # And a folder two levels down.
    deep = server.endpoints_dir / "a" / "b"
    deep.mkdir(parents=True)
    (deep / "c.lua").write_text(VERSIONED.format(tag="deep"))
    took_deep = _wait_until(lambda: _upgrade_code(server, "/a/b/c") == 101, 3)
    bystander.stop()
    line = report(f"hot reload, nested routes: chat/{{room}}.lua in a new folder served after {took}s ({first!r}), "
                  f"its edit after {took_edit}s, a/b/c.lua after {took_deep}s; {bystander.summary()}")
    assert took is not None and took <= 1.0 and first == "r1:lobby:hi", line
    assert took_edit is not None and took_edit <= 1.0, line
    assert took_deep is not None and took_deep <= 1.0, line
    bystander.assert_intact("nested routes")


def test_script_replaced_by_rename_takes_effect(wsgate):
    # Editors often write a temporary file and rename it over the script.
    server = wsgate({"echo.lua": ECHO_SCRIPT, "v.lua": VERSIONED.format(tag="old")}, {"rateLimit": NO_RATE_LIMIT})
    open_socket = RawClient(server.port, "/v")
    tmp = server.endpoints_dir / ".v.lua.swp"
    tmp.write_text(VERSIONED.format(tag="renamed"))
    os.replace(tmp, server.endpoints_dir / "v.lua")
    replies = []

    def switched():
        open_socket.send_text("x")
        replies.append(open_socket.recv_text())
        return replies[-1] == "renamed:x"

    took = _wait_until(switched, 3, step=0.05)
    open_socket.close()
    assert took is not None and took <= 1.0, f"rename not picked up: {replies[-3:]}"
    assert all(r in ("old:x", "renamed:x") for r in replies), replies


# --- SIGHUP ---------------------------------------------------------------------------


def _sighup(server, config) -> None:
    write_config(server.config_path, config)
    server.proc.send_signal(signal.SIGHUP)


def test_sighup_applies_the_live_keys(wsgate):
    server = wsgate({"echo.lua": ECHO_SCRIPT}, {"rateLimit": NO_RATE_LIMIT})
    # Under the new limit (2/s) the bystander sends one message every 0.7 s at most.
    bystander = Bystander(server.port, label="hup-bystander", interval=0.7).start()
    before_no_origin = _upgrade_code(server, "/echo")
    _sighup(server, {
        "rateLimit": {"messagesPerSecond": 2, "burst": 2, "onExceed": "close"},
        "websocket": {"approvedSocketDomains": [r"good\.example"], "subprotocols": ["p1"]},
        "limits": {"maxConnections": 50},
        "logLevel": "debug",
    })
    took = _wait_until(lambda: _upgrade_code(server, "/echo") == 403, 3)
    allowed = upgrade_status(server.port, "/echo",
                             headers={"Origin": "http://good.example", "Sec-WebSocket-Protocol": "p0, p1"})
    # The new rate limit: a fresh connection sending 5 quick messages is closed with 1008.
    limited = RawClient(server.port, "/echo", headers={"Origin": "http://good.example"})
    for i in range(5):
        limited.send_text(f"quick-{i}")
    limited_code, _ = limited.read_close(5)
    limited.close()
    time.sleep(1.5)  # the bystander keeps going under the new limit
    bystander.stop()
    line = report(f"SIGHUP live keys: no-Origin upgrade {before_no_origin} before, 403 after {took}s; allowed origin "
                  f"{allowed.status} with subprotocol {allowed.headers.get('sec-websocket-protocol')!r}; 5 quick "
                  f"messages under the new limit closed with {limited_code}; {bystander.summary()}")
    assert before_no_origin == 101, line
    assert took is not None and took <= 1.0, line
    assert allowed.status == 101 and allowed.headers.get("sec-websocket-protocol") == "p1", line
    assert limited_code == 1008, line
    bystander.assert_intact("SIGHUP live keys")


def test_sighup_warns_about_keys_that_need_a_restart(wsgate):
    server = wsgate({"echo.lua": ECHO_SCRIPT}, {"rateLimit": NO_RATE_LIMIT, "scripts": {"memoryBytes": 64 << 20}})
    bystander = Bystander(server.port, label="restart-key-bystander").start()
    _sighup(server, {"rateLimit": NO_RATE_LIMIT, "scripts": {"memoryBytes": 32 << 20}})
    log = server.wait_for_log("scripts.memoryBytes", timeout=3)
    warn = [ln for ln in log.splitlines() if "WARN" in ln and "scripts.memoryBytes" in ln]
    echoed = ask(server.port, "/echo", "after hup")
    bystander.stop()
    line = report(f"SIGHUP with a restart-only key: {warn[:1]}; serving {echoed!r}; {bystander.summary()}")
    assert warn, line
    assert echoed == "after hup", line
    assert server.proc.poll() is None, line
    bystander.assert_intact("SIGHUP restart-only key")


def test_sighup_reloads_a_script_change_inotify_did_not_see(wsgate, tmp_path):
    server = wsgate({"echo.lua": ECHO_SCRIPT, "v.lua": VERSIONED.format(tag="v1")}, {"rateLimit": NO_RATE_LIMIT})
    bystander = Bystander(server.port, label="hup-script-bystander").start()
    # Written through a hard link in another folder: the endpoints folder's watch sees no event.
    link = tmp_path / "outside-link.lua"
    os.link(server.endpoints_dir / "v.lua", link)
    with open(link, "r+", encoding="utf-8") as f:
        f.seek(0)
        f.write(VERSIONED.format(tag="v2"))
        f.truncate()
    time.sleep(0.6)
    before = ask(server.port, "/v", "x")
    server.proc.send_signal(signal.SIGHUP)
    took = _wait_until(lambda: ask(server.port, "/v", "x") == "v2:x", 3)
    bystander.stop()
    line = report(f"SIGHUP script reload: before the signal /v answered {before!r} (v1 means inotify missed the "
                  f"edit), v2 served {took}s after SIGHUP; {bystander.summary()}")
    assert took is not None and took <= 1.0, line
    bystander.assert_intact("SIGHUP script reload")


@pytest.mark.parametrize("bad", ["unknown-key", "not-json", "bad-regex"])
def test_sighup_with_a_bad_config_keeps_the_old_one(wsgate, bad):
    config = {"rateLimit": NO_RATE_LIMIT, "websocket": {"approvedSocketDomains": [r"good\.example"]}}
    server = wsgate({"echo.lua": ECHO_SCRIPT}, config)
    bad_config = {
        "unknown-key": {"bogusKey": 1, "rateLimit": NO_RATE_LIMIT, "websocket": {"approvedSocketDomains": []}},
        "not-json": '{"websocket": {"approvedSocketDomains": []',
        "bad-regex": {"rateLimit": NO_RATE_LIMIT, "websocket": {"approvedSocketDomains": ["ok", "(["]}},
    }[bad]
    bystander = Bystander(server.port, label="bad-hup-bystander",
                          headers={"Origin": "http://good.example"}).start()
    errors_before = len(server.log_lines_with("ERROR"))
    _sighup(server, bad_config)
    took = _wait_until(lambda: len(server.log_lines_with("ERROR")) > errors_before, 3)
    time.sleep(0.3)
    no_origin = _upgrade_code(server, "/echo")
    good_origin = upgrade_status(server.port, "/echo", headers={"Origin": "http://good.example"}).status
    error_lines = server.log_lines_with("ERROR")[errors_before:]
    bystander.stop()
    line = report(f"SIGHUP with a bad config ({bad}): ERROR lines {error_lines[:1]}; afterwards no-Origin upgrade "
                  f"{no_origin}, allowed origin {good_origin}; process alive {server.proc.poll() is None}; "
                  f"{bystander.summary()}")
    assert took is not None, line
    if bad == "unknown-key":
        assert any("bogusKey" in ln for ln in error_lines), line
    assert no_origin == 403 and good_origin == 101, f"the old config was not kept: {line}"
    assert server.proc.poll() is None, line
    bystander.assert_intact(f"SIGHUP with a bad config ({bad})")
