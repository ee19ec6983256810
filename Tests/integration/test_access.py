"""Who may connect and what a script may touch: the Origin allow-list,
subprotocol negotiation, limits.maxConnections and the Lua sandbox.

Each test prints a ``[wsgate-report]`` line (``pytest -s``) with the number
of bad inputs it tried; scenarios that attack a running gateway keep a
bystander echo client (numbered messages, checked in order) beside them.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import socket
import time

import pytest
from websockets.exceptions import InvalidStatus

from wsgate_support import (
    ECHO_SCRIPT,
    HOST,
    Bystander,
    RawClient,
    accept_for,
    ask,
    connect,
    http_get,
    new_key,
    parse_server_frame,
    read_head,
    recv,
    report,
    run_until_exit,
    upgrade_status,
)

NO_RATE_LIMIT = {"messagesPerSecond": 0}

# --- websocket.approvedSocketDomains ----------------------------------------------

PATTERNS = [
    r"https://app\.example\.com",      # a full origin
    r"trusted\.example\.org:8443",     # host:port
    r"(.*\.)?corp\.example",           # a host and its subdomains
    r"alt-a\.example|alt-b\.example",  # an alternation must be anchored as a whole
]

ORIGINS = [
    ("https://app.example.com", 101),
    ("HTTPS://App.Example.COM", 101),
    ("http://app.example.com", 403),
    ("https://app.example.com:443", 403),
    ("https://app.example.com.evil.net", 403),
    ("https://evilapp.example.com", 403),
    ("https://app.example.community", 403),
    ("https://app.example.com/path", 403),
    ("https://user@app.example.com", 403),
    ("https://evil.net#https://app.example.com", 403),
    ("app.example.com", 403),
    ("http://trusted.example.org:8443", 101),
    ("https://trusted.example.org:8443", 101),
    ("http://trusted.example.org", 403),
    ("http://trusted.example.org:84430", 403),
    ("http://xtrusted.example.org:8443", 403),
    ("http://corp.example", 101),
    ("https://a.b.corp.example:444", 101),
    ("https://corp.example.attacker.net", 403),
    ("https://notcorp.example", 403),
    ("https://alt-b.example", 101),
    ("https://alt-b.example.evil", 403),
    ("https://evil-alt-a.example", 403),
    ("https://[::1]:8443", 403),
    ("null", 403),
    ("", 403),
    (None, 403),  # no Origin header at all
]


@pytest.fixture(scope="module")
def origin_server(wsgate_module):
    return wsgate_module({"echo.lua": ECHO_SCRIPT},
                         {"rateLimit": NO_RATE_LIMIT, "websocket": {"approvedSocketDomains": PATTERNS}})


def test_origin_allow_list(origin_server):
    server = origin_server
    bystander = Bystander(server.port, label="origin-bystander",
                          headers={"Origin": "https://app.example.com"}).start()
    outcomes = []
    for origin, _ in ORIGINS:
        headers = {"Origin": origin} if origin is not None else {}
        outcomes.append(upgrade_status(server.port, "/echo", headers=headers).status)
    health_status, _, _ = http_get(server.port, "/api/v1/solution/health")
    time.sleep(0.3)  # the bystander keeps echoing after the refusals
    bystander.stop()
    wrong = [(origin, want, got) for (origin, want), got in zip(ORIGINS, outcomes) if want != got]
    refused = sum(1 for _, want in ORIGINS if want == 403)
    line = report(f"origin allow-list: {len(ORIGINS)} origins tried ({refused} that must be refused); "
                  f"mismatches {wrong}; health {health_status}; {bystander.summary()}")
    assert not wrong, line
    assert health_status == 200, line
    bystander.assert_intact("origin allow-list")


def test_refused_origin_is_logged_at_warn(origin_server):
    origin = "https://refused-origin-marker.example"
    assert upgrade_status(origin_server.port, "/echo", headers={"Origin": origin}).status == 403
    log = origin_server.wait_for_log("refused-origin-marker", timeout=3)
    lines = [ln for ln in log.splitlines() if "refused-origin-marker" in ln]
    assert any(" WARN " in ln and origin in ln for ln in lines), lines


def test_origin_check_with_a_websocket_client(origin_server):
    async def main():
        async with connect(origin_server.url("/echo"), origin="https://a.corp.example") as ws:
            await ws.send("allowed")
            allowed = await recv(ws)
        try:
            async with connect(origin_server.url("/echo"), origin="https://corp.example.evil"):
                return allowed, None
        except InvalidStatus as exc:
            return allowed, exc.response.status_code

    allowed, refused = asyncio.run(asyncio.wait_for(main(), 10))
    assert allowed == "allowed"
    assert refused == 403


@pytest.mark.parametrize("bad", ["([", "*", "a{2,1}", "(?<name"])
def test_invalid_origin_pattern_stops_start_up(tmp_path, bad):
    code, stderr = run_until_exit(tmp_path, {"echo.lua": ECHO_SCRIPT},
                                  {"websocket": {"approvedSocketDomains": [r"ok\.example", bad]}})
    assert code == 2, stderr
    assert "websocket.approvedSocketDomains[1]" in stderr, stderr


# --- websocket.subprotocols ------------------------------------------------------------

PROTO_REPORT = """
if websocketInfo.type == "open" then
  local info = Websocket.info{socket_id = websocketInfo.socket_id}
  websocketInfo.send(to_json{own = websocketInfo.subprotocol, info = info.subprotocol})
