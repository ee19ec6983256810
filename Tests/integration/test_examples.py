"""The example endpoints shipped in the repository's Endpoints/ folder."""

from __future__ import annotations

import json
import uuid

import pytest
from websockets.exceptions import InvalidStatus

from wsgate_support import connect, drain, recv, recv_json, recv_until, run


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
