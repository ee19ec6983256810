"""Logs: `logFormat` "text" (one line per event, tracebacks folded) and "json" (one object a
line: ts, level, msg, and socket_id / route where they apply), switched by SIGHUP; a bad value
stops start-up naming the key. Every line of the JSON log is parsed."""

from __future__ import annotations

import json
import re
import signal

from wsgate_support import connect, recv, run, run_until_exit, wait_until, write_config

SCRIPT = """
local w = websocketInfo
if w.type == "open" then w.send(w.socket_id) return end
if w.type ~= "data" then return end
if w.message == "boom" then local function inner() error("kaboom") end inner() end
print("said " .. w.message .. "\\nsecond line")
w.send("ok")
"""

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def exercise(server):
    """A print (two lines of text) and a script error with its traceback; returns the socket id."""
    async def main():
        async with connect(server.url("/rooms/blue")) as ws:
            socket_id = await recv(ws)
            await ws.send("hi")
            assert await recv(ws) == "ok"
            await ws.send("boom")
            await ws.send("after")
            assert await recv(ws) == "ok"  # the error is logged and the socket goes on
            return socket_id

    return run(main())


def json_lines(server):
    lines = server.log().splitlines()
    return [json.loads(line) for line in lines]  # every line parses, or the test fails here


def test_json_lines_carry_socket_and_route(wsgate):
    server = wsgate({"rooms/{room}.lua": SCRIPT}, {"logFormat": "json", "logLevel": "debug"})
    socket_id = exercise(server)
    wait_until(lambda: any(e["msg"].startswith("script error") for e in json_lines(server)), what="the error line")
    events = json_lines(server)
    assert all(set(e) >= {"ts", "level", "msg"} and TIMESTAMP.match(e["ts"]) for e in events), events
    assert {e["level"] for e in events} <= {"debug", "info", "warn", "error"}
    assert any(e["msg"].startswith("wsgate listening") and "socket_id" not in e for e in events)

    printed = next(e for e in events if e["msg"].startswith("script print"))
    assert printed["msg"] == "script print: said hi\nsecond line"
    assert (printed["level"], printed["socket_id"], printed["route"]) == ("info", socket_id, "/rooms/{room}")

    error = next(e for e in events if e["msg"].startswith("script error"))
    assert (error["level"], error["socket_id"], error["route"]) == ("error", socket_id, "/rooms/{room}")
    assert "kaboom" in error["msg"] and "stack traceback:" in error["msg"] and "\n" in error["msg"]

    opened = [e for e in events if e["msg"] == "socket opened"]
    assert [(e["level"], e["socket_id"], e["route"]) for e in opened] == [("debug", socket_id, "/rooms/{room}")]


def test_text_lines_and_a_switch_to_json_on_sighup(wsgate):
    server = wsgate({"rooms/{room}.lua": SCRIPT}, {})
    socket_id = exercise(server)
    wait_until(lambda: server.log_lines_with("script error"), what="the error line")
    [error] = server.log_lines_with("script error")
    assert re.match(r"^\S+Z ERROR route=/rooms/\{room\} socket=" + re.escape(socket_id) + r" script error event=data: ", error)
    assert "kaboom" in error and " | stack traceback:" in error
    printed = server.log_lines_with("script print")[0]
    assert printed.endswith(f"INFO route=/rooms/{{room}} socket={socket_id} script print: said hi | second line")

    write_config(server.config_path, {"logFormat": "json"})
    server.proc.send_signal(signal.SIGHUP)
    server.wait_for_log('"msg":"config reloaded"')
    before = next(i for i, line in enumerate(server.log().splitlines()) if '"msg":"config reloaded"' in line)
    exercise(server)
    wait_until(lambda: sum('"script error' in line for line in server.log().splitlines()[before:]), what="a JSON error")
    after = [json.loads(line) for line in server.log().splitlines()[before:]]
    assert any(e["msg"].startswith("script error") for e in after)


def test_a_bad_log_format_stops_start_up(tmp_path):
    code, stderr = run_until_exit(tmp_path, {"echo.lua": SCRIPT}, {"logFormat": "xml"})
    assert code == 2, stderr
    assert "logFormat" in stderr and "text or json" in stderr