end
"""


@pytest.fixture(scope="module")
def proto_server(wsgate_module):
    return wsgate_module({"proto.lua": PROTO_REPORT},
                         {"rateLimit": NO_RATE_LIMIT, "websocket": {"subprotocols": ["chat.v2", "chat.v1", "json"]}})


def _raw_upgrade_with_protocols(port, protocol_headers):
    """An upgrade with any number of Sec-WebSocket-Protocol headers; returns (response, first message)."""
    key = new_key()
    lines = ["GET /proto HTTP/1.1", f"Host: {HOST}:{port}", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    lines += [f"Sec-WebSocket-Protocol: {value}" for value in protocol_headers]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    with socket.create_connection((HOST, port), timeout=5) as sock:
        sock.sendall(request)
        response = read_head(sock)
        assert response.status == 101, response
        assert response.headers.get("sec-websocket-accept") == accept_for(key)
        buf = bytearray(response.rest)
        while parse_server_frame(buf) is None:
            chunk = sock.recv(4096)
            assert chunk, "closed before the first message"
            buf += chunk
        return response, json.loads(parse_server_frame(buf)[2])


@pytest.mark.parametrize("offered, chosen", [
    (["chat.v1, chat.v2"], "chat.v1"),
    (["x-unknown, chat.v2"], "chat.v2"),
    (["  chat.v2  ,chat.v1"], "chat.v2"),
    (["x-unknown"], ""),
    (["x-one", "json"], "json"),
    ([], ""),
])
def test_subprotocol_negotiation(proto_server, offered, chosen):
    response, seen = _raw_upgrade_with_protocols(proto_server.port, offered)
    header = response.headers.get("sec-websocket-protocol")
    assert header == (chosen or None), (offered, response.headers)
    assert seen == {"own": chosen, "info": chosen}, seen


def test_subprotocol_with_a_websocket_client(proto_server):
    async def main():
        async with connect(proto_server.url("/proto"), subprotocols=["json", "chat.v1"]) as ws:
            return ws.subprotocol, json.loads(await recv(ws))

    chosen, seen = asyncio.run(asyncio.wait_for(main(), 10))
    assert chosen == "json"
    assert seen == {"own": "json", "info": "json"}


def test_no_subprotocols_configured_means_none_echoed(wsgate):
    server = wsgate({"proto.lua": PROTO_REPORT}, {"rateLimit": NO_RATE_LIMIT})
    response, seen = _raw_upgrade_with_protocols(server.port, ["chat.v1"])
    assert "sec-websocket-protocol" not in response.headers, response.headers
    assert seen == {"own": "", "info": ""}


# --- limits.maxConnections ----------------------------------------------------------------


def test_max_connections_refuses_upgrades_with_503(wsgate):
    limit, extra = 5, 25
    server = wsgate({"echo.lua": ECHO_SCRIPT}, {"rateLimit": NO_RATE_LIMIT, "limits": {"maxConnections": limit}})
    bystander = Bystander(server.port, label="max-conn-bystander").start()
    held = [RawClient(server.port, "/echo") for _ in range(limit - 1)]
    refused = [upgrade_status(server.port, "/echo") for _ in range(extra)]
    health_status, _, _ = http_get(server.port, "/api/v1/solution/health")
    for i, client in enumerate(held):
        client.send_text(f"held-{i}")
        assert client.recv_text() == f"held-{i}"
    held.pop().close()

    def admitted():
        return upgrade_status(server.port, "/echo").status == 101

    started = time.monotonic()
    while not admitted() and time.monotonic() - started < 3:
        time.sleep(0.05)
    freed_after = time.monotonic() - started
    for client in held:
        client.close()
    time.sleep(0.3)
    bystander.stop()
    statuses = sorted({r.status for r in refused})
    retry = {r.headers.get("retry-after") for r in refused}
    line = report(f"maxConnections {limit}: {extra} upgrades past the limit got {statuses} with Retry-After {retry}; "
                  f"health {health_status}; a slot freed was reused after {freed_after:.2f}s; {bystander.summary()}")
    assert statuses == [503], line
    assert None not in retry, line
    assert health_status == 200, line
    assert freed_after < 1.0, line
    bystander.assert_intact("maxConnections")


# --- the Lua sandbox --------------------------------------------------------------------------


def _binary_chunk() -> bytes:
    """A real precompiled Lua 5.4 chunk (``return 'binary chunk ran'``), made with liblua's lua_dump."""
    try:
        lib = ctypes.CDLL("liblua5.4.so.0")
    except OSError:
        # No liblua here: a header-only chunk still tells a mode error from a format error.
        return b"\x1bLuaT\x00\x19\x93\r\n\x1a\n\x04\x08\x08"
    lib.luaL_newstate.restype = ctypes.c_void_p
    lib.luaL_loadstring.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    writer_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
    lib.lua_dump.argtypes = [ctypes.c_void_p, writer_type, ctypes.c_void_p, ctypes.c_int]
    lib.lua_close.argtypes = [ctypes.c_void_p]
    out = bytearray()

    def write(_, p, size, __):
        out.extend(ctypes.string_at(p, size))
        return 0

    writer = writer_type(write)
    state = lib.luaL_newstate()
    try:
        assert lib.luaL_loadstring(state, b"return 'binary chunk ran'") == 0
        assert lib.lua_dump(state, writer, None, 1) == 0
    finally:
        lib.lua_close(state)
    return bytes(out)


