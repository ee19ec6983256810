"""permessage-deflate (RFC 7692) against the real binary.

The negotiation is checked with the ``websockets`` client (which offers the extension by
default) and with raw upgrade requests; the frame-level behaviour (RSV1 on the server's frames,
hostile compressed input) with ``RawClient``, whose frames this file deflates itself with zlib
(raw deflate, ``wbits=-15``, sync flush, the ``00 00 ff ff`` tail stripped).
"""

from __future__ import annotations

import json
import os
import time
import zlib

import pytest

from wsgate_support import (
    ECHO_SCRIPT,
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Bystander,
    RawClient,
    RssWatchdog,
    close_code_of,
    connect,
    recv,
    recv_json,
    report,
    run,
    upgrade_status,
    ws_close_frame,
    ws_frame,
)

RSV1 = 0x40
TAIL = b"\x00\x00\xff\xff"
OFFER = {"Sec-WebSocket-Extensions": "permessage-deflate"}
NO_RATE_LIMIT = {"messagesPerSecond": 0}

INFO_SCRIPT = """
if websocketInfo.type == "data" then
  local peer = Websocket.info{socket_id = websocketInfo.socket_id}
  websocketInfo.send{extensions = websocketInfo.extensions, info_extensions = peer.extensions}
end
"""

# "<n>": a text message of n bytes ("abcd..." repeated, so it compresses well).
FIXED_SCRIPT = """
if websocketInfo.type == "data" then
  local n = tonumber(websocketInfo.message)
  websocketInfo.send(string.sub(string.rep("abcdefghij", n // 10 + 1), 1, n))
end
"""

SCRIPTS = {"echo.lua": ECHO_SCRIPT, "info.lua": INFO_SCRIPT, "fixed.lua": FIXED_SCRIPT}


def deflate(data: bytes) -> bytes:
    """One message as permessage-deflate sends it: raw deflate, sync flush, tail stripped."""
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(TAIL)
    return out[:-4]


def inflate(payload: bytes) -> bytes:
    """One server message, inflated on its own (the server takes no context over)."""
    return zlib.decompressobj(-15).decompress(payload + TAIL)


def extensions_header(response) -> str:
    return response.headers.get("sec-websocket-extensions", "")


@pytest.fixture(scope="module")
def server(wsgate_module):
    return wsgate_module(SCRIPTS, {"rateLimit": NO_RATE_LIMIT, "limits": {"maxMessageBytes": 4 << 20, "sendQueueBytes": 8 << 20}})


@pytest.fixture(scope="module")
def server_off(wsgate_module):
    return wsgate_module(SCRIPTS, {"rateLimit": NO_RATE_LIMIT, "compression": {"enabled": False}})


# --- negotiation -------------------------------------------------------------


def test_offer_is_accepted_with_both_no_context_takeover_parameters(server):
    response = upgrade_status(server.port, "/echo", headers=OFFER)
    assert response.status == 101, response
    value = extensions_header(response)
    params = [p.strip() for p in value.split(";")]
    assert params[0] == "permessage-deflate", value
    assert "server_no_context_takeover" in params, value
    assert "client_no_context_takeover" in params, value


def test_websockets_client_negotiates_and_info_reports_the_same_value(server):
    async def scenario():
        async with connect(server.url("/info"), max_size=None) as ws:
            header = ws.response.headers.get("Sec-WebSocket-Extensions", "")
            await ws.send("?")
            return header, await recv_json(ws)

    header, info = run(scenario())
    assert "permessage-deflate" in header and "server_no_context_takeover" in header, header
    assert "client_no_context_takeover" in header, header
    assert info["extensions"] == header, (info, header)
    assert info["info_extensions"] == header, (info, header)


def test_no_offer_no_extension(server):
    response = upgrade_status(server.port, "/echo")
    assert response.status == 101
    assert "sec-websocket-extensions" not in response.headers, response

    async def scenario():
        async with connect(server.url("/info"), compression=None) as ws:
            assert "Sec-WebSocket-Extensions" not in ws.response.headers
            await ws.send("?")
            return await recv_json(ws)

    info = run(scenario())
    assert info["extensions"] == "" and info["info_extensions"] == "", info


