"""Outbound WebSocket connections opened by scripts (``Websocket.connect`` and config ``outbound``).

The upstreams are Python ``websockets`` servers started by the tests (``Upstream``: plain, or TLS
with a leaf of the throw-away CA); they record what the gateway sent and how it closed.

Two scripts observe and drive the gateway:

* ``/ctl`` (``ctl.lua``) is a route: each JSON command ``{seq, op, args}`` it receives runs one
  ``Websocket`` call (connect, send, disconnect, reset, outbound) and the result comes back as
  ``{reply = op, seq, result}``; ``batch`` runs several calls in one script run, ``whoami`` gives
  the socket id (whose middle part is the event loop).
* ``_link.lua`` is the script of every outbound connection: for every event it sends
  ``{event = {...what wsEvent held...}}`` to every socket on ``/ctl`` (and prints it to the log).
  A data message that is a JSON object with a ``cmd`` makes it act from inside the outbound script:
  send a table or a string without a name, disconnect, reset.
"""

from __future__ import annotations

import base64
import json
import re
import signal
import time

import pytest
from websockets.sync.client import connect as sync_connect

from wsgate_support import (
    HOST,
    STEP_TIMEOUT,
    SilentListener,
    TestPKI,
    as_object,
    free_port,
    run_until_exit,
    tls_server_context,
    wait_until,
)

CTL = r"""
local w = websocketInfo
if w.type ~= "data" then return end
local function call(op, args)
  if op == "connect" then return Websocket.connect(args)
  elseif op == "send" then return Websocket.send(args)
  elseif op == "disconnect" then return Websocket.disconnect(args)
  elseif op == "reset" then return Websocket.reset(args)
  elseif op == "outbound" then return Websocket.outbound()
  elseif op == "whoami" then return w.socket_id
  end
  return "unknown op " .. tostring(op)
end
local cmd = from_json(w.message)
local result
if cmd.op == "batch" then
  -- Several calls in one script run; nil results become false so the array has no holes.
  result = {}
  for i, item in ipairs(cmd.args) do result[i] = call(item.op, item.args or {}) or false end
else
  result = call(cmd.op, cmd.args or {})
end
w.send(to_json{reply = cmd.op, seq = cmd.seq, result = result})
"""

LINK = r"""
local e = wsEvent
local report = {
  name = e.name, url = e.url, type = e.type, timestamp = e.timestamp, ts_kind = math.type(e.timestamp),
  message = e.message, message_type = e.message_type, error = e.error, code = e.code, reason = e.reason,
  data_type = type(e.data),
}
if type(e.data) == "string" then
  report.data_hex = (e.data:gsub(".", function(c) return string.format("%02x", c:byte()) end))
elseif e.data ~= nil then
  report.data = e.data
end
if e.type == "data" then
  local cmd = e.data
  if type(cmd) == "string" then cmd = from_json(cmd) end
  if type(cmd) == "table" and cmd.cmd then
    local r
    if cmd.cmd == "send-table" then r = Websocket.send{message = {got = cmd.payload, via = e.name}}
    elseif cmd.cmd == "send-string" then r = Websocket.send{message = cmd.payload}
    elseif cmd.cmd == "disconnect" then r = Websocket.disconnect{}
    elseif cmd.cmd == "reset" then r = Websocket.reset{url = cmd.url}
    end
    report.cmd = cmd.cmd
    report.result = r
  end
end
local line = to_json{event = report}
for _, id in ipairs(Websocket.list()) do
  local peer = Websocket.info{socket_id = id}
  if peer.route == "/ctl" then Websocket.send{socket_id = id, message = line} end
end
print(line)
"""

SCRIPTS = {"ctl.lua": CTL, "_link.lua": LINK}


def gateway_config(initial_ms: int = 100, max_ms: int = 500, **extra) -> dict:
    config = {"rateLimit": {"messagesPerSecond": 0}, "shutdownTimeoutMs": 1500,
              "outboundReconnect": {"initialDelayMs": initial_ms, "maxDelayMs": max_ms}}
    config.update(extra)
    return config