def _lua_string(data: bytes) -> str:
    return '"' + "".join(f"\\{b}" for b in data) + '"'


PROBE = """
if websocketInfo.type ~= "data" then return end
local r = {}
for _, name in ipairs{"io", "package", "require", "debug", "dofile", "loadfile"} do r[name] = type(_ENV[name]) end
for _, name in ipairs{"execute", "exit", "getenv", "remove", "rename", "tmpname"} do r["os." .. name] = type(os[name]) end
r["string.dump"] = type(string.dump)
r["os.time"] = type(os.time)
r["os.clock"] = type(os.clock)
local f = load("return 40 + 2")
r.load_text = f and f() or "load of a text chunk failed"
local BIN = %s
local function try_binary(...)
  local g, err = load(...)
  if g then
    local ok, v = pcall(g)
    return "LOADED: " .. tostring(v)
  end
  return tostring(err)
end
r.load_binary = try_binary(BIN)
r.load_binary_b = try_binary(BIN, "bin", "b")
r.load_binary_bt = try_binary(BIN, "bin", "bt")
local parts, i = {BIN:sub(1, 5), BIN:sub(6)}, 0
r.load_binary_reader = try_binary(function() i = i + 1 return parts[i] end, "bin", "bt")
local ok, err = pcall(collectgarbage, "stop")
r.gc_stop = {ok = ok, err = tostring(err)}
r.gc_running = collectgarbage("isrunning")
ok, err = pcall(function() string.upper = nil end)
r.set_string_upper = {ok = ok, err = tostring(err)}
r.upper_after = type(string.upper)
websocketInfo.send(to_json(r))
"""