def test_unknown_extensions_are_skipped(server):
    response = upgrade_status(server.port, "/echo", headers={"Sec-WebSocket-Extensions": "x-webkit-foo; a=1"})
    assert response.status == 101
    assert "sec-websocket-extensions" not in response.headers, response
    response = upgrade_status(server.port, "/echo",
                              headers={"Sec-WebSocket-Extensions": "x-webkit-foo, permessage-deflate"})
    assert response.status == 101
    assert extensions_header(response).startswith("permessage-deflate"), response


def test_disabled_in_config_means_never_negotiated(server_off):
    response = upgrade_status(server_off.port, "/echo", headers=OFFER)
    assert response.status == 101
    assert "sec-websocket-extensions" not in response.headers, response

    async def scenario():
        async with connect(server_off.url("/info")) as ws:  # offers permessage-deflate
            assert "Sec-WebSocket-Extensions" not in ws.response.headers
            await ws.send("?")
            info = await recv_json(ws)
        async with connect(server_off.url("/echo")) as ws:
            assert "Sec-WebSocket-Extensions" not in ws.response.headers
            big = "x" * 100_000
            await ws.send(big)
            assert await recv(ws) == big
        return info

    info = run(scenario())
    assert info["extensions"] == "" and info["info_extensions"] == "", info


@pytest.mark.parametrize("settings, offer, expect, absent", [
    ({"serverNoContextTakeover": False, "clientNoContextTakeover": False}, "permessage-deflate",
     [], ["server_no_context_takeover", "client_no_context_takeover"]),
    ({"serverMaxWindowBits": 10}, "permessage-deflate", ["server_max_window_bits=10"], []),
    ({"clientMaxWindowBits": 11}, "permessage-deflate; client_max_window_bits", ["client_max_window_bits=11"], []),
], ids=["context-takeover-allowed", "server-window-10", "client-window-11"])
def test_response_parameters_follow_the_config(wsgate, settings, offer, expect, absent):
    srv = wsgate(SCRIPTS, {"rateLimit": NO_RATE_LIMIT, "compression": settings})
    client = RawClient(srv.port, "/echo", headers={"Sec-WebSocket-Extensions": offer})
    try:
        value = extensions_header(client.response)
        params = [p.strip().replace(" ", "") for p in value.split(";")]
        assert params[0] == "permessage-deflate", value
        for item in expect:
            assert item in params, value
        for item in absent:
            assert item not in params, value
        # Whatever was agreed, a compressed message both ways still works.
        text = "context " * 500
        client.send(ws_frame(OP_TEXT, deflate(text.encode()), rsv=RSV1))
        fin, opcode, payload = client.read_frame()
        assert client.last_rsv == RSV1 and opcode == OP_TEXT
        assert inflate(payload).decode() == text
    finally:
        client.close()


# --- echo through the extension ----------------------------------------------


def json_like(size: int) -> str:
    items, total, i = [], 2, 0
    while total < size:
        item = json.dumps({"id": i, "user": f"user-{i % 97}", "active": i % 3 == 0,
                           "tags": ["alpha", "beta", "gamma"][: i % 4], "score": (i * 7919) % 1000 / 10})
        items.append(item)
        total += len(item) + 1
        i += 1
    text = "[" + ",".join(items) + "]"
    return text[:size - 1] + "]" if len(text) > size else text


def test_large_compressible_messages_echo(server):
    text = json_like(1 << 20)
    assert len(text) == 1 << 20
    binary = text.encode()[::-1]

    async def scenario():
        async with connect(server.url("/echo"), max_size=None) as ws:
            assert "permessage-deflate" in ws.response.headers.get("Sec-WebSocket-Extensions", "")
            started = time.monotonic()
            for _ in range(3):
                await ws.send(text)
                assert await recv(ws, 15) == text
                await ws.send(binary)
                assert await recv(ws, 15) == binary
            return time.monotonic() - started

    took = run(scenario())
    report(f"permessage-deflate: 3 x (1 MiB JSON text + 1 MiB binary) echoed in {took:.2f}s")


def test_large_message_travels_compressed_both_ways(server):
    text = json_like(1 << 20)
    compressed = deflate(text.encode())
    client = RawClient(server.port, "/echo", headers=OFFER)
    try:
        client.send(ws_frame(OP_TEXT, compressed, rsv=RSV1))
        fin, opcode, payload = client.read_frame(timeout=15)
        assert fin and opcode == OP_TEXT
        assert client.last_rsv == RSV1, "the echo of 1 MiB of JSON came back uncompressed"
        assert len(payload) < len(text) // 4, (len(payload), len(text))
        assert inflate(payload).decode() == text
    finally:
        client.close()
    report(f"1 MiB JSON: {len(compressed)} bytes from the client, {len(payload)} bytes back")