class Ctl:
    """A client on ``/ctl``: calls ``Websocket`` functions and collects the outbound events in order."""

    def __init__(self, server):
        self.server = server
        self.ws = sync_connect(server.url("/ctl"), open_timeout=STEP_TIMEOUT, close_timeout=2,
                               ping_interval=None, proxy=None, max_size=None).__enter__()
        self.seq = 0
        self.pending: list[dict] = []  # events read but not consumed yet
        self.seen: list[dict] = []  # every event read

    def close(self):
        self.ws.close()

    def _read(self, timeout: float):
        try:
            raw = self.ws.recv(timeout=timeout)
        except TimeoutError:
            return None
        msg = json.loads(raw)
        if "event" in msg:
            self.pending.append(msg["event"])
            self.seen.append(msg["event"])
        return msg

    @property
    def loop(self) -> int:
        """The event loop this client's socket belongs to (socket ids are prefix-loop-counter)."""
        return int(self.call("whoami").split("-")[-2])

    def batch(self, *calls):
        """Run ``(op, args)`` calls in one script run; nil results come back as False."""
        self.seq += 1
        self.ws.send(json.dumps({"seq": self.seq, "op": "batch",
                                 "args": [{"op": op, "args": args} for op, args in calls]}))
        return self._reply(self.seq, "batch")

    def call(self, op: str, **args):
        """Run ``Websocket.<op>(args)`` in the route script; return its result (None for nil)."""
        self.seq += 1
        self.ws.send(json.dumps({"seq": self.seq, "op": op, "args": args}))
        return self._reply(self.seq, f"{op} {args!r}")

    def _reply(self, seq: int, what: str):
        deadline = time.monotonic() + STEP_TIMEOUT
        while time.monotonic() < deadline:
            msg = self._read(deadline - time.monotonic())
            if msg is not None and msg.get("seq") == seq:
                return msg.get("result")
        raise AssertionError(f"no reply to {what} within {STEP_TIMEOUT}s")

    def outbound(self) -> list[dict]:
        result = self.call("outbound")
        return [] if as_object(result) == {} else result

    def entry(self, name: str) -> dict | None:
        return next((e for e in self.outbound() if e["name"] == name), None)

    def wait_event(self, predicate=lambda e: True, timeout: float = STEP_TIMEOUT, what: str = "event"):
        """Consume events in order until one matches; return (match, events consumed before it)."""
        skipped = []
        deadline = time.monotonic() + timeout
        while True:
            while self.pending:
                event = self.pending.pop(0)
                if predicate(event):
                    return event, skipped
                skipped.append(event)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {what} within {timeout}s; events: {skipped!r}")
            self._read(remaining)

    def wait_type(self, name: str, kind: str, timeout: float = STEP_TIMEOUT):
        return self.wait_event(lambda e: e["name"] == name and e["type"] == kind, timeout,
                               f"{kind} event of {name}")

    def quiet_for(self, seconds: float) -> list[dict]:
        """Read for ``seconds``; return the events that arrived."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            self._read(remaining)
        got, self.pending = self.pending, []
        return got


@pytest.fixture
def gateway(wsgate):
    """A gateway with the scripts above and fast reconnects (100 ms doubling to 500 ms)."""
    return wsgate(SCRIPTS, gateway_config())


@pytest.fixture
def ctl(gateway):
    client = Ctl(gateway)
    yield client
    client.close()


def assert_error(result, status: int, kind: str, *needles):
    assert isinstance(result, dict), f"expected an error object, got {result!r}"
    assert result.get("status") == status and result.get("type") == kind, result
    assert isinstance(result.get("error"), str) and result["error"], result
    for needle in needles:
        assert needle.lower() in result["error"].lower(), (needle, result)


def open_link(ctl: Ctl, name: str, url: str, **args) -> dict:
    """Websocket.connect from the route script; wait for the open event."""
    result = ctl.call("connect", name=name, url=url, script=args.pop("script", "_link"), **args)
    assert result is None, f"connect {name} returned {result!r}"
    event, skipped = ctl.wait_type(name, "open")
    assert not [e for e in skipped if e["name"] == name], skipped
    return event


def now_ms() -> int:
    return int(time.time() * 1000)


# --- 1. messages into wsEvent ----------------------------------------------------------------------


def test_open_event_fields(ctl, upstream):
    server = upstream()
    url = server.url("/feed?x=1")
    before = now_ms()
    event = open_link(ctl, "feed", url)
    assert event["url"] == url, event
    assert event["ts_kind"] == "integer" and before - 1000 <= event["timestamp"] <= now_ms() + 1000, event
    for absent in ("message", "message_type", "error", "code"):
        assert absent not in event, event
    peer = server.wait_peer()
    assert peer.path == "/feed?x=1"
    assert peer.headers.get("Host") == f"{HOST}:{server.port}", dict(peer.headers.raw_items())


def test_ipv6_literal_url(ctl, upstream):
    try:
        server = upstream(host="::1")
    except AssertionError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    url = f"ws://[::1]:{server.port}/v6"
    event = open_link(ctl, "v6", url)
    assert event["url"] == url, event
    peer = server.wait_peer()
    assert peer.path == "/v6" and peer.headers.get("Host") == f"[::1]:{server.port}", dict(peer.headers.raw_items())


def test_fragmented_and_large_messages_and_pings_from_the_upstream(ctl, upstream):
    server = upstream()
    open_link(ctl, "up", server.url())
    peer = server.wait_peer()
    server.send(['{"part": ', '"one', ' and two"}'])  # one message in three frames
    event, _ = ctl.wait_type("up", "data")
    assert event["data"] == {"part": "one and two"}, event
    big = {"rows": [{"i": i, "text": "x" * 50} for i in range(3000)]}  # about 200 KB
    server.send(json.dumps(big))
    event, _ = ctl.wait_type("up", "data")
    assert event["data"] == big
    server.ping(peer)  # the gateway answers a ping with a pong
    assert ctl.call("send", name="up", message="still fine") is None
    assert peer.wait_messages(1) == ["still fine"]


def test_permessage_deflate_is_offered_and_used_both_ways(ctl, upstream):
    server = upstream()
    open_link(ctl, "zip", server.url())
    peer = server.wait_peer()
    offer = peer.headers.get("Sec-WebSocket-Extensions", "")
    assert offer.startswith("permessage-deflate"), offer
    answer = peer.ws.response.headers.get("Sec-WebSocket-Extensions", "")
    assert answer.startswith("permessage-deflate"), f"the upstream did not accept {offer!r}"
    big = {"rows": [{"i": i, "text": "compress me " * 5} for i in range(500)]}
    server.send(json.dumps(big))  # compressed by the upstream, inflated by the gateway
    event, _ = ctl.wait_type("zip", "data")
    assert event["data"] == big
    text = "gateway to upstream " * 200  # over compression.minBytes: compressed by the gateway
    assert ctl.call("send", name="zip", message=text) is None
    assert peer.wait_messages(1) == [text]


def test_compression_disabled_in_config_offers_none(wsgate, upstream):
    gateway = wsgate(SCRIPTS, gateway_config(compression={"enabled": False}))
    client = Ctl(gateway)
    try:
        server = upstream()
        open_link(client, "plain", server.url())
        peer = server.wait_peer()
        assert peer.headers.get("Sec-WebSocket-Extensions") is None, dict(peer.headers.raw_items())
        assert client.call("send", name="plain", message="x" * 500) is None
        assert peer.wait_messages(1) == ["x" * 500]
    finally:
        client.close()


def test_json_messages_are_parsed_into_data(ctl, upstream):
    server = upstream()
    open_link(ctl, "feed", server.url())
    server.wait_peer()

    server.send('{"price": 12.5, "tags": ["a", "b"], "nested": {"ok": true, "n": 3}}')
    event, _ = ctl.wait_type("feed", "data")
    assert event["data_type"] == "table", event
    assert event["data"] == {"price": 12.5, "tags": ["a", "b"], "nested": {"ok": True, "n": 3}}, event
    assert event["message"] == '{"price": 12.5, "tags": ["a", "b"], "nested": {"ok": true, "n": 3}}'
    assert event["message_type"] == "data-text"
    assert "error" not in event, event

    server.send("this is {not json")
    event, _ = ctl.wait_type("feed", "data")
    assert event["data_type"] == "nil", event
    assert event["error"].startswith("message is not JSON: "), event
    assert event["message"] == "this is {not json"

    server.send("[1, 2, 3]")
    event, _ = ctl.wait_type("feed", "data")
    assert event["data"] == [1, 2, 3], event


def test_text_and_binary_content_types_give_the_raw_message(ctl, upstream):
    server = upstream()
    open_link(ctl, "txt", server.url("/t"), content_type="text")
    open_link(ctl, "bin", server.url("/b"), content_type="binary")
    peers = {server.wait_peer(1).path: server.peers[0], server.wait_peer(2).path: server.peers[1]}

    server.send('{"looks": "like json"}', peers["/t"])
    event, _ = ctl.wait_type("txt", "data")
    assert event["data_type"] == "string" and "error" not in event, event
    assert bytes.fromhex(event["data_hex"]) == b'{"looks": "like json"}'

    blob = bytes([0, 1, 2, 250, 255]) + "é".encode()
    server.send(blob, peers["/b"])
    event, _ = ctl.wait_type("bin", "data")
    assert event["message_type"] == "data-binary", event
    assert base64.b64decode(event["message"]) == blob, event
    assert bytes.fromhex(event["data_hex"]) == blob, event


# --- 2. Websocket.send ---------------------------------------------------------------------------


def test_send_from_a_route_script_with_name(ctl, upstream):
    server = upstream()
    open_link(ctl, "up", server.url())
    peer = server.wait_peer()
    assert ctl.call("send", name="up", message={"k": "v", "n": [1, 2]}) is None
    assert ctl.call("send", name="up", message="a plain string, {not json}") is None
    got = peer.wait_messages(2)
    assert isinstance(got[0], str) and json.loads(got[0]) == {"k": "v", "n": [1, 2]}, got
    assert got[1] == "a plain string, {not json}", got

    assert_error(ctl.call("send", name="nobody", message="x"), 404, "NotFound")
    assert_error(ctl.call("send", name="up", message=42), 400, "BadRequest")


def test_send_from_the_outbound_script_without_name(ctl, upstream):
    server = upstream()
    open_link(ctl, "up", server.url())
    peer = server.wait_peer()
    server.send(json.dumps({"cmd": "send-table", "payload": {"deep": [1, {"x": "y"}]}}))
    event, _ = ctl.wait_event(lambda e: e.get("cmd") == "send-table")
    assert "result" not in event, event  # nil: sent
    server.send(json.dumps({"cmd": "send-string", "payload": "just text"}))
    ctl.wait_event(lambda e: e.get("cmd") == "send-string")
    got = peer.wait_messages(2)
    assert json.loads(got[0]) == {"got": {"deep": [1, {"x": "y"}]}, "via": "up"}, got
    assert got[1] == "just text", got


def test_text_connection_rejects_a_table(ctl, upstream):
    server = upstream()
    open_link(ctl, "txt", server.url(), content_type="text")
    peer = server.wait_peer()
    assert_error(ctl.call("send", name="txt", message={"a": 1}), 400, "BadRequest")
    # From inside its own script too.
    server.send(json.dumps({"cmd": "send-table", "payload": 1}))
    event, _ = ctl.wait_event(lambda e: e.get("cmd") == "send-table")
    assert_error(event.get("result"), 400, "BadRequest")
    # A string goes out as text.
    assert ctl.call("send", name="txt", message="text is fine") is None
    assert peer.wait_messages(1) == ["text is fine"]


def test_binary_connection_sends_binary_frames(ctl, upstream):
    server = upstream()
    open_link(ctl, "bin", server.url(), content_type="binary")
    peer = server.wait_peer()
    assert ctl.call("send", name="bin", message="bytes here") is None
    server.send(json.dumps({"cmd": "send-string", "payload": "from script"}).encode())
    ctl.wait_event(lambda e: e.get("cmd") == "send-string")
    assert_error(ctl.call("send", name="bin", message={"a": 1}), 400, "BadRequest")
    assert peer.wait_messages(2) == [b"bytes here", b"from script"]


def test_send_with_an_explicit_frame_type(ctl, upstream):
    server = upstream()
    open_link(ctl, "up", server.url())  # content_type json
    peer = server.wait_peer()
    blob = bytes([0, 159, 146, 150, 255])
    assert ctl.call("send", name="up", message=base64.b64encode(blob).decode(), type="data-binary") is None
    assert ctl.call("send", name="up", message="plain text", type="data-text") is None
    assert peer.wait_messages(2) == [blob, "plain text"]
    assert_error(ctl.call("send", name="up", message="%%% not base64", type="data-binary"), 400, "BadRequest")
    assert_error(ctl.call("send", name="up", message="x", type="data-other"), 400, "BadRequest")
    assert_error(ctl.call("send", name="up", message={"a": 1}, type="data-text"), 400, "BadRequest")
    time.sleep(0.2)
    assert len(peer.messages) == 2, peer.messages


def test_outbound_messages_are_not_rate_limited(wsgate, upstream):
    gateway = wsgate(SCRIPTS, gateway_config(rateLimit={"messagesPerSecond": 1, "burst": 5, "onExceed": "close"}))
    ctl = Ctl(gateway)
    try:
        server = upstream()
        open_link(ctl, "up", server.url())
        server.wait_peer()
        for i in range(30):
            server.send(json.dumps({"i": i}))
        got = [ctl.wait_type("up", "data")[0]["data"]["i"] for _ in range(30)]
        assert got == list(range(30))
        assert server.peers[0].ended.is_set() is False
    finally:
        ctl.close()


# --- 3. disconnect -------------------------------------------------------------------------------


def test_disconnect_from_inside_the_script(ctl, upstream):
    server = upstream()
    open_link(ctl, "up", server.url())
    peer = server.wait_peer()
    server.send(json.dumps({"cmd": "disconnect"}))
    event, _ = ctl.wait_event(lambda e: e.get("cmd") == "disconnect")
    assert "result" not in event, event
    assert peer.wait_closed() == 1000
    close, _ = ctl.wait_type("up", "close")
    assert close["code"] == 1000, close

    # No reconnect: with 100 ms backoff a reconnect would have come long before this.
    later = ctl.quiet_for(1.0)
    assert [e for e in later if e["name"] == "up"] == [], later
    assert len(server.peers) == 1
    entry = ctl.entry("up")
    assert entry is not None and entry["state"] == "closed" and entry["reconnecting"] is False, entry
    assert_error(ctl.call("send", name="up", message="x"), 503, "ServiceUnavailable")


def test_disconnect_from_a_route_script_and_reuse_of_the_name(ctl, upstream):
    server = upstream()
    open_link(ctl, "up", server.url("/first"))
    first = server.wait_peer()
    assert ctl.call("disconnect", name="up") is None
    assert first.wait_closed() == 1000
    ctl.wait_type("up", "close")
    assert_error(ctl.call("disconnect", name="nobody"), 404, "NotFound")

    # A disconnected name can be taken again, by a new URL.
    open_link(ctl, "up", server.url("/second"))
    second = server.wait_peer(2)
    assert second.path == "/second"
    assert ctl.call("send", name="up", message="to the second") is None
    assert second.wait_messages(1) == ["to the second"]
    assert first.messages == []


def test_disconnect_and_connect_again_in_one_script_run(ctl, upstream):
    old, new = upstream(), upstream()
    open_link(ctl, "up", old.url("/old"))
    old_peer = old.wait_peer()
    results = ctl.batch(("disconnect", {"name": "up"}),
                        ("connect", {"name": "up", "url": new.url("/new"), "script": "_link"}))
    assert results == [False, False], results
    assert old_peer.wait_closed() == 1000
    opened, _ = ctl.wait_type("up", "open")
    assert opened["url"] == new.url("/new"), opened
    new_peer = new.wait_peer()
    assert ctl.call("send", name="up", message="to new") is None
    assert new_peer.wait_messages(1) == ["to new"]
    ctl.quiet_for(0.5)
    assert len(old.peers) == 1 and old_peer.messages == [], "the replaced connection came back"
    assert len(new.peers) == 1
    entry = ctl.entry("up")
    assert entry["url"] == new.url("/new") and entry["state"] == "open", entry


def test_shutdown_after_replacing_a_connection_in_one_run_is_prompt(wsgate, upstream):
    """The replaced connection's close must not be counted as still open when the gateway stops.

    Expected: after disconnect + connect of the same name in one script run, SIGTERM stops the
    gateway as soon as the live connections finished their close handshakes.
    """
    gateway = wsgate(SCRIPTS, gateway_config(shutdownTimeoutMs=4000))
    ctl = Ctl(gateway)
    old, new = upstream(), upstream()
    try:
        open_link(ctl, "up", old.url("/old"))
        old_peer = old.wait_peer()
        assert ctl.batch(("disconnect", {"name": "up"}),
                         ("connect", {"name": "up", "url": new.url("/new"), "script": "_link"})) == [False, False]
        assert old_peer.wait_closed() == 1000
        ctl.wait_type("up", "open")
    finally:
        ctl.close()
    new_peer = new.wait_peer()
    time.sleep(0.2)  # the old connection's close handshake is long over
    started = time.monotonic()
    gateway.proc.send_signal(signal.SIGTERM)
    assert new_peer.wait_closed() == 1001
    code = gateway.proc.wait(STEP_TIMEOUT + 2)
    took = time.monotonic() - started
    warning = gateway.log_lines_with("shutdown timeout")
    assert code == 0 and took < 2.0 and not warning, (
        f"exit {code} after {took:.2f}s; {warning or gateway.log_tail(8)}")


def test_calls_across_event_loops(wsgate, upstream):
    """Send, list, reset and disconnect from a socket on another loop than the connection's."""
    gateway = wsgate(SCRIPTS, gateway_config(), workers=2)
    clients = [Ctl(gateway)]
    try:
        while len({c.loop for c in clients}) < 2:
            assert len(clients) < 40, "40 clients all landed on one event loop"
            clients.append(Ctl(gateway))
        owner = clients[0]
        other = next(c for c in clients if c.loop != owner.loop)
        first, second = upstream(), upstream()
        open_link(owner, "x", first.url("/first"))
        peer = first.wait_peer()

        assert other.call("send", name="x", message="from the other loop") is None
        assert other.call("send", name="x", message={"as": "json"}) is None
        got = peer.wait_messages(2)
        assert got[0] == "from the other loop" and json.loads(got[1]) == {"as": "json"}, got
        entry = other.entry("x")
        assert entry["state"] == "open" and entry["url"] == first.url("/first"), entry
        assert_error(other.call("connect", name="x", url=second.url("/"), script="_link"), 409, "Conflict")

        # Events reach the /ctl sockets of both loops.
        first.send('{"hello": 1}')
        for client in (owner, other):
            event, _ = client.wait_type("x", "data")
            assert event["data"] == {"hello": 1}, event

        assert other.call("reset", name="x", url=second.url("/second")) is None
        owner.wait_type("x", "close")
        owner.wait_type("x", "open")
        assert peer.wait_closed() == 1000
        moved = second.wait_peer()
        assert moved.path == "/second"
        wait_until(lambda: other.entry("x")["state"] == "open", what="x open again")
        assert other.call("send", name="x", message="after reset") is None
        assert moved.wait_messages(1) == ["after reset"]

        assert other.call("disconnect", name="x") is None
        assert moved.wait_closed() == 1000
        owner.wait_type("x", "close")
        entry = wait_until(lambda: (e := other.entry("x")) and e["state"] == "closed" and e, what="x closed")
        assert entry["reconnecting"] is False, entry
        assert_error(other.call("send", name="x", message="gone"), 503, "ServiceUnavailable")
    finally:
        for client in clients:
            client.close()