# Each attempt runs in its own pcall; the outcome says whether it raised.
POISON = """
if websocketInfo.type ~= "data" then return end
local to_json, pcall, ipairs, tostring, info = to_json, pcall, ipairs, tostring, websocketInfo
local attempts = {
  {"string.upper = nil", function() string.upper = nil end},
  {"string.rep = fake", function() string.rep = function() return "pwned" end end},
  {"table.insert = nil", function() table.insert = nil end},
  {"math.floor = fake", function() math.floor = function() return 42 end end},
  {"os.time = nil", function() os.time = nil end},
  {"coroutine.wrap = nil", function() coroutine.wrap = nil end},
  {"utf8.char = nil", function() utf8.char = nil end},
  {"string.evil = 1", function() string.evil = 1 end},
  {"rawset(string, upper)", function() rawset(string, "upper", function() return "pwned" end) end},
  {"rawset(table, concat)", function() rawset(table, "concat", nil) end},
  {"setmetatable(string, nil)", function() setmetatable(string, nil) end},
  {"string metatable __index", function() getmetatable("").__index = {upper = function() return "pwned" end} end},
  {"string metatable __index.upper", function() getmetatable("").__index.upper = function() return "pwned" end end},
  {"string metatable __index = nil", function() getmetatable("").__index = nil end},
  {"_G.tostring = nil", function() _G.tostring = nil end},
  {"rawset(_G, to_json)", function() rawset(_G, "to_json", nil) end},
  {"_G.evil_global", function() _G.evil_global = "leaked" end},
  {"env metatable base", function() getmetatable(_ENV).__index.evil_base = "leaked" end},
  {"env metatable base pairs", function() getmetatable(_ENV).__index.pairs = nil end},
  {"env metatable __index = {}", function() getmetatable(_ENV).__index = {} end},
  {"setmetatable(_ENV, nil)", function() setmetatable(_ENV, nil) end},
  {"Websocket.send = nil", function() Websocket.send = nil end},
  {"rawset(Websocket, send)", function() rawset(Websocket, "send", nil) end},
  {"load with base env", function() load("tostring = nil; evil_load = 1", "x", "t", getmetatable(_ENV).__index)() end},
  {"collectgarbage stop", function() collectgarbage("stop") end},
  {"rawset(os, time)", function() rawset(os, "time", nil) end},
  {"table.insert(string, x)", function() table.insert(string, "x") end},
  {"table.move into math", function() table.move({1, 2}, 1, 2, 1, math) end},
  {"clear os with pairs", function() for k in pairs(os) do os[k] = nil end end},
  {"string metatable via debug-free rawget", function() rawget(getmetatable(""), "__index").upper = nil end},
}
local out = {}
for _, a in ipairs(attempts) do
  local ok, err = pcall(a[2])
  out[#out + 1] = {name = a[1], raised = not ok, err = tostring(err)}
end
info.send(to_json(out))
"""

CHECK = """
if websocketInfo.type ~= "data" then return end
local r = {}
r.method_upper = pcall(function() return ("abc"):upper() end) and ("abc"):upper() or "broken"
r.string_upper = type(string.upper) == "function" and string.upper("x") or "missing"
r.string_rep = string.rep("a", 3)
r.string_evil = tostring(string.evil)
r.table_insert = type(table.insert)
r.table_concat = type(table.concat)
r.string_len = #string.rep("z", 4)
r.math_one = tostring(math[1])
r.math_floor = math.floor(1.5)
r.os_time = type(os.time)
r.coroutine_wrap = type(coroutine.wrap)
r.utf8_char = type(utf8.char)
r.tostring = type(tostring)
r.pairs = type(pairs)
r.to_json = type(to_json)
r.websocket_send = type(Websocket.send)
r.evil_global = tostring(evil_global)
r.evil_base = tostring(evil_base)
r.evil_load = tostring(evil_load)
local mt = getmetatable("")
r.string_metatable = type(mt) == "table" and tostring(mt.__index == string) or "protected: " .. tostring(mt)
r.gc_running = collectgarbage("isrunning")
websocketInfo.send(to_json(r))
"""

