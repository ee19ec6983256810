"""The example endpoints shipped in the repository's Endpoints/ folder."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from websockets.asyncio.server import serve
from websockets.exceptions import InvalidStatus

from wsgate_support import REPO_ROOT, connect, drain, free_port, recv, recv_json, recv_until, run


def parse(msg):
    try:
        return json.loads(msg)
    except (TypeError, ValueError):
        return None


def is_chat_message(text):
    def check(msg):
        doc = parse(msg)
        return isinstance(doc, dict) and doc.get("message") == text

    return check


def test_echo_text(shipped_server):
    async def main():
        async with connect(shipped_server.url("/echo")) as ws:
            await ws.send("hello, echo")
            return await recv(ws)

    assert run(main()) == "hello, echo"


def test_echo_binary(shipped_server):
    payload = b"\x00\xffbinary\x80"

    async def main():
        async with connect(shipped_server.url("/echo")) as ws:
            await ws.send(payload)
            return await recv(ws)

    assert run(main()) == payload


def test_chat_message_reaches_its_room_only(shipped_server):
    text = f"hello r1 {uuid.uuid4().hex}"

    async def main():
        async with connect(shipped_server.url("/chat/r1")) as a1, \
                connect(shipped_server.url("/chat/r1")) as a2, \
                connect(shipped_server.url("/chat/r2")) as b:
            await a1.send(text)
            got_a1, _ = await recv_until(a1, is_chat_message(text))
            got_a2, _ = await recv_until(a2, is_chat_message(text))
            seen_by_b = await drain(b, 0.5)
            return parse(got_a1), parse(got_a2), seen_by_b

    got_a1, got_a2, seen_by_b = run(main())
    assert got_a1["event"] == "message" and got_a2["event"] == "message"
    assert got_a1["room"] == "r1"
    assert not any(text in str(msg) for msg in seen_by_b), seen_by_b


def test_chat_leave_is_broadcast(shipped_server):
    async def main():
        async with connect(shipped_server.url("/chat/leave-room")) as stays:
            async with connect(shipped_server.url("/chat/leave-room")):
                pass
            msg, _ = await recv_until(stays, lambda m: (parse(m) or {}).get("event") == "leave")
            return parse(msg)

    left = run(main())
    assert left["room"] == "leave-room"


def test_events_echoes_event_10(shipped_server):
    async def main():
        async with connect(shipped_server.url("/events")) as ws:
            await ws.send(json.dumps({"eventType": 10, "message": "hi"}))
            return await recv_json(ws)

    assert run(main()) == {"eventType": 10, "message": "hi"}


def test_events_rejects_invalid_json(shipped_server):
    async def main():
        async with connect(shipped_server.url("/events")) as ws:
            await ws.send("this is not json")
            return await recv_json(ws)

    reply = run(main())
    assert reply["eventType"] == 0
    assert "error" in reply


def test_shipped_endpoints_have_no_catch_all(shipped_server):
    async def main():
        with pytest.raises(InvalidStatus) as info:
            ws = await connect(shipped_server.url("/not-an-example"))
            await ws.close()
        return info.value.response.status_code

    assert run(main()) == 404


def test_relay_forwards_an_upstream_feed_both_ways(wsgate):
    """_relay.lua + feed.lua: an outbound connection (opened from config) relays its server's
    messages to the /feed subscribers and takes theirs up; the upstream starting late is fine."""
    port = free_port()
    server = wsgate(endpoints=REPO_ROOT / "Endpoints", config={
        "rateLimit": {"messagesPerSecond": 0},
        "outbound": [{"name": "feed", "url": f"ws://127.0.0.1:{port}/stream",
                      "script": "_relay.lua", "content_type": "text"}],
        "outboundReconnect": {"initialDelayMs": 50, "maxDelayMs": 200},
    })

    async def main():
        upstream = []
        received = asyncio.Queue()

        async def handler(ws):
            upstream.append(ws)
            async for message in ws:
                await received.put(message)

        async with connect(server.url("/feed")) as subscriber:
            # Before the upstream exists, a subscriber's message is refused with 503.
            await subscriber.send("too early")
            # The link's failed attempts are broadcast too ({"event": "error"} without a status).
            refused, _ = await recv_until(subscriber, lambda m: "status" in (parse(m) or {}))
            refused = parse(refused)
            async with serve(handler, "127.0.0.1", port):
                await recv_until(subscriber, lambda m: parse(m) == {"event": "open", "upstream": "feed"})
                await upstream[0].send("tick 1")
                tick, _ = await recv_until(subscriber, lambda m: m == "tick 1")
                await subscriber.send("hello upstream")
                up = await asyncio.wait_for(received.get(), 5)
            closed, _ = await recv_until(subscriber, lambda m: (parse(m) or {}).get("event") == "close")
        return refused, tick, up, parse(closed)

    refused, tick, up, closed = run(main())
    assert refused["status"] == 503 and refused["event"] == "error"
    assert tick == "tick 1"
    assert up == "hello upstream"
    assert closed["upstream"] == "feed" and closed["code"] in (1001, 1006)


def test_precall_asks_an_api_for_the_url_then_connects(wsgate):
    """precall.lua: Http.request to a REST API (Python's http.server) that answers with the
    WebSocket URL, then Websocket.connect to it; _relay.lua relays the upstream to /feed."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    port = free_port()
    seen = {}

    class Api(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_POST(self):
            seen["authorization"] = self.headers.get("Authorization")
            body = json.dumps({"ok": True, "url": f"ws://127.0.0.1:{port}/rtm"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    api = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    server = wsgate(endpoints=REPO_ROOT / "Endpoints", config={"rateLimit": {"messagesPerSecond": 0}})

    async def main():
        async def handler(ws):
            await ws.send("hello from rtm")
            await ws.wait_closed()

        async with serve(handler, "127.0.0.1", port):
            async with connect(server.url("/feed")) as subscriber, connect(server.url("/precall")) as caller:
                await caller.send(json.dumps({"api": f"http://127.0.0.1:{api.server_address[1]}/rtm.connect",
                                              "token": "xoxb-1"}))
                answer = await recv_json(caller)
                relayed, _ = await recv_until(subscriber, lambda m: m == "hello from rtm")
                return answer, relayed

    try:
        answer, relayed = run(main())
    finally:
        api.shutdown()
        api.server_close()
    assert answer == {"event": "connecting", "url": f"ws://127.0.0.1:{port}/rtm"}
    assert relayed == "hello from rtm"
    assert seen["authorization"] == "Bearer xoxb-1"