# --- 4. reset ------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["route-script", "outbound-script"])
def test_reset_to_a_new_url(ctl, upstream, where):
    old, new = upstream(), upstream()
    open_link(ctl, "up", old.url("/old"))
    old_peer = old.wait_peer()
    if where == "route-script":
        assert ctl.call("reset", name="up", url=new.url("/new")) is None
    else:
        old.send(json.dumps({"cmd": "reset", "url": new.url("/new")}))
    close, skipped = ctl.wait_type("up", "close")
    assert [e["type"] for e in skipped if e["name"] == "up"] in ([], ["data"]), skipped
    assert close["code"] == 1000, close
    opened, between = ctl.wait_type("up", "open")
    assert [e for e in between if e["name"] == "up"] == [], between
    assert opened["url"] == new.url("/new"), opened
    assert old_peer.wait_closed() == 1000

    new_peer = new.wait_peer()
    assert new_peer.path == "/new"
    assert ctl.call("send", name="up", message="after reset") is None
    assert new_peer.wait_messages(1) == ["after reset"]
    new.send('{"from": "new"}')
    event, _ = ctl.wait_type("up", "data")
    assert event["data"] == {"from": "new"} and event["url"] == new.url("/new"), event
    assert len(old.peers) == 1 and old_peer.messages[1:] == [], old_peer.messages
    entry = ctl.entry("up")
    assert entry["url"] == new.url("/new") and entry["state"] == "open", entry


