"""The client role's protocol checks, against raw servers that break RFC 6455 on purpose: a
well-behaved server library cannot send a masked frame, a wrong Sec-WebSocket-Accept or a redirect."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json

from wsgate_support import WS_GUID, free_port, run

# The outbound script reports every event as one JSON log line.
REPORTER = """
print(to_json{type = wsEvent.type, code = wsEvent.code, error = wsEvent.error, message = wsEvent.message})
"""


def events(server, name="raw"):
    prefix = f"script print outbound={name}: "
    return [json.loads(line.split(prefix, 1)[1]) for line in server.log_lines_with(prefix)]


async def raw_server(port, answer):
    """Accepts one connection, reads the upgrade request and lets ``answer(reader, writer, key)`` reply."""
    done = asyncio.get_running_loop().create_future()

    async def handle(reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:"))
        try:
            await answer(reader, writer, key.decode())
        finally:
            if not done.done():
                done.set_result(head)

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    return server, done


def accept(key):
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


def switching(key, accept_value=None):
    return ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept_value or accept(key)}\r\n\r\n").encode()


def against(wsgate, answer, wait_for):
    """Starts a gateway whose outbound connection dials a raw server answering with ``answer``;
    returns the gateway once its log shows ``wait_for``, and the request head the server read."""
    port = free_port()

    async def main():
        server, done = await raw_server(port, answer)
        async with server:
            gateway = wsgate({"_raw.lua": REPORTER}, config={
                "outbound": [{"name": "raw", "url": f"ws://127.0.0.1:{port}/x", "script": "_raw", "content_type": "text"}],
                "outboundReconnect": {"initialDelayMs": 60000, "maxDelayMs": 60000},
            }, workers=1)
            head = await asyncio.wait_for(done, 10)
        return gateway, head

    gateway, head = run(main())
    gateway.wait_for_log(wait_for)
    return gateway, head


def test_a_masked_frame_from_the_server_fails_the_connection_with_1002(wsgate):
    received = {}

    async def answer(reader, writer, key):
        writer.write(switching(key))
        # "hi", masked with key 1,2,3,4: servers must not mask.
        writer.write(bytes([0x81, 0x82, 1, 2, 3, 4, ord("h") ^ 1, ord("i") ^ 2]))
        await writer.drain()
        received["frame"] = await asyncio.wait_for(reader.read(64), 5)
        writer.close()

    gateway, _ = against(wsgate, answer, '"type":"close"')
    frame = received["frame"]
    # A masked close frame from the client with code 1002.
    assert frame[0] == 0x88 and frame[1] & 0x80
    mask = frame[2:6]
    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(frame[6:6 + (frame[1] & 0x7F)]))
    assert int.from_bytes(payload[:2], "big") == 1002
    assert [e["type"] for e in events(gateway)] == ["open", "close"]
    assert events(gateway)[-1]["code"] == 1002


def test_a_wrong_accept_value_is_an_error_event(wsgate):
    async def answer(reader, writer, key):
        writer.write(switching(key, accept_value=accept("not the key")))
        await writer.drain()
        await asyncio.sleep(0.5)
        writer.close()

    gateway, _ = against(wsgate, answer, '"type":"error"')
    assert [e["type"] for e in events(gateway)] == ["error"]
    assert "Sec-WebSocket-Accept" in events(gateway)[0]["error"]


def test_a_redirect_is_not_followed(wsgate):
    async def answer(reader, writer, key):
        writer.write(b"HTTP/1.1 302 Found\r\nLocation: ws://127.0.0.1:1/elsewhere\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    gateway, head = against(wsgate, answer, '"type":"error"')
    assert head.startswith(b"GET /x HTTP/1.1\r\n")
    error = events(gateway)[0]["error"]
    assert "redirect" in error and "ws://127.0.0.1:1/elsewhere" in error
    assert "127.0.0.1:1 " not in gateway.log()  # never dialled


def test_frames_sent_with_the_101_are_delivered(wsgate):
    """The server's first message arrives in the same TCP segment as its 101 response."""
    async def answer(reader, writer, key):
        writer.write(switching(key) + bytes([0x81, 0x05]) + b"hello")
        await writer.drain()
        await asyncio.sleep(0.5)
        writer.close()

    gateway, _ = against(wsgate, answer, '"type":"data"')
    assert [e.get("message") for e in events(gateway)][:2] == [None, "hello"]