def test_fragmented_compressed_message(server):
    text = ("fragmented and compressed " * 300).encode()
    data = deflate(text)
    third = len(data) // 3
    client = RawClient(server.port, "/echo", headers=OFFER)
    try:
        client.send(ws_frame(OP_TEXT, data[:third], fin=False, rsv=RSV1))
        client.send(ws_frame(OP_PING, b"between"))
        client.send(ws_frame(OP_CONT, data[third:2 * third], fin=False))
        client.send(ws_frame(OP_CONT, data[2 * third:]))
        fin, opcode, payload = client.read_frame(answer_pings=False)
        assert opcode == OP_PONG and payload == b"between"
        fin, opcode, payload = client.read_frame()
        assert opcode == OP_TEXT and client.last_rsv == RSV1
        assert inflate(payload) == text
    finally:
        client.close()


def test_uncompressed_messages_still_allowed_after_negotiation(server):
    client = RawClient(server.port, "/echo", headers=OFFER)
    try:
        client.send_text("plain text without RSV1")
        assert client.recv_text() == "plain text without RSV1"
        client.send(ws_frame(OP_BINARY, b"\x00" * 5000))
        fin, opcode, payload = client.read_frame()
        assert opcode == OP_BINARY
        assert (inflate(payload) if client.last_rsv else payload) == b"\x00" * 5000
    finally:
        client.close()


# --- RSV1 on the server's frames ---------------------------------------------