def test_reset_without_url_reconnects_to_the_same_one(ctl, upstream):
    server = upstream()
    open_link(ctl, "up", server.url("/same"))
    first = server.wait_peer()
    assert ctl.call("reset", name="up") is None
    ctl.wait_type("up", "close")
    ctl.wait_type("up", "open")
    assert first.wait_closed() == 1000
    assert server.wait_peer(2).path == "/same"
    assert_error(ctl.call("reset", name="nobody"), 404, "NotFound")
    assert_error(ctl.call("reset", name="up", url="http://127.0.0.1/"), 400, "BadRequest")


def test_reset_and_disconnect_while_connecting(ctl, upstream):
    """A link stuck in its handshake (a listener that never answers) can be moved or stopped."""
    server = upstream()
    with SilentListener() as listener:
        stuck = listener.url()
        assert ctl.call("connect", name="moved", url=stuck, script="_link") is None
        assert ctl.call("connect", name="stopped", url=stuck, script="_link") is None
        assert ctl.entry("moved")["state"] == "connecting"
        assert ctl.call("reset", name="moved", url=server.url("/moved")) is None
        opened, skipped = ctl.wait_type("moved", "open")
        assert opened["url"] == server.url("/moved") and [e for e in skipped if e["name"] == "moved"] == [], skipped
        assert server.wait_peer().path == "/moved"

        assert ctl.call("disconnect", name="stopped") is None
        entry = ctl.entry("stopped")
        assert entry["state"] == "closed" and entry["reconnecting"] is False, entry
        later = ctl.quiet_for(0.5)
        assert [e for e in later if e["name"] == "stopped"] == [], later


