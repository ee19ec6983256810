"""Endpoint scripts: the websocketInfo global, per-run environments, helpers and errors."""

from __future__ import annotations

import base64
import json
import time
import uuid

import pytest
from websockets.exceptions import InvalidStatus

from wsgate_support import as_object, close_code, connect, recv, recv_json, run

# Reports everything the script sees. On a close event it reports to the
# socket named by the query parameter report_to, since its own socket is gone.
INFO = """
local w = websocketInfo
local report = {
  t = w.type, uri = w.uri, route = w.route, headers = w.headers,
  parameters = w.parameters, ts = w.timestamp, ts_kind = math.type(w.timestamp),
  id = w.socket_id, id_kind = type(w.socket_id),
  message = w.message, message_type = w.message_type,
}
if w.type == "close" then
  local target = w.parameters and w.parameters.report_to
  if target then
    report.send_result = w.send("x")
    report.close_result = w.close()
    Websocket.send{socket_id = target, message = to_json(report)}
  end
else
  w.send(to_json(report))
end
"""

LEAK = """
websocketInfo.send(tostring(leaked_global))
leaked_global = websocketInfo.type .. ":" .. websocketInfo.socket_id
"""

SEND_TABLE = """
if websocketInfo.type == "data" then
  websocketInfo.send{kind = "table", echo = websocketInfo.message, n = 3, list = {1, 2, 3}}
end
"""

CLOSER = """
if websocketInfo.type == "data" then
  if websocketInfo.message == "bye" then
    websocketInfo.close()
  else
    websocketInfo.send(websocketInfo.message)
  end
end
"""

JSON = """
if websocketInfo.type ~= "data" then return end
local value, err = from_json(websocketInfo.message)
websocketInfo.send(to_json{isnil = (value == nil), value = value, err = err, errtype = type(err)})
"""

PRINTER = """
if websocketInfo.type == "open" then
  websocketInfo.send(websocketInfo.socket_id)
elseif websocketInfo.type == "data" then
  print("printed:", websocketInfo.message)
  websocketInfo.send("done")
end
"""

BOOM = """
if websocketInfo.type == "open" then
  websocketInfo.send(websocketInfo.socket_id)
elseif websocketInfo.type == "data" then
  if websocketInfo.message == "boom" then
    error("deliberate-boom-marker")
  end
  websocketInfo.send("echo:" .. websocketInfo.message)
end
"""

# Lists websocketInfo's keys with pairs() before reading any field, and what its metatable allows.
KEYS = """
local keys = {}
for k in pairs(websocketInfo) do keys[#keys + 1] = k end
table.sort(keys)
websocketInfo.send(to_json{keys = keys, metatable = tostring(getmetatable(websocketInfo)),
                           replaced = pcall(setmetatable, websocketInfo, {}),
                           agent = websocketInfo.headers["user-agent"], room = websocketInfo.parameters.room})
"""

# Reports what a data run sees, then writes to websocketInfo as the message says: nothing a run
# wrote (a new field, a replaced one, a rawset) may reach the next run, of this socket or another.
WRITER = """
local w = websocketInfo
if w.type ~= "data" then return end
w.send(to_json{extra = tostring(w.extra), raw = tostring(w.raw), t = w.type, message = w.message,
               uri = w.uri, send = type(w.send)})
if w.message == "write" then
  w.extra = "leak"
  w.send = nil
elseif w.message == "rawset" then
  rawset(w, "raw", "leak")
elseif w.message == "retype" then
  w.type = "bogus"
  w.message = "bogus"
end
"""

# Sends the text it received back through both calls, drops it, then tries text of the same length
# that is not UTF-8 through both.
TEXT_CHECK = """
local w = websocketInfo
if w.type ~= "data" then return end
w.send(w.message)
Websocket.send{socket_id = w.socket_id, message = w.message}
local length = #w.message
w.message = nil
collectgarbage()
local first = w.send(string.rep("\\255", length))
local second = Websocket.send{socket_id = w.socket_id, message = string.rep("\\255", length)}
w.send(to_json{first = first and first.status, second = second and second.status})
"""