CHECK_EXPECTED = {
    "method_upper": "ABC", "string_upper": "X", "string_rep": "aaa", "string_evil": "nil",
    "table_insert": "function", "table_concat": "function", "string_len": 4, "math_one": "nil", "math_floor": 1, "os_time": "function",
    "coroutine_wrap": "function", "utf8_char": "function", "tostring": "function", "pairs": "function",
    "to_json": "function", "websocket_send": "function", "evil_global": "nil", "evil_base": "nil",
    "evil_load": "nil", "gc_running": True,
}

# Assignments to library fields that the sandbox must refuse with an error.
MUST_RAISE = ["string.upper = nil", "string.rep = fake", "table.insert = nil", "math.floor = fake",
              "os.time = nil", "coroutine.wrap = nil", "utf8.char = nil", "string.evil = 1",
              "collectgarbage stop", "clear os with pairs"]


def test_sandbox_hides_dangerous_functions(wsgate):
    binary = _binary_chunk()
    server = wsgate({"probe.lua": PROBE % _lua_string(binary)}, {"rateLimit": NO_RATE_LIMIT}, workers=1)
    seen = json.loads(ask(server.port, "/probe", "go"))
    again = json.loads(ask(server.port, "/probe", "go"))
    line = report(f"sandbox probe: {json.dumps(seen, sort_keys=True)}")
    hidden = ["io", "package", "require", "debug", "dofile", "loadfile", "os.execute", "os.exit", "os.getenv",
              "os.remove", "os.rename", "os.tmpname", "string.dump"]
    assert {name: seen[name] for name in hidden} == {name: "nil" for name in hidden}, line
    assert seen["os.time"] == "function" and seen["os.clock"] == "function", line
    assert seen["load_text"] == 42, line
    for key in ("load_binary", "load_binary_b", "load_binary_bt", "load_binary_reader"):
        assert "attempt to load a binary chunk" in seen[key], f"{key}: {line}"
    assert seen["gc_stop"]["ok"] is False and seen["gc_running"] is True, line
    assert seen["set_string_upper"]["ok"] is False, line
    assert seen["upper_after"] == "function" and again["upper_after"] == "function", line


def test_sandbox_library_tables_cannot_be_poisoned(wsgate):
    # One loop, so the poisoner and the later checks share one Lua state.
    server = wsgate({"poison.lua": POISON, "check.lua": CHECK, "echo.lua": ECHO_SCRIPT},
                    {"rateLimit": NO_RATE_LIMIT}, workers=1)
    bystander = Bystander(server.port, label="sandbox-bystander").start()
    attacker = RawClient(server.port, "/poison")
    attacker.send_text("go")
    outcomes = json.loads(attacker.recv_text())
    # The same socket's next run, and another socket, both see intact libraries.
    attacker.send_text("again")
    second = json.loads(attacker.recv_text())
    attacker.close()
    checks = []
    for _ in range(2):
        try:
            checks.append(json.loads(ask(server.port, "/check", "check")))
        except (AssertionError, EOFError) as exc:
            checks.append({"check script failed": str(exc)})
    time.sleep(0.3)  # the bystander's echo script runs after the poisoning attempts too
    bystander.stop()
    not_raised = [o["name"] for o in outcomes if not o["raised"]]
    broken = {k: (v, checks[0].get(k)) for k, v in CHECK_EXPECTED.items() if checks[0].get(k) != v}
    meta = checks[0].get("string_metatable")
    line = report(f"sandbox poisoning: {len(outcomes)} attempts, {len(outcomes) - len(not_raised)} raised, "
                  f"not raised {not_raised}; after them: broken {broken}, string metatable __index is string: "
                  f"{meta}; {bystander.summary()}")
    assert len(second) == len(outcomes), line
    must_raise_missed = [name for name in MUST_RAISE if name in not_raised]
    assert not must_raise_missed, f"library assignments that did not raise {must_raise_missed}: {line}"
    assert not broken, f"a later run saw poisoned globals: {line}"
    assert checks[0] == checks[1], line
    bystander.assert_intact("sandbox poisoning")