def test_reset_brings_a_disconnected_connection_back(ctl, upstream):
    server = upstream()
    open_link(ctl, "up", server.url("/r"))
    first = server.wait_peer()
    assert ctl.call("disconnect", name="up") is None
    ctl.wait_type("up", "close")
    assert first.wait_closed() == 1000
    assert ctl.call("reset", name="up") is None
    ctl.wait_type("up", "open")
    assert server.wait_peer(2).path == "/r"
    entry = ctl.entry("up")
    assert entry["state"] == "open", entry
    assert_error(ctl.call("connect", name="up", url=server.url("/other"), script="_link"), 409, "Conflict")


def test_outbound_to_the_gateways_own_health_route(ctl, gateway):
    """The health route answers a WebSocket upgrade with "OK" and a close 1000."""
    assert ctl.call("connect", name="self", url=gateway.url("/api/v1/solution/health"), script="_link",
                    content_type="text") is None
    ctl.wait_type("self", "open")
    event, _ = ctl.wait_type("self", "data")
    assert event["message"] == "OK", event
    close, _ = ctl.wait_type("self", "close")
    assert close["code"] == 1000, close
    assert ctl.call("disconnect", name="self") is None


# --- 5. upstream killed and restarted ------------------------------------------------------------


def test_server_killed_and_restarted_on_the_same_port(ctl, gateway, upstream):
    server = upstream()
    port = server.port
    open_link(ctl, "up", server.url("/live"))
    server.wait_peer()

    server.kill()
    close, _ = ctl.wait_type("up", "close")
    assert close["code"] == 1006, close
    # While the port is refused: error events, 503 on send, and the attempts are logged.
    error, skipped = ctl.wait_type("up", "error")
    assert [e for e in skipped if e["name"] == "up"] == [], skipped
    assert "refused" in error["error"].lower(), error
    assert_error(ctl.call("send", name="up", message="x"), 503, "ServiceUnavailable")
    gateway.wait_for_log("(attempt 3)")

    restarted = upstream(port=port)
    opened, between = ctl.wait_type("up", "open", timeout=5)
    assert {e["type"] for e in between if e["name"] == "up"} <= {"error"}, between
    assert opened["url"] == f"ws://{HOST}:{port}/live"
    peer = restarted.wait_peer()
    assert peer.path == "/live"
    assert ctl.call("send", name="up", message="back again") is None
    assert peer.wait_messages(1) == ["back again"]
    entry = ctl.entry("up")
    assert entry["state"] == "open" and entry["reconnecting"] is False, entry
    assert gateway.log_lines_with(f"outbound up: open to ws://{HOST}:{port}/live"), gateway.log_tail()


def test_server_closing_with_a_code_is_reported_and_reconnected(ctl, upstream):
    server = upstream(greeting="hello")
    open_link(ctl, "up", server.url())
    first = server.wait_peer()
    ctl.wait_type("up", "data")
    server._call(first.ws.close(4001, "maintenance"))
    close, _ = ctl.wait_type("up", "close")
    assert close["code"] == 4001 and close["reason"] == "maintenance", close
    ctl.wait_type("up", "open")
    server.wait_peer(2)


# --- 6. and 7. failed attempts -------------------------------------------------------------------


def test_refused_port_gives_error_events_and_logged_attempts_with_backoff(ctl, gateway):
    port = free_port()
    url = f"ws://{HOST}:{port}/"
    assert ctl.call("connect", name="nowhere", url=url, script="_link") is None
    first, _ = ctl.wait_type("nowhere", "error")
    assert "refused" in first["error"].lower() and f"{HOST}:{port}" in first["error"], first
    second, _ = ctl.wait_type("nowhere", "error")
    assert second["timestamp"] > first["timestamp"], (first, second)

    wait_until(lambda: len(gateway.log_lines_with("outbound nowhere: reconnecting in")) >= 4, 5,
               "four logged reconnect delays")
    log = gateway.log()
    for attempt in (1, 2, 3):
        assert f"outbound nowhere: connecting to {url} (attempt {attempt})" in log, log
    assert f"outbound nowhere: connecting to {url} failed: Connection refused" in log, log
    delays = [int(m) for m in re.findall(r"outbound nowhere: reconnecting in (\d+) ms", log)]
    # Exponential backoff with equal jitter: attempt k waits between half and all of
    # min(100 * 2^(k-1), 500) ms.
    for k, delay in enumerate(delays[:4]):
        ceiling = min(100 * 2 ** k, 500)
        assert ceiling // 2 <= delay <= ceiling, (k, delays)
    assert ctl.call("disconnect", name="nowhere") is None