SCRIPTS = {
    "info.lua": INFO,
    "keys.lua": KEYS,
    "room/{room}.lua": INFO,
    "leak.lua": LEAK,
    "sendtable.lua": SEND_TABLE,
    "closer.lua": CLOSER,
    "json.lua": JSON,
    "printer.lua": PRINTER,
    "boom.lua": BOOM,
    "textcheck.lua": TEXT_CHECK,
}

HANDLER = """
function handle_websocket_websocket_info(info)
  if info.type == "open" then
    info.send(to_json{via = "handler", t = info.type, route = info.route, parameters = info.parameters})
  elseif info.type == "data" then
    info.send(to_json{via = "handler", t = info.type, message = info.message})
  end
end
"""


@pytest.fixture(scope="module")
def server(wsgate_module):
    return wsgate_module(SCRIPTS, {"rateLimit": {"messagesPerSecond": 0}})


@pytest.fixture(scope="module")
def handler_server(wsgate_module):
    return wsgate_module(
        {"_websocket_info.lua": HANDLER, "echo.lua": CLOSER},
        {"rateLimit": {"messagesPerSecond": 0}},
    )


def open_report(url, **kwargs):
    async def main():
        async with connect(url, **kwargs) as ws:
            return await recv_json(ws)

    return run(main())


# --- websocketInfo on open ---------------------------------------------------


def test_open_event_type_and_uri(server):
    report = open_report(server.url("/room/r1?x=1"))
    assert report["t"] == "open"
    assert report["uri"] == f"ws://127.0.0.1:{server.port}/room/r1?x=1"


def test_open_event_route_is_the_pattern(server):
    assert open_report(server.url("/room/r1"))["route"] == "/room/{room}"
    assert open_report(server.url("/info"))["route"] == "/info"


def test_parameters_merge_path_and_query(server):
    report = open_report(server.url("/room/r1?x=1&y=two"))
    assert as_object(report["parameters"]) == {"room": "r1", "x": "1", "y": "two"}


def test_path_parameter_wins_over_query_parameter(server):
    report = open_report(server.url("/room/r1?room=other&z=3"))
    assert as_object(report["parameters"]) == {"room": "r1", "z": "3"}


def test_headers_have_lower_case_names(server):
    report = open_report(server.url("/info"), additional_headers={"X-Custom-Header": "Hello There"})
    headers = report["headers"]
    assert isinstance(headers, dict)
    assert headers.get("x-custom-header") == "Hello There"
    assert headers.get("host") == f"127.0.0.1:{server.port}"
    assert all(name == name.lower() for name in headers), sorted(headers)


def test_pairs_lists_every_field_and_the_metatable_is_sealed(server):
    report = open_report(server.url("/keys?room=r9"), additional_headers={"User-Agent": "agent/1.0"})
    assert report["keys"] == ["claims", "close", "extensions", "headers", "parameters", "route", "send", "socket_id",
                              "subprotocol", "timestamp", "type", "uri"]
    assert report["metatable"] == "false"
    assert report["replaced"] is False
    assert report["agent"] == "agent/1.0"
    assert report["room"] == "r9"


def test_timestamp_is_integer_milliseconds(server):
    before = int(time.time() * 1000)
    report = open_report(server.url("/info"))
    after = int(time.time() * 1000)
    assert report["ts_kind"] == "integer"
    assert isinstance(report["ts"], int)
    assert before - 2000 <= report["ts"] <= after + 2000


def test_socket_ids_are_strings_and_distinct(server):
    first = open_report(server.url("/info"))
    second = open_report(server.url("/info"))
    assert first["id_kind"] == "string" and isinstance(first["id"], str) and first["id"]
    assert first["id"] != second["id"]


# --- websocketInfo on data ---------------------------------------------------


def test_data_event_text_message(server):
    async def main():
        async with connect(server.url("/info")) as ws:
            opened = await recv_json(ws)
            await ws.send("hello text")
            data = await recv_json(ws)
            return opened, data

    opened, data = run(main())
    assert data["t"] == "data"
    assert data["message"] == "hello text"
    assert data["message_type"] == "data-text"
    assert data["id"] == opened["id"]
    assert data["route"] == "/info"