@pytest.mark.parametrize("size, compressed", [(10, False), (63, False), (64, True), (1000, True)])
def test_min_bytes_decides_whether_the_server_compresses(server, size, compressed):
    client = RawClient(server.port, "/fixed", headers=OFFER)
    try:
        assert "permessage-deflate" in extensions_header(client.response)
        # Twice: with server_no_context_takeover each message inflates on its own.
        for _ in range(2):
            client.send_text(str(size))
            fin, opcode, payload = client.read_frame()
            assert fin and opcode == OP_TEXT
            expected = ("abcdefghij" * (size // 10 + 1))[:size].encode()
            if compressed:
                assert client.last_rsv == RSV1, f"{size}-byte message sent without RSV1"
                assert inflate(payload) == expected
            else:
                assert client.last_rsv == 0, f"{size}-byte message sent with RSV1 (minBytes 64)"
                assert payload == expected
    finally:
        client.close()


def test_no_rsv1_from_the_server_without_negotiation(server):
    client = RawClient(server.port, "/fixed")
    try:
        client.send_text("1000")
        fin, opcode, payload = client.read_frame()
        assert client.last_rsv == 0 and len(payload) == 1000
    finally:
        client.close()


# --- hostile compressed input ------------------------------------------------


def expect_close(client: RawClient, code: int, what: str) -> None:
    got, seen = client.read_close(timeout=10)
    assert got == code, f"{what}: closed with {got}, expected {code}; frames before: {seen!r}"
    client.send(ws_close_frame(code if code not in (1005, 1006) else 1000))
    assert client.wait_eof(), f"{what}: TCP connection not ended after the close handshake"


def bomb(size: int = 10 << 20) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    out = compressor.compress(b"\x00" * size) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(TAIL)
    return out[:-4]


@pytest.mark.parametrize("fragmented", [False, True], ids=["one-frame", "fragmented"])
def test_zip_bomb_is_closed_with_1009_and_memory_stays_small(wsgate, fragmented):
    srv = wsgate(SCRIPTS, {"rateLimit": NO_RATE_LIMIT, "limits": {"maxMessageBytes": 1 << 20}})
    data = bomb()
    bystander = Bystander(srv.port, headers=OFFER).start()
    with RssWatchdog(srv.proc, kill_above_mib=1024) as watchdog:
        for _ in range(3):
            client = RawClient(srv.port, "/echo", headers=OFFER)
            try:
                if fragmented:
                    step = len(data) // 8 + 1
                    parts = [data[i:i + step] for i in range(0, len(data), step)]
                    for n, part in enumerate(parts):
                        client.send(ws_frame(OP_BINARY if n == 0 else OP_CONT, part,
                                             fin=n == len(parts) - 1, rsv=RSV1 if n == 0 else 0))
                else:
                    client.send(ws_frame(OP_BINARY, data, rsv=RSV1))
                expect_close(client, 1009, f"{len(data)}-byte deflate stream of 10 MiB of zeros")
            finally:
                client.close()
    bystander.stop()
    line = report(f"zip bomb ({len(data)} bytes -> 10 MiB, {'fragmented' if fragmented else 'one frame'}) x3: "
                  f"closed 1009, gateway peak RSS {watchdog.peak_mib:.1f} MiB; {bystander.summary()}")
    assert not watchdog.killed, line
    assert watchdog.peak_mib < 150, line
    bystander.assert_intact("during the zip bombs")
    assert srv.proc.poll() is None


def test_message_inflating_just_past_the_limit_is_1009_and_just_under_echoes(wsgate):
    limit = 64 * 1024
    srv = wsgate(SCRIPTS, {"rateLimit": NO_RATE_LIMIT, "limits": {"maxMessageBytes": limit}})
    client = RawClient(srv.port, "/echo", headers=OFFER)
    try:
        under = os.urandom(limit // 2).hex().encode()[:limit]  # text, incompressible-ish
        client.send(ws_frame(OP_TEXT, deflate(under), rsv=RSV1))
        fin, opcode, payload = client.read_frame()
        assert opcode == OP_TEXT
        assert (inflate(payload) if client.last_rsv else payload) == under
        client.send(ws_frame(OP_TEXT, deflate(b"y" * (limit + 1)), rsv=RSV1))
        expect_close(client, 1009, f"{limit + 1} bytes inflated with maxMessageBytes {limit}")
    finally:
        client.close()


@pytest.mark.parametrize("opcode", [OP_PING, OP_PONG, OP_CLOSE], ids=["ping", "pong", "close"])
def test_rsv1_on_a_control_frame_is_1002(server, opcode):
    client = RawClient(server.port, "/echo", headers=OFFER)
    try:
        payload = b"\x03\xe8" if opcode == OP_CLOSE else b"ctl"
        client.send(ws_frame(opcode, payload, rsv=RSV1))
        expect_close(client, 1002, "RSV1 on a control frame")
    finally:
        client.close()


def test_rsv1_on_a_continuation_frame_is_1002(server):
    client = RawClient(server.port, "/echo", headers=OFFER)
    try:
        data = deflate(b"split message " * 50)
        client.send(ws_frame(OP_TEXT, data[:10], fin=False, rsv=RSV1))
        client.send(ws_frame(OP_CONT, data[10:], rsv=RSV1))
        expect_close(client, 1002, "RSV1 on a continuation frame")
    finally:
        client.close()


@pytest.mark.parametrize("which", ["not-offered", "disabled"])
def test_rsv1_without_negotiation_is_1002(server, server_off, which):
    srv = server if which == "not-offered" else server_off
    client = RawClient(srv.port, "/echo", headers=None if which == "not-offered" else OFFER)
    try:
        assert "sec-websocket-extensions" not in client.response.headers
        client.send(ws_frame(OP_TEXT, deflate(b"hello hello hello"), rsv=RSV1))
        expect_close(client, 1002, f"RSV1 with permessage-deflate {which}")
    finally:
        client.close()


@pytest.mark.parametrize("payload", [
    b"\xff" * 32,                            # reserved block type
    b"\x03\x02\x00",                        # fixed block whose first symbol copies from before the start
    b"\x00\x05\x00\x00\x00abcde",            # stored block with a wrong length complement
], ids=["reserved-block-type", "distance-too-far-back", "bad-stored-length"])
def test_corrupt_compressed_payload_is_1007(server, payload):
    bystander = Bystander(server.port, headers=OFFER).start()
    client = RawClient(server.port, "/echo", headers=OFFER)
    try:
        client.send(ws_frame(OP_BINARY, payload, rsv=RSV1))
        expect_close(client, 1007, f"corrupt deflate data {payload[:8]!r}")
    finally:
        client.close()
        bystander.stop()
    bystander.assert_intact("next to a corrupt compressed message")


def test_compressed_text_with_invalid_utf8_is_1007(server):
    client = RawClient(server.port, "/echo", headers=OFFER)
    try:
        client.send(ws_frame(OP_TEXT, deflate(b"valid then \xc3\x28 invalid" * 10), rsv=RSV1))
        expect_close(client, 1007, "compressed text that inflates to invalid UTF-8")
    finally:
        client.close()