def test_unresolvable_host_gives_an_error_event(ctl):
    assert ctl.call("connect", name="ghost", url="ws://nonexistent.invalid/x", script="_link") is None
    event, _ = ctl.wait_type("ghost", "error")
    assert "resolve" in event["error"] and "nonexistent.invalid" in event["error"], event
    assert event["url"] == "ws://nonexistent.invalid/x"


def test_silent_upstream_times_out_after_the_handshake_timeout(wsgate):
    gateway = wsgate(SCRIPTS, gateway_config(initial_ms=5000, max_ms=5000, limits={"handshakeTimeoutMs": 400}))
    ctl = Ctl(gateway)
    try:
        with SilentListener() as listener:
            started = time.monotonic()
            assert ctl.call("connect", name="mute", url=listener.url(), script="_link") is None
            event, _ = ctl.wait_type("mute", "error")
            took = time.monotonic() - started
        assert "timeout after 400 ms" in event["error"] and "upgrade response" in event["error"], event
        assert 0.35 <= took <= 2.5, took
    finally:
        ctl.close()


def test_bad_status_from_the_upstream_gives_an_error_event(ctl, upstream):
    server = upstream(require_header=("X-Api-Key", "k1"))
    assert ctl.call("connect", name="denied", url=server.url("/guarded"), script="_link") is None
    event, _ = ctl.wait_type("denied", "error")
    assert "bad status 403" in event["error"], event
    assert ctl.call("disconnect", name="denied") is None

    # With the header the upgrade goes through.
    open_link(ctl, "allowed", server.url("/guarded"), headers={"X-Api-Key": "k1", "X-Extra": "two words"})
    peer = server.wait_peer()
    assert peer.headers.get("X-Api-Key") == "k1" and peer.headers.get("X-Extra") == "two words"


# --- 8. wss:// -----------------------------------------------------------------------------------


@pytest.fixture
def tls_upstream(upstream, throwaway_ca):
    return upstream(echo=True, ssl_context=tls_server_context(*throwaway_ca.good))


def test_wss_with_the_test_ca(ctl, tls_upstream, throwaway_ca):
    open_link(ctl, "secure", tls_upstream.url("/s", host="localhost"), ca_file=str(throwaway_ca.ca_cert))
    open_link(ctl, "secure-ip", tls_upstream.url("/ip"), ca_file=str(throwaway_ca.ca_cert))
    assert ctl.call("send", name="secure", message={"over": "tls"}) is None
    event, _ = ctl.wait_type("secure", "data")  # the echo
    assert event["data"] == {"over": "tls"}, event
    assert ctl.call("send", name="secure-ip", message="by ip") is None
    event, _ = ctl.wait_type("secure-ip", "data")
    assert event["message"] == "by ip", event
    # SNI names the host, and is left out for an IP address (RFC 6066).
    assert sorted(tls_upstream.server_names, key=str) == [None, "localhost"], tls_upstream.server_names


def test_wss_without_ca_file_fails_verification(ctl, tls_upstream):
    assert ctl.call("connect", name="untrusted", url=tls_upstream.url("/", host="localhost"), script="_link") is None
    event, _ = ctl.wait_type("untrusted", "error")
    assert "certificate verification failed" in event["error"], event
    assert tls_upstream.peers == []


def test_wss_insecure_skips_verification(ctl, tls_upstream):
    open_link(ctl, "lax", tls_upstream.url("/", host="localhost"), insecure=True)
    assert ctl.call("send", name="lax", message="unchecked") is None
    event, _ = ctl.wait_type("lax", "data")
    assert event["message"] == "unchecked", event


@pytest.mark.parametrize("case", ["ip-not-in-san", "name-not-in-san"])
def test_wss_wrong_hostname_fails_verification(ctl, upstream, throwaway_ca, case):
    if case == "ip-not-in-san":
        server = upstream(ssl_context=tls_server_context(*throwaway_ca.good), host="127.0.0.2")
        url = server.url("/")
    else:
        server = upstream(ssl_context=tls_server_context(*throwaway_ca.other))
        url = server.url("/", host="localhost")
    assert ctl.call("connect", name="mismatch", url=url, script="_link", ca_file=str(throwaway_ca.ca_cert)) is None
    event, _ = ctl.wait_type("mismatch", "error")
    assert "certificate verification failed" in event["error"], event
    assert server.peers == []


def test_wss_ca_file_with_the_servers_own_certificate(ctl, tls_upstream, throwaway_ca):
    """A ca_file holding the server's own (non-CA) certificate is trusted, as curl does."""
    leaf_only = str(throwaway_ca.good[0])
    open_link(ctl, "pinned", tls_upstream.url("/", host="localhost"), ca_file=leaf_only)
    assert ctl.call("send", name="pinned", message="pinned") is None
    event, _ = ctl.wait_type("pinned", "data")
    assert event["message"] == "pinned", event


def test_wss_ca_file_with_an_intermediate_only(ctl, upstream, throwaway_ca, tmp_path):
    """The server sends leaf + intermediate; ca_file holds only the intermediate (partial chain)."""
    intermediate = TestPKI(tmp_path / "intermediate", parent=throwaway_ca)
    leaf, key = intermediate.leaf("chained")
    chain = tmp_path / "chain.pem"
    chain.write_text(leaf.read_text() + intermediate.ca_cert.read_text())
    server = upstream(echo=True, ssl_context=tls_server_context(chain, key))
    open_link(ctl, "by-root", server.url("/", host="localhost"), ca_file=str(throwaway_ca.ca_cert))
    open_link(ctl, "by-intermediate", server.url("/", host="localhost"), ca_file=str(intermediate.ca_cert))
    assert ctl.call("send", name="by-intermediate", message="chained") is None
    event, _ = ctl.wait_type("by-intermediate", "data")
    assert event["message"] == "chained", event