def test_data_event_binary_message_is_base64(server):
    payload = bytes([0, 1, 2, 250, 255]) + b"binary"

    async def main():
        async with connect(server.url("/info")) as ws:
            await recv_json(ws)
            await ws.send(payload)
            return await recv_json(ws)

    data = run(main())
    assert data["message_type"] == "data-binary"
    assert base64.b64decode(data["message"]) == payload


def test_one_run_per_message(server):
    async def main():
        async with connect(server.url("/info")) as ws:
            await recv_json(ws)
            for i in range(3):
                await ws.send(f"m{i}")
            got = [await recv_json(ws) for _ in range(3)]
            await ws.send("last")
            got.append(await recv_json(ws))
            return got

    got = run(main())
    assert [g["message"] for g in got] == ["m0", "m1", "m2", "last"]


# --- close event -------------------------------------------------------------


def close_event_report(server):
    async def main():
        async with connect(server.url("/info")) as observer:
            observer_id = (await recv_json(observer))["id"]
            async with connect(server.url(f"/info?report_to={observer_id}")) as closing:
                closing_id = (await recv_json(closing))["id"]
            report = await recv_json(observer)
            return closing_id, report

    return run(main())


def test_close_event_runs_the_script(server):
    closing_id, report = close_event_report(server)
    assert report["t"] == "close"
    assert report["id"] == closing_id
    assert report["route"] == "/info"


def test_send_and_close_on_close_event_return_error_objects(server):
    _, report = close_event_report(server)
    for key in ("send_result", "close_result"):
        result = report.get(key)
        assert isinstance(result, dict), f"{key}: {result!r}"
        assert {"status", "error", "type"} <= set(result), f"{key}: {result!r}"


def test_close_event_reaches_a_socket_on_the_same_worker(wsgate):
    # With one worker both sockets always share an event loop, so a send made
    # from the close event has to be flushed by the same loop that ran it.
    server = wsgate({"info.lua": INFO}, {"rateLimit": {"messagesPerSecond": 0}}, workers=1)
    closing_id, report = close_event_report(server)
    assert report["t"] == "close"
    assert report["id"] == closing_id


# --- environment, send, close ------------------------------------------------


def test_each_run_gets_fresh_globals(server):
    async def main():
        seen = []
        async with connect(server.url("/leak")) as first:
            seen.append(await recv(first))
            await first.send("one")
            seen.append(await recv(first))
            async with connect(server.url("/leak")) as second:
                seen.append(await recv(second))
                await second.send("two")
                seen.append(await recv(second))
            await first.send("three")
            seen.append(await recv(first))
        return seen

    assert run(main()) == ["nil"] * 5


def test_nothing_a_run_writes_to_websocketinfo_reaches_the_next_run(wsgate):
    # One worker: every run shares the loop's Lua state, and so its websocketInfo.
    server = wsgate({"writer.lua": WRITER}, {"rateLimit": {"messagesPerSecond": 0}}, workers=1)

    async def main():
        seen = []
        async with connect(server.url("/writer?n=a")) as a, connect(server.url("/writer?n=b")) as b:
            for ws, message in [(a, "write"), (b, "x"), (a, "rawset"), (b, "retype"), (a, "y"), (b, "z")]:
                await ws.send(message)
                seen.append(await recv_json(ws))
        return seen

    seen = run(main())
    for report, (who, message) in zip(seen, [("a", "write"), ("b", "x"), ("a", "rawset"), ("b", "retype"),
                                             ("a", "y"), ("b", "z")]):
        assert report == {"extra": "nil", "raw": "nil", "t": "data", "message": message,
                          "uri": server.url(f"/writer?n={who}"), "send": "function"}, report


def test_send_table_is_json_text(server):
    async def main():
        async with connect(server.url("/sendtable")) as ws:
            await ws.send("t1")
            return await recv(ws)

    msg = run(main())
    assert isinstance(msg, str), f"a table must be sent as a text message, got {msg!r}"
    assert json.loads(msg) == {"kind": "table", "echo": "t1", "n": 3, "list": [1, 2, 3]}