def test_unreadable_ca_file_is_a_bad_request(ctl, tls_upstream, tmp_path):
    assert_error(ctl.call("connect", name="x", url=tls_upstream.url("/", host="localhost"), script="_link",
                          ca_file=str(tmp_path / "missing.pem")), 400, "BadRequest")
    assert_error(ctl.call("connect", name="x", url=f"ws://{HOST}:1/", script="_link",
                          ca_file=str(tmp_path / "missing.pem")), 400, "BadRequest")
    assert ctl.outbound() == []


# --- 9. and 10. argument errors, 409, 503 and Websocket.outbound() ---------------------------------


@pytest.mark.parametrize("args, needle", [
    ({"url": "http://127.0.0.1:1/"}, "url"),
    ({"url": "https://127.0.0.1:1/"}, "url"),
    ({"url": "not a url at all"}, "url"),
    ({"script": "_missing"}, "script"),
    ({"script": "ctl"}, "script"),  # a route, not an "_" script
    ({"script": "../_link"}, "script"),
    ({"content_type": "xml"}, "content_type"),
    ({"name": ""}, "name"),
    ({"name": None}, "name"),
    ({"url": None}, "url"),
    ({"insecure": "yes"}, "insecure"),
    ({"headers": {"Bad Name": "x"}}, "header"),
    ({"headers": {"X-Evil": "a\r\nX-Injected: 1"}}, "header"),
    ({"headers": {"Host": "elsewhere.example"}}, "header"),
    ({"headers": {"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}}, "header"),
    ({"headers": {"X-Number": 5}}, "header"),
], ids=["http", "https", "garbage-url", "missing-script", "route-script", "dotdot-script",
        "bad-content-type", "empty-name", "no-name", "no-url", "insecure-not-bool", "bad-header-name",
        "header-crlf-injection", "header-host", "header-websocket-key", "header-not-string"])
def test_connect_with_bad_arguments_is_400(ctl, args, needle):
    call = {"name": "bad", "url": f"ws://{HOST}:1/", "script": "_link"}
    call.update(args)
    call = {k: v for k, v in call.items() if v is not None}
    assert_error(ctl.call("connect", **call), 400, "BadRequest", needle)
    assert ctl.outbound() == []


def test_script_with_and_without_lua_suffix(ctl, upstream):
    server = upstream()
    open_link(ctl, "plain", server.url("/a"), script="_link")
    open_link(ctl, "suffixed", server.url("/b"), script="_link.lua")
    assert sorted(p.path for p in (server.wait_peer(1), server.wait_peer(2))) == ["/a", "/b"]


def test_duplicate_name_is_409(ctl, upstream):
    server = upstream()
    open_link(ctl, "dup", server.url("/one"))
    assert_error(ctl.call("connect", name="dup", url=server.url("/two"), script="_link"), 409, "Conflict")
    # Also while it is not open (a refused port, reconnecting).
    assert ctl.call("connect", name="down", url=f"ws://{HOST}:{free_port()}/", script="_link") is None
    ctl.wait_type("down", "error")
    assert_error(ctl.call("connect", name="down", url=server.url("/three"), script="_link"), 409, "Conflict")
    time.sleep(0.2)
    assert [p.path for p in server.peers] == ["/one"]


def test_outbound_states_and_503_while_reconnecting(wsgate, upstream):
    # A long initial delay keeps the refused connection in "closed, reconnecting" for over a second.
    gateway = wsgate(SCRIPTS, gateway_config(initial_ms=3000, max_ms=3000))
    ctl = Ctl(gateway)
    try:
        assert ctl.outbound() == []
        server = upstream()
        open_link(ctl, "b-live", server.url("/live"))
        refused_url = f"ws://{HOST}:{free_port()}/"
        before = now_ms()
        assert ctl.call("connect", name="a-down", url=refused_url, script="_link") is None
        ctl.wait_type("a-down", "error")

        entries = ctl.outbound()
        assert [e["name"] for e in entries] == ["a-down", "b-live"], entries  # sorted by name
        down, live = entries
        assert down["url"] == refused_url and down["state"] == "closed" and down["reconnecting"] is True, down
        assert before - 1000 <= down["since"] <= now_ms() + 1000, down
        assert live["url"] == server.url("/live") and live["state"] == "open" and live["reconnecting"] is False, live
        assert live["since"] <= down["since"] + 1000, entries

        assert_error(ctl.call("send", name="a-down", message="x"), 503, "ServiceUnavailable")
        assert_error(ctl.call("send", name="a-down", message={"x": 1}), 503, "ServiceUnavailable")
        assert ctl.call("send", name="b-live", message="fine") is None
        assert server.wait_peer().wait_messages(1) == ["fine"]

        # Disconnected: closed and not reconnecting; sends are 503.
        assert ctl.call("disconnect", name="a-down") is None
        down = ctl.entry("a-down")
        assert down["state"] == "closed" and down["reconnecting"] is False, down
        assert_error(ctl.call("send", name="a-down", message="x"), 503, "ServiceUnavailable")
    finally:
        ctl.close()


def test_connecting_state_is_503(ctl):
    """A server that accepts TCP but never answers the upgrade keeps the link in "connecting"."""
    with SilentListener() as listener:
        assert ctl.call("connect", name="slow", url=listener.url(), script="_link") is None
        entry = ctl.entry("slow")
        assert entry["state"] == "connecting" and entry["url"] == listener.url(), entry
        assert_error(ctl.call("send", name="slow", message="x"), 503, "ServiceUnavailable")


# --- 11. config `outbound` -----------------------------------------------------------------------


def test_config_outbound_connects_at_start_up(wsgate, upstream):
    server = upstream(echo=True)
    config = gateway_config(outbound=[
        {"name": "boot", "url": server.url("/boot"), "script": "_link", "content_type": "text",
         "headers": {"X-Boot": "yes"}},
    ])
    gateway = wsgate(SCRIPTS, config)
    peer = server.wait_peer()
    assert peer.path == "/boot" and peer.headers.get("X-Boot") == "yes"
    gateway.wait_for_log(f"outbound boot: open to {server.url('/boot')}")
    ctl = Ctl(gateway)
    try:
        entry = wait_until(lambda: (e := ctl.entry("boot")) and e["state"] == "open" and e, what="boot open")
        assert entry["url"] == server.url("/boot"), entry
        assert_error(ctl.call("send", name="boot", message={"t": 1}), 400, "BadRequest")  # text connection
        assert ctl.call("send", name="boot", message="echo me") is None
        event, _ = ctl.wait_type("boot", "data")
        assert bytes.fromhex(event["data_hex"]) == b"echo me", event
    finally:
        ctl.close()
    # The open event ran the script at start-up (before any /ctl client): it printed.
    assert gateway.log_lines_with('script print outbound=boot: {"event":'), gateway.log_tail()


def test_config_outbound_before_the_upstream_is_up(wsgate, upstream):
    port = free_port()
    gateway = wsgate(SCRIPTS, gateway_config(outbound=[
        {"name": "early", "url": f"ws://{HOST}:{port}/early", "script": "_link"}]))
    gateway.wait_for_log("outbound early: connecting to")
    gateway.wait_for_log("(attempt 2)")
    assert gateway.log_lines_with("failed: Connection refused")
    server = upstream(port=port)
    assert server.wait_peer().path == "/early"
    gateway.wait_for_log(f"outbound early: open to ws://{HOST}:{port}/early")
    # The script saw error events, then open.
    printed = [json.loads(line.split("outbound=early: ", 1)[1])["event"]["type"]
               for line in gateway.log_lines_with("script print outbound=early: ")]
    assert printed[-1] == "open" and set(printed[:-1]) == {"error"}, printed


def test_removing_the_script_disconnects_with_1001(wsgate, upstream):
    server = upstream()
    gateway = wsgate(SCRIPTS, gateway_config(outbound=[
        {"name": "doomed", "url": server.url("/d"), "script": "_link"}]))
    peer = server.wait_peer()
    gateway.wait_for_log("outbound doomed: open to")
    (gateway.endpoints_dir / "_link.lua").unlink()
    assert peer.wait_closed() == 1001
    gateway.wait_for_log("outbound doomed: script _link.lua was removed")
    time.sleep(0.5)  # with 100 ms backoff a reconnect would have come by now
    assert len(server.peers) == 1, [p.path for p in server.peers]
    assert gateway.proc.poll() is None


def test_config_outbound_over_wss_with_ca_file(wsgate, upstream, throwaway_ca):
    server = upstream(ssl_context=tls_server_context(*throwaway_ca.good))
    gateway = wsgate(SCRIPTS, gateway_config(outbound=[
        {"name": "tls", "url": server.url("/", host="localhost"), "script": "_link.lua",
         "ca_file": str(throwaway_ca.ca_cert)},
        {"name": "tls-lax", "url": server.url("/lax", host="localhost"), "script": "_link", "insecure": True},
    ]))
    assert sorted(p.path for p in (server.wait_peer(1), server.wait_peer(2))) == ["/", "/lax"]
    gateway.wait_for_log("outbound tls: open to")
    gateway.wait_for_log("outbound tls-lax: open to")


@pytest.mark.parametrize("entry, key", [
    ({"name": "x", "url": "http://127.0.0.1:1/", "script": "_link"}, "outbound[0].url"),
    ({"name": "x", "url": "ws://127.0.0.1:1/", "script": "_missing"}, "outbound[0].script"),
    ({"name": "x", "url": "ws://127.0.0.1:1/", "script": "ctl"}, "outbound[0].script"),
    ({"name": "x", "url": "ws://127.0.0.1:1/"}, "outbound[0].script"),
    ({"url": "ws://127.0.0.1:1/", "script": "_link"}, "outbound[0].name"),
    ({"name": "x", "url": "ws://127.0.0.1:1/", "script": "_link", "content_type": "xml"}, "outbound[0].content_type"),
    ({"name": "x", "url": "ws://127.0.0.1:1/", "script": "_link", "bogus": 1}, "outbound[0].bogus"),
    ({"name": "x", "url": "ws://127.0.0.1:1/", "script": "_link", "ca_file": "/etc/hostname"}, "outbound[0].ca_file"),
], ids=["http-url", "missing-script", "route-script", "no-script", "no-name", "bad-content-type",
        "unknown-key", "ca-file-with-ws"])
def test_bad_config_outbound_entry_exits_2(tmp_path, entry, key):
    code, stderr = run_until_exit(tmp_path, SCRIPTS, gateway_config(outbound=[entry]))
    assert code == 2, f"exit {code}; stderr:\n{stderr}"
    assert key in stderr, stderr


def test_bad_config_second_entry_and_duplicates_exit_2(tmp_path):
    good = {"name": "a", "url": "ws://127.0.0.1:1/", "script": "_link"}
    code, stderr = run_until_exit(tmp_path / "second", SCRIPTS,
                                  gateway_config(outbound=[good, {**good, "name": "b", "url": "ftp://x/"}]))
    assert code == 2 and "outbound[1].url" in stderr, (code, stderr)
    code, stderr = run_until_exit(tmp_path / "dup", SCRIPTS, gateway_config(outbound=[good, dict(good)]))
    assert code == 2 and "outbound[1].name" in stderr, (code, stderr)
    code, stderr = run_until_exit(tmp_path / "unreadable-ca", SCRIPTS, gateway_config(outbound=[
        {**good, "url": "wss://127.0.0.1:1/", "ca_file": str(tmp_path / "missing.pem")}]))
    assert code == 2 and "outbound[0]" in stderr, (code, stderr)
    code, stderr = run_until_exit(tmp_path / "delays", SCRIPTS, gateway_config(initial_ms=1000, max_ms=10))
    assert code == 2 and "outboundReconnect.maxDelayMs" in stderr, (code, stderr)


# --- SIGTERM -------------------------------------------------------------------------------------


def test_sigterm_closes_outbound_connections_with_1001(wsgate, upstream):
    server = upstream()
    gateway = wsgate(SCRIPTS, gateway_config(outbound=[
        {"name": "a", "url": server.url("/a"), "script": "_link"},
        {"name": "b", "url": server.url("/b"), "script": "_link"},
    ]))
    peers = [server.wait_peer(1), server.wait_peer(2)]
    gateway.wait_for_log("outbound a: open to")
    gateway.wait_for_log("outbound b: open to")
    gateway.proc.send_signal(signal.SIGTERM)
    assert [peer.wait_closed() for peer in peers] == [1001, 1001]
    assert gateway.proc.wait(STEP_TIMEOUT) == 0
    assert len(server.peers) == 2
    assert not gateway.log_lines_with("(attempt 2)"), gateway.log_tail()