def test_send_string_is_text(server):
    async def main():
        async with connect(server.url("/closer")) as ws:
            await ws.send("plain string")
            return await recv(ws)

    assert run(main()) == "plain string"


def test_received_text_goes_back_unchanged_and_other_text_is_still_checked(server):
    # The text a script was given is sent on without a second UTF-8 check; anything else is
    # checked, also once the script has dropped the message it was given.
    text = "h\u00e9llo \u2713 \U0001F600 " * 5

    async def main():
        async with connect(server.url("/textcheck")) as ws:
            await ws.send(text)
            return [await recv(ws) for _ in range(3)]

    first, second, statuses = run(main())
    assert first == text and second == text
    assert json.loads(statuses) == {"first": 400, "second": 400}


def test_close_from_script_is_1000(server):
    async def main():
        async with connect(server.url("/closer")) as ws:
            await ws.send("bye")
            return await close_code(ws)

    code, messages = run(main())
    assert code == 1000
    assert messages == []


# --- to_json / from_json / print ---------------------------------------------


def json_reply(server, text):
    async def main():
        async with connect(server.url("/json")) as ws:
            await ws.send(text)
            return await recv_json(ws)

    return run(main())


def test_from_json_and_to_json_round_trip(server):
    doc = {"a": [1, 2, 3], "b": {"c": "d"}, "e": True, "f": 1.5, "s": 'quote " and \\ slash', "u": "ünï"}
    reply = json_reply(server, json.dumps(doc))
    assert reply["isnil"] is False
    assert reply["value"] == doc
    assert "err" not in reply


def test_from_json_bad_input_returns_nil_and_message(server):
    reply = json_reply(server, '{"a": [1, 2')
    assert reply["isnil"] is True
    assert reply["errtype"] == "string"
    assert reply["err"]


def test_print_goes_to_log_with_route_and_socket_id(server):
    marker = f"print-marker-{uuid.uuid4().hex}"

    async def main():
        async with connect(server.url("/printer")) as ws:
            socket_id = await recv(ws)
            await ws.send(marker)
            assert await recv(ws) == "done"
            return socket_id

    socket_id = run(main())
    server.wait_for_log(marker)
    lines = server.log_lines_with(marker)
    assert any("/printer" in line and socket_id in line for line in lines), lines


# --- errors ------------------------------------------------------------------


def test_script_error_is_logged_and_connection_survives(server):
    async def main():
        async with connect(server.url("/boom")) as ws:
            socket_id = await recv(ws)
            await ws.send("boom")
            await ws.send("after")
            return socket_id, await recv(ws)

    socket_id, reply = run(main())
    assert reply == "echo:after"
    log = server.wait_for_log("deliberate-boom-marker")
    assert "stack traceback" in log
    assert "/boom" in log
    assert socket_id in log


# --- the _websocket_info.lua event handler -----------------------------------


def test_unknown_path_without_event_handler_is_404(server):
    async def main():
        with pytest.raises(InvalidStatus) as info:
            ws = await connect(server.url("/no/such/script"))
            await ws.close()
        return info.value.response.status_code

    assert run(main()) == 404


def test_event_handler_receives_unmatched_paths(handler_server):
    async def main():
        async with connect(handler_server.url("/some/unknown/path?q=1")) as ws:
            opened = await recv_json(ws)
            await ws.send("via handler")
            data = await recv_json(ws)
            return opened, data

    opened, data = run(main())
    assert opened["via"] == "handler"
    assert opened["t"] == "open"
    assert opened["route"] == "/some/unknown/path"
    assert as_object(opened["parameters"]) == {"q": "1"}
    assert data == {"via": "handler", "t": "data", "message": "via handler"}


def test_event_handler_does_not_shadow_scripts(handler_server):
    async def main():
        async with connect(handler_server.url("/echo")) as ws:
            await ws.send("to the script")
            return await recv(ws)

    assert run(main()) == "to the script"
